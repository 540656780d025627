"""A decoder worker (server/decoder.py) that misbehaves on purpose, for the tests of the server's side.

Run as ``python -m tests.helpers.faulty_decoder``. A blob beginning with ``CRASH`` kills the
worker with SIGSEGV (as a decoder fault would), ``HANG`` makes it sleep for an hour, ``SHAPE``
makes it answer a list of the wrong length; anything else is decoded as the real worker does.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from server import decoder

_real_handle = decoder.handle


def handle(header: dict[str, Any], blobs: list[bytes]) -> dict[str, Any]:
    """The real handler, unless a blob asks for a fault."""
    for blob in blobs:
        if blob.startswith(b"CRASH"):
            os.kill(os.getpid(), signal.SIGSEGV)
        if blob.startswith(b"HANG"):
            time.sleep(3600)
        if blob.startswith(b"SHAPE"):
            return {"errors": [None] * (len(blobs) + 1)}
    return _real_handle(header, blobs)


if __name__ == "__main__":
    decoder.handle = handle
    decoder.main()
