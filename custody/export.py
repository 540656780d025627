"""``custody export [CASE] -o case.zip --reason WHY``: download a case export package through the API.

Like every command acting on a running service it goes through the HTTP API (``--server URL
--token T``, the environment, or ``--data-dir``), so the export is authorized by a role and
recorded in the access log like any other read of footage. A progress bar goes to stderr.

``CASE`` (a case id) exports every recording linked to the case's steps, the links and the case's
audit report; ``--recording DEVICE/RECORDING`` and ``--device ID [--from-seq A] [--to-seq B]``
add footage (or, without a case, are the whole selection).
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    Sub = argparse._SubParsersAction[argparse.ArgumentParser]


def register(sub: Sub) -> None:
    """Add ``custody export``."""
    from server.client import add_server_options

    p = sub.add_parser("export", help="download a case export package (for custody verify) through the API",
                       description="Export footage with everything needed to verify it offline: original chunks, "
                                   "a playable MP4 per recording, entries, certificates, receipts, log proofs, a "
                                   "checkpoint, the key history, the audit report and the access-log excerpt.")
    p.add_argument("case", nargs="?", type=int, help="case id: its linked recordings, links and audit report")
    p.add_argument("-o", "--output", type=Path, required=True, help="where to write the .zip")
    p.add_argument("--reason", required=True, help="why the footage is exported (recorded in the access log)")
    p.add_argument("--recording", action="append", default=[], metavar="DEVICE/RECORDING",
                   help="a recording to export (repeatable)")
    p.add_argument("--device", help="export this device's recordings in a sequence range")
    p.add_argument("--from-seq", type=int)
    p.add_argument("--to-seq", type=int)
    add_server_options(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=run)


def _progress(done: int, total: int | None, started: float, out: IO[str]) -> None:
    rate = done / max(time.monotonic() - started, 1e-6) / 1e6
    if total:
        width = 30
        filled = int(width * done / total)
        out.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done / 1e6:7.1f}/{total / 1e6:.1f} MB "
                  f"{rate:5.1f} MB/s")
    else:
        out.write(f"\r{done / 1e6:7.1f} MB {rate:5.1f} MB/s")
    out.flush()


def run(args: argparse.Namespace) -> int:
    """The command."""
    from server.client import ApiError, client_from_args

    client = client_from_args(args)
    if args.case is None and not args.recording and not args.device:
        raise ApiError("say what to export: CASE, --recording DEVICE/RECORDING ... or --device ID",
                       code="nothing_to_export")
    body: dict[str, Any] = {"reason": args.reason, "case_id": args.case,
                            "recordings": ",".join(args.recording) or None, "device_id": args.device,
                            "from_seq": args.from_seq, "to_seq": args.to_seq}
    req = urllib.request.Request(  # noqa: S310 - the URL is the operator's API
        client.url.rstrip("/") + "/api/v1/exports", data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {client.token}", "Content-Type": "application/json"})
    ctx = ssl.create_default_context(cafile=client.cafile) if client.url.startswith("https") else None
    tmp = args.output.with_name(args.output.name + ".part")
    started = time.monotonic()
    show = not args.no_progress
    try:
        with urllib.request.urlopen(req, timeout=3600, context=ctx) as resp, open(tmp, "wb") as out:  # noqa: S310
            total = int(resp.headers.get("Content-Length") or 0) or None
            done = 0
            while block := resp.read(1 << 20):
                out.write(block)
                done += len(block)
                if show:
                    _progress(done, total, started, sys.stderr)
            export_id = resp.headers.get("Custody-Export-Id")
            access_id = resp.headers.get("Custody-Access-Id")
    except urllib.error.URLError as exc:
        raise client.error(exc) from None
    if show:
        sys.stderr.write("\n")
    os.replace(tmp, args.output)
    print(f"wrote {args.output} (export {export_id}, access event {access_id}, {done} bytes)")
    print(f"verify it with: custody verify {args.output} --server-key KEY")
    return 0
