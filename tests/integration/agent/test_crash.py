"""SIGKILL a recording agent at random instants, restart it, and check the buffer's promises.

Each trial starts ``custody agent record`` (synthetic source on the simulated clock, 1 s chunks,
so chunks are committed many times a second), kills it with SIGKILL after a random delay, and
the next trial's start is the restart (recovery runs first). At the end the buffer must hold a
chain that verifies from sequence 0 with no gap, reuse or fork; every committed entry's bytes
intact (nothing corrupt ever signed); the index agreeing with the files; and every recording
closed by a stop or an ``interrupted`` event. CI runs 20 trials; ``make crash-test`` runs 200.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.buffer import ChunkBuffer
from agent.identity import load_or_create_key
from custody.clock import SystemClock
from protocol.chain import verify_chain
from protocol.envelope import Envelope
from protocol.messages import RecordingEvent, parse_entry

pytestmark = pytest.mark.integration

TRIALS = int(os.environ.get("CUSTODY_CRASH_TRIALS", "20"))
CUSTODY = [sys.executable, "-m", "custody", "-q"]


def start_agent(data: Path, log: Path) -> subprocess.Popen[bytes]:
    args = [*CUSTODY, "agent", "record", "--data-dir", str(data), "--seconds", "3600", "--size", "160x120",
            "--chunk-seconds", "1", "--pre-event-seconds", "0", "--bitrate", "200000", "--fast"]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log.open("ab"))


def test_sigkill_at_random_instants(tmp_path: Path) -> None:
    rng = random.Random(int(os.environ.get("CUSTODY_CRASH_SEED", "20261123")))
    data, log = tmp_path / "device", tmp_path / "agent.log"
    killed_with_entries = 0
    early = 0
    for trial in range(TRIALS):
        highest = max((int(p.name.split(".")[0]) for p in (data / "buffer").glob("0*")), default=-1)
        proc = start_agent(data, log)
        if trial % 10 == 9:
            # Now and then a kill at a random instant of start-up and recovery.
            time.sleep(rng.uniform(0.0, 1.5))
            early += 1
        else:
            # Otherwise wait until this run is recording (a chunk newer than any before it), then kill
            # at a random instant: the machine's load must not decide what the test covers.
            deadline = time.monotonic() + 30
            while not any(int(p.name.split(".")[0]) > highest for p in (data / "buffer").glob("0*.chunk")):
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"agent did not start recording: {log.read_text()[-2000:]}")
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 1.2))
        if proc.poll() is not None:
            pytest.fail(f"agent exited by itself with {proc.returncode}: {log.read_text()[-2000:]}")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if any((data / "buffer").glob("*.chunk")):
            killed_with_entries += 1

    key = load_or_create_key(data / "keys")
    buf = ChunkBuffer(data / "buffer", key, SystemClock())
    report = buf.open()  # the final restart: recovery closes the last killed recording
    assert report.corrupt == [], "a committed entry's bytes were damaged: something corrupt was signed"
    held = buf.entries()
    on_disk = sorted(int(p.name.split(".")[0]) for p in (data / "buffer").iterdir()
                     if p.name.endswith((".chunk", ".event")))
    assert [e.seq for e in held] == on_disk, "index and files disagree"
    envelopes = [buf.read(e.seq)[1] for e in held]
    chain = verify_chain(envelopes, key.public, start_seq=0)
    assert chain.ok, "\n".join(chain.lines())
    events = [parse_entry(Envelope.from_bytes(env)) for env in envelopes]
    starts = [e.recording_id for e in events if isinstance(e, RecordingEvent) and e.event == "start"]
    ends = {e.recording_id: e.event for e in events if isinstance(e, RecordingEvent) and e.event != "start"}
    assert set(starts) == set(ends), "a recording was left without its stop or interrupted event"
    interrupted = sum(1 for v in ends.values() if v == "interrupted")
    chunks = sum(1 for e in held if e.kind == "chunk")
    summary = {"trials": TRIALS, "entries": len(held), "chunks": chunks, "recordings": len(starts),
               "interrupted_events": interrupted, "kills_during_startup": early,
               "trials_with_chunks_on_disk": killed_with_entries}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    print(f"\ncrash test: {json.dumps(summary)}")
    # Every recording was killed (none ran to its end), and each was closed as interrupted on the
    # next start; a kill during start-up, before the first entry, leaves nothing to close.
    assert interrupted == len(starts)
    assert len(starts) >= TRIALS - early, "every kill but the early ones lands while recording"
    assert chunks > TRIALS  # the kills landed while chunks were being committed
    buf.close()
