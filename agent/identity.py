"""The device key: generated at first start, stored with mode 0600, never logged or sent."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from agent.errors import AgentError
from agent.fsops import FileOps
from protocol.errors import LocalProtocolError
from protocol.keys import SigningKey

log = logging.getLogger(__name__)

KEY_FILE = "device.key"


def load_or_create_key(keys_dir: Path, ops: FileOps | None = None) -> SigningKey:
    """The device key in ``keys_dir``, created on first use."""
    ops = ops or FileOps()
    ops.makedirs(keys_dir, mode=0o700)
    path = keys_dir / KEY_FILE
    if path.exists():
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise AgentError(f"device key {path} is readable by others (mode {mode:o}); run: chmod 600 {path}")
        try:
            key = SigningKey.from_private_bytes(ops.read(path))
        except LocalProtocolError:
            raise AgentError(f"device key {path} is damaged (not a 32-byte Ed25519 key)") from None
        return key
    key = SigningKey.generate()
    old_umask = os.umask(0o077)
    try:
        ops.write_atomic(path, key.private_bytes(), mode=0o600)
    finally:
        os.umask(old_umask)
    # The id and key id are public; the private key itself is never logged.
    log.info("generated device key: device id %s, key id %s", key.public.device_id, key.key_id)
    return key
