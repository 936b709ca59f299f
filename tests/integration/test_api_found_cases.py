"""Every 5xx the API fuzzer (test_api_fuzz.py) found, kept as a fixed case: a NUL byte in a parameter that
reaches SQL was a 500 (Postgres text holds no NUL); it is a 422 naming the parameter."""
import pytest
from fastapi.testclient import TestClient

from services.status_api.app import create_app
from services.status_api.settings import StatusSettings

pytestmark = pytest.mark.integration

AUTH = {"Authorization": "Bearer dev-key"}


@pytest.fixture
def client(settings):
    with TestClient(create_app(StatusSettings()), raise_server_exceptions=False) as client:
        yield client


@pytest.mark.parametrize(("path", "parameter"), [
    ("/v1/batches/b%00x/results", "batch_id"),
    ("/v1/batches/b1/results?cursor=%00", "cursor"),
    ("/v1/batches/b%00x/webhook-deliveries", "batch_id"),
    ("/v1/search?q=%00", "q"),
    ("/v1/search?q=x%00y", "q"),
    ("/v1/search?q=invoice&batch_id=%00", "batch_id"),
    ("/v1/search?q=invoice&file_id=a%00", "file_id"),
])
def test_a_nul_byte_in_a_parameter_is_a_422_naming_it(client, path, parameter):
    response = client.get(path, headers=AUTH)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "invalid_request"
    assert [error["loc"][-1] for error in response.json()["errors"]] == [parameter]


def test_text_without_nul_still_reaches_the_query(client):
    assert client.get("/v1/batches/no-such-batch/results", headers=AUTH).status_code == 404
    assert client.get("/v1/batches/no-such-batch/results?cursor=abc", headers=AUTH).status_code == 404
