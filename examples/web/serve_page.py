#!/usr/bin/env python3
"""Serve the browser client and mint session tokens for it (the backend pattern).

The page never sees the API key: it asks this small server (``POST /token``), which creates a
session on the avatar server with the key and returns only the session's short-lived token
and ``ws_url``; the browser then talks to the avatar server directly (websocket + WebRTC).
The page script is the avatar server's own ``/static/app.js`` (passed through), told by
``data-token-url`` to ask this backend for its session.

    .venv/bin/unison-stream serve --engine fake                    # prints a local key
    python examples/web/serve_page.py --server http://127.0.0.1:8080 --api-key KEY
    # open http://127.0.0.1:8000/
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import aiohttp
from aiohttp import web

HERE = Path(__file__).resolve().parent


def make_app(server: str, api_key: str, *, caption: str = "") -> web.Application:
    async def token(request: web.Request) -> web.Response:
        body = {"caption": caption} if caption else {}
        headers = {"Authorization": f"Bearer {api_key}"}
        try:
            async with (
                aiohttp.ClientSession() as http,
                http.post(f"{server.rstrip('/')}/v1/sessions", json=body, headers=headers) as r,
            ):
                info = await r.json()
                if r.status != 201:
                    return web.json_response(info, status=r.status)
        except (aiohttp.ClientError, ValueError) as e:
            err = {"error": {"code": "unavailable", "message": f"avatar server: {e}"}}
            return web.json_response(err, status=502)
        return web.json_response({k: info[k] for k in ("session_id", "token", "ws_url")})

    async def index(request: web.Request) -> web.FileResponse:
        return web.FileResponse(HERE / "index.html")

    async def app_js(request: web.Request) -> web.Response:
        # one page script in the repo: the avatar server's own (/static/app.js), passed through
        try:
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"{server.rstrip('/')}/static/app.js") as r,
            ):
                return web.Response(
                    body=await r.read(), status=r.status, content_type="application/javascript"
                )
        except aiohttp.ClientError as e:
            return web.Response(text=f"avatar server: {e}", status=502)

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/app.js", app_js)
    app.router.add_post("/token", token)
    return app


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--server", default="http://127.0.0.1:8080", help="the avatar server")
    p.add_argument("--api-key", default=os.environ.get("UNISON_API_KEY"), help="or $UNISON_API_KEY")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--caption", default="")
    args = p.parse_args(argv)
    if not args.api_key:
        p.error("give --api-key or set $UNISON_API_KEY")
    print(f"page at http://{args.host}:{args.port}/ → avatar server {args.server}", flush=True)
    web.run_app(make_app(args.server, args.api_key, caption=args.caption), host=args.host,
                port=args.port, print=None)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
