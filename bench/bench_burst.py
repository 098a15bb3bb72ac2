"""Burst: many threads at once over few keys — how many 429s does a burst cost before the keys are spent?

8 keys, each allowing 5 requests per 30 s, spread over the three providers as users hold them (OpenRouter 4,
Groq 3, Gemini 1, in that fallback order), each in its provider's real wire shape: OpenRouter and Gemini say
nothing about quota on a success and send a reset hint only with the 429 (sliding windows); Groq reports
`x-ratelimit-remaining-requests` on every answer (fixed windows). 32 threads send 80 requests between them as
fast as they can: twice what the keys hold, all inside one window. Every request must end answered, or with an
error that says when a key frees; every 429 the providers send is waste.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import (
    MESSAGES,
    Result,
    Row,
    litellm_router_over,
    litellm_version,
    main,
    median,
    register_keys,
    smart_client,
)
from simulator.remote import SimulatorProcess

TITLE = "Burst: 32 threads, 80 requests, 8 keys of 5 per 30 s (OpenRouter 4, Groq 3, Gemini 1): 429s wasted per key"
METHOD = (
    "A fresh simulator per run, in a process of its own, zero upstream latency. Keys: 4 OpenRouter and 1 Gemini "
    "key with sliding windows "
    "(`limit=(5, 30.0), sliding=True`: a reset hint only on the 429, nothing on a success) and 3 Groq keys with "
    "fixed windows and `x-ratelimit-remaining-requests` on every answer, in the order OpenRouter → Groq → Gemini. "
    "32 threads take requests from a shared count of 80 and send each once: ours `client.complete(messages)` "
    "(default settings: a call waits for a busy key's slot, not for a cooling key; key state in the default store, "
    "a SQLite file, fresh per run), LiteLLM `Router.completion` "
    "over one model group with the same 8 keys as deployments (default settings). *429s per key* = the 429s the "
    "simulator logged ÷ 8. Every request must end "
    "in an answer or, for ours, in `AllKeysExhaustedError` with `retry_in` set (when a key frees). 5 runs each, "
    "interleaved; the median run is shown with the range."
)
THREADS, REQUESTS, PER_WINDOW, WINDOW = 32, 80, 5, 30.0
KEYS = {"openrouter": 4, "groq": 3, "gemini": 1}
TARGET_WASTE_PER_KEY = 1.0
REPEATS = 5


def _keys(sim: Any) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Register the keys; return the env that configures our client and (provider, secret) pairs."""
    env: dict[str, str] = {}
    pairs = []
    for provider, count in KEYS.items():
        window = {"limit": (PER_WINDOW, WINDOW), "sliding": provider != "groq"}
        secrets, provider_env = register_keys(sim, provider, count, prefix="burst", **window)
        env.update(provider_env)
        pairs += [(provider, secret) for secret in secrets]
    return {**env, "LLM_PROVIDER_ORDER": ",".join(KEYS)}, pairs


def _burst(call: Callable[[], object], told: Callable[[BaseException], bool]) -> Counter[str]:
    """THREADS threads sending REQUESTS requests in all; how each ended."""
    ended = Counter[str]()
    lock = threading.Lock()
    left = [REQUESTS]

    def worker() -> None:
        while True:
            with lock:
                if left[0] == 0:
                    return
                left[0] -= 1
            try:
                call()
                outcome = "answered"
            except Exception as exc:
                outcome = "told when a key frees" if told(exc) else f"failed ({type(exc).__name__})"
            with lock:
                ended[outcome] += 1

    threads = [threading.Thread(target=worker, name=f"bench-burst-{i}") for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return ended


def _run_once(contender: str) -> Result:
    from llms import AllKeysExhaustedError

    with SimulatorProcess.start() as sim:
        env, pairs = _keys(sim)
        started = time.perf_counter()
        if contender == "ours":
            client = smart_client(env)
            ended = _burst(
                lambda: client.complete(MESSAGES),
                lambda exc: isinstance(exc, AllKeysExhaustedError) and exc.retry_in is not None,
            )
            client.close()
        else:
            router = litellm_router_over(sim, pairs)
            ended = _burst(lambda: router.completion(model="chat", messages=MESSAGES), lambda _: False)
        seconds = time.perf_counter() - started
        log = sim.requests
    statuses = Counter(r.status for r in log)
    per_key = Counter(r.key_name for r in log if r.status == 429)
    return {
        "ended": dict(ended),
        "answers": statuses[200],
        "rejected_429": statuses[429],
        "waste_per_key": statuses[429] / len(pairs),
        "worst_key": max(per_key.values(), default=0),
        "seconds": seconds,
    }


def run() -> Result:
    runs: dict[str, list[Result]] = {"ours": [], "litellm": []}
    for _ in range(REPEATS):
        for contender in runs:
            runs[contender].append(_run_once(contender))
    result: Result = {"litellm_version": litellm_version(), "repeats": REPEATS}
    for contender, done in runs.items():
        wastes = [r["waste_per_key"] for r in done]
        result[contender] = {
            "waste_per_key": median(wastes),
            "waste_range": [min(wastes), max(wastes)],
            "worst_key": median([r["worst_key"] for r in done]),
            "answers": median([r["answers"] for r in done]),
            "unexplained": sum(n for r in done for k, n in r["ended"].items() if k.startswith("failed")),
            "runs": done,
        }
    return result


def _waste(r: Result) -> str:
    low, high = r["waste_range"]
    return f"{r['waste_per_key']:.2f} ({low:.2f}–{high:.2f})" if high > low else f"{r['waste_per_key']:.2f}"


def rows(r: Result) -> list[Row]:
    ours, lite = r["ours"], r["litellm"]
    return [
        Row(
            "429s per key",
            _waste(ours),
            f"≤ {TARGET_WASTE_PER_KEY:g}",
            _waste(lite),
            ours["waste_per_key"] <= TARGET_WASTE_PER_KEY,
        ),
        Row("429s on the worst key (median run)", f"{ours['worst_key']:g}", "—", f"{lite['worst_key']:g}"),
        Row(
            "answers (of 40 the keys hold)",
            f"{ours['answers']:g}",
            "—",
            f"{lite['answers']:g}",
        ),
        Row(
            "requests neither answered nor told when a key frees",
            f"{ours['unexplained']:g}",
            "0",
            "—",
            ours["unexplained"] == 0,
        ),
    ]


def notes(r: Result) -> list[str]:
    unknown = KEYS["openrouter"] + KEYS["gemini"]
    return [
        f"**The floor.** OpenRouter and Gemini say nothing about a key's quota until its first 429, so each of "
        f"those {unknown} keys pays one 429 to learn its window: {unknown} / {sum(KEYS.values())} = "
        f"{unknown / sum(KEYS.values()):.2f} per key. Groq's keys report what they have left and pay none. Ours "
        f"stays at that floor because a key whose quota is unknown serves one request at a time "
        "(`llms/quota.py: InFlightLimit`): when its window fills, nothing else is in flight on it to be refused, "
        "and the other threads wait for a free slot or, once every key rests, are told when the first frees. "
        f"LiteLLM's worst key took {r['litellm']['worst_key']:g} 429s in the median run: when the other keys "
        "were spent, every thread landed on the last ones at once."
    ]


if __name__ == "__main__":
    raise SystemExit(main(TITLE, run, rows))
