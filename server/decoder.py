"""Footage is decoded in worker processes of the server's own, at a lower CPU priority.

Two reasons, both about whose bytes these are and what comes first:

1. **Isolation.** A chunk's bytes are a device's, and a device may be lost, stolen or tampered
   with. FFmpeg's decoders are large C code with a long record of crashes on crafted input. In
   the server process a decoder that crashes takes ingest down for the whole fleet, and one that
   never returns holds a thread for ever. In a worker the same fault costs only that worker. It
   is started again, and the chunk that caused it gets its ``media.decode_failed`` finding ("the
   decoder process died", or "took longer than ..."), found by decoding the chunks of the failed
   call again one at a time.
2. **Priority.** The receipt does not wait for a decode. Decoding "follows asynchronously"
   (issue 4): the first keyframe right after the receipt, every frame by the scrubber. A worker
   runs at a higher niceness (``ingest.decode_niceness``). It gets every core the receipts leave
   idle, and yields them when requests come in. A thread of the server process could not: its
   priority is the process's, and its decodes took cores from the receipts. On the ingest bench
   (8 devices, SQLite) decodes in a thread gave 0.45 - 0.55x the raw PUT; in a process at
   niceness 19 they gave 0.63x, the decodes done 0.6 s after the last receipt (bench/RESULTS.md).
   A queue that grows under load is safe: the jobs are in memory up to ``DECODE_FRAMES_HELD``
   samples, and chunks not yet decoded are found again in the database after a restart.

Between the server and a worker, frames go over the worker's stdin and stdout. Each frame is an
8-byte header (JSON length, blob length), a JSON object, then the blobs. The server reads only
JSON back, never pickle, and checks its types as it would any other input: the worker handles
untrusted media, so what it answers is not trusted either. The worker writes nothing else on
that channel: its stdout (file descriptor 1, where FFmpeg or a library might print) goes to
stderr, the server's log.

Run as ``python -m server.decoder [NICENESS]`` by :class:`Decoder`; not a command for people.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import os
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from server.media import FirstFrame

log = logging.getLogger(__name__)

#: The frame header: JSON length, then the length of the blobs that follow it.
_HEAD = struct.Struct(">II")
#: A worker's answer is a small JSON object; anything larger is not one.
_MAX_ANSWER = 1 << 20
#: Seconds a stopping worker gets to exit once its stdin is closed, before it is killed.
_EXIT_GRACE_S = 2.0


def _pack(header: dict[str, Any], blobs: Sequence[bytes] = ()) -> bytes:
    head = json.dumps({**header, "blobs": [len(b) for b in blobs]}, separators=(",", ":")).encode()
    return _HEAD.pack(len(head), sum(len(b) for b in blobs)) + head + b"".join(blobs)


def _split(header: dict[str, Any], payload: bytes) -> list[bytes]:
    blobs, at = [], 0
    for n in header.get("blobs", []):
        blobs.append(payload[at:at + n])
        at += n
    return blobs


# -- the worker process ----------------------------------------------------------------------


def _read_exact(stream: IO[bytes], n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        more = stream.read(n - len(data))
        if not more:
            return None
        data += more
    return data


def _why(exc: Exception, prefix: str) -> str:
    """A decode's failure as its finding says it: the decoders' own ValueError text, or, for
    anything unexpected, its type and text (the worker answers; it does not die of it)."""
    return str(exc) if isinstance(exc, ValueError) else f"{prefix}: {type(exc).__name__}: {exc}"


def handle(header: dict[str, Any], blobs: list[bytes]) -> dict[str, Any]:
    """One request, as a worker runs it: ``first`` (held first samples: each one's error or None),
    ``first_of`` (a stored object's first keyframe) or ``all`` (every frame of a stored object)."""
    from server import media  # imported here: the server's side of this module needs no FFmpeg

    op = header.get("op")
    if op == "first":
        errors: list[str | None] = []
        for i, spec in enumerate(header["frames"]):
            frame = media.FirstFrame(spec["codec"], blobs[2 * i], blobs[2 * i + 1], spec["width"], spec["height"])
            try:
                media.decode_frame(frame)
                errors.append(None)
            except Exception as exc:
                errors.append(_why(exc, "first frame does not decode"))
        return {"errors": errors}
    if op == "first_of":
        try:
            media.decode_first_frame(blobs[0])
        except Exception as exc:
            return {"error": _why(exc, "first frame does not decode")}
        return {"error": None}
    if op == "all":
        try:
            return {"frames": media.decode_all_frames(blobs[0]), "error": None}
        except Exception as exc:
            return {"frames": None, "error": _why(exc, "decoding failed")}
    return {"refused": f"unknown op {op!r}"}


def main(argv: Sequence[str] | None = None) -> None:
    """The worker: lower its priority, then answer requests on stdin until stdin closes."""
    args = list(sys.argv[1:] if argv is None else argv)
    niceness = int(args[0]) if args else 0
    if niceness:
        os.nice(niceness)
    requests = sys.stdin.buffer
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever else writes to stdout (a library, FFmpeg) lands in the log, not the channel
    sys.stdout = sys.stderr
    while (head := _read_exact(requests, _HEAD.size)) is not None:
        json_len, blob_len = _HEAD.unpack(head)
        header_bytes = _read_exact(requests, json_len)
        payload = _read_exact(requests, blob_len)
        if header_bytes is None or payload is None:
            return
        header = json.loads(header_bytes)
        start = time.process_time()
        answer = handle(header, _split(header, payload))
        answer["cpu_s"] = time.process_time() - start
        answers.write(_pack(answer))
        answers.flush()


# -- the server's side -----------------------------------------------------------------------


class WorkerDied(Exception):
    """A worker did not answer a request: it died, took too long, or answered nonsense.

    ``blame``: what was decoded is the likely cause (a signal such as SIGSEGV, a timeout, an
    answer no worker sends). A worker that exited with a status instead could not run at all
    (its interpreter or FFmpeg failed to load): no chunk is to blame, and the decodes stay
    pending (:class:`DecoderUnavailable`) rather than become findings against good footage.
    """

    def __init__(self, message: str, *, blame: bool = True) -> None:
        super().__init__(message)
        self.blame = blame


class DecoderUnavailable(RuntimeError):
    """No worker could run (see :class:`WorkerDied`); the decodes are left for a later try."""


@dataclass(frozen=True, slots=True)
class FullDecode:
    """Every frame of a stored object decoded (the scrubber's check)."""

    frames: int | None  # video frames decoded; None when it failed
    error: str | None  # why it failed
    cpu_s: float  # the worker's CPU time for it


class _Worker:
    """One worker process and its channel, driven by a thread of its own.

    The channel is blocking I/O in that thread, not the event loop's pipes: a request carries up
    to 32 keyframes (a few megabytes), and through the loop it crossed the 64 KiB pipe in as
    many turns of a loop busy with requests, so the decodes fell behind while the worker idled
    (the ingest bench's decodes finished 2.2 s after the last receipt). The loop now waits for
    one answer a request.
    """

    def __init__(self, command: Sequence[str]) -> None:
        self.proc = subprocess.Popen(list(command), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._io = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="decoder-io")

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def _died(self) -> WorkerDied:
        """Why it did not answer (in the worker's thread, once its channel failed): reaped, pipes closed."""
        try:
            self.proc.wait(_EXIT_GRACE_S)
        except subprocess.TimeoutExpired:
            self.kill()
            self.proc.wait()
            return WorkerDied("stopped answering")
        finally:
            for pipe in (self.proc.stdin, self.proc.stdout):
                with contextlib.suppress(OSError, ValueError):
                    if pipe is not None:
                        pipe.close()
        code = self.proc.returncode
        if code < 0:
            with contextlib.suppress(ValueError):
                return WorkerDied(f"died ({signal.Signals(-code).name})")
            return WorkerDied(f"died (signal {-code})")
        return WorkerDied(f"exited with status {code}", blame=False)

    def _roundtrip(self, request: bytes) -> dict[str, Any]:
        """Send a request and read its answer (in the worker's thread)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(request)
            self.proc.stdin.flush()
            head = _read_exact(self.proc.stdout, _HEAD.size)
            if head is None:
                raise self._died()
            json_len, blob_len = _HEAD.unpack(head)
            if json_len > _MAX_ANSWER or blob_len:
                raise self._refused("answered with a frame no worker sends")
            body = _read_exact(self.proc.stdout, json_len)
        except (BrokenPipeError, ConnectionError, ValueError):  # ValueError: its pipe closed by kill()
            raise self._died() from None
        if body is None:
            raise self._died()
        try:
            answer = json.loads(body)
        except ValueError:
            raise self._refused("answered with something that is not JSON") from None
        if not isinstance(answer, dict):
            raise self._refused("answered with something that is not a JSON object")
        return answer

    def _refused(self, why: str) -> WorkerDied:
        """A worker that answered nonsense: killed and reaped, its pipes closed."""
        self.kill()
        self._died()
        return WorkerDied(why)

    async def call(self, request: bytes, timeout_s: float) -> dict[str, Any]:
        """The worker's answer to ``request``; WorkerDied when there is none within ``timeout_s``.
        Cancelled, it kills the worker: the answer would otherwise be read as the next request's."""
        pending = asyncio.get_running_loop().run_in_executor(self._io, self._roundtrip, request)
        # Left behind when cancelled: its WorkerDied (the kill below) is expected, not news.
        pending.add_done_callback(lambda f: f.cancelled() or f.exception())
        try:
            return await asyncio.wait_for(asyncio.shield(pending), timeout_s)
        except TimeoutError:
            self.kill()
            with contextlib.suppress(WorkerDied):
                await pending
            raise WorkerDied(f"took longer than {timeout_s:g} s and was stopped") from None
        except asyncio.CancelledError:
            self.kill()
            raise

    def abandon(self) -> None:
        """Kill it and let its thread end once the read under way returns (after a death or a cancel)."""
        self.kill()
        self._io.shutdown(wait=False)

    def kill(self) -> None:
        """Kill it now; whoever waits on its answer sees it die."""
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()

    def _stop(self) -> None:
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(_EXIT_GRACE_S)
        except subprocess.TimeoutExpired:
            self.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    async def stop(self) -> None:
        """Close its stdin and wait for it to exit (killed after a grace)."""
        await asyncio.get_running_loop().run_in_executor(None, self._stop)
        self._io.shutdown(wait=False)


def _command(niceness: int) -> list[str]:
    # -P: the worker must import this very package, never a "server" directory that happens to be
    # in the working directory (-m would put it first on the path).
    return [sys.executable, "-P", "-m", "server.decoder", str(niceness)]


class Decoder:
    """Decodes in up to ``workers`` worker processes at ``niceness``, each started on first use
    and again after it died; calls beyond the workers wait for one.

    ``timeout_s`` is the longest one chunk's decode may take; a call's limit is that times its
    chunks. ``command`` starts a worker (tests give a worker that crashes or hangs on purpose).
    """

    def __init__(self, workers: int = 1, niceness: int = 10, timeout_s: float = 60.0,
                 command: Sequence[str] | None = None) -> None:
        self.timeout_s = timeout_s
        self._command = list(command) if command is not None else _command(niceness)
        self._slots = asyncio.Queue[_Worker | None]()
        for _ in range(workers):
            self._slots.put_nowait(None)
        self._running: set[_Worker] = set()
        self._closed = False
        #: Workers started so far, and how many of them died or were stopped mid-request.
        self.started = 0
        self.failures = 0

    def pids(self) -> list[int]:
        """The running workers' process ids (the benches count their CPU as the server's)."""
        return [w.proc.pid for w in self._running if w.alive]

    async def _call(self, header: dict[str, Any], blobs: Sequence[bytes], chunks: int) -> dict[str, Any]:
        if self._closed:
            raise RuntimeError("the decoder is closed")
        worker = await self._slots.get()
        try:
            if worker is None or not worker.alive:
                worker = _Worker(self._command)
                self._running.add(worker)
                self.started += 1
            try:
                answer = await worker.call(_pack(header, blobs), self.timeout_s * max(chunks, 1))
            except WorkerDied as exc:
                self.failures += 1
                self._running.discard(worker)
                worker.abandon()
                worker = None
                log.warning("decoder worker %s (%s; started again on the next decode)", exc, header.get("op"))
                if not exc.blame:
                    raise DecoderUnavailable(f"the decoder worker could not run: it {exc} (see the log)") from None
                raise
            except BaseException:  # cancelled mid-request: its answer would be read as the next one's
                self._running.discard(worker)
                worker.abandon()
                worker = None
                raise
            if "refused" in answer:
                raise RuntimeError(f"decoder worker refused the request: {answer['refused']}")
            return answer
        finally:
            self._slots.put_nowait(worker)

    async def first_frames(self, frames: Sequence[FirstFrame]) -> list[str | None]:
        """Decode held first samples (:class:`server.media.FirstFrame`): each one's error, or None
        when it decoded. A worker that dies on a group is found out by decoding each alone; the
        one it dies on alone gets the death as its error."""
        if not frames:
            return []
        header = {"op": "first", "frames": [{"codec": f.codec, "width": f.width, "height": f.height}
                                            for f in frames]}
        blobs = [b for f in frames for b in (f.config, f.sample)]
        try:
            answer = await self._call(header, blobs, len(frames))
        except WorkerDied as exc:
            if len(frames) == 1:
                return [f"first frame does not decode: the decoder process {exc}"]
            return [error for f in frames for error in await self.first_frames([f])]
        errors = answer.get("errors")
        if not (isinstance(errors, list) and len(errors) == len(frames)
                and all(e is None or isinstance(e, str) for e in errors)):
            raise RuntimeError("decoder worker answered a list of the wrong shape")
        return errors

    async def first_frame_of(self, data: bytes) -> str | None:
        """Decode a stored object's first video frame: why it failed, or None."""
        try:
            answer = await self._call({"op": "first_of"}, [data], 1)
        except WorkerDied as exc:
            return f"first frame does not decode: the decoder process {exc}"
        error = answer.get("error")
        if not (error is None or isinstance(error, str)):
            raise RuntimeError("decoder worker answered an error that is not text")
        return error

    async def all_frames(self, data: bytes) -> FullDecode:
        """Decode every frame of a stored object (the scrubber's check)."""
        try:
            answer = await self._call({"op": "all"}, [data], 1)
        except WorkerDied as exc:
            return FullDecode(None, f"decoding failed: the decoder process {exc}", 0.0)
        frames, error, cpu = answer.get("frames"), answer.get("error"), answer.get("cpu_s", 0.0)
        if not ((frames is None or (isinstance(frames, int) and not isinstance(frames, bool)))
                and (error is None or isinstance(error, str)) and isinstance(cpu, (int, float))
                and (frames is None) != (error is None)):
            raise RuntimeError("decoder worker answered a full decode of the wrong shape")
        return FullDecode(frames, error, float(cpu))

    async def close(self) -> None:
        """Stop every worker (each exits once its stdin closes). Calls after this are refused."""
        self._closed = True
        running, self._running = list(self._running), set()
        await asyncio.gather(*(w.stop() for w in running))


if __name__ == "__main__":
    main()
