"""A catalogue of bad inputs and abuse against both APIs of one running pipeline (fast engine).

Two kinds of case:
- refused at the door: every auth variant, oversized and malformed fields, SQL text, NUL, control characters and
  non-UTF-8 percent-encoding in every path and query parameter of the status API and of ingest's batch (multipart
  and S3 objects), S3 event, cancel and retry endpoints. Each answers a precise status and problem `code` (or, for
  text that is merely odd, 200 with nothing matched); none answers 5xx, and the last test reads both request
  counters to prove it.
- a bad file inside a batch of good ones: refused by ingest with a precise code (partial accept lists it), or
  accepted and ended `failed` by the worker with a precise error_code, or (a lying but readable file) ended `ok`.
  Every good file of the same batch ends `ok`, and no object key is built from a client's file name.
"""
import hashlib
import io
import re
import socket
import struct
import uuid
import zlib
from dataclasses import dataclass, field
from itertools import count
from urllib.parse import urlsplit

import httpx
import pypdfium2 as pdfium
import pytest
from ocrstream import Client
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from common.settings import Settings
from common.storage import build_s3_client
from demo.processes import client_for, isolated_env, running_services

pytestmark = pytest.mark.e2e

AUTH = {"Authorization": "Bearer dev-key"}
OTHER_TENANT = {"Authorization": "Bearer other-key"}
MAX_PAGES = 3  # OCRSTREAM_MAX_PAGES_PER_FILE of the workers
MAX_FILE_BYTES = 400_000
MAX_REQUEST_BYTES = 2_000_000
MAX_FILES = 20
SQL = "' OR 1=1 --"
_seeds = count(1)


# ---- files ---------------------------------------------------------------------------------------------------------

def good_png() -> bytes:
    """A small PNG unlike every other one of this module (so no two files share a sha256)."""
    seed = next(_seeds)
    image = Image.new("L", (64, 32), 255)
    for i in range(8):
        image.putpixel((((seed >> i) & 1) * 8 + i * 2, 4), 0)
    image.putpixel((seed % 64, 20), seed % 200)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _saved(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def _photo(size=(200, 120)) -> Image.Image:
    image = Image.new("RGB", size)
    image.putdata([((x * 7) % 256, (y * 13) % 256, (x * y) % 256) for y in range(size[1]) for x in range(size[0])])
    return image


def pdf_of_pages(pages: int) -> bytes:
    document = pdfium.PdfDocument.new()
    for _ in range(pages):
        document.new_page(200, 100)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def pdf_from_objects(objects: list[bytes], trailer: bytes = b"") -> bytes:
    """A PDF written object by object (with a correct xref), so its dictionaries can say anything."""
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n%s\nendobj\n" % (number, body))
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    out.write(b"".join(b"%010d 00000 n \n" % offset for offset in offsets))
    out.write(b"trailer\n<< /Size %d /Root 1 0 R %s>>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, trailer, xref))
    return out.getvalue()


def pdf_one_page(media_box: bytes = b"0 0 200 100", count: int = 1, extra: list[bytes] = (), trailer: bytes = b""
                 ) -> bytes:
    return pdf_from_objects([b"<< /Type /Catalog /Pages 2 0 R >>",
                             b"<< /Type /Pages /Kids [3 0 R] /Count %d >>" % count,
                             b"<< /Type /Page /Parent 2 0 R /MediaBox [%s] >>" % media_box, *extra], trailer)


_PASSWORD_PAD = bytes.fromhex("28BF4E5E4E758A4164004E56FFFA01082E2E00B6D0683E802F0CA9FE6453697A")


def _rc4(key: bytes, data: bytes) -> bytes:
    s, j = list(range(256)), 0
    for i in range(256):
        j = (j + s[i] + key[i % len(key)]) % 256
        s[i], s[j] = s[j], s[i]
    i = j = 0
    out = bytearray()
    for byte in data:
        i = (i + 1) % 256
        j = (j + s[i]) % 256
        s[i], s[j] = s[j], s[i]
        out.append(byte ^ s[(s[i] + s[j]) % 256])
    return bytes(out)


def encrypted_pdf(user_password: bytes = b"secret") -> bytes:
    """A PDF that opens only with a user password (standard security handler, revision 2, RC4 40-bit)."""
    owner = _rc4(hashlib.md5(b"owner" + _PASSWORD_PAD[:27]).digest()[:5], (user_password + _PASSWORD_PAD)[:32])
    file_id, permissions = hashlib.md5(b"ocrstream").digest(), -4
    key = hashlib.md5((user_password + _PASSWORD_PAD)[:32] + owner + struct.pack("<i", permissions)
                      + file_id).digest()[:5]
    encrypt = b"<< /Filter /Standard /V 1 /R 2 /O <%s> /U <%s> /P %d >>" % (
        owner.hex().encode(), _rc4(key, _PASSWORD_PAD).hex().encode(), permissions)
    return pdf_one_page(extra=[encrypt], trailer=b"/Encrypt 4 0 R /ID [<%s> <%s>] " % ((file_id.hex().encode(),) * 2))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width x height 1-bit pixels: a decompression bomb's shape."""
    rows = zlib.compress(b"\x00" * (width // 8 + 1) * 4, 9)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + _png_chunk(b"IDAT", rows) + _png_chunk(b"IEND", b""))


def gif_declaring(width: int, height: int) -> bytes:
    """A 1-pixel GIF whose logical screen declares width x height."""
    data = bytearray(_saved(Image.new("L", (1, 1)), "GIF"))
    data[6:10] = struct.pack("<HH", width, height)
    return bytes(data)


def tiff_of_frames(frames: int) -> bytes:
    first, *rest = [Image.new("L", (60, 30), 255 - i) for i in range(frames)]
    return _saved(first, "TIFF", save_all=True, append_images=rest)


# ---- requests ------------------------------------------------------------------------------------------------------

def multipart(parts: list[tuple[str, bytes | None, bytes, str | None]]) -> tuple[bytes, str]:
    """A multipart/form-data body built by hand: (field, raw filename bytes or None, data, content type), so a
    file name can hold bytes no client library would send (NUL, non-UTF-8)."""
    boundary = uuid.uuid4().hex
    body = b""
    for name, filename, data, content_type in parts:
        disposition = b'form-data; name="%s"' % name.encode()
        if filename is not None:
            disposition += b'; filename="%s"' % filename
        body += b"--%s\r\nContent-Disposition: %s\r\n" % (boundary.encode(), disposition)
        if content_type:
            body += b"Content-Type: %s\r\n" % content_type.encode()
        body += b"\r\n" + data + b"\r\n"
    body += b"--%s--\r\n" % boundary.encode()
    return body, f"multipart/form-data; boundary={boundary}"


def batch_body(files: list[tuple[bytes, bytes, str]], **fields: str) -> dict:
    """httpx request arguments of a POST /v1/batches: files as (raw name, data, content type)."""
    fields = {"embeddings": "false", "dedupe": "false", "chunk_size": "2"} | fields
    body, content_type = multipart([("files", name, data, ctype) for name, data, ctype in files]
                                   + [(k, None, v.encode(), None) for k, v in fields.items()])
    return {"content": body, "headers": AUTH | {"Content-Type": content_type}}


def raw_request(url: str, head: bytes) -> tuple[int, bytes, dict]:
    """Send request-line and headers as given bytes (what httpx refuses to send: NUL or control characters in a
    header, blank values); the status code, body and headers of the answer."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(head + b"\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head_lines, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head_lines.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), body, headers


# ---- the pipeline and its reference batch ---------------------------------------------------------------------------

@dataclass
class Pipeline:
    settings: Settings
    ingest: str
    status: str
    client: Client
    batch_id: str = ""  # a completed batch of tenant "default": two ok files and one failed one a worker read
    ok_file: str = ""
    failed_file: str = ""
    file_batches: dict = field(default_factory=dict)  # file case id → the 202 answer of its batch


@pytest.fixture(scope="module")
def pipeline(stack_endpoints, tmp_path_factory):
    env = isolated_env(stack_endpoints, uuid.uuid4().hex[:10]) | {
        "OCRSTREAM_ENGINE": "fast", "OCRSTREAM_MAX_PAGES_PER_FILE": str(MAX_PAGES),
        "OCRSTREAM_MAX_FILE_BYTES": str(MAX_FILE_BYTES), "OCRSTREAM_MAX_REQUEST_BYTES": str(MAX_REQUEST_BYTES),
        "OCRSTREAM_MAX_FILES_PER_BATCH": str(MAX_FILES), "OCRSTREAM_OCR_ATTEMPTS": "1",
        "OCRSTREAM_API_KEYS": '{"dev-key": "default", "other-key": "other"}'}
    env["OCRSTREAM_S3_SOURCES"] = f'{{"default": ["{env["OCRSTREAM_S3_BUCKET"]}/incoming/"]}}'
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        settings = Settings()
    with running_services(env, tmp_path_factory.mktemp("logs"), workers=1) as services, \
            client_for(services) as client:
        pipeline = Pipeline(settings, services["ingest"].probe_url, services["status_api"].probe_url, client)
        # Every file case's batch goes in first, so the worker reads them while the door cases run.
        for case in FILE_CASES:
            pipeline.file_batches[case.id] = _submit_file_case(pipeline, case)
        reference = httpx.post(f"{pipeline.ingest}/v1/batches", timeout=60, **batch_body(
            [(b"ref-0.png", good_png(), "image/png"), (b"ref-bad.pdf", b"%PDF-1.4\nnot really", "application/pdf"),
             (b"ref-1.png", good_png(), "image/png")]))
        assert reference.status_code == 202, reference.text
        pipeline.batch_id = reference.json()["batch_id"]
        assert client.wait(pipeline.batch_id, timeout=120)["status"] == "completed"
        files = {f["original_name"]: f for f in _files(pipeline, pipeline.batch_id)}
        pipeline.ok_file, pipeline.failed_file = files["ref-0.png"]["file_id"], files["ref-bad.pdf"]["file_id"]
        yield pipeline


def _files(pipeline: Pipeline, batch_id: str) -> list[dict]:
    response = httpx.get(f"{pipeline.status}/v1/batches/{batch_id}/files", params={"limit": 100}, headers=AUTH,
                         timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["data"]


# ---- kind 1: refused at the door ------------------------------------------------------------------------------------

@dataclass
class Door:
    id: str
    service: str  # ingest | status
    method: str
    path: str  # {batch}, {ok_file}, {failed_file}: the reference batch's
    status: int  # 200: served, and the page it answers is empty (the text matched nothing, nothing leaked)
    code: str | None  # None: 200, or refused by the HTTP parser before any route (no problem body)
    request: dict = field(default_factory=dict)  # httpx arguments; "raw": request-line and headers as bytes


def _form(**fields: str) -> dict:
    return batch_body([(b"a.png", good_png(), "image/png")], **fields)


def _with_headers(request: dict, **headers) -> dict:
    return {**request, "headers": request["headers"] | {k.replace("_", "-"): v for k, v in headers.items()}}


def _json(body: bytes | str) -> dict:
    return {"content": body, "headers": AUTH | {"Content-Type": "application/json"}}


DOOR_CASES = [
    # -- every auth variant, on both services
    Door("ingest-no-auth-header", "ingest", "POST", "/v1/batches", 401, "unauthorized",
         {"files": {"files": ("a.png", b"x", "image/png")}}),
    Door("ingest-basic-scheme", "ingest", "POST", "/v1/batches", 401, "unauthorized",
         {"headers": {"Authorization": "Basic ZGV2LWtleTo="}}),
    Door("ingest-bearer-empty-token", "ingest", "POST", "/v1/batches", 401, "unauthorized",
         {"headers": {"Authorization": "Bearer"}}),
    Door("ingest-bearer-blank-token", "ingest", "POST", "/v1/batches", 401, "unauthorized",
         {"raw": b"POST /v1/batches HTTP/1.1\r\nAuthorization: Bearer   \t\r\nContent-Length: 0"}),
    Door("ingest-unknown-key", "ingest", "POST", "/v1/batches", 401, "unauthorized",
         {"headers": {"Authorization": "Bearer not-a-key"}}),
    Door("ingest-key-is-sql", "ingest", "POST", "/v1/batches", 401, "unauthorized",
         {"headers": {"Authorization": f"Bearer {SQL}"}}),
    Door("ingest-key-non-ascii", "ingest", "POST", "/v1/batches", 401, "unauthorized",
         {"headers": {"Authorization": b"Bearer dev-key\xe9"}}),
    Door("ingest-two-authorization-headers", "ingest", "POST", "/v1/batches", 401, "unauthorized",
         {"headers": [("Authorization", "Bearer dev-key"), ("Authorization", "Bearer other-key")]}),
    Door("ingest-key-with-nul", "ingest", "POST", "/v1/batches", 400, None,
         {"raw": b"POST /v1/batches HTTP/1.1\r\nAuthorization: Bearer dev-key\x00\r\nContent-Length: 0"}),
    Door("ingest-key-with-control-char", "ingest", "DELETE", "/v1/batches/x", 401, "unauthorized",
         {"raw": b"DELETE /v1/batches/x HTTP/1.1\r\nAuthorization: Bearer dev\x01key"}),
    Door("status-no-auth-header", "status", "GET", "/v1/batches/{batch}", 401, "unauthorized"),
    Door("status-basic-scheme", "status", "GET", "/v1/batches", 401, "unauthorized",
         {"headers": {"Authorization": "Basic ZGV2LWtleTo="}}),
    Door("status-bearer-empty-token", "status", "GET", "/v1/batches", 401, "unauthorized",
         {"headers": {"Authorization": "Bearer"}}),
    Door("status-unknown-key", "status", "GET", "/v1/batches/{batch}/files", 401, "unauthorized",
         {"headers": {"Authorization": "Bearer not-a-key"}}),
    Door("status-key-non-ascii", "status", "GET", "/v1/batches", 401, "unauthorized",
         {"headers": {"Authorization": b"Bearer dev-key\xe9"}}),
    Door("status-key-with-nul", "status", "GET", "/v1/batches", 400, None,
         {"raw": b"GET /v1/batches HTTP/1.1\r\nAuthorization: Bearer dev-key\x00"}),
    Door("status-other-tenants-batch", "status", "GET", "/v1/batches/{batch}", 404, "batch_not_found",
         {"headers": OTHER_TENANT}),
    Door("status-other-tenants-files", "status", "GET", "/v1/batches/{batch}/files", 404, "batch_not_found",
         {"headers": OTHER_TENANT}),
    Door("status-other-tenants-file", "status", "GET", "/v1/batches/{batch}/files/{ok_file}", 404, "batch_not_found",
         {"headers": OTHER_TENANT}),
    Door("status-other-tenants-content", "status", "GET", "/v1/batches/{batch}/files/{ok_file}/content", 404,
         "batch_not_found", {"headers": OTHER_TENANT}),
    Door("ingest-cancel-other-tenants-batch", "ingest", "DELETE", "/v1/batches/{batch}", 404, "batch_not_found",
         {"headers": OTHER_TENANT}),
    Door("ingest-retry-other-tenants-batch", "ingest", "POST", "/v1/batches/{batch}/retry", 404, "batch_not_found",
         {"headers": OTHER_TENANT}),
    # -- routes and methods
    Door("ingest-unknown-route", "ingest", "GET", "/v1/../v1/secrets", 404, "not_found", {"headers": AUTH}),
    Door("ingest-put-batches", "ingest", "PUT", "/v1/batches", 405, "method_not_allowed", {"headers": AUTH}),
    Door("status-delete-batch", "status", "DELETE", "/v1/batches/{batch}", 405, "method_not_allowed",
         {"headers": AUTH}),
    # -- ingest: the request as a whole, and each field
    Door("ingest-text-plain-body", "ingest", "POST", "/v1/batches", 415, "unsupported_media_type",
         {"content": b"hello", "headers": AUTH | {"Content-Type": "text/plain"}}),
    Door("ingest-broken-multipart", "ingest", "POST", "/v1/batches", 400, "invalid_multipart",
         {"content": b"--x\r\nContent-Disposition: form-data\r\n\r\nno end",
          "headers": AUTH | {"Content-Type": "multipart/form-data; boundary=x"}}),
    Door("ingest-too-many-form-fields", "ingest", "POST", "/v1/batches", 400, "invalid_multipart",
         batch_body([(b"a.png", good_png(), "image/png")], **{f"x{i}": "1" for i in range(40)})),
    Door("ingest-no-files", "ingest", "POST", "/v1/batches", 422, "no_files",
         {"data": {"name": "x"}, "headers": AUTH}),
    Door("ingest-too-many-files", "ingest", "POST", "/v1/batches", 413, "too_many_files",
         {"files": [("files", (f"{i}.png", b"\x89PNG\r\n\x1a\n", "image/png")) for i in range(MAX_FILES + 1)],
          "headers": AUTH}),
    Door("ingest-content-length-over-limit", "ingest", "POST", "/v1/batches", 413, "request_too_large",
         {"raw": b"POST /v1/batches HTTP/1.1\r\nAuthorization: Bearer dev-key\r\n"
                 b"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: %d" % (MAX_REQUEST_BYTES + 1)}),
    Door("ingest-chunked-body-over-limit", "ingest", "POST", "/v1/batches", 413, "request_too_large",
         {"content": [b'--x\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n\r\n',
                      *[bytes(MAX_REQUEST_BYTES // 4)] * 5],  # a list: sent chunked, without Content-Length
          "headers": AUTH | {"Content-Type": "multipart/form-data; boundary=x"}}),
    Door("ingest-chunk-size-zero", "ingest", "POST", "/v1/batches", 422, "invalid_request", _form(chunk_size="0")),
    Door("ingest-chunk-size-huge", "ingest", "POST", "/v1/batches", 422, "invalid_request",
         _form(chunk_size="9" * 40)),
    Door("ingest-chunk-size-over-max", "ingest", "POST", "/v1/batches", 422, "invalid_request",
         _form(chunk_size="501")),
    Door("ingest-chunk-size-not-integer", "ingest", "POST", "/v1/batches", 422, "invalid_request",
         _form(chunk_size="2.5")),
    Door("ingest-chunk-size-sql", "ingest", "POST", "/v1/batches", 422, "invalid_request", _form(chunk_size=SQL)),
    Door("ingest-name-over-200-chars", "ingest", "POST", "/v1/batches", 422, "invalid_request", _form(name="n" * 201)),
    Door("ingest-name-with-nul", "ingest", "POST", "/v1/batches", 422, "invalid_request", _form(name="a\x00b")),
    Door("ingest-field-over-64-kib", "ingest", "POST", "/v1/batches", 400, "invalid_multipart",
         _form(name="n" * 70_000)),
    Door("ingest-webhook-url-over-2048-chars", "ingest", "POST", "/v1/batches", 422, "invalid_request",
         _form(webhook_url="https://example.com/" + "a" * 2100)),
    Door("ingest-webhook-url-file-scheme", "ingest", "POST", "/v1/batches", 422, "invalid_request",
         _form(webhook_url="file:///etc/passwd")),
    Door("ingest-webhook-url-javascript", "ingest", "POST", "/v1/batches", 422, "invalid_request",
         _form(webhook_url="javascript:alert(1)")),
    Door("ingest-languages-sql", "ingest", "POST", "/v1/batches", 422, "invalid_request", _form(languages=SQL)),
    Door("ingest-languages-path-traversal", "ingest", "POST", "/v1/batches", 422, "invalid_request",
         _form(languages="../../etc/passwd")),
    Door("ingest-languages-over-64-chars", "ingest", "POST", "/v1/batches", 422, "invalid_request",
         _form(languages="eng+" * 20 + "kor")),
    Door("ingest-pdf-dpi-10000", "ingest", "POST", "/v1/batches", 422, "invalid_request", _form(pdf_dpi="10000")),
    Door("ingest-embeddings-not-boolean", "ingest", "POST", "/v1/batches", 422, "invalid_request",
         _form(embeddings="maybe")),
    Door("ingest-min-confidence-nan", "ingest", "POST", "/v1/batches", 422, "invalid_request",
         _form(min_confidence="nan")),
    Door("ingest-strict-with-a-bad-file", "ingest", "POST", "/v1/batches", 422, "invalid_files",
         batch_body([(b"a.png", good_png(), "image/png"), (b"e.png", b"", "image/png")], strict="true")),
    Door("ingest-every-file-refused", "ingest", "POST", "/v1/batches", 415, "unsupported_type",
         batch_body([(b"a.txt", b"hello", "text/plain")])),
    Door("ingest-idempotency-key-empty", "ingest", "POST", "/v1/batches", 400, "invalid_idempotency_key",
         _with_headers(_form(), Idempotency_Key="")),
    Door("ingest-idempotency-key-non-ascii", "ingest", "POST", "/v1/batches", 400, "invalid_idempotency_key",
         _with_headers(_form(), Idempotency_Key=b"k\xe9y")),
    Door("ingest-idempotency-key-256-chars", "ingest", "POST", "/v1/batches", 400, "invalid_idempotency_key",
         _with_headers(_form(), Idempotency_Key="k" * 256)),
    Door("ingest-json-not-json", "ingest", "POST", "/v1/batches", 400, "invalid_json", _json(b"{'objects': ")),
    Door("ingest-json-non-utf8", "ingest", "POST", "/v1/batches", 400, "invalid_json", _json(b'{"name": "\xff"}')),
    Door("ingest-json-key-path-traversal", "ingest", "POST", "/v1/batches", 403, "s3_access_denied",
         _json(b'{"objects": [{"bucket": "b", "key": "../other/x.png"}]}')),
    Door("ingest-json-key-lone-surrogate", "ingest", "POST", "/v1/batches", 422, "invalid_request",
         _json(b'{"objects": [{"bucket": "b", "key": "\\ud800.png"}]}')),
    Door("ingest-json-key-with-nul", "ingest", "POST", "/v1/batches", 422, "invalid_request",
         _json(b'{"objects": [{"bucket": "b", "key": "a\\u0000.png"}]}')),
    Door("ingest-json-objects-and-prefix", "ingest", "POST", "/v1/batches", 422, "invalid_request",
         _json('{"objects": [{"bucket": "{bucket}", "key": "incoming/a.png"}], '
               '"prefix": {"bucket": "{bucket}", "prefix": "incoming/"}}')),
    Door("ingest-json-sha256-sql", "ingest", "POST", "/v1/batches", 422, "invalid_request",
         _json('{"objects": [{"bucket": "{bucket}", "key": "incoming/a.png", "sha256": "\' OR 1=1 --"}]}')),
    Door("ingest-json-key-traversal-out-of-allowed-prefix", "ingest", "POST", "/v1/batches", 403, "s3_access_denied",
         _json('{"objects": [{"bucket": "{bucket}", "key": "incoming/../default/x.png"}]}')),
    Door("ingest-json-prefix-traversal", "ingest", "POST", "/v1/batches", 403, "s3_access_denied",
         _json('{"prefix": {"bucket": "{bucket}", "prefix": "incoming/../"}}')),
    Door("ingest-json-object-missing", "ingest", "POST", "/v1/batches", 422, "invalid_files",
         _json('{"objects": [{"bucket": "{bucket}", "key": "incoming/none.png"}]}')),
    Door("ingest-json-prefix-empty", "ingest", "POST", "/v1/batches", 422, "no_files",
         _json('{"prefix": {"bucket": "{bucket}", "prefix": "incoming/"}}')),
    # -- ingest: S3 event notifications
    Door("s3-events-not-json", "ingest", "POST", "/v1/s3-events", 400, "invalid_json", _json(b"<xml/>")),
    Door("s3-events-records-not-a-list", "ingest", "POST", "/v1/s3-events", 400, "invalid_json",
         _json(b'{"Records": "all"}')),
    Door("s3-events-record-without-key", "ingest", "POST", "/v1/s3-events", 400, "invalid_json",
         _json('{"Records": [{"eventName": "s3:ObjectCreated:Put", "s3": {"bucket": {"name": "{bucket}"}}}]}')),
    Door("s3-events-key-traversal", "ingest", "POST", "/v1/s3-events", 403, "s3_access_denied",
         _json('{"Records": [{"eventName": "s3:ObjectCreated:Put", "s3": {"bucket": {"name": "{bucket}"}, '
               '"object": {"key": "incoming%2F..%2F..%2Fdefault%2Fx.png", "eTag": "e1"}}}]}')),
    Door("s3-events-key-with-nul", "ingest", "POST", "/v1/s3-events", 400, "invalid_json",
         _json('{"Records": [{"eventName": "s3:ObjectCreated:Put", "s3": {"bucket": {"name": "{bucket}"}, '
               '"object": {"key": "incoming/a%00b.png", "eTag": "e2"}}}]}')),
    Door("s3-events-etag-with-nul", "ingest", "POST", "/v1/s3-events", 400, "invalid_json",
         _json('{"Records": [{"eventName": "s3:ObjectCreated:Put", "s3": {"bucket": {"name": "{bucket}"}, '
               '"object": {"key": "incoming/b.png", "eTag": "\\u0000"}}}]}')),
    # -- ingest: cancel and retry
    Door("ingest-cancel-sql-batch-id", "ingest", "DELETE", f"/v1/batches/{SQL}", 404, "batch_not_found",
         {"headers": AUTH}),
    Door("ingest-cancel-nul-batch-id", "ingest", "DELETE", "/v1/batches/a%00b", 422, "invalid_request",
         {"headers": AUTH}),
    Door("ingest-cancel-post-nul-batch-id", "ingest", "POST", "/v1/batches/%00/cancel", 422, "invalid_request",
         {"headers": AUTH}),
    Door("ingest-cancel-non-utf8-batch-id", "ingest", "DELETE", "/v1/batches/%FF%FE", 404, "batch_not_found",
         {"headers": AUTH}),
    Door("ingest-cancel-traversal-batch-id", "ingest", "POST", "/v1/batches/..%2F..%2Fetc/cancel", 404,
         "not_found", {"headers": AUTH}),  # the decoded path has more segments: no route matches
    Door("ingest-cancel-finished-batch", "ingest", "DELETE", "/v1/batches/{batch}", 409, "batch_finished",
         {"headers": AUTH}),
    Door("ingest-retry-nul-batch-id", "ingest", "POST", "/v1/batches/x%00/retry", 422, "invalid_request",
         {"headers": AUTH}),
    # -- ingest: open batches (add files, seal)
    Door("ingest-add-files-nul-batch-id", "ingest", "POST", "/v1/batches/a%00b/files", 422, "invalid_request",
         {"headers": AUTH, "files": {"files": ("a.png", b"x", "image/png")}}),
    Door("ingest-add-files-unknown-batch", "ingest", "POST", f"/v1/batches/{SQL}/files", 404, "batch_not_found",
         {"headers": AUTH, "files": {"files": ("a.png", b"x", "image/png")}}),
    Door("ingest-add-files-sealed-batch", "ingest", "POST", "/v1/batches/{batch}/files", 409, "batch_sealed",
         {"headers": AUTH, "files": {"files": ("a.png", b"x", "image/png")}}),
    Door("ingest-add-files-not-multipart", "ingest", "POST", "/v1/batches/{batch}/files", 415,
         "unsupported_media_type", _json(b"{}")),
    Door("ingest-seal-nul-batch-id", "ingest", "POST", "/v1/batches/%00/seal", 422, "invalid_request",
         {"headers": AUTH}),
    Door("ingest-seal-unknown-batch", "ingest", "POST", "/v1/batches/nosuchbatch/seal", 404, "batch_not_found",
         {"headers": AUTH}),
    Door("ingest-retry-long-batch-id", "ingest", "POST", "/v1/batches/" + "b" * 5000 + "/retry", 404,
         "batch_not_found", {"headers": AUTH}),
    Door("ingest-retry-body-not-json", "ingest", "POST", "/v1/batches/{batch}/retry", 400, "invalid_json",
         _json(b"{nope")),
    Door("ingest-retry-unknown-field", "ingest", "POST", "/v1/batches/{batch}/retry", 422, "invalid_request",
         _json(b'{"file_ids": [], "drop": "table"}')),
    Door("ingest-retry-file-id-with-nul", "ingest", "POST", "/v1/batches/{batch}/retry", 422, "invalid_request",
         _json(b'{"file_ids": ["a\\u0000"]}')),
    Door("ingest-retry-file-id-sql", "ingest", "POST", "/v1/batches/{batch}/retry", 422, "files_not_retryable",
         _json(b'{"file_ids": ["\' OR 1=1 --"]}')),
    Door("ingest-retry-file-id-lone-surrogate", "ingest", "POST", "/v1/batches/{batch}/retry", 422,
         "invalid_request", _json(b'{"file_ids": ["\\udc80"]}')),
    Door("ingest-retry-a-failed-and-an-unknown-file", "ingest", "POST", "/v1/batches/{batch}/retry", 422,
         "files_not_retryable", _json('{"file_ids": ["{failed_file}", "no-such-file"]}')),
    Door("ingest-retry-an-ok-file", "ingest", "POST", "/v1/batches/{batch}/retry", 422, "files_not_retryable",
         _json('{"file_ids": ["{ok_file}"]}')),
    # -- status API: every path and query parameter
    Door("status-batch-id-sql", "status", "GET", f"/v1/batches/{SQL}", 404, "batch_not_found", {"headers": AUTH}),
    Door("status-batch-id-nul", "status", "GET", "/v1/batches/%00", 404, "batch_not_found", {"headers": AUTH}),
    Door("status-files-batch-id-nul", "status", "GET", "/v1/batches/a%00/files", 422, "invalid_request",
         {"headers": AUTH}),
    Door("status-files-batch-id-non-utf8", "status", "GET", "/v1/batches/%C3%28/files", 404, "batch_not_found",
         {"headers": AUTH}),
    Door("status-results-batch-id-long", "status", "GET", "/v1/batches/" + "b" * 5000 + "/results", 404,
         "batch_not_found", {"headers": AUTH}),
    Door("status-file-id-sql", "status", "GET", "/v1/batches/{batch}/files/" + SQL, 404, "file_not_found",
         {"headers": AUTH}),
    Door("status-file-id-nul", "status", "GET", "/v1/batches/{batch}/files/%00", 422, "invalid_request",
         {"headers": AUTH}),
    Door("status-file-id-traversal", "status", "GET", "/v1/batches/{batch}/files/..%2F..%2Fmanifest.json/content",
         404, "not_found", {"headers": AUTH}),  # the decoded path has more segments: no route matches
    Door("status-page-number-zero", "status", "GET", "/v1/batches/{batch}/files/{ok_file}/pages/0/image", 422,
         "invalid_request", {"headers": AUTH}),
    Door("status-page-number-huge", "status", "GET", "/v1/batches/{batch}/files/{ok_file}/pages/" + "9" * 30
         + "/image", 422, "invalid_request", {"headers": AUTH}),
    Door("status-page-number-missing", "status", "GET", "/v1/batches/{batch}/files/{ok_file}/pages/2/image", 404,
         "page_not_found", {"headers": AUTH}),
    Door("status-thumbnail-width-1", "status", "GET", "/v1/batches/{batch}/files/{ok_file}/pages/1/image?width=1",
         422, "invalid_request", {"headers": AUTH}),
    Door("status-list-cursor-sql", "status", "GET", "/v1/batches", 400, "invalid_cursor",
         {"headers": AUTH, "params": {"cursor": SQL}}),
    Door("status-list-cursor-nul", "status", "GET", "/v1/batches?cursor=%00", 422, "invalid_request",
         {"headers": AUTH}),
    Door("status-list-cursor-non-utf8", "status", "GET", "/v1/batches?cursor=%FF%FE", 400, "invalid_cursor",
         {"headers": AUTH}),
    Door("status-list-cursor-over-512-chars", "status", "GET", "/v1/batches", 422, "invalid_request",
         {"headers": AUTH, "params": {"cursor": "c" * 513}}),
    Door("status-list-limit-zero", "status", "GET", "/v1/batches?limit=0", 422, "invalid_request", {"headers": AUTH}),
    Door("status-list-limit-huge", "status", "GET", "/v1/batches?limit=" + "9" * 30, 422, "invalid_request",
         {"headers": AUTH}),
    Door("status-list-limit-sql", "status", "GET", "/v1/batches", 422, "invalid_request",
         {"headers": AUTH, "params": {"limit": SQL}}),
    Door("status-list-status-sql", "status", "GET", "/v1/batches", 422, "invalid_request",
         {"headers": AUTH, "params": {"status": SQL}}),
    Door("status-list-created-after-sql", "status", "GET", "/v1/batches", 422, "invalid_request",
         {"headers": AUTH, "params": {"created_after": SQL}}),
    Door("status-files-cursor-nul", "status", "GET", "/v1/batches/{batch}/files?cursor=%00", 422, "invalid_request",
         {"headers": AUTH}),
    Door("status-files-name-nul", "status", "GET", "/v1/batches/{batch}/files?name=a%00", 422, "invalid_request",
         {"headers": AUTH}),
    Door("status-files-name-over-200-chars", "status", "GET", "/v1/batches/{batch}/files", 422, "invalid_request",
         {"headers": AUTH, "params": {"name": "n" * 201}}),
    Door("status-results-limit-negative", "status", "GET", "/v1/batches/{batch}/results?limit=-1", 422,
         "invalid_request", {"headers": AUTH}),
    Door("status-results-include-words-sql", "status", "GET", "/v1/batches/{batch}/results", 422, "invalid_request",
         {"headers": AUTH, "params": {"include_words": SQL}}),
    Door("status-long-poll-wait-huge", "status", "GET", "/v1/batches/{batch}?wait=1e308", 422, "invalid_request",
         {"headers": AUTH}),
    Door("status-long-poll-after-version-sql", "status", "GET", "/v1/batches/{batch}", 422, "invalid_request",
         {"headers": AUTH, "params": {"wait": "1", "after_version": SQL}}),
    Door("status-events-last-event-id-sql", "status", "GET", "/v1/batches/{batch}/events", 422, "invalid_request",
         {"headers": AUTH | {"Last-Event-ID": SQL}}),
    Door("status-files-name-sql", "status", "GET", "/v1/batches/{batch}/files", 200, None,
         {"headers": AUTH, "params": {"name": SQL}}),
    Door("status-files-name-like-wildcards", "status", "GET", "/v1/batches/{batch}/files", 200, None,
         {"headers": AUTH, "params": {"name": "%_%"}}),
    Door("status-files-name-control-chars", "status", "GET", "/v1/batches/{batch}/files?name=%1B%5B2J%01", 200, None,
         {"headers": AUTH}),
    Door("status-files-status-filter-sql", "status", "GET", "/v1/batches/{batch}/files", 422, "invalid_request",
         {"headers": AUTH, "params": {"status": "ok' OR 1=1 --"}}),
    Door("status-search-q-sql", "status", "GET", "/v1/search", 200, None, {"headers": AUTH, "params": {"q": SQL}}),
    Door("status-search-q-control-chars", "status", "GET", "/v1/search?q=%01%1B%5B2J", 200, None, {"headers": AUTH}),
    Door("status-search-batch-id-sql", "status", "GET", "/v1/search", 200, None,
         {"headers": AUTH, "params": {"q": "invoice", "batch_id": SQL}}),
    Door("status-search-q-nul", "status", "GET", "/v1/search?q=%00", 422, "invalid_request", {"headers": AUTH}),
    Door("status-search-q-blank", "status", "GET", "/v1/search?q=%20%09", 422, "invalid_request", {"headers": AUTH}),
    Door("status-search-q-over-500-chars", "status", "GET", "/v1/search", 422, "invalid_request",
         {"headers": AUTH, "params": {"q": "q" * 501}}),
    Door("status-search-k-zero", "status", "GET", "/v1/search?q=x&k=0", 422, "invalid_request", {"headers": AUTH}),
    Door("status-search-lang-traversal", "status", "GET", "/v1/search", 422, "invalid_request",
         {"headers": AUTH, "params": {"q": "x", "lang": "../../etc"}}),
    Door("status-search-batch-id-nul", "status", "GET", "/v1/search?q=x&batch_id=%00", 422, "invalid_request",
         {"headers": AUTH}),
    Door("status-webhooks-batch-id-nul", "status", "GET", "/v1/batches/%00/webhook-deliveries", 422,
         "invalid_request", {"headers": AUTH}),
]


def _fill(text, pipeline: Pipeline):
    """The reference batch's ids (and the bucket) in place of {batch}, {ok_file}, {failed_file} and {bucket}."""
    if not isinstance(text, str):
        return text
    for name, value in {"{batch}": pipeline.batch_id, "{ok_file}": pipeline.ok_file,
                        "{failed_file}": pipeline.failed_file, "{bucket}": pipeline.settings.s3_bucket}.items():
        text = text.replace(name, value)
    return text


def send(pipeline: Pipeline, case: Door) -> tuple[int, bytes, dict]:
    base = pipeline.ingest if case.service == "ingest" else pipeline.status
    request = dict(case.request)
    if "raw" in request:
        return raw_request(base, request["raw"])
    if "content" in request:
        request["content"] = _fill(request["content"], pipeline)
    url = base + _fill(case.path, pipeline)
    response = httpx.request(case.method, url, timeout=30, **request)
    return response.status_code, response.content, dict(response.headers)


@pytest.mark.parametrize("case", DOOR_CASES, ids=[c.id for c in DOOR_CASES])
def test_refused_at_the_door(pipeline, case):
    status, body, headers = send(pipeline, case)
    assert status < 500, body[:500]
    assert status == case.status, body[:500]
    if status == 200:
        assert httpx.Response(status, content=body).json()["data"] == []
        return
    if case.code is None:  # refused by uvicorn's HTTP parser: no route (and no key check) ever saw it
        return
    assert headers["content-type"] == "application/problem+json", body[:500]
    problem = httpx.Response(status, content=body).json()
    assert (problem["status"], problem["code"]) == (case.status, case.code), problem
    assert problem["detail"]


def test_search_never_crosses_tenants(pipeline):
    """A word of the reference batch's text is found for its tenant, and never for another, even by batch id."""
    results = httpx.get(f"{pipeline.status}/v1/batches/{pipeline.batch_id}/results", headers=AUTH, timeout=30).json()
    word = next(f["text"].split()[0] for f in results["data"] if f["status"] == "ok")
    query = {"q": word, "batch_id": pipeline.batch_id}
    own = httpx.get(f"{pipeline.status}/v1/search", params=query, headers=AUTH, timeout=30)
    other = httpx.get(f"{pipeline.status}/v1/search", params=query, headers=OTHER_TENANT, timeout=30)
    assert own.status_code == other.status_code == 200
    assert own.json()["data"] and other.json()["data"] == []


def test_the_door_cases_changed_nothing(pipeline):
    """The refused cancels and retries left the reference batch as it was; the other tenant sees no batch."""
    batch = httpx.get(f"{pipeline.status}/v1/batches/{pipeline.batch_id}", headers=AUTH, timeout=30).json()
    assert (batch["status"], batch["succeeded"], batch["failed"]) == ("completed", 2, 1)
    others = httpx.get(f"{pipeline.status}/v1/batches", headers=OTHER_TENANT, timeout=30).json()
    assert others["data"] == []


# ---- kind 2: a bad file among good ones ------------------------------------------------------------------------------

@dataclass
class FileCase:
    id: str
    name: bytes  # as sent in the multipart part's filename (raw bytes)
    data: bytes
    content_type: str
    refused: str | None = None  # the code ingest refuses it with (listed in the 202), or
    failed: str | None = None  # the error_code the worker fails it with, or neither: it ends ok
    content_type_stored: str | None = None  # when it ends ok: the type its bytes proved
    stored_name: str | None = None  # the name the status API lists (default: `name` as UTF-8)


_TRUNCATED_PNG = _saved(_photo(), "PNG")
_JPEG = _saved(_photo(), "JPEG", quality=80)

FILE_CASES = [
    FileCase("zero-bytes", b"empty.png", b"", "image/png", refused="empty"),
    FileCase("over-max-file-bytes", b"big.png", b"\x89PNG\r\n\x1a\n" + bytes(MAX_FILE_BYTES), "image/png",
             refused="too_large"),
    FileCase("text-named-pdf", b"invoice.pdf", b"just some text, not a PDF\n", "application/pdf",
             refused="unsupported_type"),
    FileCase("svg-named-png", b"logo.png", b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/png",
             refused="unsupported_type"),
    FileCase("html-script-named-jpg", b"x.jpg", b"<script>alert(1)</script>", "image/jpeg", refused="unsupported_type"),
    FileCase("name-1000-chars", b"n" * 996 + b".png", good_png(), "image/png", refused="name_too_long"),
    FileCase("truncated-png", b"cut.png", _TRUNCATED_PNG[: len(_TRUNCATED_PNG) // 2], "image/png",
             failed="undecodable"),
    FileCase("png-signature-only", b"sig.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "image/png", failed="undecodable"),
    FileCase("truncated-jpeg", b"cut.jpg", _JPEG[: len(_JPEG) // 2], "image/jpeg", failed="undecodable"),
    FileCase("gif-header-then-junk", b"a.gif", b"GIF89a" + b"\xff" * 50, "image/gif", failed="undecodable"),
    FileCase("webp-header-then-junk", b"a.webp", b"RIFF\x30\x00\x00\x00WEBPVP8 " + b"\x01" * 40, "image/webp",
             failed="undecodable"),
    FileCase("pdf-header-then-junk", b"junk.pdf", b"%PDF-1.7\n" + bytes(range(256)) * 4, "application/pdf",
             failed="undecodable"),
    FileCase("truncated-pdf", b"cut.pdf", pdf_of_pages(2)[:300], "application/pdf", failed="undecodable"),
    FileCase("png-bomb-50000x50000", b"bomb.png", png_declaring(50_000, 50_000), "image/png", failed="undecodable"),
    FileCase("png-bomb-10000x10000", b"bomb2.png", png_declaring(10_000, 10_000), "image/png", failed="undecodable"),
    FileCase("gif-bomb-65535x65535", b"bomb.gif", gif_declaring(65_535, 65_535), "image/gif", failed="undecodable"),
    FileCase("pdf-page-200-inches", b"poster.pdf", pdf_one_page(b"0 0 14400 14400"), "application/pdf",
             failed="undecodable"),
    FileCase("pdf-declaring-a-million-pages", b"million.pdf", pdf_one_page(count=1_000_000), "application/pdf",
             failed="too_many_pages"),
    FileCase("pdf-declaring-more-pages-than-it-has", b"liar.pdf", pdf_one_page(count=2), "application/pdf",
             failed="undecodable"),
    FileCase("pdf-over-max-pages", b"long.pdf", pdf_of_pages(MAX_PAGES + 2), "application/pdf",
             failed="too_many_pages"),
    FileCase("tiff-over-max-pages", b"long.tiff", tiff_of_frames(MAX_PAGES + 1), "image/tiff",
             failed="too_many_pages"),
    FileCase("encrypted-pdf", b"secret.pdf", encrypted_pdf(), "application/pdf", failed="undecodable"),
    FileCase("pdf-named-png", b"scan.png", pdf_of_pages(1), "image/png", content_type_stored="application/pdf"),
    FileCase("png-named-pdf-sent-as-octet-stream", b"scan.pdf", good_png(), "application/octet-stream",
             content_type_stored="image/png"),
    FileCase("part-content-type-sql", b"typed.png", good_png(), "image/png; charset=' OR 1=1 --",
             content_type_stored="image/png"),
    FileCase("name-path-traversal", b"../../etc/passwd", good_png(), "image/png", content_type_stored="image/png"),
    FileCase("name-windows-traversal", b"..\\..\\windows\\win.ini", good_png(), "image/png",
             content_type_stored="image/png"),
    FileCase("name-absolute-path", b"/etc/shadow.png", good_png(), "image/png", content_type_stored="image/png"),
    FileCase("name-sql", b"x'); DROP TABLE files; --.png", good_png(), "image/png", content_type_stored="image/png"),
    # The event contract drops NUL from names (schemas.base.Text): Postgres text cannot hold it.
    FileCase("name-with-nul", b"a\x00b.png", good_png(), "image/png", content_type_stored="image/png",
             stored_name="ab.png"),
    FileCase("name-with-control-chars", b"a\x01\x1b[31mb.png", good_png(), "image/png",
             content_type_stored="image/png", stored_name="a\x01\x1b[31mb.png"),
    FileCase("name-non-utf8", b"\xff\xfe-scan.png", good_png(), "image/png", content_type_stored="image/png",
             stored_name="\xff\xfe-scan.png"),
    FileCase("name-right-to-left-override", "\u202egnp.exe".encode(), good_png(), "image/png",
             content_type_stored="image/png"),
]


def _submit_file_case(pipeline: Pipeline, case: FileCase) -> dict:
    """The bad file between two good ones (chunk_size 2: it shares its chunk with a good file)."""
    files = [(f"good-{case.id}-0.png".encode(), good_png(), "image/png"), (case.name, case.data, case.content_type),
             (f"good-{case.id}-1.png".encode(), good_png(), "image/png")]
    response = httpx.post(f"{pipeline.ingest}/v1/batches", timeout=60, **batch_body(files))
    assert response.status_code == 202, (case.id, response.text)
    return response.json()


@pytest.mark.parametrize("case", FILE_CASES, ids=[c.id for c in FILE_CASES])
def test_a_bad_file_among_good_ones(pipeline, case):
    accepted = pipeline.file_batches[case.id]
    expected_name = case.stored_name or case.name.decode()
    # 1. At the door: refused (listed, with its code) or taken in.
    refusals = [(r["index"], r["code"]) for r in accepted["rejected"]]
    assert refusals == ([(1, case.refused)] if case.refused else []), accepted["rejected"]
    # 2. The batch completes; each good file ends ok, the bad one as expected.
    final = pipeline.client.wait(accepted["batch_id"], timeout=120)
    files = {f["original_name"]: f for f in _files(pipeline, accepted["batch_id"])}
    assert len(files) == 3, files
    for good in (f"good-{case.id}-0.png", f"good-{case.id}-1.png"):
        assert (files[good]["status"], files[good]["error_code"]) == ("ok", None), files[good]
    bad = files[expected_name]
    if case.refused or case.failed:
        assert (bad["status"], bad["error_code"]) == ("failed", case.refused or case.failed), bad
        assert bad["error"]
        assert (final["status"], final["succeeded"], final["failed"]) == ("completed", 2, 1)
    else:
        assert (bad["status"], bad["content_type"]) == ("ok", case.content_type_stored), bad
        assert (final["status"], final["succeeded"], final["failed"]) == ("completed", 3, 0)
        # The object key is {tenant}/{batch}/{file_id}, never built from the name; the bytes come back as sent.
        content = httpx.get(f"{pipeline.status}/v1/batches/{accepted['batch_id']}/files/{bad['file_id']}/content",
                            headers=AUTH, timeout=30)
        assert (content.status_code, content.content) == (200, case.data)


def test_no_object_key_comes_from_a_file_name(pipeline):
    """Every object in the bucket is {tenant}/{batch_id}/{file_id} or a batch's manifest: none escaped its batch."""
    s3 = build_s3_client(pipeline.settings)
    keys = [o.object_name for o in s3.list_objects(pipeline.settings.s3_bucket, recursive=True)]
    batches = {a["batch_id"] for a in pipeline.file_batches.values()}
    assert {key.split("/")[1] for key in keys} >= batches
    uploads = r"default/[0-9a-f]{32}/([0-9a-f]{32}|manifest\.json)|incoming/.*"  # incoming/: the S3 case's own
    assert [key for key in keys if not re.fullmatch(uploads, key)] == []


def test_an_idempotency_key_reused_for_another_request_is_409(pipeline):
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = httpx.post(f"{pipeline.ingest}/v1/batches", timeout=60, **_with_headers(_form(name="first"), **key))
    again = httpx.post(f"{pipeline.ingest}/v1/batches", timeout=60, **_with_headers(_form(name="second"), **key))
    assert first.status_code == 202, first.text
    assert (again.status_code, again.json()["code"]) == (409, "idempotency_key_reused"), again.text


def test_a_retry_of_a_batch_without_failed_files_is_409(pipeline):
    batch_id = pipeline.file_batches["name-sql"]["batch_id"]
    assert pipeline.client.wait(batch_id, timeout=120)["failed"] == 0
    response = httpx.post(f"{pipeline.ingest}/v1/batches/{batch_id}/retry", headers=AUTH, timeout=30)
    assert (response.status_code, response.json()["code"]) == (409, "nothing_to_retry"), response.text


def test_bad_objects_among_good_ones_in_an_s3_batch(pipeline):
    """A batch of objects already in S3: a missing one and one of the wrong sha256 are refused (partial accept),
    a truncated one fails in the worker, and the good ones end ok."""
    s3, bucket = build_s3_client(pipeline.settings), pipeline.settings.s3_bucket
    objects = {"incoming/good-0.png": good_png(), "incoming/cut.jpg": _JPEG[: len(_JPEG) // 2],
               "incoming/good-1.png": good_png()}
    for key, data in objects.items():
        s3.put_object(bucket, key, io.BytesIO(data), len(data))
    refs = [{"bucket": bucket, "key": "incoming/good-0.png"}, {"bucket": bucket, "key": "incoming/cut.jpg"},
            {"bucket": bucket, "key": "incoming/gone.png"},
            {"bucket": bucket, "key": "incoming/good-0.png", "sha256": "0" * 64},
            {"bucket": bucket, "key": "incoming/good-1.png"}]
    response = httpx.post(f"{pipeline.ingest}/v1/batches", headers=AUTH, timeout=60, json={
        "objects": refs, "embeddings": False, "dedupe": False, "chunk_size": 2})
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert [(r["index"], r["code"]) for r in accepted["rejected"]] == [(2, "object_missing"), (3, "checksum_mismatch")]
    final = pipeline.client.wait(accepted["batch_id"], timeout=120)
    assert (final["status"], final["succeeded"], final["failed"]) == ("completed", 2, 3)
    files = sorted((f["original_name"], f["status"], f["error_code"]) for f in _files(pipeline, accepted["batch_id"]))
    assert files == [("incoming/cut.jpg", "failed", "undecodable"), ("incoming/gone.png", "failed", "object_missing"),
                     ("incoming/good-0.png", "failed", "checksum_mismatch"), ("incoming/good-0.png", "ok", None),
                     ("incoming/good-1.png", "ok", None)]


def test_no_request_was_answered_5xx(pipeline):
    """Last: over every case above, each API's request counter holds no 5xx (a refusal is counted as itself)."""
    counted = {}
    for name, url in (("ingest", pipeline.ingest), ("status", pipeline.status)):
        samples = [s for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=10).text)
                   for s in family.samples if s.name == "ocrstream_http_requests_total"]
        assert [s for s in samples if s.labels["status"].startswith("5")] == [], name
        counted[name] = {s.labels["status"] for s in samples}
    assert {"401", "413"} <= counted["ingest"], "the gate's refusals are counted as what they answered"
