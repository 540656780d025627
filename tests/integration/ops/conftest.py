"""Fixtures of the operations tests: the server tests' fixtures, plus chunk delivery in one call."""

from __future__ import annotations

from tests.helpers.device import SimDevice
from tests.helpers.media import make_chunk
from tests.integration.server.conftest import (  # noqa: F401 - fixtures by import
    Api,
    admin,
    admin_token,
    clock,
    server,
    server_config,
    session,
)


async def deliver(device: SimDevice) -> dict[str, object]:
    """Announce, upload and verify the device's next chunk; the verify answer's JSON."""
    chunk = make_chunk()
    seq = device.seq
    announced = await device.announce(device.manifest(chunk))
    assert announced.status == 201, announced.body
    put = await device.put(announced.json["upload"], chunk.data)
    assert put.status in (200, 201), put.body
    verified = await device.verify(seq)
    assert verified.status == 200, verified.body
    body: dict[str, object] = verified.json
    return body
