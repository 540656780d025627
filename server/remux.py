"""One playable MP4 from a recording's chunks, remuxed without re-encoding (PyAV).

Each chunk is a standalone MP4 starting with a keyframe; concatenating their packets with
timestamps shifted by the duration of the chunks before gives one file a person can play from
start to end. No frame is decoded or re-encoded, so every frame is bit for bit the one the device
signed; the original chunks stay the evidence (the export carries both). One exception: each AAC
chunk opens with a priming packet timed before zero, which would overlap the end of the chunk
before it; it is dropped from every chunk but the first (a few tens of ms of audio priming).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import av


def remux(chunks: Sequence[bytes]) -> bytes:
    """Concatenate standalone MP4 chunks (same codecs and picture size) into one MP4."""
    if not chunks:
        raise ValueError("a recording without chunks has nothing to remux")
    out_buf = io.BytesIO()
    with av.open(out_buf, mode="w", format="mp4") as out:
        out_streams: dict[str, Any] = {}
        offsets: dict[Any, Fraction] = {}  # seconds already written per stream type
        last_dts: dict[Any, int] = {}  # per stream type, in the source time base (same in every chunk)
        for data in chunks:
            with av.open(io.BytesIO(data), mode="r", format="mp4") as src:
                inputs = [s for s in src.streams if s.type in ("video", "audio")]
                for s in inputs:
                    if s.type not in out_streams:
                        out_streams[s.type] = out.add_stream_from_template(s)
                        offsets[s.type] = Fraction(0)
                ends: dict[Any, Fraction] = {}
                for packet in src.demux(*inputs):
                    if packet.size == 0 or packet.stream.type not in out_streams:
                        continue
                    kind = packet.stream.type
                    target = out_streams[kind]
                    tb = packet.time_base
                    shift = round(offsets[kind] / tb)
                    if packet.pts is not None:
                        end = (packet.pts + (packet.duration or 0)) * tb
                        ends[kind] = max(ends.get(kind, Fraction(0)), end)
                        packet.pts += shift
                    if packet.dts is not None:
                        packet.dts += shift
                        if packet.dts <= last_dts.get(kind, -(1 << 62)):
                            continue  # a later chunk's audio priming, overlapping the chunk before
                        last_dts[kind] = packet.dts
                    packet.stream = target
                    out.mux(packet)
                for kind, end in ends.items():
                    offsets[kind] += end
    return out_buf.getvalue()
