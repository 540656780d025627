"""The device's command checklist: unsigned, forged, misaddressed, expired, replayed, unknown."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from agent.commands import CommandGate, SeenCommands
from custody.clock import FakeClock
from protocol.envelope import Envelope
from protocol.keys import SigningKey
from protocol.messages import Command, CommandAck

SERVER = SigningKey.from_private_bytes(bytes(range(32)))


def command(device: SigningKey, clock: FakeClock, kind: str = "ping", *, ttl_ms: int = 60_000,
            signer: SigningKey = SERVER, device_id: str | None = None, nonce: str | None = None,
            cid: str | None = None) -> bytes:
    cmd = Command(1, cid or "cmd-" + secrets.token_hex(4), device_id or device.public.device_id, kind,
                  clock.now_ms(), clock.now_ms() + ttl_ms, nonce or secrets.token_hex(16), {})
    return cmd.sign(signer).raw


@pytest.fixture
def gate(tmp_path: Path) -> tuple[CommandGate, SigningKey, FakeClock]:
    device, clock = SigningKey.generate(), FakeClock()
    return CommandGate(device, lambda: [SERVER.public], clock, SeenCommands(tmp_path / "seen.json")), device, clock


def test_valid_command_passes(gate: tuple[CommandGate, SigningKey, FakeClock]) -> None:
    g, device, clock = gate
    verdict = g.check(command(device, clock, "start"))
    assert verdict.command is not None
    assert verdict.command.kind == "start"
    assert verdict.ack is None


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("forged", "bad_signature: not signed by a known server key"),
        ("wrong_device", "wrong_device"),
        ("expired", "expired"),
        ("future", "not_yet_valid"),
    ],
)
def test_refusals_say_why(gate: tuple[CommandGate, SigningKey, FakeClock], case: str, reason: str) -> None:
    g, device, clock = gate
    if case == "forged":
        data = command(device, clock, signer=SigningKey.generate())
    elif case == "wrong_device":
        data = command(device, clock, device_id=SigningKey.generate().public.device_id)
    elif case == "expired":
        data = command(device, clock, ttl_ms=1000)
        clock.advance(2)
    else:
        future = FakeClock(clock.now_ms() + 3_600_000)
        data = command(device, future)
    verdict = g.check(data)
    assert verdict.command is None
    assert verdict.ack is not None
    assert verdict.ack.status == "refused"
    assert verdict.ack.reason is not None
    assert verdict.ack.reason.startswith(reason)


def test_replay_refused_even_after_restart(tmp_path: Path) -> None:
    device, clock = SigningKey.generate(), FakeClock()
    data = command(device, clock)
    g1 = CommandGate(device, lambda: [SERVER.public], clock, SeenCommands(tmp_path / "seen.json"))
    assert g1.check(data).command is not None
    g2 = CommandGate(device, lambda: [SERVER.public], clock, SeenCommands(tmp_path / "seen.json"))
    verdict = g2.check(data)
    assert verdict.ack is not None
    assert verdict.ack.reason is not None
    assert verdict.ack.reason.startswith("replayed")
    # A new command reusing the nonce is a replay too.
    again = g2.check(command(device, clock, nonce=Command.peek(Envelope.from_bytes(data)).nonce))
    assert again.ack is not None
    assert again.ack.status == "refused"


def test_unknown_kind_is_unsupported(gate: tuple[CommandGate, SigningKey, FakeClock]) -> None:
    g, device, clock = gate
    verdict = g.check(command(device, clock, "self_destruct"))
    assert verdict.ack is not None
    assert verdict.ack.status == "unsupported"
    signed = verdict.ack.sign(device)
    assert CommandAck.open(signed, device.public).status == "unsupported"


def test_garbage_is_dropped_with_a_reason(gate: tuple[CommandGate, SigningKey, FakeClock]) -> None:
    g, _, _ = gate
    verdict = g.check(b'{"not":"a command"}')
    assert verdict.command is None
    assert verdict.ack is None
    assert verdict.reason is not None
    assert verdict.reason.startswith("malformed")
