"""The real S3 server through both clients: obstore's data path (streamed upload with sha256, one PUT or
multipart, read back byte for byte) is what the minio SDK sees, and a missing object is named as such."""
import hashlib
import io
import os

import pytest

from common.storage import PART_SIZE, ObjectMissing, ObjectStore, build_s3_client

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("size", [1500, 3 * PART_SIZE + 17], ids=["one-put", "multipart"])
def test_streamed_put_then_get_keeps_sha256(settings, size):
    objects, minio = ObjectStore(settings), build_s3_client(settings)
    payload = os.urandom(size)
    stored = objects.put_stream(settings.s3_bucket, "tenant/batch/file", io.BytesIO(payload), content_type="image/png")
    assert stored.sha256 == hashlib.sha256(payload).hexdigest()
    assert stored.size == len(payload)
    fetched = objects.get_bytes(settings.s3_bucket, "tenant/batch/file")
    assert hashlib.sha256(fetched).hexdigest() == stored.sha256
    stat = minio.stat_object(settings.s3_bucket, "tenant/batch/file")
    assert (stat.content_type, stat.size) == ("image/png", len(payload))
    response = minio.get_object(settings.s3_bucket, "tenant/batch/file")
    try:
        assert hashlib.sha256(response.read()).hexdigest() == stored.sha256
    finally:
        response.close()
        response.release_conn()


def test_a_missing_object_or_bucket_is_object_missing(settings):
    objects = ObjectStore(settings)
    with pytest.raises(ObjectMissing):
        objects.get_bytes(settings.s3_bucket, "no/such/key")
    with pytest.raises(ObjectMissing):
        objects.get_bytes(settings.s3_bucket + "-gone", "any")
