"""``custody sim ...``: run scenario files with simulated devices."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``custody sim``."""
    sim = sub.add_parser("sim", help="simulated devices and fleets",
                         description="Run scenario files: officers, devices, cases, recordings, faults and attacks.")
    ssub = sim.add_subparsers(dest="sim_command", metavar="COMMAND")
    ssub.required = True
    p = ssub.add_parser("run", help="run a scenario file against a server (or a server it starts itself)")
    p.add_argument("file", type=Path, help="scenario YAML (see simulators/scenarios/)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--server", help="server API URL (with --token)")
    where.add_argument("--data-dir", type=Path, help="data dir of a running local server (finds its URL and token)")
    p.add_argument("--token", help="admin API token for --server")
    p.add_argument("--work-dir", type=Path, help="where the simulated devices keep their data (default: temp)")
    p.add_argument("--speed", type=float, help="override the scenario's time compression (simulated s per s)")
    p.add_argument("--no-mqtt", action="store_true", help="devices deliver over HTTP only")
    p.add_argument("--json", action="store_true", help="print the outcome as JSON")
    p.set_defaults(handler=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    """``custody sim run``."""
    return asyncio.run(_run(args))


async def _run(args: argparse.Namespace) -> int:
    from simulators.scenario import Scenario, ScenarioError, ScenarioRunner

    scenario = Scenario.load(args.file)
    if args.speed:
        scenario.speed = args.speed
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="custody-sim-"))
    server: Any = None
    from custody.clock import ScaledClock

    if args.server or args.data_dir:
        # Devices sign requests with their clock; another process's server keeps real time, so a
        # compressed day would fall outside its freshness window. Real speed, starting now.
        if scenario.speed != 1:
            print(f"an external server keeps real time: running at 1x, not {scenario.speed:g}x", file=sys.stderr)
        clock = ScaledClock(1.0)
    else:
        clock = ScaledClock(scenario.speed, int(scenario.start.timestamp() * 1000))
    if args.server:
        if not args.token:
            raise ScenarioError("--server needs --token (an admin or device_admin token)")
        url, token = args.server, args.token
    elif args.data_dir:
        from server.client import resolve_client

        client = resolve_client(None, None, str(args.data_dir), None)
        url, token = client.url, client.token
    else:
        from server.app import start_server
        from server.config import load_config

        config = load_config(None, env={}, overrides={"data_dir": str(work / "server"), "http.port": 0,
                                                      "mqtt.embedded_port": 0})
        server = await start_server(config, clock)
        url, token = server.url, server.services.datadir.admin_token.read_text().strip()
        print(f"started a server at {url} (data in {work / 'server'})", file=sys.stderr)
    try:
        print(f"scenario {scenario.name!r}: {len(scenario.devices)} devices, {len(scenario.timeline)} timeline "
              f"entries, {scenario.speed:g}x", file=sys.stderr)
        outcome = await ScenarioRunner(scenario, work / "devices", url, token, clock=clock,
                                       mqtt=not args.no_mqtt).run()
    finally:
        if server is not None:
            await server.stop()
    result = {"recordings": outcome.recordings, "faults": outcome.faults, "attacks": outcome.attacks,
              "errors": outcome.errors}
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=1))
    else:
        print(f"recordings: {outcome.recordings}")
        for kind, n in sorted(outcome.faults.items()):
            print(f"fault {kind}: {n}")
        for kind, what in sorted(outcome.attacks.items()):
            print(f"attack {kind}: {what}")
        for err in outcome.errors:
            print(f"error: {err}")
    return 0 if not outcome.errors else 1
