"""Avatars as a resource on a running server (fake engine): create in each body form, read,
list, preview, delete; sessions on a stored id or an inline picture; every bad input answered
with its 4xx and message while the server goes on serving; the store surviving a restart; one
key never sees another's avatars (docs/avatars.md, docs/protocol.md)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from PIL import Image

from tests.server_support import API_KEY, running_server
from unison_stream.avatars import from_design

AUTH = {"Authorization": f"Bearer {API_KEY}"}
OTHER = "other-key"
DESIGN = {"skin": "#6ab04c", "hair": "bob", "hair_color": "pink", "seed": 3}


def _png(picture: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(picture).save(buf, format="PNG")
    return buf.getvalue()


def _face_png() -> bytes:
    """A drawn face off the world's palettes (green skin), as a user would upload it."""
    return from_design(DESIGN).png()


async def _session(http: aiohttp.ClientSession, base: str, body: dict[str, Any]) -> int:
    r = await http.post(f"{base}/v1/sessions", json=body, headers=AUTH)
    if r.status == 201:
        sid = (await r.json())["session_id"]
        await http.delete(f"{base}/v1/sessions/{sid}", headers=AUTH)
    return r.status


def test_avatar_lifecycle_in_every_body_form(tmp_path: Path) -> None:
    async def main() -> None:
        async with (
            running_server(avatar_dir=str(tmp_path), api_keys=[API_KEY, OTHER]) as srv,
            aiohttp.ClientSession() as http,
        ):
            base = srv.base
            raw = await http.post(
                f"{base}/v1/avatars?caption=me",
                data=_face_png(),
                headers={**AUTH, "Content-Type": "image/png"},
            )
            assert raw.status == 201, await raw.text()
            a = await raw.json()
            assert a["id"].startswith("av_") and a["source"] == "upload" and a["caption"] == "me"
            assert a["preview_url"] == f"/v1/avatars/{a['id']}/preview.png"
            assert (a["width"], a["height"]) == (64, 64)  # the server's media size

            form = aiohttp.FormData()
            form.add_field("picture", _face_png(), filename="me.png", content_type="image/png")
            multi = await http.post(f"{base}/v1/avatars", data=form, headers=AUTH)
            assert multi.status == 201, await multi.text()
            design = await http.post(f"{base}/v1/avatars", json={"design": DESIGN}, headers=AUTH)
            assert design.status == 201, await design.text()
            d = await design.json()
            assert d["source"] == "design" and d["provenance"]["design"]["skin"] == "#6ab04c"

            got = await http.get(f"{base}/v1/avatars/{a['id']}", headers=AUTH)
            assert (await got.json()) == a
            png = await (await http.get(f"{base}{a['preview_url']}", headers=AUTH)).read()
            assert Image.open(io.BytesIO(png)).size == (128, 128)  # 2× the picture
            drawn = await http.post(f"{base}/v1/avatars/preview", json={"design": DESIGN},
                                    headers=AUTH)  # fmt: skip
            assert drawn.status == 200 and drawn.content_type == "image/png"

            listed = await (await http.get(f"{base}/v1/avatars", headers=AUTH)).json()
            ids = [x["id"] for x in listed["avatars"]]
            assert ids == [a["id"], (await multi.json())["id"], d["id"]]
            assert listed["usage"]["avatars"] == 3 and listed["usage"]["max_avatars"] == 20

            # sessions: on a stored id, on an inline picture, on a world identity
            assert await _session(http, base, {"avatar": a["id"]}) == 201
            inline = base64.b64encode(_face_png()).decode()
            assert await _session(http, base, {"picture": inline, "caption": "x"}) == 201
            assert await _session(http, base, {"identity": 4}) == 201

            # another key sees none of them, and cannot use or delete them
            other = {"Authorization": f"Bearer {OTHER}"}
            assert (await (await http.get(f"{base}/v1/avatars", headers=other)).json())[
                "avatars"
            ] == []
            r = await http.delete(f"{base}/v1/avatars/{a['id']}", headers=other)
            assert r.status == 404

            r = await http.delete(f"{base}/v1/avatars/{a['id']}", headers=AUTH)
            assert r.status == 200 and (await r.json())["deleted"] is True
            assert (await http.get(f"{base}/v1/avatars/{a['id']}", headers=AUTH)).status == 404
            assert await _session(http, base, {"avatar": a["id"]}) == 404

    asyncio.run(main())


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _bad_cases() -> list[tuple[str, dict[str, Any], int, str]]:
    """(name, request, status, words of the message): request is {path, data|json, type}."""
    noise = np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)
    blank = np.full((200, 200, 3), 128, np.uint8)
    png = _face_png()
    return [
        ("not an image", {"data": b"GIF89a" + b"\0" * 100, "type": "image/gif"}, 415, "PNG"),
        ("too large", {"data": b"\x89PNG\r\n\x1a\n" + b"\0" * (5 << 20)}, 413, "limit"),
        ("corrupt", {"data": png[: len(png) // 2]}, 400, "does not decode"),
        ("no face", {"data": _png(blank)}, 422, "no face"),
        ("noise", {"data": _png(noise)}, 422, "face"),
        ("unknown trait", {"json": {"design": {"hair": "mohawk"}}}, 422, "bald, buzz"),
        ("bad hex", {"json": {"design": {"skin": "#12345"}}}, 422, "#rrggbb"),
        ("not base64", {"json": {"picture": "**not base64**"}}, 400, "base64"),
        ("both", {"json": {"picture": "aGk=", "design": {}}}, 400, "exactly one"),
        ("malformed", {"data": b"{not json", "type": "application/json"}, 400, "malformed"),
        ("unknown id", {"get": "/v1/avatars/av_AAAAAAAAAAAAAAAAAAAAAA"}, 404, "no avatar"),
        ("odd id", {"get": "/v1/avatars/../../etc"}, 404, ""),
        ("session: unknown id", {"session": {"avatar": "av_AAAAAAAAAAAAAAAAAAAAAA"}}, 404, "no"),
        ("session: no face", {"session": {"picture": _b64(_png(blank))}}, 422, "no face"),
        ("session: two people", {"session": {"identity": 1, "avatar": "av_x"}}, 400, "one of"),
        ("session: bad base64", {"session": {"picture": "%%%"}}, 400, "base64"),
        ("no key", {"json": {"design": DESIGN}, "auth": {}}, 401, "Bearer"),
    ]


def test_every_bad_input_is_answered_with_its_4xx_and_the_server_serves_on(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with (
            running_server(avatar_dir=str(tmp_path)) as srv,
            aiohttp.ClientSession() as http,
        ):
            base = srv.base
            seen: dict[str, tuple[int, str]] = {}
            for name, req, status, words in _bad_cases():
                headers = dict(req.get("auth", AUTH))
                if "get" in req:
                    r = await http.get(f"{base}{req['get']}", headers=headers)
                elif "session" in req:
                    r = await http.post(f"{base}/v1/sessions", json=req["session"], headers=headers)
                elif "json" in req:
                    r = await http.post(f"{base}/v1/avatars", json=req["json"], headers=headers)
                else:
                    headers["Content-Type"] = req.get("type", "image/png")
                    r = await http.post(f"{base}/v1/avatars", data=req["data"], headers=headers)
                text = await r.text()
                message = ""
                if r.content_type == "application/json":
                    message = json.loads(text)["error"]["message"]
                seen[name] = (r.status, message)
                assert r.status == status, (name, r.status, text)
                assert words in message, (name, message)
            # nothing stored, nothing left open, and the server still does its work
            listed = await (await http.get(f"{base}/v1/avatars", headers=AUTH)).json()
            assert listed["avatars"] == [], listed
            assert srv.state.manager.sessions == {}
            health = await (await http.get(f"{base}/healthz")).json()
            assert health["status"] == "ok" and health["sessions"] == 0
            ok = await http.post(f"{base}/v1/avatars", json={"design": DESIGN}, headers=AUTH)
            assert ok.status == 201
            assert await _session(http, base, {"avatar": (await ok.json())["id"]}) == 201

    asyncio.run(main())


def test_the_store_survives_a_server_restart(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_server(avatar_dir=str(tmp_path)) as srv, aiohttp.ClientSession() as h:
            r = await h.post(f"{srv.base}/v1/avatars", json={"design": DESIGN}, headers=AUTH)
            made = await r.json()
        async with running_server(avatar_dir=str(tmp_path)) as srv, aiohttp.ClientSession() as h:
            listed = await (await h.get(f"{srv.base}/v1/avatars", headers=AUTH)).json()
            assert [a["id"] for a in listed["avatars"]] == [made["id"]]
            got = await (await h.get(f"{srv.base}/v1/avatars/{made['id']}", headers=AUTH)).json()
            assert got == made
            assert await _session(h, srv.base, {"avatar": made["id"]}) == 201

    asyncio.run(main())


@pytest.mark.parametrize("limit", [2])
def test_a_keys_limit_is_a_409_that_names_the_fix(tmp_path: Path, limit: int) -> None:
    async def main() -> None:
        async with (
            running_server(avatar_dir=str(tmp_path), avatar_max_per_key=limit) as srv,
            aiohttp.ClientSession() as http,
        ):
            statuses = []
            for _ in range(limit + 1):
                r = await http.post(f"{srv.base}/v1/avatars", json={"design": DESIGN},
                                    headers=AUTH)  # fmt: skip
                statuses.append(r.status)
            assert statuses == [201] * limit + [409]
            assert "delete one" in (await r.json())["error"]["message"]

    asyncio.run(main())


def test_a_session_body_may_pass_the_message_limit_only_by_its_picture(tmp_path: Path) -> None:
    """``server.max_message_bytes`` still bounds a session body; an inline picture is counted
    apart, up to its own limit (4 MiB), so padding is 413 however it is sent."""

    async def main() -> None:
        async with (
            running_server(avatar_dir=str(tmp_path)) as srv,
            aiohttp.ClientSession() as http,
        ):
            url, limit = f"{srv.base}/v1/sessions", srv.state.cfg.max_message_bytes
            for size in (2 * limit, 1 << 20, 8 << 20):
                r = await http.post(url, data=b"{" + b" " * size + b"}", headers=AUTH)
                assert r.status == 413, (size, r.status)
            picture = base64.b64encode(_face_png() + b"\0" * (2 * limit)).decode()  # > limit
            r = await http.post(url, json={"picture": picture}, headers=AUTH)
            assert r.status == 201, await r.text()
            padded = {"picture": picture, "caption": "x", "pad": " " * (2 * limit)}
            assert (await http.post(url, json=padded, headers=AUTH)).status == 413

    asyncio.run(main())
