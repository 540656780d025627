"""Real, small MP4 chunks made with PyAV, with the CodecInfo a device would declare for them."""

from __future__ import annotations

import functools
import hashlib
import io
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

from protocol.messages import CodecInfo
from server import mp4


@dataclass(frozen=True)
class Chunk:
    """Bytes plus what the manifest must say about them."""

    data: bytes
    codec: CodecInfo
    duration_ms: int

    @functools.cached_property
    def sha256(self) -> str:
        """Hex SHA-256 of the bytes, computed once: a device hashes its chunk as it records it, so
        a bench that sends the same chunk many times should not pay for it on every send."""
        return hashlib.sha256(self.data).hexdigest()


@functools.lru_cache(maxsize=16)
def make_chunk(seconds: float = 1.0, fps: int = 10, width: int = 160, height: int = 120, audio: bool = True,
               bitrate: int | None = None, seed: int = 0) -> Chunk:
    """Encode ``seconds`` of synthetic video (and a tone) into a standalone MP4 chunk."""
    buf = io.BytesIO()
    frames = round(seconds * fps)
    rate = 16000
    rng = np.random.default_rng(seed)
    with av.open(buf, mode="w", format="mp4") as out:
        v = out.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = width, height, "yuv420p"
        opts: dict[str, str] = {"g": str(frames), "keyint_min": str(frames), "sc_threshold": "0", "preset": "ultrafast",
                "tune": "zerolatency"}
        if bitrate:
            v.bit_rate = bitrate
            opts.update({"x264-params": f"nal-hrd=cbr:bitrate={bitrate // 1000}:vbv-maxrate={bitrate // 1000}:"
                                        f"vbv-bufsize={bitrate // 1000}"})
        v.options = opts  # type: ignore[assignment]
        a = out.add_stream("aac", rate=rate) if audio else None
        if a is not None:
            a.layout = "mono"
        samples = 0
        for i in range(frames):
            if bitrate:
                ydata = rng.integers(0, 255, (height * 3 // 2, width), dtype=np.uint8)
            else:
                ydata = np.full((height * 3 // 2, width), (i * 7 + seed) % 255, dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(ydata, format="yuv420p")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            for packet in v.encode(frame):
                out.mux(packet)
        for packet in v.encode():
            out.mux(packet)
        if a is not None:
            total = round(seconds * rate)
            t = np.arange(total) / rate
            pcm = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32).reshape(1, -1)
            for start in range(0, total, 1024):
                part = pcm[:, start:start + 1024]
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(part), format="fltp", layout="mono")
                af.sample_rate = rate
                af.pts = start
                af.time_base = Fraction(1, rate)
                samples += part.shape[1]
                for packet in a.encode(af):
                    out.mux(packet)
            for packet in a.encode():
                out.mux(packet)
    duration_ms = round(frames * 1000 / fps)
    codec = CodecInfo(container="mp4", video="h264", width=width, height=height, fps_num=fps, fps_den=1,
                      video_frames=frames, audio="aac" if audio else None, audio_rate=rate if audio else None,
                      audio_samples=samples if audio else None)
    return Chunk(buf.getvalue(), codec, duration_ms)


def with_garbage_keyframe(data: bytes) -> bytes:
    """The same MP4 (sample tables and sizes intact: the media check passes) with its first video
    sample's bytes zeroed, so that only decoding finds the damage."""
    video = mp4.read_movie(data).first("vide")
    assert video is not None and video.first_sample is not None
    offset, size = video.first_sample
    return data[:offset] + b"\0" * size + data[offset + size:]
