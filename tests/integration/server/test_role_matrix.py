"""Every role against every endpoint, compared with a hand-written table of who may do what.

Deny means 401 or 403 exactly; an allowed call must reach its handler and find its resource
(a 404 or 405 counts as neither, so it fails the test either way). A route added without a row
here fails the coverage check.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from custody.clock import FakeClock
from protocol.checkpoint import SIG_COSIGNATURE_V1, NoteVerifier
from protocol.keys import SigningKey
from server.api.routes import ROUTES
from server.app import RunningServer
from server.auth import Principal, Role
from tests.helpers.device import Reply
from tests.integration.server.conftest import Api

pytestmark = pytest.mark.integration

A, D, OF, C, S, L, U, V = ("admin", "device_admin", "officer", "case_handler", "supervisor", "legal_reviewer",
                          "auditor", "device")
ROLES = (A, D, OF, C, S, L, U, V)
PEOPLE = (A, D, OF, C, S, L, U)

# The table, written by hand from the role descriptions in DESIGN.md (Users); not derived from the code.
EXPECTED: dict[tuple[str, str], set[str]] = {
    ("GET", "/api/v1/me"): set(ROLES),
    ("GET", "/api/v1/users"): {A, U},
    ("POST", "/api/v1/users"): {A},
    ("GET", "/api/v1/users/{name}"): {A, U},
    ("POST", "/api/v1/users/{name}/disable"): {A},
    ("GET", "/api/v1/users/{name}/tokens"): {A, U},
    ("POST", "/api/v1/users/{name}/tokens"): {A},
    ("POST", "/api/v1/tokens/{token_id}/revoke"): {A},
    ("GET", "/api/v1/officers"): set(PEOPLE),
    ("POST", "/api/v1/officers"): {A, D},
    ("GET", "/api/v1/officers/{officer_id}"): set(PEOPLE),
    ("PATCH", "/api/v1/officers/{officer_id}"): {A, D},
    ("POST", "/api/v1/enrollment-tokens"): {A, D},
    ("GET", "/api/v1/enrollment-tokens"): {A, D, U},
    ("GET", "/api/v1/devices"): {A, D, S, U},
    ("GET", "/api/v1/devices/{device_id}"): {A, D, S, U},
    ("GET", "/api/v1/devices/{device_id}/certificate"): {A, D, S, U},
    ("POST", "/api/v1/devices/{device_id}/state"): {A, D},
    ("GET", "/api/v1/devices/{device_id}/states"): {A, D, S, U},
    ("GET", "/api/v1/devices/{device_id}/keys"): {A, D, S, U},
    ("POST", "/api/v1/devices/{device_id}/assignments"): {A, D},
    ("GET", "/api/v1/devices/{device_id}/assignments"): {A, D, S, U},
    ("POST", "/api/v1/devices/{device_id}/unassign"): {A, D},
    ("GET", "/api/v1/devices/{device_id}/entries"): {A, D, S, U, C, L},
    ("GET", "/api/v1/devices/{device_id}/entries/{seq}"): {A, D, S, U, C, L},
    ("GET", "/api/v1/broker-files"): {A},
    ("GET", "/api/v1/findings"): {A, D, S, U, C, L},
    ("GET", "/api/v1/server-keys"): set(ROLES),
    ("POST", "/api/v1/server-keys/rotate"): {A},
    ("GET", "/api/v1/device/self"): {V},
    ("POST", "/api/v1/device/entries"): {V},
    ("GET", "/api/v1/device/entries/{seq}"): {V},
    ("POST", "/api/v1/device/entries/{seq}/verify"): {V},
    ("POST", "/api/v1/device/key-rotation"): {V},
    # Cases: everyone who works on enforcement reads them; case handlers (their own cases) and admins
    # write them; the audit and link history are for handlers, supervisors, reviewers and auditors;
    # only a legal reviewer signs off a major decision; only an admin loads a requirement list.
    ("GET", "/api/v1/cases"): {A, OF, C, S, L, U},
    ("POST", "/api/v1/cases"): {A, C},
    ("GET", "/api/v1/cases/{case_id}"): {A, OF, C, S, L, U},
    ("PATCH", "/api/v1/cases/{case_id}"): {A, C},
    ("POST", "/api/v1/cases/{case_id}/steps"): {A, C},
    ("GET", "/api/v1/cases/{case_id}/steps/{step_id}"): {A, OF, C, S, L, U},
    ("PATCH", "/api/v1/cases/{case_id}/steps/{step_id}"): {A, C},
    ("GET", "/api/v1/cases/{case_id}/steps/{step_id}/suggestions"): {A, C, S, L, U},
    ("POST", "/api/v1/cases/{case_id}/steps/{step_id}/links"): {A, C},
    ("POST", "/api/v1/cases/{case_id}/steps/{step_id}/links/{link_id}/unlink"): {A, C},
    ("GET", "/api/v1/cases/{case_id}/events"): {A, C, S, L, U},
    ("POST", "/api/v1/cases/{case_id}/steps/{step_id}/signoff"): {L},
    ("GET", "/api/v1/audit"): {A, C, S, L, U},
    ("GET", "/api/v1/policy"): set(PEOPLE),
    ("POST", "/api/v1/policy"): {A},
    ("GET", "/api/v1/policy/versions"): set(PEOPLE),
    ("GET", "/api/v1/policy/versions/{version}"): set(PEOPLE),
    ("GET", "/api/v1/fleet"): {A, D, S, U},
    # Commands: officers only on the device assigned to them (it is, when these rows run) and only
    # start/stop/select_step; supervisors only live view (finer rules: test_commands.py).
    ("POST", "/api/v1/devices/{device_id}/commands"): {A, D, OF, S},
    ("GET", "/api/v1/devices/{device_id}/commands"): {A, D, S, U, OF},
    # transparency log, access log, footage (issue 7): footage is read by those who work with evidence,
    # not by device admins (fleet health) nor officers; the access log is for supervisors and auditors.
    ("GET", "/api/v1/log/witnesses"): {A, D, S, U, C, L},
    ("POST", "/api/v1/log/witnesses"): {A},
    ("GET", "/api/v1/access-log"): {A, S, U},
    ("GET", "/api/v1/devices/{device_id}/entries/{seq}/footage"): {A, C, S, L, U},
    ("GET", "/api/v1/devices/{device_id}/recordings/{recording_id}/mp4"): {A, C, S, L, U},
    ("POST", "/api/v1/exports"): {A, C, S, L, U},
    # Live view (实时调阅) is supervision; the access log of views is for auditors too.
    ("POST", "/api/v1/devices/{device_id}/live"): {A, S},
    ("GET", "/api/v1/devices/{device_id}/live"): {A, S},
    ("POST", "/api/v1/devices/{device_id}/live/{session_id}/viewers"): {A, S},
    ("POST", "/api/v1/devices/{device_id}/live/{session_id}/viewers/{viewer_id}/leave"): {A, S},
    ("POST", "/api/v1/devices/{device_id}/live/{session_id}/stop"): {A, S},
    ("GET", "/api/v1/live-views"): {A, S, U},
    ("POST", "/api/v1/device/live/{session_id}/offer"): {V},
    # Units: everyone sees the units they act in; only an admin shapes the tree and places things in it.
    ("GET", "/api/v1/units"): set(PEOPLE),
    ("POST", "/api/v1/units"): {A},
    ("POST", "/api/v1/placements"): {A},
    ("GET", "/api/v1/scope"): set(ROLES),
    # Legal holds: set and lifted by admins, supervisors and legal reviewers; read by those who audit.
    ("POST", "/api/v1/holds"): {A, S, L},
    ("POST", "/api/v1/holds/{hold_id}/lift"): {A, S, L},
    ("GET", "/api/v1/holds"): {A, C, S, L, U},
    ("GET", "/api/v1/retention"): {A, C, S, L, U},
    ("POST", "/api/v1/retention/run"): {A},
    ("GET", "/api/v1/stats"): {A, C, S, L, U},
    ("GET", "/api/v1/stats/public/{year}"): {A},
}
#: Routes outside the role matrix, with the credential that replaces a role.
NOT_ROLE_BASED = {("GET", "/healthz"): "public", ("GET", "/api/openapi.json"): "public",
                  ("POST", "/api/v1/enroll"): "enrollment token", ("PUT", "/api/v1/upload/{key}"): "upload URL",
                  ("PUT", "/api/v1/chunks/{device_id}/{seq}"): "the chunk's signed manifest",
                  ("GET", "/api/v1/log/checkpoint"): "public", ("GET", "/api/v1/log/key"): "public",
                  ("GET", "/api/v1/log/proof/inclusion"): "public", ("GET", "/api/v1/log/proof/consistency"): "public",
                  ("GET", "/api/v1/log/leaves"): "public", ("POST", "/api/v1/log/forks"): "public (self-proving)",
                  ("POST", "/api/v1/log/cosignatures"): "a registered witness's cosignature"}


def test_the_table_covers_every_route() -> None:
    routes = {(r.method, r.openapi_path) for r in ROUTES}
    assert routes == set(EXPECTED) | set(NOT_ROLE_BASED)


async def test_role_matrix(server: RunningServer, admin: Api, clock: FakeClock) -> None:
    clients = {role: await admin.user(f"matrix-{role.replace('_', '-')}", role) for role in PEOPLE}
    victim = await admin.user("victim", "officer")
    victim_token = (await admin.ok("GET", "/api/v1/users/victim/tokens"))["tokens"][0]["id"]
    day = 86_400_000
    await admin.ok("POST", "/api/v1/officers", {"id": "off-1", "name": "N", "unit": "U", "cert_number": "C-1",
                                                "cert_expires_ms": clock.now_ms() + 365 * day})
    target = await admin.enroll(clock)  # the device that people's requests are about
    await target.announce(target.event("start"))
    await target.deliver()  # seq 1: a verified chunk, for the footage routes
    device = await admin.enroll(clock)  # the device that makes the device-role calls
    await device.announce(device.event("start"))
    counter = itertools.count()
    witness_vkey = NoteVerifier("matrix-witness", SigningKey.generate().public, SIG_COSIGNATURE_V1).vkey()
    assert victim.token
    handler = "matrix-case-handler"
    case_id = (await admin.ok("POST", "/api/v1/cases", {"number": "M-0", "category": "penalty", "title": "t",
                                                        "handler": handler}))["id"]
    await admin.ok("POST", f"/api/v1/cases/{case_id}/steps", {"id": "m-step", "stage": "filing", "activity": "other"})
    link_id = (await admin.ok("POST", f"/api/v1/cases/{case_id}/steps/m-step/links", {
        "device_id": target.device_id, "recording_id": target.recording_id, "reason": "matrix"}))["id"]
    policy_text = (await admin.ok("GET", "/api/v1/policy"))["text"]
    # A live session to address (its live_view_start waits as a pending command: no device connects).
    live = await server.services.live.request(target.device_id, Principal("user", "admin", Role.ADMIN))
    hold_id = (await admin.ok("POST", "/api/v1/holds", {"target": "case", "case_id": case_id, "reason": "m"}))["id"]

    def body_for(method: str, path: str, role: str | None = None) -> dict[str, Any] | None:
        n = next(counter)
        if (method, path) == ("POST", "/api/v1/devices/{device_id}/commands"):
            return {"kind": {S: "live_view_start", OF: "start"}.get(role or A, "ping")}
        bodies: dict[tuple[str, str], dict[str, Any]] = {
            ("POST", "/api/v1/users"): {"name": f"made-{n}", "role": "officer"},
            ("POST", "/api/v1/users/{name}/tokens"): {"label": "x"},
            ("POST", "/api/v1/officers"): {"id": f"off-m{n}", "name": "N", "unit": "U", "cert_number": f"M-{n}",
                                           "cert_expires_ms": clock.now_ms() + 365 * day},
            ("PATCH", "/api/v1/officers/{officer_id}"): {"unit": f"unit {n}"},
            ("POST", "/api/v1/enrollment-tokens"): {},
            ("POST", "/api/v1/devices/{device_id}/state"): {"state": "suspended" if n % 2 else "active"},
            ("POST", "/api/v1/devices/{device_id}/assignments"): {"officer_id": "off-1"},
            ("POST", "/api/v1/cases"): {"number": f"M-{n}", "category": "penalty", "title": "t", "handler": handler},
            ("PATCH", "/api/v1/cases/{case_id}"): {"title": f"t {n}"},
            ("POST", "/api/v1/cases/{case_id}/steps"): {"id": f"m-step-{n}", "stage": "filing", "activity": "other"},
            ("PATCH", "/api/v1/cases/{case_id}/steps/{step_id}"): {"location": f"place {n}"},
            ("POST", "/api/v1/cases/{case_id}/steps/{step_id}/links"): {
                "device_id": target.device_id, "recording_id": target.recording_id, "reason": "r"},
            ("POST", "/api/v1/cases/{case_id}/steps/{step_id}/links/{link_id}/unlink"): {"reason": "r"},
            ("POST", "/api/v1/cases/{case_id}/steps/{step_id}/signoff"): {"opinion": "o"},
            ("POST", "/api/v1/policy"): {"text": policy_text},
            ("POST", "/api/v1/log/witnesses"): {"vkey": witness_vkey},
            ("POST", "/api/v1/exports"): {"reason": "role matrix", "recordings": f"{target.device_id}/"
                                                                                f"{target.recording_id}"},
            ("POST", "/api/v1/units"): {"id": f"bureau-{n}", "name": "B", "kind": "bureau"},
            ("POST", "/api/v1/placements"): {"kind": "officer", "id": "off-1", "unit_id": None},
            ("POST", "/api/v1/holds"): {"target": "case", "case_id": case_id, "reason": "r"},
            ("POST", "/api/v1/holds/{hold_id}/lift"): {"reason": "r"},
        }
        return bodies.get((method, path))

    def concrete(path: str) -> str:
        if path.endswith("/footage"):
            return f"/api/v1/devices/{target.device_id}/entries/1/footage?reason=role+matrix"
        if path.endswith("/mp4"):
            return f"/api/v1/devices/{target.device_id}/recordings/{target.recording_id}/mp4?reason=role+matrix"
        return (path.replace("{name}", "victim").replace("{token_id}", victim_token)
                .replace("{officer_id}", "off-1").replace("{device_id}", target.device_id).replace("{seq}", "0")
                .replace("{case_id}", str(case_id)).replace("{step_id}", "m-step").replace("{link_id}", str(link_id))
                .replace("{version}", "2026.1-default")
                .replace("{session_id}", live["session"]).replace("{viewer_id}", "vw-" + "0" * 16)
                .replace("{hold_id}", str(hold_id)).replace("{year}", "2026"))

    async def as_device(method: str, path: str) -> Reply:
        if path == "/api/v1/device/entries":
            return await device.announce(device.event("stop" if device.seq % 2 == 0 else "start"))
        if path == "/api/v1/device/key-rotation":
            new_key = SigningKey.generate()
            reply = await device.request("POST", path, device.rotation(new_key).raw)
            if reply.status == 200:
                device.key = new_key
            return reply
        return await device.request(method, concrete(path))

    await admin.ok("POST", "/api/v1/officers", {"id": "matrix-officer", "name": "N", "unit": "U",
                                                "cert_number": "C-M", "cert_expires_ms": clock.now_ms() + 365 * day})
    failures = []
    for (method, path), allowed in EXPECTED.items():
        if path.endswith("/commands"):  # the officer user acts as officer "matrix-officer"
            clock.advance(1)
            await admin.ok("POST", f"/api/v1/devices/{target.device_id}/assignments", {"officer_id": "matrix-officer"})
        for role in ROLES:
            clock.advance(1)  # assignments must start after the previous one
            if role == V:
                reply = await as_device(method, path)
            else:
                reply = await clients[role].call(method, concrete(path), body_for(method, path, role))
            if role in allowed:
                if reply.status in (401, 403, 404, 405) or reply.status >= 500:
                    failures.append(f"{role:14} {method} {path}: expected allow, got {reply.status} {reply.code}")
            elif reply.status != 403 or reply.code != "forbidden_role":
                failures.append(f"{role:14} {method} {path}: expected 403 forbidden_role, got {reply.status} "
                                f"{reply.code}")
        anonymous = await admin.call(method, concrete(path), body_for(method, path), token=None)
        if anonymous.status != 401 or anonymous.code != "missing_credentials":
            failures.append(f"{'anonymous':14} {method} {path}: expected 401, got {anonymous.status}")
        assert anonymous.headers["Content-Type"].startswith("application/problem+json")
    assert not failures, "\n".join(failures)
