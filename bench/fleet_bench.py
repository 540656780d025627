"""Fleet capacity (issue #9): how many recording devices one server process on one core sustains.

A ramp of steps. Each step starts from nothing (new server data dir and footage store, new
PostgreSQL database, restarted Mosquitto, new device keys and buffers), enrolls N simulated
devices and connects them (one MQTT connection each), lets the server work off that set-up,
measures everything idle for a few seconds, then has every device record ``--step-seconds`` and
allows ``--drain-seconds`` for the last receipts. Devices are the agent's own classes
(simulators.fleet: key, crash-safe buffer, signing, uploader, MQTT link) replaying pre-encoded 5 s
chunks of about 1 Mbit/s (~620 kB), each copy made unique, signed and verified like real footage;
one event loop, no thread per device. The device clock runs at real time, so every device closes
one chunk per chunk length on a fixed schedule; starts are staggered so closes spread evenly.
A finished step's data is set aside and removed at the end of the ramp (``--remove-at``): removing
it at once made the next step's server pay for it (see ``spend``).

Processes and cores (a 2-core machine):

- ``custody server`` of this checkout (PostgreSQL, the external Mosquitto, the local footage
  store; otherwise production defaults: access log, first-keyframe decode, scrubber) in a process
  of its own pinned to core 0 (``--server-core``); its threads inherit the pin.
- the fleet: one process pinned to core 1 (``--fleet-core``).
- PostgreSQL (a throwaway cluster as in the tests: fsync off) and Mosquitto (the deployed limits
  of deploy/mosquitto/mosquitto.conf; no TLS, accounts or persistence) unpinned unless
  ``--services-core``; their CPU per chunk comes from /proc wherever they ran.

Per step: chunks closed (durable commit on the device) and receipted (verified receipt back at
the device), close-to-receipt p50/p95/p99/max (the uploader's own measure), CPU per chunk of the
server, PostgreSQL, Mosquitto and the fleet (utime + stime of all threads and children, from
/proc; the event loop apart from worker threads), the same idle, the devices' request round
trips, each core's busy share, what other jobs on the shared machine took, and the garbage
collector's pauses (the server's while it served, the fleet's while it recorded). A step is
**sustained** when p99 <= ``--p99-limit`` and every closed chunk is receipted within the drain.
It is **invalid** when the fleet cannot keep up (its process above ``--fleet-limit`` of its core,
chunks closing late or not at all): the ramp stops and says so. It also stops at the first step
not sustained, and before a step whose footage would leave less than ``--min-free-gb`` free.

The machine's speed for the same code varies by tens of percent from hour to hour, and a step has
no baseline of its own: each run prints a machine probe (CPU time of fixed Python and SHA-256
workloads on the server's core) at its start and end, and two runs compare only when their
probes do.

    .venv/bin/python bench/fleet_bench.py [--ramp 50,100,200,400,700,1000,1300 | --start N --step M]
        [--step-seconds 60] [--drain-seconds 15] [--profile N] [--set KEY=VALUE ...]

``--profile N`` records the server with py-spy (all threads, by function) while the N-device step
records, and prints the top functions by self and inclusive samples; the raw collapsed stacks stay
in ``--out`` (flamegraph.pl and speedscope read them). ``--profile-fleet cpu`` adds a cProfile of
the fleet's event loop on CPU time. ``--perf N`` records the server with ``perf record -g`` during
that step instead (native code and the kernel, which py-spy does not see: page faults, copies into
the page cache, libavcodec) and prints the top symbols by own samples. ``--stand-in`` measures
the fleet alone: once enrolled, the devices talk to a stand-in (bench/fleet_standin.py) that
answers with signed receipts and checks nothing, so a ramp shows how many devices the fleet core
itself carries. Copy the figures to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import hashlib
import json
import logging
import multiprocessing
import multiprocessing.connection
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.fleet_standin import StandInPlan
from bench.fleet_standin import serve as standin_serve
from bench.ingest_bench import check_sets, core_times, cpu_seconds, parse_set, stat_fields, tree_cpu_seconds
from bench.latency_bench import pct
from tests.services.mosquitto import MosquittoBroker
from tests.services.ports import ServiceStartError, die_with_parent, free_port, log_tail
from tests.services.postgres import PostgresServer

REPO = Path(__file__).resolve().parents[1]
_TICK = os.sysconf("SC_CLK_TCK")
DEFAULT_RAMP = "50,100,200,400,700,1000,1300"
#: Mosquitto's limits as deployed (deploy/mosquitto/mosquitto.conf); TLS, accounts and persistence
#: are left out: MosquittoBroker runs anonymous on loopback without persistence.
BROKER_LIMITS = """
max_inflight_messages 100
max_queued_messages 5000
max_queued_bytes 16777216
max_packet_size 262144
set_tcp_nodelay true
max_qos 1
"""


# -- /proc -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcessCpu:
    """A process's CPU seconds, user and system, in all threads and in its main thread alone, and
    its child processes' (the server's decoder workers, server/decoder.py).

    The main thread runs the event loop; the others are worker pools (asyncio.to_thread, hashing).
    Python does not name OS threads, so this split is what /proc can tell.
    """

    user: float = 0.0
    system: float = 0.0
    main_user: float = 0.0
    main_system: float = 0.0
    children: float = 0.0

    @classmethod
    def read(cls, pid: int) -> ProcessCpu:
        """Now, from /proc."""
        f = stat_fields(pid)
        main = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        user, system = int(f[11]) / _TICK, int(f[12]) / _TICK
        # At least 0: the tree's sum and the process's own figures are read a moment apart.
        return cls(user, system, int(main[11]) / _TICK, int(main[12]) / _TICK,
                   max(0.0, tree_cpu_seconds(pid) - user - system))

    def __sub__(self, other: ProcessCpu) -> ProcessCpu:
        return ProcessCpu(self.user - other.user, self.system - other.system, self.main_user - other.main_user,
                          self.main_system - other.main_system, self.children - other.children)

    @property
    def total(self) -> float:
        """User + system, all threads, and the child processes'."""
        return self.user + self.system + self.children

    def per_chunk(self, chunks: int) -> str:
        """``ms per chunk: event loop user+sys, other threads user+sys, child processes``."""
        k = 1000 / max(1, chunks)
        return (f"event loop {k * self.main_user:.1f} user + {k * self.main_system:.1f} sys, other threads "
                f"{k * (self.user - self.main_user):.1f} user + {k * (self.system - self.main_system):.1f} sys, "
                f"child processes {k * self.children:.1f}")


def process_tree(root: int) -> list[int]:
    """``root`` and its live descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                children.setdefault(int(stat_fields(int(entry.name))[1]), []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def pin_tree(root: int, core: int) -> None:
    """Pin a running service and its processes to one core; processes it forks later inherit the pin."""
    for pid in process_tree(root):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.sched_setaffinity(pid, {core})


@dataclass(frozen=True)
class Sample:
    """CPU counters of everything involved, at one instant."""

    wall: float
    server: ProcessCpu
    postgres: float
    mosquitto: float
    fleet: ProcessCpu
    cores: dict[int, tuple[float, float]]

    @classmethod
    def take(cls, server: int, postgres: int, mosquitto: int, fleet: int) -> Sample:
        """Read them all now."""
        return cls(time.monotonic(), ProcessCpu.read(server), tree_cpu_seconds(postgres), cpu_seconds(mosquitto),
                   ProcessCpu.read(fleet), core_times())


@dataclass
class Window:
    """CPU used between two samples."""

    seconds: float
    server: ProcessCpu
    postgres: float
    mosquitto: float
    fleet: ProcessCpu
    core_busy: dict[int, float]

    @classmethod
    def between(cls, a: Sample, b: Sample) -> Window:
        """From ``a`` to ``b``."""
        busy = {c: (b.cores[c][0] - a.cores[c][0]) / max(1e-9, b.cores[c][1] - a.cores[c][1])
                for c in a.cores if c in b.cores}
        return cls(b.wall - a.wall, b.server - a.server, b.postgres - a.postgres, b.mosquitto - a.mosquitto,
                   b.fleet - a.fleet, busy)

    @property
    def others(self) -> float:
        """Cores' worth of CPU used by everything else on the machine (other people's jobs, the kernel)."""
        ours = self.server.total + self.postgres + self.mosquitto + self.fleet.total
        return max(0.0, sum(self.core_busy.values()) - ours / max(1e-9, self.seconds))


# -- the server process --------------------------------------------------------------------------


def _pinned(core: int | None) -> Callable[[], None]:
    def preexec() -> None:
        die_with_parent()
        if core is not None:
            # Before exec, so every thread the process ever starts inherits the pin.
            os.sched_setaffinity(0, {core})

    return preexec


class ServerProcess:
    """``custody server`` (this checkout's code) in a process of its own, optionally pinned to one core."""

    def __init__(self, workdir: Path, config: dict[str, Any], core: int | None) -> None:
        """Start it; :meth:`wait_ready` waits until it listens."""
        self.workdir = workdir
        self.data_dir = Path(config["data_dir"])
        self.log_path = workdir / "server.log"
        config_path = workdir / "server-config.json"  # JSON is YAML: `custody server --config` reads it
        config_path.write_text(json.dumps(config, indent=1))
        # Only this checkout's code (the shared venv's editable install may point at another one),
        # and nothing from the caller's CUSTODY_* environment.
        env = {k: v for k, v in os.environ.items() if not k.startswith("CUSTODY_")}
        env["PYTHONPATH"] = str(REPO)
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "custody", "server", "--config", str(config_path)],
                cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=_pinned(core),
            )

    def wait_ready(self, timeout: float = 60.0) -> tuple[str, str]:
        """Wait until it listens; its URL and the admin token it created."""
        deadline = time.monotonic() + timeout
        marker = "custody server listening on "
        while True:
            text = self.log_path.read_text(errors="replace")
            if marker in text:
                url = text.split(marker, 1)[1].split()[0]
                return url, (self.data_dir / "admin-token").read_text().strip()
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise ServiceStartError(f"custody server did not start:\n{log_tail(self.log_path)}")
            time.sleep(0.1)

    @property
    def pid(self) -> int:
        """The server's pid."""
        return self.proc.pid

    def stop(self) -> None:
        """SIGTERM (a clean shutdown), SIGKILL if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


# -- the fleet process ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FleetPlan:
    """What the fleet process does in one step (picklable: it crosses to a spawned process)."""

    root: Path
    devices: int
    step_seconds: float
    drain_seconds: float
    chunk_seconds: int = 5
    width: int = 640
    height: int = 360
    video_bitrate: int = 900_000
    noise: int = 8
    core: int | None = 1
    http_connections: int = 256
    open_concurrency: int = 32
    connect_timeout: float = 300.0
    commit_threads: int = 32
    #: Where to write a cProfile (CPU time) of the event loop during the recording, if anywhere.
    cprofile: Path | None = None


@dataclass
class FleetReport:
    """What the fleet process measured in one step."""

    devices: int
    setup_seconds: float
    chunk_bytes: int
    closed: int
    receipted_at_stop: int
    closed_at_stop: int
    receipted: int
    drain_seconds: float
    latencies_ms: list[float]
    loop_lag_ms: list[float]
    commit_lag_ms: list[float]
    #: Round trips of the device's requests during the recording, by kind (announce, deliver, upload, verify).
    requests_ms: dict[str, list[float]]
    retries: int
    refused: int
    last_errors: list[str]
    mqtt_connects: int
    mqtt_connected_at_stop: int
    #: The fleet's garbage-collector pauses while recording (:meth:`custody.heap.GcPauses.summary`).
    gc_pauses: str = ""


def fleet_process(plan: FleetPlan, conn: multiprocessing.connection.Connection) -> None:
    """Entry point of the spawned fleet process: pin, run the step, send the report."""
    if plan.core is not None:
        os.sched_setaffinity(0, {plan.core})
    plan.root.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(filename=plan.root / "fleet.log", level=logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(_fleet_step(plan, conn))
    except BaseException as exc:
        logging.getLogger("fleet_bench").exception("fleet step failed")
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        raise


def _time_requests(into: dict[str, list[float]]) -> None:
    """Time the device's announce, deliver, upload and verify round trips (this process only: a measuring hook)."""
    from agent.client import ServerClient

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                into.setdefault(name, []).append((time.perf_counter() - t) * 1000)

        return wrapper

    for name in ("announce", "deliver", "upload", "verify"):
        setattr(ServerClient, name, timed(name, getattr(ServerClient, name)))


async def _fleet_step(plan: FleetPlan, conn: multiprocessing.connection.Connection) -> None:
    import aiohttp

    from custody.clock import SystemClock
    from custody.heap import GcPauses, settle_heap
    from simulators.fleet import Fleet
    from simulators.replay import ReplayRecorder, templates

    requests: dict[str, list[float]] = {}
    _time_requests(requests)
    # Each device commits its chunks through asyncio.to_thread (hash, sign, write, fsync): a real device
    # has its own threads for that, so the fleet must not make hundreds of them queue for the default
    # pool's few (min(32, cores + 4)), or chunks would close late. The threads mostly wait in fsync.
    asyncio.get_running_loop().set_default_executor(
        concurrent.futures.ThreadPoolExecutor(plan.commit_threads, thread_name_prefix="fleet-commit"))

    def phase(name: str) -> None:
        conn.send(("phase", name))

    began = time.monotonic()
    # Encoded while the server starts; then the parent says where the server is.
    chunks = templates(plan.width, plan.height, plan.video_bitrate, plan.chunk_seconds, 3, plan.noise)
    server_url, admin_token = await asyncio.to_thread(conn.recv)
    fleet = Fleet(plan.root / "devices", SystemClock(), plan.devices, replay_chunks=chunks,
                  http_connections=plan.http_connections)
    try:
        admin = {"Authorization": f"Bearer {admin_token}"}
        sem = asyncio.Semaphore(16)

        async def token() -> str:
            async with sem, fleet.session.post(server_url + "/api/v1/enrollment-tokens", json={},
                                               headers=admin) as r:
                r.raise_for_status()
                return str((await r.json())["token"])

        tokens = await asyncio.gather(*(token() for _ in range(plan.devices)))
        await fleet.open(tokens, mqtt=True, concurrency=plan.open_concurrency)
        agents = [d.agent for d in fleet.devices]
        async with asyncio.timeout(plan.connect_timeout):
            await asyncio.gather(*(a.mqtt.connected.wait() for a in agents if a.mqtt is not None))
        if any(a.mqtt is None for a in agents):
            raise RuntimeError("a device got no MQTT link (no broker URL in its enrollment answer?)")
        setup = time.monotonic() - began
        # A thousand devices' state lives as long as the step: walking it in every full collection
        # only stalls the loop (the devices share one process here, not one each as in the field).
        settle_heap()
        phase("ready")

        lags: list[float] = []

        async def watch_loop() -> None:
            # How late the fleet's event loop wakes: latency the fleet itself adds to every figure.
            while True:
                t = time.monotonic()
                await asyncio.sleep(0.1)
                lags.append((time.monotonic() - t - 0.1) * 1000)

        watcher = asyncio.create_task(watch_loop())
        # The parent lets the server settle and measures the idle cost of the connected fleet meanwhile.
        await asyncio.to_thread(conn.recv)
        requests.clear()  # enrollment and connection set-up are not what is measured
        pauses = GcPauses().install()
        t0 = time.monotonic() + 0.2
        await asyncio.sleep(0.2)
        phase("recording")
        profiler = None
        if plan.cprofile is not None:
            import cProfile

            # CPU time of the event-loop thread, not wall time: waits in select() cost nothing here.
            profiler = cProfile.Profile(time.thread_time)
            profiler.enable()
        spacing = plan.chunk_seconds / plan.devices

        async def device(i: int) -> None:
            agent = agents[i]
            start = t0 + i * spacing
            await asyncio.sleep(start - time.monotonic())
            await agent.start_recording(reason="fleet-bench")
            # Half a chunk after the last full chunk closed: exactly step/chunk chunks per device.
            await asyncio.sleep(start + plan.step_seconds + plan.chunk_seconds / 2 - time.monotonic())
            await agent.stop_recording(reason="fleet-bench")

        await asyncio.gather(*(device(i) for i in range(plan.devices)))

        def closed() -> int:
            return sum(r.closed for a in agents if isinstance(r := a.recorder, ReplayRecorder))

        def receipted() -> int:
            return sum(len(a.uploader.stats.latencies_ms) for a in agents if a.uploader is not None)

        if profiler is not None and plan.cprofile is not None:
            profiler.disable()
            profiler.dump_stats(plan.cprofile)
        pauses.uninstall()
        closed_at_stop, receipted_at_stop = closed(), receipted()
        connected_at_stop = sum(1 for a in agents if a.mqtt is not None and a.mqtt.connected.is_set())
        phase("stopped")
        stop = time.monotonic()
        while receipted() < closed() and time.monotonic() - stop < plan.drain_seconds:
            await asyncio.sleep(0.1)
        drain = time.monotonic() - stop
        phase("drained")
        watcher.cancel()
        stats = [a.uploader.stats for a in agents if a.uploader is not None]
        report = FleetReport(
            devices=plan.devices, setup_seconds=setup,
            chunk_bytes=round(statistics.mean(len(c.data) for c in chunks)),
            closed=closed(), receipted_at_stop=receipted_at_stop, closed_at_stop=closed_at_stop,
            receipted=receipted(), drain_seconds=drain,
            latencies_ms=[ms for s in stats for ms in s.latencies_ms], loop_lag_ms=lags, requests_ms=requests,
            commit_lag_ms=[ms for a in agents if isinstance(r := a.recorder, ReplayRecorder) for ms in r.commit_lag_ms],
            retries=sum(s.retries for s in stats), refused=sum(s.refused for s in stats),
            last_errors=sorted({s.last_error for s in stats if s.last_error})[:5],
            mqtt_connects=sum(a.mqtt.connects for a in agents if a.mqtt is not None),
            mqtt_connected_at_stop=connected_at_stop, gc_pauses=pauses.summary(),
        )
        conn.send(("result", asdict(report)))
    except aiohttp.ClientError as exc:
        raise RuntimeError(f"fleet set-up failed: {exc}") from exc
    finally:
        await fleet.close()


class FleetProcess:
    """The fleet in a spawned process; phases arrive over a pipe."""

    def __init__(self, plan: FleetPlan) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=fleet_process, args=(plan, child), daemon=True, name="fleet")
        self.proc.start()
        child.close()

    @property
    def pid(self) -> int:
        """The fleet process's pid."""
        assert self.proc.pid is not None
        return self.proc.pid

    def send(self, message: object) -> None:
        """Tell the fleet something it waits for: the server's URL and token, then the go after "ready"."""
        self._conn.send(message)

    def next_message(self, timeout: float) -> tuple[str, Any]:
        """The next (kind, value) from the fleet; raise if it died or said nothing for ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while not self._conn.poll(0.2):
            if not self.proc.is_alive():
                raise RuntimeError(f"the fleet process exited with code {self.proc.exitcode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the fleet process said nothing for {timeout:.0f} s")
        try:
            kind, value = self._conn.recv()
        except EOFError:
            self.proc.join(5)
            raise RuntimeError(f"the fleet process died (exit code {self.proc.exitcode})") from None
        if kind == "error":
            raise RuntimeError(f"the fleet process failed: {value}")
        return kind, value

    def stop(self, timeout: float = 120.0) -> None:
        """Wait for it to close its devices and exit; kill it if it does not."""
        self.proc.join(timeout)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(10)


class StandInProcess:
    """bench/fleet_standin.py in a spawned process (``--stand-in``)."""

    def __init__(self, plan: StandInPlan) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=standin_serve, args=(plan, child), daemon=True, name="stand-in")
        self.proc.start()
        child.close()
        while not self._conn.poll(0.2):
            if not self.proc.is_alive():
                raise RuntimeError(f"the stand-in server exited with code {self.proc.exitcode}")
        self._conn.recv()

    @property
    def pid(self) -> int:
        """Its pid."""
        assert self.proc.pid is not None
        return self.proc.pid

    def stop(self) -> None:
        """Ask it to stop and wait."""
        with contextlib.suppress(OSError):
            self._conn.send("stop")
        self.proc.join(15)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)


# -- profiling -----------------------------------------------------------------------------------

#: Frames every sample passes through (interpreter start-up, the event loop, thread plumbing):
#: left out of the inclusive ranking, where they would only say "100 %".
_PLUMBING = ("<module> (", "run (asyncio/runners.py", "Runner.run (", "BaseEventLoop.", "Handle._run (",
             "Thread._bootstrap", "Thread.run (", "_worker (concurrent/futures/thread.py", "_WorkItem.run (",
             "_run_module_as_main (", "_run_code (", "main (custody/cli.py", "run_server (server/cli.py",
             "run (asyncio/events.py", "KqueueSelector", "EpollSelector")


#: Leaf frames of a thread that waits (for work, for I/O, for a lock): py-spy cannot always tell these
#: from running code (a wait inside a C call looks busy), so they are counted apart, not as hot spots.
_WAITING = ("_worker (concurrent/futures/thread.py", "EpollSelector.select (", "select (selectors.py",
            "Condition.wait (", "Event.wait (", "Semaphore.acquire (threading.py", "Thread.join (",
            "Thread._wait_for_tstate_lock (", "Queue.get (queue.py", "SimpleQueue.get (")


#: Where this project's code lives (py-spy names files relative to their sys.path entry).
_OURS = ("server/", "protocol/", "agent/", "custody/", "simulators/")


@dataclass
class Profile:
    """py-spy samples summarised by function."""

    samples: int
    waiting: int
    threads: Counter[str]
    self_: Counter[str]
    inclusive: Counter[str]

    @classmethod
    def parse(cls, raw: str) -> Profile:
        """Read py-spy's ``--format raw --threads --function`` output (collapsed stacks)."""
        threads: Counter[str] = Counter()
        self_: Counter[str] = Counter()
        inclusive: Counter[str] = Counter()
        total = waiting = 0
        for line in raw.splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            thread, *frames = stack.split(";")
            if frames and frames[-1].startswith(_WAITING):
                waiting += count
                continue
            total += count
            # "thread (1234): MainThread" -> MainThread; numbered pool threads are one kind.
            name = thread.split(": ", 1)[-1].rstrip("0123456789_").strip() or thread
            threads[name] += count
            if frames:
                self_[frames[-1]] += count
                for frame in set(frames):
                    if not frame.startswith(_PLUMBING):
                        inclusive[frame] += count
        return cls(total, waiting, threads, self_, inclusive)

    def summary(self, top: int) -> str:
        """Top functions by self and inclusive samples, and the split between threads."""
        def pct_(n: int) -> str:
            return f"{100 * n / max(1, self.samples):5.1f} %"

        lines = [f"{self.samples} busy samples, all threads ({self.waiting} more of threads waiting in epoll, for "
                 "a lock or for work, left out); a busy sample may also be a thread ready to run but preempted "
                 "on its shared core", "", "threads:"]
        lines += [f"  {pct_(n)}  {name}" for name, n in self.threads.most_common(8)]
        lines += ["", f"top {top} by self samples (the function itself was running):"]
        lines += [f"  {pct_(n)}  {frame}" for frame, n in self.self_.most_common(top)]
        lines += ["", f"top {top} by inclusive samples (the function was on the stack; event-loop and thread "
                      "plumbing left out):"]
        lines += [f"  {pct_(n)}  {frame}" for frame, n in self.inclusive.most_common(top)]
        ours = Counter({f: n for f, n in self.inclusive.items() if f.split(" (", 1)[-1].startswith(_OURS)})
        lines += ["", f"top {top} of this project's functions by inclusive samples:"]
        lines += [f"  {pct_(n)}  {frame}" for frame, n in ours.most_common(top)]
        return "\n".join(lines)


class PySpy:
    """``py-spy record`` on one process for a fixed time, in the background."""

    def __init__(self, pid: int, out: Path, seconds: float, *, rate: int, gil: bool, nonblocking: bool) -> None:
        exe = Path(sys.executable).with_name("py-spy")
        self.out = out
        cmd = [str(exe if exe.exists() else "py-spy"), "record", "--pid", str(pid), "--duration",
               str(max(1, round(seconds))), "--rate", str(rate), "--format", "raw", "--threads", "--function",
               "--output", str(out)]
        if gil:
            cmd.append("--gil")
        if nonblocking:
            # Never pauses the process, but then py-spy cannot tell a thread waiting in epoll or a lock
            # from a running one: waits show up as busy samples.
            cmd.append("--nonblocking")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=(out.with_suffix(".log")).open("wb"), preexec_fn=die_with_parent)

    def wait(self) -> Profile | None:
        """Wait for the recording; its summary, or None if py-spy failed."""
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGINT)  # py-spy writes what it has on SIGINT
            self.proc.wait(30)
        if not self.out.exists():
            return None
        return Profile.parse(self.out.read_text())


class PerfRecord:
    """``perf record -g`` on one process for a fixed time, in the background (native and kernel code)."""

    def __init__(self, pid: int, out: Path, seconds: float, *, rate: int) -> None:
        self.out = out
        cmd = ["perf", "record", "-F", str(rate), "-g", "-p", str(pid), "-o", str(out), "--",
               "sleep", str(max(1, round(seconds)))]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=(out.with_suffix(".log")).open("wb"), preexec_fn=die_with_parent)

    def wait(self, top: int) -> str:
        """Wait for the recording; the top symbols by own samples, or why there are none."""
        try:
            self.proc.wait(120)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(30)
        if not self.out.exists():
            return f"perf failed: see {self.out.with_suffix('.log')}"
        report = subprocess.run(["perf", "report", "-i", str(self.out), "--stdio", "--no-children",
                                 "--sort", "dso,sym", "-g", "none", "--percent-limit", "0.7"],
                                capture_output=True, text=True, timeout=300)
        rows = [line for line in report.stdout.splitlines() if line.strip() and not line.startswith("#")]
        return "\n".join(rows[:top]) or f"perf report printed nothing: {report.stderr.strip()[:500]}"


def cprofile_summary(path: Path, top: int) -> str:
    """Top functions of a cProfile by own and cumulative time."""
    import io
    import pstats

    text = io.StringIO()
    stats = pstats.Stats(str(path), stream=text)
    stats.strip_dirs()
    text.write("by own time:\n")
    stats.sort_stats("tottime").print_stats(top)
    text.write("by cumulative time:\n")
    stats.sort_stats("cumulative").print_stats(top)
    return "\n".join(line for line in text.getvalue().splitlines() if line.strip())


def settle(pid: int, limit: float) -> float:
    """Wait until a process's CPU use is low and steady (the server has worked off the set-up); seconds waited.

    Connecting a large fleet leaves the server a backlog (each device's first status and availability),
    worked off at full speed. Settled: three 1-second readings within 5 % of a core of each other, and
    either well below the peak seen (the backlog is gone) or low from the start. After ``limit``
    seconds it gives up and returns more than ``limit``; a ``limit`` of 0 does not wait.
    """
    if limit <= 0:
        return 0.0
    began = time.monotonic()
    last = cpu_seconds(pid)
    rates: list[float] = []
    while time.monotonic() - began < limit:
        time.sleep(1.0)
        now = cpu_seconds(pid)
        rates.append(now - last)
        last = now
        recent = rates[-3:]
        peak = max(rates)
        if len(recent) == 3 and max(recent) - min(recent) <= 0.05 and (recent[-1] < 0.8 * peak or peak < 0.3):
            return time.monotonic() - began
    return limit + 1


# -- one step ------------------------------------------------------------------------------------


def _mem_available() -> int:
    """MemAvailable from /proc/meminfo, in bytes (0 if unreadable)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def fleet_dir(args: argparse.Namespace, n: int, work: Path) -> Path:
    """Where a step's device buffers go: ``--fleet-dir``, or with ``auto`` memory when it has room.

    Real devices write to their own flash, not to the server's disk: buffers on the work disk would
    make the fleet's 1 Mbit/s per device of writes and fsyncs compete with the server's footage
    store, which a deployment never sees. /dev/shm is used when it and the machine's available
    memory hold every chunk of the step (what a fleet that is not receipted at all would keep) with
    room to spare; otherwise the work directory.
    """
    if args.fleet_dir != "auto":
        return Path(args.fleet_dir) / work.name if args.fleet_dir else work / "fleet"
    shm = Path("/dev/shm")
    need = n * (args.step_seconds / args.chunk_seconds + 2) * 700_000 + (4 << 30)
    if shm.is_dir() and os.access(shm, os.W_OK) and min(shutil.disk_usage(shm).free, _mem_available()) > need:
        return shm / f"custody-fleet-{os.getpid()}-{work.name}"
    return work / "fleet"


def server_gc_pauses(path: Path) -> str:
    """The collector's pauses the server printed as it stopped (see server/runner.py)."""
    marker = "gc pauses while serving: "
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.startswith(marker)]
    return lines[-1].removeprefix(marker) if lines else "(not printed)"


def server_log_errors(path: Path) -> tuple[int, str]:
    """How many ERROR/CRITICAL records the server logged, and the first one's line."""
    count, first = 0, ""
    with path.open(errors="replace") as f:
        for line in f:
            if " ERROR " in line or " CRITICAL " in line:
                count += 1
                first = first or line.strip()[:300]
    return count, first


@dataclass
class StepResult:
    """One step's figures."""

    devices: int
    expected: int
    closed: int
    receipted: int
    backlog_at_stop: int
    drain_seconds: float
    p50: float
    p95: float
    p99: float
    max: float
    server_ms: float
    postgres_ms: float
    mosquitto_ms: float
    fleet_ms: float
    server_split: str
    fleet_split: str
    #: Share of a core used with every device connected and none recording.
    server_idle: float
    fleet_idle: float
    #: CPU per chunk above that idle use.
    server_marginal_ms: float
    fleet_marginal_ms: float
    server_core: float
    fleet_core: float
    core_busy: dict[int, float]
    loop_lag_p99_ms: float
    loop_lag_max_ms: float
    commit_lag_p99_ms: float
    other_load: float
    server_log_errors: int
    requests: str
    setup_seconds: float
    chunk_bytes: int
    retries: int
    refused: int
    mqtt_reconnects: int
    errors: list[str]
    #: Garbage-collector pauses: the server's while it served, the fleet's while it recorded.
    gc_pauses: str = ""
    fleet_root: str = ""
    profiled: bool = False
    fleet_saturated: bool = False
    contended: bool = False
    sustained: bool = False
    notes: list[str] = field(default_factory=list)

    def ceiling(self, idle: float, marginal_ms: float, chunk_seconds: float, limit: float) -> int:
        """Devices whose idle and per-chunk CPU, at this step's rates, fill ``limit`` of a core.

        A CPU-time estimate: unlike the sustained verdict it does not depend on what else the shared
        machine ran meanwhile. It counts constant duties (the scrubber) as if they grew with the fleet.
        """
        per_device = idle / self.devices + marginal_ms / 1000 / chunk_seconds
        return int(limit / per_device) if per_device > 0 else 0

    def row(self) -> str:
        """One Markdown table row."""
        verdict = ("invalid (fleet saturated)" if self.fleet_saturated else "yes" if self.sustained
                   else "contended (other jobs)" if self.contended else "**no**")
        cores = " / ".join(f"{100 * b:.0f}" for _, b in sorted(self.core_busy.items()))
        return (f"| {self.devices:,} | {self.closed:,} | {self.receipted:,} | {self.p50:,.0f} | {self.p95:,.0f} | "
                f"{self.p99:,.0f} | {self.max:,.0f} | {self.server_ms:.1f} | {100 * self.server_core:.0f} % | "
                f"{self.postgres_ms:.1f} | {self.mosquitto_ms:.2f} | {self.fleet_ms:.1f} | "
                f"{100 * self.fleet_core:.0f} % | {self.loop_lag_p99_ms:,.0f} | {cores} | {self.other_load:.2f} | "
                f"{verdict}"
                f"{' (profiled)' if self.profiled else ''} |")


TABLE_HEAD = ("| devices | chunks closed | receipted | p50 ms | p95 ms | p99 ms | max ms | server CPU ms/chunk | "
              "server process CPU | PG ms/chunk | Mosquitto ms/chunk | fleet ms/chunk | fleet process CPU | "
              "fleet loop lag p99 ms | core busy % (0 / 1 ...) | other jobs (cores) | sustained |\n"
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")


@dataclass(frozen=True)
class Services:
    """The long-lived services of a run."""

    pg: PostgresServer
    broker: MosquittoBroker


def run_step(n: int, index: int, args: argparse.Namespace, services: Services, out: Path) -> StepResult:
    """Run one step of ``n`` devices from a clean slate; put everything it wrote out of the way afterwards."""
    work = Path(args.work_dir) / f"step-{index:02d}-{n}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    fleet_root = fleet_dir(args, n, work)
    db = f"fleet_bench_{index}"
    services.pg.drop_database(db)
    url = services.pg.create_database(db)
    services.broker.restart()  # no retained messages or sessions of an earlier step's devices
    if args.services_core is not None and services.broker.pid is not None:
        pin_tree(services.broker.pid, args.services_core)
    config: dict[str, Any] = {
        "data_dir": str(work / "server"),
        "http": {"host": "127.0.0.1", "port": free_port()},
        "database": {"url": url},
        "storage": {"backend": "local"},
        "mqtt": {"url": services.broker.url},
    }
    for key, value in args.set:
        node = config
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    server = ServerProcess(work, config, args.server_core)
    fleet: FleetProcess | None = None
    spy: PySpy | None = None
    fleet_spy: PySpy | None = None
    perf: PerfRecord | None = None
    standin: StandInProcess | None = None
    profiled = args.profile == n
    try:
        plan = FleetPlan(root=fleet_root, devices=n, step_seconds=args.step_seconds, drain_seconds=args.drain_seconds,
                         chunk_seconds=args.chunk_seconds, width=args.width, height=args.height,
                         video_bitrate=args.video_bitrate, noise=args.noise, core=args.fleet_core,
                         http_connections=args.http_connections,
                         cprofile=out / f"fleet-{n}.pstats" if profiled and args.profile_fleet == "cpu" else None)
        fleet = FleetProcess(plan)  # starts up (imports, templates) while the server does
        fleet.send(server.wait_ready())
        pg_pid, mq_pid = services.pg.pid, services.broker.pid
        assert pg_pid is not None and mq_pid is not None

        server_pid = server.pid

        def sample() -> Sample:
            assert fleet is not None
            return Sample.take(server_pid, pg_pid, mq_pid, fleet.pid)

        samples: dict[str, Sample] = {}
        result: dict[str, Any] | None = None
        timeout = 600.0  # set-up of a large fleet (enrollment, 1,000+ MQTT connections)
        while result is None:
            kind, value = fleet.next_message(timeout)
            if kind == "phase":
                samples[value] = sample()
                timeout = args.step_seconds + args.drain_seconds + 120
                if value == "ready":
                    if args.stand_in:
                        # Enrolled and connected by the real server; the stand-in takes its port from here on.
                        server.stop()
                        standin = StandInProcess(StandInPlan(
                            "127.0.0.1", config["http"]["port"], Path(config["data_dir"]) / "keys",
                            services.broker.host, services.broker.port, args.server_core))
                        server_pid = standin.pid
                    settled = settle(server_pid, args.settle_seconds)
                    samples["idle-start"] = sample()
                    time.sleep(args.idle_seconds)
                    samples["idle-end"] = sample()
                    fleet.send("go")
                if value == "recording" and args.perf == n:
                    perf = PerfRecord(server_pid, out / f"server-{n}.perf.data", args.step_seconds,
                                      rate=args.perf_rate)
                if value == "recording" and profiled:
                    spy = PySpy(server_pid, out / f"server-{n}.raw.txt", args.step_seconds, rate=args.profile_rate,
                                gil=args.profile_gil, nonblocking=args.profile_nonblocking)
                    if args.profile_fleet == "wall":
                        fleet_spy = PySpy(fleet.pid, out / f"fleet-{n}.raw.txt", args.step_seconds,
                                          rate=args.profile_rate, gil=False, nonblocking=args.profile_nonblocking)
            elif kind == "result":
                result = value
        report = FleetReport(**result)
        fleet.stop()
        server.stop()  # it prints its collector's pauses as it stops
        errors, first_error = server_log_errors(server.log_path)
        idle = Window.between(samples["idle-start"], samples["idle-end"])
        run = Window.between(samples["recording"], samples["drained"])
        busy = Window.between(samples["recording"], samples["stopped"])
        chunks = max(1, report.receipted)
        # The fleet's work starts when a chunk closes (commit, announce) whether or not it is receipted.
        closed_chunks = max(1, report.closed)
        lat = report.latencies_ms or [float("nan")]
        lag = report.loop_lag_ms or [0.0]
        step = StepResult(
            devices=n, expected=n * int(args.step_seconds // args.chunk_seconds), closed=report.closed,
            receipted=report.receipted, commit_lag_p99_ms=pct(report.commit_lag_ms or [0.0], 99),
            backlog_at_stop=report.closed_at_stop - report.receipted_at_stop, drain_seconds=report.drain_seconds,
            p50=pct(lat, 50), p95=pct(lat, 95), p99=pct(lat, 99), max=max(lat),
            server_ms=1000 * run.server.total / chunks, postgres_ms=1000 * run.postgres / chunks,
            mosquitto_ms=1000 * run.mosquitto / chunks, fleet_ms=1000 * run.fleet.total / closed_chunks,
            server_split=run.server.per_chunk(chunks), fleet_split=run.fleet.per_chunk(closed_chunks),
            server_idle=idle.server.total / idle.seconds, fleet_idle=idle.fleet.total / idle.seconds,
            server_marginal_ms=1000 * (run.server.total - idle.server.total / idle.seconds * run.seconds) / chunks,
            fleet_marginal_ms=1000 * (run.fleet.total - idle.fleet.total / idle.seconds * run.seconds)
            / closed_chunks,
            server_core=busy.server.total / busy.seconds, fleet_core=busy.fleet.total / busy.seconds,
            core_busy=busy.core_busy,
            loop_lag_p99_ms=pct(lag, 99), loop_lag_max_ms=max(lag), other_load=busy.others,
            server_log_errors=errors, setup_seconds=report.setup_seconds,
            requests="; ".join(f"{k} p50 {pct(v, 50):,.0f} p99 {pct(v, 99):,.0f} max {max(v):,.0f} ms"
                               for k, v in sorted(report.requests_ms.items()) if v),
            chunk_bytes=report.chunk_bytes, retries=report.retries, refused=report.refused,
            mqtt_reconnects=report.mqtt_connects - n, errors=report.last_errors, profiled=profiled,
            gc_pauses=("stand-in (not measured)" if args.stand_in else f"server {server_gc_pauses(server.log_path)}")
            + f"; fleet {report.gc_pauses}",
            fleet_root=str(fleet_root),
        )
        # A fleet that cannot keep up shows as a saturated core, or as chunks closing late or not at all.
        step.fleet_saturated = (step.fleet_core > args.fleet_limit or step.closed < step.expected
                                or step.commit_lag_p99_ms > 1000 * args.chunk_seconds / 2)
        step.sustained = (not step.fleet_saturated and step.p99 <= args.p99_limit
                          and step.receipted >= step.closed and step.refused == 0)
        if step.receipted < step.closed:
            step.notes.append(f"{step.closed - step.receipted} chunks not receipted {args.drain_seconds:.0f} s "
                              "after the last stop")
        if step.p99 > args.p99_limit:
            step.notes.append(f"p99 {step.p99:,.0f} ms > {args.p99_limit:,.0f} ms")
        if step.fleet_saturated:
            step.notes.append(f"fleet process used {100 * step.fleet_core:.0f} % of its core "
                              f"(limit {100 * args.fleet_limit:.0f} %), closed {step.closed} of {step.expected} "
                              f"chunks, "
                              f"commit lag p99 {step.commit_lag_p99_ms:,.0f} ms: the fleet, not the server, "
                              "is the limit")
        if step.refused:
            step.notes.append(f"{step.refused} refusals by the server")
        if errors:
            step.notes.append(f"{errors} errors in the server log, the first: {first_error}")
        if step.mqtt_reconnects:
            step.notes.append(f"{step.mqtt_reconnects} MQTT reconnects")
        for label, run_spy in (("server", spy), ("fleet", fleet_spy)):
            if run_spy is not None:
                prof = run_spy.wait()
                text = prof.summary(args.profile_top) if prof else "py-spy failed: see its .log"
                (out / f"{label}-{n}.summary.txt").write_text(text + "\n")
                print(f"\n-- py-spy, {label} process, {n} devices --\n{text}\n", flush=True)
        if perf is not None:
            text = perf.wait(args.profile_top)
            (out / f"server-{n}.perf.txt").write_text(text + "\n")
            print(f"\n-- perf, server process, {n} devices (% of its samples, own) --\n{text}\n", flush=True)
        if plan.cprofile is not None and plan.cprofile.exists():
            text = cprofile_summary(plan.cprofile, args.profile_top)
            (out / f"fleet-{n}.summary.txt").write_text(text + "\n")
            print(f"\n-- cProfile (CPU time), fleet event loop, {n} devices --\n{text}\n", flush=True)
        if settled > args.settle_seconds:
            step.notes.append(f"server still busy after {args.settle_seconds:.0f} s of set-up: idle figures high")
        return step
    finally:
        if fleet is not None:
            fleet.stop()
        if standin is not None:
            standin.stop()
        server.stop()
        # The logs stay for the post-mortem (a few MB at most); the footage goes.
        for src, name in ((work / "server.log", "server.log"), (fleet_root / "fleet.log", "fleet.log")):
            with contextlib.suppress(OSError):
                shutil.copy(src, out / f"step-{n}-{name}")
        if not args.keep:
            shutil.rmtree(fleet_root, ignore_errors=True)  # memory (or the work dir) for the next step
            spend(work, args)
        services.pg.drop_database(db)


def spent_dir(args: argparse.Namespace) -> Path:
    """Where the footage of finished steps waits for its removal."""
    return Path(args.work_dir) / "spent"


def spend(work: Path, args: argparse.Namespace) -> None:
    """Put a finished step's data out of the way: aside (a rename) or, with ``--remove-at once``, removed.

    Removing thousands of files just before the next step makes that step's server slower on a
    file system like this machine's root (ext4 without a journal): for some minutes after a
    delete, each new inode is found only after every recently deleted one in its group has been
    skipped (ext4's find_inode_bit / recently_deleted). perf put 8 - 9 % of the server's CPU there
    in steps that followed a removal, 1 % otherwise (2026-11-23). So the footage of a ramp is
    removed at its end, or earlier when the disk needs the room (:func:`make_room`).
    """
    if args.remove_at == "once":
        shutil.rmtree(work, ignore_errors=True)
        return
    spent = spent_dir(args)
    spent.mkdir(exist_ok=True)
    work.rename(spent / f"{work.name}-{time.monotonic_ns()}")  # a step run again has the same name


def make_room(need: float, args: argparse.Namespace) -> str | None:
    """Remove set-aside footage when the next step would leave less than ``--min-free-gb``; what was done."""
    spent = spent_dir(args)
    free = shutil.disk_usage(args.work_dir).free
    if free - need >= args.min_free_gb * 1e9 or not spent.exists():
        return None
    shutil.rmtree(spent, ignore_errors=True)
    return (f"earlier steps' footage removed just before this step to make room ({free / 1e9:.1f} GB free): "
            "on ext4 without a journal, new inodes cost more for a few minutes after")


# -- the ramp --------------------------------------------------------------------------------------


def ramp_steps(args: argparse.Namespace) -> list[int]:
    """Device counts of the ramp."""
    if args.start is not None:
        return list(range(args.start, args.max + 1, args.step))
    return [int(v) for v in args.ramp.split(",") if v.strip()]


def raise_fd_limit(devices: int) -> str:
    """Raise the open-file limit (inherited by Mosquitto and the fleet) to the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    note = f"open files: {want}"
    # The fleet holds a socket per device plus its HTTP pool and files; Mosquitto a socket per device.
    if want < devices + 1024:
        note += f" (too few for {devices} devices: raise the hard limit, `ulimit -Hn`)"
    return note


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("ramp")
    g.add_argument("--ramp", default=DEFAULT_RAMP, help=f"device counts of the steps (default {DEFAULT_RAMP})")
    g.add_argument("--start", type=int, help="instead of --ramp: first step's devices (with --step, --max)")
    g.add_argument("--step", type=int, default=100, help="devices added per step with --start (default 100)")
    g.add_argument("--max", type=int, default=3000, help="last step with --start (default 3000)")
    g.add_argument("--step-seconds", type=float, default=60.0, help="recording per device and step (default 60)")
    g.add_argument("--drain-seconds", type=float, default=15.0,
                   help="after the last stop, time allowed for every closed chunk to be receipted (default 15)")
    g.add_argument("--p99-limit", type=float, default=2000.0, help="p99 chunk-close-to-receipt ms (default 2000)")
    g.add_argument("--fleet-limit", type=float, default=0.9,
                   help="share of its core the fleet may use before a step is invalid (default 0.9)")
    g.add_argument("--min-free-gb", type=float, default=10.0,
                   help="stop before a step whose footage would leave less free disk than this (default 10)")
    g.add_argument("--keep-going", action="store_true", help="run every step even after one is not sustained")
    g.add_argument("--contention-limit", type=float, default=0.25,
                   help="a step that fails while other jobs on the machine used more cores than this is "
                        "contended, not a result (default 0.25)")
    g.add_argument("--retries", type=int, default=2, help="times a contended step is run again (default 2)")
    g.add_argument("--settle-seconds", type=float, default=60.0,
                   help="at most this long for the server to work off the fleet's set-up (default 60)")
    g.add_argument("--idle-seconds", type=float, default=5.0,
                   help="idle cost measured this long with the fleet connected, not recording (default 5)")
    g = p.add_argument_group("footage")
    g.add_argument("--chunk-seconds", type=int, default=5,
                   help="chunk length: each device closes one this often (default 5)")
    g.add_argument("--width", type=int, default=640, help="picture width of the replay templates (default 640)")
    g.add_argument("--height", type=int, default=360, help="picture height (default 360)")
    g.add_argument("--video-bitrate", type=int, default=900_000,
                   help="video bitrate of the replay templates; with AAC 64 kbit/s about 1 Mbit/s (default 900000)")
    g.add_argument("--noise", type=int, default=8,
                   help="sensor-like noise so the encoder spends its bitrate (default 8)")
    g = p.add_argument_group("processes")
    g.add_argument("--server-core", type=int, default=0, help="core the server is pinned to (default 0; -1: none)")
    g.add_argument("--fleet-core", type=int, default=1, help="core the fleet is pinned to (default 1; -1: none)")
    g.add_argument("--services-core", type=int, default=-1,
                   help="pin PostgreSQL and Mosquitto to this core (default -1: not pinned)")
    g.add_argument("--http-connections", type=int, default=256, help="the fleet's shared HTTP pool (default 256)")
    g.add_argument("--set", action="append", type=parse_set, default=[], metavar="KEY=VALUE",
                   help="server config override, dotted (e.g. scrub.enabled=false); repeatable")
    g.add_argument("--stand-in", action="store_true",
                   help="measure the fleet alone: after enrollment a stand-in (bench/fleet_standin.py: signed "
                        "receipts, no checks, no database) replaces the server on its core, so the steps show "
                        "whether the fleet itself keeps up; server figures are then the stand-in's")
    g.add_argument("--work-dir", help="where steps write (default: a temp dir; see --remove-at)")
    g.add_argument("--fleet-dir", default="auto",
                   help="where the devices' buffers go (default auto: /dev/shm when memory holds a whole step's "
                        "footage, so the fleet's writes and fsyncs do not compete with the server's store on the "
                        "same disk, as real devices' flash would not; else the work dir; '' for the work dir)")
    g.add_argument("--out", help="where results and profiles go (default: a new temp dir, kept)")
    g.add_argument("--keep", action="store_true", help="keep each step's data (disk fills fast)")
    g.add_argument("--remove-at", choices=("end", "once"), default="end",
                   help="when a step's footage is removed: end = set aside and removed at the end of the ramp "
                        "(or when the disk needs the room), once = as soon as the step is over (then the next "
                        "step pays for it on ext4 without a journal; see spend())")
    g = p.add_argument_group("profiling (py-spy)")
    g.add_argument("--profile", type=int, metavar="DEVICES", help="record the server during the step of this size")
    g.add_argument("--profile-fleet", choices=("cpu", "wall"),
                   help="also profile the fleet: cpu = cProfile of its event loop on CPU time (py-spy counts a "
                        "thread blocked in fsync as busy), wall = py-spy (what blocks the loop)")
    g.add_argument("--profile-rate", type=int, default=100, help="samples per second (default 100)")
    g.add_argument("--profile-gil", action="store_true", help="only samples holding the GIL (py-spy --gil)")
    g.add_argument("--profile-nonblocking", action="store_true",
                   help="never pause the process (py-spy --nonblocking; idle threads then count as busy)")
    g.add_argument("--profile-top", type=int, default=15, help="functions listed (default 15)")
    g.add_argument("--perf", type=int, metavar="DEVICES",
                   help="record the server with perf (native code and kernel) during the step of this size")
    g.add_argument("--perf-rate", type=int, default=499, help="perf samples per second (default 499)")
    g.add_argument("--summarize", type=Path, metavar="RAW",
                   help="only print the summary of a raw profile this bench wrote earlier, and exit")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ramp; print each step and the verdict."""
    parser = build_parser()
    args = parser.parse_args(argv)
    check_sets(parser, args.set)
    if args.summarize is not None:
        print(Profile.parse(args.summarize.read_text()).summary(args.profile_top))
        return 0
    args.server_core = None if args.server_core < 0 else args.server_core
    args.fleet_core = None if args.fleet_core < 0 else args.fleet_core
    args.services_core = None if args.services_core < 0 else args.services_core
    steps = ramp_steps(args)
    if not steps:
        raise SystemExit("no steps")
    if args.profile is not None and args.profile not in steps:
        raise SystemExit(f"--profile {args.profile}: no step of that size in {steps}")
    if args.perf is not None and args.perf not in steps:
        raise SystemExit(f"--perf {args.perf}: no step of that size in {steps}")
    if args.perf is not None and shutil.which("perf") is None:
        raise SystemExit("--perf: the perf tool is not installed (Debian: linux-perf)")
    out = Path(args.out or tempfile.mkdtemp(prefix="custody-fleet-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    own_work = args.work_dir is None
    args.work_dir = args.work_dir or tempfile.mkdtemp(prefix="custody-fleet-work-")
    fd_note = raise_fd_limit(max(steps))
    print(f"fleet bench {dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; code {REPO} "
          f"({_git_head()}); {os.cpu_count()} cores; {fd_note}", flush=True)
    where = "unpinned" if args.services_core is None else f"pinned to core {args.services_core}"
    print(f"server pinned to core {args.server_core}, fleet to core {args.fleet_core}; PostgreSQL and Mosquitto "
          f"{where}; steps {steps}, {args.step_seconds:.0f} s each + up to {args.drain_seconds:.0f} s drain; "
          f"results in {out}", flush=True)
    print(machine_probe(args.server_core), flush=True)
    results: list[StepResult] = []
    svc_dir = Path(tempfile.mkdtemp(prefix="custody-fleet-svc-"))
    pg = PostgresServer()
    broker = MosquittoBroker(svc_dir / "mosquitto", extra_config=BROKER_LIMITS)
    try:
        pg.start()
        broker.start()
        services = Services(pg, broker)
        if args.services_core is not None:
            assert pg.pid is not None
            pin_tree(pg.pid, args.services_core)
        for index, n in enumerate(steps):
            # The server keeps every chunk of the step (devices free theirs once receipted).
            need = n * (args.step_seconds / args.chunk_seconds) * 700_000
            made_room = make_room(need, args)
            free = shutil.disk_usage(args.work_dir).free
            if free - need < args.min_free_gb * 1e9:
                print(f"stopping before {n} devices: {free / 1e9:.1f} GB free, the step needs about "
                      f"{need / 1e9:.1f} GB and {args.min_free_gb:.0f} GB must stay free", flush=True)
                break
            for attempt in range(args.retries + 1):
                step = run_step(n, index, args, services, out)
                if made_room:
                    step.notes.append(made_room)
                    made_room = None
                step.notes.append("device buffers in memory (/dev/shm)" if step.fleet_root.startswith("/dev/shm")
                                  else f"device buffers on disk ({step.fleet_root})")
                # Other people's jobs on the shared machine can take the server's core: a step that fails
                # then says nothing about the server. Such a step is run again.
                step.contended = not step.sustained and step.other_load > args.contention_limit
                results.append(step)
                report_step(step, args)
                if not step.contended:
                    break
                print(f"       other jobs took {step.other_load:.2f} cores: the step is contended"
                      f"{', running it again' if attempt < args.retries else ''}", flush=True)
            if step.fleet_saturated or step.contended or (not step.sustained and not args.keep_going):
                break
    finally:
        broker.stop()
        pg.stop()
        shutil.rmtree(svc_dir, ignore_errors=True)
        shutil.rmtree(spent_dir(args), ignore_errors=True)
        if own_work:
            shutil.rmtree(args.work_dir, ignore_errors=True)
    (out / "results.json").write_text(json.dumps([asdict(r) for r in results], indent=1))
    print(machine_probe(args.server_core), flush=True)
    print(f"\nchunk: {results[0].chunk_bytes if results else 0:,} bytes every {args.chunk_seconds} s per device\n")
    print(TABLE_HEAD)
    for r in results:
        print(r.row())
    best = max((r for r in results if r.sustained), key=lambda r: r.devices, default=None)
    invalid = next((r for r in results if r.fleet_saturated), None)
    print()
    contended = next((r for r in results if r.contended and r is results[-1]), None)
    if contended is not None:
        print(f"CONTENDED at {contended.devices} devices: other jobs took {contended.other_load:.2f} cores; "
              "the ramp's end is not the server's limit (see the CPU-based ceilings above)")
    if invalid is not None:
        print(f"INVALID from {invalid.devices} devices: the fleet process saturated its core before the server.")
    if best is None:
        print("no step was sustained")
        return 1
    print(f"largest fleet sustained: {best.devices:,} devices ({best.devices / args.chunk_seconds:.0f} chunks/s); "
          f"server CPU {best.server_ms:.1f} ms per chunk there (PostgreSQL {best.postgres_ms:.1f}, "
          f"Mosquitto {best.mosquitto_ms:.2f})")
    return 0


def report_step(step: StepResult, args: argparse.Namespace) -> None:
    """Print one step's figures."""
    print(f"{step.devices:>5} devices: {step.closed:,} closed, {step.receipted:,} receipted "
          f"(backlog {step.backlog_at_stop} at the last stop, drained in {step.drain_seconds:.1f} s); "
          f"close->receipt p50 {step.p50:,.0f} p95 {step.p95:,.0f} p99 {step.p99:,.0f} "
          f"max {step.max:,.0f} ms; CPU ms/chunk {'stand-in' if args.stand_in else 'server'} "
          f"{step.server_ms:.1f} "
          f"(process {100 * step.server_core:.0f} % of a core), PG {step.postgres_ms:.1f}, "
          f"Mosquitto {step.mosquitto_ms:.2f}, fleet {step.fleet_ms:.1f} "
          f"({100 * step.fleet_core:.0f} %, loop lag p99 {step.loop_lag_p99_ms:.0f} ms); "
          f"cores busy {', '.join(f'{c}: {100 * b:.0f} %' for c, b in sorted(step.core_busy.items()))} "
          f"(other jobs: {step.other_load:.2f} cores); "
          f"set-up {step.setup_seconds:.0f} s; "
          f"commit lag p99 {step.commit_lag_p99_ms:,.0f} ms; "
          f"{'SUSTAINED' if step.sustained else 'NOT SUSTAINED'}"
          f"{'; ' + '; '.join(step.notes) if step.notes else ''}", flush=True)
    print(f"       idle (connected, not recording): server {100 * step.server_idle:.0f} % of a core, fleet "
          f"{100 * step.fleet_idle:.0f} %; above idle, per chunk: server {step.server_marginal_ms:.1f} ms, "
          f"fleet {step.fleet_marginal_ms:.1f} ms; at these costs a whole core carries about "
          f"{step.ceiling(step.server_idle, step.server_marginal_ms, args.chunk_seconds, 1.0):,} devices "
          f"of server work, the fleet's core ({100 * args.fleet_limit:.0f} %) about "
          f"{step.ceiling(step.fleet_idle, step.fleet_marginal_ms, args.chunk_seconds, args.fleet_limit):,}",
          flush=True)
    print(f"       server ms/chunk: {step.server_split}\n       fleet ms/chunk: {step.fleet_split}\n"
          f"       device requests: {step.requests}\n       gc pauses: {step.gc_pauses}", flush=True)
    if step.errors:
        print(f"       uploader errors seen: {step.errors}", flush=True)


def machine_probe(core: int | None, rounds: int = 3) -> str:
    """CPU time of two fixed workloads on ``core`` (fastest of ``rounds``), as one line.

    This machine's speed for the same code varies by tens of percent from hour to hour (another
    tenant of the host, not visible as steal time). A fleet step has no baseline of its own, so
    every run prints this at its start and end: figures of two runs compare only when their
    probes do. The workloads stand for the server's: JSON round trips of a manifest-sized object
    in Python, and SHA-256 of 32 MiB in C.
    """
    before = os.sched_getaffinity(0)
    if core is not None:
        os.sched_setaffinity(0, {core})
    try:
        doc = {"v": 1, "device_id": "a" * 24, "seq": 12345, "sha256": "0" * 64, "size": 619_506,
               "recording_id": "rec-1767225600000-abcdef", "start_ms": 1_767_225_600_000, "duration_ms": 5000,
               "codec": {"video": "h264", "width": 640, "height": 360, "fps_num": 30, "fps_den": 1},
               "prev": "1" * 64, "officer_id": "110105", "case_step": "c101-inspect"}
        data = bytes(32 << 20)
        python_ms = sha_ms = float("inf")
        for _ in range(rounds):
            t = time.thread_time()
            for _ in range(20_000):
                json.loads(json.dumps(doc, sort_keys=True))
            python_ms = min(python_ms, (time.thread_time() - t) * 1000)
            t = time.thread_time()
            hashlib.sha256(data).digest()
            sha_ms = min(sha_ms, (time.thread_time() - t) * 1000)
    finally:
        os.sched_setaffinity(0, before)
    return (f"machine probe on core {core}: Python (20,000 JSON round trips) {python_ms:.0f} ms, "
            f"SHA-256 of 32 MiB {sha_ms:.1f} ms (fastest of {rounds})")


def _git_head() -> str:
    try:
        return subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True,
                              text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown commit"


if __name__ == "__main__":
    sys.exit(main())
