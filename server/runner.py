"""Run the server until SIGINT/SIGTERM: bind, print the URL and key fingerprint, serve, clean up."""

from __future__ import annotations

import asyncio
import logging
import signal

from custody.clock import Clock
from custody.heap import GcPauses, settle_heap
from server.app import start_server
from server.config import ServerConfig

log = logging.getLogger(__name__)


async def serve(config: ServerConfig, clock: Clock | None = None, stop: asyncio.Event | None = None) -> None:
    """Serve until ``stop`` is set or a termination signal arrives."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    running = await start_server(config, clock)
    # Start-up's heap lives as long as the process: no collection need walk it again.
    settle_heap()
    pauses = GcPauses().install()
    s = running.services
    key = s.keyring.current
    print(f"custody server listening on {running.url}", flush=True)
    print(f"server key {key.key_id} fingerprint {key.public.fingerprint}", flush=True)
    print(f"data dir {config.data_dir.resolve()}; database {'sqlite' if s.db.is_sqlite else 'postgresql'}; "
          f"footage store {s.store.kind}", flush=True)
    mqtt = running.mqtt
    if mqtt.link is None:
        print("MQTT off: devices deliver over HTTP only", flush=True)
    else:
        kind = "embedded broker (MQTT 3.1.1)" if mqtt.broker is not None else "broker"
        print(f"MQTT {kind} {s.devices.mqtt_url} (given to devices at enrollment)", flush=True)
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await running.stop()
        pauses.uninstall()
        print(f"gc pauses while serving: {pauses.summary()}", flush=True)
