"""``custody case ...``, ``custody policy ...`` and ``custody audit``: through the HTTP API only.

Like ``custody admin``, every command names its server with ``--server URL --token T``
(or CUSTODY_SERVER / CUSTODY_TOKEN) or ``--data-dir DIR``, and goes through the API, so the
server's roles, validation and records apply to the CLI exactly as to any client. Times are
given as ISO 8601 (``2026-01-01T08:30``; UTC unless an offset is written) or milliseconds.
``custody audit`` fetches the JSON report and renders text or CSV locally with the same code
the API uses (server/audit_report.py).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

if TYPE_CHECKING:
    Sub = argparse._SubParsersAction[argparse.ArgumentParser]

CATEGORIES = ("licensing", "penalty", "compulsion", "levy", "fees", "inspection")
STAGES = ("filing", "investigation", "evidence_collection", "review", "decision", "service", "execution")
ACTIVITIES = ("on_site_inspection", "random_inspection", "investigation_evidence", "evidence_preservation", "hearing",
              "administrative_compulsion", "service_of_documents", "other")
STATUSES = ("planned", "in_progress", "completed", "cancelled")


def parse_time(text: str) -> int:
    """Milliseconds since the epoch from ``text``: digits are ms, anything else ISO 8601 (UTC if no offset)."""
    from server.errors import BadRequest

    if text.isdigit():
        return int(text)
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{text!r} is neither ISO 8601 nor milliseconds since the epoch") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return int(t.timestamp() * 1000)


def register(sub: Sub) -> None:
    """Add ``case``, ``policy`` and ``audit``."""
    from server.cli import api_command as cmd
    from server.cli import api_options

    case_p = sub.add_parser("case", help="enforcement cases, steps and links of footage (through the API)",
                            description="Cases (案件), their steps and the footage linked to them.")
    api_options(case_p)
    cs = case_p.add_subparsers(dest="case_command", metavar="COMMAND")
    cs.required = True

    c = cmd(cs, "list", "list cases", lambda cl, a: cl.call("GET", "/api/v1/cases" + _query(
        handler=a.handler_name, category=a.category)))
    # dest is not "handler": that name holds the command's function (set_defaults).
    c.add_argument("--handler", dest="handler_name")
    c.add_argument("--category", choices=CATEGORIES)
    c = cmd(cs, "add", "open a case", _case_add)
    c.add_argument("number", help="case number (案号)")
    c.add_argument("--category", required=True, choices=CATEGORIES)
    c.add_argument("--title", required=True)
    c.add_argument("--party", action="append", default=[], help="a party (repeat)")
    c.add_argument("--handler", dest="handler_name", help="case handler's user name (default: you)")
    c.add_argument("--major", action="store_true", help="major decision: needs a legal reviewer's sign-off")
    c.add_argument("--unit")
    c = cmd(cs, "show", "a case with its steps and links", lambda cl, a: cl.call("GET", f"/api/v1/cases/{a.case}"))
    c.add_argument("case", type=int)
    c = cmd(cs, "update", "change a case", _case_update)
    c.add_argument("case", type=int)
    c.add_argument("--title")
    c.add_argument("--party", action="append", help="the parties (repeat; replaces the list)")
    c.add_argument("--handler", dest="handler_name")
    c.add_argument("--major", action=argparse.BooleanOptionalAction, default=None)
    c.add_argument("--unit")
    c = cmd(cs, "step-add", "plan a step", _step_add)
    c.add_argument("case", type=int)
    c.add_argument("step", help="step id (devices carry it as case_step)")
    c.add_argument("--stage", required=True, choices=STAGES)
    c.add_argument("--activity", required=True, choices=ACTIVITIES)
    c.add_argument("--officer", action="append", default=[], help="officer id (repeat)")
    c.add_argument("--planned", nargs=2, metavar=("FROM", "UNTIL"), help="planned window")
    c.add_argument("--title")
    c.add_argument("--location")
    c = cmd(cs, "step", "one step with its links and sign-offs", lambda cl, a: cl.call(
        "GET", f"/api/v1/cases/{a.case}/steps/{quote(a.step)}"))
    c.add_argument("case", type=int)
    c.add_argument("step")
    c = cmd(cs, "step-update", "change a step (status, actual window, ...)", _step_update)
    c.add_argument("case", type=int)
    c.add_argument("step")
    c.add_argument("--status", choices=STATUSES)
    c.add_argument("--actual-start")
    c.add_argument("--actual-end")
    c.add_argument("--activity", choices=ACTIVITIES)
    c.add_argument("--officer", action="append", help="officer id (repeat; replaces the list)")
    c.add_argument("--location")
    c = cmd(cs, "suggest", "recordings that might belong to a step", lambda cl, a: cl.call(
        "GET", f"/api/v1/cases/{a.case}/steps/{quote(a.step)}/suggestions"))
    c.add_argument("case", type=int)
    c.add_argument("step")
    c = cmd(cs, "link", "link a recording (or a time range of it) to a step", _link)
    c.add_argument("case", type=int)
    c.add_argument("step")
    c.add_argument("--device", required=True)
    c.add_argument("--recording", required=True)
    c.add_argument("--from", dest="from_", help="start of the range (omit --from/--until for the whole recording)")
    c.add_argument("--until")
    c.add_argument("--reason", required=True)
    c = cmd(cs, "unlink", "end a link (it stays on record)", lambda cl, a: cl.call(
        "POST", f"/api/v1/cases/{a.case}/steps/{quote(a.step)}/links/{a.link}/unlink", {"reason": a.reason}))
    c.add_argument("case", type=int)
    c.add_argument("step")
    c.add_argument("link", type=int)
    c.add_argument("--reason", required=True)
    c = cmd(cs, "events", "the link events of a case", lambda cl, a: cl.call("GET", f"/api/v1/cases/{a.case}/events"))
    c.add_argument("case", type=int)
    c = cmd(cs, "signoff", "legal review sign-off of a major case's decision step", lambda cl, a: cl.call(
        "POST", f"/api/v1/cases/{a.case}/steps/{quote(a.step)}/signoff",
        {"opinion": a.opinion, "override_reason": a.override}))
    c.add_argument("case", type=int)
    c.add_argument("step")
    c.add_argument("--opinion", required=True)
    c.add_argument("--override", help="sign off despite missing or incomplete footage, for this reason")

    pol = sub.add_parser("policy", help="the recording-requirement list (音像记录事项清单), through the API")
    api_options(pol)
    ps = pol.add_subparsers(dest="policy_command", metavar="COMMAND")
    ps.required = True
    c = cmd(ps, "show", "the list in force (or one version): the resolved table, or --text", _policy_show)
    c.add_argument("--version")
    c.add_argument("--text", action="store_true", help="print the YAML as loaded")
    cmd(ps, "versions", "every version loaded", lambda cl, a: cl.call("GET", "/api/v1/policy/versions"))
    c = cmd(ps, "load", "load a new version from a YAML file", lambda cl, a: cl.call(
        "POST", "/api/v1/policy", {"text": Path(a.file).read_text(encoding="utf-8")}))
    c.add_argument("file")

    au = sub.add_parser("audit", help="audit of missing recordings (through the API)",
                        description="Steps that had to be recorded and were not, or not fully; chain gaps, "
                                    "pending uploads, failed verifications, unlinked recordings, offline devices, "
                                    "expired certificates, officer mismatches, untrusted entries, review overrides.")
    api_options(au)
    au.add_argument("--case", type=int, help="only this case (id)")
    au.add_argument("--officer", help="only this officer")
    au.add_argument("--device", help="only this device")
    au.add_argument("--since", help="from this time (ISO 8601 or ms)")
    au.add_argument("--until", help="until this time (ISO 8601 or ms)")
    au.add_argument("--format", choices=("text", "json", "csv"), default="text")
    au.add_argument("--lang", choices=("zh", "en"), default="zh", help="language of the text and CSV report")
    au.set_defaults(handler=run_audit)


def _query(**params: Any) -> str:
    q = {k: v for k, v in params.items() if v is not None}
    return f"?{urlencode(q)}" if q else ""


def _case_add(client: Any, a: argparse.Namespace) -> Any:
    body: dict[str, Any] = {"number": a.number, "category": a.category, "title": a.title, "parties": a.party,
                            "major": a.major}
    if a.handler_name:
        body["handler"] = a.handler_name
    if a.unit:
        body["unit"] = a.unit
    return client.call("POST", "/api/v1/cases", body)


def _case_update(client: Any, a: argparse.Namespace) -> Any:
    body = {k: v for k, v in {"title": a.title, "parties": a.party, "handler": a.handler_name, "major": a.major,
                              "unit": a.unit}.items() if v is not None}
    return client.call("PATCH", f"/api/v1/cases/{a.case}", body)


def _step_add(client: Any, a: argparse.Namespace) -> Any:
    body: dict[str, Any] = {"id": a.step, "stage": a.stage, "activity": a.activity, "officers": a.officer}
    if a.planned:
        body["planned_start_ms"], body["planned_end_ms"] = parse_time(a.planned[0]), parse_time(a.planned[1])
    if a.title:
        body["title"] = a.title
    if a.location:
        body["location"] = a.location
    return client.call("POST", f"/api/v1/cases/{a.case}/steps", body)


def _step_update(client: Any, a: argparse.Namespace) -> Any:
    body: dict[str, Any] = {k: v for k, v in {"status": a.status, "activity": a.activity, "officers": a.officer,
                                              "location": a.location}.items() if v is not None}
    if a.actual_start:
        body["actual_start_ms"] = parse_time(a.actual_start)
    if a.actual_end:
        body["actual_end_ms"] = parse_time(a.actual_end)
    return client.call("PATCH", f"/api/v1/cases/{a.case}/steps/{quote(a.step)}", body)


def _link(client: Any, a: argparse.Namespace) -> Any:
    body: dict[str, Any] = {"device_id": a.device, "recording_id": a.recording, "reason": a.reason}
    if a.from_ is not None:
        body["from_ms"] = parse_time(a.from_)
    if a.until is not None:
        body["until_ms"] = parse_time(a.until)
    return client.call("POST", f"/api/v1/cases/{a.case}/steps/{quote(a.step)}/links", body)


def _policy_show(client: Any, a: argparse.Namespace) -> Any:
    policy = client.call("GET", f"/api/v1/policy/versions/{quote(a.version)}" if a.version else "/api/v1/policy")
    if a.text and not a.as_json:
        print(policy["text"], end="")
        return None
    if a.as_json:
        return policy
    print(f"version {policy['version']}  {policy['title']}  sha256 {policy['sha256'][:16]}…")
    activities = list(next(iter(policy["table"].values())))
    print("category".ljust(12) + "".join(act[:13].ljust(14) for act in activities))
    for category, row in policy["table"].items():
        print(category.ljust(12) + "".join(row[act].ljust(14) for act in activities))
    return None


def run_audit(args: argparse.Namespace) -> int:
    """``custody audit``: the report from the API, rendered here."""
    from server.audit_report import render
    from server.client import client_from_args

    client = client_from_args(args)
    query = _query(case_id=args.case, officer_id=args.officer, device_id=args.device,
                   since=parse_time(args.since) if args.since else None,
                   until=parse_time(args.until) if args.until else None)
    report = client.call("GET", "/api/v1/audit" + query)
    fmt = "json" if getattr(args, "as_json", False) else args.format
    sys.stdout.write(render(report, fmt, args.lang))
    return 0
