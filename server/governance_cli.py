"""``custody stats``, ``hold``, ``retention`` and ``unit``: through the HTTP API only.

The server's roles and scope apply to the CLI exactly as to any client; CSV is rendered here with
the same code the API uses (server/services/stats.py ``to_csv``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    Sub = argparse._SubParsersAction[argparse.ArgumentParser]


def register(sub: Sub) -> None:
    """Add ``stats``, ``hold``, ``retention`` and ``unit``."""
    from server.cases_cli import _query
    from server.cli import api_command as cmd
    from server.cli import api_options

    def group(name: str, help_: str) -> Sub:
        p = sub.add_parser(name, help=help_)
        api_options(p)
        g = p.add_subparsers(dest=f"{name}_command", metavar="COMMAND")
        g.required = True
        return g

    hs = group("hold", "legal holds on cases and recordings (through the API)")
    c = cmd(hs, "case", "put a legal hold on a case", lambda cl, a: cl.call(
        "POST", "/api/v1/holds", {"target": "case", "case_id": a.case, "reason": a.reason}))
    c.add_argument("case", type=int)
    c.add_argument("--reason", required=True)
    c = cmd(hs, "recording", "put a legal hold on a recording", lambda cl, a: cl.call(
        "POST", "/api/v1/holds", {"target": "recording", "device_id": a.device, "recording_id": a.recording,
                                  "reason": a.reason}))
    c.add_argument("device")
    c.add_argument("recording")
    c.add_argument("--reason", required=True)
    c = cmd(hs, "lift", "lift a legal hold", lambda cl, a: cl.call(
        "POST", f"/api/v1/holds/{a.hold}/lift", {"reason": a.reason}))
    c.add_argument("hold", type=int)
    c.add_argument("--reason", required=True)
    c = cmd(hs, "list", "legal holds", lambda cl, a: cl.call("GET", "/api/v1/holds" + _query(
        active="true" if a.active else None)))
    c.add_argument("--active", action="store_true", help="only holds in force")

    rs = group("retention", "retention classes and the expiry job (through the API)")
    cmd(rs, "plan", "each recording's class, end and whether it expires now",
        lambda cl, a: cl.call("GET", "/api/v1/retention"))
    cmd(rs, "run", "run the expiry job now", lambda cl, a: cl.call("POST", "/api/v1/retention/run"))

    us = group("unit", "units (bureau > section > team) and who belongs where (through the API)")
    cmd(us, "list", "units in your scope", lambda cl, a: cl.call("GET", "/api/v1/units"))
    c = cmd(us, "add", "add a unit", lambda cl, a: cl.call(
        "POST", "/api/v1/units", {"id": a.id, "name": a.name, "kind": a.kind, "parent_id": a.parent}))
    c.add_argument("id")
    c.add_argument("--name", required=True)
    c.add_argument("--kind", required=True, choices=("bureau", "section", "team"))
    c.add_argument("--parent")
    c = cmd(us, "place", "put an officer, device, user or case in a unit", lambda cl, a: cl.call(
        "POST", "/api/v1/placements", {"kind": a.kind, "id": a.id, "unit_id": a.unit, "scope_unit_id": a.scope}))
    c.add_argument("kind", choices=("officer", "device", "user", "case"))
    c.add_argument("id")
    c.add_argument("unit", nargs="?", help="the unit (omit: none, agency-wide)")
    c.add_argument("--scope", help="users only: root of a wider scope")

    st = sub.add_parser("stats", help="statistics per unit, officer, device and month (through the API)",
                        description="Recordings, hours, steps requiring recording and the share covered, findings "
                                    "by code, upload delay percentiles and device uptime, per month; or the yearly "
                                    "public summary (aggregates only) as a file ready to publish.")
    api_options(st)
    st.add_argument("--dimension", choices=("unit", "officer", "device"), default="unit")
    st.add_argument("--since", help="from this time (ISO 8601 or ms; default 12 months ago)")
    st.add_argument("--until", help="until this time (ISO 8601 or ms; default now)")
    st.add_argument("--format", choices=("csv", "json"), default="csv")
    st.add_argument("--public-summary", type=int, metavar="YEAR", help="the yearly public summary instead")
    st.add_argument("--out", help="write to this file instead of standard output")
    st.set_defaults(handler=run_stats)


def run_stats(args: argparse.Namespace) -> int:
    """``custody stats``."""
    from server.cases_cli import _query, parse_time
    from server.client import client_from_args
    from server.services.stats import to_csv

    client = client_from_args(args)
    if args.public_summary is not None:
        text = json.dumps(client.call("GET", f"/api/v1/stats/public/{args.public_summary}"), ensure_ascii=False,
                          indent=2) + "\n"
    else:
        query = _query(dimension=args.dimension, since=parse_time(args.since) if args.since else None,
                       until=parse_time(args.until) if args.until else None)
        report = client.call("GET", "/api/v1/stats" + query)
        as_json = getattr(args, "as_json", False) or args.format == "json"
        # JSON is the API's answer whole (rows and each month's totals); CSV has the rows.
        text = json.dumps(report, ensure_ascii=False, indent=2) + "\n" if as_json else to_csv(report["rows"])
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0
