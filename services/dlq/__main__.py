"""`python -m services.dlq list | show P:O | replay P:O... | replay --all [--source-topic T]`.

Positions are partition:offset on the DLQ topic, as `list` prints them. Output is JSON lines.
"""
import argparse
import json
import sys

from common.settings import Settings
from services.dlq.replay import list_dead_letters, replay, show


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.dlq", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="one JSON line per dead-lettered record")
    show_parser = commands.add_parser("show", help="one record whole, its original value decoded")
    show_parser.add_argument("position", help="partition:offset")
    replay_parser = commands.add_parser("replay", help="send records again to their source topic")
    replay_parser.add_argument("positions", nargs="*", help="partition:offset ...")
    replay_parser.add_argument("--all", action="store_true", help="every record (of --source-topic, if given)")
    replay_parser.add_argument("--source-topic", help="only records that came from this topic")
    args = parser.parse_args(argv)

    settings = Settings()
    letters = list_dead_letters(settings)
    if args.command == "list":
        for letter in letters:
            print(json.dumps(letter.summary(), ensure_ascii=False))
        return 0
    by_position = {letter.position: letter for letter in letters}
    wanted = [args.position] if args.command == "show" else args.positions
    missing = [p for p in wanted if p not in by_position]
    if missing:
        print(f"no DLQ record at {', '.join(missing)} on {settings.topic_ocr_dlq}; see `list`", file=sys.stderr)
        return 2
    if args.command == "show":
        print(json.dumps(show(by_position[args.position]), ensure_ascii=False, indent=2))
        return 0
    if not wanted and not args.all:
        parser.error("replay needs positions or --all")
    chosen = letters if args.all else [by_position[p] for p in wanted]
    if args.source_topic:
        chosen = [letter for letter in chosen if letter.record.source_topic == args.source_topic]
    sent = replay(settings, chosen)
    print(json.dumps({"replayed": sent, "positions": [letter.position for letter in chosen]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
