"""`python -m services.persister`: results and batch events into PostgreSQL, exactly once."""
import logging
import sys
from contextlib import ExitStack

from common.db import apply_migrations, build_pool
from common.kafka import build_consumer, build_producer, ensure_topics
from common.observability import configure_logging
from common.runtime import run_until_stopped, stop_on_signals
from services.persister.persister import Persister
from services.persister.settings import PersisterSettings

log = logging.getLogger("services.persister")


def main() -> int:
    settings = PersisterSettings()
    configure_logging("persister", settings.log_level)
    stop = stop_on_signals()
    ensure_topics(settings)
    apply_migrations(settings)
    with ExitStack() as stack:
        pool = stack.enter_context(build_pool(settings, name="persister", max_size=settings.db_pool_size))
        pool.wait(timeout=30)
        client_id = f"persister-{settings.persister_id}"
        consumer = build_consumer(settings, group_id=settings.persister_group, client_id=client_id)
        stack.callback(consumer.close)
        producer = build_producer(settings, client_id=client_id)
        stack.callback(producer.flush, 10)
        persister = Persister(settings, consumer, producer, pool)
        log.info("persister configured", extra={"group": settings.persister_group})
        return run_until_stopped("persister", persister.run, stop, probe_host=settings.probe_host,
                                 probe_port=settings.probe_port, is_ready=lambda: persister.ready)


if __name__ == "__main__":
    sys.exit(main())
