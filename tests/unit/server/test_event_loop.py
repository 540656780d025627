"""``custody server`` runs on the event loop ``http.event_loop`` names (uvloop by default when installed)."""

from __future__ import annotations

import asyncio

from server.cli import run_loop
from server.config import HttpConfig


def loop_module(choice: str) -> str:
    """The module of the loop class a coroutine run by :func:`run_loop` finds itself on."""
    seen: list[str] = []

    async def main() -> None:
        seen.append(type(asyncio.get_running_loop()).__module__)

    run_loop(main(), choice)
    return seen[0]


def test_each_choice_runs_on_its_loop() -> None:
    assert loop_module("asyncio").startswith("asyncio")
    assert loop_module("uvloop").startswith("uvloop")
    assert loop_module("auto").startswith("uvloop")
    assert HttpConfig().event_loop == "auto"
