"""Commands from the server: checked like evidence before the device acts on one.

A command must be (1) a well-formed signed envelope, (2) signed by a server key the device
learned at enrollment, (3) addressed to this device, (4) within its validity window by the
device clock (with a small tolerance for skew), (5) not seen before (its id and nonce are
remembered on disk until it expires, so a replay is refused even after a reboot), and (6) of a
kind this device knows; otherwise the device acknowledges it as ``refused`` or ``unsupported``
and says why. Only then is it carried out.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.fsops import FileOps
from custody.clock import Clock
from protocol.envelope import Envelope
from protocol.errors import RemoteProtocolError
from protocol.keys import SigningKey, VerifyKey
from protocol.messages import Command, CommandAck, CommandKind

log = logging.getLogger(__name__)

#: How far ahead of the device clock a command's issue time may be (device clocks drift).
ISSUE_TOLERANCE_MS = 5 * 60 * 1000


@dataclass(frozen=True, slots=True)
class Verdict:
    """Outcome of checking a command: carry it out (``command``) or send ``ack`` at once, or neither."""

    command: Command | None
    ack: CommandAck | None
    reason: str | None = None


class SeenCommands:
    """Ids and nonces of accepted or refused commands, kept on disk until they expire."""

    def __init__(self, path: Path, ops: FileOps | None = None) -> None:
        self.path = path
        self.ops = ops or FileOps()
        self._seen: dict[str, int] = {}
        if path.exists():
            try:
                self._seen = {str(k): int(v) for k, v in json.loads(self.ops.read(path)).items()}
            except (ValueError, AttributeError):
                log.warning("command replay list %s is damaged; starting a new one", path)

    def seen(self, command: Command) -> bool:
        """Whether this command's id or nonce was seen before."""
        return f"id:{command.id}" in self._seen or f"nonce:{command.nonce}" in self._seen

    def remember(self, command: Command, now_ms: int) -> None:
        """Remember a command until it expires (durably: a reboot must not reopen the replay window)."""
        self._seen = {k: exp for k, exp in self._seen.items() if exp > now_ms}
        self._seen[f"id:{command.id}"] = command.expires_ms
        self._seen[f"nonce:{command.nonce}"] = command.expires_ms
        self.ops.write_atomic(self.path, json.dumps(self._seen, sort_keys=True).encode())


class CommandGate:
    """Checks commands for one device and signs its acknowledgements."""

    def __init__(
        self,
        key: SigningKey,
        server_keys: Callable[[], Sequence[VerifyKey]],
        clock: Clock,
        seen: SeenCommands,
        supported: frozenset[str] = CommandKind.ALL,
    ) -> None:
        self.key = key
        self.device_id = key.public.device_id
        self.server_keys = server_keys
        self.clock = clock
        self.seen = seen
        self.supported = supported

    def ack(self, command_id: str, status: str, reason: str | None = None, result: dict[str, Any] | None = None
            ) -> CommandAck:
        """A signed-ready acknowledgement."""
        return CommandAck(1, self.device_id, command_id, self.clock.now_ms(), status, reason, result or {})

    def check(self, data: bytes) -> Verdict:
        """Run the checklist on received command bytes."""
        # (1) well-formed
        try:
            envelope = Envelope.from_bytes(data)
            command = Command.peek(envelope)
        except RemoteProtocolError as exc:
            # Without a parsable command there is no id to acknowledge: log and drop.
            log.warning("rejected command message: %s", exc)
            return Verdict(None, None, f"malformed: {exc}")
        now = self.clock.now_ms()
        # (2) signed by a known server key
        keys = {k.key_id: k for k in self.server_keys()}
        key = keys.get(envelope.key_id)
        if key is None:
            return self._refuse(command, "bad_signature: not signed by a known server key")
        try:
            envelope.verify(key, payload_type=Command.PAYLOAD_TYPE)
        except RemoteProtocolError as exc:
            return self._refuse(command, f"bad_signature: {exc}")
        # (3) for this device
        if command.device_id != self.device_id:
            return self._refuse(command, f"wrong_device: addressed to {command.device_id}")
        # (4) valid now
        if now >= command.expires_ms:
            return self._refuse(command, f"expired: {(now - command.expires_ms) // 1000} s ago")
        if command.issued_ms > now + ISSUE_TOLERANCE_MS:
            return self._refuse(command, "not_yet_valid: issued in the future by the device clock")
        # (5) not a replay
        if self.seen.seen(command):
            return self._refuse(command, "replayed: this command id or nonce was already received")
        self.seen.remember(command, now)
        # (6) known kind
        if command.kind not in self.supported:
            log.info("command %s of unknown kind %r: unsupported", command.id, command.kind)
            return Verdict(None, self.ack(command.id, "unsupported", f"unsupported: kind {command.kind!r}"))
        return Verdict(command, None)

    def _refuse(self, command: Command, reason: str) -> Verdict:
        log.warning("refused command %s (%s): %s", command.id, command.kind, reason)
        return Verdict(None, self.ack(command.id, "refused", reason), reason)
