"""Each example runs on its own: ``--help``, and a smoke run against the real server in-process
(fake engine), a real mosquitto for ``game_bridge.py``, the real engine for
``render_offline.py``."""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import aiohttp
import av
import pytest

from tests.helpers import TEST_OVERRIDES
from tests.mqtt_support import USERS, mosquitto, needs_mosquitto
from tests.server_support import API_KEY, running_server
from unison_stream.mqtt import MqttBridge, MqttConfig
from unison_stream.server.app import state_of

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SCRIPTS = ["python_client.py", "play_local.py", "game_bridge.py", "render_offline.py"]


async def _run(*args: str, timeout: float = 60.0) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


def test_every_example_answers_help() -> None:
    async def main() -> list[tuple[int, str]]:
        scripts = [*SCRIPTS, "web/serve_page.py"]
        return await asyncio.gather(*(_run(str(EXAMPLES / s), "--help") for s in scripts))

    for rc, out in asyncio.run(main()):
        assert rc == 0 and "usage:" in out, out


def test_python_client_records_an_mp4_and_play_local_is_clear_without_a_device(
    tmp_path: Path,
) -> None:
    out = tmp_path / "client.mp4"

    async def main() -> None:
        async with running_server() as srv:
            common = ["--url", srv.base, "--api-key", API_KEY]
            rc, log = await _run(
                str(EXAMPLES / "python_client.py"), *common, "--text", "Hi!", "-o", str(out)
            )
            assert rc == 0, log
            assert "finished" in log and "outcome: finished" in log
            rc, log = await _run(str(EXAMPLES / "play_local.py"), *common, "--text", "Hi!")
            # headless machines have no output device: a clear message and status 2
            assert rc == 0 or (rc == 2 and "cannot play here" in log), log

    asyncio.run(main())
    with av.open(str(out)) as f:
        assert sum(1 for _ in f.decode(video=0)) >= 25
        assert f.streams.audio, "the mp4 has an audio track"


@needs_mosquitto
def test_game_bridge_runs_its_script_over_mqtt(tmp_path: Path) -> None:
    script = tmp_path / "show.txt"
    script.write_text("# a tiny show\nHello everyone!\n!listen\n!wait 0.2\nGoodbye.\n!idle\n")

    async def main() -> None:
        with mosquitto(tmp_path) as broker:
            async with running_server() as srv:
                st = state_of(srv.app)
                cfg = MqttConfig(
                    port=broker.port,
                    username="unison-server",
                    password=USERS["unison-server"],
                    channels=["lobby"],
                )
                bridge = MqttBridge(st.manager, st.limits, cfg)
                await bridge.start()
                try:
                    rc, log = await _run(
                        str(EXAMPLES / "game_bridge.py"),
                        *("--port", str(broker.port), "--password", USERS["game"]),
                        *("--script", str(script), "--timeout", "15"),
                    )
                finally:
                    await bridge.close()
        assert rc == 0, log
        assert log.count("-> cmd/say") == 2 and "script done" in log
        assert "-> cmd/state {'state': 'listening'}" in log
        assert log.count("'event': 'finished'") == 2, "each line waited for its finished event"

    asyncio.run(main())


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_web_page_backend_mints_a_token_the_browser_can_use() -> None:
    serve_page = _load(EXAMPLES / "web" / "serve_page.py")

    async def main() -> None:
        async with running_server() as srv:
            runner = aiohttp.web.AppRunner(serve_page.make_app(srv.base, API_KEY))
            await runner.setup()
            site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            try:
                async with aiohttp.ClientSession() as http:
                    page = await (await http.get(f"http://127.0.0.1:{port}/")).text()
                    assert 'src="app.js" data-token-url="token"' in page
                    assert 'type="password"' not in page
                    js = await (await http.get(f"http://127.0.0.1:{port}/app.js")).text()
                    served = await (await http.get(f"{srv.base}/static/app.js")).text()
                    assert js == served, "the example page runs the server's one page script"
                    assert "fetch(TOKEN_URL" in js and 'type: "ack"' in js
                    r = await http.post(f"http://127.0.0.1:{port}/token")
                    info = await r.json()
                    assert r.status == 200 and set(info) == {"session_id", "token", "ws_url"}
                    async with http.ws_connect(info["ws_url"]) as ws:
                        ready = await ws.receive_json(timeout=5)
                        assert ready["type"] == "ready"
                        assert ready["session_id"] == info["session_id"]
                bad = serve_page.make_app(srv.base, "wrong-key")
                runner2 = aiohttp.web.AppRunner(bad)
                await runner2.setup()
                site2 = aiohttp.web.TCPSite(runner2, "127.0.0.1", 0)
                await site2.start()
                port2 = site2._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
                async with aiohttp.ClientSession() as http:
                    r = await http.post(f"http://127.0.0.1:{port2}/token")
                    assert r.status == 401
                await runner2.cleanup()
            finally:
                await runner.cleanup()

    asyncio.run(main())


@pytest.mark.timeout(120)
def test_render_offline_writes_a_clip_with_the_real_engine(tmp_path: Path) -> None:
    out = tmp_path / "offline.mp4"
    sets = [a for o in TEST_OVERRIDES for a in ("--set", o)]
    rc, log = asyncio.run(
        _run(str(EXAMPLES / "render_offline.py"), "Hi there", "-o", str(out), *sets, timeout=110)
    )
    assert rc == 0, log[-2000:]
    with av.open(str(out)) as f:
        assert sum(1 for _ in f.decode(video=0)) >= 10
        assert f.streams.audio
