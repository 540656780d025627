"""Role x scope x endpoint: two bureaus, each with sections; people act only within their units.

A case handler of one section cannot see, link (or, once those routes exist, export or stream)
another section's footage; every refused attempt is an ``access.denied`` finding.
"""

from __future__ import annotations

from typing import Any

import pytest

from custody.clock import FakeClock
from server.app import RunningServer
from tests.helpers.device import SimDevice
from tests.integration.server.conftest import Api

pytestmark = pytest.mark.integration

UNITS = [("east", "East bureau", "bureau", None), ("east-a", "East section A", "section", "east"),
         ("east-b", "East section B", "section", "east"), ("east-a-1", "Team 1", "team", "east-a"),
         ("west", "West bureau", "bureau", None), ("west-a", "West section A", "section", "west")]

#: Evidence routes that name a device: each is refused outside the caller's units.
DEVICE_ROUTES = ["/api/v1/devices/{d}/entries", "/api/v1/devices/{d}/entries/0"]
FLEET_ROUTES = ["/api/v1/devices/{d}", "/api/v1/devices/{d}/states", "/api/v1/devices/{d}/assignments"]
#: Who reads which of them (routes.py), for the roles that can be scoped to a unit.
READS: dict[str, list[str]] = {
    "case_handler": DEVICE_ROUTES, "legal_reviewer": DEVICE_ROUTES,
    "supervisor": DEVICE_ROUTES + FLEET_ROUTES, "auditor": DEVICE_ROUTES + FLEET_ROUTES,
    "device_admin": DEVICE_ROUTES + FLEET_ROUTES,
}


class World:
    """The two-bureau scenario."""

    def __init__(self, admin: Api, clock: FakeClock) -> None:
        self.admin, self.clock = admin, clock
        self.devices: dict[str, SimDevice] = {}
        self.cases: dict[str, int] = {}

    async def build(self) -> None:
        for uid, name, kind, parent in UNITS:
            await self.admin.ok("POST", "/api/v1/units", {"id": uid, "name": name, "kind": kind, "parent_id": parent})
        for unit in ("east-a-1", "east-b", "west-a"):
            dev = await self.admin.enroll(self.clock)
            await dev.announce(dev.event("start"))
            await self.place("device", dev.device_id, unit)
            self.devices[unit] = dev

    async def place(self, kind: str, rid: Any, unit: str | None, scope: str | None = None) -> None:
        body = {"kind": kind, "id": str(rid), "unit_id": unit}
        if scope:
            body["scope_unit_id"] = scope
        await self.admin.ok("POST", "/api/v1/placements", body)

    async def person(self, name: str, role: str, unit: str, scope: str | None = None) -> Api:
        api = await self.admin.user(name, role)
        await self.place("user", name, unit, scope)
        return api

    async def denials(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = (await self.admin.ok("GET", "/api/v1/findings?code=access.denied&limit=1000"))[
            "findings"]
        return found


@pytest.fixture
async def world(server: RunningServer, admin: Api, clock: FakeClock) -> World:
    w = World(admin, clock)
    await w.build()
    return w


def _path(template: str, dev: SimDevice) -> str:
    return template.replace("{d}", dev.device_id)


@pytest.mark.parametrize("role", sorted(READS))
async def test_role_by_scope_by_endpoint(world: World, role: str) -> None:
    """In its section a role reads as the role matrix says; outside, every read is refused and logged."""
    api = await world.person(f"p-{role.replace('_', '-')}", role, "east-a")
    own, other_section, other_bureau = (world.devices[u] for u in ("east-a-1", "east-b", "west-a"))
    before = len(await world.denials())
    failures, refused = [], 0
    for template in READS[role]:
        reply = await api.call("GET", _path(template, own))
        if reply.status in (401, 403):
            failures.append(f"{role} GET {template} in scope: {reply.status} {reply.code}")
        for dev in (other_section, other_bureau):
            reply = await api.call("GET", _path(template, dev))
            refused += 1
            if reply.status != 403 or reply.code != "out_of_scope":
                failures.append(f"{role} GET {template} out of scope: {reply.status} {reply.code}")
            assert reply.headers["Content-Type"].startswith("application/problem+json")
    assert not failures, "\n".join(failures)
    denials = (await world.denials())[before:]
    assert len(denials) == refused
    assert {d["evidence"]["actor"] for d in denials} == {f"user:p-{role.replace('_', '-')}"}


async def test_case_handler_cannot_see_or_link_another_sections_footage(world: World) -> None:
    handler = await world.person("h-east-a", "case_handler", "east-a")
    other = await world.person("h-east-b", "case_handler", "east-b")
    mine = (await handler.ok("POST", "/api/v1/cases", {"number": "E-A-1", "category": "penalty", "title": "t"}))
    theirs = (await other.ok("POST", "/api/v1/cases", {"number": "E-B-1", "category": "penalty", "title": "t"}))
    assert mine["unit_id"] == "east-a" and theirs["unit_id"] == "east-b"
    await handler.ok("POST", f"/api/v1/cases/{mine['id']}/steps", {"id": "ea-1", "stage": "filing",
                                                                    "activity": "other"})
    own, foreign = world.devices["east-a-1"], world.devices["east-b"]
    before = len(await world.denials())

    # Lists are filtered: another section's cases, devices and findings are simply absent.
    listed = {c["id"] for c in (await handler.ok("GET", "/api/v1/cases"))["cases"]}
    assert listed == {mine["id"]}
    # A single item outside the scope is refused with out_of_scope, and logged.
    attempts = [
        ("GET", f"/api/v1/cases/{theirs['id']}", None),
        ("PATCH", f"/api/v1/cases/{theirs['id']}", {"title": "mine now"}),
        ("GET", f"/api/v1/devices/{foreign.device_id}/entries", None),
        ("GET", f"/api/v1/findings?device_id={foreign.device_id}", None),
        ("POST", f"/api/v1/cases/{mine['id']}/steps/ea-1/links",
         {"device_id": foreign.device_id, "recording_id": foreign.recording_id, "reason": "r"}),
        ("GET", "/api/v1/audit", None),
        # Stream and export another section's footage: refused before any byte is read or any grant minted.
        ("GET", f"/api/v1/devices/{foreign.device_id}/entries/1/footage?reason=look", None),
        ("GET", f"/api/v1/devices/{foreign.device_id}/recordings/{foreign.recording_id}/mp4?reason=look", None),
        ("POST", "/api/v1/exports", {"reason": "court", "recordings": f"{foreign.device_id}/{foreign.recording_id}"}),
        ("POST", "/api/v1/exports", {"reason": "court", "case_id": theirs["id"]}),
    ]
    for method, path, body in attempts:
        reply = await handler.call(method, path, body)
        assert (reply.status, reply.code) == (403, "out_of_scope"), (method, path, reply.status, reply.body)
    denials = (await world.denials())[before:]
    assert len(denials) == len(attempts)
    assert all(d["evidence"]["actor"] == "user:h-east-a" for d in denials)
    assert {d["evidence"]["kind"] for d in denials} == {"case", "device", "audit"}
    # No access was opened for the refused reads: the access log has nothing of the foreign device.
    assert (await world.admin.ok("GET", f"/api/v1/access-log?device_id={foreign.device_id}"))["events"] == []

    # Inside the section the same calls work.
    await handler.ok("POST", f"/api/v1/cases/{mine['id']}/steps/ea-1/links",
                     {"device_id": own.device_id, "recording_id": own.recording_id, "reason": "r"}, status=201)
    await handler.ok("GET", f"/api/v1/audit?case_id={mine['id']}")


async def test_wider_scope_and_admin(world: World, admin: Api) -> None:
    sup = await world.person("sup-east", "supervisor", "east-a", scope="east")
    seen = {d["id"] for d in (await sup.ok("GET", "/api/v1/devices"))["devices"]}
    assert seen == {world.devices["east-a-1"].device_id, world.devices["east-b"].device_id}
    fleet = {d["device_id"] for d in (await sup.ok("GET", "/api/v1/fleet"))["devices"]}
    assert fleet == seen
    assert (await sup.ok("GET", "/api/v1/scope"))["root"] == "east"
    reply = await sup.call("GET", f"/api/v1/devices/{world.devices['west-a'].device_id}")
    assert (reply.status, reply.code) == (403, "out_of_scope")
    everything = {d["id"] for d in (await admin.ok("GET", "/api/v1/devices"))["devices"]}
    assert everything >= {d.device_id for d in world.devices.values()}
    units = [u["id"] for u in (await sup.ok("GET", "/api/v1/units"))["units"]]
    assert units == ["east", "east-a", "east-a-1", "east-b"]


async def test_a_scoped_device_admin_adds_officers_to_their_unit_only(world: World, clock: FakeClock) -> None:
    dadmin = await world.person("da-west", "device_admin", "west-a")
    await dadmin.ok("POST", "/api/v1/officers", {"id": "off-w", "name": "W", "unit": "West A", "cert_number": "W-1",
                                                 "cert_expires_ms": clock.now_ms() + 86_400_000})
    assert [o["id"] for o in (await dadmin.ok("GET", "/api/v1/officers"))["officers"]] == ["off-w"]
    east = world.devices["east-b"].device_id
    reply = await dadmin.call("POST", f"/api/v1/devices/{east}/assignments", {"officer_id": "off-w"})
    assert (reply.status, reply.code) == (403, "out_of_scope")
    west = world.devices["west-a"].device_id
    await dadmin.ok("POST", f"/api/v1/devices/{west}/assignments", {"officer_id": "off-w"}, status=201)
    # A device enrolled with this device admin's token joins their unit.
    new = await dadmin.enroll(clock)
    assert new.device_id in {d["id"] for d in (await dadmin.ok("GET", "/api/v1/devices"))["devices"]}
    assert (await world.admin.ok("GET", "/api/v1/devices"))  # still visible agency-wide


async def test_unit_tree_shape_is_enforced(world: World) -> None:
    reply = await world.admin.call("POST", "/api/v1/units", {"id": "t-x", "name": "T", "kind": "team",
                                                              "parent_id": "east"})
    assert (reply.status, reply.code) == (422, "bad_unit_parent")
