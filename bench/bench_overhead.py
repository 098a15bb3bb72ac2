"""Overhead: what does a `SmartClient.chat` call cost on top of the HTTP round trip it makes?

Four contenders send the same chat request to the simulator's Groq endpoint (zero upstream latency, 4 keys):
a bare `requests.Session` POST of the same JSON with the same `Authorization` header, parsing `.json()` (the
floor the target is set against), the same POST on a bare `urllib3` connection pool (what our client is built
on: the floor of our own transport), our `SmartClient.chat`, and LiteLLM's `Router.completion` over the same 4
keys. They run interleaved, in blocks whose order rotates every round, so machine drift hits all alike. Ratios to
the floor are the result; milliseconds are context. Then `cProfile` says where our call's time goes.
"""

from __future__ import annotations

import cProfile
import itertools
import json
import pstats
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
    "round trip on this machine, not of the client alone. A bare `urllib3.HTTPConnectionPool.urlopen` of the same "
    "request runs in the same rounds, for context. Profile: 2,000 more `SmartClient.chat` calls under `cProfile` "
    "(the calling thread only; the simulator's thread is not in it), own time grouped by where the code lives."
)
TARGET_RATIO = 1.10
ROUNDS = 15
BLOCK = {"bare": 150, "urllib3": 150, "ours": 150, "ours_model": 150, "litellm": 40}
WARMUP = {"bare": 200, "urllib3": 200, "ours": 200, "ours_model": 200, "litellm": 60}
TARGET_MODEL_RATIO = 1.0
PROFILED_CALLS = 2000
_PLACES = (  # (label, path fragments): where a function's own time is counted, first match wins
    ("waiting on the socket (the server's time included)", ("<method 'recv_into'", "<method 'sendall'")),
    ("this package (llms/, config/)", ("/llms/", "/config/")),
    ("urllib3", ("/urllib3/",)),
    ("http.client and email (status line, headers)", ("/http/client.py", "/email/")),
    ("json", ("/json/",)),
)


def _contenders(sim: Simulator, secrets: list[str], env: dict[str, str]) -> dict[str, Callable[[], object]]:
    """The ways to make the same call, as zero-argument callables."""
    import requests
    import urllib3

    session = requests.Session()
    url = f"{sim.base_urls['groq']}/chat/completions"
    headers = itertools.cycle([{"Authorization": f"Bearer {s}"} for s in secrets])
    model = PROVIDERS["groq"].default_model  # what our client sends
    pool = urllib3.connection_from_url(url, maxsize=4)
    path = url.removeprefix(sim.url)
    payload = json.dumps({"model": model, "messages": MESSAGES}).encode()

    def bare() -> object:
        response = session.post(url, json={"model": model, "messages": MESSAGES}, headers=next(headers), timeout=60)
        return response.json()

    def bare_urllib3() -> object:
        sent = {**next(headers), "Content-Type": "application/json"}
        return json.loads(pool.urlopen("POST", path, body=payload, headers=sent, timeout=60).data)

    # The call's own cost, its state in memory: what a store adds per call is *State store*'s (bench_state.py).
    client = smart_client({**env, "LLM_STATE_URL": "memory://"})
    router = litellm_router(sim, "groq", secrets)

    def ours() -> object:
        return client.chat(MESSAGES)

    def ours_model() -> object:  # a model chosen per call: the selector resolved, the model sent
        return client.chat(MESSAGES, model=f"groq/{model}")

    def litellm() -> object:
        return router.completion(model="chat", messages=MESSAGES)

    return {"bare": bare, "urllib3": bare_urllib3, "ours": ours, "ours_model": ours_model, "litellm": litellm}


def _profile(call: Callable[[], object]) -> tuple[dict[str, float], list[tuple[str, float]]]:
    """Share of the calling thread's time per place the code lives (see `_PLACES`; the rest is "other"), and this
    package's five most expensive functions by own time, with their share."""
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(PROFILED_CALLS):
        call()
    profile.disable()
    own: dict[str, float] = {}
    ours: dict[str, float] = {}
    for (file, _, function), (_, _, own_time, _, _) in pstats.Stats(profile).stats.items():  # type: ignore[attr-defined]
        where = f"{file}:{function}"
        label = next((name for name, parts in _PLACES if any(p in where for p in parts)), "other (stdlib, builtins)")
        own[label] = own.get(label, 0.0) + own_time
        if label.startswith("this package"):
            ours[f"{Path(file).parent.name}/{Path(file).name}:{function}"] = own_time
    total = sum(own.values()) or 1.0
    places = {label: seconds / total for label, seconds in sorted(own.items(), key=lambda kv: -kv[1])}
    top = sorted(ours.items(), key=lambda kv: -kv[1])[:5]
    return places, [(name, seconds / total) for name, seconds in top]


def run() -> Result:
    from simulator import Simulator

    with Simulator(latency=0.0) as sim:
        secrets, env = register_keys(sim, "groq", 4)
        calls = _contenders(sim, secrets, env)
        samples = interleaved(calls, WARMUP, BLOCK, ROUNDS)
        profile, top = _profile(calls["ours"])
        statuses = {req.status for req in sim.requests}
    if statuses != {200}:
        raise RuntimeError(f"the simulator answered something other than 200: {sorted(statuses)}")
    result: Result = {
        "calls": {name: len(s) for name, s in samples.items()},
        "litellm_version": litellm_version(),
        "profile": profile,
        "profile_top": top,
    }
    for name, s in samples.items():
        result[f"{name}_median_ms"] = median(s) * 1e3
        result[f"{name}_p99_ms"] = percentile(s, 99) * 1e3
    for name in ("urllib3", "ours", "ours_model", "litellm"):
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
        Row(
            'median per call with `model="groq/…"` ÷ bare requests',
            f"{r['ours_model_ratio']:.2f}×",
            f"≤ {TARGET_MODEL_RATIO:.2f}×",
            f"{r['litellm_ratio']:.1f}×",
            r["ours_model_ratio"] <= TARGET_MODEL_RATIO,
        ),
        Row("p99 per call ÷ bare requests p99", f"{r['ours_p99_ratio']:.2f}×", "—", f"{r['litellm_p99_ratio']:.1f}×"),
        Row(
            "median per call ÷ bare urllib3 pool (context)",
            f"{r['ours_median_ms'] / r['urllib3_median_ms']:.2f}×",
            f"bare urllib3 ÷ bare requests: {r['urllib3_ratio']:.2f}×",
            f"{r['litellm_median_ms'] / r['urllib3_median_ms']:.1f}×",
        ),
        Row(
            "median / p99 per call (context)",
            f"{r['ours_median_ms']:.2f} / {r['ours_p99_ms']:.2f} ms",
            f"bare: {r['bare_median_ms']:.2f} / {r['bare_p99_ms']:.2f} ms",
            f"{r['litellm_median_ms']:.2f} / {r['litellm_p99_ms']:.2f} ms",
        ),
    ]


def notes(r: Result) -> list[str]:
    shares = ", ".join(f"{label} {share:.0%}" for label, share in r["profile"].items())
    extra_us = (r["ours_median_ms"] - r["urllib3_median_ms"]) * 1e3
    top = ", ".join(f"`{name}` {share:.1%}" for name, share in r["profile_top"])
    return [
        f"**Where the time goes** (own time of the calling thread over {PROFILED_CALLS:,} calls under `cProfile`): "
        f"{shares}. Our client costs {extra_us:.0f} µs per call more than a bare urllib3 POST of the same request: "
        "picking and recording the key (`KeyManager.acquire`/`record`, the memory store), validating the messages, "
        f"classifying the answer, the request log entry and the `ChatResult` (this package's largest: {top}). "
        "It is faster than a bare `requests` call because it is not built on `requests`: a `requests` call "
        "re-reads every proxy variable of the environment and merges session settings each time, which here "
        "costs more than the round trip itself. What is left is mostly `http.client` parsing the status line and "
        "headers (through the `email` package) and urllib3 around it."
    ]


if __name__ == "__main__":
    raise SystemExit(main(TITLE, run, rows))
