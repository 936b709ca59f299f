"""`python -m services.status_api`: the status API on settings.http_host:http_port."""
import uvicorn

from common.kafka import ensure_topics
from common.observability import configure_logging
from services.status_api.app import create_app
from services.status_api.settings import StatusSettings


def main() -> None:
    settings = StatusSettings()
    configure_logging("status_api", settings.log_level)
    ensure_topics(settings)
    uvicorn.run(create_app(settings), host=settings.http_host, port=settings.http_port, log_config=None)


if __name__ == "__main__":
    main()
