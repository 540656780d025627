import io
import itertools
from pathlib import Path

import av
import numpy as np
import pytest

from agent.errors import ChunkFormatError
from agent.media.export import export_recording
from agent.media.sync_marks import beep_onsets, flash_times

from .recording import FPS, Run, run_pipeline, small_config


def decode_all(path: Path) -> tuple[list[float], int]:
    """Presentation times of the video frames, and how many holes or overlaps the sound has."""
    with av.open(str(path), "r") as c:
        video = [float(f.time or 0) for f in c.decode(video=0)]
    with av.open(str(path), "r") as c:
        frames = list(c.decode(audio=0))
    gaps = sum(1 for a, b in itertools.pairwise(frames) if b.pts != (a.pts or 0) + a.samples)
    return video, gaps


def test_export_joins_a_recording_into_one_continuous_mp4(recording_run: Run, tmp_path: Path) -> None:
    chunks = recording_run.chunks
    out = tmp_path / "recording.mp4"
    result = export_recording([c.data for c in chunks], out)
    assert result.chunks == len(chunks)
    assert result.video_frames == sum(c.video_frames for c in chunks)
    assert result.duration_ms == pytest.approx(sum(c.duration_ms for c in chunks), abs=1)
    video, gaps = decode_all(out)
    assert len(video) == result.video_frames
    assert np.allclose(np.diff(video), 1 / FPS)  # no jump at any chunk boundary
    assert gaps == 0  # the sound continues from chunk to chunk without a hole or an overlap
    with av.open(str(out), "r") as c:
        assert c.streams.video[0].frames == result.video_frames
        vs = c.streams.video[0]
        declared_s = float((vs.duration or 0) * (vs.time_base or 0))
        assert declared_s == pytest.approx(result.duration_ms / 1000, abs=0.001)
    # Sound begins where recording began (pre-event chunks carry none) and stays in sync.
    recorded_from = sum(c.duration_ms for c in chunks if c.pre_event) / 1000
    data = out.read_bytes()
    with av.open(io.BytesIO(data), "r") as c:
        first_audio = next(c.decode(audio=0))
    # Sound before the recording is not footage (pre-event audio is off): the first AAC frame
    # that starts inside the recording comes first, at most one frame after its first picture.
    assert 0 <= float(first_audio.time or 0) - recorded_from < 1024 / 48000
    flashes = [t for t in flash_times(data) if t >= recorded_from]
    beeps = [t for t in beep_onsets(data) if t < result.duration_ms / 1000]
    assert len(flashes) == len(beeps) == 7
    assert max(abs(b - f) for f, b in zip(flashes, beeps, strict=True)) < 0.002


def test_export_reads_chunk_files_too(recording_run: Run, tmp_path: Path) -> None:
    paths = []
    for i, c in enumerate(recording_run.chunks[3:]):
        p = tmp_path / f"{i:04d}.mp4"
        p.write_bytes(c.data)
        paths.append(p)
    result = export_recording(paths, tmp_path / "out.mp4")
    assert result.video_frames == sum(c.video_frames for c in recording_run.chunks[3:])
    _, gaps = decode_all(tmp_path / "out.mp4")
    assert gaps == 0


def test_export_never_overwrites(recording_run: Run, tmp_path: Path) -> None:
    out = tmp_path / "exists.mp4"
    out.write_bytes(b"keep me")
    with pytest.raises(ChunkFormatError, match="never overwrites"):
        export_recording([recording_run.chunks[0].data], out)
    assert out.read_bytes() == b"keep me"
    assert not list(tmp_path.glob(".*partial"))


def test_export_refuses_chunks_of_different_encoder_sessions(recording_run: Run, tmp_path: Path) -> None:
    other = run_pipeline(small_config(width=160, height=120), FPS, recording=True)
    with pytest.raises(ChunkFormatError, match="different video parameters"):
        export_recording([recording_run.chunks[3].data, other.chunks[0].data], tmp_path / "x.mp4")
    assert not (tmp_path / "x.mp4").exists()


def test_export_refuses_nothing_and_garbage(tmp_path: Path) -> None:
    with pytest.raises(ChunkFormatError, match="no chunks"):
        export_recording([], tmp_path / "a.mp4")
    with pytest.raises(ChunkFormatError, match="chunk 0 cannot be opened"):
        export_recording([b"\x00" * 100], tmp_path / "b.mp4")
