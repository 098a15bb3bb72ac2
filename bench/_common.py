"""What every benchmark script shares: the result rows, a skip signal, simulator + client set-up, and the CLI.

Why one module: each `bench/bench_*.py` is runnable on its own (`python bench/bench_x.py`) and is also run by
`bench/run_all.py` in a fresh subprocess (`--json PATH`), so a crash, a skip or LiteLLM's background threads in
one benchmark cannot disturb the next. Heavy imports (LiteLLM, Streamlit) stay inside the scripts' `run()` so
`run_all` can import every script cheaply for its titles, method notes and table rows.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import gc
import json
import logging
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

if TYPE_CHECKING:
    from llms.smart_client import SmartClient
    from simulator import Simulator
    from simulator.remote import SimulatorProcess

Result = dict[str, Any]
MESSAGES: list[dict[str, str]] = [{"role": "user", "content": "Hello"}]
SKIPPED_EXIT = 3
"""Exit code of a script that skipped itself (a missing `redis-server`, an unimportable dashboard)."""

LITELLM_MODELS: Mapping[str, str] = {
    "groq": "groq/openai/gpt-oss-20b",
    "openrouter": "openrouter/openai/gpt-oss-20b:free",
    "gemini": "gemini/gemini-3.5-flash-lite",
}
"""The same models our client asks for by default, in LiteLLM's provider-prefixed spelling."""


class Skip(Exception):
    """Raised by a benchmark that cannot run here; the message says why and what to install."""


@dataclass(frozen=True)
class Row:
    """One line of a result table: what was measured, our value, the target, LiteLLM's value, and the verdict."""

    what: str
    measured: str
    target: str = "—"
    litellm: str = "—"
    met: bool | None = None

    @property
    def verdict(self) -> str:
        return "—" if self.met is None else ("met" if self.met else "**missed**")


# --- statistics -------------------------------------------------------------------------------------------------


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): an observed value, never an interpolation between two."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples)


# --- simulator and clients --------------------------------------------------------------------------------------


def interleaved(
    calls: Mapping[str, Callable[[], None]], warmup: Mapping[str, int], block: Mapping[str, int], rounds: int
) -> dict[str, list[float]]:
    """Seconds per call of each contender, measured in blocks that take turns (who goes first rotates each
    round) after a warm-up, with a collection before each block: drift, caches and GC hit every contender alike,
    so ratios taken in one run compare like with like."""
    for name, call in calls.items():
        for _ in range(warmup[name]):
            call()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            call, out = calls[name], samples[name]
            gc.collect()
            for _ in range(block[name]):
                started = time.perf_counter()
                call()
                out.append(time.perf_counter() - started)
    return samples


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Until `url` answers 200 (a server started in `proc`); a server that exits or stays silent is an error."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with {proc.returncode}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as answer:
            if answer.status == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer in {timeout:.0f} s")


def start_server(command: Sequence[str], env: Mapping[str, str], health: str) -> tuple[subprocess.Popen[bytes], int]:
    """`command` serving on a free port (`--port`), once `health` answers 200 there: its process, which the caller
    stops, and the port. A server that exits or stays silent is killed and raises."""
    port = free_port()
    out = subprocess.DEVNULL
    proc = subprocess.Popen([*command, "--port", str(port)], env=dict(env), cwd=ROOT, stdout=out, stderr=out)
    try:
        wait_for_http(f"http://127.0.0.1:{port}{health}", proc)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc, port


def bench_secret(provider: str, i: int, prefix: str = "bench") -> str:
    """The `i`th bench key's secret, shaped like the provider's (`gsk_…`, `sk-or-v1-…`) so key hints look like
    production."""
    shape = {"groq": "gsk_", "openrouter": "sk-or-v1-", "gemini": "AIza"}[provider]
    return f"{shape}{prefix}_{i:06d}_{'0' * 24}"


def register_keys(
    sim: Simulator | SimulatorProcess, provider: str, count: int, *, prefix: str = "bench", **add_key: Any
) -> tuple[list[str], dict[str, str]]:
    """Register `count` keys in the simulator; return their secrets and the env vars that configure them.

    The env also points every provider at the simulator and puts `provider` first, so nothing leaves loopback.
    """
    env = {**sim.env(), "LLM_PROVIDER_ORDER": provider}
    secrets = []
    for i in range(1, count + 1):
        secret = bench_secret(provider, i, prefix)
        sim.add_key(provider, secret, name=f"{provider}:{i}", **add_key)
        env[f"{provider.upper()}_API_KEY_{i}"] = secret
        secrets.append(secret)
    return secrets, env


def smart_client(env: Mapping[str, str]) -> SmartClient:
    """Our client configured from `env` alone (no `.env`, no process environment), as a deployment would be.

    Key state lives in the default store, a SQLite file, unless `env` names another: a fresh file per client in a
    folder removed at exit (the default file would carry one run's cooldowns, an hour under the fixed policy, into
    the next run's keys of the same secrets)."""
    from config.settings import load_settings
    from llms.smart_client import SmartClient

    folder = tempfile.mkdtemp(prefix="llms-bench-")
    atexit.register(shutil.rmtree, folder, True)
    default = {"LLM_STATE_URL": f"sqlite:///{Path(folder) / 'state.db'}"}
    return SmartClient(load_settings({**default, **env}, dotenv_path=None))


def import_litellm() -> Any:
    """Import LiteLLM offline (bundled model cost map) and quiet; returns the module."""
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    os.environ.setdefault("LITELLM_LOG", "ERROR")
    import litellm

    litellm.suppress_debug_info = True
    for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "litellm"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    return litellm


def litellm_router(sim: Simulator | SimulatorProcess, provider: str, secrets: Sequence[str]) -> Any:
    """A LiteLLM `Router` with one deployment per key, all in one model group, default settings otherwise."""
    return litellm_router_over(sim, [(provider, s) for s in secrets])


def litellm_router_over(sim: Simulator | SimulatorProcess, keys: Sequence[tuple[str, str]]) -> Any:
    """A LiteLLM `Router` with one deployment per (provider, secret), all in one model group."""
    litellm = import_litellm()
    bases = dict(sim.base_urls)
    if "gemini" in bases:
        bases["gemini"] += "/v1beta"  # LiteLLM appends /models/…
    model_list = [
        {"model_name": "chat", "litellm_params": {"model": LITELLM_MODELS[p], "api_key": s, "api_base": bases[p]}}
        for p, s in keys
    ]
    return litellm.Router(model_list=model_list)


def litellm_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("litellm")
    except PackageNotFoundError:
        return None


# --- output -----------------------------------------------------------------------------------------------------


def table(rows: Sequence[Row], *, markdown: bool = False) -> str:
    """Rows as a plain-text table (terminal) or a GitHub markdown table (the report)."""
    head = ("", "measured", "target", "LiteLLM", "verdict")
    cells = [(r.what, r.measured, r.target, r.litellm, r.verdict.replace("**", "")) for r in rows]
    if markdown:
        cells = [(r.what, r.measured, r.target, r.litellm, r.verdict) for r in rows]
        lines = ["| " + " | ".join(("what", *head[1:])) + " |", "|---|---:|---:|---:|---|"]
        return "\n".join([*lines, *("| " + " | ".join(c) + " |" for c in cells)])
    widths = [max(len(str(c[i])) for c in (head, *cells)) for i in range(len(head))]
    fmt = "  ".join(f"{{:{'<' if i == 0 else '>'}{w}}}" for i, w in enumerate(widths))
    return "\n".join(fmt.format(*c) for c in (head, *cells))


def main(title: str, run: Callable[[], Result], rows: Callable[[Result], list[Row]]) -> int:
    """The CLI of every script: run, print the table; `--json PATH` also writes the raw result for `run_all`."""
    parser = argparse.ArgumentParser(description=title)
    parser.add_argument("--json", metavar="PATH", help="also write the raw result (or the skip reason) here")
    args = parser.parse_args()
    try:
        result = run()
    except Skip as exc:
        print(f"{title}: skipped — {exc}")
        _write(args.json, {"status": "skipped", "message": str(exc)})
        return SKIPPED_EXIT
    except Exception as exc:
        traceback.print_exc()
        _write(args.json, {"status": "failed", "message": f"{type(exc).__name__}: {exc}"})
        return 1
    print(title)
    print(table(rows(result)))
    _write(args.json, {"status": "ok", "result": result})
    return 0


def _write(path: str | None, data: Result) -> None:
    if path:
        Path(path).write_text(json.dumps(data, indent=2, default=str))


def fail_fast_load(
    call: Callable[[], object],
    caught: tuple[type[BaseException], ...],
    *,
    threads: int,
    seconds: float,
    pause: float,
    join: bool = True,
) -> tuple[int, Counter[str]]:
    """`threads` callers as most code is written: call until `seconds` from now, pausing `pause` after an error.
    Returns (answers returned, errors by type). `join=False` counts at the end without waiting for calls still
    in flight (one waiting for a key would only delay the count)."""
    answered, errors, lock = Counter[str](), Counter[str](), threading.Lock()
    end = time.monotonic() + seconds

    def worker() -> None:
        while time.monotonic() < end:
            try:
                call()
            except caught as exc:
                with lock:
                    errors[type(exc).__name__] += 1
                time.sleep(min(pause, max(0.0, end - time.monotonic())))
            else:
                with lock:
                    answered["n"] += 1

    workers = [threading.Thread(target=worker, name=f"bench-load-{i}", daemon=True) for i in range(threads)]
    for t in workers:
        t.start()
    if join:
        for t in workers:
            t.join()
    else:
        time.sleep(max(0.0, end - time.monotonic()))
    with lock:
        return answered["n"], Counter(errors)
