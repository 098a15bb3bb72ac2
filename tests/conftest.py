"""Shared fixtures: a provider simulator on loopback and clients pointed at it."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
import redis

from config.settings import load_settings
from llms.smart_client import SmartClient
from llms.state import StateStore, store_from_url
from simulator import Simulator

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")

# Distinctive fake keys: the secret-leak tests grep everything captured for these exact strings.
SECRETS: Mapping[str, tuple[str, ...]] = {
    "openrouter": tuple(f"sk-or-v1-LEAKCHECK{i}{'a1b2c3d4' * 6}{i:04d}" for i in range(1, 9)),
    "groq": tuple(f"gsk_LEAKCHECK{i}{'Q9w8E7r6' * 5}{i:04d}" for i in range(1, 9)),
    "gemini": tuple(f"AIzaLEAKCHECK{i}{'Zx8Yw7Vu' * 3}{i:04d}" for i in range(1, 9)),
}
ALL_SECRETS = tuple(s for group in SECRETS.values() for s in group)


WORKERS_MOST = 8
"""Workers at most for the whole suite, whatever the cores: each holds its own `redis-server`, simulators and, for
the browser tests, a Chromium (a wide machine with little memory per core would run out of it first)."""


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """How many workers `-n auto` (pyproject's addopts) starts: twice the cores (`WORKERS_MOST` at most) for the
    whole suite, which mostly waits on sockets, timers, processes and browsers (three workers kept about 1.3 of 2
    cores busy: 4:02–4:42, four took 3:32–3:50, five failed a shared-store timing test under the load); one more
    than the cores for the fast subset (`-m "not slow"`), which computes (44 s with three workers, 48–59 s with
    four). `PYTEST_XDIST_AUTO_NUM_WORKERS` still decides where set."""
    with contextlib.suppress(ValueError):  # (not a number: pytest-xdist warns of it)
        return int(os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS", ""))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1  # (not on macOS)
    return cores + 1 if "not slow" in (config.option.markexpr or "") else min(2 * cores, WORKERS_MOST)


class Clock:
    """A clock the test moves by hand, so cooldown arithmetic needs no sleeping."""

    def __init__(self, now: float = 1_900_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def free_port() -> int:
    """A loopback port nothing listens on (for a server to take, or for a client to find closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A private `redis-server` on a free loopback port, so tests never touch the machine's own Redis.

    A port found free may be taken before the server binds it (another test worker's server, say): that server
    exits, and a readiness check that only connects would hand this test the other one — and a test that hangs,
    kills or flushes its "own" server would do it to another worker's. So the server that answers must be this
    process, and a server that could not bind starts again on another port. (The clean-clone runs' "unreachable
    (TimeoutError)" had another cause: `tls_front._pump`'s.)"""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        for _ in range(5):  # first on its port (a restart keeps it: its clients reconnect), then on another
            if self._started():
                return
            self.port = free_port()
            self.url = f"redis://127.0.0.1:{self.port}/0"
        raise RuntimeError("redis-server did not start")

    def _started(self) -> bool:
        self.process = process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and process.poll() is None:
            with contextlib.suppress(redis.RedisError), redis.Redis(port=self.port, socket_timeout=0.5) as client:
                if client.info("server")["process_id"] == process.pid:
                    return True
            time.sleep(0.05)
        process.kill()
        process.wait(5)
        return False

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)


@pytest.fixture(scope="session", autouse=True)
def private_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The default SQLite store lives in the per-user data directory: never the developer's own during tests."""
    path = tmp_path_factory.mktemp("data-home")
    previous = os.environ.get("XDG_DATA_HOME")
    os.environ["XDG_DATA_HOME"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("XDG_DATA_HOME", None)
    else:
        os.environ["XDG_DATA_HOME"] = previous


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is not installed; .ci/run installs it with apt")
        pytest.skip("redis-server is not installed (apt-get install redis-server); Redis tests need a real server")
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@dataclass(frozen=True)
class StoreBackend:
    """How the tests reach one store backend: a new backend is one row of `STORE_BACKENDS`."""

    url: Callable[[pytest.FixtureRequest, Path], str]
    """Its URL for a test, given the test's request (for a server fixture) and a file path it may use."""
    durable: bool
    """It keeps state across restarts and shares it between processes (the `DURABLE` tests run on it)."""
    clear_after: bool = False
    """Its state outlives the test (a server shared by the session): the fixture clears what the test wrote."""


STORE_BACKENDS: Mapping[str, StoreBackend] = {
    "memory": StoreBackend(lambda request, path: "memory://", durable=False),
    "sqlite": StoreBackend(lambda request, path: f"sqlite://{path}", durable=True),
    "redis": StoreBackend(lambda request, path: request.getfixturevalue("redis_server").url, True, clear_after=True),
}
"""Every store backend the contract tests run on, by name (the test ids)."""

DURABLE = [name for name, backend in STORE_BACKENDS.items() if backend.durable]
"""The backends shared by processes: `parametrize("backend", DURABLE)`, with `STORE_BACKENDS[backend].url`."""


@pytest.fixture(params=list(STORE_BACKENDS))
def state_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], StateStore]]:
    """Each test using it runs once per backend: one test body, every store (the way `limits` tests storage).
    The stores are bare (no failover to memory), so a broken backend fails these tests."""
    backend = STORE_BACKENDS[request.param]
    made: list[StateStore] = []

    def build() -> StateStore:
        url = backend.url(request, tmp_path / f"state-{len(made)}.db")
        store = store_from_url(url, prefix=f"test-{uuid.uuid4().hex[:10]}", failover=False)
        made.append(store)
        return store

    yield build
    for store in made:
        if backend.clear_after:
            with contextlib.suppress(Exception):
                store.clear()  # type: ignore[attr-defined]
        store.close()


Stopper = Callable[[Callable[[], object]], None]


@pytest.fixture(scope="session")
def stopper() -> Iterator[Stopper]:
    """Runs a slow, blocking stop (a simulator's `stop()` waits out its server's 0.05 s poll, uvicorn's its 0.1 s
    tick) beside the next test instead of before it. Every stop is joined, and its error raised, when the session
    ends."""
    pending: list[tuple[threading.Thread, list[BaseException]]] = []

    def stop_soon(stop: Callable[[], object]) -> None:
        errors: list[BaseException] = []

        def run() -> None:
            try:
                stop()
            except BaseException as exc:  # re-raised at the session's end
                errors.append(exc)

        thread = threading.Thread(target=run, name="test-stopper", daemon=True)
        thread.start()
        pending.append((thread, errors))

    yield stop_soon
    for thread, errors in pending:
        thread.join(30)
        assert not thread.is_alive(), "a stop did not finish within 30 s"
        if errors:
            raise errors[0]


@pytest.fixture
def sim(stopper: Stopper) -> Iterator[Simulator]:
    server = Simulator(hang_seconds=3.0).start()
    try:
        yield server
    finally:
        stopper(server.stop)


MakeClient = Callable[..., SmartClient]


@pytest.fixture
def make_client(sim: Simulator, state_backend: Callable[[], StateStore]) -> Iterator[MakeClient]:
    """Build a client over the simulator. `keys={"groq": 2}` registers the first N test keys of each provider;
    `steps={"groq:1": ["rate_limit"]}` scripts a key, `limits={"groq:1": (2, 30.0)}` gives it a request window;
    extra keyword arguments become environment variables."""
    clients: list[SmartClient] = []

    def build(
        keys: Mapping[str, int],
        steps: Mapping[str, Sequence[str]] | None = None,
        limits: Mapping[str, tuple[int, float]] | None = None,
        clock: Callable[[], float] | None = None,
        store: StateStore | None = None,
        **env: str,
    ) -> SmartClient:
        variables = {**sim.env(), "LLM_REQUEST_TIMEOUT": "1.5", **env}
        for provider, count in keys.items():
            for i in range(count):
                secret = SECRETS[provider][i]
                variables[f"{provider.upper()}_API_KEY_{i + 1}"] = secret
                scripted = (steps or {}).get(f"{provider}:{i + 1}", ())
                limit = (limits or {}).get(f"{provider}:{i + 1}")
                sim.add_key(provider, secret, *scripted, limit=limit, name=f"{provider}:{i + 1}")
        client = SmartClient(
            load_settings(variables, dotenv_path=None),
            store=store or state_backend(),
            **({"clock": clock} if clock else {}),
        )
        clients.append(client)
        return client

    yield build
    for client in clients:
        client.close()


def python_env(**extra: str) -> dict[str, str]:
    """Environment for a subprocess running this checkout's code with no keys from the developer's shell."""
    keep = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY",)) and "_API_KEY_" not in k}
    keep = {k: v for k, v in keep.items() if not k.startswith(("LLM_", "OPENROUTER_", "GROQ_", "GEMINI_"))}
    return {**keep, "PYTHONPATH": str(ROOT), "LLM_STATE_URL": "memory://", **extra}


@contextlib.contextmanager
def ctrl_c_raises() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt here, and in processes started meanwhile, even when whatever started pytest
    ignores it (a shell ignores it in a background job: `pytest &`)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def clear_of_a_minutes_end(margin: float = 10.0) -> None:
    """Wait for the next minute when this one ends within `margin` seconds. The simulator's OpenRouter, as
    OpenRouter does, ends a per-minute 429's rest at the next whole minute: a test that expects its keys still
    resting a few calls later must not begin in a minute's last seconds (CI: 4 more requests than expected)."""
    if (into := time.time() % 60) > 60 - margin:
        time.sleep(60.05 - into)


def in_threads(count: int, work: Callable[[], T]) -> list[T]:
    """Run `work` in `count` threads at once; returns their results and re-raises the first exception."""
    barrier = threading.Barrier(count)

    def start(_: int) -> T:
        barrier.wait()
        return work()

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(start, range(count)))


PYTHON = sys.executable
USER_HELLO = [{"role": "user", "content": "Hello"}]
