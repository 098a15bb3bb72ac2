"""The providers as their docs and users' posted answers describe them (docs/providers.md, "Provider facts").

The classifier rows read the recorded wire examples in simulator/wire/ (the same files the simulator sends);
the client rows drive those answers over HTTP, on every state backend where state matters.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from conftest import SECRETS, USER_HELLO, MakeClient, clear_of_a_minutes_end

from dashboard.status import summarize, summary_table
from dashboard.text import pause_text, reason_text
from llms import ChatResult, RequestRejectedError, SmartClient
from llms.outcomes import OutcomeKind, Scope
from llms.providers import PROVIDERS
from llms.providers.gemini import API_VERSION, PACIFIC
from llms.providers.gemini_translate import thinking
from llms.wire import seconds_until_midnight, seconds_until_next_month
from simulator.core import wire_example, wire_examples

NOW = 1_800_000_000.0
MODEL = "test/model"

#: (provider, example) → (kind, scope, daily quota, another provider may serve)
ROWS = {
    ("openrouter", "upstream_rate_limit"): (OutcomeKind.RATE_LIMIT, Scope.UPSTREAM, False, False),
    ("openrouter", "free_models_per_day"): (OutcomeKind.RATE_LIMIT, Scope.ACCOUNT, True, False),
    ("openrouter", "free_models_per_min"): (OutcomeKind.RATE_LIMIT, Scope.KEY, False, False),
    ("openrouter", "rate_limit_in_200"): (OutcomeKind.RATE_LIMIT, Scope.UPSTREAM, False, False),
    ("openrouter", "error_in_choice"): (OutcomeKind.TRANSIENT, Scope.UPSTREAM, False, False),
    ("openrouter", "stream_error_event"): (OutcomeKind.RATE_LIMIT, Scope.UPSTREAM, False, False),
    ("openrouter", "mid_stream_error"): (OutcomeKind.TRANSIENT, Scope.UPSTREAM, False, False),
    ("openrouter", "insufficient_credits"): (OutcomeKind.NO_CREDITS, Scope.ACCOUNT, False, False),
    ("openrouter", "needs_fewer_tokens"): (OutcomeKind.REQUEST_ERROR, Scope.KEY, False, True),
    ("openrouter", "key_limit"): (OutcomeKind.NO_CREDITS, Scope.KEY, False, False),
    ("openrouter", "guardrail"): (OutcomeKind.REQUEST_ERROR, Scope.KEY, False, True),
    ("openrouter", "moderation"): (OutcomeKind.REQUEST_ERROR, Scope.KEY, False, True),
    ("openrouter", "invalid_key"): (OutcomeKind.INVALID_KEY, Scope.KEY, False, False),
    ("openrouter", "no_tool_endpoints"): (OutcomeKind.REQUEST_ERROR, Scope.KEY, False, True),
    ("openrouter", "provider_error_429"): (OutcomeKind.RATE_LIMIT, Scope.UPSTREAM, False, False),
    ("openrouter", "no_available_provider"): (OutcomeKind.TRANSIENT, Scope.UPSTREAM, False, False),
    ("openrouter", "weight_exceeds_budget"): (OutcomeKind.REQUEST_ERROR, Scope.KEY, False, True),
    ("openrouter", "in_flight_budget"): (OutcomeKind.RATE_LIMIT, Scope.ACCOUNT, False, False),
    ("openrouter", "key_budget_limit"): (OutcomeKind.NO_CREDITS, Scope.KEY, False, False),
    ("groq", "rate_limit_rpm"): (OutcomeKind.RATE_LIMIT, Scope.MODEL, False, False),
    ("groq", "rate_limit_tpm"): (OutcomeKind.RATE_LIMIT, Scope.MODEL, False, False),
    ("groq", "rate_limit_tpd"): (OutcomeKind.RATE_LIMIT, Scope.MODEL, True, False),
    ("groq", "spend_cap"): (OutcomeKind.SPEND_CAP, Scope.ACCOUNT, False, False),
    ("groq", "spend_cap_documented"): (OutcomeKind.SPEND_CAP, Scope.ACCOUNT, False, False),
    ("groq", "flex_capacity"): (OutcomeKind.TRANSIENT, Scope.KEY, False, False),
    ("groq", "request_too_large"): (OutcomeKind.REQUEST_ERROR, Scope.KEY, False, True),
    ("groq", "output_too_large"): (OutcomeKind.REQUEST_ERROR, Scope.KEY, False, True),
    ("groq", "model_decommissioned"): (OutcomeKind.REQUEST_ERROR, Scope.KEY, False, True),
    ("groq", "invalid_key"): (OutcomeKind.INVALID_KEY, Scope.KEY, False, False),
    ("groq", "network_blocked"): (OutcomeKind.TRANSIENT, Scope.PROVIDER, False, False),
    ("groq", "json_schema_unsupported"): (OutcomeKind.REQUEST_ERROR, Scope.KEY, False, True),
    ("gemini", "rate_limit_daily"): (OutcomeKind.RATE_LIMIT, Scope.MODEL, True, False),
    ("gemini", "rate_limit_minute"): (OutcomeKind.RATE_LIMIT, Scope.MODEL, False, False),
    ("gemini", "quota_no_details"): (OutcomeKind.RATE_LIMIT, Scope.ACCOUNT, False, False),
    ("gemini", "exhausted_bare"): (OutcomeKind.RATE_LIMIT, Scope.UPSTREAM, False, False),
    ("gemini", "no_quota"): (OutcomeKind.NO_ACCESS, Scope.MODEL, False, False),
    ("gemini", "prepay_depleted"): (OutcomeKind.NO_CREDITS, Scope.ACCOUNT, False, False),
    ("gemini", "location_unsupported"): (OutcomeKind.NO_ACCESS, Scope.ACCOUNT, False, False),
    ("gemini", "invalid_key"): (OutcomeKind.INVALID_KEY, Scope.KEY, False, False),
    ("gemini", "leaked_key"): (OutcomeKind.INVALID_KEY, Scope.KEY, False, False),
    ("gemini", "overloaded"): (OutcomeKind.TRANSIENT, Scope.UPSTREAM, False, False),
    ("gemini", "model_withdrawn"): (OutcomeKind.REQUEST_ERROR, Scope.KEY, False, True),
    ("gemini", "missing_thought_signature"): (OutcomeKind.REQUEST_ERROR, Scope.KEY, False, True),
    ("gemini", "unknown_call_id"): (OutcomeKind.REQUEST_ERROR, Scope.KEY, False, True),
    ("gemini", "function_calling_not_enabled"): (OutcomeKind.REQUEST_ERROR, Scope.KEY, False, True),
    ("cerebras", "invalid_key"): (OutcomeKind.INVALID_KEY, Scope.KEY, False, False),
    ("cerebras", "no_auth"): (OutcomeKind.INVALID_KEY, Scope.KEY, False, False),
    ("cerebras", "rate_limit_rpm"): (OutcomeKind.RATE_LIMIT, Scope.MODEL, False, False),
    ("cerebras", "rate_limit_tpd"): (OutcomeKind.RATE_LIMIT, Scope.MODEL, True, False),
    ("cerebras", "queue_exceeded"): (OutcomeKind.RATE_LIMIT, Scope.UPSTREAM, False, False),
    ("cerebras", "payment_required"): (OutcomeKind.NO_CREDITS, Scope.ACCOUNT, False, False),
    ("cerebras", "model_not_found"): (OutcomeKind.REQUEST_ERROR, Scope.KEY, False, True),
    ("mistral", "invalid_key"): (OutcomeKind.INVALID_KEY, Scope.KEY, False, False),
    ("mistral", "unauthorized"): (OutcomeKind.INVALID_KEY, Scope.KEY, False, False),
    ("mistral", "rate_limit"): (OutcomeKind.RATE_LIMIT, Scope.KEY, False, False),
    ("mistral", "rate_limit_old"): (OutcomeKind.RATE_LIMIT, Scope.KEY, False, False),
    ("mistral", "monthly_tokens"): (OutcomeKind.RATE_LIMIT, Scope.KEY, True, False),
    ("mistral", "capacity"): (OutcomeKind.RATE_LIMIT, Scope.UPSTREAM, False, False),
    ("mistral", "invalid_model"): (OutcomeKind.REQUEST_ERROR, Scope.KEY, False, True),
    ("mistral", "extra_inputs"): (OutcomeKind.REQUEST_ERROR, Scope.KEY, False, True),
    ("deepseek", "invalid_key"): (OutcomeKind.INVALID_KEY, Scope.KEY, False, False),
    ("deepseek", "insufficient_balance"): (OutcomeKind.NO_CREDITS, Scope.ACCOUNT, False, False),
    ("deepseek", "model_not_exist"): (OutcomeKind.REQUEST_ERROR, Scope.KEY, False, True),
    ("deepseek", "context_length"): (OutcomeKind.REQUEST_ERROR, Scope.KEY, False, True),
    ("deepseek", "content_risk"): (OutcomeKind.REQUEST_ERROR, Scope.KEY, False, True),
    ("deepseek", "rate_limit"): (OutcomeKind.RATE_LIMIT, Scope.MODEL, False, False),
    ("deepseek", "overloaded"): (OutcomeKind.TRANSIENT, Scope.UPSTREAM, False, False),
    ("ollama", "model_not_found"): (OutcomeKind.REQUEST_ERROR, Scope.KEY, False, True),
    ("ollama", "server_busy"): (OutcomeKind.TRANSIENT, Scope.UPSTREAM, False, False),
    ("vllm", "unauthorized"): (OutcomeKind.INVALID_KEY, Scope.KEY, False, False),
    ("vllm", "model_not_found"): (OutcomeKind.REQUEST_ERROR, Scope.KEY, False, True),
    ("vllm", "context_length"): (OutcomeKind.REQUEST_ERROR, Scope.KEY, False, True),
}
VALUES = {"model": MODEL, "org": "org_test", "label": "sk-or-v1-abc...xyz", "limit": 20, "delay": "36s"}
VALUES |= {"reset_ms": int((NOW + 42) * 1000), "midnight_ms": int((NOW + seconds_until_midnight(UTC, NOW)) * 1000)}


def test_every_recorded_error_example_has_a_classification_row() -> None:
    recorded = {(p, name) for p in PROVIDERS for name, ex in wire_examples(p).items() if _is_error(p, ex)}
    assert recorded == set(ROWS)


def _is_error(provider: str, example: dict) -> bool:
    body = example["body"]
    return example["status"] != 200 or "error" in body or 'finish_reason": "error' in json.dumps(body)


@pytest.mark.parametrize(("provider", "name"), sorted(ROWS))
def test_recorded_answers_classify_as_documented(provider: str, name: str) -> None:
    status, headers, body = wire_example(provider, name, **VALUES)
    outcome = PROVIDERS[provider].classify(status, headers, body, NOW)
    kind, scope, daily, elsewhere = ROWS[provider, name]
    assert (outcome.kind, outcome.scope, outcome.daily_quota) == (kind, scope, daily)
    assert outcome.other_provider_may_serve is elsewhere


def test_hints_read_from_the_recorded_answers() -> None:
    def hint(provider: str, name: str) -> float | None:
        return PROVIDERS[provider].classify(*wire_example(provider, name, **VALUES), NOW).retry_after

    assert hint("openrouter", "free_models_per_day") == pytest.approx(seconds_until_midnight(UTC, NOW), abs=1)
    assert hint("openrouter", "free_models_per_min") == pytest.approx(42, abs=0.01)
    assert hint("openrouter", "rate_limit_in_200") == pytest.approx(42, abs=0.01)
    assert hint("openrouter", "in_flight_budget") == 7
    assert hint("groq", "rate_limit_tpm") == pytest.approx(0.8175)
    assert hint("groq", "rate_limit_tpd") == pytest.approx(4504.753)
    assert hint("groq", "spend_cap") == pytest.approx(seconds_until_next_month(UTC, NOW))
    # A per-day violation wins over RetryInfo's 51 s: the key rests until midnight Pacific.
    assert hint("gemini", "rate_limit_daily") == pytest.approx(seconds_until_midnight(PACIFIC, NOW))
    assert hint("gemini", "rate_limit_minute") == 36
    assert hint("gemini", "quota_no_details") == 600  # a spend-based window is 10 rolling minutes: no 1 s ladder
    assert hint("gemini", "exhausted_bare") is None  # shared capacity: the model pauses LLM_STORM_COOLDOWN


def test_a_reset_on_the_minute_says_the_window_turns_on_the_clock() -> None:
    """OpenRouter's per-minute free limit names its reset on a whole minute in every 429 users posted: its window
    turns on the clock (`Outcome.grid`), where a sliding log's oldest request would free at any millisecond."""

    def grid(name: str, reset_ms: int) -> float | None:
        values = VALUES | {"reset_ms": reset_ms, "midnight_ms": reset_ms}
        return PROVIDERS["openrouter"].classify(*wire_example("openrouter", name, **values), NOW).grid

    assert grid("free_models_per_min", 1765680060000) == 60.0  # as posted: 2025-12-14 02:41:00 UTC
    assert grid("free_models_per_min", 1765680061000) == 1.0  # a whole second: turning each second, at most
    assert grid("free_models_per_min", 1765680060123) is None  # a sliding log's moment
    assert grid("free_models_per_day", 1765670400000) is None  # midnight: the day's quota, not a window


def test_a_wait_that_ends_on_the_minute_says_the_window_may_turn_on_the_clock() -> None:
    """Groq and Gemini name their waits as durations from when they read the limit ("Please try again in 2s",
    RetryInfo "36s"): the moment that wait ends, on the provider's clock, lies on a round grid (within
    `MOMENT_SPREAD`) where the window turns on the clock, and anywhere where a sliding log's oldest request frees.
    Groq's whole-second `retry-after` header alone is too coarse to place it; a day's quota is no window."""
    minute = 1765680060.0  # OpenRouter's posted reset: a whole minute, not two

    def grid(provider: str, name: str, read_at: float) -> float | None:
        return PROVIDERS[provider].classify(*wire_example(provider, name, **VALUES), read_at).grid

    assert grid("groq", "rate_limit_rpm", minute - 2.0) == 60.0  # "try again in 2s"
    assert grid("groq", "rate_limit_rpm", minute - 2.015) == 60.0  # read 15 ms off: a trip's spread
    assert grid("groq", "rate_limit_rpm", minute - 2.5) is None  # ends half a second off any second
    assert grid("groq", "rate_limit_tpd", minute - 4504.753) is None  # the day's tokens
    assert grid("gemini", "rate_limit_minute", minute - 36.0) == 60.0
    assert grid("gemini", "rate_limit_minute", minute - 35.0) == 1.0  # a whole second: turning each second, at most
    assert grid("gemini", "rate_limit_daily", minute - 51.606482386) is None
    status, headers, body = wire_example("groq", "rate_limit_rpm", **VALUES)
    body["error"]["message"] = body["error"]["message"].replace("Please try again in 2s. ", "")
    assert PROVIDERS["groq"].classify(status, headers, body, minute - 2.0).grid is None  # `retry-after: 2` alone


def test_the_original_status_loop_runs_verbatim_and_the_summary_is_plain_data(make_client: MakeClient) -> None:
    clear_of_a_minutes_end(2.0)  # OpenRouter's rest ends at the next whole minute
    client = make_client({"openrouter": 2, "groq": 1}, steps={"openrouter:1": ["rate_limit"]})
    client.chat(USER_HELLO)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = client.get_status_summary()
        for provider, info in status.items():
            if provider != 'timestamp':  # fmt: skip
                print(f"{provider}: {info['available']}/{info['total']} available")
    assert out.getvalue().splitlines() == ["openrouter: 1/2 available", "groq: 1/1 available", "gemini: 0/0 available"]
    decoded = json.loads(json.dumps(status))
    assert decoded["openrouter"]["keys"][0]["reason"] == "rate_limit"
    assert client.admin.store_health().healthy


# --- OpenRouter over HTTP --------------------------------------------------------------------------------------


WIRE_PATHS = ["blocking", "awaited"]
FREE = "openai/gpt-oss-20b:free"  # OpenRouter's default model


def _answer(client: SmartClient, wire: str, **options: Any) -> ChatResult:
    """One request through the blocking path (`complete`, urllib3) or the awaited one (`acomplete`, aiohttp)."""
    if wire == "blocking":
        return client.complete(USER_HELLO, **options)

    async def awaited() -> ChatResult:
        try:
            return await client.acomplete(USER_HELLO, **options)
        finally:
            await client.aclose_connections()

    return asyncio.run(awaited())


def _model_pause(client: SmartClient) -> float:
    """Seconds OpenRouter's default model rests for every key (0: it does not)."""
    pause = client.key_manager.provider_pause("openrouter", FREE)
    return pause[0] - time.time() if pause else 0.0


@pytest.mark.parametrize("wire", WIRE_PATHS)
@pytest.mark.parametrize(
    ("step", "rest"), [("rate_limit_in_200", 60), ("error_in_choice", 10), ("provider_error_429", 10)]
)
def test_an_upstream_error_rests_the_model_not_the_key(
    make_client: MakeClient, sim, wire: str, step: str, rest: int
) -> None:
    """Item 2: an error inside a 200, or a 429 whose only sign is the upstream's name, is the (provider, model)'s:
    no other OpenRouter key is tried, no key rests or counts a failure, the model pauses for the hint (60 s from
    the recorded X-RateLimit-Reset) or LLM_STORM_COOLDOWN (10 s), and nothing is learned as the key's window."""
    client = make_client({"openrouter": 2, "groq": 1}, steps={"openrouter:1": [step]})
    result = _answer(client, wire)
    assert result.provider == "groq" and sim.calls("openrouter:2") == 0
    keys = client.key_manager.statuses("openrouter")
    assert all(k.available and not k.consecutive_failures and not k.models for k in keys)
    assert rest - 2 < _model_pause(client) <= rest + 1
    assert client.key_manager.provider_pause("openrouter") is None  # other models of OpenRouter still answer
    fingerprints = [k.fingerprint for k in client.key_manager.keys("openrouter")]
    assert not any(client.key_manager.document(f"{kind}/{f}") for f in fingerprints for kind in ("slots", "pace"))


@pytest.mark.parametrize("wire", WIRE_PATHS)
def test_an_error_event_before_any_text_fails_the_stream_over_to_another_provider(
    make_client: MakeClient, sim, wire: str
) -> None:
    client = make_client({"openrouter": 2, "groq": 1}, steps={"openrouter:1": ["rate_limit_in_200"]})
    if wire == "blocking":
        stream = client.chat_stream(USER_HELLO)
        text = "".join(stream)
        result = stream.result
    else:

        async def awaited() -> tuple[str, ChatResult | None]:
            try:
                pieces = client.achat_stream(USER_HELLO)
                return "".join([p async for p in pieces]), pieces.result
            finally:
                await client.aclose_connections()

        text, result = asyncio.run(awaited())
    assert text.startswith("Simulated groq reply") and result is not None and result.provider == "groq"
    assert sim.calls("openrouter:2") == 0
    assert all(k.available and not k.consecutive_failures for k in client.key_manager.statuses("openrouter"))
    assert 8 < _model_pause(client) <= 11  # the stream event names no reset: LLM_STORM_COOLDOWN


@pytest.mark.parametrize("wire", WIRE_PATHS)
def test_no_available_provider_pauses_the_model_briefly_and_cools_no_key(
    make_client: MakeClient, sim, wire: str
) -> None:
    """Item 8: 503 "no available model provider" meets every key alike: the model pauses for
    LLM_STORM_COOLDOWN, the request moves on, no key is tried into it or rests."""
    client = make_client({"openrouter": 3, "groq": 1}, steps={"openrouter:1": ["no_provider"]})
    assert _answer(client, wire).provider == "groq"
    assert (sim.calls("openrouter:2"), sim.calls("openrouter:3")) == (0, 0)
    assert all(k.available and not k.consecutive_failures for k in client.key_manager.statuses("openrouter"))
    assert 8 < _model_pause(client) <= 11


def test_an_upstream_429_rests_openrouter_and_burns_no_other_key(make_client: MakeClient, sim) -> None:
    client = make_client({"openrouter": 3, "groq": 1}, steps={"openrouter:1": ["upstream_rate_limit"]})
    result = client.complete(USER_HELLO)
    assert result.provider == "groq"
    assert (sim.calls("openrouter:1"), sim.calls("openrouter:2"), sim.calls("openrouter:3")) == (1, 0, 0)
    assert all(k.available for k in client.key_manager.statuses("openrouter"))  # no key was parked
    status = next(s for s in client.admin.provider_statuses() if s.provider == "openrouter")
    assert (status.available, status.pause_reason) == (0, "upstream")
    assert pause_text(status, time.time()).startswith("OpenRouter model busy upstream — back in")
    assert client.complete(USER_HELLO).provider == "groq"  # while the pause lasts, OpenRouter is not tried
    assert sim.calls("openrouter:2") == 0
    client.reset_provider("openrouter")
    assert client.complete(USER_HELLO).provider == "openrouter"


def test_free_models_per_day_rests_the_key_until_utc_midnight(make_client: MakeClient) -> None:
    client = make_client({"openrouter": 2}, steps={"openrouter:1": ["rate_limit_daily"]})
    client.complete(USER_HELLO)
    first = client.key_manager.statuses("openrouter")[0]
    assert first.cooldown_remaining == pytest.approx(seconds_until_midnight(UTC, time.time()), abs=3)


@pytest.mark.parametrize("wire", WIRE_PATHS)
@pytest.mark.parametrize("step", ["needs_fewer_tokens", "over_budget"])
def test_a_request_too_expensive_for_the_budget_goes_to_the_next_provider_and_parks_nothing(
    make_client: MakeClient, sim, wire: str, step: str
) -> None:
    """Item 3: 402 weight_exceeds_budget / "can only afford N" is this request's: no key or account rests."""
    client = make_client({"openrouter": 2, "groq": 1}, steps={"openrouter:1": [step]})
    result = _answer(client, wire, max_tokens=64000)
    assert result.provider == "groq" and [a.kind for a in result.skipped] == [OutcomeKind.REQUEST_ERROR]
    assert sim.calls("openrouter:2") == 0
    assert all(k.available and not k.consecutive_failures for k in client.key_manager.statuses("openrouter"))
    assert _model_pause(client) == 0


ACCOUNT = {"OPENROUTER_API_KEY_1_GROUP": "acct", "OPENROUTER_API_KEY_2_GROUP": "acct"}


@pytest.mark.parametrize("wire", WIRE_PATHS)
def test_a_full_in_flight_budget_rests_the_account_for_its_retry_after(make_client: MakeClient, sim, wire: str) -> None:
    """Item 3: 402 openrouter_in_flight_budget is the account's and temporary: its keys rest for Retry-After (7 s),
    not a day; a key of another account answers."""
    client = make_client({"openrouter": 3}, steps={"openrouter:1": ["in_flight_budget"]}, **ACCOUNT)
    assert _answer(client, wire).key_id == "openrouter:3" and sim.calls("openrouter:2") == 0
    first, second, third = client.key_manager.statuses("openrouter")
    assert all(k.reason == "rate_limit" and 5 < k.cooldown_remaining <= 7.5 for k in (first, second))
    assert third.available


@pytest.mark.parametrize("wire", WIRE_PATHS)
def test_insufficient_credits_parks_the_whole_account(make_client: MakeClient, sim, wire: str) -> None:
    """Item 3: 402 "Insufficient credits" (openrouter_credits) is the account's balance: every key of its group."""
    client = make_client({"openrouter": 3}, steps={"openrouter:1": ["no_credits"]}, **ACCOUNT)
    assert _answer(client, wire).key_id == "openrouter:3" and sim.calls("openrouter:2") == 0
    first, second, third = client.key_manager.statuses("openrouter")
    assert all(k.reason == "no_credits" and k.cooldown_remaining > 23 * 3600 for k in (first, second))
    assert third.available


@pytest.mark.parametrize("wire", WIRE_PATHS)
@pytest.mark.parametrize("step", ["key_limit", "key_budget"])
def test_the_keys_own_credit_cap_parks_that_key_only(make_client: MakeClient, wire: str, step: str) -> None:
    """Item 3: the key's own cap (403 "Key limit exceeded", limit_source openrouter_key_limit) is not the group's."""
    client = make_client({"openrouter": 2}, steps={"openrouter:1": [step]}, **ACCOUNT)
    assert _answer(client, wire).key_id == "openrouter:2"
    first, second = client.key_manager.statuses("openrouter")
    assert first.reason == "no_credits" and first.cooldown_remaining > 23 * 3600 and second.available


def test_a_guardrail_block_is_the_requests_fault(make_client: MakeClient) -> None:
    client = make_client({"openrouter": 2}, steps={"openrouter:1": ["guardrail"]})
    with pytest.raises(RequestRejectedError, match="prompt injection"):
        client.complete(USER_HELLO)
    assert all(k.available for k in client.key_manager.statuses("openrouter"))


@pytest.mark.parametrize("wire", WIRE_PATHS)
def test_a_probe_revives_a_key_parked_for_its_own_cap_but_not_for_the_accounts_credit(
    make_client: MakeClient, sim, wire: str
) -> None:
    """Item 4: `GET /key` shows the key's own cap (`limit_remaining`), never the account's balance (`/credits`
    needs a management key): an OK probe brings back a key parked for its cap, and leaves a key parked for the
    account's "Insufficient credits" parked until its cooldown ends."""
    client = make_client({"openrouter": 3}, steps={"openrouter:1": ["no_credits"], "openrouter:2": ["key_limit"]})
    assert _answer(client, wire).key_id == "openrouter:3"
    assert _answer(client, wire).key_id == "openrouter:3"  # openrouter:2 met its cap on the way
    outcome = client.admin.check_key("openrouter:1")  # 200, limit_remaining null: says nothing of the balance
    assert outcome.kind is OutcomeKind.OK and sim.requests[-1].path.endswith("/key")
    first = client.key_manager.statuses("openrouter")[0]
    assert first.reason == "no_credits" and first.cooldown_remaining > 23 * 3600
    sim.set_steps(SECRETS["openrouter"][1], "no_credits")  # GET /key: limit_remaining 0, the cap is still spent
    assert client.admin.check_key("openrouter:2").kind is OutcomeKind.NO_CREDITS
    assert client.key_manager.statuses("openrouter")[1].reason == "no_credits"
    assert client.admin.check_key("openrouter:2").kind is OutcomeKind.OK  # the cap has room again
    assert client.key_manager.statuses("openrouter")[1].available
    assert sim.calls("openrouter:1") == 2  # the account-parked key was probed, never asked to answer again


@pytest.mark.parametrize("wire", WIRE_PATHS)
def test_the_probe_reads_free_requests_left_and_rests_the_account_before_the_daily_429(
    make_client: MakeClient, sim, wire: str
) -> None:
    """Item 1: `free_model_daily_requests` (account-wide, UTC day) read by a probe: with none left the account's
    keys rest until UTC midnight (no request meets the daily 429); the status shows the
    requests left and the learned daily limit."""
    client = make_client({"openrouter": 3, "groq": 1}, steps={"openrouter:1": ["free_daily_spent"]}, **ACCOUNT)
    outcome = client.admin.check_key("openrouter:1")
    assert (outcome.kind, outcome.status, outcome.daily_quota) == (OutcomeKind.RATE_LIMIT, 200, True)
    midnight = seconds_until_midnight(UTC, time.time())
    first, second, third = client.key_manager.statuses("openrouter")
    for key in (first, second):  # as the daily 429 would: every model (the docs: account-wide, all :free models)
        assert key.reason == "rate_limit" and key.cooldown_remaining == pytest.approx(midnight, abs=3)
    assert third.available
    assert client.admin.check_key("openrouter:3").kind is OutcomeKind.OK  # its own account: 50 of 50 left
    calls = sim.calls("openrouter:1") + sim.calls("openrouter:2")
    assert _answer(client, wire).key_id == "openrouter:3"
    assert sim.calls("openrouter:1") + sim.calls("openrouter:2") == calls  # the spent account is not asked
    daily = client.get_status_summary()["openrouter"]["daily_requests"]
    assert daily == {"remaining": 50, "limit": 100, "accounts": 2}


def test_start_up_reads_free_requests_left_once_per_account(make_client: MakeClient, sim) -> None:
    """Item 1: with background probes on, start-up reads `GET /key` once per account (not per call, not per key),
    so the Status page shows the requests left and the learned daily limit before any request is made."""
    client = make_client({"openrouter": 3}, LLM_PROBE_INTERVAL="3600", **ACCOUNT)
    deadline = time.monotonic() + 5
    while client.get_status_summary()["openrouter"]["daily_requests"] != {
        "remaining": 100,
        "limit": 100,
        "accounts": 2,
    }:
        assert time.monotonic() < deadline, client.get_status_summary()["openrouter"]["daily_requests"]
        time.sleep(0.02)
    probes = [r.key_name for r in sim.requests if r.path.endswith("/key")]
    assert sorted(probes) == ["openrouter:1", "openrouter:3"]
    row = summary_table([summarize(client.admin.provider_statuses()[0], time.time())])
    assert "📅 100/100 free-model requests left today (2 accounts)" in row


# --- Groq over HTTP ------------------------------------------------------------------------------------------------


def test_a_key_whose_minute_of_tokens_cannot_pay_for_a_request_rests_until_it_can(make_client: MakeClient) -> None:
    """Groq's minute of tokens is a bucket: its reset is what was spent over its rate (6,000 a minute, 100 a second;
    a user's recorded answer: 73 of 8,000 back in 547 ms). Drained, it pays for a request of 2,258 tokens (2 of text,
    `max_tokens` 2,000 and the 256 the adapter adds for `gpt-oss`'s reasoning) 22.6 s on: the key is passed over
    for it and rests until then, not until a 429."""
    client = make_client({"groq": 2}, steps={"groq:1": ["tokens_spent"]})
    assert client.complete(USER_HELLO, max_tokens=200).key_id == "groq:1"  # 0 tokens left, whole in 60 s
    assert client.complete(USER_HELLO, max_tokens=2000).key_id == "groq:2"  # (round robin)
    assert client.complete(USER_HELLO, max_tokens=2000).key_id == "groq:2"  # groq:1 cannot pay for it
    first = client.key_manager.statuses("groq")[0]
    assert first.reason == "rate_limit" and 20.5 < first.cooldown_remaining <= 22.6, first
    events = [e.detail for e in client.admin.events() if e.key_id == "groq:1"]
    assert any("cannot cover a request of 2258 tokens" in detail for detail in events)


def test_a_spend_cap_parks_the_whole_organization_until_the_first(make_client: MakeClient, sim) -> None:
    client = make_client(
        {"groq": 3, "gemini": 1},
        steps={"groq:1": ["spend_cap"]},
        GROQ_API_KEY_1_GROUP="acme",
        GROQ_API_KEY_2_GROUP="acme",
    )
    result = client.complete(USER_HELLO)
    assert (result.key_id, sim.calls("groq:2")) == ("groq:3", 0)
    parked = client.key_manager.statuses("groq")[:2]
    until = seconds_until_next_month(UTC, time.time())
    assert all(k.reason == "spend_cap" and k.cooldown_remaining == pytest.approx(until, abs=3) for k in parked)
    first_of_month = datetime.fromtimestamp(time.time() + until, UTC)
    assert reason_text(parked[0]) == f"Groq spend cap — until {first_of_month.day} {first_of_month:%b}"


def test_flex_capacity_is_transient_and_a_too_large_output_goes_elsewhere(make_client: MakeClient) -> None:
    client = make_client({"groq": 2, "gemini": 1}, steps={"groq:1": ["flex_capacity", "output_too_large"]})
    assert client.complete(USER_HELLO).key_id == "groq:2"
    assert client.key_manager.statuses("groq")[0].consecutive_failures == 1
    result = client.complete(USER_HELLO)  # groq:1 again (round robin): its 429 "reduce max_tokens"
    assert result.provider == "gemini" and result.skipped[0].kind is OutcomeKind.REQUEST_ERROR


# --- Gemini over HTTP ------------------------------------------------------------------------------------------------


def test_a_per_day_violation_rests_until_midnight_pacific_despite_a_51_s_retry_delay(make_client: MakeClient) -> None:
    client = make_client({"gemini": 2}, steps={"gemini:1": ["rate_limit_daily"]})
    assert client.complete(USER_HELLO).key_id == "gemini:2"
    first = client.key_manager.statuses("gemini")[0]
    assert first.cooldown_remaining == pytest.approx(seconds_until_midnight(PACIFIC, time.time()), abs=3)


@pytest.mark.slow
def test_no_quota_for_the_model_is_a_configuration_problem_not_a_rate_limit(make_client: MakeClient) -> None:
    client = make_client({"gemini": 2}, steps={"gemini:1": ["no_quota"]}, GEMINI_CHAT_MODEL="gemini-2.5-pro")
    assert client.complete(USER_HELLO).key_id == "gemini:2"
    first = client.key_manager.statuses("gemini")[0]
    assert first.reason == "no_access" and first.cooldown_remaining > 23 * 3600
    assert reason_text(first) == "no quota for gemini-2.5-pro in this project"


@pytest.mark.slow
@pytest.mark.parametrize(("step", "reason"), [("no_credits", "no_credits"), ("no_access", "no_access")])
def test_prepay_and_region_problems_park_the_key(make_client: MakeClient, step: str, reason: str) -> None:
    client = make_client({"gemini": 2}, steps={"gemini:1": [step]})
    assert client.complete(USER_HELLO).key_id == "gemini:2"
    assert client.key_manager.statuses("gemini")[0].reason == reason


@pytest.mark.slow
@pytest.mark.parametrize("provider", ["gemini", "groq", "openrouter"])
def test_an_answer_without_text_is_never_returned(make_client: MakeClient, provider: str) -> None:
    client = make_client({provider: 2}, steps={f"{provider}:1": ["empty_answer"], f"{provider}:2": ["empty_answer"]})
    with pytest.raises(RequestRejectedError, match="no text"):
        client.complete(USER_HELLO, max_tokens=20)
    assert all(k.available and not k.consecutive_failures for k in client.key_manager.statuses(provider))


def test_an_empty_gemini_answer_falls_back_to_the_next_provider(make_client: MakeClient) -> None:
    client = make_client(
        {"gemini": 1, "groq": 1}, steps={"gemini:1": ["empty_answer"]}, LLM_PROVIDER_ORDER="gemini,groq"
    )
    result = client.complete(USER_HELLO, max_tokens=20)
    assert result.provider == "groq" and result.text


def test_the_system_prompt_and_thinking_settings_reach_the_api_version_of_the_pinned_sdk(
    make_client: MakeClient, sim
) -> None:
    client = make_client({"gemini": 1}, GEMINI_CHAT_MODEL="gemini-2.5-flash")
    messages = [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "Hello"}]
    client.complete(messages, max_tokens=100)
    request = sim.requests[-1]
    assert request.path == f"/gemini/{API_VERSION}/models/gemini-2.5-flash:generateContent"
    assert request.payload["systemInstruction"]["parts"][0]["text"] == "Answer in French."
    thinking_config = request.payload["generationConfig"]["thinkingConfig"]  # the API reads either spelling
    assert thinking_config in ({"thinkingBudget": 0}, {"thinking_budget": 0})
    assert request.payload["generationConfig"]["maxOutputTokens"] == 100


@pytest.mark.parametrize(
    ("model", "config", "allowance"),
    [
        ("gemini-2.5-flash", {"thinking_budget": 0}, 0),
        ("gemini-2.5-flash-lite", {"thinking_budget": 0}, 0),
        ("gemini-2.5-pro", {"thinking_budget": 128}, 128),
        ("gemini-3.5-flash-lite", {"thinking_level": "MINIMAL"}, 256),
        ("gemini-3.1-pro-preview", {"thinking_level": "LOW"}, 1024),
        ("gemma-4-31b-it", {}, 0),
    ],
)
def test_thinking_is_set_to_the_lowest_level_each_model_allows(model: str, config: dict, allowance: int) -> None:
    assert thinking(model) == (config, allowance)


def test_defaults_are_models_that_exist_today() -> None:
    assert {name: spec.default_model for name, spec in PROVIDERS.items()} == {
        "openrouter": "openai/gpt-oss-20b:free",
        "groq": "openai/gpt-oss-20b",
        "gemini": "gemini-3.5-flash-lite",
        "cerebras": "gpt-oss-120b",  # the only model live on every source in Sept 2026; llama3.1-8b retired 27 May
        "mistral": "mistral-small-latest",  # the -latest aliases follow new versions
        "deepseek": "deepseek-v4-flash",  # deepseek-chat and deepseek-reasoner stopped on 24 Jul 2026
        "ollama": "",  # whatever was pulled: OLLAMA_CHAT_MODEL is required
        "vllm": "",
    }
