"""What the client raises: every error is an OcrstreamError."""

__all__ = ["ApiError", "EndpointMissing", "OcrstreamError", "Unreachable", "WaitTimeout"]


class OcrstreamError(Exception):
    """Base of everything the ocrstream client raises."""


class ApiError(OcrstreamError):
    """The API answered with an error status; `code` is its machine code when it sent one."""

    def __init__(self, method: str, path: str, status_code: int, detail: object, code: str | None = None) -> None:
        super().__init__(f"{method} {path}: {status_code} {code + ': ' if code else ''}{detail}")
        self.status_code = status_code
        self.detail = detail
        self.code = code


class EndpointMissing(ApiError):
    """The server has no such endpoint (404 on an unknown route, or 405): it is older than this client."""


class WaitTimeout(OcrstreamError, TimeoutError):
    """The batch did not reach a terminal status in time; `last` is the last status seen (or None)."""

    def __init__(self, batch_id: str, timeout: float, last: dict | None) -> None:
        super().__init__(f"batch {batch_id} not finished in {timeout:.0f} s (last status: "
                         f"{last['status'] if last else 'none yet'})")
        self.last = last


class Unreachable(OcrstreamError):
    """The server could not be reached (connection refused, timed out, reset) on every try."""
