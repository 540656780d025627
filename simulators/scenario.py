"""Scenario files: a working day of officers, devices, cases, recordings, faults and attacks, run for real.

A scenario is YAML::

    name: a day at the market bureau
    speed: 120                  # simulated seconds per real second
    start: "2026-11-23T08:00:00+08:00"
    officers:
      - {id: "110105", name: 张伟, unit: 市场监管一科, cert_number: ZF-0001, cert_expires: "2027-12-31"}
    devices:
      - {name: cam-1, officer: "110105"}          # replay: true (default) or false (real encoding)
    timeline:                                      # entries run at their time; a device does one thing at a time
      - {at: "08:05", do: record, device: cam-1, seconds: 300, step: "case-7:s1"}
      - {at: "09:00", do: fault, kind: network_drop, device: cam-1, seconds: 600}
      - {at: "09:05", do: record, device: cam-1, seconds: 120}
      - {at: "10:00", do: attack, kind: forged_command, device: cam-1}

``do`` is one of record, start, stop, select_step, fault (network_drop, power_loss, disk_full,
clock_skew), attack (tampered_chunk, replayed_entry, forged_command, revoked_device_still_sending)
and wait. ``cases`` (number, category, title, major, steps) are created through the server's case
API. Unknown keys are errors that name their place in the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import date, datetime
from datetime import time as dtime
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from agent.client import Refused, ServerClient, Unreachable
from agent.errors import AgentError
from custody.clock import Clock, ScaledClock
from protocol.errors import CustodyError
from protocol.keys import SigningKey
from protocol.messages import Command
from simulators.fleet import DeviceSpec, SimulatedDevice

log = logging.getLogger(__name__)

ACTIONS = {"record", "start", "stop", "select_step", "fault", "attack", "wait"}
FAULTS = {"network_drop", "uploads_blocked", "power_loss", "disk_full", "clock_skew"}
ATTACKS = {"tampered_chunk", "replayed_entry", "forged_command", "revoked_device_still_sending"}


class ScenarioError(CustodyError):
    """A scenario file that cannot be run as written."""

    code = "bad_scenario"


def _check_keys(where: str, obj: Any, allowed: set[str], required: frozenset[str] | set[str] = frozenset()
                ) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise ScenarioError(f"{where}: expected a mapping")
    unknown = set(obj) - allowed
    if unknown:
        raise ScenarioError(
            f"{where}: unknown key {', '.join(sorted(unknown))} (allowed: {', '.join(sorted(allowed))})"
        )
    missing = required - set(obj)
    if missing:
        raise ScenarioError(f"{where}: missing {', '.join(sorted(missing))}")
    return obj


@dataclass(slots=True)
class Step:
    """One timeline entry."""

    at_s: float
    do: str
    device: str | None
    args: dict[str, Any]


@dataclass(slots=True)
class Scenario:
    """A parsed scenario."""

    name: str
    speed: float
    start: datetime
    officers: list[dict[str, Any]]
    devices: list[dict[str, Any]]
    cases: list[dict[str, Any]]
    timeline: list[Step]

    @classmethod
    def load(cls, path: Path) -> Scenario:
        """Parse and check a scenario file."""
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ScenarioError(f"{path}: not YAML: {exc}") from None
        return cls.parse(doc, str(path))

    @classmethod
    def parse(cls, doc: Any, where: str = "scenario") -> Scenario:
        """Check a loaded document."""
        top = _check_keys(where, doc, {"name", "speed", "start", "officers", "devices", "cases", "timeline"},
                          {"devices", "timeline"})
        start = top.get("start", "2026-11-23T08:00:00+08:00")
        try:
            start_dt = datetime.fromisoformat(str(start))
        except ValueError:
            raise ScenarioError(f"{where}.start: {start!r} is not an ISO date-time") from None
        if start_dt.tzinfo is None:
            raise ScenarioError(f"{where}.start: give a UTC offset, e.g. 2026-11-23T08:00:00+08:00")
        speed = float(top.get("speed", 60))
        if not 1 <= speed <= 2000:
            raise ScenarioError(f"{where}.speed: must be 1 to 2000")
        officers = [
            _check_keys(f"{where}.officers[{i}]", o, {"id", "name", "unit", "cert_number", "cert_expires"},
                        {"id", "name"})
            for i, o in enumerate(top.get("officers") or [])
        ]
        devices = [
            _check_keys(f"{where}.devices[{i}]", d, {"name", "officer", "replay"}, {"name"})
            for i, d in enumerate(top["devices"])
        ]
        names = {d["name"] for d in devices}
        cases = [
            _check_keys(f"{where}.cases[{i}]", c, {"number", "category", "title", "major", "parties", "steps"},
                        {"number", "category"})
            for i, c in enumerate(top.get("cases") or [])
        ]
        timeline = []
        for i, raw in enumerate(top["timeline"]):
            w = f"{where}.timeline[{i}]"
            entry = _check_keys(w, raw, {"at", "do", "device", "kind", "seconds", "step", "offset_s"}, {"at", "do"})
            if entry["do"] not in ACTIONS:
                raise ScenarioError(f"{w}.do: {entry['do']!r} is not one of {', '.join(sorted(ACTIONS))}")
            if entry["do"] == "fault" and entry.get("kind") not in FAULTS:
                raise ScenarioError(f"{w}.kind: fault kinds are {', '.join(sorted(FAULTS))}")
            if entry["do"] == "attack" and entry.get("kind") not in ATTACKS:
                raise ScenarioError(f"{w}.kind: attack kinds are {', '.join(sorted(ATTACKS))}")
            device = entry.get("device")
            if entry["do"] != "wait" and device not in names:
                raise ScenarioError(f"{w}.device: {device!r} is not a device of this scenario")
            args = {k: v for k, v in entry.items() if k not in ("at", "do", "device")}
            timeline.append(Step(_offset(entry["at"], start_dt, w), entry["do"], device, args))
        timeline.sort(key=lambda s: s.at_s)
        return cls(str(top.get("name", where)), speed, start_dt, officers, devices, cases, timeline)


def _offset(at: Any, start: datetime, where: str) -> float:
    text = str(at)
    if text.startswith("+"):
        return float(text[1:])
    try:
        t = dtime.fromisoformat(text)
    except ValueError:
        raise ScenarioError(f"{where}.at: {text!r} is not HH:MM[:SS] or +SECONDS") from None
    moment = datetime.combine(start.date(), t, start.tzinfo)
    seconds = (moment - start).total_seconds()
    if seconds < 0:
        raise ScenarioError(f"{where}.at: {text} is before the scenario's start")
    return seconds


class SkewedClock:
    """A device's clock: the scenario's clock plus an offset a clock-skew fault can change."""

    def __init__(self, base: Clock) -> None:
        self.base = base
        self.offset_ms = 0

    def now_ms(self) -> int:
        """Base time plus the skew."""
        return self.base.now_ms() + self.offset_ms

    def monotonic(self) -> float:
        """Unaffected by skew."""
        return self.base.monotonic()

    async def sleep(self, seconds: float) -> None:
        """Unaffected by skew."""
        await self.base.sleep(seconds)


@dataclass(slots=True)
class Outcome:
    """What happened, for the report and for tests."""

    recordings: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    attacks: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    #: Per device at the end: id, chain head, entries still held, whether it was connected.
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)


class AdminApi:
    """The few admin calls a scenario needs, over HTTP with a bearer token."""

    def __init__(self, url: str, token: str, session: aiohttp.ClientSession) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.session = session

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        """One call; :class:`ScenarioError` on a refusal."""
        async with self.session.request(method, self.url + path, json=body,
                                        headers={"Authorization": f"Bearer {self.token}"}) as r:
            data = await r.json(content_type=None) if r.content_length != 0 else None
            if r.status >= 400:
                detail = data.get("detail") if isinstance(data, dict) else data
                raise ScenarioError(f"{method} {path}: {r.status} {detail}")
            return data


class ScenarioRunner:
    """Runs a scenario against a server (given by URL and an admin token)."""

    def __init__(self, scenario: Scenario, root: Path, server_url: str, admin_token: str, *,
                 clock: Clock | None = None, mqtt: bool = True) -> None:
        self.scenario = scenario
        self.root = root
        self.server_url = server_url
        self.admin_token = admin_token
        start_ms = int(scenario.start.timestamp() * 1000)
        self.clock = clock or ScaledClock(scenario.speed, start_ms)
        self.mqtt = mqtt
        self.devices: dict[str, SimulatedDevice] = {}
        self.outcome = Outcome()
        self._busy: dict[str, asyncio.Lock] = {}
        self._steps: list[tuple[int, str, int | None]] = []

    async def run(self) -> Outcome:
        """Set up officers, devices and cases, then play the timeline."""
        async with aiohttp.ClientSession() as session:
            api = AdminApi(self.server_url, self.admin_token, session)
            await self._setup(api, session)
            try:
                t0 = self.clock.monotonic()
                tasks: list[asyncio.Task[None]] = []
                lasting: list[asyncio.Task[None]] = []
                for step in self.scenario.timeline:
                    delay = step.at_s - (self.clock.monotonic() - t0)
                    if delay > 0:
                        await self.clock.sleep(delay)
                    if step.do == "fault" and step.device in self.devices:
                        # A fault takes effect at its moment (before the timeline moves on); a lasting
                        # one ends later on its own, or never if it outlasts the day.
                        end = await self._begin_fault(self.devices[step.device], step)
                        if end is not None:
                            lasting.append(asyncio.create_task(end))
                        continue
                    tasks.append(asyncio.create_task(self._do(api, step)))
                await asyncio.gather(*tasks)
                # A fault that outlasts the timeline (a device that never comes back) stays as it is.
                for task in lasting:
                    if not task.done():
                        task.cancel()
                await asyncio.gather(*lasting, return_exceptions=True)
                log.info("scenario: timeline done")
                await self._close_steps(api)
                for dev in self.devices.values():
                    up = dev.agent.uploader  # None while a device is cut off: its footage waits
                    if up is not None:
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(60):
                                await up.drained()
            finally:
                log.info("scenario: deliveries done; closing devices")
                for name, dev in self.devices.items():
                    with contextlib.suppress(Exception):
                        self.outcome.devices[name] = {
                            "device_id": dev.device_id, "head_seq": dev.agent.buffer.head_seq,
                            "held": len(dev.agent.buffer.entries()), "online": dev.agent.uploader is not None}
                    with contextlib.suppress(Exception):
                        await dev.close()
                log.info("scenario: devices closed")
        return self.outcome

    async def _setup(self, api: AdminApi, session: aiohttp.ClientSession) -> None:
        for o in self.scenario.officers:
            expires = o.get("cert_expires", "2030-12-31")
            exp_ms = int(datetime.combine(date.fromisoformat(str(expires)), dtime(23, 59, 59),
                                          self.scenario.start.tzinfo).timestamp() * 1000)
            await api.call("POST", "/api/v1/officers", {
                "id": str(o["id"]), "name": o["name"], "unit": o.get("unit", "unit"),
                "cert_number": o.get("cert_number", f"CERT-{o['id']}"), "cert_expires_ms": exp_ms})
        for d in self.scenario.devices:
            spec = DeviceSpec(d["name"], replay=bool(d.get("replay", True)))
            dev = SimulatedDevice(spec, self.root, SkewedClock(self.clock), session=session)
            token = (await api.call("POST", "/api/v1/enrollment-tokens", {}))["token"]
            await dev.open(token, mqtt=self.mqtt)
            if d.get("officer"):
                with contextlib.suppress(ScenarioError):  # an expired certificate is refused: a seeded finding
                    await api.call("POST", f"/api/v1/devices/{dev.device_id}/assignments",
                                   {"officer_id": str(d["officer"])})
                dev.agent.state.officer_id = str(d["officer"])
            self.devices[d["name"]] = dev
            self._busy[d["name"]] = asyncio.Lock()
        if self.scenario.cases:
            handler = "handler-" + secrets.token_hex(3)
            await api.call("POST", "/api/v1/users", {"name": handler, "role": "case_handler"})
        for i, c in enumerate(self.scenario.cases):
            w = f"cases[{i}]"
            body = {k: v for k, v in c.items() if k != "steps"}
            body.setdefault("title", str(c["number"]))
            body["handler"] = handler
            created = await api.call("POST", "/api/v1/cases", body)
            case_id = created.get("id", created.get("case", {}).get("id")) if isinstance(created, dict) else None
            if case_id is None:
                raise ScenarioError(f"{w}: the server did not say the new case's id")
            for j, st in enumerate(c.get("steps") or []):
                sw = f"{w}.steps[{j}]"
                step_body = {k: v for k, v in _check_keys(
                    sw, st, {"id", "stage", "activity", "officers", "title", "location", "window"},
                    {"id", "stage", "activity"}).items() if k != "window"}
                step_body["officers"] = [str(o) for o in st.get("officers", [])]
                if "window" in st:
                    lo, hi = (int(self.scenario.start.timestamp() * 1000 + _offset(t, self.scenario.start, sw) * 1000)
                              for t in st["window"])
                    step_body.update(planned_start_ms=lo, planned_end_ms=hi, actual_start_ms=lo, actual_end_ms=hi)
                await api.call("POST", f"/api/v1/cases/{case_id}/steps", step_body)
                self._steps.append((case_id, str(st["id"]), step_body.get("actual_end_ms")))

    async def _close_steps(self, api: AdminApi) -> None:
        """Steps whose window has passed were carried out: mark them completed, as a handler would."""
        now = self.clock.now_ms()
        for case_id, step_id, end_ms in self._steps:
            if end_ms is not None and end_ms <= now:
                for status in ("in_progress", "completed"):
                    await api.call("PATCH", f"/api/v1/cases/{case_id}/steps/{step_id}", {"status": status})

    async def _do(self, api: AdminApi, step: Step) -> None:
        dev = self.devices.get(step.device or "")
        log.info("scenario +%.0fs: %s %s on %s", step.at_s, step.do, step.args.get("kind", ""), step.device)
        try:
            if step.do == "wait":
                await self.clock.sleep(float(step.args.get("seconds", 0)))
                return
            assert dev is not None and step.device is not None
            async with self._busy[step.device]:
                await self._device_action(api, dev, step)
        except (CustodyError, OSError) as exc:
            msg = f"{step.do} {step.args.get('kind', '')} on {step.device} at +{step.at_s:.0f}s: {exc}"
            log.warning("scenario: %s", msg)
            self.outcome.errors.append(msg)

    async def _device_action(self, api: AdminApi, dev: SimulatedDevice, step: Step) -> None:
        agent = dev.agent
        if "step" in step.args:
            agent.state.case_step = step.args["step"]
        if step.do == "select_step":
            return
        try:
            if step.do == "record":
                await dev.record(float(step.args.get("seconds", 60)), reason="scenario")
                self.outcome.recordings += 1
            elif step.do == "start":
                await agent.start_recording(reason="scenario")
                self.outcome.recordings += 1
            elif step.do == "stop":
                await agent.stop_recording(reason="scenario")
            elif step.do == "attack":
                await self._attack(api, dev, step)
        except CustodyError:
            if not agent.buffer.abandoned:
                raise
            # A power cut came while the step was still under way (a start waits for the recorder,
            # which may lag on a loaded machine): the cut is the outcome, not a failure of the step.
            # Recovery on the next start closes a recording it cut as interrupted.
            log.info("scenario: %s on %s at +%.0fs was cut by a power loss", step.do, step.device, step.at_s)

    async def _begin_fault(self, dev: SimulatedDevice, step: Step) -> Coroutine[Any, Any, None] | None:
        """Start a fault now; return what ends it after its duration (None for one that is instant)."""
        kind, seconds = step.args["kind"], float(step.args.get("seconds", 60))
        self.outcome.faults[kind] = self.outcome.faults.get(kind, 0) + 1
        log.info("scenario +%.0fs: fault %s on %s", step.at_s, kind, step.device)
        agent = dev.agent

        async def after(restore: Callable[[], Awaitable[None]]) -> None:
            await self.clock.sleep(seconds)
            try:
                await restore()
            except (CustodyError, OSError) as exc:
                self.outcome.errors.append(f"ending {kind} on {step.device}: {exc}")

        if kind == "network_drop":
            await agent.disconnect()
            return after(lambda: agent.connect(mqtt=self.mqtt))
        if kind == "uploads_blocked":
            uploader = agent.uploader
            if uploader is None:
                return None
            uploader.hold_uploads = True

            async def release() -> None:
                uploader.release_uploads()

            return after(release)
        if kind == "power_loss":
            await agent.crash()
            fresh = SimulatedDevice(dev.spec, self.root, agent.clock, session=agent.session)
            fresh.agent.state = agent.state
            dev.agent = fresh.agent
            await dev.open(None, mqtt=self.mqtt)  # recovery closes the cut recording as interrupted
            return None
        if kind == "disk_full":
            old = agent.buffer.reserve_bytes
            agent.buffer.reserve_bytes = 1 << 62

            async def room() -> None:
                agent.buffer.reserve_bytes = old
                agent.buffer.alarms.discard("storage_full")
                agent.alarms.discard("storage_full")

            return after(room)
        if kind == "clock_skew" and isinstance(agent.clock, SkewedClock):
            agent.clock.offset_ms = int(float(step.args.get("offset_s", 120)) * 1000)
        return None

    async def _attack(self, api: AdminApi, dev: SimulatedDevice, step: Step) -> None:
        kind = step.args["kind"]
        agent = dev.agent
        client = ServerClient(self.server_url, agent.key, agent.clock, device_id=agent.device_id)
        try:
            if kind == "tampered_chunk":
                # Record a chunk while offline, then offer the server other bytes than its signed hash says.
                await agent.disconnect()
                await dev.record(6, reason="attack-setup")
                outcome = "not attempted: no chunk held"
                for e in agent.buffer.entries():
                    if e.kind == "chunk":
                        media, envelope = agent.buffer.read(e.seq)
                        answer = await client.announce(envelope)
                        if answer.get("upload"):
                            bad = bytearray(media)
                            bad[len(bad) // 2] ^= 0xFF
                            try:
                                await client.upload(answer["upload"], bytes(bad))
                                await client.verify(e.seq)
                                outcome = "ACCEPTED (should not happen)"
                            except Refused as exc:
                                outcome = f"refused: {exc.code}"
                        break
                await agent.connect(mqtt=self.mqtt)
                self.outcome.attacks[kind] = outcome
            elif kind == "replayed_entry":
                await dev.record(6, reason="attack-setup")
                up = agent.uploader
                if up is not None:
                    async with asyncio.timeout(60):
                        await up.drained()
                head = agent.buffer.head_seq or 0
                answer = await client.entry(max(0, head - 1))
                self.outcome.attacks[kind] = f"server already holds seq {answer.get('seq')}: replay is idempotent"
            elif kind == "forged_command":
                forger = SigningKey.generate()
                now = agent.clock.now_ms()
                cmd = Command(1, "forged-" + secrets.token_hex(4), agent.device_id, "stop", now, now + 60_000,
                              secrets.token_hex(16), {})
                verdict = agent.gate.check(cmd.sign(forger).raw)
                self.outcome.attacks[kind] = (f"refused: {verdict.ack.reason}" if verdict.ack is not None
                                              else "ACCEPTED (should not happen)")
            elif kind == "revoked_device_still_sending":
                await api.call("POST", f"/api/v1/devices/{agent.device_id}/state",
                               {"state": "revoked", "reason": "scenario: reported stolen"})
                await dev.record(float(step.args.get("seconds", 30)), reason="after-revocation")
                self.outcome.attacks[kind] = "recorded after revocation: stored and marked untrusted"
        except (Unreachable, AgentError) as exc:
            self.outcome.attacks[kind] = f"error: {exc}"
        finally:
            await client.close()


def wall_seconds(scenario: Scenario) -> float:
    """Roughly how long the scenario takes in real seconds."""
    last = max((s.at_s + float(s.args.get("seconds", 0)) for s in scenario.timeline), default=0.0)
    return last / scenario.speed

