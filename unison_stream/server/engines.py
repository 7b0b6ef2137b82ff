"""The engine a server serves: the real :class:`~unison_stream.engine.Engine` of a preset or
checkpoint, or the deterministic :class:`~unison_stream.server.fake_engine.FakeEngine`, with its
media format and the model name ``/healthz`` reports. Shared by ``serve`` and the Ray Serve
replicas (docs/cluster.md), which both split one ``key=value`` list into model and server keys.
"""

from __future__ import annotations

from pathlib import Path

from unison_stream.server.engine_api import EngineLike
from unison_stream.server.session import MediaSpec

__all__ = ["build_engine", "split_overrides"]


def split_overrides(overrides: list[str]) -> tuple[list[str], list[str]]:
    """Split ``key=value`` overrides into (model config, server config without the prefix)."""
    model = [o for o in overrides if not o.startswith("server.")]
    server = [o.removeprefix("server.") for o in overrides if o.startswith("server.")]
    return model, server


def build_engine(
    kind: str,
    *,
    preset: str = "tiny",
    checkpoint: Path | None = None,
    overrides: list[str] | None = None,
    max_sessions: int = 4,
) -> tuple[EngineLike, MediaSpec, str]:
    """The engine to serve, its media format and a model name for ``/healthz``."""
    if kind == "fake":
        from unison_stream.server.fake_engine import FakeEngine

        # ``fake.cpu_s=S``: a compute-bound fake, S CPU seconds per chunk (bench cluster)
        cpu = [float(o.split("=", 1)[1]) for o in overrides or [] if o.startswith("fake.cpu_s=")]
        fake = FakeEngine(max_sessions=max_sessions, cpu_s=cpu[-1] if cpu else 0.0)
        spec = MediaSpec(
            fps=fake.fps, width=fake.width, height=fake.height, sample_rate=fake.sample_rate
        )
        return fake, spec, "fake"
    from unison_stream.config import load_config
    from unison_stream.engine import Engine

    engine = Engine(
        load_config(preset, overrides or []), checkpoint=checkpoint, max_sessions=max_sessions
    )
    engine.wait_ready()  # loaded before the first client, not while it streams
    m = engine.cfg.media
    from unison_stream.model.checkpoint import bundled_checkpoint

    bundled = bundled_checkpoint(engine.cfg.preset)
    default = f"bundled {bundled.name}" if bundled is not None else "untrained"
    name = f"{engine.cfg.preset}:{checkpoint.name if checkpoint else default}"
    spec = MediaSpec(fps=m.fps, width=m.width, height=m.height, sample_rate=m.sample_rate)
    return engine, spec, name
