"""Schemathesis against both OpenAPI documents, each app built with create_app(settings) and served by uvicorn
on the real stack: a fixed seed and a bounded number of examples per operation; no 5xx, and every answer
conforms to the document (status code, content type, body schema). Each 5xx it ever found is a case in
test_api_found_cases.py."""
import threading
import time
from collections.abc import Iterator

import hypothesis
import hypothesis.errors
import pytest
import schemathesis
import uvicorn
from schemathesis.checks import positive_data_acceptance
from schemathesis.specs.openapi.checks import ignored_auth

from demo.processes import free_port
from services.ingest.app import create_app as create_ingest_app
from services.ingest.settings import IngestSettings
from services.status_api.app import create_app as create_status_app
from services.status_api.settings import StatusSettings

pytestmark = pytest.mark.integration

SEED = 19
EXAMPLES = 25  # per operation and generation mode: seconds, not minutes, in `make test`
AUTH = {"Authorization": "Bearer dev-key"}


def served(app) -> Iterator[str]:
    """The app on a free port (its lifespan run by uvicorn); its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the app did not start"
        time.sleep(0.05)  # poll interval of the deadline loop
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture
def status_api(settings) -> Iterator[schemathesis.BaseSchema]:
    app = create_status_app(StatusSettings())
    for base_url in served(app):
        yield schemathesis.openapi.from_url(f"{base_url}/openapi.json")


@pytest.fixture
def ingest(settings) -> Iterator[schemathesis.BaseSchema]:
    app = create_ingest_app(IngestSettings())
    for base_url in served(app):
        yield schemathesis.openapi.from_url(f"{base_url}/openapi.json")


# positive_data_acceptance is left out: FastAPI writes an optional header as anyOf [integer, null], and the
# fuzzer's "valid" value for it is the text "null", which no integer header can accept (422).
FUZZ = hypothesis.settings(max_examples=EXAMPLES, deadline=None, database=None,
                           suppress_health_check=list(hypothesis.HealthCheck))


def fuzz(schema: schemathesis.BaseSchema, excluded: tuple = ()) -> list[str]:
    """Every operation in both generation modes (valid and invalid requests); the failures, described."""
    failures = []
    for operation in (result.ok() for result in schema.get_all_operations()):
        for mode in schemathesis.GenerationMode:
            @hypothesis.given(case=operation.as_strategy(generation_mode=mode, headers=AUTH))
            @hypothesis.seed(SEED)
            @FUZZ
            def call(case) -> None:
                case.call_and_validate(excluded_checks=[positive_data_acceptance, *excluded])

            try:
                call()
            except hypothesis.errors.Unsatisfiable:  # no invalid request exists, e.g. GET /healthz
                pass
            except (Exception, BaseExceptionGroup) as exc:  # the failing request and the checks it broke, one entry per operation/mode
                failures.append(f"{operation.label} ({mode.value}): {exc}")
    return failures


def test_status_api_conforms_to_its_openapi_document(status_api):
    failures = fuzz(status_api)
    assert not failures, "\n\n".join(failures)


def test_ingest_conforms_to_its_openapi_document(ingest):
    # ignored_auth is left out here: on POST /v1/batches (a body the route documents itself) schemathesis takes our
    # explicit Authorization header for one it generated and reports the 202 as "accepts invalid auth". Ingest
    # checks the key before reading a byte (gate.py); tests/integration/test_ingest*.py prove the 401s.
    failures = fuzz(ingest, excluded=(ignored_auth,))
    assert not failures, "\n\n".join(failures)
