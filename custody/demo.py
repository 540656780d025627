"""``custody demo``: the whole system, for real, on embedded defaults.

Part 1 (here) shows the protocol's chain: a device key signs a recording's entries over real
bytes, the chain verifies, and a tampered chain and a chain with a deleted chunk are refused with
their precise reasons. Part 2 (simulators/demo.py) runs a server and simulated devices through a
working day.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
from dataclasses import replace
from pathlib import Path

from custody.cli import CliError
from custody.clock import SystemClock
from protocol.canonical import b64e, canonical_bytes
from protocol.chain import ChainReport, verify_chain
from protocol.envelope import Envelope
from protocol.keys import SigningKey
from protocol.messages import GENESIS_PREV, ChunkManifest, CodecInfo, RecordingEvent


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``custody demo``."""
    p = sub.add_parser(
        "demo",
        help="run the whole system on embedded defaults (no external services)",
        description="Show the signed chain (verified, and a tampered and a gapped chain refused), then run a "
        "server and three officers' simulated devices through a working day compressed into a minute or two, "
        "and summarise what the server holds. The server then keeps running until Ctrl-C (unless --exit).",
    )
    p.add_argument("--exit", action="store_true", help="stop at the end instead of keeping the server running")
    p.add_argument("--data-dir", type=Path, default=Path("demo-data"), help="where the demo keeps its data "
                   "(default ./demo-data; a new run needs a new or empty directory)")
    p.add_argument("--port", type=int, default=0, help="server port (default: a free one)")
    p.add_argument("--speed", type=float, default=None, help="simulated seconds per real second (default 400)")
    p.add_argument("--export", type=Path, help="where to write the case export (default DATA_DIR/case-export.zip)")
    p.add_argument("--server-key-out", type=Path,
                   help="where to write the server's public key for custody verify (default DATA_DIR/server-key.vkey)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo (see simulators/demo.py)."""
    if args.data_dir.exists() and any(args.data_dir.iterdir()):
        raise CliError(f"{args.data_dir} is not empty: give --data-dir a new directory (or remove it)")
    from simulators.demo import main

    return main(args)


def build_chain(key: SigningKey, chunks: int, now_ms: int) -> list[Envelope]:
    """A recording as a device would sign it: start event, one manifest per chunk, stop event."""
    device_id = key.public.device_id
    recording_id = "rec-" + secrets.token_hex(4)
    out: list[Envelope] = []
    prev = GENESIS_PREV

    def add(entry: ChunkManifest | RecordingEvent) -> None:
        nonlocal prev
        env = entry.sign(key)
        out.append(env)
        prev = hashlib.sha256(env.raw).hexdigest()

    add(RecordingEvent(1, device_id, 0, prev, recording_id, "start", now_ms, "officer-7", None, None, "demo"))
    for i in range(chunks):
        body = os.urandom(200_000)  # stands in for 5 s of H.264 until the agent records real footage
        codec = CodecInfo("mp4", "h264", 1280, 720, 30, 1, 150, "aac", 48000, 240_000)
        add(
            ChunkManifest(
                1, device_id, len(out), prev, recording_id, i, now_ms + i * 5000, 5000,
                hashlib.sha256(body).hexdigest(), len(body), "officer-7", None, False, codec,
            )
        )
    add(RecordingEvent(1, device_id, len(out), prev, recording_id, "stop", now_ms + chunks * 5000,
                       "officer-7", None, chunks, "demo"))
    return out


def _show(title: str, report: ChainReport) -> None:
    print(f"\n== {title}: {'ACCEPTED' if report.ok else 'REFUSED'}")
    for line in report.lines():
        print("   " + line)


def chain_demo(chunks: int = 6) -> bool:
    """Sign a chain, verify it, and show a tampered and a gapped chain refused; True when all went as expected."""
    key = SigningKey.generate()
    print(f"device key generated: id {key.public.device_id}, key {key.key_id} (Ed25519)")
    chain = build_chain(key, chunks, SystemClock().now_ms())
    print(f"signed {len(chain)} entries: start, {chunks} chunk manifests, stop")

    good = verify_chain(chain, key.public)
    _show("the chain as recorded", good)

    # Tampering: change what manifest 2 says (the chunk's hash) but keep the device's signature,
    # and replace manifest 3 with one signed by a key that is not the device's.
    tampered = list(chain)
    victim = ChunkManifest.peek(chain[2])
    altered = replace(victim, sha256=hashlib.sha256(b"other footage").hexdigest()).to_bytes()
    tampered[2] = Envelope.from_bytes(
        canonical_bytes(
            {"alg": chain[2].alg, "kid": chain[2].key_id, "payload": b64e(altered),
             "sig": b64e(chain[2].signature), "type": chain[2].payload_type}
        )
    )
    tampered[3] = ChunkManifest.peek(chain[3]).sign(SigningKey.generate())
    bad = verify_chain(tampered, key.public)
    _show("a chain with an altered manifest and one re-signed by another key", bad)

    # Deletion: drop the third chunk, as someone hiding footage would.
    gapped = chain[:4] + chain[5:]
    gap = verify_chain(gapped, key.public)
    _show("a chain with one chunk deleted", gap)

    expected = good.ok and not bad.ok and not gap.ok
    print("\nchains:", "every chain judged as expected" if expected else "UNEXPECTED OUTCOME", flush=True)
    return expected
