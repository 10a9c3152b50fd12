"""The headless load test end to end, small: real gateway process, real SDK devices."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tidings.simulator.engine import loadtest, percentiles, run_loadtest
from tidings.simulator.engine.fleet import Coordinator
from tidings.simulator.engine.loadtest import _free_port
from tidings.simulator.engine.report import LoadReport


def test_a_broadcast_reaches_every_device_once_and_the_baseline_runs_beside_it() -> None:
    report = run_loadtest(devices=40, scenario="broadcast", baseline=True, workers=2, timeout=30)
    assert report.delivery_ratio == 1.0
    assert (report.precision, report.recall) == (1.0, 1.0)
    assert report.violations == {}
    assert len(report.latencies_ms) == 40
    assert report.baseline_latencies_ms is not None and len(report.baseline_latencies_ms) == 40
    data = report.to_json()
    assert set(data) >= {"devices", "scenario", "latency_ms", "delivery_ratio", "precision",
                         "recall", "violations", "baseline", "ratio_p99_vs_baseline"}  # fmt: skip
    assert data["ratio_p99_vs_baseline"] > 0


def test_every_device_comes_back_after_the_gateway_is_killed() -> None:
    report = run_loadtest(devices=30, scenario="reconnect-storm", workers=1, timeout=30)
    assert report.extra["reconnected"] == 30
    assert report.delivery_ratio == 1.0 and report.violations == {}


def test_lean_wire_devices_resume_after_the_gateway_is_killed_and_ack_every_delivery() -> None:
    # The lean devices speak the protocol through its session: they come back with resume,
    # get what they had not acknowledged, once, and drop duplicates by message id.
    report = run_loadtest(devices=30, scenario="reconnect-storm", workers=1, timeout=30,
                          device_kind="wire")  # fmt: skip
    assert report.extra["reconnected"] == 30
    assert report.delivery_ratio == 1.0 and report.violations == {}
    assert report.to_json()["fleet"]["device_kind"] == "wire"
    broadcast = run_loadtest(devices=40, scenario="broadcast", workers=2, timeout=30,
                             device_kind="wire")  # fmt: skip
    assert broadcast.delivery_ratio == 1.0 and len(broadcast.latencies_ms) == 40
    assert [w["devices"] for w in broadcast.fleet_workers] == [20, 20]


def test_an_audience_larger_than_one_request_is_sent_in_slices_and_judged_per_slice(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # More users than one request may name: the broadcast goes out in slices, each message
    # to its own slice of users. Each is expected by its own slice only (not by every device),
    # and the run does not wait its whole timeout for deliveries that were never due.
    monkeypatch.setattr(loadtest, "MAX_TARGETS_PER_SEND", 16)
    started = time.monotonic()
    report = run_loadtest(devices=40, scenario="broadcast", workers=2, timeout=60,
                          device_kind="wire", gateway_logs=str(tmp_path / "logs"))  # fmt: skip
    assert report.delivery_ratio == 1.0 and (report.precision, report.recall) == (1.0, 1.0)
    assert len(report.latencies_ms) == 40  # 16 + 16 + 8: each device got its slice's message
    assert time.monotonic() - started < 60
    assert (tmp_path / "logs" / "node-0.log").read_text()  # the gateway's own output, kept


def test_workers_joined_over_tcp_run_the_fleet_and_their_clocks_are_read() -> None:
    # Two `tidings loadtest-worker` processes join a coordinator on loopback: the merged run
    # is the same as a local one (every device, every delivery), and each worker's clock was
    # read (one machine here: offsets near zero, within their uncertainty).
    port = _free_port()
    env = {**os.environ, "TIDINGS_LOADTEST_KEY": "k" * 16}
    join = [sys.executable, "-m", "tidings", "loadtest-worker", "--coordinator",
            f"127.0.0.1:{port}", "--wait", "60"]  # fmt: skip
    workers = [subprocess.Popen(join, env=env) for _ in range(2)]
    try:
        report = run_loadtest(devices=40, scenario="broadcast", timeout=60, device_kind="wire",
                              coordinator=Coordinator("127.0.0.1", port, 2, b"k" * 16))  # fmt: skip
    finally:
        for w in workers:
            w.wait(timeout=60)
    assert [w.returncode for w in workers] == [0, 0]
    assert report.delivery_ratio == 1.0 and len(report.latencies_ms) == 40
    assert [w["devices"] for w in report.fleet_workers] == [20, 20]
    clocks = report.extra["worker_clocks"]
    assert len(clocks) == 2
    assert all(abs(c["offset_ms"]) <= c["uncertainty_ms"] + 5 for c in clocks), clocks


def test_a_worker_with_the_wrong_key_is_refused() -> None:
    port = _free_port()
    worker = subprocess.Popen(
        [sys.executable, "-m", "tidings", "loadtest-worker", "--coordinator",
         f"127.0.0.1:{port}", "--key", "wrong", "--wait", "30"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    coordinator = Coordinator("127.0.0.1", port, 1, b"right", accept_s=5)
    with pytest.raises(TimeoutError, match="0 of 1 workers joined"):  # it waited on
        run_loadtest(devices=4, scenario="broadcast", timeout=10, device_kind="wire",
                     coordinator=coordinator)  # fmt: skip
    _, err = worker.communicate(timeout=30)
    assert worker.returncode == 1 and "refused this worker" in err


def test_unknown_scenarios_and_campaigns_without_personas_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown scenario"):
        run_loadtest(devices=1, scenario="flood")
    with pytest.raises(ValueError, match="needs personas"):
        run_loadtest(devices=1, scenario="segment", personas=False)
    with pytest.raises(ValueError, match="needs SDK devices"):
        run_loadtest(devices=1, scenario="segment", device_kind="wire")
    with pytest.raises(ValueError, match="sdk or wire"):
        run_loadtest(devices=1, scenario="broadcast", device_kind="bare")


def test_percentiles_use_nearest_rank() -> None:
    assert percentiles([float(i) for i in range(1, 101)]) == {
        "p50": 50.0, "p95": 95.0, "p99": 99.0, "max": 100.0,
    }  # fmt: skip


def test_a_broadcast_reports_wire_and_handled_latency_and_each_workers_load() -> None:
    report = run_loadtest(devices=30, scenario="broadcast", workers=2, timeout=60)
    data = report.to_json()
    wire, handled = data["latency_ms"]["wire"], data["latency_ms"]["handled"]
    assert data["latency_ms"]["p99"] == wire["p99"]  # the headline is the wire
    assert handled["p50"] >= wire["p50"] and handled["max"] >= wire["max"]
    fleet = data["fleet"]
    assert fleet["device_kind"] == "sdk" and not fleet["saturated"]
    assert [w["devices"] for w in fleet["workers"]] == [15, 15]
    assert all(w["cpu_pct"] >= 0 and w["loop_lag_ms"]["p99"] >= 0 for w in fleet["workers"])
    assert all(20 < w["rss_mib"] < 2000 for w in fleet["workers"])  # a Python process's own
    assert "SATURATED" not in report.table() and "fleet worker 2" in report.table()
    assert "KiB a device" in report.table()
    # The connect storm, per worker and per device.
    connect = data["connect"]
    assert [w["devices"] for w in connect["workers"]] == [15, 15]
    assert all(w["rate_per_s"] > 0 and w["hello_p99_ms"] > 0 for w in connect["workers"])
    assert 0 < connect["hello_ms"]["p50"] <= connect["hello_ms"]["p99"]
    # And the gateway's own view of the same hellos, from its histogram: every one counted,
    # none longer than the devices saw (the bound is the bucket the p99 falls in).
    own = connect["gateway_hello_ms"]
    assert own["count"] == 30 and 0 < own["p50"] <= own["p99"]
    assert "gateway's own hello" in report.table()
    assert "connect worker 2" in report.table() and "hello p50/p95/p99/max" in report.table()


def test_a_fleet_that_is_the_bottleneck_says_so_in_one_plain_line() -> None:
    report = run_loadtest(devices=10, scenario="broadcast", workers=1, timeout=60,
                          fault="busy")  # fmt: skip
    assert report.to_json()["fleet"]["saturated"] and report.saturated == [1]
    (line,) = [row for row in report.table().splitlines() if row.startswith("SATURATED")]
    assert "worker 1" in line and "--workers" in line  # its own loop blocked, not the machine
    assert report.to_json()["fleet"]["starved_of_cpu"] is False


def test_a_fleet_starved_of_cores_by_the_machine_is_told_apart_from_a_busy_one() -> None:
    # Both workers woke late. Busy with their own work, more workers would help; late while
    # waiting for a core that other processes held, they would not: the line says which.
    def report(waited: float) -> LoadReport:
        load = {"cpu_pct": 12.0, "loop_lag_ms": {"p50": 40.0, "p99": 220.0}, "devices": 5,
                "rss_mib": 60.0, "waited_for_cpu_pct": waited}  # fmt: skip
        return LoadReport(devices=10, scenario="broadcast", connect_s=1.0, latencies_ms=[5.0],
                          delivery_ratio=1.0, precision=1.0, recall=1.0, violations={},
                          gateway_cpu_s=1.0, gateway_rss_mib=80.0,
                          fleet_workers=[load, dict(load)])  # fmt: skip

    starved, busy = report(60.0), report(2.0)
    assert starved.saturated == busy.saturated == [1, 2]
    (line,) = [r for r in starved.table().splitlines() if r.startswith("SATURATED")]
    assert "cores were the bottleneck" in line and "other machines" in line
    assert starved.to_json()["fleet"]["starved_of_cpu"] is True
    (line,) = [r for r in busy.table().splitlines() if r.startswith("SATURATED")]
    assert "--workers" in line and "cores were" not in line
    assert busy.to_json()["fleet"]["starved_of_cpu"] is False
    assert "waited for a core 60 %" in starved.table()


def test_the_table_words_every_row_and_never_prints_a_raw_mapping() -> None:
    report = LoadReport(
        devices=2000, scenario="week", connect_s=2.0, latencies_ms=[5.0, 7.0],
        delivery_ratio=1.0, precision=1.0, recall=1.0, violations={"cap_exceeded": 2},
        gateway_cpu_s=1.5, gateway_rss_mib=80.0,
        extra={"send_to_receipt_ms": {"p50": 12.0, "p99": 40.25}, "nodes": 3,
               "lift": 0.0812345, "reconnected": True, "days": [1, 2],
               "worker_clocks": [{"offset_ms": 0.5}, {"offset_ms": -1.25}]},
    )  # fmt: skip
    table = report.table()
    assert "{" not in table and "'" not in table
    lines = table.splitlines()
    assert [line.split() for line in lines if "cap exceeded" in line] == [["cap", "exceeded", "2"]]
    at = next(i for i, line in enumerate(lines) if line.startswith("send to receipt ms"))
    assert [line.split() for line in lines[at : at + 3]] == [
        ["send", "to", "receipt", "ms"], ["p50", "12"], ["p99", "40.25"]
    ]  # fmt: skip
    assert any(line.split() == ["lift", "0.081"] for line in lines)
    assert any(line.split() == ["reconnected", "yes"] for line in lines)
    assert any(line.split() == ["days", "1,", "2"] for line in lines)
    at = lines.index("worker clocks")
    assert [line.split() for line in lines[at + 1 : at + 5]] == [
        ["1"], ["offset", "ms", "0.5"], ["2"], ["offset", "ms", "-1.25"]
    ]  # fmt: skip


def test_the_command_writes_json_and_a_plot(tmp_path: Path) -> None:
    out, plot = tmp_path / "r.json", tmp_path / "r.svg"
    result = subprocess.run(
        [sys.executable, "-m", "tidings", "loadtest", "--devices", "20", "--workers", "2",
         "--json", str(out), "--plot", str(plot)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "delivery ratio" in result.stdout
    # Piped, the progress is one line per phase, no stream of carriage returns.
    assert "\r" not in result.stderr and result.stderr.count("connecting: 20/20") == 1, (
        result.stderr
    )
    assert json.loads(out.read_text())["delivery_ratio"] == 1.0
    assert plot.read_text().startswith("<svg")


def test_the_checker_catches_banners_shown_in_quiet_hours() -> None:
    # Devices without personas live in UTC: make their quiet window the two hours around now.
    now = dt.datetime.now(dt.UTC)
    window = tuple((now + dt.timedelta(hours=h)).strftime("%H:%M") for h in (-1, 1))
    healthy = run_loadtest(devices=12, scenario="broadcast", workers=1, timeout=5,
                           personas=False, quiet_override=window)  # fmt: skip
    assert healthy.violations == {}  # held, not shown: no violation
    broken = run_loadtest(devices=12, scenario="broadcast", workers=1, timeout=10, personas=False,
                          quiet_override=window, fault="ignore_quiet_hours")  # fmt: skip
    assert broken.violations.get("shown_in_quiet_hours") == 12


def test_personas_are_stable_for_a_seed_and_relevant_content_gets_more_clicks() -> None:
    from tidings.simulator.engine.personas import PERSONAS, assign, click_probability

    assert [assign(7, i).name for i in range(50)] == [assign(7, i).name for i in range(50)]
    assert {assign(7, i).name for i in range(200)} == {p.name for p in PERSONAS}
    fan = next(p for p in PERSONAS if p.name == "sports_fan")
    assert click_probability(fan, "sports") > 5 * click_probability(fan, None)


def _cluster_services() -> tuple[str, str]:
    """The PostgreSQL and Redis the cluster load tests use (fail under CI, else skip)."""
    import os
    import socket

    db = os.environ.get("TIDINGS_TEST_PG") or "postgresql://postgres@127.0.0.1:5432/postgres"
    broker = os.environ.get("TIDINGS_TEST_REDIS") or "redis://127.0.0.1:6379/0"
    for name, port in (("PostgreSQL", 5432), ("Redis", 6379)):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        except OSError:
            why = f"{name} not reachable on 127.0.0.1:{port}: start it to run cluster load tests"
            if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
                pytest.fail(why, pytrace=False)
            pytest.skip(why)
    return db, broker


def test_a_node_killed_mid_fan_out_loses_nothing_and_shows_nothing_twice() -> None:
    db, broker = _cluster_services()
    report = run_loadtest(devices=60, scenario="node-failure", workers=1, timeout=60,
                          nodes=3, db=db, broker=broker, personas=False)  # fmt: skip
    assert report.extra["nodes"] == 3
    # every one of the 5 messages on every device (the ratio counts them), none shown twice
    assert report.delivery_ratio == 1.0 and report.violations == {}
    # The dead node's 20 devices said hello again on the two left, which timed them too.
    own = report.extra["gateway_reconnect_hello_ms"]
    assert own["count"] >= 20 and 0 < own["p50"] <= own["p99"]


def test_a_segment_campaign_on_a_cluster_matches_the_ground_truth() -> None:
    db, broker = _cluster_services()
    report = run_loadtest(devices=80, scenario="segment", workers=1, timeout=60, nodes=2, db=db,
                          broker=broker)  # fmt: skip
    assert (report.precision, report.recall) == (1.0, 1.0)
    assert report.violations == {}


def test_several_nodes_need_a_postgresql_database_and_a_broker() -> None:
    with pytest.raises(ValueError, match="several nodes need"):
        run_loadtest(devices=1, scenario="broadcast", nodes=2)
    with pytest.raises(ValueError, match="needs --nodes 2"):
        run_loadtest(devices=1, scenario="node-failure")


def test_a_week_of_campaigns_on_living_devices_keeps_every_rule_and_has_a_lift() -> None:
    report = run_loadtest(devices=200, scenario="week", days=3, speed=3600, workers=2,
                          timeout=60)  # fmt: skip
    assert report.violations == {}
    assert (report.precision, report.recall) == (1.0, 1.0)
    extra = report.extra
    assert extra["sessions"] > 200 * 3  # the devices kept living: habits and reactions
    assert extra["purchases"] > 0 and extra["events_per_s"] > 0
    assert extra["ab_lift"]["lift"] > 0 and extra["ab_lift"]["holdout"] > 0
    for campaign in ("week-cart", "week-ab", "week-morning", "week-best", "week-daily-2"):
        assert extra["campaigns"][campaign]["received"] > 0, campaign
    assert extra["distribution"] == extra["expected_distribution"]


def test_the_week_scenario_refuses_bad_days_speed_and_clusters() -> None:
    with pytest.raises(ValueError, match="--days must be at least 1"):
        run_loadtest(devices=1, scenario="week", days=0)
    with pytest.raises(ValueError, match="--speed: must be above 0"):
        run_loadtest(devices=1, scenario="week", speed=-5)
    with pytest.raises(ValueError, match="one gateway"):
        run_loadtest(devices=1, scenario="week", nodes=2)
    with pytest.raises(ValueError, match="for the week scenario"):
        run_loadtest(devices=1, scenario="broadcast", speed=10)


def test_a_gateway_that_exits_at_start_is_reported_at_once_with_what_to_run(
    tmp_path: Path,
) -> None:
    from tidings.simulator.engine.loadtest import GatewayProcess

    gateway = GatewayProcess(str(tmp_path))  # a directory is no database: exit 2 at start
    try:
        with pytest.raises(RuntimeError, match="exited with status 2 at start") as err:
            gateway.start()
    finally:
        gateway.stop()
    assert f"--db {tmp_path}" in str(err.value)
