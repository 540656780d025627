import pytest

from agent.media.chunk import EncodedChunk
from agent.media.pre_event import PreEventRing, evict_count


def chunk(start_ms: int, duration_ms: int = 5000, size: int = 1000, pre_event: bool = True) -> EncodedChunk:
    return EncodedChunk(
        data=b"x" * size,
        start_ms=start_ms,
        duration_ms=duration_ms,
        video_frames=duration_ms * 30 // 1000,
        audio_samples=None,
        width=320,
        height=240,
        fps_num=30,
        fps_den=1,
        video_codec="h264",
        audio_codec=None,
        audio_rate=None,
        pre_event=pre_event,
    )


@pytest.mark.parametrize(
    ("durations", "keep_ms", "expected"),
    [
        ([5000] * 6, 30_000, 0),  # exactly 30 s: keep all
        ([5000] * 7, 30_000, 1),  # 35 s: the oldest is not needed to cover 30 s
        ([5000] * 7, 32_000, 0),  # 30 s would not cover 32 s: keep the overhanging chunk
        ([5000, 5000, 2300], 5000, 1),
        ([5000], 0, 1),  # a zero-second buffer keeps nothing
        ([], 30_000, 0),
    ],
)
def test_evict_keeps_the_shortest_run_covering_the_window(durations, keep_ms, expected):
    assert evict_count(durations, [1] * len(durations), keep_ms, 10**9) == expected


def test_evict_respects_the_byte_cap_before_the_time_window():
    assert evict_count([5000] * 4, [400, 400, 400, 400], 30_000, 1000) == 2


def test_ring_is_bounded_in_time_and_memory():
    ring = PreEventRing(keep_ms=30_000, max_bytes=10**9)
    for i in range(100):
        ring.add(chunk(i * 5000))
        assert ring.duration_ms < 30_000 + 5000
    assert len(ring) == 6
    assert ring.evicted == 94
    small = PreEventRing(keep_ms=30_000, max_bytes=2500)
    for i in range(10):
        small.add(chunk(i * 5000))
        assert small.size <= 2500


def test_ring_marks_chunks_pre_event_and_drains_oldest_first():
    ring = PreEventRing(keep_ms=10_000, max_bytes=10**9)
    ring.add(chunk(0, pre_event=False))
    ring.add(chunk(5000))
    out = ring.drain()
    assert [c.start_ms for c in out] == [0, 5000]
    assert all(c.pre_event for c in out)
    assert len(ring) == 0


def test_disabled_ring_keeps_nothing():
    ring = PreEventRing(keep_ms=0, max_bytes=10**9)
    assert not ring.enabled
    assert ring.add(chunk(0))
    assert len(ring) == 0
