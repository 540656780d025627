"""The cheap media check compares what the demuxer sees with what the manifest declares."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import struct

import av
import numpy as np
import pytest

from protocol.messages import ChunkManifest
from server import mp4
from server.media import check_chunk, decode_first_frame, decode_frame, demux_chunk
from tests.helpers.media import make_chunk, with_garbage_keyframe


def manifest_for(data: bytes, **changes: object) -> ChunkManifest:
    chunk = make_chunk()
    fields = dict(v=1, device_id="a" * 24, seq=1, prev="0" * 64, recording_id="r", index=0,
                  start_ms=1_767_225_600_000, duration_ms=chunk.duration_ms, sha256=hashlib.sha256(data).hexdigest(),
                  size=len(data), officer_id=None, case_step=None, pre_event=False, codec=chunk.codec)
    codec_changes = {k[6:]: v for k, v in changes.items() if k.startswith("codec_")}
    fields.update({k: v for k, v in changes.items() if not k.startswith("codec_")})
    fields["codec"] = dataclasses.replace(chunk.codec, **codec_changes)  # type: ignore[arg-type]
    return ChunkManifest(**fields)  # type: ignore[arg-type]


def test_a_good_chunk_passes() -> None:
    data = make_chunk().data
    report = check_chunk(data, manifest_for(data), 150)
    assert report.ok, report.problems
    assert report.video_frames == 10
    assert report.duration_ms == 1000
    assert report.first_is_keyframe
    decode_first_frame(data)


def test_the_check_keeps_the_first_sample_for_the_decode_after_the_receipt() -> None:
    data = make_chunk().data
    frame = check_chunk(data, manifest_for(data), 150).first_frame
    assert frame is not None
    video = mp4.read_movie(data).first("vide")
    assert video is not None and video.first_sample is not None
    offset, size = video.first_sample
    assert (frame.codec, frame.sample, frame.width, frame.height) == ("h264", data[offset:offset + size], 160, 120)
    decode_frame(frame)
    # A keyframe that does not decode fails the same way from the held sample as from the bytes.
    bad = with_garbage_keyframe(data)
    held = check_chunk(bad, manifest_for(bad), 150)
    assert held.ok and held.first_frame is not None  # the cheap check does not decode
    with pytest.raises(ValueError, match="first frame does not decode"):
        decode_frame(held.first_frame)
    with pytest.raises(ValueError, match="first frame does not decode"):
        decode_first_frame(bad)
    assert "first_frame" not in held.to_json()


@pytest.mark.parametrize(("changes", "problem"), [
    ({"codec_video_frames": 11}, "10 video samples, the entry says 11"),
    ({"duration_ms": 2000}, "video lasts 1000 ms, the entry says 2000 ms"),
    ({"codec_width": 320}, "picture is 160x120"),
    ({"codec_audio_samples": 40000}, "audio samples, the entry says 40000"),
    ({"codec_video": "h265"}, "video codec is h264"),
])
def test_declared_and_measured_differ(changes: dict[str, object], problem: str) -> None:
    data = make_chunk().data
    report = check_chunk(data, manifest_for(data, **changes), 150)
    assert any(problem in p for p in report.problems), report.problems


def test_truncated_and_garbage_chunks_fail() -> None:
    data = make_chunk().data
    for bad in (data[: len(data) // 2], b"\0" * 1000, data[:200]):
        assert not check_chunk(bad, manifest_for(bad), 150).ok
    with pytest.raises(ValueError, match="decode"):
        decode_first_frame(b"\0" * 1000)


@pytest.mark.parametrize("kwargs", [{}, {"audio": False}, {"seconds": 2, "fps": 25, "width": 320, "height": 240}])
def test_sample_tables_and_demuxer_agree(kwargs: dict[str, object]) -> None:
    chunk = make_chunk(**kwargs)
    manifest = dataclasses.replace(manifest_for(chunk.data), duration_ms=chunk.duration_ms, codec=chunk.codec)
    mp4.read_movie(chunk.data)  # the fast path applies (no Unsupported)
    fast, demuxed = check_chunk(chunk.data, manifest, 150), demux_chunk(chunk.data, manifest, 150)
    assert fast.ok, fast.problems
    assert fast.to_json() == demuxed.to_json()


def test_a_sample_outside_the_media_data_is_damage() -> None:
    data = bytearray(make_chunk().data)
    stco = data.find(b"stco")
    struct.pack_into(">I", data, stco + 12, len(data) - 10)  # first chunk offset: near the end of the file
    with pytest.raises(mp4.Damaged, match="outside the media data"):
        mp4.read_movie(bytes(data))
    report = check_chunk(bytes(data), manifest_for(bytes(data)), 150)
    assert any("outside the media data" in p for p in report.problems), report.problems


def test_fragmented_mp4_goes_through_the_demuxer() -> None:
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4", options={"movflags": "frag_keyframe+empty_moov"}) as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(10):
            frame = av.VideoFrame.from_ndarray(np.full((72, 64), i * 20, dtype=np.uint8), format="yuv420p")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    data = buf.getvalue()
    with pytest.raises(mp4.Unsupported):
        mp4.read_movie(data)
    report = check_chunk(data, manifest_for(data), 150)
    assert report.video_frames == 10
    decode_first_frame(data)
