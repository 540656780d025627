"""Every chunk of a synthetic recording stands alone: decodes, starts on a keyframe at 0, lasts
what it says, carries sound in sync; pre-event footage is flagged and bounded."""

import itertools
from fractions import Fraction

import numpy as np
import pytest

from agent.media.chunk_check import check_chunk
from agent.media.pipeline import ChunkReady, RecordingClosed, RecordingOpened
from agent.media.sync_marks import sync_offsets
from agent.media.watermark import Watermark
from agent.media.yuv import new_image

from .recording import (
    CST,
    FPS,
    RECORD_FROM,
    RECORD_TO,
    START_MS,
    H,
    Run,
    W,
    first_frame_luma,
    run_pipeline,
    small_config,
)

AAC_FRAME_S = 1024 / 48000


def frame_ms(n: int) -> int:
    return START_MS + round(n * 1000 / FPS)


def test_recording_emits_pre_event_chunks_then_recorded_chunks_then_closes(recording_run: Run) -> None:
    kinds = [type(e).__name__ if not isinstance(e, ChunkReady) else ("pre" if e.chunk.pre_event else "rec")
             for e in recording_run.events]  # fmt: skip
    assert kinds == ["pre", "pre", "pre", "RecordingOpened", "rec", "rec", "rec", "rec", "RecordingClosed"]
    assert recording_run.opened == [RecordingOpened(start_ms=frame_ms(RECORD_FROM), pre_event_chunks=3)]
    assert recording_run.closed == [RecordingClosed(end_ms=frame_ms(RECORD_TO), chunks=7)]


def test_chunks_cut_exactly_at_chunk_length_and_at_start_and_stop(recording_run: Run) -> None:
    chunks = recording_run.chunks
    assert [c.video_frames for c in chunks] == [60, 60, 5, 60, 60, 60, 45]
    # Pre-event: frames 0-124 in chunks of 2 s, the last cut where recording began.
    assert [c.start_ms for c in chunks] == [frame_ms(n) for n in (0, 60, 120, 125, 185, 245, 305)]
    for a, b in itertools.pairwise(chunks):
        assert abs(b.start_ms - a.end_ms) <= 1  # contiguous, to the millisecond rounding
    assert [c.pre_event for c in chunks] == [True] * 3 + [False] * 4


def test_every_chunk_decodes_alone_starting_on_a_keyframe_at_zero(recording_run: Run) -> None:
    for chunk in recording_run.chunks:
        report = check_chunk(chunk.data)
        assert report.first_frame_keyframe
        assert report.start_time_s == 0
        assert report.moov_before_mdat
        assert abs(report.video_frames - chunk.video_frames) <= 1
        assert report.video_frames == chunk.video_frames
        assert report.video_duration_s == Fraction(chunk.video_frames, FPS)
        assert abs(float(report.video_duration_s) * 1000 - chunk.duration_ms) <= 1
        assert (report.width, report.height, report.video_codec) == (W, H, "h264")
        assert (chunk.width, chunk.height, chunk.video_codec) == (W, H, "h264")
        assert (chunk.fps_num, chunk.fps_den) == (30, 1)


def test_recorded_chunks_carry_audio_as_long_as_their_video(recording_run: Run) -> None:
    for chunk in recording_run.chunks:
        report = check_chunk(chunk.data)
        if chunk.pre_event:
            # Pre-event audio is off by default.
            assert report.audio_codec is None
            assert chunk.audio_codec is None
            assert chunk.audio_samples is None
            assert chunk.audio_rate is None
            continue
        assert (report.audio_codec, report.audio_rate) == ("aac", 48000)
        assert (chunk.audio_codec, chunk.audio_rate) == ("aac", 48000)
        # Sound starts at 0 with the picture; AAC frames (1024 samples) do not divide chunk
        # boundaries, so it may end up to one frame after it.
        assert 0 <= report.av_offset_s < AAC_FRAME_S
        assert chunk.audio_samples == report.audio_samples
        assert chunk.audio_samples is not None
        assert 0 <= chunk.audio_samples / 48000 - chunk.duration_ms / 1000 < AAC_FRAME_S


def test_audio_and_video_are_in_sync_inside_every_chunk(recording_run: Run) -> None:
    """The synthetic flash and beep mark the same instants; decoded, they must still agree."""
    measured = 0
    for chunk in recording_run.chunks:
        if chunk.pre_event:
            continue
        offsets = sync_offsets(chunk.data, chunk.duration_ms / 1000)
        assert offsets
        for offset in offsets:
            assert abs(offset) < 0.002, f"A/V offset {1000 * offset:.1f} ms in chunk at {chunk.start_ms}"
            measured += 1
    assert measured >= 7


def test_watermark_survives_encoding(recording_run: Run) -> None:
    chunk = recording_run.chunks[3]
    wm = Watermark(W, H, device_id="dev-test", officer_id="007", tz=CST)
    expected = new_image(W, H)
    wm.apply(expected, chunk.start_ms)
    top, left, bh, bw = wm.box()
    want = expected[:H][top : top + bh, left : left + bw].astype(int)
    got = first_frame_luma(chunk.data)[top : top + bh, left : left + bw].astype(int)
    text = want > 128
    assert got[text].mean() > 190  # white text
    assert got[~text].mean() < 60  # on a dark box
    assert np.abs(got - want).mean() < 20


def test_pre_event_buffer_is_bounded_however_long_the_device_is_armed():
    run = run_pipeline(small_config(pre_event_seconds=3), 20 * FPS, start_at=(20 * FPS - 10,), audio=False)
    pre = [c for c in run.chunks if c.pre_event]
    total_ms = sum(c.duration_ms for c in pre)
    assert 3000 <= total_ms < 3000 + 2000
    assert run.pipeline is not None
    assert run.pipeline.stats.pre_event_evicted == 8


def test_pre_event_memory_cap_wins_over_the_time_window():
    run = run_pipeline(small_config(pre_event_seconds=30, pre_event_max_bytes=150_000), 12 * FPS,
                       start_at=(12 * FPS - 1,), audio=False)  # fmt: skip
    pre = [c for c in run.chunks if c.pre_event]
    assert 0 < sum(c.size for c in pre) <= 150_000
    assert sum(c.duration_ms for c in pre) < 12_000


def test_pre_event_audio_can_be_switched_on():
    run = run_pipeline(small_config(pre_event_audio=True), 5 * FPS, start_at=(100,))
    pre = [c for c in run.chunks if c.pre_event]
    assert pre
    assert all(c.audio_codec == "aac" and (c.audio_samples or 0) > 0 for c in pre)
    for c in pre:
        assert check_chunk(c.data).audio_samples > 0


def test_without_a_pre_event_buffer_nothing_is_encoded_until_recording_starts():
    run = run_pipeline(small_config(pre_event_seconds=0), 4 * FPS, start_at=(70,), stop_at=(100,))
    assert [c.pre_event for c in run.chunks] == [False]
    assert run.chunks[0].start_ms == frame_ms(70)
    assert run.chunks[0].video_frames == 30
    assert run.pipeline is not None
    assert run.pipeline.stats.frames_encoded == 30
    assert run.opened == [RecordingOpened(frame_ms(70), 0)]
    report = check_chunk(run.chunks[0].data)
    assert report.first_frame_keyframe
    assert abs(report.av_offset_s) <= AAC_FRAME_S


def test_recording_from_the_first_frame_includes_the_encoder_priming():
    run = run_pipeline(small_config(), 3 * FPS, recording=True)
    assert [c.video_frames for c in run.chunks] == [60, 30]
    first = check_chunk(run.chunks[0].data)
    assert first.first_frame_keyframe
    assert abs(first.av_offset_s) <= AAC_FRAME_S
    assert sync_offsets(run.chunks[1].data, 1.0) == pytest.approx([0], abs=0.002)
    assert [c.chunks for c in run.closed] == [2]  # the source ended while recording


def test_opus_audio_works_the_same_way():
    run = run_pipeline(small_config(audio_codec="opus"), 5 * FPS, recording=True)
    for chunk in run.chunks:
        report = check_chunk(chunk.data)
        assert report.audio_codec == "opus"
        assert chunk.audio_codec == "opus"
        assert 0 <= report.av_offset_s < 0.020  # Opus frames are 20 ms
        assert all(abs(x) < 0.002 for x in sync_offsets(chunk.data, chunk.duration_ms / 1000))


def test_a_silent_source_gives_video_only_chunks():
    run = run_pipeline(small_config(), 3 * FPS, recording=True, audio=False)
    assert all(c.audio_codec is None and c.audio_rate is None for c in run.chunks)
    assert all(check_chunk(c.data).audio_codec is None for c in run.chunks)


def test_a_stalled_source_shows_a_frozen_picture_not_a_shorter_chunk():
    from agent.media.pipeline import MediaPipeline
    from agent.media.sources.synthetic import SyntheticSource
    from custody.clock import FakeClock

    cfg = small_config(pre_event_seconds=0)
    src = SyntheticSource(FakeClock(), width=W, height=H, audio_rate=None)
    p = MediaPipeline(cfg, src.video_format, None, video_codec="libx264", watermark=None, recording=True)
    events = []
    for n in [*range(0, 20), *range(35, 60)]:  # frames 20-34 lost
        events += p.push(src.video_frame(n, START_MS))
    events += p.finish()
    p.close()
    (chunk,) = [e.chunk for e in events if isinstance(e, ChunkReady)]
    assert chunk.video_frames == 60
    assert p.stats.frames_repeated == 15
    assert check_chunk(chunk.data).video_frames == 60
