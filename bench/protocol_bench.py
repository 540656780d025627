"""Protocol benchmark: signing and verifying chunk manifests against raw Ed25519, and SHA-256.

Prints, for the same bytes in the same run:
  - manifests signed/s (build + canonical encode + PAE + sign + envelope) vs raw Ed25519 sign/s;
  - manifests verified/s (parse envelope from received bytes + canonical check + verify + parse
    and validate payload) vs raw Ed25519 verify/s of the same signed bytes; goal >= 0.8x;
  - SHA-256 MB/s through protocol's chunk hashing vs hashlib directly.

Usage: python bench/protocol_bench.py [--seconds S]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocol.chain import entry_hash
from protocol.envelope import Envelope, pae
from protocol.keys import SigningKey
from protocol.messages import GENESIS_PREV, ChunkManifest, CodecInfo


def rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per CPU-second of ``fn`` over about ``seconds`` of this thread's CPU time (after a warm-up).

    CPU time, not wall time: other processes on a shared machine then skew the figure far less.
    """
    for _ in range(20):
        fn()
    n, start = 0, time.thread_time()
    deadline = start + seconds
    while True:
        for _ in range(10):
            fn()
        n += 10
        now = time.thread_time()
        if now >= deadline:
            return n / (now - start)


def paired(fn: Callable[[], object], base: Callable[[], object], seconds: float, rounds: int = 9
           ) -> tuple[float, float, float]:
    """Rates of ``fn`` and ``base`` measured in alternating short rounds, and the median of their ratios.

    Alternating cancels the drift of a shared, loaded machine: both sides see the same load.
    """
    ratios, a_rates, b_rates = [], [], []
    for _ in range(rounds):
        a = rate(fn, seconds / rounds / 2)
        b = rate(base, seconds / rounds / 2)
        a_rates.append(a)
        b_rates.append(b)
        ratios.append(a / b)
    mid = rounds // 2
    return sorted(a_rates)[mid], sorted(b_rates)[mid], sorted(ratios)[mid]


def manifest(key: SigningKey, seq: int) -> ChunkManifest:
    """A realistic manifest."""
    codec = CodecInfo("mp4", "h264", 1280, 720, 30, 1, 150, "aac", 48000, 240_000)
    return ChunkManifest(
        1, key.public.device_id, seq, GENESIS_PREV if seq == 0 else "ab" * 32, "rec-20261122-0001", seq,
        1_795_000_000_000 + seq * 5000, 5000, hashlib.sha256(b"%d" % seq).hexdigest(), 2_600_000,
        "officer-0042", "case-2026-0007:step-3", False, codec,
    )


def main() -> None:
    """Run and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    args = parser.parse_args()

    key = SigningKey.generate()
    raw_key = Ed25519PrivateKey.from_private_bytes(key.private_bytes())
    raw_pub = raw_key.public_key()
    m = manifest(key, 7)
    env = m.sign(key)
    signed_bytes = pae(env.payload_type, env.payload)
    received = env.raw

    sign_full, sign_raw, sign_ratio = paired(lambda: manifest(key, 7).sign(key), lambda: raw_key.sign(signed_bytes),
                                             args.seconds)
    verify_full, verify_raw, verify_ratio = paired(
        lambda: ChunkManifest.open(Envelope.from_bytes(received), key.public),
        lambda: raw_pub.verify(env.signature, signed_bytes),
        args.seconds,
    )
    hash_entry = rate(lambda: entry_hash(received), args.seconds / 4)

    chunk = os.urandom(4 << 20)
    sha_protocol, sha_hashlib, sha_ratio = paired(
        lambda: entry_hash(chunk), lambda: hashlib.sha256(chunk).digest(), args.seconds
    )
    mb = len(chunk) / 1e6

    print(f"manifest envelope: {len(received)} bytes; medians of alternating rounds")
    print(f"sign   : {sign_full:9.0f} manifests/s  raw Ed25519 {sign_raw:9.0f}/s  ratio {sign_ratio:.2f}x")
    print(f"verify : {verify_full:9.0f} manifests/s  raw Ed25519 {verify_raw:9.0f}/s  ratio "
          f"{verify_ratio:.2f}x (goal >= 0.80x)")
    print(f"entry hash: {hash_entry:9.0f}/s")
    print(f"sha256 : {sha_protocol * mb:9.0f} MB/s  hashlib {sha_hashlib * mb:9.0f} MB/s  ratio {sha_ratio:.2f}x")


if __name__ == "__main__":
    main()
