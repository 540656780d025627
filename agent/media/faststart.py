"""Move an MP4's ``moov`` box in front of its media data ("fast start"), in memory.

FFmpeg's own ``movflags=+faststart`` reopens the output file by name to shift the data, so it
fails on the in-memory output each chunk is built in (PyAV raises "No such file or directory:
'<none>'"). Chunks are small, so doing the same here is a copy plus patching the chunk-offset
tables (``stco``/``co64``) by the size of the moved box. A player can then start a chunk from its
first bytes, without a range request for the end of the file.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from agent.errors import ChunkFormatError

# Boxes on the path from moov to the chunk-offset tables; nothing else holds file offsets.
_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl"}


def _boxes(data: bytes | bytearray, start: int, end: int) -> Iterator[tuple[bytes, int, int, int]]:
    """``(type, box_start, payload_start, box_end)`` of the boxes in ``data[start:end]``."""
    pos = start
    while pos < end:
        if end - pos < 8:
            raise ChunkFormatError(f"truncated MP4 box header at byte {pos}")
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            if end - pos < 16:
                raise ChunkFormatError(f"truncated MP4 box header at byte {pos}")
            (size,) = struct.unpack_from(">Q", data, pos + 8)
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            raise ChunkFormatError(f"MP4 box {kind!r} at byte {pos} has a bad size {size}")
        yield kind, pos, pos + header, pos + size
        pos += size


def _shift_offsets(buf: bytearray, start: int, end: int, delta: int) -> int:
    """Add ``delta`` to every chunk offset under ``buf[start:end]``; return how many were patched."""
    patched = 0
    for kind, _, payload, box_end in _boxes(buf, start, end):
        if kind in _CONTAINERS:
            patched += _shift_offsets(buf, payload, box_end, delta)
        elif kind in (b"stco", b"co64"):
            (count,) = struct.unpack_from(">I", buf, payload + 4)
            width, fmt = (4, ">I") if kind == b"stco" else (8, ">Q")
            if payload + 8 + count * width > box_end:
                raise ChunkFormatError(f"{kind.decode()} table overruns its box")
            for i in range(count):
                at = payload + 8 + i * width
                (offset,) = struct.unpack_from(fmt, buf, at)
                if kind == b"stco" and offset + delta >= 1 << 32:
                    raise ChunkFormatError("chunk too large for 32-bit offsets after fast start")
                struct.pack_into(fmt, buf, at, offset + delta)
            patched += count
    return patched


def faststart(data: bytes) -> bytes:
    """``data`` with ``moov`` before the first ``mdat``; unchanged if it already is."""
    top = list(_boxes(data, 0, len(data)))
    kinds = [b[0] for b in top]
    if b"moov" not in kinds:
        raise ChunkFormatError("not an MP4 file: no moov box")
    if b"mdat" not in kinds or kinds.index(b"moov") < kinds.index(b"mdat"):
        return data
    _, m_start, m_payload, m_end = top[kinds.index(b"moov")]
    _, d_start, _, _ = top[kinds.index(b"mdat")]
    moov = bytearray(data[m_start:m_end])
    _shift_offsets(moov, m_payload - m_start, len(moov), len(moov))
    return b"".join((data[:d_start], bytes(moov), data[d_start:m_start], data[m_end:]))
