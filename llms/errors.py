"""What a provider's answer means for the key that sent it, and the exceptions the client raises.

`classify_response` turns (status, headers, body) into an `Outcome`: the kind of result (see `OutcomeKind`) plus
the provider's hint of how long to wait. It is pure and knows nothing of keys or HTTP libraries, so every row of the
classification table is testable from literal answers as well as over the wire.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from config.api_keys import redact


class OutcomeKind(StrEnum):
    OK = "ok"
    RATE_LIMIT = "rate_limit"
    INVALID_KEY = "invalid_key"
    NO_CREDITS = "no_credits"
    TRANSIENT = "transient"
    REQUEST_ERROR = "request_error"


@dataclass(frozen=True)
class Outcome:
    """The verdict on one answer.

    `retry_after` is the provider's own hint in seconds (None when it gave none). For request errors,
    `other_provider_may_serve` says whether another provider could still take the same request (a 413 or a
    context-length error might fit elsewhere; a malformed request will not), and `config_error` marks
    problems of our configuration (unknown model) that the status page should show.
    """

    kind: OutcomeKind
    status: int | None = None
    message: str = ""
    retry_after: float | None = None
    daily_quota: bool = False
    other_provider_may_serve: bool = False
    config_error: bool = False

    def redacted(self, secrets: Sequence[str]) -> Outcome:
        return replace(self, message=redact(self.message, secrets))


OK = Outcome(OutcomeKind.OK, 200)


class LLMError(RuntimeError):
    """Base of the errors this package raises on purpose."""


class ProviderError(LLMError):
    """One provider call failed; `outcome` says how, so the key manager can apply the right penalty."""

    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome
        status = f"HTTP {outcome.status}" if outcome.status else "no HTTP answer"
        super().__init__(f"{outcome.kind.value} ({status}): {outcome.message}")


@dataclass(frozen=True)
class Attempt:
    """One call the client made while answering a request. `message` is short and already redacted."""

    key_id: str
    kind: OutcomeKind
    status: int | None
    message: str

    def describe(self) -> str:
        status = f" {self.status}" if self.status else ""
        return f"{self.key_id} {self.kind.value}{status}"


class AllKeysExhaustedError(LLMError):
    """Every key of every provider is cooling down (or failed just now)."""

    def __init__(self, attempts: Sequence[Attempt], retry_in: float | None, next_key_id: str | None) -> None:
        self.attempts = tuple(attempts)
        self.retry_in = retry_in
        self.next_key_id = next_key_id
        if retry_in is None:
            when = "no key will free up by itself (none configured, or all need a manual reset)"
        elif next_key_id is None:
            when = "every free key is busy with requests in flight; retry in a moment"
        else:
            when = f"the first key ({next_key_id}) frees up in {format_duration(retry_in)}"
        tried = f"; tried {', '.join(a.describe() for a in self.attempts)}" if self.attempts else ""
        super().__init__(f"All API keys exhausted across all providers: {when}{tried}")


class RequestRejectedError(LLMError):
    """The request itself was refused (malformed, too large, unknown model): another key would not help."""

    def __init__(self, message: str, attempts: Sequence[Attempt]) -> None:
        self.attempts = tuple(attempts)
        super().__init__(message)


class StreamInterruptedError(LLMError):
    """A stream failed after text was already delivered; raised so a truncated answer is never silent."""

    def __init__(self, message: str, attempts: Sequence[Attempt]) -> None:
        self.attempts = tuple(attempts)
        super().__init__(message)


def format_duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# --- classification ---------------------------------------------------------------------------------------------

_RATE_WORDS = re.compile(r"rate.?limit|quota|too many requests|resource.?exhausted", re.I)
_CONTEXT_WORDS = re.compile(
    r"context.?length|context window|maximum context|too many tokens|exceeds the maximum number of tokens"
    r"|payload size exceeds|request too large|reduce (the length|your message)",
    re.I,
)
_MODERATION_WORDS = re.compile(r"moderation|flagged|safety", re.I)
_KEY_WORDS = re.compile(r"api.?key|user not found|unauthori[sz]ed|authenticat", re.I)
_DAILY_WORDS = re.compile(r"per.?day|\(RPD\)|\(TPD\)|daily", re.I)


def classify_response(provider: str, status: int, headers: Mapping[str, str], body: Any, now: float) -> Outcome:
    """Classify one HTTP answer. `body` is the parsed JSON, or the raw text when it was not JSON."""
    message = error_message(body)
    if status == 200:
        return _classify_200(provider, body, message)

    hint = retry_hint(headers, body, message, now)
    daily = _is_daily(body, message)
    if status == 429 or (400 <= status < 500 and _RATE_WORDS.search(message) and not _CONTEXT_WORDS.search(message)):
        if daily and hint is None:
            hint = seconds_until_daily_reset(provider, now)
        return Outcome(OutcomeKind.RATE_LIMIT, status, message, retry_after=hint, daily_quota=daily)
    if status == 401:
        return Outcome(OutcomeKind.INVALID_KEY, status, message)
    if status == 402:
        return Outcome(OutcomeKind.NO_CREDITS, status, message)
    if status == 413 or (status == 400 and (_CONTEXT_WORDS.search(message) or _MODERATION_WORDS.search(message))):
        return Outcome(OutcomeKind.REQUEST_ERROR, status, message, other_provider_may_serve=True)
    if status == 403:
        if _MODERATION_WORDS.search(message):
            return Outcome(OutcomeKind.REQUEST_ERROR, status, message, other_provider_may_serve=True)
        return Outcome(OutcomeKind.INVALID_KEY, status, message)
    if status == 404 or (status == 400 and _error_code(body) in ("model_decommissioned", "model_not_found")):
        return Outcome(OutcomeKind.REQUEST_ERROR, status, message, other_provider_may_serve=True, config_error=True)
    if status == 400 and (_gemini_reason(body) == "API_KEY_INVALID" or _KEY_WORDS.search(message)):
        return Outcome(OutcomeKind.INVALID_KEY, status, message)
    if status in (400, 405, 415, 422):
        return Outcome(OutcomeKind.REQUEST_ERROR, status, message)
    return Outcome(OutcomeKind.TRANSIENT, status, message or f"HTTP {status}")


def _classify_200(provider: str, body: Any, message: str) -> Outcome:
    if not isinstance(body, dict):
        return Outcome(OutcomeKind.TRANSIENT, 200, f"answer was not JSON: {_snippet(body)}")
    if "error" in body:
        return Outcome(OutcomeKind.TRANSIENT, 200, message or "error body with status 200")
    if provider == "gemini":
        if body.get("candidates"):
            return OK
        block = (body.get("promptFeedback") or {}).get("blockReason")
        if block:
            return Outcome(
                OutcomeKind.REQUEST_ERROR, 200, f"prompt blocked by Gemini ({block})", other_provider_may_serve=True
            )
        return Outcome(OutcomeKind.TRANSIENT, 200, "answer had no candidates")
    choices = body.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict) and "message" in choices[0]:
        return OK
    return Outcome(OutcomeKind.TRANSIENT, 200, "answer had no choices")


@dataclass(frozen=True)
class QuotaHint:
    """What a successful answer said about the key's request quota: requests left and seconds until reset."""

    remaining: int
    reset_after: float | None


def quota_hint(headers: Mapping[str, str]) -> QuotaHint | None:
    """Groq reports `x-ratelimit-remaining-requests` on every answer, so a key can rest before it earns a 429."""
    headers = _lower(headers)
    raw = headers.get("x-ratelimit-remaining-requests", "").strip()
    if not raw.isdigit():
        return None
    return QuotaHint(int(raw), parse_duration(headers.get("x-ratelimit-reset-requests", "")))


def error_message(body: Any) -> str:
    """The human part of an error body, whichever provider shape it has, shortened."""
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            msg = str(err.get("message") or "")
            raw = (err.get("metadata") or {}).get("raw") if isinstance(err.get("metadata"), dict) else None
            return _snippet(f"{msg} ({raw})" if raw else msg)
        if isinstance(err, str):
            return _snippet(err)
        return _snippet(str(body.get("message") or ""))
    if isinstance(body, list) and body:
        return error_message(body[0])
    return _snippet(body) if body else ""


def _snippet(value: Any, limit: int = 300) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def _error_obj(body: Any) -> dict[str, Any]:
    if isinstance(body, list) and body:
        body = body[0]
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return body["error"]
    return {}


def _error_code(body: Any) -> Any:
    return _error_obj(body).get("code")


def _details(body: Any) -> list[dict[str, Any]]:
    details = _error_obj(body).get("details")
    return [d for d in details if isinstance(d, dict)] if isinstance(details, list) else []


def _gemini_reason(body: Any) -> str | None:
    for detail in _details(body):
        if detail.get("@type", "").endswith("google.rpc.ErrorInfo"):
            return detail.get("reason")
    return None


def _is_daily(body: Any, message: str) -> bool:
    for detail in _details(body):
        if detail.get("@type", "").endswith("google.rpc.QuotaFailure"):
            for violation in detail.get("violations") or []:
                if "PerDay" in str(violation.get("quotaId", "")):
                    return True
    return bool(_DAILY_WORDS.search(message))


# --- retry hints ------------------------------------------------------------------------------------------------

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)")
_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|us|µs|ns|h|m|s))+$")
_MESSAGE_HINT = re.compile(
    r"(?:try again|retry)\s+(?:in|after)\s+((?:\d+(?:\.\d+)?(?:ms|h|m|s))+|\d+(?:\.\d+)?\s*seconds?)", re.I
)
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_duration(text: str) -> float | None:
    """Go-style durations as Groq and Gemini send them: `2m59.56s`, `7.66s`, `840ms`, `36s`; also bare seconds."""
    text = text.strip().replace(" ", "")
    if not text:
        return None
    if _DURATION.match(text):
        return sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))
    seconds = re.fullmatch(r"(\d+(?:\.\d+)?)seconds?", text)
    if seconds:
        return float(seconds.group(1))
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def retry_hint(headers: Mapping[str, str], body: Any, message: str, now: float) -> float | None:
    """Seconds to wait, from the most specific hint the provider gave; None when it gave none."""
    headers = _lower(headers)
    meta = _error_obj(body).get("metadata")
    if isinstance(meta, dict) and isinstance(meta.get("headers"), dict):
        headers = {**_lower(meta["headers"]), **headers}

    for parse in (_retry_after_header, _groq_reset_headers, _openrouter_reset_header):
        value = parse(headers, now)
        if value is not None:
            return value
    for detail in _details(body):
        if detail.get("@type", "").endswith("google.rpc.RetryInfo"):
            value = parse_duration(str(detail.get("retryDelay", "")))
            if value is not None:
                return value
    match = _MESSAGE_HINT.search(message)
    return parse_duration(match.group(1)) if match else None


def _retry_after_header(headers: Mapping[str, str], now: float) -> float | None:
    raw = headers.get("retry-after", "").strip()
    if not raw:
        return None
    value = parse_duration(raw)
    if value is not None:
        return value
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def _groq_reset_headers(headers: Mapping[str, str], now: float) -> float | None:
    """Groq's reset durations; when both are present, the one whose quota is at zero is the one that matters."""
    found: list[tuple[bool, float]] = []
    for kind in ("requests", "tokens"):
        value = parse_duration(headers.get(f"x-ratelimit-reset-{kind}", ""))
        if value is not None:
            exhausted = headers.get(f"x-ratelimit-remaining-{kind}", "").strip() == "0"
            found.append((exhausted, value))
    if not found:
        return None
    exhausted = [v for e, v in found if e]
    return max(exhausted or [v for _, v in found])


def _openrouter_reset_header(headers: Mapping[str, str], now: float) -> float | None:
    """OpenRouter's `X-RateLimit-Reset` is an epoch in milliseconds; tolerate seconds too."""
    raw = headers.get("x-ratelimit-reset", "").strip()
    try:
        value = float(raw)
    except ValueError:
        return None
    if value > 1e11:
        return max(0.0, value / 1000.0 - now)
    if value > 1e9:
        return max(0.0, value - now)
    return value if value >= 0 else None


_PACIFIC = ZoneInfo("America/Los_Angeles")


def seconds_until_daily_reset(provider: str, now: float) -> float:
    """Per-day quotas reset at midnight Pacific for Gemini and at midnight UTC elsewhere."""
    zone = _PACIFIC if provider == "gemini" else UTC
    local = datetime.fromtimestamp(now, zone)
    midnight = datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), tzinfo=zone)
    return max(1.0, midnight.timestamp() - now)
