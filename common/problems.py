"""Every error answer of the HTTP services as RFC 9457 problem details with a stable `code` (schemas.api.ProblemCode)."""
import logging
from http import HTTPStatus
from collections.abc import Callable
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import Counter
from starlette.exceptions import HTTPException as StarletteHTTPException

from schemas.api import ProblemCode, ProblemDetail

__all__ = ["PROBLEM_JSON", "Problem", "install_problem_handlers", "problem_response", "problem_responses"]

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"

REQUESTS_REFUSED = Counter("ocrstream_http_requests_refused_total", "Requests answered 4xx/5xx, by problem code",
                           ["code"])

# What a status code means when nothing more precise raised it (Starlette's 404/405, the API key check).
_CODE_OF_STATUS = {400: ProblemCode.INVALID_JSON, 401: ProblemCode.UNAUTHORIZED, 404: ProblemCode.NOT_FOUND, 405: ProblemCode.METHOD_NOT_ALLOWED,
                   413: ProblemCode.REQUEST_TOO_LARGE, 422: ProblemCode.INVALID_REQUEST,
                   503: ProblemCode.UNAVAILABLE}


class Problem(StarletteHTTPException):
    """An error answer: HTTP status, stable code, a detail a person can act on, and optionally each error."""

    def __init__(self, status_code: int, code: ProblemCode, detail: str, *, errors: list[dict] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(status_code, detail, headers)
        self.code = code
        self.errors = errors


def problem_response(status_code: int, code: ProblemCode, detail: Any, *, errors: list[dict] | None = None,
                     headers: dict[str, str] | None = None) -> JSONResponse:
    REQUESTS_REFUSED.labels(code.value).inc()
    body = ProblemDetail(title=HTTPStatus(status_code).phrase, status=status_code, code=code, detail=detail,
                         errors=errors)
    return JSONResponse(body.model_dump(mode="json", exclude_none=True), status_code=status_code,
                        headers=headers, media_type=PROBLEM_JSON)


def problem_responses(*codes: tuple[int, ProblemCode, str]) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` of a route: each status with the codes it can carry, and what each means."""
    by_status: dict[int, list[str]] = {}
    for status_code, code, meaning in codes:
        by_status.setdefault(status_code, []).append(f"`{code.value}`: {meaning}")
    return {status_code: {"model": ProblemDetail, "description": "; ".join(lines),
                          "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/ProblemDetail"}}}}
            for status_code, lines in sorted(by_status.items())}


async def _on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = getattr(exc, "code", None) or _CODE_OF_STATUS.get(exc.status_code, ProblemCode.INVALID_REQUEST)
    errors = getattr(exc, "errors", None)
    _log(request, exc.status_code, code, exc.detail, exc.__cause__)
    return problem_response(exc.status_code, code, exc.detail, errors=errors, headers=exc.headers)


async def _on_invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
    if any(e["type"] == "json_invalid" for e in errors):  # a body that does not parse is not a field's fault
        _log(request, 400, ProblemCode.INVALID_JSON, detail, None)
        return problem_response(400, ProblemCode.INVALID_JSON, f"the body is not JSON: {detail}", errors=errors)
    _log(request, 422, ProblemCode.INVALID_REQUEST, detail, None)
    return problem_response(422, ProblemCode.INVALID_REQUEST, detail, errors=errors)


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("request failed", extra={"path": request.url.path})
    return problem_response(500, ProblemCode.INTERNAL_ERROR, "an unexpected error; nothing was changed, retry")


def _log(request: Request, status_code: int, code: ProblemCode, detail: Any, cause: BaseException | None) -> None:
    log.log(logging.ERROR if status_code >= 500 else logging.WARNING, "request refused",
            extra={"path": request.url.path, "status": status_code, "code": code.value, "detail": detail},
            exc_info=cause)


async def _on_database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    _log(request, 503, ProblemCode.UNAVAILABLE, str(exc), None)
    return problem_response(503, ProblemCode.UNAVAILABLE, "the database is unavailable, retry shortly",
                            headers={"Retry-After": "5"})


def _problem_openapi(app) -> Callable[[], dict]:
    """The app's OpenAPI document with FastAPI's own 422 (HTTPValidationError) replaced by the problem details
    that `_on_invalid_request` answers, so a generated client (or a fuzzer) reads what really comes back."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = build()
            problem = {"$ref": "#/components/schemas/ProblemDetail"}
            for operation in (op for path in schema.get("paths", {}).values() for op in path.values()):
                for status_code, answer in operation.get("responses", {}).items():
                    content = answer.get("content", {})
                    if status_code == "422" and "HTTPValidationError" in str(content):
                        answer["description"] = "`invalid_request`: a parameter or field is invalid; `errors` lists each"
                    elif not (status_code[0] in "45" and "ProblemDetail" in str(content)):
                        continue
                    answer["content"] = {PROBLEM_JSON: {"schema": problem}}  # every error is problem+json
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.setdefault("ProblemDetail", ProblemDetail.model_json_schema(ref_template="#/components/schemas/{model}"))
            components.pop("HTTPValidationError", None)
            components.pop("ValidationError", None)
            app.openapi_schema = schema
        return app.openapi_schema

    return openapi


def install_problem_handlers(app, *, database_errors: tuple[type[Exception], ...] = ()) -> None:
    """Problem answers for every error (and an OpenAPI document that says so); `database_errors` (e.g.
    psycopg's OperationalError) become 503s."""
    app.openapi = _problem_openapi(app)
    for error in database_errors:
        app.add_exception_handler(error, _on_database_unavailable)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(RequestValidationError, _on_invalid_request)
    app.add_exception_handler(Exception, _on_unexpected)
