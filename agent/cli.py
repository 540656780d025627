"""``custody agent ...``: the device side on the command line.

Only argparse is imported here; each command imports the agent's machinery when it runs, so
``custody --help`` works on an install without the agent extra.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

log = logging.getLogger("custody.agent")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``custody agent`` and its subcommands."""
    agent = sub.add_parser("agent", help="the device side: record, buffer, upload",
                           description="Run and inspect the recording agent of a body-worn recorder or Pi.")
    asub = agent.add_subparsers(dest="agent_command", metavar="COMMAND")
    asub.required = True

    def data_dir(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-dir", type=Path, required=True, help="the agent's data directory (key, buffer, state)")

    def media(p: argparse.ArgumentParser) -> None:
        p.add_argument("--source", default="synthetic",
                       help="synthetic | v4l2:/dev/videoN[+alsa:DEVICE] | file:PATH (default synthetic)")
        p.add_argument("--size", default="1280x720", help="frame size WxH (default 1280x720)")
        p.add_argument("--fps", default="30", help="frame rate (default 30)")
        p.add_argument("--chunk-seconds", type=int, default=5, help="chunk length, 1-60 s (default 5)")
        p.add_argument("--pre-event-seconds", type=int, default=30, help="pre-event buffer, 0-120 s (default 30)")
        p.add_argument("--bitrate", type=int, default=4_000_000, help="video bit rate in bit/s (default 4000000)")
        p.add_argument("--no-audio", action="store_true", help="record video only")
        p.add_argument("--fast", action="store_true",
                       help="synthetic source only: run on a simulated clock, faster than real time (self-tests)")

    def server(p: argparse.ArgumentParser) -> None:
        p.add_argument("--server", action="append", metavar="URL",
                       help="server API base URL (default: the one from enrollment); repeat it for other processes "
                            "of the same server, tried in turn when one cannot be reached")
        p.add_argument("--enroll-token", help="one-time enrollment token from a device admin (first start)")
        p.add_argument("--no-mqtt", action="store_true", help="deliver over HTTP only")

    p = asub.add_parser("record", help="record N seconds into the buffer (and upload them with --server)",
                        description="Record N seconds. With --server or an enrollment, upload while recording "
                        "and return once every chunk has its receipt (or say which have none).")
    data_dir(p)
    media(p)
    server(p)
    p.add_argument("--seconds", type=float, required=True, help="how long to record")
    p.add_argument("--receipt-timeout", type=float, default=120.0, help="seconds to wait for receipts (default 120)")
    p.set_defaults(handler=cmd_record)

    p = asub.add_parser("run", help="run the full device loop (enroll, arm, record on command, upload, report)")
    data_dir(p)
    media(p)
    server(p)
    p.add_argument("--no-arm", action="store_true", help="do not keep a pre-event buffer while idle")
    p.set_defaults(handler=cmd_run)

    for name, help_text in (("start", "start recording on the running agent"),
                            ("stop", "stop recording on the running agent")):
        p = asub.add_parser(name, help=help_text)
        data_dir(p)
        p.set_defaults(handler=cmd_control, op=name)

    p = asub.add_parser("status", help="the agent's state: recording, buffer, alarms")
    data_dir(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_status)

    buf = asub.add_parser("buffer", help="inspect the local buffer")
    bsub = buf.add_subparsers(dest="buffer_command", metavar="COMMAND")
    bsub.required = True
    p = bsub.add_parser("ls", help="list buffered entries (seq, times, size, sha256, state)")
    data_dir(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_buffer_ls)

    p = asub.add_parser("export-recording", help="remux a buffered recording's chunks into one MP4 (no re-encoding)")
    data_dir(p)
    p.add_argument("recording_id", help="the recording id (see 'buffer ls')")
    p.add_argument("-o", "--output", type=Path, required=True, help="output MP4 file")
    p.set_defaults(handler=cmd_export)


def _media_config(args: argparse.Namespace) -> Any:
    from agent.errors import AgentError
    from agent.media.config import MediaConfig

    try:
        width, height = (int(x) for x in args.size.lower().split("x"))
    except ValueError:
        raise AgentError(f"--size {args.size!r} is not WxH, e.g. 1280x720") from None
    try:
        fps = Fraction(args.fps)
    except (ValueError, ZeroDivisionError):
        raise AgentError(f"--fps {args.fps!r} is not a frame rate") from None
    return MediaConfig(width=width, height=height, fps=fps, chunk_seconds=args.chunk_seconds,
                       pre_event_seconds=args.pre_event_seconds, video_bitrate=args.bitrate, audio=not args.no_audio)


def _clock(args: argparse.Namespace) -> Any:
    from agent.errors import AgentError
    from custody.clock import FakeClock, SystemClock

    if getattr(args, "fast", False):
        if args.source != "synthetic":
            raise AgentError("--fast works only with the synthetic source")
        return FakeClock(SystemClock().now_ms(), auto_advance=True)
    return SystemClock()


async def _prepare(args: argparse.Namespace, *, source_seconds: float | None = None) -> Any:
    from agent.device import DeviceAgent

    agent = DeviceAgent(args.data_dir, _clock(args), source=args.source, media=_media_config(args),
                        source_seconds=source_seconds)
    report = await agent.open()
    for line in report.lines():
        print(f"buffer: {line}", file=sys.stderr)
    if args.enroll_token and not agent.enrolled:
        answer = await agent.enroll(args.enroll_token)
        print(f"enrolled as device {agent.device_id} with {answer.api_url}", file=sys.stderr)
    if agent.enrolled:
        servers: list[str] = args.server or []
        await agent.connect(mqtt=not args.no_mqtt, api_url=servers[0] if servers else None, fallback_urls=servers[1:])
    elif args.server:
        from agent.errors import AgentError

        await agent.close()
        raise AgentError("this device is not enrolled yet: add --enroll-token TOKEN (from 'custody admin "
                         "enroll-token create')")
    return agent


def cmd_record(args: argparse.Namespace) -> int:
    """``custody agent record``."""
    return asyncio.run(_record(args))


async def _record(args: argparse.Namespace) -> int:
    from agent.errors import AgentError

    if args.seconds <= 0:
        raise AgentError("--seconds must be positive")
    agent = await _prepare(args, source_seconds=args.seconds + 10)
    try:
        recording_id = await agent.start_recording(reason="cli-record")
        print(f"recording {recording_id} on device {agent.device_id} for {args.seconds:g} s", file=sys.stderr)
        recorder = agent.recorder
        assert recorder is not None
        # Wait on the footage itself (a real-time source, a file, or the simulated clock of --fast all
        # advance it), bounded in case the source stalls.
        try:
            async with asyncio.timeout(None if args.fast else args.seconds + 30):
                await recorder.wait_media_ms(int(args.seconds * 1000))
        except TimeoutError:
            raise AgentError(f"the source delivered less than {args.seconds:g} s of footage in time") from None
        if recorder.failure is not None:
            raise AgentError(f"recording failed: {recorder.failure}")
        await agent.stop_recording(reason="cli-record")
        print(f"recorded {agent.last_recording_chunks} chunks", file=sys.stderr)
        if agent.uploader is None:
            print("not enrolled: footage stays in the buffer until the agent runs with a server", file=sys.stderr)
            return 0
        try:
            async with asyncio.timeout(args.receipt_timeout):
                done = await agent.uploader.drained()
        except TimeoutError:
            done = False
        left = agent.buffer.entries()
        if done and not left:
            print("every entry has a verified receipt; local copies freed", file=sys.stderr)
            return 0
        print(f"{len(left)} entries have no receipt yet (seq {', '.join(str(e.seq) for e in left[:20])}"
              f"{'…' if len(left) > 20 else ''}); last error: {agent.uploader.stats.last_error}", file=sys.stderr)
        return 3
    finally:
        await agent.close()


def cmd_run(args: argparse.Namespace) -> int:
    """``custody agent run``."""
    return asyncio.run(_run(args))


async def _run(args: argparse.Namespace) -> int:
    agent = await _prepare(args)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await agent.serve_control()
        if not args.no_arm:
            await agent.arm()
        from agent.watchdog import notify

        notify("READY=1")
        print(f"agent running: device {agent.device_id}, state {agent.recording_state}; "
              f"control with 'custody agent start|stop --data-dir {args.data_dir}'", file=sys.stderr)
        while not stop.is_set():
            with_timeout = asyncio.ensure_future(stop.wait())
            await asyncio.wait({with_timeout}, timeout=10)
            notify("WATCHDOG=1")
        return 0
    finally:
        await agent.close()


def cmd_control(args: argparse.Namespace) -> int:
    """``custody agent start|stop``."""
    from agent.device import control_request

    reply = control_request(args.data_dir, args.op)
    print(f"{args.op}: recording {reply.get('recording_id')}")
    return 0


def _offline_buffer(data_dir: Path) -> Any:
    from agent.buffer import ChunkBuffer
    from agent.errors import AgentError
    from agent.identity import load_or_create_key
    from custody.clock import SystemClock

    if not (data_dir / "keys" / "device.key").exists():
        raise AgentError(f"{data_dir} is not an agent data directory (no device key)")
    buf = ChunkBuffer(data_dir / "buffer", load_or_create_key(data_dir / "keys"), SystemClock())
    # Inspection must not write evidence: a recording a crash cut is closed by the agent itself.
    buf.open(close_open_recording=False)
    return buf


def _running(data_dir: Path) -> bool:
    return (data_dir / "control.sock").exists()


def cmd_status(args: argparse.Namespace) -> int:
    """``custody agent status``."""
    from agent.device import control_request

    if _running(args.data_dir):
        status = control_request(args.data_dir, "status")["status"]
    else:
        buf = _offline_buffer(args.data_dir)
        try:
            stats = buf.stats()
            status = {"device_id": buf.device_id, "state": "not running", "last_seq": buf.head_seq,
                      "head": buf.head_hash if buf.head_seq is not None else None, **stats,
                      "alarms": sorted(buf.alarms)}
        finally:
            buf.close()
    if args.json:
        print(json.dumps(status, indent=1))
    else:
        for key in ("device_id", "state", "recording_id", "officer_id", "case_step", "last_seq", "head",
                    "buffered_chunks", "buffered_bytes", "storage_free", "battery_pct", "alarms"):
            if key in status:
                print(f"{key:16s} {status[key]}")
    return 0


def cmd_buffer_ls(args: argparse.Namespace) -> int:
    """``custody agent buffer ls``."""
    from datetime import UTC, datetime

    from agent.device import control_request

    if _running(args.data_dir):
        entries = control_request(args.data_dir, "ls")["entries"]
    else:
        buf = _offline_buffer(args.data_dir)
        try:
            entries = [e.to_record() for e in buf.entries()]
        finally:
            buf.close()
    if args.json:
        print(json.dumps(entries, indent=1))
        return 0
    print(f"{'seq':>8} {'kind':6} {'state':10} {'recording':28} {'start (UTC)':24} {'dur ms':>7} {'bytes':>10} sha256")
    for e in entries:
        start = datetime.fromtimestamp(e["start_ms"] / 1000, UTC).isoformat(timespec="milliseconds")[:23]
        what = e["kind"] if e["kind"] == "chunk" else e["event"]
        print(f"{e['seq']:>8} {what:6} {e['state']:10} {e['recording_id']:28} {start:24} {e['duration_ms']:>7} "
              f"{e['size']:>10} {e['sha256'] or '-'}")
    print(f"{len(entries)} entries held", file=sys.stderr)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """``custody agent export-recording``."""
    from agent.errors import AgentError
    from agent.media.export import export_recording

    buf = _offline_buffer(args.data_dir) if not _running(args.data_dir) else None
    if buf is None:
        raise AgentError("stop the agent first, or export from the server (the agent is running)")
    try:
        held = [e for e in buf.entries() if e.recording_id == args.recording_id]
        chunks = sorted((e for e in held if e.kind == "chunk"), key=lambda e: e.seq)
        if not held:
            raise AgentError(f"recording {args.recording_id} is not in the buffer (see 'custody agent buffer ls')")
        if not chunks:
            raise AgentError(f"recording {args.recording_id} has no chunks left in the buffer")
        indexes = [e.index for e in chunks]
        if indexes != list(range(indexes[0], indexes[0] + len(indexes))) or indexes[0] != 0:
            raise AgentError(f"recording {args.recording_id}: only chunks {indexes[0]}-{indexes[-1]} are still "
                             "here (the rest were uploaded and freed); export it from the server")
        result = export_recording([buf.read(e.seq)[0] for e in chunks], args.output)
    finally:
        buf.close()
    print(f"wrote {result.path}: {result.chunks} chunks remuxed without re-encoding, "
          f"{result.video_frames} frames, {result.duration_ms / 1000:.1f} s")
    return 0
