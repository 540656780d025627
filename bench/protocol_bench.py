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
    """Calls per second of ``fn`` over about ``seconds`` (after a short warm-up)."""
    for _ in range(200):
        fn()
    n, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(100):
            fn()
        n += 100
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


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

    sign_full = rate(lambda: manifest(key, 7).sign(key), args.seconds)
    sign_raw = rate(lambda: raw_key.sign(signed_bytes), args.seconds)
    verify_full = rate(lambda: ChunkManifest.open(Envelope.from_bytes(received), key.public), args.seconds)
    verify_raw = rate(lambda: raw_pub.verify(env.signature, signed_bytes), args.seconds)
    hash_entry = rate(lambda: entry_hash(received), args.seconds)

    chunk = os.urandom(4 << 20)
    sha_hashlib = rate(lambda: hashlib.sha256(chunk).digest(), args.seconds) * len(chunk) / 1e6
    sha_protocol = rate(lambda: entry_hash(chunk), args.seconds) * len(chunk) / 1e6

    print(f"manifest envelope: {len(received)} bytes")
    print(f"sign   : {sign_full:9.0f} manifests/s  raw Ed25519 {sign_raw:9.0f}/s  ratio {sign_full / sign_raw:.2f}x")
    print(f"verify : {verify_full:9.0f} manifests/s  raw Ed25519 {verify_raw:9.0f}/s  ratio "
          f"{verify_full / verify_raw:.2f}x (goal >= 0.80x)")
    print(f"entry hash: {hash_entry:9.0f}/s")
    print(f"sha256 : {sha_protocol:9.0f} MB/s  hashlib {sha_hashlib:9.0f} MB/s  "
          f"ratio {sha_protocol / sha_hashlib:.2f}x")


if __name__ == "__main__":
    main()
