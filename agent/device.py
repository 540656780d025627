"""The device: everything a body-worn recorder or Pi runs, tied together.

:class:`DeviceAgent` owns the device key, the crash-safe buffer, the recorder (source ->
encoder -> chunks), and, when a server is configured, the uploader, the MQTT link, the status
reports and the command handlers. The button, the CLI (through the local control socket) and
server commands all drive the same recording state machine (idle -> armed -> recording ->
armed), and every transition that matters is a signed chain entry.

Files in the data directory::

    keys/device.key        the device key (0600; generated at first start, never sent or logged)
    buffer/                the crash-safe chunk buffer (see agent/buffer.py)
    enrollment.json        the server's signed enrollment answer and the fingerprint it was pinned to (0600)
    state.json             officer and case step in use, settings pushed by the server
    commands-seen.json     ids and nonces of commands received, until they expire (replay defence)
    control.sock           local control socket (custody agent start/stop/status)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket as socketlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from agent.buffer import BufferedEntry, ChunkBuffer, RecoveryReport
from agent.client import ServerClient
from agent.commands import CommandGate, SeenCommands
from agent.errors import AgentError, StorageFullError
from agent.fsops import FileOps
from agent.identity import load_or_create_key
from agent.live import LiveTap, LiveView, TeeSource
from agent.media.chunk import EncodedChunk
from agent.media.config import MediaConfig
from agent.media.recorder import ChunkSink, Recorder, RecorderState
from agent.media.sources.spec import open_source
from agent.mqtt import MqttLink
from agent.uploader import Uploader
from custody.clock import Clock
from custody.tasks import cancel_and_wait
from protocol.checkpoint import Checkpoint, NoteVerifier, SignedNote
from protocol.enrollment import EnrollmentToken, open_enrollment_answer
from protocol.errors import CustodyError, RemoteProtocolError
from protocol.keys import VerifyKey
from protocol.messages import CheckpointRef, Command, CommandKind, DeviceStatus, EnrollmentAnswer
from protocol.schema import check_id

log = logging.getLogger(__name__)

FIRMWARE = "custody-agent/0.1.0"
#: Command kinds this build carries out.
SUPPORTED_COMMANDS = CommandKind.ALL


class RecorderLike(Protocol):
    """What the device needs of a recorder: the real one (agent.media.recorder.Recorder) or a
    simulator's replay recorder, which hands on pre-encoded chunks instead of encoding."""

    @property
    def state(self) -> RecorderState: ...

    @property
    def failure(self) -> BaseException | None: ...

    def set_officer(self, officer_id: str | None) -> None: ...

    async def arm(self) -> None: ...

    async def start_recording(self) -> Any: ...

    async def stop_recording(self) -> Any: ...

    async def disarm(self) -> None: ...

    async def wait_media_ms(self, media_ms: int) -> None: ...

    @property
    def media_ms(self) -> int: ...


RecorderFactory = Callable[[ChunkSink, str, str | None], RecorderLike]


@dataclass(slots=True)
class DeviceState:
    """What the device was told to use, kept across restarts."""

    officer_id: str | None = None
    case_step: str | None = None
    status_interval_s: float = 30.0
    bandwidth_bps: int | None = None
    config_version: str = "0"

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "officer_id": self.officer_id, "case_step": self.case_step,
            "status_interval_s": self.status_interval_s, "bandwidth_bps": self.bandwidth_bps,
            "config_version": self.config_version,
        }


class DeviceAgent:
    """One device. Use as: ``await agent.open()``, optionally ``await agent.connect(...)``, then record."""

    def __init__(
        self,
        data_dir: Path,
        clock: Clock,
        *,
        source: str = "synthetic",
        media: MediaConfig | None = None,
        source_seconds: float | None = None,
        reserve_bytes: int | None = None,
        upload_concurrency: int = 2,
        ops: FileOps | None = None,
        recorder_factory: RecorderFactory | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.clock = clock
        self.source_spec = source
        self.media = media or MediaConfig()
        self.source_seconds = source_seconds
        self.ops = ops or FileOps()
        self.ops.makedirs(data_dir, mode=0o700)
        self.key = load_or_create_key(data_dir / "keys", self.ops)
        self.device_id = self.key.public.device_id
        kw: dict[str, Any] = {"reserve_bytes": reserve_bytes} if reserve_bytes is not None else {}
        self.buffer = ChunkBuffer(data_dir / "buffer", self.key, clock, ops=self.ops, **kw)
        self.state = self._load_state()
        self.answer: EnrollmentAnswer | None = None
        self.server_fingerprint: str | None = None
        self.recorder: RecorderLike | None = None
        self.recorder_factory = recorder_factory
        self.session = session
        self.uploader: Uploader | None = None
        self.client: ServerClient | None = None
        self.mqtt: MqttLink | None = None
        self.upload_concurrency = upload_concurrency
        self.checkpoint: CheckpointRef | None = None
        self.gate = CommandGate(self.key, self.server_keys, clock, SeenCommands(data_dir / "commands-seen.json",
                                                                                 self.ops),
                                supported=SUPPORTED_COMMANDS)
        self._recording_id: str | None = None
        self._index = 0
        self.last_recording_chunks = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._control: asyncio.base_events.Server | None = None
        self._record_lock = asyncio.Lock()
        self.alarms: set[str] = set()
        # Live view taps the recorder's own frames (agent/live.py): the camera is opened once.
        self.live_tap = LiveTap()
        self.live = LiveView(self.live_tap, clock, self._post_signed, self._live_arm, self._live_disarm)

    # -- persistence ---------------------------------------------------------------------------

    def _load_state(self) -> DeviceState:
        path = self.data_dir / "state.json"
        if not path.exists():
            return DeviceState()
        try:
            return DeviceState(**json.loads(self.ops.read(path)))
        except (ValueError, TypeError):
            log.warning("state.json is damaged; starting with defaults (officer and step unset)")
            return DeviceState()

    def save_state(self) -> None:
        """Persist officer, step and pushed settings."""
        self.ops.write_atomic(self.data_dir / "state.json", json.dumps(self.state.to_json(), indent=1).encode())

    def _load_enrollment(self) -> None:
        path = self.data_dir / "enrollment.json"
        if not path.exists():
            return
        record = json.loads(self.ops.read(path))
        # Re-checked at every start: a tampered file must not swap the server keys the device trusts.
        self.answer, _ = open_enrollment_answer(record["fingerprint"], record["answer"].encode(), self.key.public.raw)
        self.server_fingerprint = record["fingerprint"]

    @property
    def enrolled(self) -> bool:
        """True once the device holds a verified enrollment answer."""
        return self.answer is not None

    def server_keys(self) -> list[VerifyKey]:
        """The server keys (current and earlier) learned at enrollment."""
        return [k.verify_key for k in self.answer.server_keys] if self.answer else []

    # -- lifecycle -----------------------------------------------------------------------------

    async def open(self) -> RecoveryReport:
        """Recover the buffer (closing a recording a crash cut) and load the enrollment."""
        report = await asyncio.to_thread(self.buffer.open)
        self._load_enrollment()
        self.alarms |= self.buffer.alarms
        return report

    async def enroll(self, token_text: str) -> EnrollmentAnswer:
        """Enroll with a one-time token (the server URL is in the token)."""
        token = EnrollmentToken.parse(token_text)
        client = ServerClient(token.api_url, self.key, self.clock, session=self.session)
        try:
            answer, cert, raw = await client.enroll(
                token, serial=os.uname().nodename[:64] or "unknown", model="custody-agent", nonce=secrets.token_hex(16)
            )
        finally:
            await client.close()
        record = {"fingerprint": token.server_fingerprint, "answer": raw.decode("ascii")}
        old = os.umask(0o077)
        try:
            self.ops.write_atomic(self.data_dir / "enrollment.json", json.dumps(record).encode(), mode=0o600)
        finally:
            os.umask(old)
        self.answer, self.server_fingerprint = answer, token.server_fingerprint
        log.info("enrolled as %s with %s (certificate issued by key %s)", self.device_id, answer.api_url,
                 cert.issuer_key_id)
        return answer

    async def connect(self, *, mqtt: bool = True, api_url: str | None = None,
                      fallback_urls: Sequence[str] = ()) -> None:
        """Start delivering to the server: uploader, and the MQTT link and status reports when configured.

        ``api_url`` (default: the enrollment answer's) is tried first; ``fallback_urls`` are other
        processes of the same server, used in turn while the current one cannot be reached.
        """
        if self.answer is None:
            raise AgentError("this device is not enrolled: run with --enroll-token TOKEN from your device admin")
        self.client = ServerClient(api_url or self.answer.api_url, self.key, self.clock, device_id=self.device_id,
                                   session=self.session, fallback_urls=fallback_urls)
        self.uploader = Uploader(self.buffer, self.client, self.server_keys, self.clock,
                                 concurrency=self.upload_concurrency, bandwidth_bps=self.state.bandwidth_bps)
        self._tasks.append(asyncio.create_task(self.uploader.run(), name="uploader"))
        if mqtt and self.answer.mqtt_url:
            self.mqtt = MqttLink(
                self.answer.mqtt_url, self.device_id, username=self.answer.mqtt_username,
                password=self.answer.mqtt_password, clock=self.clock, on_command=self.on_command,
                on_receipt=self.on_receipt, on_checkpoint=self.on_checkpoint,
            )
            self._tasks.append(asyncio.create_task(self.mqtt.run(), name="mqtt"))
            self._tasks.append(asyncio.create_task(self._status_loop(), name="status"))
        self.uploader.wake()

    async def _cancel_tasks(self) -> None:
        """Cancel the background work (uploader, MQTT link, status) and wait for it to end."""
        await cancel_and_wait(self._tasks)
        self._tasks.clear()

    async def _stop_mqtt(self) -> None:
        if self.mqtt is None:
            return
        await self.mqtt.stop()
        link = [t for t in self._tasks if t.get_name() == "mqtt"]
        if link:
            # The link leaves its message wait by itself once stopped; cancel only if it does not.
            await asyncio.wait(link, timeout=5)

    async def disconnect(self) -> None:
        """Stop talking to the server (uploader, MQTT, status) while recording carries on."""
        await self._stop_mqtt()
        await self._cancel_tasks()
        self.mqtt = None
        self.uploader = None
        if self.client is not None:
            await self.client.close()
            self.client = None

    async def crash(self) -> None:
        """Stop dead, as a power cut would: no stop event, nothing flushed (simulators and tests)."""
        await asyncio.to_thread(self.buffer.abandon)
        if self.recorder is not None:
            with contextlib.suppress(Exception):
                await self.recorder.disarm()
        self._recording_id = None
        await self._cancel_tasks()
        if self.client is not None:
            await self.client.close()

    async def close(self) -> None:
        """Stop recording (writing its stop event), stop background work, release files."""
        await self.live.close()
        if self.recorder is not None:
            with contextlib.suppress(CustodyError):
                await self.stop_recording(reason="agent-shutdown")
            await self.recorder.disarm()
        if self._control is not None:
            self._control.close()
            with contextlib.suppress(FileNotFoundError):
                (self.data_dir / "control.sock").unlink()
        if self.mqtt is not None:
            with contextlib.suppress(Exception):
                await self.send_status()
            await self._stop_mqtt()
        await self._cancel_tasks()
        if self.client is not None:
            await self.client.close()
        self.buffer.close()

    # -- recording -----------------------------------------------------------------------------

    def _recorder(self) -> RecorderLike:
        if self.recorder is None and self.recorder_factory is not None:
            self.recorder = self.recorder_factory(self._sink, self.device_id, self.state.officer_id)
        if self.recorder is None:
            source = open_source(
                self.source_spec, self.clock, width=self.media.width, height=self.media.height,
                fps=self.media.fps, audio=self.media.audio, audio_rate=self.media.audio_rate,
                audio_channels=self.media.audio_channels, seconds=self.source_seconds,
            )
            self.recorder = Recorder(TeeSource(source, self.live_tap), self.media, self.clock, self._sink,
                                     device_id=self.device_id,
                                     officer_id=self.state.officer_id)
        return self.recorder

    @property
    def recording_state(self) -> str:
        """idle, armed or recording."""
        if self.recorder is None:
            return "idle"
        return {RecorderState.IDLE: "idle", RecorderState.ARMED: "armed",
                RecorderState.RECORDING: "recording"}[self.recorder.state]

    @property
    def recording_id(self) -> str | None:
        """The recording in progress."""
        return self._recording_id

    async def arm(self) -> None:
        """Open the source and keep the pre-event buffer."""
        await self._recorder().arm()

    async def start_recording(self, *, reason: str = "cli") -> str:
        """Start a recording (its start event is committed first, then pre-event chunks, then live ones)."""
        async with self._record_lock:
            if self._recording_id is not None:
                raise AgentError(f"already recording ({self._recording_id})")
            if "storage_full" in self.buffer.alarms:
                raise StorageFullError("storage full: recording refused until the buffer has room again")
            recording_id = self.clock_id()
            entry, env = await asyncio.to_thread(
                self.buffer.commit_event, recording_id, "start", self.state.officer_id, self.state.case_step,
                reason=reason,
            )
            self._recording_id, self._index = recording_id, 0
            await self._announce(entry, env)
            try:
                await self._recorder().start_recording()
            except BaseException:
                await self._close_recording("failed-to-start")
                raise
            log.info("recording %s started (%s)", recording_id, reason)
            return recording_id

    async def stop_recording(self, *, reason: str = "cli") -> str:
        """Stop the recording in progress; its last chunk and stop event are committed before this returns."""
        async with self._record_lock:
            if self._recording_id is None:
                raise AgentError("not recording")
            recorder = self._recorder()
            if recorder.state is RecorderState.RECORDING:
                with contextlib.suppress(CustodyError):
                    await recorder.stop_recording()
            return await self._close_recording(reason)

    async def _close_recording(self, reason: str) -> str:
        recording_id = self._recording_id
        assert recording_id is not None
        chunks = self._index
        entry, env = await asyncio.to_thread(
            self.buffer.commit_event, recording_id, "stop", self.state.officer_id, self.state.case_step,
            chunks=chunks, reason=reason,
        )
        self._recording_id = None
        self.last_recording_chunks = chunks
        await self._announce(entry, env)
        log.info("recording %s stopped after %d chunks (%s)", recording_id, chunks, reason)
        return recording_id

    def clock_id(self) -> str:
        """A recording id: device-local time plus randomness (readable, unique)."""
        return f"rec-{self.clock.now_ms()}-{secrets.token_hex(3)}"

    async def _sink(self, chunk: EncodedChunk) -> None:
        recording_id = self._recording_id
        if recording_id is None:  # a chunk after the recording closed (should not happen): keep it anyway
            recording_id = self.clock_id()
        try:
            entry, env = await asyncio.to_thread(
                self.buffer.commit_chunk, chunk.data, chunk, recording_id=recording_id, index=self._index,
                officer_id=self.state.officer_id, case_step=self.state.case_step,
            )
        except StorageFullError:
            self.alarms.add("storage_full")
            # Stop accepting footage; what exists is kept. The stop event still fits (reserve).
            asyncio.get_running_loop().create_task(self._stop_for_full())
            raise
        self._index += 1
        await self._announce(entry, env)

    async def _stop_for_full(self) -> None:
        with contextlib.suppress(CustodyError):
            await self.stop_recording(reason="storage-full")

    async def _announce(self, entry: BufferedEntry, envelope: bytes) -> None:
        if self.uploader is not None:
            self.uploader.committed(entry.seq)
        if self.mqtt is not None:
            await self.mqtt.publish_entry(envelope)
        if self.uploader is not None:
            self.uploader.wake()

    # -- server messages -----------------------------------------------------------------------

    async def on_receipt(self, data: bytes) -> None:
        """A receipt over MQTT: free the chunk if it verifies."""
        if self.uploader is None:
            return
        try:
            self.uploader.accept(data)
        except (CustodyError, ValueError) as exc:
            log.warning("rejected receipt message: %s", exc)

    async def on_checkpoint(self, data: bytes) -> None:
        """The latest transparency-log checkpoint: kept (when signed by a server key) and reported in status."""
        try:
            note = SignedNote.parse(data)
            cp = Checkpoint.parse_body(note.body)
        except RemoteProtocolError as exc:
            log.warning("rejected checkpoint message: %s", exc)
            return
        for key in self.server_keys():
            with contextlib.suppress(CustodyError):
                note.verify(NoteVerifier(cp.origin, key))
                if self.checkpoint is None or cp.size >= self.checkpoint.size:
                    self.checkpoint = CheckpointRef(cp.origin, cp.size, cp.root.hex())
                return
        log.warning("checkpoint %s/%d not signed by a known server key: ignored", cp.origin, cp.size)

    async def on_command(self, data: bytes) -> None:
        """A command over MQTT: checked, carried out, acknowledged."""
        verdict = self.gate.check(data)
        ack = verdict.ack
        if verdict.command is not None:
            ack = await self._execute(verdict.command)
        if ack is not None and self.mqtt is not None:
            await self.mqtt.publish_ack(ack.sign(self.key).raw)

    async def _execute(self, command: Command) -> Any:
        params = command.params
        result: dict[str, Any] = {}
        try:
            if command.kind == CommandKind.START:
                result["recording_id"] = await self.start_recording(reason=f"command:{command.id}")
            elif command.kind == CommandKind.STOP:
                result["recording_id"] = await self.stop_recording(reason=f"command:{command.id}")
            elif command.kind == CommandKind.SELECT_STEP:
                step = params.get("case_step")
                check_id("case_step", step, optional=True)
                self.state.case_step = step
                self.save_state()
            elif command.kind == CommandKind.ASSIGN_OFFICER:
                officer = params.get("officer_id")
                check_id("officer_id", officer, optional=True)
                self.state.officer_id = officer
                if self.recorder is not None:
                    self.recorder.set_officer(officer)
                self.save_state()
            elif command.kind == CommandKind.CONFIG:
                result = self._apply_config(params)
            elif command.kind == CommandKind.PING:
                result = {"time_ms": self.clock.now_ms(), "state": self.recording_state}
            elif command.kind == CommandKind.LIVE_VIEW_START:
                result = await self.live.start(params)
            elif command.kind == CommandKind.LIVE_VIEW_STOP:
                session = params.get("session")
                result = {"ended": await self.live.stop(session if isinstance(session, str) else None,
                                                        f"command:{command.id}")}
        except (CustodyError, ValueError) as exc:
            return self.gate.ack(command.id, "failed", str(exc)[:300])
        except Exception as exc:  # the ack must say something even for a bug
            log.exception("command %s failed", command.id)
            return self.gate.ack(command.id, "failed", f"{type(exc).__name__}: {exc}"[:300])
        return self.gate.ack(command.id, "ok", None, result)

    def _apply_config(self, params: dict[str, Any]) -> dict[str, Any]:
        allowed = {"status_interval_s", "bandwidth_bps", "config_version"}
        unknown = set(params) - allowed
        if unknown:
            raise AgentError(f"unknown setting {', '.join(sorted(unknown))} (known: {', '.join(sorted(allowed))})")
        if "status_interval_s" in params:
            value = params["status_interval_s"]
            if not isinstance(value, int) or not 5 <= value <= 3600:
                raise AgentError("status_interval_s must be 5 to 3600")
            self.state.status_interval_s = value
        if "bandwidth_bps" in params:
            value = params["bandwidth_bps"]
            if value is not None and (not isinstance(value, int) or value < 64_000):
                raise AgentError("bandwidth_bps must be null or at least 64000")
            self.state.bandwidth_bps = value
            if self.uploader is not None:
                self.uploader.bandwidth_bps = value
        if "config_version" in params:
            self.state.config_version = str(params["config_version"])[:64]
        self.save_state()
        return self.state.to_json()

    # -- live view -----------------------------------------------------------------------------

    async def _post_signed(self, path: str, body: bytes) -> bytes:
        if self.client is None:
            raise AgentError("not connected to a server")
        return (await self.client.signed("POST", path, body)).body

    async def _live_arm(self) -> bool:
        """Open the camera for a live view if it is closed; True when this call opened it."""
        if self.recording_state != "idle":
            return False
        await self.arm()
        return True

    async def _live_disarm(self) -> None:
        """Close the camera a live view opened, unless a recording has started since."""
        if self.recorder is not None and self.recorder.state is RecorderState.ARMED and self._recording_id is None:
            await self.recorder.disarm()

    # -- status --------------------------------------------------------------------------------

    def status(self) -> DeviceStatus:
        """This device's signed-ready status."""
        stats = self.buffer.stats()
        head = self.buffer.head_seq
        alarms = tuple(sorted(self.alarms | self.buffer.alarms))
        return DeviceStatus(
            1, self.device_id, self.clock.now_ms(), head, self.buffer.head_hash if head is not None else None,
            self.recording_state, self._recording_id, self.state.officer_id, self.state.case_step, battery_percent(),
            stats["storage_free"], stats["buffered_chunks"], stats["buffered_bytes"], self.checkpoint, FIRMWARE,
            self.state.config_version, alarms,
        )

    async def send_status(self) -> bool:
        """Publish a signed status over MQTT."""
        if self.mqtt is None:
            return False
        return await self.mqtt.publish_status(self.status().sign(self.key).raw)

    async def _status_loop(self) -> None:
        assert self.mqtt is not None
        while True:
            await self.mqtt.connected.wait()
            await self.send_status()
            await self.clock.sleep(self.state.status_interval_s)

    # -- local control -------------------------------------------------------------------------

    async def serve_control(self) -> None:
        """Listen on data_dir/control.sock for ``custody agent start/stop/status`` (owner only)."""
        path = self.data_dir / "control.sock"
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self._control = await asyncio.start_unix_server(self._control_client, path=str(path))
        os.chmod(path, 0o600)

    async def _control_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            try:
                request = json.loads(line)
                op = request.get("op")
                if op == "start":
                    reply: dict[str, Any] = {"ok": True, "recording_id": await self.start_recording(reason="cli")}
                elif op == "stop":
                    reply = {"ok": True, "recording_id": await self.stop_recording(reason="cli")}
                elif op == "status":
                    reply = {"ok": True, "status": self.status().to_dict()}
                elif op == "ls":
                    reply = {"ok": True, "entries": [e.to_record() for e in self.buffer.entries()]}
                else:
                    reply = {"ok": False, "error": f"unknown operation {op!r}"}
            except (CustodyError, ValueError, AttributeError) as exc:
                reply = {"ok": False, "error": str(exc)}
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        finally:
            writer.close()


def battery_percent() -> int | None:
    """Battery charge from the kernel's power-supply class, where the device has one."""
    base = Path("/sys/class/power_supply")
    with contextlib.suppress(OSError):
        for supply in sorted(base.iterdir()):
            cap = supply / "capacity"
            if (supply / "type").read_text().strip() == "Battery" and cap.exists():
                return max(0, min(100, int(cap.read_text().strip())))
    return None


def control_request(data_dir: Path, op: str, timeout: float = 30.0) -> dict[str, Any]:
    """Send one operation to a running agent over its control socket (synchronous, for the CLI)."""
    path = data_dir / "control.sock"
    if not path.exists():
        raise AgentError(f"no agent is running with data dir {data_dir} (start one with 'custody agent run')")
    with socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            raise AgentError(f"the agent for {data_dir} is not answering (stale control socket)") from None
        s.sendall(json.dumps({"op": op}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            part = s.recv(65536)
            if not part:
                break
            data += part
    reply: dict[str, Any] = json.loads(data)
    if not reply.get("ok"):
        raise AgentError(str(reply.get("error", "the agent refused")))
    return reply
