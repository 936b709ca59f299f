"""ingest's webhook_url field: carried into BatchCreated when it is an http(s) URL, a 422 naming it otherwise."""
import pytest
from fastapi.testclient import TestClient

from common.kafka import read_topic
from common.storage import build_s3_client
from schemas.api import MAX_URL_CHARS
from schemas.topics import Topic, decode
from services.ingest.app import create_app
from services.ingest.settings import IngestSettings
from tests.integration.test_ingest import API_KEY, AUTH, TENANT, assert_nothing_accepted, multipart, render

pytestmark = pytest.mark.integration


def test_webhook_url_is_announced_or_refused_with_the_field_named(settings):
    with TestClient(create_app(IngestSettings(api_keys={API_KEY: TENANT}))) as client:
        too_long = "https://h.test/" + "x" * MAX_URL_CHARS
        for bad in ("ftp://hooks.example.com/x", "hooks.example.com/x", "https://", too_long):
            response = client.post("/v1/batches", headers=AUTH, files=multipart([("a.png", render(1))]),
                                   data={"webhook_url": bad})
            assert response.status_code == 422, bad
            assert response.json()["code"] == "invalid_request", response.json()
            assert response.json()["errors"][0]["loc"] == ["body", "webhook_url"], response.json()
        assert_nothing_accepted(settings, build_s3_client(settings))

        response = client.post("/v1/batches", headers=AUTH, files=multipart([("a.png", render(1))]),
                               data={"webhook_url": "https://hooks.example.com/ocr?x=1"})
        assert response.status_code == 202, response.text
    [record] = read_topic(settings, settings.topic(Topic.BATCH_EVENTS), expected=1)
    assert decode(Topic.BATCH_EVENTS, record.value()).webhook_url == "https://hooks.example.com/ocr?x=1"
