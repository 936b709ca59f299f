"""`python -m services.notifier`: signed webhooks for terminal (and milestone) progress, at least once."""
import logging
import sys
import tempfile

import faust

from common.db import apply_migrations, build_pool
from common.kafka import ensure_topics
from common.observability import configure_logging
from common.runtime import serve_probes
from services.notifier.notifier import Notifier, build_app
from services.notifier.settings import NotifierSettings

log = logging.getLogger("services.notifier")


def main() -> int:
    settings = NotifierSettings()
    configure_logging("notifier", settings.log_level)
    ensure_topics(settings)
    apply_migrations(settings)  # the notifier writes the delivery log: it may set up the tables it writes
    with build_pool(settings, name="notifier", max_size=4) as pool, \
            tempfile.TemporaryDirectory(prefix="ocrstream-notifier-") as datadir:
        pool.wait(timeout=30)
        notifier = Notifier(settings, pool)
        app = build_app(settings, notifier, datadir)
        probes = serve_probes(settings.probe_host, settings.probe_port, lambda: notifier.ready)
        log.info("notifier configured", extra={"group": settings.notifier_group,
                                               "allowlist": settings.webhook_allowlist,
                                               "milestone_percent": settings.webhook_milestone_percent})
        try:
            # faust's worker runs the loop, handles SIGTERM/SIGINT (finish the current record, commit) and exits.
            faust.Worker(app, loglevel=settings.log_level, override_logging=False, quiet=True,
                         redirect_stdouts=False).execute_from_commandline()
        except SystemExit as exit_:
            return int(exit_.code or 0)
        finally:
            probes.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
