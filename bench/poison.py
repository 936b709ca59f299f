"""How long one poisoned file holds its partition: from the poison's arrival (the 202 of its batch) until the
next chunk on the same partition completes. Limit: ocr_attempts x ocr_file_timeout_s, plus 10 %.

One OCR worker, one partition, the misbehaving test engine (tests/poison_engine.py): the poison hangs on every
try, so each try lasts the whole timeout. `python -m bench.poison [--timeout S] [--attempts N]`; writes
bench/results.json ("poison") and its section of bench/RESULTS.md.
"""
import argparse
import tempfile
import time
import uuid
from pathlib import Path

from bench.report import merge_results
from deploy.devstack import StackSettings, stack_endpoints, start_stack
from demo.processes import client_for, isolated_env, running_services
from tests import poison_engine


def measure_hold(timeout_s: float, attempts: int, workdir: Path) -> dict:
    start_stack(StackSettings())
    env = isolated_env(stack_endpoints(StackSettings()), uuid.uuid4().hex[:10], partitions=1) | {
        "OCRSTREAM_ENGINE": "tests.poison_engine:build", "OCRSTREAM_OCR_ATTEMPTS": str(attempts),
        "OCRSTREAM_OCR_FILE_TIMEOUT_S": str(timeout_s)}
    poison = workdir / "poison.png"
    poison_engine.poison_image(poison_engine.HANG).save(poison)
    good = workdir / "good.png"
    poison_engine.poison_image((1, 2, 3)).save(good)
    with running_services(env, workdir / "logs", workers=1) as services, client_for(services) as client:
        arrived = time.monotonic()
        poisoned = client.submit([poison], name="poison")["batch_id"]
        behind = client.submit([good], name="behind")["batch_id"]
        client.wait(behind, timeout=attempts * timeout_s * 3 + 120)
        held_s = time.monotonic() - arrived
        final = client.wait(poisoned, timeout=60)
    limit_s = attempts * timeout_s * 1.1
    return {"held_s": round(held_s, 1), "limit_s": round(limit_s, 1), "ocr_attempts": attempts,
            "ocr_file_timeout_s": timeout_s, "poison_failed": final["failed"] == 1, "within_limit": held_s < limit_s}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timeout", type=float, default=30.0, help="OCRSTREAM_OCR_FILE_TIMEOUT_S")
    parser.add_argument("--attempts", type=int, default=3, help="OCRSTREAM_OCR_ATTEMPTS")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as workdir:
        figures = measure_hold(args.timeout, args.attempts, Path(workdir))
    line = (f"poisoned partition held {figures['held_s']} s (limit {figures['limit_s']} s = "
            f"{args.attempts} tries x {args.timeout:g} s + 10 %)")
    print(line)
    merge_results("poison", figures, ["## Poisoned partition hold (bench/poison.py)", "",
                                      f"`python -m bench.poison --timeout {args.timeout:g} --attempts {args.attempts}`: "
                                      "one worker, one partition, a file that hangs on every try.", "", f"- {line}",
                                      f"- the poisoned file failed with its reason: {figures['poison_failed']}"])
    if not figures["within_limit"]:
        raise SystemExit("over the limit")


if __name__ == "__main__":
    main()
