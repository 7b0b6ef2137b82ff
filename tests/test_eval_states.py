"""The states eval's pure parts: which quiet references drive idle and listening, and which
frames count as a switch between states."""

from __future__ import annotations

import numpy as np

from unison_stream.eval.states import Conversation, rest_people, transition_spans


def test_rest_people_picks_the_first_quiet_and_listening_clips_per_state() -> None:
    kinds = ["speech", "quiet", "listening", "quiet", "quiet", "listening", "speech"]
    rows = [{"kind": k} for k in kinds] + [{}]  # a classic row has no kind
    assert rest_people(rows, per_state=2) == {"idle": [1, 3], "listening": [2, 5]}
    assert rest_people(rows) == {"idle": [1, 3, 4], "listening": [2, 5]}  # every one
    assert rest_people([{"kind": "speech"}], per_state=3) == {"idle": [], "listening": []}


def test_transition_spans_cover_each_counted_switch_and_merge_overlaps() -> None:
    states = ["idle"] * 50 + ["speaking"] * 30 + ["listening"] * 5 + ["idle"] * 40
    c = Conversation(np.zeros((len(states), 2, 2, 3), np.uint8), states)
    # idle→speaking at 50 and speaking→listening at 80, ±10 frames each; listening→idle at
    # 85 is not a counted switch
    assert transition_spans(c, fps=25.0, within_s=0.4) == [(40, 60), (70, 90)]
    # wider spans overlap and merge into one
    assert transition_spans(c, fps=25.0, within_s=1.0) == [(25, 105)]
