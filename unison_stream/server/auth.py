"""API keys and signed, short-lived session tokens (HMAC-SHA256).

A token is ``base64url(payload) + "." + base64url(hmac)`` with payload
``{"sid": session_id, "exp": unix_seconds, "n": nonce}``; it is scoped to one session and
expires after ``token_ttl_s``. Verification is constant-time. No I/O here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable, Sequence

from unison_stream.server.errors import Unauthorized

__all__ = ["ApiKeys", "TokenSigner"]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class ApiKeys:
    """The set of accepted API keys, compared in constant time."""

    def __init__(self, keys: Sequence[str]) -> None:
        self._keys = [k.encode() for k in keys if k]

    def __len__(self) -> int:
        return len(self._keys)

    def check(self, authorization: str | None) -> str:
        """Accept ``Bearer <key>`` and return the key; raise :class:`Unauthorized` otherwise."""
        if not authorization or not authorization.startswith("Bearer "):
            raise Unauthorized("missing 'Authorization: Bearer <api key>' header")
        given = authorization[len("Bearer ") :].strip().encode()
        if not any(hmac.compare_digest(given, k) for k in self._keys):
            raise Unauthorized("unknown API key")
        return given.decode()

    def accepts(self, authorization: str | None) -> bool:
        try:
            self.check(authorization)
        except Unauthorized:
            return False
        return True


class TokenSigner:
    """Issues and verifies session tokens; ``clock`` is injectable for tests."""

    def __init__(
        self, secret: str | bytes, *, ttl_s: float, clock: Callable[[], float] = time.time
    ) -> None:
        self._key = secret.encode() if isinstance(secret, str) else secret
        if not self._key:
            self._key = secrets.token_bytes(32)
        self.ttl_s = ttl_s
        self._clock = clock

    def _mac(self, body: str) -> str:
        return _b64(hmac.new(self._key, body.encode("ascii"), hashlib.sha256).digest())

    def issue(self, session_id: str) -> tuple[str, float]:
        """Return ``(token, expires_at)`` for ``session_id``."""
        exp = self._clock() + self.ttl_s
        payload = {"sid": session_id, "exp": round(exp, 3), "n": secrets.token_hex(4)}
        body = _b64(json.dumps(payload, separators=(",", ":")).encode())
        return f"{body}.{self._mac(body)}", exp

    def verify(self, token: str | None, *, session_id: str | None = None) -> str:
        """Return the token's session id; raise :class:`Unauthorized` naming what is wrong."""
        if not token:
            raise Unauthorized("missing session token")
        body, _, mac = token.partition(".")
        if not body or not mac or not hmac.compare_digest(mac, self._mac(body)):
            raise Unauthorized("invalid session token")
        try:
            payload = json.loads(_unb64(body))
            sid, exp = str(payload["sid"]), float(payload["exp"])
        except (ValueError, KeyError, TypeError) as e:
            raise Unauthorized("invalid session token") from e
        if self._clock() > exp:
            raise Unauthorized("session token expired")
        if session_id is not None and sid != session_id:
            raise Unauthorized("token belongs to another session")
        return sid
