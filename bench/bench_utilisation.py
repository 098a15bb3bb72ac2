"""Utilisation: under more load than the keys allow, how much of their combined quota turns into answers,
and how many 429s does it cost?

7 keys that each allow a few requests per 2-second window, 16 threads asking as fast as they can for 10 s
(5 windows). Three wire situations:

- *hinted* (Groq wire format): every answer reports `x-ratelimit-remaining-requests`, every 429 a retry hint;
- *hint-less* (OpenRouter wire format with `limit_hint=False`): no remaining headers, and 429s say nothing about
  when to come back — our client with `LLM_COOLDOWN_POLICY=fixed` (rest `LLM_RATE_LIMIT_COOLDOWN`, an hour) and
  `=adaptive`;
- *sliding* (OpenRouter wire format, as OpenRouter really answers): nothing about quota on a success, a reset hint
  only on the 429, and a sliding window — at most n requests in any 2 s, each slot freeing 2 s after it was taken.

Each contender gets a fresh simulator so windows never mix. A key's window starts at its first request, so in the
10 s from it a key has at most 5 windows: capacity = keys × n × 5, and answers are counted from the simulator's log
for requests each key admitted within 10 s of its own first request (the load runs 1.5 s longer, for keys first
used late).
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import (
    MESSAGES,
    Result,
    Row,
    fail_fast_load,
    litellm_router,
    litellm_version,
    main,
    median,
    register_keys,
    smart_client,
)
from simulator.remote import SimulatorProcess

TITLE = "Utilisation: share of 7 keys' combined quota delivered by 16 threads over 5 windows, and 429s per answer"
METHOD = (
    "7 keys, each allowing *n* requests per fixed 2 s window that starts at the key's first request; 16 threads "
    "call as fast as they can for 10 s (5 windows), with a fresh simulator per contender in a process of its own "
    "(as a provider is: in the client's, it stamps requests when the interpreter lets it). *Hinted*: Groq wire "
    "format, `limit=(5, 2.0)` — every answer carries `x-ratelimit-remaining-requests`/`-reset-requests` and every "
    "429 a `retry-after`. *Hint-less*: OpenRouter wire format, `limit=(4, 2.0), limit_hint=False` — no remaining "
    "headers and 429s without any reset hint. Our threads loop `client.complete(messages, wait=2.0)` (key state "
    "in the default store, a SQLite file, fresh per run); LiteLLM's "
    "loop `Router.completion` (one deployment per key, default Router settings). On an error raised to the "
    "caller, both kinds of thread pause 10 ms before the next call (without it, threads spinning on instant "
    "errors starve the machine; it changes LiteLLM's results by less than run-to-run noise). *Share of quota* = "
    "200 answers the simulator logged for requests each key admitted within 10 s of its "
    "own first request (the load runs 1.5 s longer, for keys first used late) ÷ "
    "(keys × n × 5); *429 per answer* = 429s logged in the same span ÷ those answers. The hint-less case runs "
    "ours with `LLM_COOLDOWN_POLICY=fixed` (the original rule: an hour's rest after a hint-less 429) and "
    "`LLM_COOLDOWN_POLICY=adaptive`. *Sliding*: OpenRouter wire format, `limit=(5, 2.0), sliding=True` — at most "
    "5 requests in any 2 s, no remaining headers, a reset hint (`X-RateLimit-Reset`) only on the 429; its capacity "
    "is the same 5 windows' worth; and the same in Gemini's wire format (a `RetryInfo` hint). Every contender "
    "runs 3 times, interleaved. Share and 429s per answer "
    "pool the 3 runs (ratios of the sums), with the range of single runs in brackets; the counts are the "
    "median run's. *Errors raised* counts calls that ended in an exception at the caller "
    "(ours: `AllKeysExhaustedError` when no key frees up within `wait`; LiteLLM: `RouterRateLimitError` / "
    "`RateLimitError`)."
)
KEYS, THREADS, WINDOW, WINDOWS = 7, 16, 2.0, 5
DURATION = WINDOW * WINDOWS
START_SLACK = 1.5
"""Load runs this much longer than DURATION, for keys first used late (Gemini builds one SDK client per key on its
first use, about 0.1 s each): every key is judged over DURATION from its own first request."""
ERROR_PAUSE = 0.01
TARGET_SHARE, TARGET_WASTE, TARGET_ADAPTIVE, TARGET_SLIDING_SHARE = 0.95, 0.1, 0.95, 0.98
REPEATS = 3


@dataclass(frozen=True)
class Scenario:
    name: str
    provider: str
    per_window: int
    hint: bool
    sliding: bool = False


HINTED = Scenario("hinted", "groq", 5, True)
HINTLESS = Scenario("hintless", "openrouter", 4, False)
SLIDING = Scenario("sliding", "openrouter", 5, True, sliding=True)
"""OpenRouter's real shape: nothing about quota on a success, a reset hint only on the 429, and a window that
slides (each request's slot frees a window after it was taken)."""
SLIDING_GEMINI = Scenario("sliding_gemini", "gemini", 5, True, sliding=True)
"""The same in Gemini's wire format (the hint is `RetryInfo.retryDelay` in a `RESOURCE_EXHAUSTED` error)."""


def _fail_fast(call: Callable[[], object], caught: tuple[type[BaseException], ...]) -> tuple[int, Counter[str]]:
    """THREADS callers for DURATION + START_SLACK; (answers returned, errors by type)."""
    return fail_fast_load(call, caught, threads=THREADS, seconds=DURATION + START_SLACK, pause=ERROR_PAUSE)


def _contend(scenario: Scenario, contender: str, policy: str | None = None) -> Result:
    """One contender against a fresh simulator; the simulator's log is the judge."""
    from llms import LLMError

    storms: set[float] = set()
    with SimulatorProcess.start() as sim:
        secrets, env = register_keys(
            sim,
            scenario.provider,
            KEYS,
            limit=(scenario.per_window, WINDOW),
            limit_hint=scenario.hint,
            sliding=scenario.sliding,
        )
        if contender == "litellm":
            router = litellm_router(sim, scenario.provider, secrets)
            returned, errors = _fail_fast(lambda: router.completion(model="chat", messages=MESSAGES), (Exception,))
        else:
            client = smart_client({**env, "LLM_COOLDOWN_POLICY": policy} if policy else env)
            if scenario.provider == "gemini":  # the SDK's import (a second, once per process) is not the test
                import google.genai  # noqa: F401
            returned, errors = _fail_fast(lambda: client.complete(MESSAGES, wait=WINDOW), (LLMError,))
            # diagnostic: provider-wide "storm" rests (one event per key rested, so count distinct moments)
            storms = {round(e.at, 2) for e in client.admin.events(100_000) if "at once" in e.detail}
            client.close()
        logged = sim.requests
    first_use: dict[str, float] = {}
    for r in logged:
        first_use.setdefault(r.key_name, r.at)
    log = [r for r in logged if r.at < first_use[r.key_name] + DURATION]
    statuses = Counter(r.status for r in log)
    answers = statuses[200]
    capacity = KEYS * scenario.per_window * WINDOWS
    return {
        "answers": answers,
        "returned": returned,
        "capacity": capacity,
        "share": answers / capacity,
        "rejected_429": statuses[429],
        "waste": statuses[429] / answers if answers else float("inf"),
        "other_statuses": {str(k): v for k, v in statuses.items() if k not in (200, 429)},
        "errors": dict(errors),
        "storm_rests": len(storms),
    }


CONTENDERS: tuple[tuple[Scenario, str, str | None], ...] = (
    (HINTED, "ours", None),
    (HINTED, "litellm", None),
    (HINTLESS, "fixed", "fixed"),
    (HINTLESS, "adaptive", "adaptive"),
    (HINTLESS, "litellm", None),
    (SLIDING, "ours", None),
    (SLIDING, "litellm", None),
    (SLIDING_GEMINI, "ours", None),
    (SLIDING_GEMINI, "litellm", None),
)


def run() -> Result:
    """Every contender REPEATS times, interleaved, against a fresh simulator each time."""
    runs: dict[tuple[str, str], list[Result]] = {(s.name, name): [] for s, name, _ in CONTENDERS}
    for _ in range(REPEATS):
        for scenario, name, policy in CONTENDERS:
            runs[scenario.name, name].append(_contend(scenario, "litellm" if name == "litellm" else "ours", policy))
    result: Result = {"litellm_version": litellm_version(), "repeats": REPEATS}
    for (scenario, name), done in runs.items():
        result.setdefault(scenario, {})[name] = _summary(done)
    return result


def _summary(done: list[Result]) -> Result:
    """The runs pooled (ratios of sums, so one unlucky run counts for what it cost), plus single-run ranges."""
    shares, wastes = [r["share"] for r in done], [r["waste"] for r in done]
    answers, rejected = sum(r["answers"] for r in done), sum(r["rejected_429"] for r in done)
    return {
        "share": answers / sum(r["capacity"] for r in done),
        "share_range": [min(shares), max(shares)],
        "waste": rejected / answers if answers else float("inf"),
        "waste_range": [min(wastes), max(wastes)],
        "answers": median([r["answers"] for r in done]),
        "rejected_429": median([r["rejected_429"] for r in done]),
        "errors": median([sum(r["errors"].values()) for r in done]),
        "storm_rests": sum(r["storm_rests"] for r in done),
        "capacity": done[0]["capacity"],
        "runs": done,
    }


def _share(r: Result) -> str:
    low, high = r["share_range"]
    return f"{r['share']:.2f} ({low:.2f}–{high:.2f})" if high > low else f"{r['share']:.2f}"


def _waste(r: Result) -> str:
    low, high = r["waste_range"]
    return f"{r['waste']:.2f} ({low:.2f}–{high:.2f})" if high > low else f"{r['waste']:.2f}"


def _counts(r: Result) -> str:
    return f"{r['answers']:g} / {r['rejected_429']:g} / {r['errors']:,g}"


def rows(r: Result) -> list[Row]:
    ours, lite = r["hinted"]["ours"], r["hinted"]["litellm"]
    fixed, adaptive, lite_nh = (r["hintless"][k] for k in ("fixed", "adaptive", "litellm"))
    sliding, lite_sl = r["sliding"]["ours"], r["sliding"]["litellm"]
    gemini = r.get("sliding_gemini", {}).get("ours")
    lite_gemini = r.get("sliding_gemini", {}).get("litellm")
    return [
        Row(
            "hinted: share of quota delivered",
            _share(ours),
            f"≥ {TARGET_SHARE}",
            _share(lite),
            ours["share"] >= TARGET_SHARE,
        ),
        Row("hinted: 429s per answer", _waste(ours), f"≤ {TARGET_WASTE}", _waste(lite), ours["waste"] <= TARGET_WASTE),
        Row("hinted: answers / 429s / errors raised", _counts(ours), f"capacity {ours['capacity']}", _counts(lite)),
        Row(
            "hint-less, adaptive: share of quota",
            _share(adaptive),
            f"≥ {TARGET_ADAPTIVE}",
            _share(lite_nh),
            adaptive["share"] >= TARGET_ADAPTIVE,
        ),
        Row("hint-less, adaptive: 429s per answer", _waste(adaptive), "—", _waste(lite_nh)),
        Row(
            "hint-less, adaptive: answers / 429s / errors",
            _counts(adaptive),
            f"capacity {adaptive['capacity']}",
            _counts(lite_nh),
        ),
        Row("hint-less, fixed 1 h rest: share of quota", _share(fixed), "— (old behaviour)", _share(lite_nh)),
        Row("hint-less, fixed: 429s per answer", _waste(fixed), "—", _waste(lite_nh)),
        Row(
            "hint-less, fixed: answers / 429s / errors",
            _counts(fixed),
            f"capacity {fixed['capacity']}",
            _counts(lite_nh),
        ),
        Row(
            "sliding, hint only on 429: share of quota",
            _share(sliding),
            f"≥ {TARGET_SLIDING_SHARE}",
            _share(lite_sl),
            sliding["share"] >= TARGET_SLIDING_SHARE,
        ),
        Row(
            "sliding, hint only on 429: 429s per answer",
            _waste(sliding),
            f"≤ {TARGET_WASTE}",
            _waste(lite_sl),
            sliding["waste"] <= TARGET_WASTE,
        ),
        Row(
            "sliding: answers / 429s / errors",
            _counts(sliding),
            f"capacity {sliding['capacity']}",
            _counts(lite_sl),
        ),
        *(
            [
                Row(
                    "sliding, Gemini format: share of quota",
                    _share(gemini),
                    f"≥ {TARGET_SLIDING_SHARE}",
                    _share(lite_gemini) if lite_gemini else "—",
                    gemini["share"] >= TARGET_SLIDING_SHARE,
                ),
                Row(
                    "sliding, Gemini format: 429s per answer",
                    _waste(gemini),
                    f"≤ {TARGET_WASTE}",
                    _waste(lite_gemini) if lite_gemini else "—",
                    gemini["waste"] <= TARGET_WASTE,
                ),
            ]
            if gemini
            else []
        ),
    ]


def notes(r: Result) -> list[str]:
    """What explains the numbers, for the report: only the notes the measured values call for."""
    ours, adaptive, fixed = r["hinted"]["ours"], r["hintless"]["adaptive"], r["hintless"]["fixed"]
    out = [
        "*Fixed* is the old behaviour by construction: each key serves one window, answers a hint-less 429, and "
        f"rests an hour — {fixed['share']:.2f} of the quota is one window out of five."
    ]
    if adaptive["share"] < TARGET_ADAPTIVE and adaptive["storm_rests"]:
        out.append(
            "**Why hint-less adaptive misses.** The keys' windows start together, so within a few milliseconds "
            "6 or more of the 7 keys answer a hint-less 429. The key manager's storm detector "
            "(`llms/quota.py: StormRule`, ≥ 75 % of a provider's keys rate-limited within 5 s) reads that as "
            "a provider-wide limit and rests *every* key for `LLM_STORM_COOLDOWN` (10 s) — a storm with no hint "
            "returns `inf`, capped to that setting — whatever the cooldown policy says. "
            f"Storm rests in {len(adaptive['runs'])} runs: {adaptive['storm_rests']:g}. Each lasts the rest of the "
            "run, so adaptive delivers what fixed does: the storm rest overrides the ladder's 1 s first rest "
            "before it can probe."
        )
    out.append(
        "**Hint-less 429s per answer: the floor.** Without hints a 429 is the only sign that a window is spent, "
        "so a client that does not learn how many requests a window holds pays at least one 429 per key per "
        f"window — 1/n = {1 / HINTLESS.per_window:.2f} per answer here. Above that floor the extra 429s come from "
        "requests already in flight when the window closes (16 threads share 7 keys) and from probes that "
        "arrive before the window has reset."
    )
    if ours["waste_range"][1] > TARGET_WASTE or ours["share_range"][0] < TARGET_SHARE:
        missed = ours["waste"] > TARGET_WASTE or ours["share"] < TARGET_SHARE
        out.append(
            ("**Why hinted misses.**" if missed else "**Why some hinted runs miss.**")
            + " When a key's rest ends, every thread waiting for a key wakes at the same "
            "moment (`_candidates` sleeps until `next_free()`), and the concurrency gate no longer limits them: "
            "the remaining count it learned from `x-ratelimit-remaining-requests` expired with the old window, "
            "so more requests go out at once than the new window holds, and the surplus earns 429s. When 6 of "
            "the 7 keys do that within 5 s, the storm detector rests every key for the shortest hint (~2 s), "
            f"fresh windows included (storm rests in {len(ours['runs'])} runs: {ours['storm_rests']:g}). The "
            "outcome depends on thread scheduling, so single runs range from no 429 at all to the worst in "
            "brackets."
        )
    sliding = r.get("sliding", {}).get("ours")
    if sliding and sliding["waste"] > TARGET_WASTE:
        out.append(
            "**Where sliding windows still cost 429s.** Until a key's first 429 nothing is known about its window "
            "(OpenRouter says nothing on a success), so every key's first window ends in 429s for the requests in "
            "flight; after it the key keeps to the learned window (`llms/learned_windows.py: SlotLog`). Most of what "
            "is left is that first window: a longer run spreads it over more answers."
        )
    return out


if __name__ == "__main__":
    raise SystemExit(main(TITLE, run, rows))
