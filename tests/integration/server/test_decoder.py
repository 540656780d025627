"""The decoder's worker processes (server/decoder.py), really started.

A decoder fault must cost one worker and give the chunk that caused it a reason, never stop
the decodes of the others or answer one request with another's result.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
from collections.abc import AsyncIterator

import pytest

from custody.clock import FakeClock
from server import mp4
from server.app import RunningServer
from server.decoder import Decoder, DecoderUnavailable
from server.media import FirstFrame, first_frame
from tests.helpers.media import make_chunk, with_garbage_keyframe
from tests.integration.server.conftest import Api
from tests.integration.server.test_decode_after_receipt import decode_state

pytestmark = pytest.mark.integration

FAULTY = [sys.executable, "-m", "tests.helpers.faulty_decoder"]


def frame_of(data: bytes) -> FirstFrame:
    """The first video sample the media check would hold."""
    frame = first_frame(data)
    assert frame is not None
    return frame


def faulty(frame: FirstFrame, fault: bytes) -> FirstFrame:
    """``frame`` with a sample that makes the faulty worker misbehave."""
    return FirstFrame(frame.codec, frame.config, fault + frame.sample, frame.width, frame.height)


@pytest.fixture
async def good() -> FirstFrame:
    return frame_of(make_chunk(seed=1).data)


@pytest.fixture
async def decoder() -> AsyncIterator[Decoder]:
    d = Decoder(workers=1, niceness=7)
    yield d
    await d.close()


async def test_frames_decode_in_one_worker_at_the_configured_niceness(decoder: Decoder, good: FirstFrame) -> None:
    garbage = frame_of(with_garbage_keyframe(make_chunk(seed=2).data))
    errors = await decoder.first_frames([good, garbage, good])
    assert errors[0] is None and errors[2] is None
    assert errors[1] is not None and errors[1].startswith("first frame does not decode")
    assert await decoder.first_frames([good]) == [None]
    [pid] = decoder.pids()
    assert pid != os.getpid() and decoder.started == 1 and decoder.failures == 0
    assert os.getpriority(os.PRIO_PROCESS, pid) - os.getpriority(os.PRIO_PROCESS, 0) == 7


async def test_a_stored_objects_first_frame_and_every_frame(decoder: Decoder) -> None:
    chunk = make_chunk(seconds=1, fps=10, seed=3)
    assert await decoder.first_frame_of(chunk.data) is None
    full = await decoder.all_frames(chunk.data)
    assert (full.frames, full.error) == (chunk.codec.video_frames, None) and full.cpu_s > 0
    assert (await decoder.first_frame_of(b"\0" * 1000) or "").startswith("first frame does not decode")
    broken = await decoder.all_frames(b"\0" * 1000)
    assert broken.frames is None and (broken.error or "").startswith("decoding failed")


async def test_a_crash_costs_the_worker_and_names_the_chunk_that_caused_it(good: FirstFrame) -> None:
    decoder = Decoder(command=FAULTY)
    try:
        errors = await decoder.first_frames([good, faulty(good, b"CRASH"), good])
        assert errors[0] is None and errors[2] is None
        assert errors[1] == "first frame does not decode: the decoder process died (SIGSEGV)"
        # The group died, then each frame went alone: the crashing one died again, and the last
        # frame had a fresh worker (one for the group, one for each death).
        assert decoder.failures == 2 and decoder.started == 3
        assert await decoder.first_frames([good]) == [None]
        assert (await decoder.all_frames(b"CRASH")).error == "decoding failed: the decoder process died (SIGSEGV)"
        assert await decoder.first_frame_of(make_chunk(seed=4).data) is None
    finally:
        await decoder.close()


async def test_a_decode_that_never_ends_is_stopped_at_the_timeout(good: FirstFrame) -> None:
    decoder = Decoder(command=FAULTY, timeout_s=1)
    try:
        errors = await decoder.first_frames([faulty(good, b"HANG"), good])
        assert errors == ["first frame does not decode: the decoder process took longer than 1 s and was stopped",
                          None]
    finally:
        await decoder.close()


async def test_a_request_cancelled_midway_does_not_answer_the_next_one(good: FirstFrame) -> None:
    decoder = Decoder(command=FAULTY)
    try:
        hung = asyncio.create_task(decoder.first_frames([faulty(good, b"HANG")]))
        while not decoder.pids():
            await asyncio.sleep(0.01)
        [pid] = decoder.pids()
        hung.cancel()
        with pytest.raises(asyncio.CancelledError):
            await hung
        garbage = frame_of(with_garbage_keyframe(make_chunk(seed=5).data))
        errors = await decoder.first_frames([garbage])
        assert errors[0] is not None and errors[0].startswith("first frame does not decode")
        assert pid not in decoder.pids()
    finally:
        await decoder.close()


async def test_an_unexpected_exception_is_the_chunks_error_and_the_worker_lives_on(good: FirstFrame) -> None:
    decoder = Decoder(command=FAULTY)
    try:
        assert await decoder.first_frames([faulty(good, b"RAISE"), good]) == [
            "first frame does not decode: KeyError: 'boom'", None]
        assert decoder.failures == 0 and decoder.started == 1
    finally:
        await decoder.close()


async def test_a_worker_that_cannot_run_blames_no_chunk(good: FirstFrame) -> None:
    """An interpreter or FFmpeg that fails to load is not the footage's fault: no error per
    chunk (which would become findings), the call fails and the decodes stay pending."""
    decoder = Decoder(command=[sys.executable, "-c", "import sys; sys.exit(3)"])
    try:
        with pytest.raises(DecoderUnavailable, match="exited with status 3"):
            await decoder.first_frames([good, good])
        with pytest.raises(DecoderUnavailable):
            await decoder.all_frames(make_chunk(seed=8).data)
    finally:
        await decoder.close()


async def test_an_answer_of_the_wrong_shape_is_refused(good: FirstFrame) -> None:
    decoder = Decoder(command=FAULTY)
    try:
        with pytest.raises(RuntimeError, match="wrong shape"):
            await decoder.first_frames([faulty(good, b"SHAPE")])
        assert await decoder.first_frames([good]) == [None]
    finally:
        await decoder.close()


async def test_an_answer_that_is_not_json_costs_the_worker(good: FirstFrame) -> None:
    liar = ("import struct, sys, time; sys.stdin.buffer.read(8); "
            "sys.stdout.buffer.write(struct.pack('>II', 3, 0) + b'{{{'); sys.stdout.flush(); time.sleep(60)")
    decoder = Decoder(command=[sys.executable, "-c", liar])
    try:
        assert await decoder.first_frames([good]) == [
            "first frame does not decode: the decoder process answered with something that is not JSON"]
        assert decoder.failures == 1 and decoder.pids() == []
    finally:
        await decoder.close()


async def test_close_stops_every_worker_and_refuses_later_calls(decoder: Decoder, good: FirstFrame) -> None:
    await decoder.first_frames([good])
    [pid] = decoder.pids()
    await decoder.close()
    assert decoder.pids() == []
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(RuntimeError, match="closed"):
        await decoder.first_frames([good])


def with_crashing_keyframe(data: bytes) -> bytes:
    """The same MP4 (the media check passes) whose first sample makes the faulty worker crash."""
    video = mp4.read_movie(data).first("vide")
    assert video is not None and video.first_sample is not None
    offset, _ = video.first_sample
    return data[:offset] + b"CRASH" + data[offset + 5:]


async def test_a_chunk_that_crashes_the_decoder_gets_a_finding_and_the_server_carries_on(
        server: RunningServer, admin: Api, clock: FakeClock) -> None:
    ingest = server.services.ingest
    assert ingest.decoder is server.services.scrubber.decoder  # one set of workers for both
    await ingest.decoder.close()
    ingest.decoder = Decoder(command=FAULTY)
    try:
        device = await admin.enroll(clock)
        await device.announce(device.event("start"))
        chunk = make_chunk(seed=6)
        crashing = await device.deliver(dataclasses.replace(chunk, data=with_crashing_keyframe(chunk.data)),
                                        direct=True)
        assert crashing["state"] == "verified" and crashing["receipt"]  # the receipt never waits for a decode
        assert await decode_state(admin, device.device_id, 1) == "failed"
        good = await device.deliver(make_chunk(seed=7), direct=True)
        assert good["state"] == "verified"
        assert await decode_state(admin, device.device_id, 2) == "ok"
        found = (await admin.ok("GET", f"/api/v1/findings?device_id={device.device_id}"
                                       "&code=media.decode_failed"))["findings"]
        assert [(f["seq"], f["evidence"]["error"]) for f in found] == [
            (1, "first frame does not decode: the decoder process died (SIGSEGV)")]
        [pid] = ingest.decoder.pids()
        assert pid != os.getpid()
        assert (await admin.ok("GET", "/healthz")) is not None
    finally:
        await ingest.decoder.close()
