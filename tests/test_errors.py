"""Retry-hint parsing and classification edge cases, from literal answers (the wire tests cover each row over HTTP)."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llms.errors import (
    AllKeysExhaustedError,
    OutcomeKind,
    QuotaHint,
    classify_response,
    parse_duration,
    quota_hint,
    retry_hint,
    seconds_until_daily_reset,
)

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
    assert retry_hint({"Retry-After": "7"}, {}, "", NOW) == 7
    when = datetime.fromtimestamp(NOW + 90, UTC)
    assert retry_hint({"Retry-After": format_datetime(when, usegmt=True)}, {}, "", NOW) == pytest.approx(90)


def test_retry_after_wins_over_other_hints() -> None:
    headers = {"retry-after": "3", "x-ratelimit-reset-requests": "59s", "x-ratelimit-remaining-requests": "0"}
    assert retry_hint(headers, {}, "try again in 40s", NOW) == 3


def test_groq_reset_header_of_the_exhausted_quota() -> None:
    headers = {
        "x-ratelimit-remaining-requests": "12",
        "x-ratelimit-reset-requests": "2m59.56s",
        "x-ratelimit-remaining-tokens": "0",
        "x-ratelimit-reset-tokens": "7.66s",
    }
    assert retry_hint(headers, {}, "", NOW) == pytest.approx(7.66)


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
    assert retry_hint({}, body, "", NOW) == pytest.approx(42.5)


def test_gemini_retry_info_and_message_hints() -> None:
    body = {
        "error": {
            "code": 429,
            "status": "RESOURCE_EXHAUSTED",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "36s"}],
        }
    }
    assert retry_hint({}, body, "", NOW) == 36
    assert retry_hint({}, {}, "Please try again in 4.77s. Visit …", NOW) == pytest.approx(4.77)
    assert retry_hint({}, {}, "Please retry in 1m30.5s", NOW) == pytest.approx(90.5)


@pytest.mark.parametrize("provider", ["openrouter", "groq", "gemini"])
def test_fractional_hints_are_kept_exactly(provider: str) -> None:
    outcome = classify_response(provider, 429, {"retry-after": "1.2"}, {"error": {"message": "slow down"}}, NOW)
    assert outcome.kind is OutcomeKind.RATE_LIMIT and outcome.retry_after == pytest.approx(1.2)


def test_daily_quota_without_hint_cools_until_midnight_pacific_for_gemini() -> None:
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
    outcome = classify_response("gemini", 429, {}, body, NOW)
    assert outcome.daily_quota
    assert outcome.retry_after == pytest.approx(seconds_until_daily_reset("gemini", NOW))
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
        (
            400,
            {"error": {"message": "model_decommissioned", "code": "model_decommissioned"}},
            OutcomeKind.REQUEST_ERROR,
        ),
        (408, "Request Timeout", OutcomeKind.TRANSIENT),
        (418, "", OutcomeKind.TRANSIENT),
        (400, {"error": {"message": "Too many requests, quota hit"}}, OutcomeKind.RATE_LIMIT),
    ],
)
def test_edge_rows(status: int, body: object, kind: OutcomeKind) -> None:
    assert classify_response("openrouter", status, {}, body, NOW).kind is kind


def test_remaining_quota_on_success() -> None:
    hint = quota_hint({"X-RateLimit-Remaining-Requests": "0", "x-ratelimit-reset-requests": "1.5s"})
    assert hint == QuotaHint(0, 1.5)
    assert quota_hint({"x-ratelimit-remaining-requests": "3"}) == QuotaHint(3, None)
    assert quota_hint({}) is None


def test_exhausted_error_is_a_runtime_error_with_the_documented_text() -> None:
    err = AllKeysExhaustedError([], 125.0, "groq:2")
    assert isinstance(err, RuntimeError)
    assert str(err).startswith("All API keys exhausted across all providers")
    assert "groq:2" in str(err) and "2 min" in str(err)
