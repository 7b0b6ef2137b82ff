"""The SDK's exception tree; server errors keep the server's code, message and ``ref``.

::

    UnisonError
    ├── ConnectionFailed       the server could not be reached, or refused the session over HTTP
    │   └── ServerBusyError    503: every engine session is taken; retry after ``retry_after_s``
    ├── AvatarRefused          an avatar request refused: ``status`` 413, 415, 422, 404, 409 …
    ├── ConnectionLost         the websocket dropped and the session could not be resumed
    ├── SessionEnded           the server ended the session (close code 4000, 4001, 4408, 4409)
    ├── PlaybackUnavailable    no audio output device (or no PortAudio) for ``play()``
    └── ServerError            an ``error {code, message, ref?}`` from the server (docs/protocol.md)
        ├── BadRequest         code "bad_request"
        ├── Unauthorized       code "unauthorized"
        ├── RateLimited        code "rate_limited"
        ├── CapacityError      code "capacity"
        └── InternalError      code "internal"

:class:`ConnectionFailed` raised for an HTTP error answer chains the matching
:class:`ServerError` as its ``__cause__`` and also carries its ``code``.
"""

from __future__ import annotations

__all__ = [
    "AvatarRefused",
    "BadRequest",
    "CapacityError",
    "ConnectionFailed",
    "ConnectionLost",
    "InternalError",
    "PlaybackUnavailable",
    "RateLimited",
    "ServerBusyError",
    "ServerError",
    "SessionEnded",
    "Unauthorized",
    "UnisonError",
    "retry_after_s",
    "server_error",
]

DEFAULT_RETRY_AFTER_S = 1.0  # a 503 without a usable ``Retry-After``


class UnisonError(Exception):
    """Base of every error raised by :mod:`unison_sdk`."""


class ConnectionFailed(UnisonError):
    """The session could not be opened (network error, or an HTTP error answer)."""

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None):
        super().__init__(message)
        self.code, self.status = code, status


class ServerBusyError(ConnectionFailed):
    """The server is at capacity (HTTP 503, code ``capacity``): it serves as many sessions as it
    can in real time, or a cluster has no replica with room. Nothing is wrong with the request;
    try again after ``retry_after_s`` seconds (the server's ``Retry-After``), or elsewhere."""

    def __init__(self, message: str, *, retry_after_s: float = DEFAULT_RETRY_AFTER_S) -> None:
        super().__init__(
            f"{message} (the server is at capacity; retry in {retry_after_s:g} s)",
            code="capacity",
            status=503,
        )
        self.retry_after_s = retry_after_s


class AvatarRefused(UnisonError):
    """The server refused an avatar request: ``status`` is the HTTP status (415 not an image,
    413 too large, 422 no usable face or a bad design, 404 no such avatar for this key, 409 the
    key's limit), ``message`` says what to change."""

    def __init__(self, message: str, *, code: str = "bad_request", status: int = 400) -> None:
        super().__init__(f"{status}: {message}")
        self.message, self.code, self.status = message, code, status


def retry_after_s(header: str | None) -> float:
    """A ``Retry-After`` header in seconds (the delay form; anything else → the default)."""
    try:
        value = float(header or "")
    except ValueError:
        return DEFAULT_RETRY_AFTER_S
    return value if value >= 0 else DEFAULT_RETRY_AFTER_S


class ConnectionLost(UnisonError):
    """The websocket dropped and no resume succeeded within the reconnect time."""


class SessionEnded(UnisonError):
    """The server closed the session; ``code`` is the websocket close code."""

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class PlaybackUnavailable(UnisonError):
    """``play()`` found no audio output device or no PortAudio library."""


class ServerError(UnisonError):
    """An error reported by the server: ``code``, ``message`` and the ``ref`` it answers."""

    code = "internal"

    def __init__(self, message: str, *, code: str | None = None, ref: str | None = None):
        super().__init__(f"{code or self.code}: {message}")
        if code is not None:
            self.code = code
        self.message, self.ref = message, ref


class BadRequest(ServerError):
    code = "bad_request"


class Unauthorized(ServerError):
    code = "unauthorized"


class RateLimited(ServerError):
    code = "rate_limited"


class CapacityError(ServerError):
    code = "capacity"


class InternalError(ServerError):
    code = "internal"


_BY_CODE: dict[str, type[ServerError]] = {
    c.code: c for c in (BadRequest, Unauthorized, RateLimited, CapacityError, InternalError)
}


def server_error(code: str, message: str, ref: str | None = None) -> ServerError:
    """The typed exception for a server error code (unknown codes → :class:`ServerError`)."""
    cls = _BY_CODE.get(code, ServerError)
    return cls(message, code=code, ref=ref)
