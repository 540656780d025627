"""Audit reports as text (zh-CN or English) and CSV, from the JSON the audit produces.

Pure functions of the report (standard library and protocol/ only), so the server's API and the
CLI render the same bytes: ``custody audit`` asks the API for JSON and renders it locally.
Times are printed in UTC with a ``Z``; the JSON keeps milliseconds since the epoch.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Callable
from typing import Any

from protocol.findings import lookup
from server.case_terms import ACTIVITIES, LEVELS, STAGES

FORMATS = ("json", "text", "csv")
LANGS = ("zh", "en")


def fmt_time(ms: int | None) -> str:
    """UTC time of a millisecond timestamp, to the second (ms when they matter)."""
    if ms is None:
        return "-"
    t = dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
    text = t.strftime("%Y-%m-%d %H:%M:%S")
    return (text + f".{ms % 1000:03d}" if ms % 1000 else text) + "Z"


def _seqs(seqs: list[int]) -> str:
    # 3,4,5,9 -> "3-5, 9": long runs stay short.
    parts: list[list[int]] = []
    for s in seqs:
        if parts and parts[-1][1] == s - 1:
            parts[-1][1] = s
        else:
            parts.append([s, s])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in parts)


def _gaps(gaps: list[dict[str, Any]]) -> str:
    return ", ".join(f"{fmt_time(g['from_ms'])}–{fmt_time(g['until_ms'])} ({g['ms'] / 1000:g} s)" for g in gaps)


Template = Callable[[dict[str, Any]], str]

_EN: dict[str, Template] = {
    "step.missing_footage": lambda e: (
        f"{e['activity'].replace('_', ' ')} ({e['stage']}) requires '{e['requirement']}' recording under list "
        f"{e['policy_version']}; no footage is linked"),
    "step.incomplete_coverage": lambda e: (
        f"footage covers {e['coverage_pct']}% of {fmt_time(e['window_start_ms'])}–{fmt_time(e['window_end_ms'])}; "
        f"gaps: {_gaps(e['gaps'])}"),
    "step.unverified_footage": lambda e: (
        f"{len(e['chunks'])} linked chunk(s) not verified: "
        + "; ".join(f"{c['device_id']} seq {c['seq']} ({c['state']})" for c in e["chunks"])),
    "chain.gap": lambda e: (
        f"device {e['device_id']}: seq {e['first']}..{e['last']} missing ({e['count']}) "
        f"{'inside' if e['position'] == 'inside' else 'right after'} recording {e['recording_id']}"),
    "chunk.pending_upload": lambda e: (
        f"{len(e['seqs'])} chunk(s) announced but not uploaded for over {e['threshold_s']} s: seq {_seqs(e['seqs'])}"),
    "chunk.verification_failed": lambda e: f"chunk(s) failed verification: seq {_seqs(e['seqs'])}",
    "recording.unlinked": lambda e: (
        f"recording by {', '.join(e['officers']) or 'no officer'} ({fmt_time(e['start_ms'])}–{fmt_time(e['end_ms'])}, "
        f"{e['chunks']} chunks) is linked to no case step"
        + (f"; it may belong to {', '.join(s['case_number'] + ' / ' + s['step_id'] for s in e['suggested_steps'])}"
           if e["suggested_steps"] else "")),
    "device.offline_with_pending": lambda e: (
        f"last seen {fmt_time(e['last_seen_ms'])}; {len(e['pending_seqs'])} chunk(s) not uploaded: "
        f"seq {_seqs(e['pending_seqs'])}"),
    "officer.certificate_expired": lambda e: (
        f"recorded by {e['officer_id']} from {fmt_time(e['first_time_ms'])}, after certificate {e['cert_number']} "
        f"expired {fmt_time(e['cert_expires_ms'])} (seq {_seqs(e['seqs'])})"),
    "officer.mismatch": lambda e: (
        f"entries name officer {e['entry_officer']}, the device was assigned to {e['assigned_officer']} "
        f"(seq {_seqs(e['seqs'])})"),
    "entry.untrusted": lambda e: f"{len(e['seqs'])} entries after the device's trust cutoff: seq {_seqs(e['seqs'])}",
    "review.override": lambda e: (
        f"{e['reviewer']} signed off at {fmt_time(e['signed_ms'])} despite "
        f"{', '.join(b['code'] for b in e['blocking'])}; reason: {e['override_reason']}"),
}

_ZH: dict[str, Template] = {
    "step.missing_footage": lambda e: (
        f"{ACTIVITIES.get(e['activity'], e['activity'])}（{STAGES.get(e['stage'], e['stage'])}环节）按清单 "
        f"{e['policy_version']} 须{LEVELS.get(e['requirement'], e['requirement'])}，未关联任何视频"),
    "step.incomplete_coverage": lambda e: (
        f"视频仅覆盖 {fmt_time(e['window_start_ms'])}–{fmt_time(e['window_end_ms'])} 的 {e['coverage_pct']}%，"
        f"缺口：{_gaps(e['gaps'])}"),
    "step.unverified_footage": lambda e: (
        f"{len(e['chunks'])} 个关联片段尚未校验："
        + "；".join(f"{c['device_id']} 序号 {c['seq']}（{c['state']}）" for c in e["chunks"])),
    "chain.gap": lambda e: (
        f"设备 {e['device_id']}：录像 {e['recording_id']} {'之中' if e['position'] == 'inside' else '之后'}"
        f"缺失序号 {e['first']}..{e['last']}（{e['count']} 条）"),
    "chunk.pending_upload": lambda e: (
        f"{len(e['seqs'])} 个片段登记超过 {e['threshold_s']} 秒仍未上传：序号 {_seqs(e['seqs'])}"),
    "chunk.verification_failed": lambda e: f"片段校验失败：序号 {_seqs(e['seqs'])}",
    "recording.unlinked": lambda e: (
        f"{'、'.join(e['officers']) or '未记录执法人员'} 的录像（{fmt_time(e['start_ms'])}–{fmt_time(e['end_ms'])}，"
        f"{e['chunks']} 个片段）未关联任何案件步骤"
        + (f"；可能属于 {'、'.join(s['case_number'] + ' / ' + s['step_id'] for s in e['suggested_steps'])}"
           if e["suggested_steps"] else "")),
    "device.offline_with_pending": lambda e: (
        f"最后在线 {fmt_time(e['last_seen_ms'])}；{len(e['pending_seqs'])} 个片段未上传："
        f"序号 {_seqs(e['pending_seqs'])}"),
    "officer.certificate_expired": lambda e: (
        f"{e['officer_id']} 的执法证 {e['cert_number']} 已于 {fmt_time(e['cert_expires_ms'])} 过期，"
        f"{fmt_time(e['first_time_ms'])} 起仍在记录（序号 {_seqs(e['seqs'])}）"),
    "officer.mismatch": lambda e: (
        f"记录中的执法人员 {e['entry_officer']} 与设备当时分配的 {e['assigned_officer']} 不符"
        f"（序号 {_seqs(e['seqs'])}）"),
    "entry.untrusted": lambda e: f"设备挂失或吊销后产生的 {len(e['seqs'])} 条记录：序号 {_seqs(e['seqs'])}",
    "review.override": lambda e: (
        f"{e['reviewer']} 于 {fmt_time(e['signed_ms'])} 在存在 {'、'.join(b['code'] for b in e['blocking'])} "
        f"的情况下强制通过法制审核，理由：{e['override_reason']}"),
}

_WORDS = {
    "en": {"title": "Custody audit of missing recordings", "generated": "generated", "filters": "filters",
           "none": "none", "scope": "scope", "findings": "findings", "clean": "No findings.",
           "scope_line": "{cases} case(s), {steps} step(s) ({req} requiring footage), {recordings} recording(s)"},
    "zh": {"title": "Custody 执法音像记录审计报告", "generated": "生成时间", "filters": "筛选条件",
           "none": "无", "scope": "范围", "findings": "发现问题", "clean": "未发现问题。",
           "scope_line": "{cases} 个案件，{steps} 个步骤（{req} 个须音像记录），{recordings} 段录像"},
}


def finding_line(finding: dict[str, Any], lang: str) -> str:
    """One finding as a line of text: severity, title, code, subject and what the evidence says."""
    code = lookup(finding["code"])
    title = code.title_zh if lang == "zh" else code.title_en
    detail = (_ZH if lang == "zh" else _EN)[finding["code"]](finding["evidence"])
    sep = "：" if lang == "zh" else ": "
    return f"[{finding['severity'].upper()}] {title} ({finding['code']}) {finding['subject']}{sep}{detail}"


def render_text(report: dict[str, Any], lang: str = "zh") -> str:
    """The report for people, in Chinese (``zh``) or English (``en``)."""
    if lang not in LANGS:
        raise ValueError(f"lang must be one of {', '.join(LANGS)}")
    w = _WORDS[lang]
    filters = ", ".join(f"{k}={v}" for k, v in report["filters"].items() if v is not None) or w["none"]
    s = report["scope"]
    lines = [w["title"], f"{w['generated']}: {fmt_time(report['generated_ms'])}", f"{w['filters']}: {filters}",
             f"{w['scope']}: " + w["scope_line"].format(cases=s["cases"], steps=s["steps"],
                                                        req=s["steps_requiring_footage"], recordings=s["recordings"]),
             f"{w['findings']}: {report['summary']['findings']}"]
    for code, n in report["summary"]["by_code"].items():
        c = lookup(code)
        lines.append(f"  {code:28} {n:4}  {c.title_zh if lang == 'zh' else c.title_en}")
    lines.append("")
    lines += [finding_line(f, lang) for f in report["findings"]] or [w["clean"]]
    return "\n".join(lines) + "\n"


CSV_COLUMNS = ("severity", "code", "subject", "case_number", "step_id", "device_id", "recording_id", "message",
               "evidence")


def render_csv(report: dict[str, Any], lang: str = "en") -> str:
    """One row per finding; the full evidence as JSON in the last column."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for f in report["findings"]:
        e = f["evidence"]
        detail = (_ZH if lang == "zh" else _EN)[f["code"]](e)
        writer.writerow([f["severity"], f["code"], f["subject"], e.get("case_number", ""), e.get("step_id", ""),
                         e.get("device_id", ""), e.get("recording_id", ""), detail,
                         json.dumps(e, ensure_ascii=False, sort_keys=True)])
    return out.getvalue()


def render(report: dict[str, Any], fmt: str, lang: str) -> str:
    """The report in ``fmt`` (json, text or csv)."""
    if fmt == "json":
        return json.dumps(report, ensure_ascii=False, indent=2) + "\n"
    if fmt == "csv":
        return render_csv(report, lang)
    if fmt == "text":
        return render_text(report, lang)
    raise ValueError(f"format must be one of {', '.join(FORMATS)}")
