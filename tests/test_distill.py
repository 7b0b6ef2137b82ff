"""The few-step stage: rolled out through the KV cache, the student approaches the teacher."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from tests.helpers import TEST_OVERRIDES, live_model, small_config
from unison_stream.cli import main
from unison_stream.model.checkpoint import save_model
from unison_stream.training.batch import RandomLatentSource
from unison_stream.training.config import DistillConfig
from unison_stream.training.distill import FewStepDistiller


@pytest.mark.parametrize("steps", [2, 1])
def test_student_few_step_sampler_moves_towards_the_many_step_teacher(steps: int) -> None:
    """2 calls; 1 (its only call denoises from noise and writes the cache)."""
    cfg = small_config("stream.window_chunks=2")
    teacher = live_model(cfg, std=0.05)
    student = copy.deepcopy(teacher)
    dcfg = DistillConfig(teacher_steps=8, student_steps=steps, chunks=3)
    distiller = FewStepDistiller(teacher, student, dcfg, lr=1e-3)
    src = RandomLatentSource(cfg, batch=2, chunks=3, seed=0, fixed=True)
    batch = src.next_batch()
    before = distiller.evaluate(batch)
    s_key = f"student_{steps}step_mse_to_teacher_8step"
    t_key = f"teacher_{steps}step_mse_to_teacher_8step"
    assert before[s_key] == before[t_key], "the student starts as the teacher"
    g = torch.Generator().manual_seed(0)
    for _ in range(15):
        distiller.train_step(batch, g)
    after = distiller.evaluate(batch)
    assert after[t_key] == before[t_key], "the teacher is frozen"
    assert after[s_key] < 0.9 * after[t_key], after


def test_student_history_rolls_out_its_own_samples() -> None:
    cfg = small_config("stream.window_chunks=2")
    teacher = live_model(cfg, std=0.05)
    distiller = FewStepDistiller(
        teacher,
        copy.deepcopy(teacher),
        DistillConfig(teacher_steps=4, student_steps=2, chunks=3, history="student"),
    )
    batch = RandomLatentSource(cfg, batch=1, chunks=3, seed=1).next_batch()
    out = distiller.train_step(batch, torch.Generator().manual_seed(0))
    assert out["video"] > 0 and out["speech"] > 0 and out["sfx"] > 0


def test_audio_driven_steps_hold_the_speech_and_score_only_what_is_generated() -> None:
    cfg = small_config("stream.window_chunks=2")
    teacher = live_model(cfg, std=0.05)
    dcfg = DistillConfig(teacher_steps=4, student_steps=2, chunks=3, audio_driven_prob=1.0)
    distiller = FewStepDistiller(teacher, copy.deepcopy(teacher), dcfg)
    batch = RandomLatentSource(cfg, batch=1, chunks=3, seed=1).next_batch()
    xv0, xa0 = distiller._chunk(batch, 1)
    noise = (torch.randn(xv0.shape), torch.randn(xa0.shape))
    cache = teacher.new_cache(1)
    distiller._commit(teacher, cache, 0, distiller._cond(batch, 0), *distiller._chunk(batch, 0))
    states = distiller._rollout(
        teacher, cache, 1, distiller._cond(batch, 1), noise, 4, guided=True, write=False,
        clean_a=xa0,
    )  # fmt: skip
    assert len(states) == 5
    for _, xa in states[1:]:
        assert torch.equal(xa[:, 0], xa0[:, 0]), "the given speech is held at every grid point"
        assert not torch.equal(xa[:, 1], xa0[:, 1])
    out = distiller.train_step(batch, torch.Generator().manual_seed(0))
    assert out["speech"] == 0.0 and out["video"] > 0 and out["sfx"] > 0


def test_distill_command_trains_checkpoints_and_resumes(tmp_path: Path) -> None:
    cfg = small_config("stream.window_chunks=2")
    teacher = tmp_path / "teacher.safetensors"
    save_model(live_model(cfg, std=0.05), teacher)
    args = [
        "train", "distill", "--train", "tiny_distill", *TEST_OVERRIDES, "stream.window_chunks=2",
        f"init={teacher}", "data=random", f"out_dir={tmp_path / 'run'}", "batch=1",
        "distill.teacher_steps=4", "distill.student_steps=2", "distill.chunks=3", "seq_chunks=3",
        "lr=1e-3", "val_every=2", "ckpt_every=2", "log_every=1",
        "model_overrides=[sampler.steps=1]",
    ]  # fmt: skip
    assert main([*args, "steps=2"]) == 0
    assert main([*args, "steps=4"]) == 0  # resumes at step 2
    with safe_open(str(tmp_path / "run" / "ckpt-000004.safetensors"), framework="pt") as f:
        stored = json.loads((f.metadata() or {})["config"])
    assert stored["sampler"]["steps"] == 1, "the training file's model_overrides are applied"
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").open()]
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    val = [r for r in log if "val_student_2step_mse_to_teacher_4step" in r]
    assert [r["step"] for r in val] == [2, 4]
    teacher_few = {r["val_teacher_2step_mse_to_teacher_4step"] for r in val}
    assert len(teacher_few) == 1, "the teacher stays frozen (learning: the test above)"
    student = load_file(str(tmp_path / "run" / "ckpt-000004.safetensors"))
    assert any(
        not torch.equal(student[f"model.{k}"], v) for k, v in load_file(str(teacher)).items()
    )
