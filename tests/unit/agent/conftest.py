"""Fixtures of the agent media tests."""

import pytest

from .recording import Run, standard_run


@pytest.fixture(scope="session")
def recording_run() -> Run:
    """One synthetic recording with pre-event footage, shared by the tests that only read it."""
    return standard_run()
