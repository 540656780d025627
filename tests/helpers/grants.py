"""Access grants for tests that use a footage store without a server (and so without an access log).

The only place outside server/services/access.py that touches the mint; server code cannot (a test
checks it), tests of the stores themselves need to.
"""

from __future__ import annotations

from server.storage.grant import MINT, AccessGrant


def store_test_grant(keys: frozenset[str] | None = None) -> AccessGrant:
    """A grant for reading ``keys`` (None: any key) in store tests."""
    return AccessGrant(MINT, 1, "integrity", keys)
