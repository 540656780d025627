import io
import struct

import av
import pytest

from agent.errors import ChunkFormatError
from agent.media.chunk_check import _top_level_order
from agent.media.faststart import faststart

from .recording import moov_last_chunk


@pytest.fixture(scope="module")
def moov_last() -> bytes:
    """A chunk as FFmpeg writes it to memory: moov after mdat."""
    return moov_last_chunk()


def decoded(data: bytes) -> list[bytes]:
    with av.open(io.BytesIO(data), "r") as c:
        frames = [f.to_ndarray().tobytes() for f in c.decode(video=0)]
    with av.open(io.BytesIO(data), "r") as c:
        frames += [f.to_ndarray().tobytes() for f in c.decode(audio=0)]
    return frames


def test_moov_moves_in_front_and_the_media_is_unchanged(moov_last):
    assert _top_level_order(moov_last).index(b"moov") > _top_level_order(moov_last).index(b"mdat")
    fast = faststart(moov_last)
    kinds = _top_level_order(fast)
    assert kinds.index(b"moov") < kinds.index(b"mdat")
    assert len(fast) == len(moov_last)
    assert decoded(fast) == decoded(moov_last)


def test_faststart_is_idempotent(moov_last):
    fast = faststart(moov_last)
    assert faststart(fast) is fast


def test_not_an_mp4_is_refused():
    with pytest.raises(ChunkFormatError, match="no moov"):
        faststart(struct.pack(">I4s", 16, b"ftyp") + b"isom\x00\x00\x00\x00")
    with pytest.raises(ChunkFormatError, match="bad size"):
        faststart(struct.pack(">I4s", 99, b"ftyp"))
