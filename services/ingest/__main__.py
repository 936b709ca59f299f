"""`python -m services.ingest`: the HTTP front door (uvicorn; the sync route runs in its thread pool)."""
import uvicorn

from common.db import apply_migrations
from common.kafka import ensure_topics
from common.observability import configure_logging
from services.ingest.app import create_app
from services.ingest.settings import IngestSettings


def main() -> None:
    settings = IngestSettings()
    configure_logging("ingest", settings.log_level)
    ensure_topics(settings)
    apply_migrations(settings)  # ingest keeps Idempotency-Keys, retries and S3 event objects there
    uvicorn.run(create_app(settings), host=settings.http_host, port=settings.http_port, log_config=None)


if __name__ == "__main__":
    main()
