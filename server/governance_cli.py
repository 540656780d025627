"""``custody stats``: monthly statistics and the yearly public summary, through the HTTP API only.

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
    """Add ``stats``."""
    from server.cases_cli import _connection

    st = sub.add_parser("stats", help="statistics per unit, officer, device and month (through the API)",
                        description="Recordings, hours, steps requiring recording and the share covered, findings "
                                    "by code, upload delay percentiles and device uptime, per month; or the yearly "
                                    "public summary (aggregates only) as a file ready to publish.")
    _connection(st)
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
    from server.client import resolve_client
    from server.services.stats import to_csv

    client = resolve_client(args.server, args.token, args.data_dir, args.cacert)
    if args.public_summary is not None:
        text = json.dumps(client.call("GET", f"/api/v1/stats/public/{args.public_summary}"), ensure_ascii=False,
                          indent=2) + "\n"
    else:
        query = _query(dimension=args.dimension, since=parse_time(args.since) if args.since else None,
                       until=parse_time(args.until) if args.until else None)
        rows = client.call("GET", "/api/v1/stats" + query)["rows"]
        as_json = getattr(args, "as_json", False) or args.format == "json"
        text = json.dumps(rows, ensure_ascii=False, indent=2) + "\n" if as_json else to_csv(rows)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0
