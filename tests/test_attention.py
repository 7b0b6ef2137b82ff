"""Split attention (streaming chunks) equals the widened single softmax (training)."""

from __future__ import annotations

import os
import subprocess
import sys

import torch

from unison_stream.model.attention import Keys, additive_mask, mixed_attention, split_attention
from unison_stream.model.rope import TimeRotary


def _groups(g: torch.Generator) -> tuple[list[Keys], torch.Tensor]:
    """Own (timed), window (timed, some keys invalid) and sink (global) groups, and the
    combined bool mask (1, Tq, Tk) over their concatenation."""
    b, h, tq, hd = 2, 2, 6, 8
    own = Keys(torch.randn(b, h, tq, hd, generator=g), torch.randn(b, h, tq, hd, generator=g))
    own.times = torch.linspace(0.0, 0.3, tq)
    win = Keys(torch.randn(b, h, 12, hd, generator=g), torch.randn(b, h, 12, hd, generator=g))
    win.times = torch.linspace(-1.0, -0.1, 12)
    sink = Keys(torch.randn(b, h, 5, hd, generator=g), torch.randn(b, h, 5, hd, generator=g))
    valid = torch.ones(12, dtype=torch.bool)
    valid[3:7] = False
    mask = torch.cat((torch.ones(tq, dtype=torch.bool), valid, torch.ones(5, dtype=torch.bool)))
    return [own, win, sink], mask[None, None, :].expand(1, tq, -1)


def test_split_attention_equals_the_single_widened_softmax() -> None:
    g = torch.Generator().manual_seed(0)
    rope = TimeRotary(8, 0.04, 60.0)
    groups, mask = _groups(g)
    q = torch.randn(2, 2, 6, 8, generator=g)
    q_times = torch.linspace(0.0, 0.3, 6)
    ref = mixed_attention(q, q_times, groups, mask, rope)
    own, win, sink = groups
    win.bias, _ = additive_mask(mask[:, :, 6:18], q.dtype)
    out = split_attention(q, q_times, [own, win, sink], rope)
    assert torch.allclose(out, ref, atol=1e-5), (out - ref).abs().max()


def test_a_group_a_row_cannot_see_gives_that_row_no_weight() -> None:
    g = torch.Generator().manual_seed(1)
    rope = TimeRotary(8, 0.04, 60.0)
    groups, _ = _groups(g)
    own, win, sink = groups
    q = torch.randn(2, 2, 6, 8, generator=g)
    q_times = torch.linspace(0.0, 0.3, 6)
    # rows 0-2 see the window group, rows 3-5 none of it (the fused kernel's lse is 0 there)
    rows = torch.zeros(1, 6, 12, dtype=torch.bool)
    rows[:, :3] = True
    win.bias, win.seen = additive_mask(rows, q.dtype)
    out = split_attention(q, q_times, [own, win, sink], rope)
    full = torch.cat(
        (torch.ones(1, 6, 6, dtype=torch.bool), rows, torch.ones(1, 6, 5, dtype=torch.bool)), 2
    )
    ref = mixed_attention(q, q_times, [own, Keys(win.k, win.v, win.times), sink], full, rope)
    assert torch.allclose(out, ref, atol=1e-5), (out - ref).abs().max()


def test_auto_dtype_is_fp32_when_the_isa_is_capped_to_avx2() -> None:
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    code = (
        "import torch; from unison_stream.config import RuntimeConfig;"
        "from unison_stream.runtime import resolve_dtype, host_info;"
        "print(resolve_dtype(RuntimeConfig(), torch.device('cpu')), host_info()['isa_aten'])"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["torch.float32", "AVX2"]
