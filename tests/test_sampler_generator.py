"""Flow-matching sampler, cross-modal forcing schedules and the causal generator."""

from __future__ import annotations

import itertools

import torch

from tests.helpers import live_model, make_track, random_cond, small_config
from unison_stream.model.conditioning import TimedTrack
from unison_stream.model.generator import CausalGenerator, PlanSlice
from unison_stream.model.sampler import Sampler, forcing_schedule, time_grid
from unison_stream.vocab import FIRST_EVENT_ID, event_id


def test_time_grid_runs_from_noise_to_clean() -> None:
    assert time_grid(4) == [1.0, 0.75, 0.5, 0.25, 0.0]
    shifted = time_grid(4, shift=3.0)
    assert shifted[0] == 1.0 and shifted[-1] == 0.0 and shifted[2] > 0.5


def test_forcing_schedule_leader_runs_ahead() -> None:
    joint = forcing_schedule(4, "none", 1)
    assert len(joint) == 4 and all(s.t_video == s.t_audio for s in joint)
    audio_leads = forcing_schedule(4, "audio", 1)
    assert len(audio_leads) == 5, "S + L model calls"
    assert [s.t_audio for s in audio_leads] == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert [s.t_video for s in audio_leads] == [1.0, 1.0, 0.75, 0.5, 0.25]
    assert audio_leads[0].t_video_next == 1.0, "the follower waits while the leader starts"
    video_leads = forcing_schedule(4, "video", 2)
    assert [s.t_video for s in video_leads][:3] == [1.0, 0.75, 0.5]
    assert [s.t_audio for s in video_leads][:3] == [1.0, 1.0, 1.0]
    assert all(s.t_video_next == 0.0 for s in video_leads[3:])


def test_no_cross_modal_forcing_ablation_forces_joint_schedules() -> None:
    on = Sampler(steps=4, cross_modal_forcing=True)
    off = Sampler(steps=4, cross_modal_forcing=False)
    assert on.schedule("audio", 2) != off.schedule("audio", 2)
    assert off.schedule("audio", 2) == off.schedule("none", 0) == forcing_schedule(4, "none", 0)


def test_sampler_integrates_a_known_velocity_field_exactly() -> None:
    """With the true velocity of a fixed x₀ the Euler solver lands exactly on x₀."""
    x0_v, x0_a = torch.randn(1, 2, 3, 4), torch.randn(1, 2, 5, 6)
    eps_v, eps_a = torch.randn_like(x0_v), torch.randn_like(x0_a)

    def denoise(xv, xa, tv, ta, final):
        return eps_v - x0_v, eps_a - x0_a

    for lead in ("none", "audio", "video"):
        xv, xa = Sampler(steps=4).sample(denoise, eps_v, eps_a, lead=lead, lead_steps=1)
        torch.testing.assert_close(xv, x0_v)
        torch.testing.assert_close(xa, x0_a)


def _record_writes(model) -> list[bool]:
    """Spy on ``model.forward_chunk``: the returned list gets each call's ``write`` flag."""
    calls: list[bool] = []
    real = model.forward_chunk

    def counting(*args, **kw):
        calls.append(kw["write"])
        return real(*args, **kw)

    model.forward_chunk = counting
    return calls


def _plan(cfg, seed=0, **kw):
    track = make_track(cfg.chunk_seconds(), seed)
    return PlanSlice(cond=random_cond(cfg, 1, seed).with_tracks([track]), **kw)


def _clean(cfg, seed):
    g = torch.Generator().manual_seed(seed)
    h, w = cfg.latent.latent_hw(cfg.media)
    v = torch.randn(1, cfg.stream.chunk_latent_frames, cfg.latent.video_channels, h, w, generator=g)
    a = torch.randn(1, 2, cfg.audio_frames_per_chunk(), cfg.latent.audio_channels, generator=g)
    return v, a


def test_clean_video_is_returned_unchanged_and_drives_the_audio() -> None:
    cfg = small_config()
    model = live_model(cfg, std=0.1)
    outs = []
    for seed in (1, 2):
        gen = CausalGenerator(model, seed=0)
        v, _ = _clean(cfg, seed)
        chunk = gen.step(_plan(cfg, clean_video=v))
        assert torch.equal(chunk.video, v), "video→audio: the given video comes back untouched"
        outs.append(chunk.audio)
    assert (outs[0] - outs[1]).abs().max() > 1e-3, "the audio depends on the given video"


def test_clean_speech_is_held_while_sfx_and_video_are_generated() -> None:
    cfg = small_config()
    model = live_model(cfg, std=0.1)
    outs = []
    for seed in (1, 2):
        gen = CausalGenerator(model, seed=0)
        _, a = _clean(cfg, seed)
        chunk = gen.step(_plan(cfg, clean_audio=a, clean_audio_mask=(True, False)))
        assert torch.equal(chunk.speech, a[:, 0]), "audio-driven: speech comes back untouched"
        sfx = chunk.sfx
        assert sfx is not None and not torch.equal(sfx, a[:, 1]), "SFX is generated"
        outs.append(chunk.video)
    assert (outs[0] - outs[1]).abs().max() > 1e-3, "the video depends on the given speech"


def test_generator_calls_s_steps_plus_commit_and_timestamps_are_contiguous() -> None:
    cfg = small_config("stream.commit=clean_pass", "sampler.steps=4")
    model = live_model(cfg, std=0.1)
    calls = _record_writes(model)
    gen = CausalGenerator(model)
    chunks = [gen.step(_plan(cfg)) for _ in range(3)]
    assert calls == ([False] * cfg.sampler.steps + [True]) * 3, "4 steps, then the clean commit"
    assert [c.index for c in chunks] == [0, 1, 2]
    for a, b in itertools.pairwise(chunks):
        assert abs(a.start_s + a.duration_s - b.start_s) < 1e-9
    calls.clear()
    gen.step(_plan(cfg, lead="audio", lead_steps=1))
    assert calls == [False] * 5 + [True], "a one-step lead costs one more call"


def test_last_step_commit_writes_on_the_final_call() -> None:
    cfg = small_config("stream.commit=last_step", "sampler.steps=4")
    model = live_model(cfg, std=0.1)
    calls = _record_writes(model)
    CausalGenerator(model).step(_plan(cfg))
    assert calls == [False, False, False, True]


def test_reference_chunk_becomes_the_sink_and_memory_stays_constant() -> None:
    cfg = small_config("stream.window_chunks=2")
    model = live_model(cfg, std=0.1)
    gen = CausalGenerator(model)
    v, a = _clean(cfg, 5)
    gen.step(_plan(cfg, clean_video=v, clean_audio=a))  # identity chunk: commit only
    ptrs = [t.data_ptr() for r in gen.cache._rings.values() for t in (r.k, r.sink_k)]
    sizes = []
    for k in range(1, 41):
        gen.step(_plan(cfg, seed=k))
        if k in (10, 40):
            sizes.append(gen.cache.nbytes())
    assert sizes[0] == sizes[1]
    assert ptrs == [t.data_ptr() for r in gen.cache._rings.values() for t in (r.k, r.sink_k)]
    assert gen.cache.chunks() == [0, 39, 40]


def test_generator_is_deterministic_by_seed() -> None:
    cfg = small_config()
    model = live_model(cfg, std=0.1)
    a = CausalGenerator(model, seed=3).step(_plan(cfg))
    b = CausalGenerator(model, seed=3).step(_plan(cfg))
    c = CausalGenerator(model, seed=4).step(_plan(cfg))
    assert torch.equal(a.video, b.video) and torch.equal(a.audio, b.audio)
    assert not torch.equal(a.video, c.video)


def _event_plan(cfg, at: float = 0.1) -> PlanSlice:
    """A phoneme track plus a clap ``at`` s into the chunk."""
    t = make_track(cfg.chunk_seconds())
    assert max(t.ids) < FIRST_EVENT_ID, "the helper track holds phonemes only"
    t = TimedTrack((*t.ids, event_id("clap")), (*t.start, at), (*t.end, at + 0.04))
    return PlanSlice(cond=random_cond(cfg).with_tracks([t]))


def test_event_guidance_costs_a_call_only_in_chunks_that_request_an_event() -> None:
    cfg = small_config("stream.commit=last_step", "sampler.steps=4", "sampler.event_guidance=3.0")
    model = live_model(cfg, std=0.1)
    calls = _record_writes(model)
    gen = CausalGenerator(model)
    gen.step(_plan(cfg))
    assert calls == [False, False, False, True], "no event: one call per step"
    calls.clear()
    gen.step(_event_plan(cfg))
    # per step: the read-only call without the event first, then the real one (last writes)
    assert calls == [False, False] * 3 + [False, True]


def test_event_guidance_interval_guides_only_the_early_steps() -> None:
    """``event_guidance_min_t``: steps at a lower noise level run without the extra call."""
    for min_t, guided in ((1.0, 1), (0.75, 2), (0.0, 4)):
        cfg = small_config(
            "stream.commit=last_step", "sampler.steps=4", "sampler.event_guidance=3.0",
            f"sampler.event_guidance_min_t={min_t}",
        )  # fmt: skip
        model = live_model(cfg, std=0.1)
        calls = _record_writes(model)
        CausalGenerator(model).step(_event_plan(cfg))
        assert len(calls) == 4 + guided, f"min_t {min_t}: {guided} guided steps of 4"
        assert calls[-1] and not any(calls[:-1]), "only the last call writes"


def test_the_bundled_sampler_makes_one_call_per_chunk_effects_included() -> None:
    cfg = small_config()  # the tiny preset's sampler and commit, the model scaled down
    model = live_model(cfg, std=0.1)
    calls = _record_writes(model)
    gen = CausalGenerator(model)
    gen.step(_plan(cfg))
    assert calls == [True], "1 call, which denoises the chunk and writes the cache"
    calls.clear()
    gen.step(_event_plan(cfg))
    assert calls == [True], "a chunk where an effect starts costs no extra call"
    two = small_config("sampler.steps=2")  # the student as distilled
    model = live_model(two, std=0.1)
    calls = _record_writes(model)
    CausalGenerator(model).step(_event_plan(two))
    assert calls == [False, True], "2 calls, the second writes the cache"


def test_event_guidance_steers_only_the_sfx_velocity() -> None:
    """One solver step (so no guided input feeds a later call): video and speech are those of
    the unguided sampler bit for bit, the SFX moves; without an event nothing changes."""
    outs = {}
    for g in (1.0, 3.0):
        cfg = small_config("sampler.steps=1", f"sampler.event_guidance={g}")
        model = live_model(cfg, std=0.1)
        outs[g] = (
            CausalGenerator(model, seed=0).step(_event_plan(cfg)),
            CausalGenerator(model, seed=0).step(_plan(cfg)),
        )
    (ev1, plain1), (ev3, plain3) = outs[1.0], outs[3.0]
    assert torch.equal(ev1.video, ev3.video) and torch.equal(ev1.speech, ev3.speech)
    assert ev1.sfx is not None and ev3.sfx is not None
    assert (ev1.sfx - ev3.sfx).abs().max() > 1e-3
    assert torch.equal(plain1.audio, plain3.audio) and torch.equal(plain1.video, plain3.video)


def test_video_event_guidance_moves_the_video_and_not_the_speech() -> None:
    outs = []
    for gv in (1.0, 2.0):
        cfg = small_config("sampler.steps=1", f"sampler.event_guidance_video={gv}")
        outs.append(CausalGenerator(live_model(cfg, std=0.1), seed=0).step(_event_plan(cfg)))
    assert torch.equal(outs[0].audio, outs[1].audio), "SFX guidance off: audio untouched"
    assert (outs[0].video - outs[1].video).abs().max() > 1e-3
