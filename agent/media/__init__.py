"""Media half of the agent: sources, watermark, H.264/AAC encoding, keyframe-aligned MP4 chunks,
the pre-event ring, recording export, and the :class:`~agent.media.recorder.Recorder` tying them
together. Nothing here signs, stores or knows about protocol/: it hands closed
:class:`~agent.media.chunk.EncodedChunk` objects to whoever consumes them.
"""
