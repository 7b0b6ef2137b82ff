"""``unison-stream bench hostile --json``: hostile input at volume against a served server while
one victim session streams (docs/reliability.md "Hostile input").

The server is a ``serve`` subprocess on 127.0.0.1 (as in ``bench serve``); a victim session
with an aiortc viewer streams the whole time. Rounds, one after another:

- ``sdp``: malformed offers on an attacker's websocket (truncated, lines dropped or repeated,
  a broken fingerprint, garbage, an oversized attribute) — each must be answered: ``answer``
  when it still parses, else ``error bad_request``;
- ``tokens``: forged, tampered, expired (signed with the bench's ``token_secret``), replayed
  (of an ended session), other-session (``DELETE`` of another session) and forged resume
  tokens — each must be refused with ``401``;
- ``bodies``: ``POST /v1/sessions`` bodies over the limit (2×, 1 MB, 8 MB; with a length and
  chunked) — each ``413``; nested JSON under the limit — ``400``;
- ``drip``: raw TCP clients that send their request headers one byte at a time and never
  finish, and websockets that announce a frame and drip it a byte a second without ever
  answering a ping; figures: how many the server closed and after how long. Headers are cut by
  ``server.http_idle_timeout_s``; a dripping websocket resets aiohttp's heartbeat with every
  byte, so it is the session's idle timeout (no complete message: ``server.idle_timeout_s``)
  that ends it — run with a short one to see it.

Across all rounds: the victim's video fps, ``/healthz`` answering, and the server's open
sessions, peer connections, threads and file descriptors before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import secrets
import time
from typing import Any

import aiohttp
from unison_sdk.protocol import Answer, ClientProtocol, ErrorEvent, Offer, Ping, Pong

from unison_stream.benchmarks.harness import (
    KEY,
    Viewer,
    healthz,
    print_figures,
    sample,
    served,
    wait_healthy,
)
from unison_stream.server.auth import TokenSigner

__all__ = ["mutate_sdp", "recvonly_offer", "register"]

SECRET = "bench-hostile-secret"
AUTH = {"Authorization": f"Bearer {KEY}"}


def mutate_sdp(sdp: str, rng: random.Random) -> str:
    """One malformed variant of a valid offer."""
    lines = sdp.strip().split("\r\n")
    kind = rng.randrange(8)
    if kind == 0:  # truncated anywhere
        return sdp[: rng.randrange(len(sdp))]
    if kind == 1:  # a line dropped
        del lines[rng.randrange(len(lines))]
    elif kind == 2:  # m-sections repeated
        ms = [ln for ln in lines if ln.startswith("m=")]
        lines += ms * rng.randrange(2, 50)
    elif kind == 3:  # a broken fingerprint
        lines = [
            "a=fingerprint:sha-256 ZZ:" + secrets.token_hex(4) if ln.startswith("a=fingerprint")
            else ln
            for ln in lines
        ]  # fmt: skip
    elif kind == 4:  # garbage
        return secrets.token_urlsafe(rng.randrange(1, 2000))
    elif kind == 5:  # an oversized attribute (under the message limit)
        lines.insert(rng.randrange(1, len(lines)), "a=x-junk:" + "A" * 40_000)
    elif kind == 6:  # lines shuffled
        rng.shuffle(lines)
    else:  # bad numbers in the media lines
        lines = [
            f"m=video {rng.randrange(-5, 10**12)} UDP/TLS/RTP/SAVPF -1 abc" if ln.startswith("m=")
            else ln
            for ln in lines
        ]  # fmt: skip
    return "\r\n".join(lines) + "\r\n"


async def recvonly_offer(base: str) -> str:
    """A valid recvonly offer from a fresh aiortc peer."""
    from aiortc import RTCPeerConnection

    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    assert pc.localDescription is not None
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


async def _session(http: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    r = await http.post(f"{base}/v1/sessions", json={}, headers=AUTH)
    info: dict[str, Any] = await r.json()
    if r.status != 201:
        raise RuntimeError(f"session refused: {info}")
    return info


async def sdp_round(base: str, n: int, seed: int = 0) -> dict[str, Any]:
    rng = random.Random(seed)
    good = await recvonly_offer(base)
    answers: dict[str, int] = {}
    unanswered = 0
    async with aiohttp.ClientSession() as http:
        info = await _session(http, base)
        async with http.ws_connect(info["ws_url"], max_msg_size=0) as ws:
            await ws.receive(timeout=10)  # ready
            for i in range(n):
                await ws.send_str(ClientProtocol.encode(Offer(mutate_sdp(good, rng), f"o{i}")))
                try:
                    while True:  # skip stats / state until the answer to this offer
                        m = json.loads((await ws.receive(timeout=10)).data)
                        if m.get("type") in (Answer.TYPE, ErrorEvent.TYPE):
                            key = m["type"] if m["type"] == Answer.TYPE else f"error:{m['code']}"
                            answers[key] = answers.get(key, 0) + 1
                            break
                except (TimeoutError, TypeError, ValueError):
                    unanswered += 1
        await http.delete(f"{base}/v1/sessions/{info['session_id']}", headers=AUTH)
    return {"offers": n, "answers": answers, "unanswered": unanswered}


async def _ws_status(http: aiohttp.ClientSession, url: str) -> int:
    try:
        async with http.ws_connect(url):
            return 101
    except aiohttp.WSServerHandshakeError as e:
        return e.status


async def token_round(base: str, n: int) -> dict[str, Any]:
    """``n`` attempts spread over six kinds; the status codes each kind got."""
    ws = base.replace("http", "ws", 1) + "/v1/ws"
    expired = TokenSigner(SECRET, ttl_s=-10.0)
    out: dict[str, dict[str, int]] = {}

    def count(kind: str, status: int) -> None:
        out.setdefault(kind, {})
        out[kind][str(status)] = out[kind].get(str(status), 0) + 1

    async with aiohttp.ClientSession() as http:
        a, b = await _session(http, base), await _session(http, base)
        ended = await _session(http, base)
        await http.delete(f"{base}/v1/sessions/{ended['session_id']}", headers=AUTH)
        for i in range(n):
            kind = ("forged", "tampered", "expired", "replayed", "other_session", "resume")[i % 6]
            if kind == "forged":
                status = await _ws_status(http, f"{ws}?token={secrets.token_urlsafe(48)}")
            elif kind == "tampered":
                t = a["token"]
                k = len(t) // 2 + i % 7
                bad = t[:k] + ("A" if t[k] != "A" else "B") + t[k + 1 :]
                status = await _ws_status(http, f"{ws}?token={bad}")
            elif kind == "expired":
                status = await _ws_status(http, f"{ws}?token={expired.issue(a['session_id'])[0]}")
            elif kind == "replayed":
                status = await _ws_status(http, f"{ws}?token={ended['token']}")
            elif kind == "other_session":
                r = await http.delete(
                    f"{base}/v1/sessions/{b['session_id']}",
                    headers={"Authorization": f"Bearer {a['token']}"},
                )
                status = r.status
            else:
                fake = secrets.token_urlsafe(40)
                status = await _ws_status(http, f"{ws}?resume={fake}&last_seq=0")
            count(kind, status)
        for s in (a, b):
            await http.delete(f"{base}/v1/sessions/{s['session_id']}", headers=AUTH)
    return {"attempts": n, "statuses": out}


async def _chunks(total: int, size: int = 65536) -> Any:
    sent = 0
    while sent < total:
        yield b"x" * min(size, total - sent)
        sent += size


async def body_round(base: str, n: int, limit: int) -> dict[str, Any]:
    sizes = [2 * limit, 1 << 20, 8 << 20]
    out: dict[str, dict[str, int]] = {}
    async with aiohttp.ClientSession() as http:
        for i in range(n):
            kind = ("length", "chunked", "nested")[i % 3]
            size = sizes[(i // 3) % len(sizes)]
            url = f"{base}/v1/sessions"
            try:
                if kind == "length":
                    r = await http.post(url, data=b"{" + b" " * size + b"}", headers=AUTH)
                elif kind == "chunked":
                    r = await http.post(url, data=_chunks(size), headers=AUTH)
                else:
                    r = await http.post(
                        url, data="[" * (limit // 3) + "]" * (limit // 3), headers=AUTH
                    )
                status = str(r.status)
                r.release()
            except aiohttp.ClientError as e:  # the server may cut an upload it refused
                status = f"cut:{type(e).__name__}"
            out.setdefault(kind, {})
            out[kind][status] = out[kind].get(status, 0) + 1
    return {"requests": n, "statuses": out}


async def _drip_headers(host: str, port: int, hold_s: float) -> float | None:
    """Seconds until the server closed a connection whose headers never end; None: still
    open after ``hold_s``."""
    reader, writer = await asyncio.open_connection(host, port)
    t0 = time.monotonic()
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 10_000
    try:
        for byte in request:
            if time.monotonic() - t0 > hold_s:
                return None
            writer.write(bytes([byte]))
            await writer.drain()
            try:
                if await asyncio.wait_for(reader.read(1), 0.5) == b"":
                    return time.monotonic() - t0
            except TimeoutError:
                continue
        return None
    except ConnectionError:
        return time.monotonic() - t0
    finally:
        writer.close()


async def _drip_ws(http: aiohttp.ClientSession, base: str, hold_s: float) -> float | None:
    """A websocket that announces a 1000-byte frame, drips it a byte a second and never
    answers a ping: seconds until the server closed it (None: open after ``hold_s``)."""
    info = await _session(http, base)
    ws = await http.ws_connect(info["ws_url"], autoping=False)
    t0 = time.monotonic()
    conn = ws._conn
    assert conn is not None and conn.transport is not None
    transport = conn.transport
    # FIN + text opcode, masked, 16-bit length 1000, then the mask key
    transport.write(bytes([0x81, 0x80 | 126]) + (1000).to_bytes(2, "big") + b"\x00\x00\x00\x00")
    try:
        while time.monotonic() - t0 < hold_s:
            if ws.closed or transport.is_closing():
                return time.monotonic() - t0
            transport.write(b"a")
            try:
                m = await ws.receive(timeout=1.0)
                if m.type in (
                    aiohttp.WSMsgType.CLOSE,
                    aiohttp.WSMsgType.CLOSED,
                    aiohttp.WSMsgType.ERROR,
                ):
                    return time.monotonic() - t0
            except TimeoutError:
                pass
        return None
    finally:
        await ws.close()
        await http.delete(f"{base}/v1/sessions/{info['session_id']}", headers=AUTH)


async def drip_round(base: str, header_drips: int, ws_drips: int, hold_s: float) -> dict[str, Any]:
    host, port = base.removeprefix("http://").split(":")
    async with aiohttp.ClientSession() as http:
        t0 = time.monotonic()
        health_ms: list[float] = []

        async def probe() -> None:
            while time.monotonic() - t0 < hold_s:
                t = time.monotonic()
                await healthz(base)
                health_ms.append(1000 * (time.monotonic() - t))
                await asyncio.sleep(0.5)

        jobs = [_drip_headers(host, int(port), hold_s) for _ in range(header_drips)]
        jobs += [_drip_ws(http, base, hold_s) for _ in range(ws_drips)]
        res = await asyncio.gather(probe(), *jobs)
    closed_h = [t for t in res[1 : 1 + header_drips] if t is not None]
    closed_w = [t for t in res[1 + header_drips :] if t is not None]
    return {
        "header_drips": header_drips,
        "header_drips_closed": len(closed_h),
        "header_close_s_max": max(closed_h, default=0.0),
        "ws_drips": ws_drips,
        "ws_drips_closed": len(closed_w),
        "ws_close_s_max": max(closed_w, default=0.0),
        "healthz_ms_max": max(health_ms, default=0.0),
    }


async def hostile(base: str, pid: int, args: argparse.Namespace) -> dict[str, Any]:
    victim = Viewer()
    await victim.open(base, {})

    async def keep_alive() -> None:  # a client that is there: the idle timeout spares it
        for k in range(10**9):
            await victim.send(Ping(f"k{k}"))
            await asyncio.sleep(5.0)

    victim.tasks.append(asyncio.ensure_future(keep_alive()))
    await asyncio.sleep(2.0)  # its media is flowing
    before = {**(await healthz(base)), **sample(pid)}
    t0 = time.monotonic()
    out: dict[str, Any] = {}
    out["sdp"] = await sdp_round(base, args.sdp)
    out["tokens"] = await token_round(base, args.tokens)
    out["bodies"] = await body_round(base, args.bodies, int(args.limit))
    out["drip"] = await drip_round(base, args.header_drips, args.ws_drips, args.hold)
    t1 = time.monotonic()
    frames = sum(1 for t, _ in victim.video if t0 <= t < t1)
    out["victim_video_fps"] = frames / (t1 - t0)
    await victim.send(Ping("after"))
    try:
        await victim.wait(lambda m: m.get("type") == Pong.TYPE and m.get("id") == "after", 10)
        out["victim_alive"] = True
    except TimeoutError:
        out["victim_alive"] = False
    await victim.close()
    await asyncio.sleep(1.0)
    after = {**(await healthz(base)), **sample(pid)}
    keys = ("sessions", "channels", "peer_connections", "threads", "fds", "rss_server_mb")
    out["server"] = {k: [before[k], after[k]] for k in keys}
    out["seconds"] = t1 - t0
    return out


def run(args: argparse.Namespace) -> int:
    from unison_stream.runtime import host_info

    overrides = [f"server.token_secret={SECRET}", f"server.max_message_bytes={args.limit}"]
    overrides += ["server.max_sessions=8", "server.say_rate_per_s=1000", *args.overrides]
    with served(args.engine, overrides) as (proc, base):

        async def main() -> dict[str, Any]:
            model = (await wait_healthy(base, timeout_s=180))["model"]
            res = await hostile(base, proc.pid, args)
            return {"engine": args.engine, "model": model, "host": host_info(), **res}

        res = asyncio.run(main())
        res["server_alive"] = proc.poll() is None
    print_figures(res, args.json)
    return 0


def register(sub: Any) -> None:
    """Called by ``unison_stream.benchmarks.cli`` for ``bench hostile``."""
    p = sub.add_parser("hostile", help="hostile input at volume while a victim streams")
    p.add_argument("--engine", choices=("real", "fake"), default="fake")
    p.add_argument("--sdp", type=int, default=200, help="malformed offers")
    p.add_argument("--tokens", type=int, default=600, help="bad-token attempts")
    p.add_argument("--bodies", type=int, default=60, help="oversized / nested bodies")
    p.add_argument("--header-drips", type=int, default=50)
    p.add_argument("--ws-drips", type=int, default=4)
    p.add_argument("--hold", type=float, default=45.0, help="how long a drip is kept up (s)")
    p.add_argument("--limit", type=int, default=65536, help="server.max_message_bytes")
    p.add_argument("--json", action="store_true")
    p.add_argument("overrides", nargs="*", help="key=value passed to serve")
    p.set_defaults(func=run)
