"""The few-step stage: rolled out through the KV cache, the student approaches the teacher."""

from __future__ import annotations

import copy

import torch

from tests.helpers import live_model, small_config
from unison_stream.training.batch import RandomLatentSource
from unison_stream.training.config import DistillConfig
from unison_stream.training.distill import FewStepDistiller


def test_student_few_step_sampler_moves_towards_the_many_step_teacher() -> None:
    cfg = small_config("stream.window_chunks=2")
    teacher = live_model(cfg, std=0.05)
    student = copy.deepcopy(teacher)
    dcfg = DistillConfig(teacher_steps=8, student_steps=2, chunks=3)
    distiller = FewStepDistiller(teacher, student, dcfg, lr=1e-3)
    src = RandomLatentSource(cfg, batch=2, chunks=3, seed=0, fixed=True)
    batch = src.next_batch()
    before = distiller.evaluate(batch)
    s_key, t_key = "student_2step_mse_to_teacher_8step", "teacher_2step_mse_to_teacher_8step"
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
    assert out["video"] > 0 and out["audio"] > 0
