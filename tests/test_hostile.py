"""Hostile networks and broken infrastructure: a real socket server that trickles, explodes and lies, and a
private redis-server that restarts, runs out of memory or refuses us. Wall times have generous margins."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import http.server
import json
import logging
import math
import os
import signal
import subprocess
import textwrap
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import redis
from conftest import (
    DURABLE,
    PYTHON,
    ROOT,
    SECRETS,
    STORE_BACKENDS,
    USER_HELLO,
    Clock,
    RedisServer,
    ctrl_c_raises,
    python_env,
)
from hostile_server import HostileServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config.settings import ConfigError, load_settings
from llms import AllKeysExhaustedError, ChatResult, SmartClient, StreamInterruptedError
from llms.clock import SteadyClock
from llms.cooldown import SLOT_MARGIN
from llms.providers import PROVIDERS
from llms.state import StateStore, store_from_url
from llms.state.failover import FailoverStore
from llms.state.memory import MemoryStore
from llms.wire import epoch_reset, error_message, message_hint, parse_duration, retry_after_header
from simulator import Simulator

KEY = {"groq": SECRETS["groq"][0], "gemini": SECRETS["gemini"][0], "openrouter": SECRETS["openrouter"][0]}


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileServer]:
    with HostileServer(limit=30) as server:
        yield server


def client_for(provider: str, base_url: str, store: StateStore | None = None, **env: str) -> SmartClient:
    variables = {
        f"{provider.upper()}_API_KEY_1": KEY[provider],
        f"{provider.upper()}_BASE_URL": base_url,
        "LLM_REQUEST_TIMEOUT": "1",
        **env,
    }
    return SmartClient(load_settings(variables, dotenv_path=None), store=store or MemoryStore())


# --- deadlines -------------------------------------------------------------------------------------------------


def complete(client: SmartClient, awaited: bool) -> ChatResult:
    """`client.complete`, or `acomplete` on an event loop (the gateway's path: aiohttp for OpenAI-format providers)."""
    if not awaited:
        return client.complete(USER_HELLO)

    async def call() -> ChatResult:
        try:
            return await client.acomplete(USER_HELLO)
        finally:
            await client.aclose_connections()

    return asyncio.run(call())


def read_stream(client: SmartClient, awaited: bool, first: str | None = None) -> None:
    """Read a whole stream (checking its first piece when `first` is given), blocking or awaited."""
    if not awaited:
        stream = client.chat_stream(USER_HELLO)
        if first is not None:
            assert next(stream) == first
        for _ in stream:
            pass
        return

    async def read() -> None:
        stream = client.achat_stream(USER_HELLO)
        try:
            if first is not None:
                assert await anext(stream) == first
            async for _ in stream:
                pass
        finally:
            await client.aclose_connections()

    asyncio.run(read())


AWAITED = pytest.mark.parametrize("awaited", [False, True], ids=["blocking", "awaited"])


@pytest.mark.slow
@AWAITED
@pytest.mark.parametrize("provider", ["groq", "gemini"])
@pytest.mark.parametrize("behaviour", ["trickle-status", "trickle-body"])
def test_a_trickling_answer_ends_at_the_deadline(
    hostile: HostileServer, provider: str, behaviour: str, awaited: bool
) -> None:
    with client_for(provider, hostile.base(behaviour)) as client:
        started = time.monotonic()
        with pytest.raises(AllKeysExhaustedError) as caught:
            complete(client, awaited)
        assert time.monotonic() - started < 4  # a 1 s deadline; it used to take 130-200 s
        assert caught.value.attempts[0].message == "timed out"


@pytest.mark.slow
@AWAITED
@pytest.mark.parametrize(
    ("provider", "behaviour"), [("groq", "keepalive-stream"), ("gemini", "gemini-keepalive-stream")]
)
def test_keep_alive_comments_after_the_first_piece_are_not_progress(
    hostile: HostileServer, provider: str, behaviour: str, awaited: bool
) -> None:
    with client_for(provider, hostile.base(behaviour)) as client:
        started = time.monotonic()
        with pytest.raises(StreamInterruptedError, match="timed out"):
            read_stream(client, awaited, first="first piece ")
        assert time.monotonic() - started < 4


@pytest.mark.slow
@AWAITED
def test_a_stream_that_never_ends_stops_at_its_overall_cap(hostile: HostileServer, awaited: bool) -> None:
    with client_for("groq", hostile.base("endless-pieces"), LLM_STREAM_MAX_SECONDS="2") as client:
        started = time.monotonic()
        with pytest.raises(StreamInterruptedError, match="timed out"):
            read_stream(client, awaited)
        assert 1.5 < time.monotonic() - started < 5


def test_an_interrupted_call_frees_its_key_at_once(hostile: HostileServer) -> None:
    """Ctrl-C in the middle of a call: the key must not stay in flight (for every process sharing the store)
    until its lease runs out."""
    with client_for("groq", hostile.base("trickle-body"), LLM_REQUEST_TIMEOUT="10") as client, ctrl_c_raises():
        interrupt = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
        interrupt.start()
        with pytest.raises(KeyboardInterrupt):
            client.complete(USER_HELLO)
        interrupt.join()
        assert not client.key_manager.in_flight.busy()


_ONE_CALL = """
import sys
from llms import get_smart_client
client = get_smart_client()
print("calling", flush=True)
client.complete([{"role": "user", "content": "Hello"}])
"""


@pytest.mark.slow
@pytest.mark.parametrize("backend", DURABLE)
def test_a_worker_killed_mid_request_holds_its_key_for_seconds_not_minutes(
    sim: Simulator, tmp_path: Path, request: pytest.FixtureRequest, backend: str
) -> None:
    """The key is trusted for one request at a time (its reported window ended); a worker takes that slot and is
    killed -9 mid-request. Its lease used to hold the key for ~10 minutes for every process, while callers were
    told "none is cooling (1 available)". Now a live holder renews its lease every few seconds, so a dead one's
    slot frees within the lease's life (here 2 s, the worker's request timeout), and a caller meanwhile waits
    for it; a caller that cannot wait long enough is told the key is busy, and for how long."""
    url = STORE_BACKENDS[backend].url(request, tmp_path / "state.db")
    env = {
        **sim.env(),
        "GROQ_API_KEY_1": KEY["groq"],
        "LLM_STATE_URL": url,
        "LLM_STATE_PREFIX": f"dead-{tmp_path.name}",
    }
    sim.add_key("groq", KEY["groq"], "ok", "timeout", "ok", "timeout", limit=(1, 0.3), name="groq:1")
    with SmartClient(load_settings({**env, "LLM_REQUEST_TIMEOUT": "5"}, dotenv_path=None)) as client:
        client.complete(USER_HELLO)  # the key reports 0 left of its window (0.3 s): then one request at a time
        time.sleep(0.4)
        worker = subprocess.Popen(
            [PYTHON, "-c", _ONE_CALL], env=python_env(**env, LLM_REQUEST_TIMEOUT="2"), cwd=ROOT,
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert worker.stdout is not None and worker.stdout.readline().strip() == "calling"
            deadline = time.monotonic() + 5
            while sim.calls() < 2:  # the worker's request is hanging at the provider
                assert time.monotonic() < deadline
                time.sleep(0.02)
            worker.send_signal(signal.SIGKILL)
            worker.wait(5)
        finally:
            worker.kill()
        killed = time.monotonic()
        assert client.complete(USER_HELLO).key_id == "groq:1"  # waited for the dead worker's slot to free
        assert time.monotonic() - killed < 3.0
        time.sleep(0.4)  # the window it reported ended: one at a time again
        other = SmartClient(load_settings({**env, "LLM_REQUEST_TIMEOUT": "5"}, dotenv_path=None))
        holding = threading.Thread(target=other.complete, args=(USER_HELLO,))  # a live holder: hangs 3 s
        holding.start()
        try:
            while not other.key_manager.in_flight.busy():
                time.sleep(0.01)
            hurried = SmartClient(load_settings({**env, "LLM_REQUEST_TIMEOUT": "1"}, dotenv_path=None))
            with hurried, pytest.raises(AllKeysExhaustedError, match=r"busy with requests in flight; groq:1 has a"):
                hurried.complete(USER_HELLO)
        finally:
            holding.join(10)
            other.close()


def test_a_cancelled_awaited_call_frees_its_key_at_once(hostile: HostileServer) -> None:
    """A gateway caller that hangs up cancels the awaited call: the key must not stay in flight until its lease
    runs out."""
    with client_for("groq", hostile.base("trickle-body"), LLM_REQUEST_TIMEOUT="10") as client:

        async def hang_up() -> tuple[bool, bool]:
            call = asyncio.create_task(client.acomplete(USER_HELLO))
            await asyncio.sleep(0.5)
            during = client.key_manager.in_flight.busy()
            call.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await call
            await client.aclose_connections()
            return during, client.key_manager.in_flight.busy()

        assert asyncio.run(hang_up()) == (True, False)


# --- memory ----------------------------------------------------------------------------------------------------

_MEMORY_PROBE = textwrap.dedent(
    """
    import asyncio, json, resource, sys
    import aiohttp, google.genai
    from config.settings import load_settings
    from llms import SmartClient
    from llms.state.memory import MemoryStore
    provider, base, key, stream, awaited = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1", sys.argv[5] == "1"
    env = {f"{provider.upper()}_API_KEY_1": key, f"{provider.upper()}_BASE_URL": base, "LLM_REQUEST_TIMEOUT": "20"}
    client = SmartClient(load_settings(env, dotenv_path=None), store=MemoryStore())
    hi = [{"role": "user", "content": "hi"}]

    async def awaited_call():
        try:
            if stream:
                async for _ in client.achat_stream(hi):
                    pass
            else:
                await client.acomplete(hi)
        finally:
            await client.aclose_connections()

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        if awaited:
            asyncio.run(awaited_call())
        elif stream:
            for _ in client.chat_stream(hi):
                pass
        else:
            client.complete(hi)
        error = ""
    except Exception as exc:
        error = f"{type(exc).__name__}: " + "; ".join(a.message for a in getattr(exc, "attempts", ())) + str(exc)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"grew_mb": (after - before) / 1024, "error": error}))
    """
)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("provider", "behaviour", "stream", "awaited"),
    [
        ("groq", "gzip-bomb", False, False),
        ("groq", "huge-body", False, False),
        ("groq", "huge-pieces", True, False),
        ("gemini", "gzip-bomb", False, False),
        ("gemini", "huge-body", False, False),
        ("groq", "gzip-bomb", False, True),
        ("groq", "huge-body", False, True),
        ("groq", "huge-pieces", True, True),
    ],
)
def test_memory_stays_below_the_cap_plus_50_mb(
    hostile: HostileServer, provider: str, behaviour: str, stream: bool, awaited: bool
) -> None:
    flags = ["1" if stream else "0", "1" if awaited else "0"]
    args = [PYTHON, "-c", _MEMORY_PROBE, provider, hostile.base(behaviour), KEY[provider], *flags]
    done = subprocess.run(args, capture_output=True, text=True, env=python_env(), cwd=ROOT, timeout=120, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["grew_mb"] < 10 + 50, result
    assert "larger than 10,485,760 bytes" in result["error"], result


# --- hints -----------------------------------------------------------------------------------------------------


@pytest.fixture
def store(state_backend: Callable[[], StateStore]) -> StateStore:
    return state_backend()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("behaviour", "longest"), [("retry-after-huge", 86400.0), ("retry-after-overflow", 86400.0), ("reset-inf", 1.0)]
)
def test_absurd_hints_are_clamped_or_ignored_and_the_next_provider_answers(
    hostile: HostileServer, sim: Simulator, store: StateStore, behaviour: str, longest: float
) -> None:
    sim.add_key("gemini", KEY["gemini"])
    env = {"GEMINI_API_KEY_1": KEY["gemini"], "GEMINI_BASE_URL": sim.base_urls["gemini"]}
    env["LLM_PROVIDER_ORDER"] = "groq,gemini"
    with client_for("groq", hostile.base(behaviour), store, **env) as client:
        assert client.complete(USER_HELLO).provider == "gemini"
        key = client.key_manager.statuses("groq")[0]
        assert key.reason == "rate_limit" and 0 < key.cooldown_remaining <= longest + 1
        summary = client.get_status_summary()
        assert math.isfinite(summary["groq"]["keys"][0]["cooldown_until"])
        json.dumps(summary, allow_nan=False)


@pytest.mark.slow  # the policy's first rest (1 s) is within the pacing grace: the call waits it out once
def test_a_reset_in_the_past_is_no_hint_so_the_key_never_rests_zero_seconds(hostile: HostileServer) -> None:
    with client_for("groq", hostile.base("reset-past")) as client:
        with pytest.raises(AllKeysExhaustedError):
            client.complete(USER_HELLO)
        assert client.key_manager.statuses("groq")[0].cooldown_remaining > 0.5  # the adaptive policy's first rest


def test_a_success_that_claims_a_reset_in_1e300_seconds_rests_the_key_no_longer_than_the_maximum(
    hostile: HostileServer, store: StateStore
) -> None:
    with client_for("groq", hostile.base("remaining-zero-forever"), store) as client:
        assert client.complete(USER_HELLO).text == "hostile hello"
        assert 0 < client.key_manager.statuses("groq")[0].cooldown_remaining <= 86401


def test_a_malformed_usage_block_keeps_the_answer(hostile: HostileServer) -> None:
    with client_for("groq", hostile.base("bad-usage")) as client:
        result = client.complete(USER_HELLO)
        assert (result.text, result.usage.total_tokens) == ("kept", 0)


@pytest.mark.parametrize("behaviour", ["quote-key", "quote-key-middle"])
def test_a_provider_quoting_part_of_a_key_is_redacted(
    hostile: HostileServer, caplog: pytest.LogCaptureFixture, behaviour: str
) -> None:
    """Its start (`key[:22]`) or its middle (`key[6:-6]`): no run of 8 characters of a key is ever shown."""
    caplog.set_level(logging.DEBUG)
    with client_for("groq", hostile.base(behaviour)) as client:
        with pytest.raises(AllKeysExhaustedError) as caught:
            client.complete(USER_HELLO)
        checked = client.admin.check_key("groq:1")
        told = str(caught.value) + repr(client.get_status_summary()) + repr(client.admin.events()) + caplog.text
        told += checked.message + json.dumps(client.admin.checks())
        assert "Incorrect API key provided" in caplog.text
        secret = KEY["groq"]
        assert not any(secret[i : i + 8].lower() in told.lower() for i in range(len(secret) - 7))
        assert "gsk_…" in told


def test_the_exhausted_error_says_an_available_key_is_available(sim: Simulator) -> None:
    sim.add_key("groq", KEY["groq"], "server_error")
    with client_for("groq", sim.base_urls["groq"]) as client:
        with pytest.raises(AllKeysExhaustedError) as caught:
            client.complete(USER_HELLO)
        assert caught.value.retry_in == 0
        assert "none is cooling: they can be tried again now (1 available)" in str(caught.value)
        assert "manual reset" not in str(caught.value)


# --- clock steps ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_a_wall_clock_stepped_back_an_hour_leaves_a_7_66_s_rest_at_7_66_s(
    sim: Simulator, tmp_path: Path, backend: str
) -> None:
    """Kept against the wall clock, the step turned Groq's 7.66 s hint into a 3,607 s rest (and a step forward
    ended rests early). The client's clock reads the wall once and then counts elapsed time."""
    wall, elapsed = Clock(), Clock(0.0)
    sim.add_key("groq", KEY["groq"], "rate_limit")
    env = {"GROQ_API_KEY_1": KEY["groq"], **sim.env()}
    store = MemoryStore() if backend == "memory" else store_from_url(f"sqlite://{tmp_path / 's.db'}", failover=False)
    clock = SteadyClock(wall, elapsed)
    with SmartClient(load_settings(env, dotenv_path=None), store=store, clock=clock) as client:
        with pytest.raises(AllKeysExhaustedError):
            client.complete(USER_HELLO)
        # the rest counts from the 429's sending (a busy machine: 0.02 s)
        took = client.admin.request_log(1)[0]["latency_s"]
        rest = client.key_manager.statuses("groq")[0].cooldown_remaining
        assert rest == pytest.approx(7.66 + SLOT_MARGIN - took, abs=0.01)
        wall.advance(-3600)
        elapsed.advance(3.0)
        rest = client.key_manager.statuses("groq")[0].cooldown_remaining
        assert rest == pytest.approx(4.66 + SLOT_MARGIN - took, abs=0.01)
        wall.advance(7200)
        elapsed.advance(4.7)
        assert client.complete(USER_HELLO).key_id == "groq:1"


@pytest.mark.slow
@pytest.mark.parametrize("backend", DURABLE)
def test_a_process_started_after_a_clock_step_keeps_a_shared_rest_within_its_own_length(
    sim: Simulator, tmp_path: Path, request: pytest.FixtureRequest, backend: str
) -> None:
    """Process A cooled groq:1 for its window (about 1 s); process B started after the wall clock went back an
    hour, so by B's clock that rest ends an hour from now. B must rest the key no longer than the rest's own
    length (and not use it at once either)."""
    url = STORE_BACKENDS[backend].url(request, tmp_path / "s.db")
    env = {**sim.env(), "GROQ_API_KEY_1": SECRETS["groq"][0], "GROQ_API_KEY_2": SECRETS["groq"][1]}
    env |= {"LLM_STATE_URL": url, "LLM_STATE_PREFIX": f"step-{tmp_path.name}"}
    sim.add_key("groq", SECRETS["groq"][0], limit=(1, 1.0), name="groq:1")
    sim.add_key("groq", SECRETS["groq"][1], name="groq:2")
    settings = load_settings(env, dotenv_path=None)
    before, after = Clock(time.time()), Clock(time.time() - 3600)
    with SmartClient(settings, clock=before) as a, SmartClient(settings, clock=after) as b:
        assert [a.complete(USER_HELLO).key_id for _ in range(3)] == ["groq:1", "groq:2", "groq:2"]  # 429, next key
        rest = a.key_manager.statuses("groq")[0].cooldown_remaining
        assert 0 < rest <= 1.0 + SLOT_MARGIN
        assert b.complete(USER_HELLO).key_id == "groq:2"  # groq:1 still rests, by B's clock too
        assert 0 < b.key_manager.statuses("groq")[0].cooldown_remaining <= rest + 1.0  # not 3,600 s
        started = time.monotonic()
        while b.complete(USER_HELLO).key_id != "groq:1":
            after.advance(0.1)
            time.sleep(0.1)  # Redis's own clock counts its TTL
            assert time.monotonic() - started < rest + 2.5


# --- bad input fails before the network ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["data:image/png;base64,!!!not-base64!!!", "data:image/png;base64,", "data:text/html,x"]
)
def test_a_broken_image_is_a_value_error_before_any_key_is_spent(sim: Simulator, url: str) -> None:
    sim.add_key("gemini", KEY["gemini"])
    message = {
        "role": "user",
        "content": [{"type": "text", "text": "see"}, {"type": "image_url", "image_url": {"url": url}}],
    }
    with client_for("gemini", sim.base_urls["gemini"]) as client:
        with pytest.raises(ValueError, match=r"messages\[0\]\['content'\]\[1\]"):
            client.complete([message])
        assert sim.calls() == 0 and client.key_manager.statuses("gemini")[0].failures == 0


def _deep(levels: int) -> list[Any]:
    outer: list[Any] = []
    inner = outer
    for _ in range(levels):
        inner.append([])
        inner = inner[0]
    return outer


def _cyclic() -> dict[str, Any]:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    return loop


@pytest.mark.parametrize(
    ("message", "says"),
    [
        ({"role": "user", "content": "a lone \ud800 surrogate"}, "lone surrogate"),
        ({"role": "user", "content": [{"type": "text", "text": "\udfff"}]}, "lone surrogate"),
        ({"role": "user", "content": "hi", "name": "\ud83d"}, "lone surrogate"),
        ({"role": "user", "content": "hi", "name": {"a set"}}, "cannot be sent as JSON"),
        ({"role": "user", "content": "hi", "weight": math.nan}, "cannot be sent as JSON"),
        ({"role": "user", "content": "hi", "extra": _cyclic()}, "cannot be sent as JSON"),
        ({"role": "user", "content": "hi", "extra": _deep(100_000)}, "nested too deeply"),
    ],
)
@pytest.mark.parametrize("awaited", [False, True], ids=["blocking", "awaited"])
def test_a_request_that_cannot_be_encoded_fails_before_any_key_is_spent(
    sim: Simulator, message: dict[str, Any], says: str, awaited: bool
) -> None:
    """One such message used to go to every key as a transient failure: three of them rested the whole pool."""
    sim.add_key("groq", KEY["groq"])
    sim.add_key("openrouter", KEY["openrouter"])
    env = {"GROQ_API_KEY_1": KEY["groq"], "OPENROUTER_API_KEY_1": KEY["openrouter"], **sim.env()}
    with SmartClient(load_settings(env, dotenv_path=None), store=MemoryStore()) as client:
        for _ in range(4):
            with pytest.raises(ValueError, match=rf"messages\[1\].*{says}"):
                if awaited:
                    asyncio.run(client.acomplete([{"role": "system", "content": "be brief"}, message]))
                else:
                    client.complete([{"role": "system", "content": "be brief"}, message])
        assert sim.calls() == 0
        assert all(
            k.available and k.failures == 0 for p in ("groq", "openrouter") for k in client.key_manager.statuses(p)
        )
        assert client.complete(USER_HELLO).text


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("LLM_REQUEST_TIMEOUT", "1e10", "between more than 0 and 3600"),
        ("LLM_RATE_LIMIT_COOLDOWN", "1e308", "between more than 0 and 2.6784e+06"),
        ("LLM_PROBE_INTERVAL", "1e308", "between 0 and 604800"),
        ("LLM_REQUEST_TIMEOUT", "nan", "between"),
        ("GROQ_API_KEY_1", "gsk_abc\u200bdef", "U+200B at position 8"),
        ("LLM_STATE_URL", "redis://h:notaport/0", "port that is not a number"),
        ("LLM_STATE_URL", "redis://h:6379/abc", "database 'abc' that is not a number"),
        ("LLM_STATE_URL", "postgres://h/0", "must start with one of"),
        ("LLM_STATE_URL", "redis://:s3cret@h:notaport/0", "port"),
    ],
)
def test_settings_that_would_break_later_fail_now_naming_the_variable(name: str, value: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({name: value}, dotenv_path=None)
    assert name in str(caught.value) and says in str(caught.value)
    assert "s3cret" not in str(caught.value)


_OURS = [
    "LLM_REQUEST_TIMEOUT",
    "LLM_STREAM_MAX_SECONDS",
    "LLM_MAX_RESPONSE_BYTES",
    "LLM_RATE_LIMIT_COOLDOWN",
    "LLM_MAX_COOLDOWN",
    "LLM_ERROR_THRESHOLD",
    "LLM_PROBE_INTERVAL",
    "LLM_MAX_WAIT",
    "LLM_STATE_URL",
    "LLM_PROVIDER_ORDER",
    "LLM_COOLDOWN_POLICY",
    "LLM_DEMO",
    "GROQ_API_KEY_1",
    "GROQ_REQUESTS_PER_MINUTE",
    "GEMINI_BASE_URL",
]


@pytest.mark.slow  # 300 examples: a second or more
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(_OURS), st.text(max_size=40), max_size=6))
def test_any_settings_load_or_raise_config_error_only(env: dict[str, str]) -> None:
    with contextlib.suppress(ConfigError):
        load_settings(env, dotenv_path=None)


_TEXT = st.one_of(st.text(max_size=30), st.sampled_from(["1e308", "inf", "-1", "nan", "1e-400", "9" * 400, "1h"]))
_JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), _TEXT),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_TEXT, inner, max_size=4)),
    max_leaves=20,
)


@pytest.mark.slow
@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from(sorted(PROVIDERS)),
    st.integers(100, 599),
    st.dictionaries(st.sampled_from(["retry-after", "x-ratelimit-reset", "x-ratelimit-reset-tokens"]), _TEXT),
    st.one_of(
        _JSON,
        st.fixed_dictionaries({"error": _JSON}),
        st.fixed_dictionaries(
            {
                "error": st.dictionaries(
                    st.sampled_from(["code", "message", "metadata", "details", "status", "availability"]), _JSON
                )
            }
        ),
    ),
)
def test_no_answer_makes_a_classifier_raise(provider: str, status: int, headers: dict[str, str], body: Any) -> None:
    outcome = PROVIDERS[provider].classify(status, headers, body, 1_800_000_000.0)
    assert outcome.retry_after is None or outcome.retry_after >= 0


@given(_TEXT)
def test_hint_parsers_never_raise(text: str) -> None:
    for value in (parse_duration(text), message_hint(text), epoch_reset(text, 1e9)):
        assert value is None or (math.isfinite(value) and value >= 0)
    retry_after_header({"retry-after": text}, 1e9)
    error_message({"error": {"message": text}})


# --- Redis that restarts, fills up, or refuses us ------------------------------------------------------------------


@pytest.fixture
def own_redis(redis_server: RedisServer) -> Iterator[RedisServer]:
    """A redis-server of this test's own, which the test may restart."""
    server = RedisServer()
    server.start()
    yield server
    server.stop()


def test_calls_keep_working_across_a_redis_restart_and_a_flush(own_redis: RedisServer, sim: Simulator) -> None:
    sim.add_key("groq", KEY["groq"])
    store = store_from_url(own_redis.url, prefix="restart")
    with client_for("groq", sim.base_urls["groq"], store) as client:
        assert client.complete(USER_HELLO).provider == "groq"
        time.sleep(0.3)  # idle, as in the report
        own_redis.stop()
        own_redis.start()
        results = [client.complete(USER_HELLO).key_id for _ in range(20)]
        assert results == ["groq:1"] * 20
        redis.Redis.from_url(own_redis.url).flushall()
        assert client.complete(USER_HELLO).key_id == "groq:1"
        assert client.admin.store_health().healthy


def test_redis_out_of_memory_is_reported_as_such_and_no_call_fails(own_redis: RedisServer, sim: Simulator) -> None:
    sim.add_key("groq", KEY["groq"])
    store = store_from_url(own_redis.url, prefix="oom")
    with client_for("groq", sim.base_urls["groq"], store) as client:
        admin = redis.Redis.from_url(own_redis.url)
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", "1")
        assert client.complete(USER_HELLO).provider == "groq"
        health = client.admin.store_health()
        assert not health.healthy and "out of memory" in health.detail


@pytest.mark.slow
@pytest.mark.parametrize("breakage", ["sqlite-immutable", "redis-down", "redis-hung", "redis-out-of-memory"])
def test_disabled_and_parked_keys_stay_out_of_rotation_through_a_store_outage(
    breakage: str, sim: Simulator, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """An operator disabled groq:2, groq:3 is parked as invalid (both before this client started), groq:4 was
    disabled while it ran; then the store breaks. Disabled and parked keys used to get 10–33 requests within
    seconds, from local memory that knew nothing of them."""
    if breakage.startswith("sqlite"):
        url = f"sqlite://{tmp_path / 'state.db'}"
    else:
        url = request.getfixturevalue("own_redis").url
    secrets = SECRETS["groq"][:4]
    env = {**sim.env(), "LLM_STATE_URL": url, **{f"GROQ_API_KEY_{i + 1}": k for i, k in enumerate(secrets)}}
    for i, secret in enumerate(secrets):
        sim.add_key("groq", secret, *(["invalid_key"] if i == 2 else []), name=f"groq:{i + 1}")
    settings = load_settings(env, dotenv_path=None)

    def store() -> FailoverStore:
        return FailoverStore(store_from_url(url, failover=False), MemoryStore(), switches_every=0.2)

    with SmartClient(settings, store=store()) as operator, SmartClient(settings, store=store()) as client:
        operator.admin.disable_key("groq:2")
        assert operator.admin.check_key("groq:3").kind.value == "invalid_key"
        assert {client.complete(USER_HELLO).key_id for _ in range(4)} == {"groq:1", "groq:4"}
        operator.admin.disable_key("groq:4")
        time.sleep(0.3)  # another process's switch reaches this one within `switches_every`
        client.complete(USER_HELLO)
        with _broken(breakage, tmp_path, request):
            used = {client.complete(USER_HELLO).key_id for _ in range(12)}
            health = client.admin.store_health()
            assert not health.healthy and "local memory" in health.detail
        assert used == {"groq:1"}


@contextlib.contextmanager
def _broken(breakage: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[None]:
    if breakage == "sqlite-immutable":
        files = [str(tmp_path / "state.db"), str(tmp_path / "state.db-wal")]
        subprocess.run(["chattr", "+i", *files], check=True)  # root on ext4, as CI runs; fails loudly otherwise
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", *files], check=True)
        return
    server: RedisServer = request.getfixturevalue("own_redis")
    assert server.process is not None
    if breakage == "redis-down":
        server.stop()
        yield
    elif breakage == "redis-hung":
        server.process.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            server.process.send_signal(signal.SIGCONT)
    else:
        admin = redis.Redis.from_url(server.url)
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", "1")
        yield
        admin.config_set("maxmemory", "0")


def test_redis_wrong_db_and_wrong_password_are_named(own_redis: RedisServer) -> None:
    wrong_db = store_from_url(own_redis.url.rsplit("/", 1)[0] + "/99", failover=False)
    assert "DB index out of range" in wrong_db.health().detail
    wrong_db.close()
    redis.Redis.from_url(own_redis.url).config_set("requirepass", "right-one")
    refused = store_from_url(own_redis.url.replace("redis://", "redis://:wrong-one@"), failover=False)
    assert "authentication failed" in refused.health().detail
    assert "wrong-one" not in refused.health().location
    refused.close()


def test_a_redis_password_with_reserved_characters_works_and_is_never_shown(
    own_redis: RedisServer, sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    """Unencoded '#', '/', '?' and '@' used to end the host early: the password was printed whole at start-up."""
    password = "pa#ss/wo?rd@x"
    redis.Redis.from_url(own_redis.url).config_set("requirepass", password)
    url = own_redis.url.replace("redis://", f"redis://:{password}@")
    webhook = "https://hooks.example.invalid/services/T0/B0/WEBHOOKSECRET"
    settings = load_settings({"LLM_STATE_URL": url, "LLM_ALERT_WEBHOOK": webhook}, dotenv_path=None)
    told = repr(settings) + str(settings)
    sim.add_key("groq", KEY["groq"])
    caplog.set_level(logging.DEBUG)
    with client_for("groq", sim.base_urls["groq"], store_from_url(settings.state_url, failover=False)) as client:
        assert client.complete(USER_HELLO).provider == "groq"
        health = client.admin.store_health()
        assert health.healthy
        told += repr(health)
    with pytest.raises(ConfigError) as malformed:
        load_settings({"LLM_STATE_URL": url.replace(f":{own_redis.port}", ":port")}, dotenv_path=None)
    told += str(malformed.value) + caplog.text
    assert "LLM_STATE_URL" in str(malformed.value)
    for fragment in ("pa#ss", "ss/wo", "wo?rd", "rd@x", "pa%23ss", "WEBHOOKSECRET"):
        assert fragment not in told


class _ForwardProxy(http.server.BaseHTTPRequestHandler):
    """A plain HTTP forward proxy: takes `POST http://host/path` and passes it on, noting each target it was sent."""

    targets: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        self.targets.append(self.path)
        target = urllib.parse.urlsplit(self.path)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        upstream = http.client.HTTPConnection(target.netloc, timeout=5)
        hop = {"connection", "proxy-connection", "keep-alive", "host"}
        upstream.request("POST", target.path, body, {k: v for k, v in self.headers.items() if k.lower() not in hop})
        answer = upstream.getresponse()
        data = answer.read()
        self.send_response(answer.status)
        for name, value in answer.getheaders():
            if name.lower() not in hop | {"transfer-encoding", "content-length"}:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_: Any) -> None:
        pass


def test_calls_go_through_the_proxy_the_environment_names(sim: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ForwardProxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        for name in ("NO_PROXY", "no_proxy", "http_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.server_address[1]}")
        sim.add_key("groq", KEY["groq"])
        with client_for("groq", sim.base_urls["groq"]) as client:
            assert client.complete(USER_HELLO).provider == "groq"
        assert _ForwardProxy.targets == [f"{sim.base_urls['groq']}/chat/completions"]
    finally:
        proxy.shutdown()
        proxy.server_close()


def test_proxy_settings_are_read_once_per_endpoint_and_honour_no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    from llms.transport import HttpPool

    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert HttpPool("https://api.groq.com/openai/v1").proxy == "http://proxy.internal:3128"
    assert HttpPool("https://127.0.0.1:8765/groq").proxy is None
    monkeypatch.delenv("HTTPS_PROXY")
    monkeypatch.delenv("https_proxy", raising=False)
    monkeypatch.setenv("ALL_PROXY", "http://all.internal:8080")
    assert HttpPool("https://api.groq.com/openai/v1").proxy == "http://all.internal:8080"
    monkeypatch.setenv("ALL_PROXY", "socks5://user:secret@socks.internal:1080")
    with pytest.raises(ValueError, match="socks5 proxy") as refused:
        HttpPool("https://api.groq.com/openai/v1")
    assert "secret" not in str(refused.value)
