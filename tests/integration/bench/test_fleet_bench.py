"""bench/fleet_bench.py's step machinery with a tiny fleet, so the harness cannot rot unnoticed.

One 2 s step of 3 devices with 1 s chunks against the real `custody server` process, PostgreSQL and
Mosquitto: every chunk closes on schedule, is receipted, and each process's CPU is accounted.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from bench.fleet_bench import BROKER_LIMITS, Services, build_parser, machine_probe, main, make_room, run_step
from tests.services.mosquitto import MosquittoFactory
from tests.services.postgres import PostgresServer

pytestmark = pytest.mark.integration


def test_one_tiny_step_closes_and_receipts_every_chunk(postgres: PostgresServer, mosquitto_factory: MosquittoFactory,
                                                       tmp_path: Path) -> None:
    broker = mosquitto_factory(BROKER_LIMITS)
    args = build_parser().parse_args([
        "--ramp", "3", "--step-seconds", "2", "--drain-seconds", "5", "--settle-seconds", "0",
        "--idle-seconds", "0.2", "--chunk-seconds", "1", "--width", "160", "--height", "120",
        "--video-bitrate", "100000", "--noise", "0", "--server-core", "-1", "--fleet-core", "-1",
        "--work-dir", str(tmp_path / "work"), "--p99-limit", "5000"])
    args.server_core = args.fleet_core = args.services_core = None  # what main() makes of -1
    step = run_step(3, 0, args, Services(postgres, broker), tmp_path)
    assert step.expected == 3 * 2
    assert step.closed == step.expected, step.notes
    assert step.receipted == step.closed, step.notes
    assert len(step.errors) == step.refused == step.server_log_errors == 0, step.notes
    assert 0 < step.p50 <= step.p99 <= step.max
    assert step.server_ms > 0 and step.fleet_ms > 0 and step.postgres_ms > 0
    # The verdict follows the rule from the step's own figures; how fast this machine is, is not asserted.
    assert step.sustained == (not step.fleet_saturated and step.p99 <= args.p99_limit
                              and step.receipted >= step.closed and step.refused == 0)
    # Both sides' collector pauses: the server printed its own as it stopped.
    assert re.fullmatch(r"server gen 0: .*; fleet gen 0: .*", step.gc_pauses), step.gc_pauses
    assert (tmp_path / "step-3-server.log").exists()  # logs are kept, the step's data is set aside
    assert not (tmp_path / "work" / "step-00-3").exists()
    spent = tmp_path / "work" / "spent"
    assert [p.name.rsplit("-", 1)[0] for p in spent.iterdir()] == ["step-00-3"]
    # ... and removed when the next step needs the room (here: more than any disk has).
    args.min_free_gb = 10**9
    assert "removed" in (make_room(0, args) or "")
    assert not spent.exists()
    assert make_room(0, args) is None  # nothing left to remove


def test_the_machine_probe_reports_both_workloads_and_restores_the_affinity() -> None:
    cores = os.sched_getaffinity(0)
    line = machine_probe(min(cores), rounds=1)
    found = re.fullmatch(r"machine probe on core \d+: Python \(20,000 JSON round trips\) (\d+) ms, "
                         r"SHA-256 of 32 MiB ([\d.]+) ms \(fastest of 1\)", line)
    assert found is not None, line
    assert int(found[1]) > 0 and float(found[2]) > 0
    assert os.sched_getaffinity(0) == cores


def test_a_config_override_the_server_would_refuse_is_refused_before_anything_starts(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--ramp", "3", "--set", "ingest.no_such_key=1"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "--set ingest.no_such_key: unknown key" in err and "Traceback" not in err
