"""The protocol module against its reference page and its own sans-I/O rules."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from unison_sdk import protocol as P

from unison_stream.vocab import MAX_TEXT_CHARS

DOC = (Path(__file__).resolve().parent.parent / "docs" / "protocol.md").read_text()


def _table_types(heading: str) -> set[str]:
    """The message types in the first column of the table under ``heading``."""
    part = DOC.split(heading, 1)[1].split("\n### ", 1)[0]
    return set(re.findall(r"^\| `([a-z_]+)` \|", part, flags=re.M))


def test_the_message_tables_name_exactly_the_module_types() -> None:
    assert _table_types("### client → server") == set(P.CLIENT_TYPES)
    assert _table_types("### server → client") == set(P.SERVER_TYPES)
    for code in P.FINAL_CLOSE:
        assert f"`{code}`" in DOC, code


def test_limits_match_the_planner_and_wire_round_trips() -> None:
    assert P.Limits().max_text_chars == MAX_TEXT_CHARS
    for msg in (P.Say("a", "hi", "rain", True), P.AudioBegin("b", 16000, True), P.Ack(3)):
        assert P.parse_client(P.ClientProtocol.encode(msg), P.Limits()) == msg
    with pytest.raises(P.ProtocolError, match="8000"):
        P.check_sample_rate(4000)


def test_server_protocol_numbers_replays_and_assembles_uploads() -> None:
    sp = P.ServerProtocol(resume_buffer=3)
    sent = [sp.send(P.StateEvent("idle")) for _ in range(4)]
    assert [m.seq for m in sent] == [1, 2, 3, 4]
    with pytest.raises(P.ProtocolError, match="gone"):
        sp.check_resumable(0)  # seq 1 was evicted unacknowledged
    assert [m.seq for m in sp.resume(2)] == [3, 4]
    assert sp.receive(P.AudioBegin("u", 16000), 0.0) is None
    assert sp.receive_binary(b"\x01\x00\x02") is None
    assert sp.receive_binary(b"\x00") is None
    clip = sp.receive(P.AudioEnd("u"), 0.0)
    assert clip == P.AudioClip("u", 16000, b"\x01\x00\x02\x00")
    assert sp.receive(P.AudioBegin("u", 16000), 0.0) is None
    sp.receive_binary(b"\x01\x00")
    assert sp.receive(P.AudioEnd("u"), 0.0) is None, "an id already accepted is not doubled"
    assert sp.receive(P.AudioBegin("s", 8000, stream=True), 0.0) == P.StreamBegin("s", 8000)
    assert sp.receive_binary(b"\x01\x00\x02") == P.StreamPart("s", b"\x01\x00")
    assert sp.receive_binary(b"\x00") == P.StreamPart("s", b"\x02\x00")
    assert sp.receive(P.AudioEnd("s"), 0.0) == P.StreamEnd("s")
