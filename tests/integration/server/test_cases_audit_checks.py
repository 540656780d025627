"""The audit's checks that the day scenario does not seed: a chain gap inside a linked recording, a
failed verification, an officer who is not the device's, entries after a loss cutoff; unlinking
takes footage away from a step (and is an event); time-range links clip coverage.
"""

from __future__ import annotations

import dataclasses

import pytest

from custody.clock import FakeClock
from server.app import RunningServer
from tests.helpers.media import make_chunk
from tests.integration.server.conftest import Api

pytestmark = pytest.mark.integration


async def test_recording_checks_unlink_and_ranges(server: RunningServer, admin: Api, clock: FakeClock) -> None:
    handler = await admin.user("chen", "case_handler")
    auditor = await admin.user("zhou", "auditor")
    for officer in ("o-1", "o-2"):
        await admin.ok("POST", "/api/v1/officers", {"id": officer, "name": "N", "unit": "U",
                                                    "cert_number": f"C-{officer}",
                                                    "cert_expires_ms": clock.now_ms() + 86_400_000})
    device = await admin.enroll(clock)
    dev = device.device_id
    await admin.ok("POST", f"/api/v1/devices/{dev}/assignments", {"officer_id": "o-1"})
    device.officer_id, device.recording_id = "o-1", "rec-1"
    chunk = make_chunk()  # 1 s
    start = clock.now_ms()
    await device.announce(device.event("start"))  # seq 0
    await device.deliver(chunk)  # seq 1, 0-1 s
    clock.advance(1)
    device.manifest(chunk)  # seq 2 is made and never sent: a gap inside the recording
    clock.advance(2)
    device.officer_id = "o-2"  # seq 3 names another officer than the device's
    await device.deliver(chunk)
    device.officer_id = "o-1"
    clock.advance(1)
    bad = dataclasses.replace(chunk, duration_ms=3000)  # seq 4: the media says 1 s, the manifest 3 s
    announced = await device.announce(device.manifest(bad))
    await device.put(announced.json["upload"], bad.data)
    assert (await device.verify(4)).status == 422
    clock.advance(1)
    await admin.ok("POST", f"/api/v1/devices/{dev}/state", {"state": "lost", "reason": "dropped in the river"})
    await device.deliver(chunk)  # seq 5, after the cutoff
    clock.advance(1)
    await device.announce(device.event("stop"))  # seq 6
    end = clock.now_ms()

    case = (await handler.ok("POST", "/api/v1/cases", {"number": "C-9", "category": "compulsion", "title": "t"}))["id"]
    await handler.ok("POST", f"/api/v1/cases/{case}/steps", {
        "id": "seize", "stage": "execution", "activity": "administrative_compulsion", "officers": ["o-1"],
        "actual_start_ms": start, "actual_end_ms": start + 4000})
    suggested = (await handler.ok("GET", f"/api/v1/cases/{case}/steps/seize/suggestions"))["suggestions"]
    assert [(s["recording_id"], s["officer_id"]) for s in suggested] == [("rec-1", "o-1")]
    linked = await handler.ok("POST", f"/api/v1/cases/{case}/steps/seize/links", {
        "device_id": dev, "recording_id": "rec-1", "from_ms": start, "until_ms": start + 4000,
        "reason": "the sealing"})
    await handler.ok("PATCH", f"/api/v1/cases/{case}/steps/seize", {"status": "completed"})

    report = await auditor.ok("GET", f"/api/v1/audit?case_id={case}")
    by_code = {f["code"]: f["evidence"] for f in report["findings"]}
    assert sorted(by_code) == ["chain.gap", "chunk.verification_failed", "entry.untrusted", "officer.mismatch",
                               "step.incomplete_coverage"]
    assert (by_code["chain.gap"]["first"], by_code["chain.gap"]["last"], by_code["chain.gap"]["position"]) == (
        2, 2, "inside")
    assert by_code["chunk.verification_failed"]["seqs"] == [4]
    assert (by_code["officer.mismatch"]["entry_officer"], by_code["officer.mismatch"]["seqs"]) == ("o-2", [3])
    # The cutoff is the last receipted seq (3): the rejected seq 4 was never receipted, so it is after it too.
    assert by_code["entry.untrusted"]["seqs"] == [4, 5, 6]
    # Linked: 0-4 s. Verified footage in it: seq 1 (0-1 s) and seq 3 (3-4 s); seq 2 never came (1-3 s).
    cov = by_code["step.incomplete_coverage"]
    assert (cov["covered_ms"], cov["gaps"]) == (2000, [{"from_ms": start + 1000, "until_ms": start + 3000,
                                                        "ms": 2000}])

    await handler.ok("POST", f"/api/v1/cases/{case}/steps/seize/links/{linked['id']}/unlink",
                     {"reason": "wrong recording"})
    after = await auditor.ok("GET", f"/api/v1/audit?case_id={case}")
    # The step lost its footage; the recording, now linked to nothing, stays in the case's audit as a
    # candidate for its step (with its own problems), flagged as unlinked.
    assert sorted(f["code"] for f in after["findings"]) == [
        "chain.gap", "chunk.verification_failed", "entry.untrusted", "officer.mismatch", "recording.unlinked",
        "step.missing_footage"]
    events = (await auditor.ok("GET", f"/api/v1/cases/{case}/events"))["events"]
    assert [(e["action"], e["actor"], e["reason"]) for e in events] == [
        ("link", "user:chen", "the sealing"), ("unlink", "user:chen", "wrong recording")]
    step = await handler.ok("GET", f"/api/v1/cases/{case}/steps/seize")
    assert step["links"][0]["removed_reason"] == "wrong recording"  # kept on record
    # Unlinked now, the recording is an orphan in the whole audit, with the step it may belong to.
    everything = await auditor.ok("GET", "/api/v1/audit")
    orphan = next(f for f in everything["findings"] if f["code"] == "recording.unlinked")["evidence"]
    assert orphan["suggested_steps"] == [{"case_number": "C-9", "step_id": "seize"}]
    assert end > start
