"""The HTTP half of the API: ``POST /v1/sessions`` with an API key, and the avatar routes
(docs/protocol.md).

A refusal becomes :class:`~unison_sdk.errors.ConnectionFailed` carrying the server's error
code and HTTP status, with the matching typed server error chained as its cause; a ``503``
(the server is at capacity) becomes its subclass :class:`~unison_sdk.errors.ServerBusyError`
with the server's ``Retry-After``. Any other request (:func:`request`, the avatar routes) that
is refused raises :class:`~unison_sdk.errors.AvatarRefused` with the status and message.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from unison_sdk.errors import (
    AvatarRefused,
    ConnectionFailed,
    ServerBusyError,
    retry_after_s,
    server_error,
)

__all__ = ["post_session", "request"]


def _error_of(e: urllib.error.HTTPError) -> tuple[str, str]:
    """(code, message) of an HTTP error answer's JSON body."""
    try:
        err = json.loads(e.read())["error"]
        return str(err["code"]), str(err["message"])
    except Exception:
        return "internal", f"HTTP {e.code}"


def request(
    base_url: str,
    method: str,
    path: str,
    *,
    api_key: str,
    body: bytes | None = None,
    content_type: str = "application/json",
    timeout: float,
) -> bytes:
    """One request with the API key; the answer's body, or AvatarRefused / ConnectionFailed."""
    headers = {"Authorization": f"Bearer {api_key}"}
    if body is not None:
        headers["Content-Type"] = content_type
    req = urllib.request.Request(
        base_url.rstrip("/") + path, data=body, headers=headers, method=method
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            data: bytes = r.read()
            return data
    except urllib.error.HTTPError as e:
        code, message = _error_of(e)
        raise AvatarRefused(message, code=code, status=e.code) from server_error(code, message)
    except (urllib.error.URLError, OSError) as e:
        raise ConnectionFailed(f"cannot reach {base_url}: {e}") from e


def post_session(base_url: str, api_key: str, body: dict[str, Any], timeout: float) -> Any:
    req = urllib.request.Request(
        base_url.rstrip("/") + "/v1/sessions",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        code, message = _error_of(e)
        if e.code == 503:
            retry = retry_after_s(e.headers.get("Retry-After"))
            raise ServerBusyError(
                f"server refused the session: {message}", retry_after_s=retry
            ) from server_error(code, message)
        raise ConnectionFailed(
            f"server refused the session: {code}: {message}", code=code, status=e.code
        ) from server_error(code, message)
    except (urllib.error.URLError, OSError) as e:
        raise ConnectionFailed(f"cannot reach {base_url}: {e}") from e
