"""``bench faults`` and ``bench load``: the relay's network drop, the sequence-number
accounting, and each harness end to end on a fake-engine server (websocket drops; a broker
restart where mosquitto is installed; the server full, then one session over capacity), and
``bench serve --capacity``'s table. The full runs and their figures are in docs/reliability.md
and docs/performance.md."""

from __future__ import annotations

import asyncio

import pytest

from tests.mqtt_support import needs_mosquitto
from tests.server_support import API_KEY, bench_json, running_server
from unison_stream.benchmarks.faults import seq_faults, ws_drops


def test_sequence_accounting_counts_gaps_as_lost_and_repeats_as_duplicated() -> None:
    assert seq_faults([1, 2, 3, 4]) == (0, 0)
    assert seq_faults([1, 2, 5, 6]) == (2, 0)
    assert seq_faults([1, 2, 2, 3, 1]) == (0, 2)
    assert seq_faults([]) == (0, 0)


def test_three_network_drops_mid_utterance_resume_with_nothing_lost_or_doubled() -> None:
    async def main() -> dict[str, object]:
        async with running_server(resume_grace_s=10.0, stats_interval_s=0.3) as srv:
            res = await ws_drops(srv.base, 3, api_key=API_KEY)
            assert srv.state.manager.sessions == {}, "the session closed with the client"
            return res

    res = asyncio.run(main())
    assert res["resumes"] == 3 and res["reconnecting_events"] == 3, res
    assert res["lost_messages"] == 0 and res["duplicated_messages"] == 0, res
    assert res["bad_orders"] == 0 and res["session_changed"] is False, res


@needs_mosquitto
def test_bench_faults_broker_restart_end_to_end() -> None:
    cmd = ["bench", "faults", "--json", "--ws-drops", "0", "--broker-restarts", "1"]
    res = bench_json([*cmd, "--replica-kills", "0"])["broker_restart"]
    assert res["rounds"] == 1 and res["retained_missing"] == 0, res
    assert res["duplicate_executions"] == 0 and res["lost_commands"] == 0, res
    assert res["bridge_back_ms"]["max"] > 0, res


def test_bench_load_fills_the_server_then_one_more_is_refused() -> None:
    cmd = ["bench", "load", "--json", "--engine", "fake", "--minutes", "0.05"]
    res = bench_json([*cmd, "server.max_sessions=2"])
    assert res["capacity"] == 2 and res["rounds"] >= 1, res
    assert len(res["private_sessions"]) == 1 and len(res["broadcast_viewers"]) == 4, res
    assert res["over_capacity_status"] == 503, res
    assert res["private_sessions"][0]["first_media_ms"]["p50"] > 0, res
    assert all(v["video_fps"] > 0 for v in res["broadcast_viewers"]), res


def test_bench_hostile_every_attack_answered_and_the_victim_undisturbed() -> None:
    cmd = "bench hostile --json --sdp 16 --tokens 12 --bodies 6 --header-drips 2 --ws-drips 1"
    cmd += " --hold 8 server.http_idle_timeout_s=3 server.idle_timeout_s=5"
    res = bench_json(cmd.split())
    sdp = res["sdp"]
    assert sdp["unanswered"] == 0 and set(sdp["answers"]) <= {"answer", "error:bad_request"}, sdp
    assert all(set(v) == {"401"} for v in res["tokens"]["statuses"].values()), res["tokens"]
    bodies = res["bodies"]["statuses"]
    assert set(bodies["length"]) == {"413"} and set(bodies["nested"]) == {"400"}, bodies
    drip = res["drip"]
    assert drip["header_drips_closed"] == 2 and drip["ws_drips_closed"] == 1, drip
    assert res["victim_alive"] and res["victim_video_fps"] > 20, res
    assert res["server"]["sessions"][1] == 0 and res["server"]["peer_connections"][1] == 0, res
    assert res["server_alive"], res


def test_a_failing_bench_shows_the_server_log(capsys: pytest.CaptureFixture[str]) -> None:
    """A bench that fails prints its server's last log lines (here: a server that refused
    its configuration), so a CI log says what the server saw."""
    from unison_stream.benchmarks.harness import served

    with pytest.raises(RuntimeError), served("fake", ["server.max_sessions=-1"]) as (proc, _):
        proc.wait(60)
        raise RuntimeError("the bench failed")
    err = capsys.readouterr().err
    assert "the server's last log lines:" in err and "max_sessions" in err, err


def test_bench_serve_capacity_reports_the_leading_realtime_rows() -> None:
    """``bench serve --capacity`` on the fake engine at tiny settings: the figure's shape and
    that it counts the leading rows of the per-N table held in real time (no timing asserted:
    the fake engine's rows may pass or fail on a loaded host)."""
    cmd = "bench serve --json --engine fake --trials 1 --window 0.5"
    res = bench_json([*cmd.split(), "--capacity", "--capacity-max", "2", "--capacity-trials", "1"])
    assert {"host", "s1", "s4", "encode_once_cpu_ratio"} <= res.keys(), res
    best, table = res["max_realtime_sessions"], res["capacity"]
    assert isinstance(best, int) and 0 <= best <= 2 and res["capacity_max_tried"] == 2, res
    assert list(table) == [f"s{n}" for n in range(1, len(table) + 1)], table
    assert all(table[f"s{n}"]["realtime"] for n in range(1, best + 1)), table
    assert len(table) == 2 if best == 2 else len(table) == best + 1, table
    assert best == 2 or not table[f"s{best + 1}"]["realtime"], table
    for row in table.values():
        if "error" not in row:
            assert set(row) == {
                "served_rtf_min",
                "served_rtf_shared",
                "underrun_slots_during_speech",
                "first_media_ms_p50",
                "realtime",
            }, row
            assert isinstance(row["underrun_slots_during_speech"], int), row
            assert row["first_media_ms_p50"] > 0, row
            assert row["served_rtf_shared"] <= row["served_rtf_min"] + 1e-3, row
            assert row["realtime"] == (
                row["served_rtf_shared"] >= 1.0 and row["underrun_slots_during_speech"] == 0
            ), row
