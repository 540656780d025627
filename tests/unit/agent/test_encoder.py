import io
from fractions import Fraction
from typing import Any

import av
import numpy as np
import pytest

from agent.errors import ConfigError, EncoderUnavailableError
from agent.media.encoder import (
    HARDWARE_ENCODER,
    SOFTWARE_ENCODER,
    AudioSettings,
    MediaEncoder,
    VideoSettings,
    ensure_parameter_sets,
    probe_video_encoder,
    select_video_encoder,
    split_annexb,
    video_codec_options,
)
from agent.media.yuv import new_image

SETTINGS = VideoSettings(width=320, height=240, fps=Fraction(30), gop_frames=60, bitrate=500_000)


class FakeProbe:
    def __init__(self, working: set[str]) -> None:
        self.working = working
        self.calls: list[str] = []

    def __call__(self, codec: str, settings: VideoSettings) -> None:
        self.calls.append(codec)
        if codec not in self.working:
            raise EncoderUnavailableError(f"{codec} failed to open")


def test_hardware_encoder_is_chosen_when_it_works():
    probe = FakeProbe({HARDWARE_ENCODER, SOFTWARE_ENCODER})
    assert select_video_encoder(SETTINGS, probe=probe) == HARDWARE_ENCODER
    assert probe.calls == [HARDWARE_ENCODER]


def test_software_encoder_when_hardware_is_absent():
    probe = FakeProbe({SOFTWARE_ENCODER})
    assert select_video_encoder(SETTINGS, probe=probe) == SOFTWARE_ENCODER
    assert probe.calls == [HARDWARE_ENCODER, SOFTWARE_ENCODER]


def test_clear_error_when_no_encoder_works():
    expected = r"no working H.264 encoder \(h264_v4l2m2m: .*; libx264: "
    with pytest.raises(EncoderUnavailableError, match=expected):
        select_video_encoder(SETTINGS, probe=FakeProbe(set()))


def test_any_probe_failure_counts_as_unusable():
    def crashing(codec: str, settings: VideoSettings) -> None:
        raise OSError("device busy")

    with pytest.raises(EncoderUnavailableError, match="device busy"):
        select_video_encoder(SETTINGS, candidates=["h264_v4l2m2m"], probe=crashing)


def test_real_probe_here_finds_libx264_and_not_the_missing_hardware():
    probe_video_encoder(SOFTWARE_ENCODER, SETTINGS)
    with pytest.raises(EncoderUnavailableError, match="h264_v4l2m2m"):
        probe_video_encoder(HARDWARE_ENCODER, SETTINGS)
    assert select_video_encoder(SETTINGS) == SOFTWARE_ENCODER


@pytest.mark.parametrize(
    ("codec", "message"), [("mpeg4", "not H.264"), ("no-such-codec", "not in this FFmpeg")]
)
def test_non_h264_encoders_are_refused(codec, message):
    with pytest.raises(EncoderUnavailableError, match=message):
        probe_video_encoder(codec, SETTINGS)


def test_x264_options_put_keyframes_exactly_on_chunk_boundaries():
    opts = video_codec_options(SOFTWARE_ENCODER, SETTINGS)
    assert opts["g"] == opts["keyint_min"] == "60"
    assert opts["sc_threshold"] == "0"
    assert opts["forced-idr"] == "1"
    assert opts["tune"] == "zerolatency"
    assert video_codec_options(HARDWARE_ENCODER, SETTINGS)["g"] == "60"


def test_forced_keyframes_land_where_asked_and_nowhere_else():
    enc = MediaEncoder(SOFTWARE_ENCODER, SETTINGS)
    rng = np.random.default_rng(1)
    keys = []
    for n in range(100):
        img = new_image(320, 240)
        # A scene cut at 50: x264 must not start a GOP there.
        img[:240] = rng.integers(16, 235, (240, 320), dtype=np.uint8) if n == 50 else 60 + n
        for p in enc.encode_video(img, n, keyframe=n in (0, 37)):
            if p.is_keyframe:
                keys.append(p.pts)
    enc.close()
    # 37 was forced; the GOP then restarts there, so the next natural one would be at 97.
    assert keys == [0, 37, 97]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"width": 321}, "even"),
        ({"bitrate": 10}, "bitrate"),
        ({"gop_frames": 0}, "GOP"),
    ],
)
def test_bad_video_settings_are_config_errors(kwargs, message):
    base: dict[str, Any] = {"width": 320, "height": 240, "fps": Fraction(30), "gop_frames": 60}
    base.update(kwargs)
    with pytest.raises(ConfigError, match=message):
        VideoSettings(**base)


def test_bad_audio_settings_are_config_errors():
    with pytest.raises(ConfigError, match="unknown"):
        AudioSettings(codec="mp3")
    with pytest.raises(ConfigError, match="Opus cannot"):
        AudioSettings(codec="opus", rate=44100)


def test_annexb_split():
    data = b"\x00\x00\x00\x01\x67\xaa\x00\x00\x01\x68\xbb\x00\x00\x00\x01\x65\xcc\xdd"
    assert split_annexb(data) == [b"\x67\xaa", b"\x68\xbb", b"\x65\xcc\xdd"]


def test_parameter_sets_taken_from_the_first_keyframe_make_every_chunk_standalone():
    # An MPEG-TS holder does not ask for global headers, like a hardware encoder that only
    # sends SPS/PPS in-band.
    holder = av.open(io.BytesIO(), "w", format="mpegts")
    vs = holder.add_stream("libx264", rate=30, options={"tune": "zerolatency", "preset": "ultrafast"})
    vs.width, vs.height, vs.pix_fmt = 64, 64, "yuv420p"
    holder.start_encoding()
    assert not vs.codec_context.extradata
    packets = []
    for n in range(4):
        frame = av.VideoFrame.from_ndarray(new_image(64, 64), format="yuv420p")
        frame.pts, frame.time_base = n, Fraction(1, 30)
        packets += vs.encode(frame)
    assert ensure_parameter_sets(vs, bytes(packets[0]))
    assert [n[0] & 0x1F for n in split_annexb(vs.codec_context.extradata or b"")] == [7, 8]
    assert not ensure_parameter_sets(vs, bytes(packets[0]))  # only once
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        s = out.add_stream_from_template(vs)
        for p in packets:
            p.stream = s
            p.duration = 1
            out.mux(p)
    with av.open(io.BytesIO(buf.getvalue()), "r") as c:
        assert len(list(c.decode(video=0))) == 4
