"""The one error a request can end in: an HTTP status and a one-line message (the OIP error body)."""

from __future__ import annotations


class ServeError(Exception):
    """A request that cannot be answered with outputs: ``status`` (4xx: the caller's to fix, 5xx:
    the server's), a one-line ``message`` sent as ``{"error": message}``, and extra ``headers``
    (``Retry-After`` on 503)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = " ".join(str(message).split())[:1000]
        self.headers = headers or {}


def bad_request(message: str) -> ServeError:
    return ServeError(400, message)


def too_large(message: str) -> ServeError:
    return ServeError(413, message)
