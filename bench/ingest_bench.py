"""Ingest throughput: verified 1 MiB chunks per second through the whole HTTP path, against a raw PUT.

Full path, per chunk, as agents deliver: with the local store one PUT of the bytes with their
signed manifest (entry stored, bytes stored and verified, receipt signed and logged); with S3 a
signed announce (entry stored, upload target), the presigned PUT and a signed verify (hash,
signature, chain, media check, receipt). The first-keyframe decode runs after each receipt as in
production. Baselines with the same bytes and
concurrency: a bare aiohttp PUT handler writing each body to its own file with O_EXCL and fsync
(same durability as the local store); for S3, bare presigned PUTs to the same endpoint.

The server under test and the raw PUT server each run in a process of their own (as in
production; the devices run in this one), so the server's CPU time per chunk is measured from
/proc (all its threads and its decoder workers; the first-keyframe decodes are waited for and
included). The machine is shared, so rounds alternate baseline and full path and the medians are
printed.

The devices and the servers share this machine's cores, so each run also prints the machine's
CPU a chunk (and the devices' share) and how busy the machine was. A device hashes its chunk as
it records it, on its own hardware: the simulated devices hash the bench's one chunk once, not on
every send, which would take the servers' CPU. Printed first is the server work no full path can
skip beyond a raw PUT (SHA-256 of the bytes, the first-keyframe decode, the signatures); from it
and the baseline's machine CPU a chunk comes the best ratio this machine allows the full path,
with every core busy and with the cores as busy as the baseline kept them. The ratio is printed
by receipts (the decodes follow them, issue 4) and counted to the last decode. The server's
CPU includes its decoder workers' (server/decoder.py).

    .venv/bin/python bench/ingest_bench.py [--chunks 160] [--devices 8] [--rounds 3] [--backends sqlite-local,...]

Backends: sqlite-local, postgres-local, postgres-s3 (PostgreSQL and LocalStack are started here,
as in the tests). Copy the figures to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import multiprocessing
import multiprocessing.connection
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from custody.clock import SystemClock
from server.config import ServerConfig
from server.storage.base import object_key
from tests.helpers.device import SimDevice
from tests.helpers.media import Chunk, make_chunk
from tests.integration.server.conftest import server_config
from tests.services.postgres import PostgresServer
from tests.services.s3 import LocalStackS3

_TICK = os.sysconf("SC_CLK_TCK")


def one_mib_chunk() -> Chunk:
    """A real 5 s 640x360 MP4 of about 1 MiB (noise at a fixed bitrate)."""
    return make_chunk(seconds=5, fps=30, width=640, height=360, bitrate=1_600_000)


def stat_fields(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name (``[11]`` is utime, ``[12]`` stime)."""
    # The command name may hold spaces and parentheses: split after the last ')'.
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads), from /proc."""
    fields = stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / _TICK


def tree_cpu_seconds(root: int) -> float:
    """CPU of a process, its live descendants and its reaped children (PostgreSQL backends come
    and go; the server's decoder workers, server/decoder.py, are its children)."""
    children: dict[int, list[int]] = {}
    own: dict[int, float] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            f = stat_fields(int(entry.name))
        except (OSError, IndexError):
            continue  # exited while we looked
        pid = int(entry.name)
        children.setdefault(int(f[1]), []).append(pid)
        # utime + stime + cutime + cstime: the CPU of children already reaped stays counted.
        own[pid] = (int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])) / _TICK
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += own.get(pid, 0.0)
        todo.extend(children.get(pid, []))
    return total


def core_times() -> dict[int, tuple[float, float]]:
    """(busy, total) seconds of each core since boot, from /proc/stat."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name[3:].isdigit():
            ticks = [int(v) for v in values[:8]]
            idle = ticks[3] + ticks[4]  # idle + iowait
            out[int(name[3:])] = ((sum(ticks) - idle) / _TICK, sum(ticks) / _TICK)
    return out


def machine_busy() -> float:
    """CPU seconds every core has spent busy since boot (what runs here, whoever it is)."""
    return sum(busy for busy, _ in core_times().values())


def floor_ms(chunk: Chunk) -> dict[str, float]:
    """Server CPU ms per chunk that no full path can skip beyond a raw PUT (best of a few runs
    each): hashing the stored bytes, decoding the first keyframe, checking the manifest's
    signature and signing the receipt."""
    from protocol.keys import SigningKey
    from server.media import decode_frame, first_frame

    frame = first_frame(chunk.data)
    assert frame is not None, "the bench's chunk is a plain MP4 with an H.264 track"
    key = SigningKey.generate()
    message = os.urandom(600)
    signature = key.sign(message)

    def check_and_sign() -> None:
        key.public.verify(signature, message)
        key.sign(message)

    def best(work: Callable[[], object], times: int = 20) -> float:
        runs = []
        for _ in range(times):
            t = time.perf_counter()
            work()
            runs.append(time.perf_counter() - t)
        return min(runs) * 1000

    return {"SHA-256": best(lambda: hashlib.sha256(chunk.data).digest()),
            "first-keyframe decode": best(lambda: decode_frame(frame)),
            "signature check and receipt": best(check_and_sign)}


# -- the processes under test -------------------------------------------------------------------


def _serve_custody(config: ServerConfig, conn: multiprocessing.connection.Connection) -> None:
    from custody.heap import settle_heap
    from server.app import start_server

    async def run() -> None:
        server = await start_server(config)
        settle_heap()  # as `custody server` does once started (server/runner.py)
        conn.send((server.url, server.services.datadir.admin_token.read_text().strip()))
        await asyncio.to_thread(conn.recv)
        await server.stop()

    asyncio.run(run())


def _serve_raw(root: Path, conn: multiprocessing.connection.Connection) -> None:
    async def put(request: web.Request) -> web.Response:
        data = await request.read()
        path = root / request.match_info["name"]

        def write() -> None:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)

        await asyncio.to_thread(write)
        return web.Response(status=201)

    root.mkdir(parents=True, exist_ok=True)

    async def run() -> None:
        app = web.Application(client_max_size=64 << 20)
        app.router.add_put("/{name}", put)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        conn.send((f"http://127.0.0.1:{runner.addresses[0][1]}", ""))
        await asyncio.to_thread(conn.recv)
        await runner.cleanup()

    asyncio.run(run())


class Child:
    """A server in a process of its own."""

    def __init__(self, target: Callable[..., None], *args: Any) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child_conn = ctx.Pipe()
        self.proc = ctx.Process(target=target, args=(*args, child_conn), daemon=True)
        self.proc.start()
        while not self._conn.poll(0.5):
            if not self.proc.is_alive():
                raise RuntimeError(f"the server process exited with code {self.proc.exitcode}")
        self.url, self.token = self._conn.recv()

    @property
    def cpu(self) -> float:
        """CPU seconds used so far, with its child processes' (the decoder workers)."""
        assert self.proc.pid is not None
        return tree_cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        """Ask it to stop and wait."""
        self._conn.send("stop")
        self.proc.join(30)


# -- the clients ---------------------------------------------------------------------------------


@dataclass
class Run:
    """One measured run."""

    seconds: float
    server_cpu: float
    n: int
    size: int
    #: Seconds from the last receipt until every first-keyframe decode was done (full path only):
    #: work the rate does not wait for, though its CPU is counted.
    decode_lag: float = 0.0
    #: CPU seconds of the simulated devices (this process) and of the whole machine, over the
    #: same span as ``server_cpu``: both sides share the machine's cores.
    devices_cpu: float = 0.0
    machine_cpu: float = 0.0

    @property
    def rate(self) -> float:
        """Chunks per second."""
        return self.n / self.seconds

    @property
    def cpu_ms(self) -> float:
        """Server CPU ms per chunk."""
        return self.server_cpu / self.n * 1000

    @property
    def devices_ms(self) -> float:
        """The devices' CPU ms per chunk."""
        return self.devices_cpu / self.n * 1000

    @property
    def machine_ms(self) -> float:
        """The whole machine's CPU ms per chunk."""
        return self.machine_cpu / self.n * 1000


class Meter:
    """CPU counters at the start of a run: the server's, this process's and the machine's."""

    def __init__(self, server: Child | None) -> None:
        self.server = server
        self.server0 = server.cpu if server else 0.0
        self.devices0 = time.process_time()
        self.machine0 = machine_busy()

    def run(self, seconds: float, n: int, size: int, decode_lag: float = 0.0) -> Run:
        """The run that started with this meter and ends now."""
        return Run(seconds, (self.server.cpu - self.server0) if self.server else 0.0, n, size, decode_lag,
                   time.process_time() - self.devices0, machine_busy() - self.machine0)


async def run_full(server: Child, chunk: Chunk, devices: int, per_device: int, direct: bool) -> Run:
    """Deliver and verify devices * per_device chunks; wait for their first-keyframe decodes.

    ``direct``: each chunk in one request with its manifest (a server with the local store)."""
    clock = SystemClock()
    admin = {"Authorization": f"Bearer {server.token}"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=devices * 2)) as session:
        sims = []
        for _ in range(devices):
            async with session.post(server.url + "/api/v1/enrollment-tokens", json={}, headers=admin) as r:
                token = (await r.json())["token"]
            sim = SimDevice(server.url, session, clock)
            await sim.enroll(token)
            await sim.announce(sim.event("start"))
            sims.append(sim)

        async def device_loop(sim: SimDevice) -> None:
            for _ in range(per_device):
                result = await sim.deliver(chunk, direct=direct)
                assert result["state"] == "verified"

        meter = Meter(server)
        start = time.perf_counter()
        await asyncio.gather(*(device_loop(s) for s in sims))
        seconds = time.perf_counter() - start

        # Each device's lowest sequence number not yet seen decoded: a poll asks only from there,
        # so the polling (whose CPU would count as the server's) stays small.
        undecoded = {sim.device_id: 0 for sim in sims}

        async def decoded(sim: SimDevice) -> bool:
            url = f"{server.url}/api/v1/devices/{sim.device_id}/entries?from_seq={undecoded[sim.device_id]}&limit=1000"
            async with session.get(url, headers=admin) as r:
                rows = (await r.json())["entries"]
            pending = [e["seq"] for e in rows if e["kind"] == "chunk" and e["decode"] is None]
            undecoded[sim.device_id] = min(pending, default=rows[-1]["seq"] if rows else undecoded[sim.device_id])
            return not pending

        # The decodes run after the receipts, off the measured path; their CPU counts all the same.
        while True:
            if all([await decoded(s) for s in sims]):
                break
            await asyncio.sleep(0.25)
        lag = time.perf_counter() - start - seconds
        return meter.run(seconds, devices * per_device, len(chunk.data), decode_lag=lag)


async def run_raw_disk(server: Child, chunk: Chunk, devices: int, per_device: int) -> Run:
    """The same PUTs to a bare aiohttp handler that writes each body with O_EXCL + fsync."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=devices * 2)) as session:
        tag = os.urandom(4).hex()

        async def loop(d: int) -> None:
            for i in range(per_device):
                async with session.put(f"{server.url}/{tag}-{d}-{i}", data=chunk.data,
                                       headers={"Content-Type": "video/mp4"}) as r:
                    assert r.status == 201

        meter = Meter(server)
        start = time.perf_counter()
        await asyncio.gather(*(loop(d) for d in range(devices)))
        return meter.run(time.perf_counter() - start, devices * per_device, len(chunk.data))


async def run_raw_s3(store: Any, chunk: Chunk, devices: int, per_device: int) -> Run:
    """The same bytes PUT to presigned S3 URLs (checksum and lock headers, no server in between)."""
    sha = hashlib.sha256(chunk.data).hexdigest()
    now = SystemClock().now_ms()
    base = int.from_bytes(os.urandom(3), "big") * 1000
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=devices * 2)) as session:
        async def loop(d: int) -> None:
            for i in range(per_device):
                target = store.upload_target(object_key("b" * 24, base + d * 100 + i, sha), sha, len(chunk.data),
                                             now, 900)
                async with session.put(target.url, data=chunk.data, headers=target.headers) as r:
                    assert r.status == 200, await r.read()

        meter = Meter(None)  # LocalStack's CPU is the machine's less the devices'
        start = time.perf_counter()
        await asyncio.gather(*(loop(d) for d in range(devices)))
        return meter.run(time.perf_counter() - start, devices * per_device, len(chunk.data))


# -- reporting ------------------------------------------------------------------------------------


@dataclass
class Series:
    """Runs of one kind across rounds."""

    label: str
    runs: list[Run] = field(default_factory=list)

    def rate(self) -> float:
        """Median chunks/s."""
        return statistics.median(r.rate for r in self.runs)

    def cpu_ms(self) -> float:
        """Median server CPU ms per chunk."""
        return statistics.median(r.cpu_ms for r in self.runs)

    def machine_ms(self) -> float:
        """Median machine CPU ms per chunk."""
        return statistics.median(r.machine_ms for r in self.runs)

    def line(self, size: int, extra: str = "") -> str:
        """One printed line."""
        rates = ", ".join(f"{r.rate:.0f}" for r in self.runs)
        cpu = f"  server CPU {self.cpu_ms():5.2f} ms/chunk" if any(r.server_cpu for r in self.runs) else ""
        cpu += (f"  machine {self.machine_ms():5.2f} (devices "
                f"{statistics.median(r.devices_ms for r in self.runs):4.2f}) ms/chunk")
        lag = (f"  decodes done {statistics.median(r.decode_lag for r in self.runs):.1f} s after the last receipt"
               if any(r.decode_lag for r in self.runs) else "")
        return (f"{self.label:<34} {self.rate():7.1f} chunks/s {self.rate() * size / 1e6:7.1f} MB/s"
                f"{cpu}  (rounds: {rates}){extra}{lag}")


async def compare(rounds: int, size: int, baseline: Series, run_base: Callable[[], Awaitable[Run]],
                  full: Series, run_path: Callable[[], Awaitable[Run]], versus: str, floor: float = 0.0) -> None:
    """Alternate baseline and full path for ``rounds`` rounds; print both, the median ratio
    ``versus`` names and, given the full path's ``floor`` (machine CPU ms a chunk beyond the
    baseline's), the best ratio the machine's cores allow."""
    ratios, to_decodes = [], []
    for _ in range(rounds):
        b = await run_base()
        f = await run_path()
        baseline.runs.append(b)
        full.runs.append(f)
        ratios.append(f.rate / b.rate)
        to_decodes.append(f.n / (f.seconds + f.decode_lag) / b.rate)
    print(baseline.line(size))
    strict = (f" ({statistics.median(to_decodes):.2f}x counted to the last decode)"
              if any(r.decode_lag for r in full.runs) else "")
    print(full.line(size, f"  = {statistics.median(ratios):.2f}x {versus}{strict}"))
    cores = os.cpu_count() or 1
    busy = statistics.median(r.machine_cpu / r.seconds / cores for r in baseline.runs)
    full_busy = statistics.median(r.machine_cpu / (r.seconds + r.decode_lag) / cores for r in full.runs)
    line = f"{'':<34} machine busy: baseline {busy:.0%}, full path {full_busy:.0%}"
    if floor:
        # Each chunk costing what the baseline's did plus the work no full path can skip: the best
        # rate this machine allows the full path, against the baseline's rate, with every core
        # busy, and with the cores as busy as the baseline kept them.
        best = cores * 1000 / (statistics.median(r.machine_ms for r in baseline.runs) + floor)
        line += (f"; the full path's bound on this machine: {best / baseline.rate():.2f}x {versus} "
                 f"(every core busy), {best * busy / baseline.rate():.2f}x (as busy as the baseline)")
    print(line)


def parse_set(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with VALUE as JSON when it parses (numbers, true/false), else a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def check_sets(parser: argparse.ArgumentParser, sets: Sequence[tuple[str, Any]]) -> None:
    """Refuse ``--set`` overrides the server would refuse (argparse's usage error, exit 2), before
    any service starts: a server that cannot start left the benches waiting, or a traceback."""
    from server.config import check_config

    _, problems = check_config(None, {}, dict(sets))
    if problems:
        parser.error("; ".join(f"--set {p.path}: {p.message}" for p in problems))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=160, help="chunks per run")
    parser.add_argument("--devices", type=int, default=8, help="concurrent devices")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (medians are printed)")
    parser.add_argument("--backends", default="sqlite-local,postgres-local,postgres-s3")
    parser.add_argument("--set", action="append", type=parse_set, default=[], metavar="KEY=VALUE",
                        help="server config override, dotted (e.g. scrub.enabled=false); repeatable")
    args = parser.parse_args()
    check_sets(parser, args.set)
    per_device = max(1, args.chunks // args.devices)
    chunk = one_mib_chunk()
    size = len(chunk.data)
    print(f"chunk: {size} bytes, {chunk.codec.video_frames} frames; {args.devices} devices x "
          f"{per_device} chunks; {args.rounds} rounds; cpu count {os.cpu_count()}")
    floor = floor_ms(chunk)
    print("server work a raw PUT does not do and no full path can skip, ms a chunk: "
          + ", ".join(f"{name} {ms:.2f}" for name, ms in floor.items()) + f" = {sum(floor.values()):.2f}")
    backends = args.backends.split(",")
    tmp_services = tempfile.TemporaryDirectory()
    pg = PostgresServer() if any(b.startswith("postgres") for b in backends) else None
    s3 = LocalStackS3(Path(tmp_services.name) / "localstack") if any(b.endswith("s3") for b in backends) else None
    if pg:
        pg.start()
    if s3:
        s3.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            raw = Child(_serve_raw, Path(tmp) / "raw")
            try:
                for backend in backends:
                    bucket = s3.make_bucket(object_lock=True) if s3 and backend.endswith("s3") else None
                    config = server_config(
                        Path(tmp) / backend,
                        database_url=pg.create_database(backend.replace("-", "_")) if pg and
                        backend.startswith("postgres") else None,
                        s3=s3 if backend.endswith("s3") else None, bucket=bucket, **dict(args.set))
                    server = Child(_serve_custody, config)
                    try:
                        direct = backend.endswith("local")
                        await run_full(server, chunk, args.devices, 1, direct)  # warm-up: connections, caches
                        full_path = partial(run_full, server, chunk, args.devices, per_device, direct)
                        await compare(args.rounds, size,
                                      Series("raw aiohttp PUT to disk (fsync)"),
                                      partial(run_raw_disk, raw, chunk, args.devices, per_device),
                                      Series(f"full ingest [{backend}]"), full_path, "raw disk",
                                      sum(floor.values()))
                        if backend.endswith("s3"):
                            from server.storage.s3 import S3Store

                            store = S3Store(config.storage.s3, SystemClock())
                            await compare(args.rounds, size,
                                          Series("raw presigned PUT to S3"),
                                          partial(run_raw_s3, store, chunk, args.devices, per_device),
                                          Series(f"full ingest [{backend}]"), full_path, "raw S3")
                            await store.close()
                    finally:
                        server.stop()
            finally:
                raw.stop()
    finally:
        if s3:
            s3.stop()
        if pg:
            pg.stop()
        tmp_services.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
