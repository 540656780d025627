"""The demo: the whole system on embedded defaults, a working day compressed into a minute or two.

1. The chain: a device key signs a recording's entries; the chain verifies; a tampered chain and
   one with a chunk deleted are refused, each with the step and reason that catches it.
2. The day: a server (SQLite, local write-once store) and three officers' simulated devices run
   the scripted day in simulators/scenarios/demo-day.yaml — recordings uploaded while recording,
   a network drop, a power cut mid-recording, a forged command — and what the server then holds
   is summarised with its findings.
Then the server keeps running (until Ctrl-C) so a person can look around, unless ``--exit``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp

from custody.clock import ScaledClock
from protocol.findings import lookup

SCENARIO = Path(__file__).parent / "scenarios" / "demo-day.yaml"


def say(text: str = "") -> None:
    """Print a demo line (stdout, flushed: the demo is watched as it runs)."""
    print(text, flush=True)


async def run_demo(args: argparse.Namespace) -> int:
    """Run the demo; 0 when every outcome is the expected one."""
    from custody.demo import chain_demo
    from server.app import start_server
    from server.config import load_config
    from simulators.scenario import Scenario, ScenarioRunner

    say("== 1. The chain of signed entries")
    ok = chain_demo(chunks=4)

    say("\n== 2. A working day on embedded defaults (SQLite, local write-once footage store)")
    scenario = Scenario.load(SCENARIO)
    clock = ScaledClock(args.speed or scenario.speed, int(scenario.start.timestamp() * 1000))
    data_dir: Path = args.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    # The embedded broker on a free port: a broker already on 1883 (another demo, a system Mosquitto)
    # must not stop the demo.
    config = load_config(None, env={}, overrides={"data_dir": str(data_dir / "server"), "http.port": args.port,
                                                  "mqtt.embedded_port": 0})
    server = await start_server(config, clock)
    admin_token = server.services.datadir.admin_token.read_text().strip()
    try:
        say(f"dashboard: {server.url}/ui/   sign-in token: {admin_token}")
        say(f"data:   {data_dir}   (inspect later: start `custody server --data-dir {data_dir / 'server'}`, "
            f"then `custody audit --data-dir {data_dir / 'server'}`)")
        say(f"day:    {scenario.name}, {len(scenario.devices)} devices, {len(scenario.timeline)} events, "
            f"{clock.speed:g}x real time")
        runner = ScenarioRunner(scenario, data_dir / "devices", server.url, admin_token, clock=clock, mqtt=True)
        outcome = await runner.run()
        say(f"\nrecordings: {outcome.recordings}; faults: {outcome.faults}")
        for kind, what in outcome.attacks.items():
            say(f"attack {kind}: {what}")
        for err in outcome.errors:
            say(f"scenario error: {err}")
            ok = False
        say("\nper device: entries on the server, verified, trusted")
        for name, info in outcome.devices.items():
            entries = await server.services.ingest.list_entries(info["device_id"], 0, 100_000)
            verified = sum(1 for e in entries if e["state"] == "verified")
            untrusted = sum(1 for e in entries if not e["trusted"])
            head = info["head_seq"]
            complete = head is not None and [e["seq"] for e in entries] == list(range(head + 1))
            # A device the day left offline still holds its footage: the server must not claim it.
            offline = not info["online"]
            ok = ok and (complete or offline) and (verified == len(entries) or offline)
            if complete and verified < len(entries):
                state = f"every entry announced, {len(entries) - verified} chunks not uploaded yet (device offline)"
            elif complete:
                state = "every entry delivered and verified"
            elif offline:
                state = f"offline, {info['held']} entries still on the device"
            else:
                state = "INCOMPLETE"
            say(f"  {name:10s} {info['device_id']}  {len(entries):4d} entries, {verified:4d} verified, "
                f"{untrusted} untrusted; {state}")
        audit = await _get(server.url, admin_token, "/api/v1/audit?format=json")
        by_code: dict[str, int] = audit.get("summary", {}).get("by_code", {})
        say(f"\naudit (custody audit --data-dir {data_dir / 'server'}): {sum(by_code.values())} findings")
        for code, n in sorted(by_code.items(), key=lambda kv: (-lookup(kv[0]).severity, kv[0])):
            fc = lookup(code)
            say(f"  {n:4d}  {fc.severity.label:8s} {code:32s} {fc.title_zh} / {fc.title_en}")
        # The omissions the day seeded (simulators/scenarios/demo-day.yaml) must all be found.
        seeded = {"step.missing_footage", "step.incomplete_coverage", "officer.certificate_expired",
                  "recording.unlinked", "device.offline_with_pending"}
        missed = sorted(seeded - set(by_code))
        if missed:
            say(f"  seeded omissions NOT found: {', '.join(missed)}")
            ok = False
        else:
            say("  every seeded omission was found")
        # A court's view: export the compulsion case and verify the package offline, trusting only
        # the server's public key.
        key_info = await _get(server.url, admin_token, "/api/v1/log/key")
        key_out = Path(args.server_key_out or data_dir / "server-key.vkey")
        key_out.write_text(key_info["vkey"] + "\n")
        cases = await _get(server.url, admin_token, "/api/v1/cases")
        items = cases.get("cases", cases) if isinstance(cases, dict) else cases
        case = next(c for c in items if c["category"] == "compulsion")
        export = Path(args.export or data_dir / "case-export.zip")
        async with aiohttp.ClientSession() as s, s.post(
            server.url + "/api/v1/exports", json={"case_id": case["id"], "reason": "demo: package for the court"},
            headers={"Authorization": f"Bearer {admin_token}"},
        ) as r:
            if r.status != 200:
                raise RuntimeError(f"export refused: {r.status} {await r.text()}")
            export.write_bytes(await r.read())
        say(f"\nexport of case {case['number']}: {export} ({export.stat().st_size / 1e6:.1f} MB); "
            f"server key: {key_out}")
        from custody.verify import read_key, verify_path

        report = await asyncio.to_thread(verify_path, export, read_key(str(key_out)), [], [], True)
        say(f"custody verify {export} --server-key {key_out}")
        for line in report.lines():
            say("  " + line)
        ok = ok and report.ok
        say("  " + ("VERIFIED: every step passed" if report.ok else "NOT VERIFIED"))
        say("\nresult: " + ("every outcome as expected" if ok else "UNEXPECTED OUTCOME (see above)"))
        if not args.exit:
            say(f"\nthe server keeps running at {server.url}; Ctrl-C to stop")
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await stop.wait()
        return 0 if ok else 1
    finally:
        await server.stop()


async def _get(url: str, token: str, path: str) -> Any:
    async with aiohttp.ClientSession() as s, s.get(url + path, headers={"Authorization": f"Bearer {token}"}) as r:
        return await r.json()


def main(args: argparse.Namespace) -> int:
    """Entry from the CLI."""
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(run_demo(args))
    print("demo stopped", file=sys.stderr)
    return 0
