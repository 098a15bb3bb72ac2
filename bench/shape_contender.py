"""One contender against one cell of *Quota on every shape over HTTP*: a fresh HTTP simulator with the cell's keys
as the harness models them, in a process of its own as a provider is, the cell's callers as threads in real time,
and the simulator's log as the judge.

Kept apart from `bench_shapes_http` (which cells run, how, and the table) so each reads at a sitting.
"""

from __future__ import annotations

import random
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench._common import (
    LITELLM_MODELS,
    MESSAGES,
    Result,
    import_litellm,
    smart_client,
)
from bench.bench_shapes import targets
from llms.types import ChatRequest
from simulator.remote import SimulatorProcess
from simulator.shapes import WindowKind, served
from simulator.virtual_time import (
    _SECRETS,
    EPOCH,
    PROVIDER_OF,
    TOKEN_REQUESTS,
    CallerKind,
    HintForm,
    Measured,
    Shape,
    _env,
)

FIRST_WITHIN = 2.0
"""Seconds a contender may take to send its first request before the span starts without it."""


def _register(sim: Any, shape: Shape) -> list[str]:
    """The cell's keys in the simulator, as the harness's providers model them; their secrets."""
    provider = PROVIDER_OF[shape.hint]
    secrets = []
    for number in range(1, shape.keys + 1):
        secret = _SECRETS[provider](number)
        sim.add_key(
            provider,
            secret,
            name=f"{provider}:{number}",
            limit=(shape.limit_size, shape.length),
            window=shape.window,
            limit_hint=shape.hinted,
            group=f"account{(number - 1) // shape.group}" if shape.group > 1 else None,
            latency=shape.latency,
            jitter=shape.jitter,
            quota_headers=shape.hint not in (HintForm.RETRY_AFTER, HintForm.NONE),
            retry_after=shape.hint is HintForm.RESET_MS,
            day_count=14400 if shape.hint is HintForm.GROQ else None,
        )
        secrets.append(secret)
    return secrets


def _router(sim: SimulatorProcess, provider: str, secrets: list[str]) -> Any:
    """LiteLLM's Router, one deployment per key in one model group, default settings (as `_common.litellm_router`,
    plus the generic provider as an OpenAI-compatible deployment)."""
    litellm = import_litellm()
    base = sim.base_urls[provider] + ("/v1beta" if provider == "gemini" else "")
    model = LITELLM_MODELS.get(provider, "openai/sim-chat-small")
    if provider == "groq":  # the model our client asks for in these cells (`virtual_time._env`): it does not reason
        model = "groq/qwen/qwen3.6-27b"
    deployments = [
        {"model_name": "chat", "litellm_params": {"model": model, "api_key": s, "api_base": base}} for s in secrets
    ]
    return litellm.Router(model_list=deployments)


def _load(
    shape: Shape, call: Callable[[], object], caught: tuple[type[BaseException], ...], sim: SimulatorProcess
) -> tuple[float, dict[str, int]]:
    """The cell's callers as threads for its span from the first request the simulator saw (what a client does
    before its first request is start-up, not rotation); when that was, and how the calls ended."""
    ended: Counter[str] = Counter()
    lock = threading.Lock()
    if shape.window is WindowKind.FIXED_CLOCK:  # the first request where the harness's arrives in a clock window
        time.sleep((EPOCH + shape.latency / 2 - time.time()) % shape.length)
    began = time.time()
    first: list[float] = []

    def end() -> float:
        if not first and (seen := sim.first()) is not None:
            first.append(seen)
        return (first[0] if first else began + FIRST_WITHIN) + shape.span

    def caller() -> None:
        while time.time() < end():
            try:
                call()
                outcome = "answered"
            except caught as exc:
                outcome = type(exc).__name__
            with lock:
                ended[outcome] += 1
            if outcome != "answered":
                time.sleep(max(0.0, min(shape.pause, end() - time.time())))

    threads = [threading.Thread(target=caller, name=f"bench-shape-{i}", daemon=True) for i in range(shape.callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    end()
    return (first[0] if first else began), dict(ended)


def contend(shape: Shape, contender: str) -> Result:
    """One run of `contender` ("ours" or "litellm") on the cell, from a fresh simulator; the log is the judge."""
    from llms import LLMError

    provider = PROVIDER_OF[shape.hint]
    with (
        tempfile.TemporaryDirectory(prefix="bench-shapes-") as folder,
        SimulatorProcess.start(skew=shape.skew) as sim,
    ):
        secrets = _register(sim, shape)
        asks = _asks(shape)
        if contender == "litellm":
            router = _router(sim, provider, secrets)

            def litellm_call() -> object:
                request = asks()
                return router.completion(model="chat", messages=list(request.messages), max_tokens=request.max_tokens)

            started, ended = _load(shape, litellm_call, (Exception,), sim)
        else:
            store = f"sqlite:///{Path(folder) / 'state.db'}" if shape.store == "sqlite" else "memory://"
            client = smart_client({**_env(shape), **sim.env(), "LLM_STATE_URL": store})
            wait = shape.wait if shape.caller is CallerKind.WAIT else None
            if provider == "gemini":  # the SDK's import (a second, once per process) is not the test
                import google.genai  # noqa: F401
            started, ended = _load(shape, lambda: client.complete(asks(), wait=wait), (LLMError,), sim)
            client.close()
        log = sim.requests
    measured = _measure(shape, started, log)
    statuses = Counter(r.status for r in log)
    return {
        **measured.as_dict(),
        "met": list(targets(measured)),
        "ended": ended,
        "other_statuses": {str(k): v for k, v in statuses.items() if k not in (200, 429)},
    }


def _asks(shape: Shape) -> Callable[[], ChatRequest]:
    """What each call asks: "Hello", or, under a limit on tokens, one of the harness's requests of different sizes
    at random (`TOKEN_REQUESTS`)."""
    if shape.window is not WindowKind.TOKENS:
        hello = ChatRequest.build(MESSAGES)
        return lambda: hello
    rng = random.Random(shape.seed)
    return lambda: rng.choice(TOKEN_REQUESTS)[0]


def _measure(shape: Shape, started: float, log: list[Any]) -> Measured:
    """The run as the harness measures one: answers and 429s within the span on the provider's clock, against
    what a client that knew every limit could have had admitted."""
    provider_start = started + shape.skew
    measured_until = provider_start + shape.span
    if shape.window is WindowKind.FIXED_CLOCK:  # end where a window ends, as the harness does
        measured_until = max(provider_start + shape.length, measured_until // shape.length * shape.length)
    within = [r for r in log if provider_start <= r.at + shape.skew < measured_until]
    answers = sum(1 for r in within if r.status == 200)
    refused = sum(1 for r in within if r.status == 429)
    first = min(shape.span, shape.length)
    refused_first = sum(1 for r in within if r.status == 429 and r.at + shape.skew - provider_start < first)
    most = served(
        shape.window, shape.limit_size, shape.length, provider_start, measured_until,
        subjects=shape.subjects, callers=shape.callers, latency=shape.latency, costs=shape.costs,
    )  # fmt: skip
    spent = float(sum(r.tokens for r in within if r.status == 200)) if shape.costs else None
    return Measured(shape, answers, refused, most, refused_first, spent)
