"""Opening one websocket of a session and reading its ``ready`` (docs/protocol.md).

The first message of every websocket is ``ready``; anything else, a timeout or an HTTP refusal
of the upgrade becomes a :class:`~unison_sdk.errors.ConnectionFailed` (a ``503`` a
:class:`~unison_sdk.errors.ServerBusyError`) carrying the refusal's code and status, so the
client's resume and move logic can tell "gone for good" from "try again".
"""

from __future__ import annotations

import asyncio

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from unison_sdk.errors import ConnectionFailed, ServerBusyError, retry_after_s
from unison_sdk.protocol import ClientProtocol, Ready

__all__ = ["dial"]

MAX_FRAME_BYTES = 2**22  # a server message (an SDP answer is the largest, a few KiB)
_CODE_OF_STATUS = {400: "bad_request", 401: "unauthorized", 503: "capacity"}


async def dial(url: str, proto: ClientProtocol, timeout_s: float) -> tuple[ClientConnection, Ready]:
    """Open the websocket at ``url`` and read its ``ready`` through ``proto``. Cancelling is
    safe (a half-open websocket is closed by the library)."""
    try:
        ws = await asyncio.wait_for(
            websockets.connect(url, max_size=MAX_FRAME_BYTES, open_timeout=timeout_s), timeout_s
        )
    except websockets.InvalidStatus as e:
        status = e.response.status_code
        body = e.response.body.decode(errors="replace").strip() if e.response.body else ""
        message = f"websocket refused ({status}): {body}"
        if status == 503:
            retry = retry_after_s(e.response.headers.get("Retry-After"))
            raise ServerBusyError(message, retry_after_s=retry) from e
        raise ConnectionFailed(message, code=_CODE_OF_STATUS.get(status), status=status) from e
    except (OSError, TimeoutError, websockets.InvalidHandshake) as e:
        raise ConnectionFailed(f"cannot open the websocket: {e!r}") from e
    try:
        raw = await asyncio.wait_for(ws.recv(), timeout_s)
    except (ConnectionClosed, TimeoutError) as e:
        await ws.close()
        raise ConnectionFailed(f"no 'ready' from the server: {e!r}") from e
    first = proto.receive(raw)
    if not isinstance(first, Ready):
        await ws.close()
        raise ConnectionFailed(f"expected 'ready', got {first!r}")
    return ws, first
