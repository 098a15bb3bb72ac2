"""Hint parsing and classification edge cases, from literal answers (the wire tests cover each row over HTTP)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llms.clock import ProviderClock
from llms.exceptions import AllKeysExhaustedError
from llms.outcomes import OutcomeKind, QuotaHint, TokensLeft
from llms.providers import PROVIDERS, cerebras, generic, mistral
from llms.providers.base import Endpoint
from llms.providers.gemini import PACIFIC
from llms.providers.groq import quota as groq_quota
from llms.providers.openrouter import classify as openrouter_classify
from llms.types import ChatRequest
from llms.wire import message_hint, most_precise, parse_duration, retry_after_header, seconds_until_midnight
from simulator.core import Call, Plan, Quota, Step, wire_example
from simulator.registry import render_reply

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("2m59.56s", 179.56), ("7.66s", 7.66), ("840ms", 0.84), ("36s", 36), ("1h2m3s", 3723), ("12", 12), ("1.2", 1.2)],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "-3", "inf", "5 parsecs"])
def test_unparseable_durations_are_none(text: str) -> None:
    assert parse_duration(text) is None


@given(st.integers(0, 23), st.integers(0, 59), st.floats(0, 59.99, allow_nan=False))
def test_any_go_duration_round_trips(h: int, m: int, s: float) -> None:
    text = f"{h}h{m}m{s:.2f}s"
    assert parse_duration(text) == pytest.approx(h * 3600 + m * 60 + round(s, 2), abs=1e-6)


def test_retry_after_seconds_and_http_date() -> None:
    assert retry_after_header({"retry-after": "7"}, NOW) == 7
    when = datetime.fromtimestamp(NOW + 90, UTC)
    assert retry_after_header({"retry-after": format_datetime(when, usegmt=True)}, NOW) == pytest.approx(90)


@pytest.mark.parametrize(
    ("message", "seconds"),
    [
        ("Please try again in 7.66s. Need more tokens?", 7.66),
        ("Please try again in 817.5ms. Need more tokens?", 0.8175),
        ("Please try again in 1h15m4.753s.", 4504.753),
        ("Please try again in 6m 11.52s.", 371.52),
        ("Please try again in 1h23m45.6s.", 5025.6),
        ("Please try again in 2s. Need more tokens?", 2.0),
        ("Please retry in 51.606482386s.", 51.606482386),
        ("retry after 30 seconds", 30.0),
    ],
)
def test_groq_and_gemini_waits_in_messages_parse_exactly(message: str, seconds: float) -> None:
    assert message_hint(message) == pytest.approx(seconds)


def test_groq_success_reads_the_day_of_requests_and_the_minute_of_tokens() -> None:
    """Groq's rate-limit doc's sample headers: requests count the day, tokens the minute."""
    headers = {
        "x-ratelimit-limit-requests": "14400",
        "x-ratelimit-limit-tokens": "18000",
        "x-ratelimit-remaining-requests": "14370",
        "x-ratelimit-remaining-tokens": "17997",
        "x-ratelimit-reset-requests": "2m59.56s",
        "x-ratelimit-reset-tokens": "7.66s",
    }
    request = ChatRequest.build([{"role": "user", "content": "hi"}], max_tokens=200)
    told = QuotaHint(14370, pytest.approx(179.56), per_day=True, tokens=TokensLeft(17997, pytest.approx(7.66), 18000))
    assert groq_quota(headers, request) == told
    assert groq_quota({}, request) is None


def test_a_request_is_reckoned_in_tokens_as_providers_admit_it() -> None:
    """Its text at four characters a token — the messages', and the tools' and output schema's definitions, which
    the model reads too; not an image's data — plus all of `max_tokens`, and, as the adapter sends it, what it adds
    for a reasoning model (Groq's `gpt-oss`: 256)."""
    text = [{"role": "system", "content": "x" * 10}, {"role": "user", "content": "y" * 30}]
    assert ChatRequest.build(text).tokens == 10 and ChatRequest.build(text, max_tokens=90).tokens == 100
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 4000}}
    assert ChatRequest.build([{"role": "user", "content": [{"type": "text", "text": "z" * 8}, image]}]).tokens == 2
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    with_tool = ChatRequest.build(text, tools=[tool])
    assert with_tool.tokens == 10 + math.ceil(len(json.dumps([tool])) / 4)
    groq = PROVIDERS["groq"].adapter(Endpoint("openai/gpt-oss-20b", "http://127.0.0.1:9", 1.0, ()))
    asked = ChatRequest.build(text, max_tokens=90)
    assert (
        groq.counted_tokens(asked, "openai/gpt-oss-20b") == 356
        and groq.counted_tokens(asked, "qwen/qwen3.6-27b") == 100
    )
    assert groq.counted_tokens(ChatRequest.build(text), "openai/gpt-oss-20b") == 10  # (nothing added to no limit)


def test_openai_compatible_quota_headers_carry_the_limit_beside_what_is_left() -> None:
    """OpenAI's rate-limit guide's sample: 60 requests a minute, 59 left, back to its initial state in 1 s (a bucket
    that one request took a token from); 150,000 tokens a minute, 149,984 left, whole again in 6 min (the guide's
    own figure). The limit says how big the window is that a count of 0 leaves full."""
    headers = {"x-ratelimit-limit-requests": "60", "x-ratelimit-remaining-requests": "59",
               "x-ratelimit-reset-requests": "1s", "x-ratelimit-limit-tokens": "150000",
               "x-ratelimit-remaining-tokens": "149984", "x-ratelimit-reset-tokens": "6m0s"}  # fmt: skip
    read = generic.OPENAI_QUOTA.read
    assert read(headers) == QuotaHint(59, 1.0, limit=60, tokens=TokensLeft(149984, 360.0, 150000))
    assert read({**headers, "x-ratelimit-limit-requests": "many"}).limit is None
    assert read({"x-ratelimit-limit-requests": "60"}) is None


def test_cerebras_and_mistral_quota_headers_read_as_their_docs_show() -> None:
    """Cerebras's doc example (reset in float seconds); a Mistral answer users posted (mistralai/client-ts#169: the
    `req` spelling, and no reset header, so a minute)."""
    cerebras_headers = {
        "x-ratelimit-remaining-requests-day": "999997455",
        "x-ratelimit-reset-requests-day": "33011.382867097855",
        "x-ratelimit-remaining-tokens-minute": "120",
        "x-ratelimit-reset-tokens-minute": "11.382867097854614",
    }
    assert cerebras.QUOTA.read(cerebras_headers) == QuotaHint(
        999997455, pytest.approx(33011.38, abs=0.01), per_day=True,
        tokens=TokensLeft(120, pytest.approx(11.38, abs=0.01)),
    )  # fmt: skip
    mistral_headers = {
        "x-ratelimit-limit-tokens-minute": "5000000",
        "x-ratelimit-remaining-tokens-minute": "4999911",
        "x-ratelimit-tokens-query-cost": "52",
        "x-ratelimit-limit-req-minute": "720",
        "x-ratelimit-remaining-req-minute": "717",
    }
    assert mistral.QUOTA.read(mistral_headers) == QuotaHint(
        717, 60.0, limit=720, tokens=TokensLeft(4999911, 60.0, 5000000)
    )


def test_openrouter_reset_is_epoch_milliseconds_also_inside_metadata() -> None:
    body = {
        "error": {
            "code": 429,
            "message": "Rate limit exceeded",
            "metadata": {
                "headers": {
                    "X-RateLimit-Limit": "20",
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset": str(int((NOW + 42.5) * 1000)),
                }
            },
        }
    }
    assert openrouter_classify(429, {}, body, NOW).retry_after == pytest.approx(42.5)


def test_gemini_retry_info_is_the_hint() -> None:
    body = {
        "error": {
            "code": 429,
            "status": "RESOURCE_EXHAUSTED",
            "message": "You exceeded your current quota",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "36s"}],
        }
    }
    assert PROVIDERS["gemini"].classify(429, {}, body, NOW).retry_after == 36


@pytest.mark.parametrize("provider", ["openrouter", "groq", "gemini"])
def test_fractional_hints_are_kept_exactly(provider: str) -> None:
    outcome = PROVIDERS[provider].classify(429, {"retry-after": "1.2"}, {"error": {"message": "slow down"}}, NOW)
    assert outcome.kind is OutcomeKind.RATE_LIMIT and outcome.retry_after == pytest.approx(1.2)


def test_daily_quota_cools_until_midnight_pacific_for_gemini() -> None:
    body = {
        "error": {
            "code": 429,
            "status": "RESOURCE_EXHAUSTED",
            "message": "quota",
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": [{"quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier"}],
                }
            ],
        }
    }
    outcome = PROVIDERS["gemini"].classify(429, {}, body, NOW)
    assert outcome.daily_quota
    assert outcome.retry_after == pytest.approx(seconds_until_midnight(PACIFIC, NOW))
    # NOW is 2027-01-15 08:00 UTC = 00:00 Pacific: a full day to go.
    assert outcome.retry_after == pytest.approx(24 * 3600)


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (200, "<html>502 Bad Gateway</html>", OutcomeKind.TRANSIENT),
        (200, {"error": {"code": 502, "message": "Provider returned error"}}, OutcomeKind.TRANSIENT),
        (200, {"id": "x", "choices": []}, OutcomeKind.TRANSIENT),
        (403, {"error": {"message": "Input was flagged by moderation"}}, OutcomeKind.REQUEST_ERROR),
        (403, {"error": {"message": "Forbidden"}}, OutcomeKind.INVALID_KEY),
        (408, "Request Timeout", OutcomeKind.TRANSIENT),
        (418, "", OutcomeKind.TRANSIENT),
        (400, {"error": {"message": "Too many requests, quota hit"}}, OutcomeKind.RATE_LIMIT),
    ],
)
def test_edge_rows(status: int, body: object, kind: OutcomeKind) -> None:
    assert openrouter_classify(status, {}, body, NOW).kind is kind


def test_exhausted_error_is_a_runtime_error_with_the_documented_text() -> None:
    err = AllKeysExhaustedError([], 125.0, "groq:2")
    assert isinstance(err, RuntimeError)
    assert str(err).startswith("All API keys exhausted across all providers")
    assert "groq:2" in str(err) and "2 min" in str(err)


def test_an_openrouter_402_with_a_retry_after_is_a_temporary_budget_not_an_empty_account() -> None:
    body = {"error": {"code": 402, "message": "Too many requests in flight for this key's budget"}}
    outcome = openrouter_classify(402, {"Retry-After": "3"}, body, NOW)
    assert (outcome.kind, outcome.retry_after) == (OutcomeKind.RATE_LIMIT, 3)
    no_credit = openrouter_classify(402, {}, {"error": {"code": 402, "message": "Insufficient credits"}}, NOW)
    assert no_credit.kind is OutcomeKind.NO_CREDITS


@pytest.mark.parametrize("code", [429, "429", None])
def test_an_openrouter_error_code_may_be_a_number_a_string_or_missing(code: object) -> None:
    error = {"message": "Rate limit exceeded", "http_status": 429}
    if code is not None:
        error["code"] = code
    assert openrouter_classify(200, {}, {"error": error}, NOW).kind is OutcomeKind.RATE_LIMIT


NOW_S = 1_790_000_000.0


@pytest.mark.parametrize(
    ("hints", "taken"),
    [
        ((3.0, 2.41), 2.41),  # Retry-After rounded up beside a ms reset: the finer one
        ((51.0, None, 51.606), 51.606),  # Gemini's RetryInfo "51s" beside "Please retry in 51.606s"
        ((7.66, 8.0), 7.66),  # already fine: kept
        ((30.0, 2.0), 30.0),  # not the same wait: the authoritative one
        ((None, None), None),
        ((5.0,), 5.0),
    ],
)
def test_the_most_precise_of_hints_that_agree_is_taken(hints: tuple[float | None, ...], taken: float | None) -> None:
    assert most_precise(*hints) == (pytest.approx(taken) if taken is not None else None)


def test_openrouter_takes_the_millisecond_reset_over_a_whole_second_retry_after() -> None:
    headers = {"Retry-After": "3", "X-RateLimit-Reset": str(int((NOW_S + 2.41) * 1000))}
    body = {"error": {"code": 429, "message": "Rate limit exceeded: free-models-per-min."}}
    assert openrouter_classify(429, headers, body, NOW_S).retry_after == pytest.approx(2.41, abs=0.002)


def test_a_provider_clock_ahead_is_learned_from_date_headers_and_an_epoch_reset_read_on_it() -> None:
    """A provider 1.5 s ahead: its `Date` headers (whole seconds) over answers at different fractions of a second
    narrow the offset to a trip; its epoch reset is then read on its clock, never later than the truth (a moment
    read early would be a 429). Clocks that may agree are taken to agree."""
    clock, skew, trip = ProviderClock(), 1.5, 0.2
    for n in range(40):
        sent = NOW_S + n * 1.37  # answers land at different fractions of a second
        date = format_datetime(datetime.fromtimestamp(math.floor(sent + trip / 2 + skew), UTC), usegmt=True)
        read_at = clock.read({"Date": date}, sent, sent + trip)
    assert 1.4 <= clock.offset() <= 1.5
    resets = sent + trip / 2 + skew + 2.41  # 2.41 s after it read the limit, on its clock
    headers = {"Retry-After": "3", "X-RateLimit-Reset": str(round(resets * 1000))}
    wait = openrouter_classify(429, headers, {"error": {"code": 429, "message": "limited"}}, read_at).retry_after
    assert wait is not None and 2.41 - 0.002 <= wait <= 2.41 + 0.1  # not 0.91 (a 429) nor 3.91
    synced = ProviderClock()
    synced.read(
        {"date": format_datetime(datetime.fromtimestamp(math.floor(NOW_S + 0.1), UTC), usegmt=True)}, NOW_S, NOW_S + 0.2
    )
    assert synced.offset() == 0.0 and ProviderClock().read({}, NOW_S, NOW_S + 0.2) == NOW_S + 0.1


def test_an_openai_compatible_429_rests_the_precise_reset_not_the_rounded_retry_after(sim) -> None:  # type: ignore[no-untyped-def]
    """The simulator's OpenAI-compatible provider sends `retry-after` in whole seconds (rounded up) beside
    `x-ratelimit-reset-requests` to the millisecond, as OpenAI does: the key rests the precise one."""
    from config.settings import load_settings
    from llms import SmartClient
    from llms.state import store_from_url

    secret = "sk-compat-precise-0000000000000001"
    sim.add_key("compat", secret, "rate_limit", name="compat:1")  # retry-after: 9, x-ratelimit-reset-requests: 8.64s
    env = {**sim.env(), "LLM_PROVIDER_ORDER": "compat", "COMPAT_BASE_URL": sim.base_urls["compat"]}
    env |= {"COMPAT_CHAT_MODEL": "sim-model", "COMPAT_API_KEY_1": secret, "LLM_REQUEST_TIMEOUT": "5"}
    with SmartClient(load_settings(env, dotenv_path=None), store=store_from_url("memory://")) as client:
        with pytest.raises(AllKeysExhaustedError):
            client.complete([{"role": "user", "content": "hi"}])
        rest = client.key_manager.statuses("compat")[0].cooldown_remaining
    assert 8.0 < rest <= 8.7  # not the 9 s of `retry-after: 9`


#: 429s as users posted them: whether their words name a limit on tokens (`Outcome.on_tokens`).
TOKEN_LIMIT_429S = [
    (  # Azure OpenAI, microsoft/sample-app-aoai-chatGPT#406: a whole-second wait and nothing more
        "Requests to the Creates a completion for the chat message Operation under Azure OpenAI API version "
        "2023-03-15-preview have exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry "
        "after 9 seconds.",
        True,
    ),
    (  # langchain-ai/langchain#12986: Azure's limit on calls is a limit on requests
        "Requests to the Embeddings_Create Operation under Azure OpenAI API version 2023-07-01-preview have "
        "exceeded call rate limit of your current OpenAI S0 pricing tier. Please retry after 3 seconds.",
        False,
    ),
    (  # OpenAI's words, `type: tokens`
        "Rate limit reached for gpt-4o in organization org-x on tokens per min (TPM): Limit 30000, Used 29500, "
        "Requested 1000. Please try again in 1s.",
        True,
    ),
    ("Rate limit reached for gpt-4o in organization org-x on requests per min (RPM): Limit 500.", False),
]


@pytest.mark.parametrize(("message", "on_tokens"), TOKEN_LIMIT_429S)
def test_a_429_says_whether_its_limit_counts_tokens(message: str, on_tokens: bool) -> None:
    body = {"error": {"message": message, "type": "tokens" if on_tokens else "requests", "code": "429"}}
    outcome = generic.classify(429, {"retry-after": "9"}, body, NOW)
    assert (outcome.kind, outcome.on_tokens, outcome.retry_after) == (OutcomeKind.RATE_LIMIT, on_tokens, 9.0)


def test_recorded_429s_of_groq_cerebras_and_gemini_say_whether_their_limit_counts_tokens() -> None:
    def on_tokens(provider: str, name: str) -> bool:
        status, headers, body = wire_example(provider, name, model="m", org="o", limit=20, delay="36s")
        return PROVIDERS[provider].classify(status, headers, body, NOW).on_tokens

    assert on_tokens("groq", "rate_limit_tpm") and not on_tokens("groq", "rate_limit_rpm")
    assert not on_tokens("cerebras", "rate_limit_rpm") and not on_tokens("gemini", "rate_limit_minute")
    # Gemini's limit on input tokens a minute, as the simulator words it (its metric: browserbase/stagehand#1256)
    tokens = Quota(250_000, 0, 12.5, 60.0)
    plan = Plan(Step.RATE_LIMIT, 429, tokens, 0.0, "org", NOW, tokens)
    reply = render_reply(Call("gemini", False, "gemini-2.5-flash", False, "", 5, True), plan, "label")
    outcome = PROVIDERS["gemini"].classify(reply.status, reply.headers, json.loads(reply.body), NOW)
    assert (outcome.kind, outcome.on_tokens, outcome.retry_after) == (OutcomeKind.RATE_LIMIT, True, 12.5)
