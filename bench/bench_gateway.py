"""Gateway: what does going through `python -m llms serve` cost, and how many requests a second does it carry?

Three processes, as deployed: the simulator (`python -m simulator`, zero latency, 4 Groq keys), the gateway
(`python -m llms serve` over those keys) and this script as the caller. Latency: the same `requests.Session` POST
to the simulator directly and to the gateway, interleaved in rotating blocks; the gateway's added latency is the
difference of medians (and of p99s). Throughput: 64 connections, half of them streaming, for a fixed time, driven by
`wrk` (a C load generator, `apt-get install wrk`; `bench/gateway_wrk.lua` sends and checks the requests) or, without
it on PATH, by 64 aiohttp clients in this process; with the CPU time the gateway and the simulator spent per answer
(from /proc: robust to a busy machine, where requests a second are not), beside the floor: the same load through
`bench/gateway_floor.py`, the same server stack forwarding with no logic. LiteLLM's `Router` (in-process, one
deployment per key) does the same work in the same run.

`BENCH_GATEWAY_LOAD=aiohttp` (or `wrk`) picks the load generator whatever is installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import (
    MESSAGES,
    ROOT,
    Result,
    Row,
    interleaved,
    litellm_router,
    litellm_version,
    main,
    median,
    percentile,
    register_keys,
    start_server,
)
from llms.providers import PROVIDERS
from simulator.remote import SimulatorProcess

TITLE = "Gateway: added latency per request and throughput of `python -m llms serve` (Groq wire format, 4 keys)"
METHOD = (
    "Three processes on loopback: `python -m simulator` (zero upstream latency, 4 Groq keys), `python -m llms serve` "
    "over those keys (memory store, default 32 workers, uvicorn with httptools and uvloop when installed) and the "
    "benchmark. "
    "Latency: a `requests.Session` POST of the same chat request to the simulator directly (the floor) and to the "
    "gateway's `/v1/chat/completions`, and LiteLLM `Router.completion` (in-process, one deployment per key, "
    "default settings), in blocks whose order rotates every round after a warm-up; added latency is each "
    "contender's median (p99) minus the floor's. Throughput: 64 connections, every other one streaming "
    "(`stream: true`, read to `[DONE]`), for a fixed time after a warm-up, from `wrk` (C; two threads, one "
    "streaming, `bench/gateway_wrk.lua`) or, where `wrk` is not installed, 64 aiohttp clients in the benchmark's "
    "process (which then takes a good share of the 2 cores itself); CPU per answer: user + system time of the "
    "gateway's and the simulator's processes over the measured window (/proc) divided by the answers in it. "
    "Floor: the same load against `bench/gateway_floor.py` (a bare ASGI app under uvicorn forwarding each body to "
    "the simulator with one aiohttp session and passing the answer's bytes back: no parsing, failover or key "
    "state), whose CPU per answer is what the server stack and the upstream call cost by themselves. "
    "LiteLLM: 64 asyncio tasks calling `Router.acompletion` the same way (half `stream=True`) in this process. "
    "Every answer is checked (status 200, and text or `[DONE]`)."
)
TARGET_MEDIAN_MS = 1.0
TARGET_P99_MS = 3.0
TARGET_RPS = 2000.0
"""Issue 23: on 2 cores, against the simulator (which takes its share of them)."""
KEYS = 4
CONCURRENCY = 64
ROUNDS = 10
BLOCK = {"direct": 150, "gateway": 150, "litellm": 40}
WARMUP = {"direct": 200, "gateway": 300, "litellm": 60}
THROUGHPUT_WARMUP_S = 2.0
THROUGHPUT_S = 6.0
WRK_SCRIPT = Path(__file__).with_name("gateway_wrk.lua")
FLOOR_COMMAND = (
    *(sys.executable, "-m", "uvicorn", "--app-dir", "bench", "gateway_floor:app"),
    *("--log-level", "warning", "--no-access-log", "--no-proxy-headers"),
)
LOAD_ENV = "BENCH_GATEWAY_LOAD"


@contextlib.contextmanager
def _processes() -> Iterator[tuple[SimulatorProcess, str, str, list[str], dict[str, int]]]:
    """The simulator, the gateway and the floor (`gateway_floor.py`) as subprocesses; yields the simulator, the
    gateway's and the floor's URLs, the key secrets and the processes' ids ("simulator", "gateway", "floor")."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLM_", "GROQ_", "OPENROUTER_", "GEMINI_"))}
    env["PYTHONPATH"] = str(ROOT)
    procs: list[subprocess.Popen[bytes]] = []

    def start(command: list[str], extra: Mapping[str, str], health: str) -> int:
        """A subprocess serving on a free port, once `health` answers there: the port."""
        proc, port = start_server(command, {**env, **extra}, health)
        procs.append(proc)
        return port

    with SimulatorProcess.start() as sim:
        try:
            secrets, gw_env = register_keys(sim, "groq", KEYS)
            gw_env["LLM_STATE_URL"] = "memory://"
            gateway = f"http://127.0.0.1:{start([sys.executable, '-m', 'llms', 'serve'], gw_env, '/healthz')}"
            upstream = {"FLOOR_UPSTREAM": f"{sim.base_urls['groq']}/chat/completions", "FLOOR_KEYS": ",".join(secrets)}
            floor = f"http://127.0.0.1:{start([*FLOOR_COMMAND], upstream, '/healthz')}"
            yield (
                sim,
                gateway,
                floor,
                secrets,
                {"simulator": sim.process.pid, "gateway": procs[0].pid, "floor": procs[1].pid},
            )
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()


# --- latency ----------------------------------------------------------------------------------------------------


def _latency(sim: SimulatorProcess, gateway: str, secrets: list[str], router: Any) -> dict[str, list[float]]:
    import requests

    direct_session, gateway_session = requests.Session(), requests.Session()
    direct_url = f"{sim.base_urls['groq']}/chat/completions"
    headers = itertools.cycle([{"Authorization": f"Bearer {s}"} for s in secrets])
    model = PROVIDERS["groq"].default_model

    def direct() -> None:
        body = direct_session.post(direct_url, json={"model": model, "messages": MESSAGES}, headers=next(headers))
        assert body.json()["choices"][0]["message"]["content"]

    def through_gateway() -> None:
        body = gateway_session.post(f"{gateway}/v1/chat/completions", json={"model": "auto", "messages": MESSAGES})
        assert body.json()["choices"][0]["message"]["content"]

    def litellm() -> None:
        assert router.completion(model="chat", messages=MESSAGES).choices[0].message.content

    calls: dict[str, Callable[[], None]] = {"direct": direct, "gateway": through_gateway, "litellm": litellm}
    return interleaved(calls, WARMUP, BLOCK, ROUNDS)


# --- throughput -------------------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process (all its threads) has used so far, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime: fields 14 and 15


class _Cpu:
    """CPU seconds the named processes (and this one's load generator) spend between `start` and `stop`."""

    def __init__(self, pids: Mapping[str, int]) -> None:
        self.pids = dict(pids)
        self.spent: dict[str, float] = {}

    @staticmethod
    def _generator() -> float:
        """This process and its finished children (wrk): whichever generates the load."""
        mine, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return mine.ru_utime + mine.ru_stime + children.ru_utime + children.ru_stime

    def _now(self) -> dict[str, float]:
        return {**{name: cpu_seconds(pid) for name, pid in self.pids.items()}, "generator": self._generator()}

    def start(self) -> None:
        self._before = self._now()

    def stop(self) -> None:
        after = self._now()
        self.spent = {name: after[name] - self._before[name] for name in after}

    def per_answer_us(self, answers: int) -> dict[str, float]:
        return {name: seconds / answers * 1e6 for name, seconds in self.spent.items()} if answers else {}


class _Tally:
    """Answers and failures, counted only inside the measured window (after a warm-up)."""

    def __init__(self, cpu: _Cpu | None = None) -> None:
        self.done = self.failures = 0
        self.counting = False
        self.stop = asyncio.Event()
        self.cpu = cpu

    def count(self, ok: bool) -> None:
        if self.counting:
            self.done += ok
            self.failures += not ok

    async def measure(self, workers: list[Coroutine[Any, Any, None]]) -> tuple[float, int]:
        """Run `workers` until the window has passed: (answers per second, failures)."""
        tasks = [asyncio.create_task(w) for w in workers]
        await asyncio.sleep(THROUGHPUT_WARMUP_S)
        if self.cpu is not None:
            self.cpu.start()
        self.counting, started = True, time.perf_counter()
        await asyncio.sleep(THROUGHPUT_S)
        self.counting, elapsed = False, time.perf_counter() - started
        if self.cpu is not None:
            self.cpu.stop()
        self.stop.set()
        await asyncio.gather(*tasks)
        return self.done / elapsed, self.failures


Throughput = dict[str, Any]
"""generator, rps, answers, failures, and CPU µs per answer of each process (`cpu_us`: gateway, simulator,
generator)."""


def _gateway_throughput(gateway: str, pids: Mapping[str, int]) -> Throughput:
    """Requests per second over 64 connections, every other one streaming, from `wrk` when it is installed (or
    asked for with BENCH_GATEWAY_LOAD=wrk), else from aiohttp clients in this process."""
    wanted = os.environ.get(LOAD_ENV, "").strip().lower()
    if wanted not in ("", "wrk", "aiohttp"):
        raise ValueError(f"{LOAD_ENV} must be 'wrk' or 'aiohttp', got {wanted!r}")
    wrk = shutil.which("wrk")
    if wanted == "wrk" and wrk is None:
        raise RuntimeError(f"{LOAD_ENV}=wrk but wrk is not on PATH (apt-get install wrk)")
    if wrk is not None and wanted != "aiohttp":
        return _wrk_throughput(wrk, gateway, pids)
    return asyncio.run(_aiohttp_throughput(gateway, pids))


_WRK_LINE = re.compile(r"^wrk-result (.*)$", re.MULTILINE)


def _run_wrk(wrk: str, url: str, seconds: float) -> dict[str, int]:
    """One wrk run (two threads, each half of the connections; `gateway_wrk.lua` streams on the second): the
    numbers its `done` reports."""
    bodies = [json.dumps({"model": "auto", "messages": MESSAGES, "stream": streaming}) for streaming in (False, True)]
    command = [wrk, "-t2", f"-c{CONCURRENCY}", f"-d{round(seconds)}s", "--timeout", "10s", "-s", str(WRK_SCRIPT)]
    done = subprocess.run([*command, url, "--", *bodies], capture_output=True, text=True, timeout=seconds + 60)
    found = _WRK_LINE.search(done.stdout)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    return {name: int(value) for name, value in (pair.split("=") for pair in found.group(1).split())}


def _wrk_throughput(wrk: str, gateway: str, pids: Mapping[str, int]) -> Throughput:
    url = f"{gateway}/v1/chat/completions"
    _run_wrk(wrk, url, THROUGHPUT_WARMUP_S)
    cpu = _Cpu(pids)
    cpu.start()
    r = _run_wrk(wrk, url, THROUGHPUT_S)
    cpu.stop()
    errors = r["connect"] + r["read"] + r["write"] + r["timeout"]
    return {
        "generator": "wrk",
        "rps": r["answered"] / (r["duration_us"] / 1e6),
        "answers": r["answered"],
        "streamed": r["streamed"],
        "failures": r["failed"] + errors,
        "socket_errors": errors,
        "median_ms": r["p50_us"] / 1e3,
        "cpu_us": cpu.per_answer_us(r["answered"]),
    }


async def _aiohttp_throughput(gateway: str, pids: Mapping[str, int]) -> Throughput:
    """64 concurrent aiohttp clients, every other one streaming; and the failures seen."""
    import aiohttp

    cpu = _Cpu(pids)
    tally = _Tally(cpu)
    url = f"{gateway}/v1/chat/completions"

    async def worker(session: aiohttp.ClientSession, streaming: bool) -> None:
        body = json.dumps({"model": "auto", "messages": MESSAGES, "stream": streaming}).encode()
        while not tally.stop.is_set():
            async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as response:
                data = await response.read()
            ok = response.status == 200 and (data.endswith(b"data: [DONE]\n\n") if streaming else b'"content"' in data)
            tally.count(ok)

    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as session:
        rps, failures = await tally.measure([worker(session, i % 2 == 1) for i in range(CONCURRENCY)])
    return {
        "generator": "aiohttp",
        "rps": rps,
        "answers": tally.done + tally.failures,
        "failures": failures,
        "cpu_us": cpu.per_answer_us(tally.done + tally.failures),
    }


async def _litellm_throughput(router: Any) -> tuple[float, int]:
    tally = _Tally()

    async def worker(streaming: bool) -> None:
        while not tally.stop.is_set():
            try:
                if streaming:
                    text = ""
                    async for chunk in await router.acompletion(model="chat", messages=MESSAGES, stream=True):
                        text += chunk.choices[0].delta.content or "" if chunk.choices else ""
                else:
                    text = (await router.acompletion(model="chat", messages=MESSAGES)).choices[0].message.content
                ok = bool(text)
            except Exception:
                ok = False
            tally.count(ok)

    return await tally.measure([worker(i % 2 == 1) for i in range(CONCURRENCY)])


def run() -> Result:
    with _processes() as (sim, gateway, floor, secrets, pids):
        router = litellm_router(cast(Any, sim), "groq", secrets)
        samples = _latency(sim, gateway, secrets, router)
        load = _gateway_throughput(gateway, {"gateway": pids["gateway"], "simulator": pids["simulator"]})
        bare = _gateway_throughput(floor, {"floor": pids["floor"], "simulator": pids["simulator"]})
        litellm_rps, litellm_failures = asyncio.run(_litellm_throughput(router))
    for name, found in (("gateway", load), ("floor", bare)):
        if found["failures"]:
            raise RuntimeError(f"{found['failures']} of {found['answers']} {name} answers were not 200 with text")
    result: Result = {"calls": {name: len(s) for name, s in samples.items()}, "litellm_version": litellm_version()}
    for name, s in samples.items():
        result[f"{name}_median_ms"] = median(s) * 1e3
        result[f"{name}_p99_ms"] = percentile(s, 99) * 1e3
    for name in ("gateway", "litellm"):
        result[f"{name}_added_median_ms"] = result[f"{name}_median_ms"] - result["direct_median_ms"]
        result[f"{name}_added_p99_ms"] = result[f"{name}_p99_ms"] - result["direct_p99_ms"]
    result.update(
        gateway_rps=load["rps"],
        load_generator=load["generator"],
        throughput=load,
        floor=bare,
        litellm_rps=litellm_rps,
        litellm_failures=litellm_failures,
        rps_ratio=load["rps"] / litellm_rps if litellm_rps else None,
    )
    return result


def rows(r: Result) -> list[Row]:
    ratio = f" ({r['rps_ratio']:.1f}× LiteLLM)" if r.get("rps_ratio") else ""
    return [
        Row(
            "added latency per request, median",
            f"{r['gateway_added_median_ms']:.2f} ms",
            f"≤ {TARGET_MEDIAN_MS:.0f} ms",
            f"{r['litellm_added_median_ms']:.2f} ms",
            r["gateway_added_median_ms"] <= TARGET_MEDIAN_MS,
        ),
        Row(
            "added latency per request, p99",
            f"{r['gateway_added_p99_ms']:.2f} ms",
            f"≤ {TARGET_P99_MS:.0f} ms",
            f"{r['litellm_added_p99_ms']:.2f} ms",
            r["gateway_added_p99_ms"] <= TARGET_P99_MS,
        ),
        Row(
            f"throughput, {CONCURRENCY} clients (half streaming; load from {r.get('load_generator', 'aiohttp')})",
            f"{r['gateway_rps']:.0f} req/s{ratio}",
            f"≥ {TARGET_RPS:.0f} req/s",
            f"{r['litellm_rps']:.0f} req/s" + (f" ({r['litellm_failures']} failed)" if r["litellm_failures"] else ""),
            r["gateway_rps"] >= TARGET_RPS,
        ),
        *_cpu_rows(r),
        Row(
            "median / p99 per request (context)",
            f"{r['gateway_median_ms']:.2f} / {r['gateway_p99_ms']:.2f} ms",
            f"direct: {r['direct_median_ms']:.2f} / {r['direct_p99_ms']:.2f} ms",
            f"{r['litellm_median_ms']:.2f} / {r['litellm_p99_ms']:.2f} ms",
        ),
    ]


def _cpu_rows(r: Result) -> list[Row]:
    cpu = (r.get("throughput") or {}).get("cpu_us")
    if not cpu:
        return []
    ceiling = 1e6 / cpu["gateway"] if cpu["gateway"] else float("inf")
    found = [
        Row(
            "CPU per answer: gateway / simulator / load generator (context)",
            f"{cpu['gateway']:.0f} / {cpu['simulator']:.0f} / {cpu['generator']:.0f} µs",
            f"gateway alone on one core: {ceiling:.0f} req/s",
        )
    ]
    floor = r.get("floor") or {}
    if floor.get("cpu_us"):
        found.append(
            Row(
                "floor: the same load forwarded with no logic (uvicorn + aiohttp, `bench/gateway_floor.py`; context)",
                f"{floor['cpu_us']['floor']:.0f} µs per answer, {floor['rps']:.0f} req/s",
                f"gateway's own work: {cpu['gateway'] - floor['cpu_us']['floor']:.0f} µs per answer",
            )
        )
    return found


def notes(r: Result) -> list[str]:
    return [
        "**Why it is cheap.** The gateway awaits provider calls on uvicorn's event loop (`SmartClient.acomplete`, "
        "aiohttp) instead of handing each request to a worker thread: on this machine a thread hop alone cost "
        "about a third of a millisecond, more than the rest of the gateway's work. Under the hood the failover "
        "loop is the same one blocking callers use (`client.failover.steps`), driven by awaited steps."
    ]


if __name__ == "__main__":
    raise SystemExit(main(TITLE, run, rows))
