"""The scrubber finds footage altered or removed directly in the store, against the receipts."""

from __future__ import annotations

import os
import stat

import pytest

from custody.clock import FakeClock
from server.app import RunningServer
from tests.integration.server.conftest import Api
from tests.integration.tamper.conftest import record

pytestmark = pytest.mark.integration


async def test_scrubber_finds_a_flipped_byte_and_a_missing_object(log_server: RunningServer, log_admin: Api,
                                                                 clock: FakeClock) -> None:
    device = await log_admin.enroll(clock)
    rec = await record(device, 3)
    scrubber = log_server.services.scrubber
    clean = await scrubber.run_once(1 << 30)
    assert clean.checked == 3 and set(clean.results.values()) == {"ok"} and clean.wrapped

    entries = {e["seq"]: e for e in (await log_admin.ok("GET", f"/api/v1/devices/{device.device_id}/entries"))[
        "entries"]}
    root = log_server.services.config.data_dir / "footage"
    flipped = root / device.device_id / f"{rec.seqs[1]:012d}-{entries[rec.seqs[1]]['sha256']}"
    os.chmod(flipped, stat.S_IRUSR | stat.S_IWUSR)  # what an intruder with root does first
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0x01
    flipped.write_bytes(bytes(data))
    gone = root / device.device_id / f"{rec.seqs[2]:012d}-{entries[rec.seqs[2]]['sha256']}"
    os.chmod(gone.parent, 0o700)
    gone.unlink()

    # a small budget: one chunk per round (always at least one), the cursor moves on
    results: dict[str, str] = {}
    for _ in range(4):
        report = await scrubber.run_once(1)
        results.update(report.results)
    assert results[f"{device.device_id}/{rec.seqs[1]}"] == "mismatch"
    assert results[f"{device.device_id}/{rec.seqs[2]}"] == "missing"
    assert results[f"{device.device_id}/{rec.seqs[3]}"] == "ok"
    found = (await log_admin.ok("GET", f"/api/v1/findings?device_id={device.device_id}"))["findings"]
    codes = {(f["code"], f["seq"]) for f in found}
    assert ("scrub.mismatch", rec.seqs[1]) in codes
    assert ("scrub.missing", rec.seqs[2]) in codes
    mismatch = next(f for f in found if f["code"] == "scrub.mismatch")
    assert mismatch["evidence"]["receipt_sha256"] == entries[rec.seqs[1]]["sha256"]
    # the scrubber's reads carry an access-event id too (its integrity grant, logged once per start)
    duties = (await log_admin.ok("GET", "/api/v1/access-log?kind=integrity"))["events"]
    assert {e["actor"] for e in duties} == {"duty:ingest", "duty:scrub"}
