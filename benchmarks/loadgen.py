"""A small closed-loop async load driver for the tracking server's REST API.

Each simulated client is a coroutine that sends one request, waits for the answer, and sends the
next, over one keep-alive connection of its own (like a training job's HTTP session). One process,
one event loop: the driver's CPU use is measured and reported, so a run where the driver and not
the server was the bottleneck is visible rather than mistaken for a server figure.

Every failure is counted — HTTP status or exception type — and kept out of the latency figures.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import aiohttp
import psutil

from mlflow_platform.local.processes import group_members

#: An operation: one logical client action (may be several HTTP requests), raising on failure.
Action = Callable[["Client"], Awaitable[None]]


UNFINISHED = "unfinished"


class RequestFailed(Exception):
    def __init__(self, status: int, body: str):
        super().__init__(f"HTTP {status}: {body[:200]}")
        self.status = status


@dataclass
class Client:
    """One simulated training client: its own session and a counter for unique keys/steps."""

    index: int
    session: aiohttp.ClientSession
    base_url: str
    token: str
    seq: int = 0

    async def call(self, method: str, path: str, *, json=None, params=None, data=None, headers=None) -> bytes:
        async with self.session.request(
            method, self.base_url + path, json=json, params=params, data=data, headers=headers
        ) as response:
            body = await response.read()
            if response.status >= 400:
                raise RequestFailed(response.status, body.decode(errors="replace"))
            return body


@dataclass(frozen=True)
class Operation:
    name: str
    write: bool
    action: Action
    #: Items per call worth reporting as a rate (e.g. metrics per log-batch); 0 for none.
    items_per_call: int = 0
    item_name: str = ""


@dataclass
class LevelResult:
    operation: str
    clients: int
    ok: int
    elapsed_s: float
    latencies_ms: list[float] = field(repr=False)
    errors: Counter = field(default_factory=Counter)
    #: The first message seen for each kind of error, so a failure can be diagnosed from the JSON.
    error_samples: dict[str, str] = field(default_factory=dict)
    driver_cpu_percent: float = 0.0
    server_cpu_percent: float | None = None
    items_per_call: int = 0
    item_name: str = ""

    @property
    def throughput(self) -> float:
        return self.ok / self.elapsed_s if self.elapsed_s else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def percentile(self, q: float) -> float | None:
        return percentile(self.latencies_ms, q)

    def as_dict(self) -> dict:
        return {
            "operation": self.operation,
            "clients": self.clients,
            "ok": self.ok,
            "errors": self.error_count,
            "error_kinds": dict(self.errors),
            "error_samples": self.error_samples,
            "elapsed_s": round(self.elapsed_s, 3),
            "throughput_per_s": round(self.throughput, 1),
            "p50_ms": _round(self.percentile(50)),
            "p95_ms": _round(self.percentile(95)),
            "p99_ms": _round(self.percentile(99)),
            "items_per_s": round(self.throughput * self.items_per_call, 1) if self.items_per_call else None,
            "item_name": self.item_name or None,
            "driver_cpu_percent": round(self.driver_cpu_percent, 1),
            "server_cpu_percent": None if self.server_cpu_percent is None else round(self.server_cpu_percent, 1),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (no interpolation: every figure is a latency that happened)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


class ServerCpu:
    """CPU seconds used by a set of processes (the server's process group) between two points."""

    def __init__(self, pids: Callable[[], Sequence[int]] | None):
        self._pids = pids
        self._start: dict[int, float] = {}

    def _sample(self) -> dict[int, float]:
        out = {}
        for pid in self._pids() if self._pids else ():
            try:
                t = psutil.Process(pid).cpu_times()
                out[pid] = t.user + t.system
            except psutil.Error:
                continue
        return out

    def start(self) -> None:
        self._start = self._sample()

    def percent(self, elapsed: float) -> float | None:
        if self._pids is None or not elapsed:
            return None
        end = self._sample()
        used = sum(cpu - self._start.get(pid, 0.0) for pid, cpu in end.items())
        return 100 * used / elapsed


async def run_level(
    op: Operation,
    clients: int,
    duration_s: float,
    *,
    base_url: str,
    auth: tuple[str, str] | None,
    server_pids: Callable[[], Sequence[int]] | None = None,
    request_timeout_s: float = 60.0,
    tail_s: float = 10.0,
) -> LevelResult:
    """``clients`` closed-loop clients run ``op`` for ``duration_s``. Calls in flight at the end
    may finish within ``tail_s``; those that don't are counted as errors (``unfinished``), which
    bounds a level's time when a server queues requests for tens of seconds."""
    token = uuid.uuid4().hex[:8]
    headers = {"Authorization": aiohttp.encode_basic_auth(*auth)} if auth else None
    sessions = [
        aiohttp.ClientSession(
            headers=headers,
            connector=aiohttp.TCPConnector(limit=1),
            timeout=aiohttp.ClientTimeout(total=request_timeout_s),
        )
        for _ in range(clients)
    ]
    latencies: list[float] = []
    errors: Counter = Counter()
    samples: dict[str, str] = {}
    ok = 0
    cpu = ServerCpu(server_pids)
    try:
        cpu.start()
        cpu_start = time.process_time()
        started = time.perf_counter()
        deadline = started + duration_s

        async def client_loop(client: Client) -> None:
            nonlocal ok
            # Spread the first requests so clients don't arrive in lockstep.
            await asyncio.sleep(random.uniform(0, min(0.05, duration_s / 10)))
            while time.perf_counter() < deadline:
                client.seq += 1
                t0 = time.perf_counter()
                try:
                    await op.action(client)
                except (TimeoutError, RequestFailed, aiohttp.ClientError, OSError, ValueError) as exc:
                    kind = f"HTTP {exc.status}" if isinstance(exc, RequestFailed) else type(exc).__name__
                    errors[kind] += 1
                    samples.setdefault(kind, str(exc)[:300])
                else:
                    ok += 1
                    latencies.append((time.perf_counter() - t0) * 1000)

        tasks = [asyncio.create_task(client_loop(Client(i, s, base_url, token))) for i, s in enumerate(sessions)]
        _, pending = await asyncio.wait(tasks, timeout=duration_s + tail_s)
        for task in pending:  # one request each, still unanswered: a failure, not a latency
            task.cancel()
            errors[UNFINISHED] += 1
            samples.setdefault(UNFINISHED, f"no answer {tail_s:.0f} s after the level ended")
        await asyncio.gather(*pending, return_exceptions=True)
        elapsed = time.perf_counter() - started
        driver_cpu = 100 * (time.process_time() - cpu_start) / elapsed
        server_cpu = cpu.percent(elapsed)
    finally:
        await asyncio.gather(*(s.close() for s in sessions))
    return LevelResult(
        op.name,
        clients,
        ok,
        elapsed,
        latencies,
        errors,
        samples,
        driver_cpu,
        server_cpu,
        op.items_per_call,
        op.item_name,
    )


def process_group(pid: int) -> Callable[[], list[int]]:
    """The live members of ``pid``'s process group (server parent + its workers), looked up at
    each sample: gunicorn replaces workers that reach max-requests."""
    return lambda: [proc.pid for proc in group_members(pid)]
