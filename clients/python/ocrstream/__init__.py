"""The ocrstream client: submit batches of images/PDFs, follow them, read their results (sync and async)."""
from ocrstream.aio import AsyncClient
from ocrstream.client import Client
from ocrstream.errors import ApiError, EndpointMissing, OcrstreamError, Unreachable, WaitTimeout
from ocrstream.protocol import TERMINAL_STATUSES, RetryPolicy

__all__ = ["ApiError", "AsyncClient", "Client", "EndpointMissing", "OcrstreamError", "RetryPolicy",
           "TERMINAL_STATUSES", "Unreachable", "WaitTimeout"]
