"""Access grants: no footage leaves a store without one, and only the access log can make one.

A store's read method takes an :class:`AccessGrant`; a grant is minted only by
:mod:`server.services.access` after the access event (who, what, when, why) is committed to the
transparency log, so code that reads footage cannot skip the log: it has nothing to pass. Python
cannot make a constructor truly private, so minting needs a capability object that only
``server/services/access.py`` imports, and a test checks that no other module under ``server/``
or ``custody/`` touches it.
"""

from __future__ import annotations

from dataclasses import dataclass


class _Capability:
    """The token minting requires. One instance exists: :data:`MINT`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<access-grant mint>"


MINT = _Capability()


class GrantError(PermissionError):
    """Footage was read without a grant that covers it: a bug in the server, never a client's fault."""


@dataclass(frozen=True, slots=True, init=False)
class AccessGrant:
    """Permission to read the objects an access event named (``keys`` None: every object, server duties only)."""

    access_id: int
    kind: str
    keys: frozenset[str] | None

    def __init__(self, mint: _Capability, access_id: int, kind: str, keys: frozenset[str] | None) -> None:
        if mint is not MINT:
            raise GrantError("access grants are minted by the access log only")
        object.__setattr__(self, "access_id", access_id)
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "keys", keys)

    def covers(self, key: str) -> bool:
        """True when this grant permits reading ``key``."""
        return self.keys is None or key in self.keys


def require_grant(grant: object, key: str) -> None:
    """What a store does before reading: raise :class:`GrantError` unless ``grant`` is a real grant covering ``key``."""
    if type(grant) is not AccessGrant:  # not a look-alike with a permissive covers()
        raise GrantError(f"reading {key} needs an access grant from the access log")
    if not grant.covers(key):
        raise GrantError(f"access event {grant.access_id} does not cover {key}")
