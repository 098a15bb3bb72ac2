"""The providers as their docs and users' posted answers describe them (README "Provider facts").

The classifier rows read the recorded wire examples in simulator/wire/ (the same files the simulator sends);
the client rows drive those answers over HTTP, on every state backend where state matters.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from datetime import UTC, datetime

import pytest
from conftest import USER_HELLO, MakeClient

from dashboard.text import pause_text, reason_text
from llms import RequestRejectedError
from llms.outcomes import OutcomeKind, Scope
from llms.providers import PROVIDERS
from llms.providers.gemini import API_VERSION, PACIFIC, thinking
from llms.wire import seconds_until_midnight, seconds_until_next_month
from simulator.core import wire_example, wire_examples

NOW = 1_800_000_000.0
MODEL = "test/model"

#: (provider, example) → (kind, scope, daily quota, another provider may serve)
ROWS = {
    ("openrouter", "upstream_rate_limit"): (OutcomeKind.RATE_LIMIT, Scope.UPSTREAM, False, False),
    ("openrouter", "free_models_per_day"): (OutcomeKind.RATE_LIMIT, Scope.ACCOUNT, True, False),
    ("openrouter", "free_models_per_min"): (OutcomeKind.RATE_LIMIT, Scope.KEY, False, False),
    ("openrouter", "rate_limit_in_200"): (OutcomeKind.RATE_LIMIT, Scope.KEY, False, False),
    ("openrouter", "error_in_choice"): (OutcomeKind.TRANSIENT, Scope.KEY, False, False),
    ("openrouter", "stream_error_event"): (OutcomeKind.RATE_LIMIT, Scope.KEY, False, False),
    ("openrouter", "mid_stream_error"): (OutcomeKind.TRANSIENT, Scope.KEY, False, False),
    ("openrouter", "insufficient_credits"): (OutcomeKind.NO_CREDITS, Scope.KEY, False, False),
    ("openrouter", "needs_fewer_tokens"): (OutcomeKind.REQUEST_ERROR, Scope.KEY, False, True),
    ("openrouter", "key_limit"): (OutcomeKind.NO_CREDITS, Scope.KEY, False, False),
    ("openrouter", "guardrail"): (OutcomeKind.REQUEST_ERROR, Scope.KEY, False, True),
    ("openrouter", "moderation"): (OutcomeKind.REQUEST_ERROR, Scope.KEY, False, True),
    ("openrouter", "invalid_key"): (OutcomeKind.INVALID_KEY, Scope.KEY, False, False),
    ("openrouter", "no_tool_endpoints"): (OutcomeKind.REQUEST_ERROR, Scope.KEY, False, True),
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
    assert hint("groq", "rate_limit_tpm") == pytest.approx(0.8175)
    assert hint("groq", "rate_limit_tpd") == pytest.approx(4504.753)
    assert hint("groq", "spend_cap") == pytest.approx(seconds_until_next_month(UTC, NOW))
    # A per-day violation wins over RetryInfo's 51 s: the key rests until midnight Pacific.
    assert hint("gemini", "rate_limit_daily") == pytest.approx(seconds_until_midnight(PACIFIC, NOW))
    assert hint("gemini", "rate_limit_minute") == 36


def test_the_original_status_loop_runs_verbatim_and_the_summary_is_plain_data(make_client: MakeClient) -> None:
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
    assert client.store_health().healthy


# --- OpenRouter over HTTP --------------------------------------------------------------------------------------


def test_a_429_inside_a_200_is_a_rate_limit_of_that_key(make_client: MakeClient) -> None:
    client = make_client({"openrouter": 2}, steps={"openrouter:1": ["rate_limit_in_200"]})
    result = client.complete(USER_HELLO)
    assert (result.key_id, result.attempts[0].kind) == ("openrouter:2", OutcomeKind.RATE_LIMIT)
    first = client.key_manager.statuses("openrouter")[0]
    assert first.reason == "rate_limit" and 50 < first.cooldown_remaining <= 61


def test_a_choice_that_ended_in_error_is_not_an_answer(make_client: MakeClient) -> None:
    client = make_client({"openrouter": 2}, steps={"openrouter:1": ["error_in_choice"]})
    result = client.complete(USER_HELLO)
    assert result.key_id == "openrouter:2" and "partial output" not in result.text
    assert client.key_manager.statuses("openrouter")[0].consecutive_failures == 1


def test_an_error_event_before_any_text_fails_the_stream_over(make_client: MakeClient) -> None:
    client = make_client({"openrouter": 2}, steps={"openrouter:1": ["rate_limit_in_200"]})
    stream = client.chat_stream(USER_HELLO)
    assert "".join(stream).startswith("Simulated openrouter reply")
    assert stream.result is not None and stream.result.key_id == "openrouter:2"
    assert client.key_manager.statuses("openrouter")[0].reason == "rate_limit"


def test_an_upstream_429_rests_openrouter_and_burns_no_other_key(make_client: MakeClient, sim) -> None:
    client = make_client({"openrouter": 3, "groq": 1}, steps={"openrouter:1": ["upstream_rate_limit"]})
    result = client.complete(USER_HELLO)
    assert result.provider == "groq"
    assert (sim.calls("openrouter:1"), sim.calls("openrouter:2"), sim.calls("openrouter:3")) == (1, 0, 0)
    assert all(k.available for k in client.key_manager.statuses("openrouter"))  # no key was parked
    status = next(s for s in client.provider_statuses() if s.provider == "openrouter")
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


def test_a_402_that_asks_for_fewer_tokens_goes_to_the_next_provider_and_parks_nothing(
    make_client: MakeClient,
) -> None:
    client = make_client({"openrouter": 2, "groq": 1}, steps={"openrouter:1": ["needs_fewer_tokens"]})
    result = client.complete(USER_HELLO, max_tokens=64000)
    assert result.provider == "groq" and [a.kind for a in result.skipped] == [OutcomeKind.REQUEST_ERROR]
    assert all(k.available for k in client.key_manager.statuses("openrouter"))


@pytest.mark.parametrize(("step", "reason"), [("no_credits", "no_credits"), ("key_limit", "no_credits")])
def test_out_of_credit_keys_are_parked(make_client: MakeClient, step: str, reason: str) -> None:
    client = make_client({"openrouter": 2}, steps={"openrouter:1": [step]})
    assert client.complete(USER_HELLO).key_id == "openrouter:2"
    first = client.key_manager.statuses("openrouter")[0]
    assert first.reason == reason and first.cooldown_remaining > 23 * 3600


def test_a_guardrail_block_is_the_requests_fault(make_client: MakeClient) -> None:
    client = make_client({"openrouter": 2}, steps={"openrouter:1": ["guardrail"]})
    with pytest.raises(RequestRejectedError, match="prompt injection"):
        client.complete(USER_HELLO)
    assert all(k.available for k in client.key_manager.statuses("openrouter"))


def test_the_probe_reads_the_key_info_so_a_key_without_credit_stays_parked(make_client: MakeClient, sim) -> None:
    client = make_client({"openrouter": 1}, steps={"openrouter:1": ["no_credits", "no_credits"]})
    with pytest.raises(RuntimeError, match="All API keys exhausted"):
        client.complete(USER_HELLO)
    outcome = client.check_key("openrouter:1")  # GET /key answers 200 with limit_remaining 0
    assert (outcome.kind, outcome.status) == (OutcomeKind.NO_CREDITS, 200)
    assert sim.requests[-1].path.endswith("/key") and sim.requests[-1].status == 200
    assert client.key_manager.statuses("openrouter")[0].reason == "no_credits"
    assert client.check_key("openrouter:1").kind is OutcomeKind.OK  # now the key info shows credit again
    assert client.key_manager.statuses("openrouter")[0].available


# --- Groq over HTTP ------------------------------------------------------------------------------------------------


def test_a_success_that_spent_the_minutes_tokens_rests_the_key_until_they_reset(make_client: MakeClient) -> None:
    client = make_client({"groq": 2}, steps={"groq:1": ["tokens_spent"]})
    assert client.complete(USER_HELLO, max_tokens=200).key_id == "groq:1"
    first = client.key_manager.statuses("groq")[0]
    assert first.reason == "rate_limit" and 6 < first.cooldown_remaining <= 7.7
    assert client.complete(USER_HELLO).key_id == "groq:2"


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
