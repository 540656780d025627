"""Fixtures for the deploy tests: a site's TLS and MQTT users, and the shipped broker running them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.deploy.broker_site import Client, ShippedBroker, Site, make_site


@pytest.fixture
def site(tmp_path: Path) -> Site:
    """A site with a CA, a broker certificate, two devices and the server user (files written)."""
    site = make_site(tmp_path)
    site.add_device()
    site.add_device()
    site.write_broker_files()
    return site


@pytest.fixture
def shipped_broker(site: Site) -> Iterator[ShippedBroker]:
    """run.sh with the shipped config, serving ``site``."""
    broker = ShippedBroker(site)
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def clients() -> Iterator[Callable[..., Client]]:
    """``clients(port, **kwargs)`` makes a :class:`Client`; all are closed after the test."""
    made: list[Client] = []

    def make(port: int, **kwargs: object) -> Client:
        client = Client(port, **kwargs)  # type: ignore[arg-type]
        made.append(client)
        return client

    yield make
    # Disconnect all first: a refused client's network thread sleeps up to a second between
    # reconnect attempts, and the threads then wind down side by side instead of one by one.
    for client in made:
        client.client.disconnect()
    for client in made:
        client.client.loop_stop()
