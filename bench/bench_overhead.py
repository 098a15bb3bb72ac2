"""Overhead: what does a `SmartClient.chat` call cost on top of the HTTP round trip it makes?

Three contenders send the same chat request to the simulator's Groq endpoint (zero upstream latency, 4 keys):
a bare `requests.Session` POST of the same JSON with the same `Authorization` header, parsing `.json()` (the
physical floor of any Python client on `requests`), our `SmartClient.chat`, and LiteLLM's `Router.completion`
over the same 4 keys. They run interleaved, in blocks whose order rotates every round, so machine drift hits
all three alike. Ratios to the floor are the result; milliseconds are context.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import (
    MESSAGES,
    Result,
    Row,
    interleaved,
    litellm_router,
    litellm_version,
    main,
    median,
    percentile,
    register_keys,
    smart_client,
)
from llms.providers import PROVIDERS

if TYPE_CHECKING:
    from simulator import Simulator

TITLE = "Overhead: ms per chat call vs a bare requests POST (Groq wire format, 4 keys, zero latency)"
METHOD = (
    "Simulator on loopback with zero upstream latency, Groq wire format, 4 keys. Each round runs a block of calls "
    "per contender — bare `requests.Session.post` of the same JSON payload with the same `Authorization` header "
    "(rotating over the 4 keys) followed by `.json()`, our `SmartClient.chat`, and LiteLLM "
    "`Router.completion` with one deployment per key (default Router settings) — in an order that rotates "
    "every round, after a warm-up of every contender; each call is timed on its own. The ratio is the "
    "contender's median (and p99) over the bare POST's, all from the same run. The floor includes the "
    "simulator's own time to answer (it runs in-process, as in the tests), so it is the cost of one HTTP "
    "round trip on this machine, not of the client alone."
)
TARGET_RATIO = 1.15
ROUNDS = 15
BLOCK = {"bare": 150, "ours": 150, "litellm": 40}
WARMUP = {"bare": 200, "ours": 200, "litellm": 60}


def _contenders(sim: Simulator, secrets: list[str], env: dict[str, str]) -> dict[str, Callable[[], object]]:
    """The three ways to make the same call, as zero-argument callables."""
    import requests

    session = requests.Session()
    url = f"{sim.base_urls['groq']}/chat/completions"
    headers = itertools.cycle([{"Authorization": f"Bearer {s}"} for s in secrets])
    model = PROVIDERS["groq"].default_model  # what our client sends

    def bare() -> object:
        response = session.post(url, json={"model": model, "messages": MESSAGES}, headers=next(headers), timeout=60)
        return response.json()

    client = smart_client(env)
    router = litellm_router(sim, "groq", secrets)

    def ours() -> object:
        return client.chat(MESSAGES)

    def litellm() -> object:
        return router.completion(model="chat", messages=MESSAGES)

    return {"bare": bare, "ours": ours, "litellm": litellm}


def run() -> Result:
    from simulator import Simulator

    with Simulator(latency=0.0) as sim:
        secrets, env = register_keys(sim, "groq", 4)
        calls = _contenders(sim, secrets, env)
        samples = interleaved(calls, WARMUP, BLOCK, ROUNDS)
        statuses = {req.status for req in sim.requests}
    if statuses != {200}:
        raise RuntimeError(f"the simulator answered something other than 200: {sorted(statuses)}")
    result: Result = {"calls": {name: len(s) for name, s in samples.items()}, "litellm_version": litellm_version()}
    for name, s in samples.items():
        result[f"{name}_median_ms"] = median(s) * 1e3
        result[f"{name}_p99_ms"] = percentile(s, 99) * 1e3
    for name in ("ours", "litellm"):
        result[f"{name}_ratio"] = result[f"{name}_median_ms"] / result["bare_median_ms"]
        result[f"{name}_p99_ratio"] = result[f"{name}_p99_ms"] / result["bare_p99_ms"]
    return result


def rows(r: Result) -> list[Row]:
    return [
        Row(
            "median per call ÷ bare requests",
            f"{r['ours_ratio']:.2f}×",
            f"≤ {TARGET_RATIO:.2f}×",
            f"{r['litellm_ratio']:.1f}×",
            r["ours_ratio"] <= TARGET_RATIO,
        ),
        Row("p99 per call ÷ bare requests p99", f"{r['ours_p99_ratio']:.2f}×", "—", f"{r['litellm_p99_ratio']:.1f}×"),
        Row(
            "median / p99 per call (context)",
            f"{r['ours_median_ms']:.2f} / {r['ours_p99_ms']:.2f} ms",
            f"bare: {r['bare_median_ms']:.2f} / {r['bare_p99_ms']:.2f} ms",
            f"{r['litellm_median_ms']:.2f} / {r['litellm_p99_ms']:.2f} ms",
        ),
    ]


def notes(r: Result) -> list[str]:
    extra_us = (r["ours_median_ms"] - r["bare_median_ms"]) * 1e3
    note = (
        f"Ours adds {extra_us:.0f} µs per call to the round trip. Under `cProfile` that is spread thinly: picking "
        "and recording the key (`KeyManager.acquire`/`record`, the concurrency gate, the memory store), "
        "validating the messages (`ChatRequest.build`), classifying the answer and reading its quota headers "
        "(`classify_response` and `quota_hint` each build a lower-cased copy of the headers), and the "
        "`ChatResult`. The rest — `requests` itself, including its per-call proxy lookup in the environment — "
        "is in the floor too."
    )
    if r["ours_ratio"] > TARGET_RATIO:
        note = "**Why it misses.** " + note
    return [note]


if __name__ == "__main__":
    raise SystemExit(main(TITLE, run, rows))
