"""The real S3 server: streamed upload with sha256, read back byte for byte."""
import hashlib
import io
import os

import pytest

from common.storage import build_s3_client, get_object_bytes, put_stream

pytestmark = pytest.mark.integration


def test_streamed_put_then_get_keeps_sha256(settings):
    client = build_s3_client(settings)
    payload = os.urandom(3 * 1024 * 1024 + 17)
    stored = put_stream(client, settings.s3_bucket, "tenant/batch/file", io.BytesIO(payload), content_type="image/png")
    assert stored.sha256 == hashlib.sha256(payload).hexdigest()
    assert stored.size == len(payload)
    fetched = get_object_bytes(client, settings.s3_bucket, "tenant/batch/file")
    assert hashlib.sha256(fetched).hexdigest() == stored.sha256
    assert client.stat_object(settings.s3_bucket, "tenant/batch/file").content_type == "image/png"
