import asyncio
import threading
from fractions import Fraction
from typing import Any

import av
import numpy as np
import pytest

from agent.errors import MediaSourceError, SourceSpecError
from agent.media.sources import (
    DeviceSource,
    FileSource,
    MediaSource,
    RawAudioFrame,
    RawFrame,
    RawVideoFrame,
    SourceSpec,
    SyntheticSource,
    open_source,
    parse_source_spec,
)
from agent.media.sources.device import SYSTEM_ALSA_CONF, alsa_options, ensure_alsa_config, v4l2_options
from agent.media.sources.synthetic import BEEP_LEVEL, FLASH_MS, synthetic_audio
from agent.media.sources.threads import ThreadFeed
from custody.clock import FakeClock, SystemClock

from .recording import run_pipeline, small_config

# --- spec strings -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("synthetic", SourceSpec("synthetic")),
        (" synthetic ", SourceSpec("synthetic")),
        ("v4l2:/dev/video0", SourceSpec("device", video_device="/dev/video0")),
        ("v4l2:/dev/video2+alsa:hw:1,0",
         SourceSpec("device", video_device="/dev/video2", audio_device="hw:1,0")),
        ("alsa:plughw:CARD=Mic,DEV=0+v4l2:/dev/video0",
         SourceSpec("device", video_device="/dev/video0", audio_device="plughw:CARD=Mic,DEV=0")),
        ("file:/data/a+b.mp4", SourceSpec("file", path="/data/a+b.mp4")),
    ],
)  # fmt: skip
def test_spec_strings_parse(text, expected):
    assert parse_source_spec(text) == expected
    assert parse_source_spec(str(expected)) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty source"),
        ("camera", "not understood"),
        ("rtsp://host/stream", "source type 'rtsp' unknown"),
        ("v4l2:", r"needs a device, as in v4l2:/dev/video0"),
        ("alsa:hw:0", "records sound only"),
        ("v4l2:/dev/video0+v4l2:/dev/video1", "only one camera"),
        ("v4l2:/dev/video0+alsa:hw:0+alsa:hw:1", "only one microphone"),
        ("file:", "needs a path"),
    ],
)
def test_bad_spec_strings_say_what_is_wrong(text, message):
    with pytest.raises(SourceSpecError, match=message):
        parse_source_spec(text)


def test_open_source_builds_the_right_source():
    clock = FakeClock()
    assert isinstance(open_source("synthetic", clock, width=320, height=240), SyntheticSource)
    assert isinstance(open_source("file:/x.mp4", clock), FileSource)
    dev = open_source("v4l2:/dev/video0+alsa:hw:0", clock, audio=False)
    assert isinstance(dev, DeviceSource)
    assert dev.audio_device is None  # audio off in the config: the microphone is not opened
    sources: list[MediaSource] = [SyntheticSource(clock), FileSource(clock, "x"), dev]  # type-checked
    assert all(callable(s.frames) for s in sources)


# --- V4L2 and ALSA ------------------------------------------------------------------------------


def test_device_options_are_built_for_libavdevice():
    assert v4l2_options(1280, 720, Fraction(30)) == {"video_size": "1280x720", "framerate": "30"}
    assert v4l2_options(640, 480, Fraction(30000, 1001), "mjpeg") == {
        "video_size": "640x480",
        "framerate": "30000/1001",
        "input_format": "mjpeg",
    }
    assert alsa_options(48000, 1) == {"sample_rate": "48000", "channels": "1"}


def test_alsa_config_points_the_bundled_library_at_the_system_file(tmp_path):
    conf = tmp_path / "alsa.conf"
    conf.write_text("")
    env: dict[str, str] = {}
    assert ensure_alsa_config(env, conf)
    assert env == {"ALSA_CONFIG_PATH": str(conf)}
    assert not ensure_alsa_config({"ALSA_CONFIG_PATH": "/mine"}, conf)  # an explicit choice stays
    assert not ensure_alsa_config({}, tmp_path / "missing.conf")


async def test_missing_camera_is_a_clear_error():
    src = DeviceSource(SystemClock(), video_device="/dev/video99")
    with pytest.raises(MediaSourceError, match=r"^camera /dev/video99: no such device$"):
        await src.open()


class LavfiOpener:
    """Stands in for real devices: v4l2 -> a paced test pattern, alsa -> a paced tone or the real ALSA."""

    def __init__(self, real_alsa: bool = False) -> None:
        self.calls: list[tuple[str, str, dict[str, str]]] = []
        self.real_alsa = real_alsa

    def __call__(self, path: str, format: str, options: dict[str, str]) -> Any:
        self.calls.append((path, format, options))
        if format == "v4l2":
            size, rate = options["video_size"], options["framerate"]
            return av.open(f"testsrc2=size={size}:rate={rate},realtime", format="lavfi")
        if self.real_alsa:
            return av.open(path, format="alsa", options=options)
        return av.open("sine=frequency=1000:sample_rate=44100,arealtime", format="lavfi")


async def capture(src: DeviceSource, seconds: float) -> list[RawFrame]:
    await src.open()
    got: list[RawFrame] = []

    async def read() -> None:
        async for f in src.frames():
            got.append(f)

    task = asyncio.create_task(read())
    await asyncio.sleep(seconds)
    await src.close()
    await asyncio.wait_for(task, 5)
    return got


async def test_device_capture_threads_put_frames_on_the_shared_timeline():
    opener = LavfiOpener()
    src = DeviceSource(
        SystemClock(), video_device="/dev/video0", audio_device="hw:0", width=320, height=240, fps=30,
        opener=opener,
    )  # fmt: skip
    got = await capture(src, 0.6)
    assert [(p, f) for p, f, _ in opener.calls] == [("/dev/video0", "v4l2"), ("hw:0", "alsa")]
    assert opener.calls[0][2] == {"video_size": "320x240", "framerate": "30"}
    assert src.video_format.width == 320
    video = [f for f in got if isinstance(f, RawVideoFrame)]
    audio = [f for f in got if isinstance(f, RawAudioFrame)]
    assert 10 <= len(video) <= 25
    assert all(f.image.shape == (360, 320) for f in video)
    pts = [f.pts for f in video]
    assert pts == sorted(set(pts))
    assert pts[-1] - pts[0] < 30  # on the 1/30 s grid of the time they arrived
    assert audio
    # 44.1 kHz from the device, 48 kHz int16 in 20 ms blocks out.
    assert all(a.samples.shape == (1, 960) and a.samples.dtype == np.int16 for a in audio)
    assert [a.pts for a in audio] == [audio[0].pts + 960 * i for i in range(len(audio))]


async def test_real_alsa_null_device_records_through_the_bundled_library():
    # `make test` installs libasound2-data (deploy/scripts/system-deps.sh): missing it is a failure.
    assert SYSTEM_ALSA_CONF.is_file(), "ALSA configuration missing: run `make system-deps`"
    src = DeviceSource(
        SystemClock(), video_device="/dev/video0", audio_device="null", width=160, height=120,
        opener=LavfiOpener(real_alsa=True),
    )  # fmt: skip
    got = await capture(src, 0.3)
    audio = [f for f in got if isinstance(f, RawAudioFrame)]
    assert audio
    # The null device hands over samples without pacing: what matters is that they arrive converted
    # into equal contiguous blocks (its sample values are whatever was in the buffer).
    assert all(a.samples.shape == (1, 960) for a in audio)
    assert [a.pts for a in audio] == [audio[0].pts + 960 * i for i in range(len(audio))]


@pytest.mark.skipif(not SYSTEM_ALSA_CONF.is_file(), reason="needs the system ALSA configuration")
async def test_missing_microphone_is_a_clear_error():
    opener = LavfiOpener(real_alsa=True)
    src = DeviceSource(SystemClock(), video_device="/dev/video0", audio_device="hw:7", opener=opener)
    with pytest.raises(MediaSourceError, match=r"^microphone hw:7: cannot open"):
        await src.open()


async def test_thread_feed_drops_when_full_and_reports_producer_errors():
    feed: ThreadFeed[int] = ThreadFeed(maxsize=4, drop_when_full=True)
    done = threading.Event()

    def produce(emit, stopping):
        for i in range(10):
            emit(i)
        done.set()

    feed.start("p", produce)
    await asyncio.to_thread(done.wait, 5)
    await asyncio.sleep(0.05)
    got = []
    while (item := await feed.get()) is not None:
        got.append(item)
    assert got == [0, 1, 2, 3]
    assert feed.dropped == 6

    failing: ThreadFeed[int] = ThreadFeed()

    def broken(emit, stopping):
        raise OSError("device unplugged")

    failing.start("q", broken)
    with pytest.raises(OSError, match="unplugged"):
        await failing.get()


# --- synthetic ----------------------------------------------------------------------------------


def test_synthetic_frames_are_deterministic_and_carry_their_counter():
    a = SyntheticSource(FakeClock(), width=320, height=240)
    b = SyntheticSource(FakeClock(), width=320, height=240)
    f1, f2 = a.video_frame(7, 0), b.video_frame(7, 0)
    assert np.array_equal(f1.image, f2.image)
    assert not np.array_equal(a.video_frame(8, 0).image, f1.image)
    assert f1.image.shape == (360, 320)
    assert f1.pts == 7
    assert f1.time_ms == 233


def test_synthetic_flash_and_beep_mark_the_same_instants():
    src = SyntheticSource(FakeClock(), width=320, height=240)

    def corner(n: int) -> float:
        return float(src.video_frame(n, 0).image[200:240, 280:320].mean())

    assert corner(30) > 200  # 1.000 s: flash on
    assert corner(33) < 200  # 1.100 s: off
    audio = synthetic_audio(48000 - 480, 960, 48000)[0]  # 10 ms either side of 1.000 s
    assert np.abs(audio[:480]).max() < 0.1 * 32767
    assert np.abs(audio[480:]).max() > 0.9 * BEEP_LEVEL * 32767
    assert FLASH_MS == 100


async def test_synthetic_source_is_paced_by_the_clock():
    clock = FakeClock()
    src = SyntheticSource(clock, width=160, height=120, audio_rate=None)
    await src.open()
    got: list[RawFrame] = []

    async def read() -> None:
        async for f in src.frames():
            got.append(f)

    task = asyncio.create_task(read())
    for _ in range(10):
        await asyncio.sleep(0)
    assert len(got) == 1  # frame 0 is due at once
    clock.advance(1.0)
    for _ in range(100):
        await asyncio.sleep(0)
    assert len(got) == 31
    await src.close()
    clock.advance(1)
    await asyncio.wait_for(task, 1)


async def test_synthetic_source_runs_faster_than_real_time_under_an_auto_clock():
    clock = FakeClock(auto_advance=True)
    src = SyntheticSource(clock, width=160, height=120, seconds=10)
    await src.open()
    loop = asyncio.get_running_loop()
    t = loop.time()
    video = [f async for f in src.frames() if isinstance(f, RawVideoFrame)]
    assert len(video) == 300
    assert clock.monotonic() == pytest.approx(299 / 30)
    assert loop.time() - t < 5


# --- file ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def media_file(tmp_path_factory):
    run = run_pipeline(small_config(chunk_seconds=2, pre_event_seconds=0), 60, recording=True)
    path = tmp_path_factory.mktemp("media") / "clip.mp4"
    path.write_bytes(run.chunks[0].data)
    return path


async def test_file_is_replayed_at_the_pace_of_the_clock(media_file):
    clock = FakeClock(auto_advance=True)
    src = FileSource(clock, media_file)
    await src.open()
    assert (src.video_format.width, src.video_format.height, src.video_format.fps) == (320, 240, Fraction(30))
    frames = [f async for f in src.frames()]
    video = [f for f in frames if isinstance(f, RawVideoFrame)]
    audio = [f for f in frames if isinstance(f, RawAudioFrame)]
    assert [f.pts for f in video] == list(range(60))
    assert sum(a.n for a in audio) == pytest.approx(96000, abs=2048)
    assert clock.monotonic() == pytest.approx(2.0, abs=0.05)


async def test_missing_or_unreadable_files_are_clear_errors(tmp_path):
    with pytest.raises(MediaSourceError, match="not found"):
        await FileSource(FakeClock(), tmp_path / "nope.mp4").open()
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not media at all" * 10)
    with pytest.raises(MediaSourceError, match="not a media file"):
        await FileSource(FakeClock(), junk).open()
