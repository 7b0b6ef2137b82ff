"""The engine without a model: the real :class:`~unison_stream.engine.Engine` over a
:class:`~unison_stream.engine.tone_replica.ToneReplica` (a 440 Hz tone where the plan has
words, a moving test pattern for video).

Everything the server sees — the planner, the worker, the stream's queue, timeline, events,
interrupt and the ``failed`` path — is the production code; only the model is replaced. Faults
are injected where the model would raise them: ``engine.replica.fail_steps = n``. Used by the
server tests, ``bench serve --engine fake`` and ``serve --engine fake`` (UI work without a
model).
"""

from __future__ import annotations

from unison_stream.config import load_config
from unison_stream.engine.engine import Engine
from unison_stream.engine.tone_replica import ToneReplica

__all__ = ["FakeEngine"]


class FakeEngine(Engine):
    """An :class:`Engine` of the ``tiny`` preset at this media format over a tone replica.

    ``speed`` is how many times faster than real time a step runs (a wait of
    ``chunk_s / speed`` a step); ``cpu_s`` > 0 makes each step cost that many CPU seconds per
    session instead (a busy loop holding the GIL: a compute-bound engine for ``bench
    cluster``)."""

    def __init__(
        self,
        *,
        fps: float = 25.0,
        width: int = 128,
        height: int = 128,
        sample_rate: int = 16000,
        chunk_s: float = 0.32,
        max_sessions: int = 4,
        speed: float = 4.0,
        cpu_s: float = 0.0,
    ) -> None:
        base = load_config("tiny")
        latent_fps = fps / base.latent.video_time_stride
        frames = round(chunk_s * latent_fps)  # latent frames a chunk
        if frames < 1 or abs(frames / latent_fps - chunk_s) > 1e-6:
            raise ValueError(
                f"chunk_s {chunk_s} is not a whole number of latent frames at {fps} fps"
            )
        cfg = load_config(
            "tiny",
            [
                f"media.fps={fps}",
                f"media.width={width}",
                f"media.height={height}",
                f"media.sample_rate={sample_rate}",
                f"stream.chunk_latent_frames={frames}",
            ],
        )
        step_s = chunk_s / speed if speed > 0 and cpu_s == 0 else 0.0  # compute-bound: no wait
        replica = ToneReplica(cfg, step_s=step_s, cpu_s=cpu_s)
        super().__init__(cfg, max_sessions=max_sessions, replica=replica)
        self.fps, self.width, self.height, self.sample_rate = fps, width, height, sample_rate
        self.tone = replica
