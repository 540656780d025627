"""The hand-off: what the media pipeline produces is what the buffer signs and commits.

The buffer takes any object with the :class:`agent.buffer.ChunkMeta` fields; this pins that an
:class:`EncodedChunk` is one (statically and at run time, through the manifest's validation),
for chunks with and without sound, and that a whole recording chains and reads back intact.
"""

from __future__ import annotations

from pathlib import Path

from agent.buffer import ChunkBuffer, ChunkMeta
from agent.media.chunk import EncodedChunk
from agent.media.export import export_recording
from custody.clock import FakeClock
from protocol.chain import verify_chain
from protocol.keys import SigningKey

from .recording import Run


def test_a_recording_goes_into_the_buffer_signed_and_chained(recording_run: Run, tmp_path: Path) -> None:
    key = SigningKey.generate()
    buf = ChunkBuffer(tmp_path / "buffer", key, FakeClock())
    buf.open()
    chunks: list[EncodedChunk] = recording_run.chunks
    assert any(c.audio_codec is None for c in chunks)  # pre-event chunks have no sound
    assert any(c.audio_codec is not None for c in chunks)
    buf.commit_event("rec-1", "start", "007", None)
    for i, chunk in enumerate(chunks):
        meta: ChunkMeta = chunk  # the type checker holds EncodedChunk to the buffer's protocol
        buf.commit_chunk(chunk.data, meta, recording_id="rec-1", index=i, officer_id="007", case_step=None)
    buf.commit_event("rec-1", "stop", "007", None, chunks=len(chunks))
    envelopes = [buf.read(e.seq)[1] for e in buf.entries()]
    verify_chain(envelopes, key.public)
    stored = [media for entry, media in buf.iter_recording("rec-1") if entry.kind == "chunk"]
    assert stored == [c.data for c in chunks]
    result = export_recording(stored, tmp_path / "rec-1.mp4")
    assert result.video_frames == sum(c.video_frames for c in chunks)
    buf.close()
