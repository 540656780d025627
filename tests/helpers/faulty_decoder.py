"""A decoder worker (server/decoder.py) that misbehaves on purpose, for the tests of the server's side.

Run as ``python -m tests.helpers.faulty_decoder``. A blob beginning with ``CRASH`` kills the
worker with SIGSEGV (as a decoder fault would), ``HANG`` makes it sleep for an hour, ``SHAPE``
makes it answer a list of the wrong length, ``RAISE`` makes the decoder raise an exception no
decoder should; anything else is decoded as the real worker does.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from server import decoder, media

_real_handle = decoder.handle
_real_decode_frame = media.decode_frame


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


def decode_frame(frame: Any) -> None:
    """The real decode, unless the sample asks for an unexpected exception."""
    if frame.sample.startswith(b"RAISE"):
        raise KeyError("boom")
    _real_decode_frame(frame)


if __name__ == "__main__":
    decoder.handle = handle
    media.decode_frame = decode_frame
    decoder.main()
