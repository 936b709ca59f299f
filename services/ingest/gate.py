"""ASGI gate in front of every /v1 route: the API key and the body size are checked before a byte of the body is
read, so an unauthenticated or oversized upload is refused without being spooled to disk."""
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from schemas.api import ProblemCode
from common.problems import problem_response


class _TooLarge(Exception):
    pass


class RequestGate:
    def __init__(self, app: ASGIApp, *, api_keys: dict[str, str], max_request_bytes: int) -> None:
        self._app = app
        self._api_keys = api_keys
        self._max = max_request_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self._app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        authorizations = sum(k.lower() == b"authorization" for k, _ in scope["headers"])
        refusal = self._refusal(headers, authorizations)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        started = False

        async def send_tracking(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self._app(scope, self._counting(receive), send_tracking)
        except _TooLarge:
            if not started:
                await self._too_large()(scope, receive, send)

    def _refusal(self, headers: dict[str, str], authorizations: int):
        if authorizations > 1:  # which one would count is ambiguous (the routes read the first): refuse both
            return problem_response(401, ProblemCode.UNAUTHORIZED, "send exactly one Authorization header",
                                    headers={"WWW-Authenticate": "Bearer"})
        scheme, _, key = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not key:
            return problem_response(401, ProblemCode.UNAUTHORIZED,
                                    "missing API key: send 'Authorization: Bearer <key>'",
                                    headers={"WWW-Authenticate": "Bearer"})
        if key.strip() not in self._api_keys:
            return problem_response(401, ProblemCode.UNAUTHORIZED, "unknown API key",
                                    headers={"WWW-Authenticate": "Bearer"})
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self._max:
            return self._too_large()
        return None

    def _counting(self, receive: Receive) -> Receive:
        """A body sent without Content-Length (chunked) is cut off at the limit."""
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self._max:
                    raise _TooLarge
            return message

        return counted

    def _too_large(self):
        return problem_response(413, ProblemCode.REQUEST_TOO_LARGE,
                                f"the request body is over {self._max} bytes: split it into several batches")
