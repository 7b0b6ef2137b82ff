"""Sans-I/O parts: message parsing, say-rate bucket, tokens, config."""

from __future__ import annotations

import json

import numpy as np
import pytest

from unison_stream.config import ConfigError
from unison_stream.server import protocol as P
from unison_stream.server.auth import ApiKeys, TokenSigner
from unison_stream.server.config import load_server_config
from unison_stream.server.errors import BadRequest, RateLimited, Unauthorized
from unison_stream.server.media import Upsampler

L = P.Limits(max_message_bytes=2048, max_text_chars=50)


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ("{not json", "malformed JSON"),
        ("[1, 2]", "JSON object"),
        ('{"id": "x"}', "'type'"),
        ('{"type": "dance"}', "unknown message type"),
        ('{"type": "say", "text": "hi"}', "'id' is required"),
        ('{"type": "say", "id": "a", "text": "   "}', "empty"),
        ('{"type": "say", "id": "a", "text": "' + "x" * 51 + '"}', "exceeds 50"),
        ('{"type": "say", "id": "a", "text": 3}', "must be a string"),
        ('{"type": "say", "id": "a", "text": "hi", "interrupt": "yes"}', "boolean"),
        ('{"type": "offer", "sdp": "hello"}', "not a session description"),
        ('{"type": "set_state", "state": "speaking"}', "'state' must be one of"),
        ('{"type": "audio_begin", "id": "a", "sample_rate": 3}', "sample_rate"),
        ('{"type": "ping", "pad": "' + "x" * 3000 + '"}', "exceeds 2048"),
    ],
)
def test_bad_client_messages_raise_bad_request_naming_the_rule(raw: str, match: str) -> None:
    with pytest.raises(BadRequest, match=match):
        P.parse_client_message(raw, L)


def test_good_client_messages_parse_to_typed_values() -> None:
    say = P.parse_client_message('{"type":"say","id":7,"text":"hi","interrupt":true}', L)
    assert say == P.Say(id="7", text="hi", caption=None, interrupt=True)
    assert P.parse_client_message('{"type":"set_state","state":"listening"}', L) == P.SetState(
        "listening"
    )
    assert isinstance(P.parse_client_message('{"type":"offer","sdp":"v=0\\r\\n"}', L), P.Offer)
    err = BadRequest("nope", ref="u1")
    assert P.error_msg(err).wire() == {
        "type": "error",
        "code": "bad_request",
        "message": "nope",
        "ref": "u1",
    }
    wire = P.dumps(P.UtteranceEvent("u1", "started", 1.23456).wire())
    assert json.loads(wire)["media_time_s"] == 1.2346


def test_create_session_body_rules() -> None:
    assert P.parse_create_session(b"", L) == P.CreateSession()
    b = P.parse_create_session(b'{"mode":"broadcast","channel":"news"}', L)
    assert (b.mode, b.channel) == ("broadcast", "news")
    for body, match in [
        (b'{"mode":"broadcast"}', "needs 'channel'"),
        (b'{"channel":"x"}', "only allowed"),
        (b'{"identity":-1}', "identity"),
        (b'{"idle_timeout_s":0}', "positive"),
        (b'{"colour":"red"}', "unknown field"),
        (b"nope", "malformed"),
    ]:
        with pytest.raises(BadRequest, match=match):
            P.parse_create_session(body, L)


def test_token_bucket_allows_burst_then_refills() -> None:
    b = P.TokenBucket(rate=2.0, burst=3)
    assert all(b.take(0.0) for _ in range(3))
    assert not b.take(0.1)
    assert b.take(0.6)  # 0.5 s × 2/s = 1 token back
    proto = P.ServerProtocol(say_rate_per_s=2.0, say_burst=1)
    assert proto.receive(P.Say("a", "hi"), 0.0) == P.Say("a", "hi")
    with pytest.raises(P.ProtocolError, match="per second") as refused:
        proto.receive(P.Say("b", "hi"), 0.1)
    assert isinstance(P.server_error(refused.value), RateLimited)


def test_tokens_are_signed_scoped_and_expire() -> None:
    now = [1000.0]
    s = TokenSigner("k", ttl_s=10, clock=lambda: now[0])
    tok, exp = s.issue("abc")
    assert exp == 1010.0 and s.verify(tok) == "abc" and s.verify(tok, session_id="abc") == "abc"
    with pytest.raises(Unauthorized, match="another session"):
        s.verify(tok, session_id="other")
    with pytest.raises(Unauthorized, match="invalid"):
        s.verify(tok[:-2] + "xx")
    with pytest.raises(Unauthorized, match="invalid"):
        TokenSigner("other-key", ttl_s=10, clock=lambda: now[0]).verify(tok)
    with pytest.raises(Unauthorized, match="missing"):
        s.verify(None)
    now[0] = 1010.5
    with pytest.raises(Unauthorized, match="expired"):
        s.verify(tok)
    keys = ApiKeys(["a1"])
    keys.check("Bearer a1")
    assert not keys.accepts("Bearer a2") and not keys.accepts(None)


def test_server_config_layers_env_and_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNISON_API_KEYS", "k1, k2")
    cfg = load_server_config(None, ["port=9001", "api_keys=[k0]"])
    assert cfg.port == 9001 and cfg.api_keys == ["k0", "k1", "k2"] and cfg.host == "127.0.0.1"
    with pytest.raises(ConfigError, match=r"server\.host"):
        load_server_config(None, ["host=0.0.0.0"])  # loopback_only is the default
    assert load_server_config(None, ["host=0.0.0.0", "loopback_only=false"]).host == "0.0.0.0"
    with pytest.raises(ConfigError, match="bad server config"):
        load_server_config(None, ["no_such_key=1"])


def test_upsampler_is_continuous_across_chunks_and_keeps_a_tone() -> None:
    up = Upsampler(16000)
    t = np.arange(16000) / 16000
    x = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    y = np.concatenate([up(x[i : i + 5120]) for i in range(0, 16000, 5120)])
    assert len(y) == 3 * 16000  # ×3 exactly
    ref = 0.5 * np.sin(2 * np.pi * 440 * (np.arange(len(y)) - 48) / 48000)  # 48-sample FIR delay
    assert np.sqrt(np.mean((y[200:-200] - ref[200:-200]) ** 2)) < 0.02
