"""The server's exception tree; each error carries the protocol error code it is reported as.

::

    ServerError (code "internal")
    ├── BadRequest (code "bad_request")       malformed JSON, unknown type, bad SDP, oversize input
    │   ├── TooLarge (413)                    a body or picture over its limit
    │   └── Refused (its own 4xx)             an avatar request the avatars package refused:
    │                                         not an image 415, no face 422, unknown id 404, …
    ├── Unauthorized (code "unauthorized")    missing / wrong API key, bad, expired or foreign token
    ├── RateLimited (code "rate_limited")     too many ``say`` messages per second
    └── CapacityError (code "capacity")       no free engine session or viewer slot

The HTTP status of each is :attr:`ServerError.http_status`; a websocket reports it as
``error {code, message, ref?}`` (docs/protocol.md).
"""

from __future__ import annotations

__all__ = [
    "BadRequest",
    "CapacityError",
    "RateLimited",
    "Refused",
    "ServerError",
    "TooLarge",
    "Unauthorized",
]


class ServerError(Exception):
    """Base of every error the server reports to a client."""

    code = "internal"
    http_status = 500

    def __init__(self, message: str, *, ref: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.ref = ref  # the client message ``id`` the error answers, when there is one


class BadRequest(ServerError):
    code = "bad_request"
    http_status = 400


class TooLarge(BadRequest):
    http_status = 413


class Refused(BadRequest):
    """Well formed, but not to be served as asked; ``status`` is the 4xx that says why
    (``unison_stream.avatars.errors``: 404, 409, 413, 415, 422 …)."""

    def __init__(self, message: str, *, status: int, ref: str | None = None) -> None:
        super().__init__(message, ref=ref)
        self.http_status = status


class Unauthorized(ServerError):
    code = "unauthorized"
    http_status = 401


class RateLimited(ServerError):
    code = "rate_limited"
    http_status = 429


class CapacityError(ServerError):
    code = "capacity"
    http_status = 503
