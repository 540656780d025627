"""``custody witness --server URL --state DIR``: an independent party watching the log for forks.

Run by a court or an oversight office, not by the operator. Each round it fetches the log's
checkpoint, checks the log's signature (the log key is pinned in DIR on first use, or given with
``--log-key``), proves the new checkpoint extends the last one it saw (fetching a consistency
proof), cosigns it (C2SP cosignature/v1, with its own key kept in DIR, mode 0600) and sends the
cosignature back so the server serves it with the checkpoint. Two checkpoints that cannot both be
true are a fork: both are kept in DIR/forks/ as proof, the server is told (it records ``log.fork``),
and the command says so loudly and exits with status 3.

Only the standard library and protocol/ are used, so the party running it needs nothing else.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from protocol.checkpoint import SIG_COSIGNATURE_V1, Checkpoint, NoteVerifier, SignedNote, cosign_line, open_checkpoint
from protocol.errors import CustodyError, ProofError
from protocol.keys import SigningKey
from protocol.merkle import verify_consistency

if TYPE_CHECKING:
    Sub = argparse._SubParsersAction[argparse.ArgumentParser]

log = logging.getLogger("custody.witness")

EXIT_OK, EXIT_ERROR, EXIT_FORK = 0, 1, 3


def register(sub: Sub) -> None:
    """Add ``custody witness``."""
    p = sub.add_parser("witness", help="witness a Custody log: check consistency, cosign checkpoints, detect forks",
                       description="Run by an independent party. Keeps its key and every checkpoint it saw in "
                                   "--state; exits with status 3 on a fork.")
    p.add_argument("--server", required=True, help="the Custody server's base URL")
    p.add_argument("--state", type=Path, required=True, help="directory for the witness key and what it saw")
    p.add_argument("--name", default="custody-witness", help="the witness's key name (on first run)")
    p.add_argument("--log-key", help="the log's verifier key (default: trusted on first use and pinned)")
    p.add_argument("--once", action="store_true", help="one round, then exit")
    p.add_argument("--interval", type=float, default=60.0, help="seconds between rounds")
    p.add_argument("--cacert", help="CA certificate for an HTTPS server with a private CA")
    p.set_defaults(handler=run)


class WitnessError(CustodyError):
    """The witness cannot do its job (server unreachable, bad log signature, damaged state)."""

    code = "witness_error"


class ForkDetected(CustodyError):
    """Two checkpoints of the log that cannot both be true."""

    code = "log_fork"


@dataclass
class WitnessState:
    """The state directory: the witness key, the pinned log key, the last checkpoint, forks."""

    root: Path

    @property
    def key_file(self) -> Path:
        return self.root / "witness.key"

    def load_key(self, name: str) -> tuple[str, SigningKey]:
        """The witness's name and key, created (mode 0600) on first use."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not self.key_file.exists():
            key = SigningKey.generate()
            fd = os.open(self.key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps({"name": name, "ed25519": base64.b64encode(key.private_bytes()).decode()}) + "\n")
            verifier = NoteVerifier(name, key.public, SIG_COSIGNATURE_V1)
            (self.root / "witness.vkey").write_text(verifier.vkey() + "\n")
            log.warning("created witness key %s; register it on the server: %s", name, verifier.vkey())
        if os.stat(self.key_file).st_mode & 0o077:
            raise WitnessError(f"{self.key_file} is readable by others: chmod 600 it")
        data = json.loads(self.key_file.read_text())
        return data["name"], SigningKey.from_private_bytes(base64.b64decode(data["ed25519"]))

    def vkey(self) -> str:
        """The witness's verifier key text."""
        return (self.root / "witness.vkey").read_text().strip()

    def log_vkey(self) -> str | None:
        path = self.root / "log.vkey"
        return path.read_text().strip() if path.exists() else None

    def pin_log(self, vkey: str) -> None:
        (self.root / "log.vkey").write_text(vkey.strip() + "\n")

    def latest(self) -> bytes | None:
        path = self.root / "latest.note"
        return path.read_bytes() if path.exists() else None

    def save(self, note: bytes, cp: Checkpoint) -> None:
        """Remember a verified checkpoint (and keep every one, for ``custody verify --checkpoint``)."""
        (self.root / "checkpoints").mkdir(exist_ok=True)
        (self.root / "checkpoints" / f"{cp.size}.note").write_bytes(note)
        tmp = self.root / "latest.note.tmp"
        tmp.write_bytes(note)
        os.replace(tmp, self.root / "latest.note")

    def keep_fork(self, first: bytes, second: bytes, detail: str) -> Path:
        """Keep both checkpoints of a fork as proof."""
        where = self.root / "forks" / time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        where.mkdir(parents=True, exist_ok=True)
        (where / "first.note").write_bytes(first)
        (where / "second.note").write_bytes(second)
        (where / "detail.txt").write_text(detail + "\n")
        return where


class Server:
    """The log's public API (standard library HTTP)."""

    def __init__(self, url: str, cafile: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.cafile = cafile

    def request(self, method: str, path: str, body: bytes | None = None,
                content_type: str = "application/json") -> bytes:
        import ssl

        req = urllib.request.Request(self.url + path, data=body, method=method,  # noqa: S310
                                     headers={"Content-Type": content_type} if body is not None else {})
        ctx = ssl.create_default_context(cafile=self.cafile) if self.url.startswith("https") else None
        try:
            with urllib.request.urlopen(req, timeout=30, context=ctx) as resp:  # noqa: S310
                data: bytes = resp.read()
                return data
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:300].decode("utf-8", "replace")
            raise WitnessError(f"{method} {path}: HTTP {exc.code}: {detail}") from None
        except urllib.error.URLError as exc:
            raise WitnessError(f"cannot reach {self.url}: {exc.reason}") from None


def witness_round(server: Server, state: WitnessState, name: str, key: SigningKey,
                  log_key: str | None = None) -> Checkpoint:
    """One round: fetch, verify, check consistency, cosign, send. Raise :class:`ForkDetected` on a fork."""
    pinned = log_key or state.log_vkey()
    if pinned is None:
        info = json.loads(server.request("GET", "/api/v1/log/key"))
        pinned = str(info["vkey"])
        log.warning("trusting the log key on first use: %s", pinned)
    if state.log_vkey() is None:
        state.pin_log(pinned)
    verifier = NoteVerifier.from_vkey(pinned)
    raw = server.request("GET", "/api/v1/log/checkpoint")
    try:
        cp, note = open_checkpoint(raw, verifier)
    except ProofError as exc:
        raise WitnessError(f"the log's checkpoint does not verify with the pinned key: {exc.message}") from None
    # Keep only the log's own signature: what the witness stores and cosigns is the log's statement.
    own = SignedNote(note.body, tuple(s for s in note.signatures if s.name == verifier.name))
    own_bytes = own.text().encode("utf-8")
    previous = state.latest()
    if previous is not None:
        old, _ = open_checkpoint(previous, verifier)
        detail = None
        if cp.size < old.size:
            detail = f"the log went back from size {old.size} to {cp.size}"
        elif cp.size == old.size and cp.root != old.root:
            detail = f"two different roots for size {cp.size}"
        elif cp.size > old.size:
            proof_json = json.loads(server.request(
                "GET", f"/api/v1/log/proof/consistency?from={old.size}&to={cp.size}"))
            try:
                verify_consistency(old.size, cp.size, [base64.b64decode(h) for h in proof_json["proof"]],
                                   old.root, cp.root)
            except (ProofError, KeyError, ValueError) as exc:
                detail = f"size {cp.size} does not extend size {old.size}: {getattr(exc, 'message', exc)}"
        if detail is not None:
            where = state.keep_fork(previous, own_bytes, detail)
            try:
                server.request("POST", "/api/v1/log/forks", json.dumps(
                    {"first": base64.b64encode(previous).decode(), "second": base64.b64encode(own_bytes).decode(),
                     "reporter": name}).encode())
            except WitnessError as exc:
                log.error("could not tell the server about the fork: %s", exc.message)
            raise ForkDetected(f"LOG FORK: {detail}; both checkpoints kept in {where}")
    line = cosign_line(own.body, name, key, int(time.time()))
    cosigned = own.with_line(line).text().encode("utf-8")
    try:
        server.request("POST", "/api/v1/log/cosignatures", cosigned, "text/plain; charset=utf-8")
    except WitnessError as exc:
        log.error("the server did not take the cosignature (is this witness registered? its key: %s): %s",
                  state.vkey(), exc.message)
    state.save(own_bytes, cp)
    return cp


def run(args: argparse.Namespace) -> int:
    """The command."""
    state = WitnessState(args.state)
    name, key = state.load_key(args.name)
    server = Server(args.server, args.cacert)
    while True:
        try:
            cp = witness_round(server, state, name, key, args.log_key)
            print(f"witnessed {cp.origin} size {cp.size} root {cp.root.hex()[:16]}…", flush=True)
        except ForkDetected as exc:
            print(f"custody witness: {exc.message}", file=sys.stderr, flush=True)
            log.critical("%s", exc.message)
            return EXIT_FORK
        except WitnessError as exc:
            if args.once:
                raise
            log.error("%s", exc.message)
        if args.once:
            return EXIT_OK
        time.sleep(args.interval)


def cosigned_by(note: bytes, vkey: str) -> Any:
    """The cosignature timestamp of ``vkey``'s witness on ``note`` (ProofError if there is none)."""
    return SignedNote.parse(note).verify(NoteVerifier.from_vkey(vkey))
