"""Rewrite the golden files from tests/unit/protocol/samples.py. Run only on purpose.

    .venv/bin/python tests/golden/regenerate.py

Changing a golden file changes the wire contract: agents and servers already deployed sign and
expect the old bytes. Review the diff as a protocol change, not as a test fix.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from tests.unit.protocol.samples import golden_files  # noqa: E402


def main() -> int:
    """Write every golden file and report which ones changed."""
    changed = 0
    for name, data in sorted(golden_files().items()):
        path = HERE / name
        old = path.read_bytes() if path.exists() else None
        if old != data:
            path.write_bytes(data)
            changed += 1
            print(f"{'wrote' if old is None else 'CHANGED'} {name}")
    print(f"{changed} golden file(s) written")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
