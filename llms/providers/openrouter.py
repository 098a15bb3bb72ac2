"""OpenRouter: how its answers read, and its adapter. Sources: docs/providers.md, "Provider facts".

Whose limit an answer is decides everything here (llms.outcomes.Scope):
- The upstream provider's: an error inside a 200 (`{"error": …}` as the body, `choices[0].error`, an SSE chunk
  with `finish_reason: "error"`), a 429 "Provider returned error" or one naming the upstream
  (`metadata.provider_name` / `provider_code` / `raw`, `limit_source: upstream_…`), a 502 naming it, and 503
  "no available model provider". Every key of the account meets the same failure: the (provider, model) rests
  briefly, no key is cooled and no window is learned. OpenRouter's own limits come as real HTTP 429s.
- The account's (all keys of its group): `free-models-per-day` (until the next UTC midnight, given in
  `metadata.headers["X-RateLimit-Reset"]`, ms), 402 "Insufficient credits" (`limit_source: openrouter_credits`),
  402 `openrouter_in_flight_budget` (temporary: for its `Retry-After`).
- The key's: its own credit cap (`limit_source: openrouter_key_limit`, 403 "Key limit exceeded").
- The request's: 402 `reason: weight_exceeds_budget` or "… can only afford N" (a smaller `max_tokens`, or
  another provider, fits), moderation and guardrail 403s.
- `GET /key` answers 200 for a key with no credit left: the probe reads `limit_remaining` (the key's own cap,
  null without one; the account balance is not there, and `GET /credits` needs a management key), and
  `free_model_daily_requests` (the account's `:free` requests left today).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from datetime import UTC
from typing import Any, ClassVar

from llms.outcomes import OK, Outcome, OutcomeKind, QuotaHint, Scope, rejected, transient
from llms.providers.base import ProviderSpec
from llms.providers.openai_compat import OpenAICompatAdapter
from llms.providers.openai_wire import classify_answer
from llms.wire import (
    MODERATION_WORDS,
    classify_common,
    epoch_grid,
    epoch_reset,
    error_message,
    error_metadata,
    error_object,
    lower_headers,
    message_hint,
    most_precise,
    retry_after_header,
    seconds_until_midnight,
    status_of,
)

_UPSTREAM = re.compile(r"rate-?limited upstream", re.I)
_DAILY = re.compile(r"free-models-per-day|per.?day", re.I)
_AFFORD = re.compile(r"can only afford (\d+)", re.I)
_BLOCKED = re.compile(r"request blocked|guardrail|flagged", re.I)
_KEY_LIMIT = re.compile(r"key limit exceeded", re.I)
_PROVIDER_ERROR = re.compile(r"provider returned error|no (?:available|allowed) (?:model )?provider", re.I)


def classify(status: int, headers: Mapping[str, str], body: Any, now: float) -> Outcome:
    error = error_object(body)
    in_200 = status == 200
    if in_200:
        choice_error = _choice_error(body)
        if not error and choice_error is None:
            return classify_answer(body)
        error = error or choice_error or {}
        body = {"error": error}
        status = status_of(error.get("code")) or status_of(error.get("http_status")) or 502
        if status == 200:
            status = 502
    message = error_message(body)
    meta = error_metadata(body)
    limit_source = str(meta.get("limit_source") or "")
    reason = str(meta.get("reason") or error.get("reason") or "")
    merged = _headers(headers, meta)
    hint = _hint(merged, body, meta, now)

    if in_200 or status == 503 or (status in (429, 502) and _from_upstream(message, meta, error)):
        kind = OutcomeKind.RATE_LIMIT if status == 429 else OutcomeKind.TRANSIENT
        return Outcome(kind, status, f"upstream provider: {message}", hint, scope=Scope.UPSTREAM)
    if status == 429:
        if "free-models-per-day" in message or "daily" in limit_source:
            wait = hint if hint is not None else seconds_until_midnight(UTC, now)
            return Outcome(OutcomeKind.RATE_LIMIT, status, message, wait, daily_quota=True, scope=Scope.ACCOUNT)
        daily = bool(_DAILY.search(message))
        grid = None if daily else epoch_grid(merged.get("x-ratelimit-reset"))
        return Outcome(OutcomeKind.RATE_LIMIT, status, message, hint, daily_quota=daily, grid=grid)
    if limit_source == "openrouter_key_limit" or (status == 403 and _KEY_LIMIT.search(message)):
        return Outcome(OutcomeKind.NO_CREDITS, status, f"key's own credit limit: {message}")
    if status == 402:
        afford = _AFFORD.search(message)
        if reason == "weight_exceeds_budget" or (afford and int(afford.group(1)) > 0):
            return rejected(f"too expensive for the account's budget (a smaller max_tokens fits): {message}", status)
        if limit_source == "openrouter_in_flight_budget" or reason == "in_flight_budget_exhausted" or hint:
            return Outcome(OutcomeKind.RATE_LIMIT, status, f"in-flight budget: {message}", hint, scope=Scope.ACCOUNT)
        return Outcome(OutcomeKind.NO_CREDITS, status, message, scope=Scope.ACCOUNT)
    if status == 403 and (
        _BLOCKED.search(message) or MODERATION_WORDS.search(message) or "reasons" in meta or "patterns" in meta
    ):
        return rejected(message, status)
    return classify_common(status, message, hint)


def _from_upstream(message: str, meta: Mapping[str, Any], error: Mapping[str, Any]) -> bool:
    """Whether an error names the upstream provider as its source. OpenRouter's own limits carry
    `provider_name: null`; the docs do not list every upstream marker, so any of them counts (the reading that
    spends no other key on a failure every key would meet)."""
    return bool(
        _PROVIDER_ERROR.search(message)
        or _UPSTREAM.search(message)
        or meta.get("provider_name")
        or meta.get("provider_code")
        or meta.get("raw")
        or str(meta.get("limit_source") or "").startswith("upstream")
        or _availability(error) == "capacity_exhausted"
    )


def stream_error_outcome() -> Outcome:
    """A stream chunk with `finish_reason: "error"` and no error object: the upstream provider failed."""
    message = "upstream provider: stream ended with finish_reason 'error'"
    return Outcome(OutcomeKind.TRANSIENT, 200, message, scope=Scope.UPSTREAM)


def _choice_error(body: Any) -> dict[str, Any] | None:
    """A non-streaming answer whose choice failed: `finish_reason: "error"`, maybe with partial text."""
    choices = body.get("choices") if isinstance(body, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    choice = choices[0]
    if choice.get("finish_reason") != "error" and not isinstance(choice.get("error"), dict):
        return None
    error = choice.get("error")
    return error if isinstance(error, dict) else {"code": 502, "message": "answer ended with finish_reason 'error'"}


def _availability(error: Mapping[str, Any]) -> str:
    availability = error.get("availability")
    return str(availability.get("code") or "") if isinstance(availability, dict) else ""


def _headers(headers: Mapping[str, str], meta: Mapping[str, Any]) -> dict[str, str]:
    """The answer's headers (lower-cased), with those OpenRouter copies into `metadata.headers` beneath them."""
    merged = lower_headers(headers)
    return {**lower_headers(meta["headers"]), **merged} if isinstance(meta.get("headers"), dict) else merged


def _hint(merged: Mapping[str, str], body: Any, meta: Mapping[str, Any], now: float) -> float | None:
    """`Retry-After`, `X-RateLimit-Reset` (epoch ms), in the headers or copied into `metadata.headers` (`merged`)."""
    given = most_precise(
        retry_after_header(merged, now),
        epoch_reset(merged["x-ratelimit-reset"], now) if "x-ratelimit-reset" in merged else None,
        epoch_reset(meta["retry_after_seconds"], now) if "retry_after_seconds" in meta else None,
    )
    if given is not None:
        return given
    availability = error_object(body).get("availability")
    if isinstance(availability, dict) and availability.get("retry_after") is not None:
        return epoch_reset(availability["retry_after"], now)
    return message_hint(error_message(body))


_REASONS = re.compile(r"gpt-oss|deepseek-r1|qwen3|qwq|magistral|/o\d|gpt-5", re.I)


def reasoning(model: str) -> tuple[dict[str, Any], int]:
    """OpenRouter normalises reasoning as `reasoning: {"effort": …}` (docs: Reasoning Tokens; the tokens count as
    output): its reasoning families get `low`, with 256 tokens for it. Other models get nothing added."""
    return ({"reasoning": {"effort": "low"}}, 256) if _REASONS.search(model) else ({}, 0)


def probe_outcome(body: Any, free_model: bool = True, now: float | None = None) -> Outcome:
    """`GET /key` is 200 for a key that cannot pay for a request: read the key's own credit cap
    (`limit_remaining`, null without one), and the account's `:free` requests left today
    (`free_model_daily_requests`, reset at UTC midnight). None left, with a `:free` model configured: the
    account rests until midnight, as the daily 429 would rest it, instead of walking every key into that 429."""
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, dict):
        return transient("key info had no data", 200)
    remaining = data.get("limit_remaining")
    if _number(remaining) and remaining <= 0:
        return Outcome(OutcomeKind.NO_CREDITS, 200, f"key's own credit limit is used up (limit {data.get('limit')})")
    free = " (free tier)" if data.get("is_free_tier") else ""
    daily = _free_daily(data.get("free_model_daily_requests"), time.time() if now is None else now)
    if daily is None or not free_model:
        return Outcome(OK.kind, 200, f"key accepted{free}", quota=daily)
    if daily.remaining == 0:
        message = f"free-model requests spent for today ({daily.limit} a day, account-wide)"
        return Outcome(
            OutcomeKind.RATE_LIMIT, 200, message, daily.reset_after, daily_quota=True, scope=Scope.ACCOUNT, quota=daily
        )
    return Outcome(OK.kind, 200, f"key accepted{free}: {daily.remaining} free-model requests left today", quota=daily)


def _free_daily(raw: Any, now: float) -> QuotaHint | None:
    if not isinstance(raw, dict) or not _number(raw.get("remaining")):
        return None
    limit = raw.get("limit")
    return QuotaHint(
        max(0, int(raw["remaining"])),
        seconds_until_midnight(UTC, now),
        limit=int(limit) if _number(limit) else None,
        per_day=True,
    )


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def revives_credit(parked_for: str) -> bool:
    """A passing probe brings back only a key parked for its own credit cap (which `GET /key` shows)."""
    return parked_for.startswith(("key's own credit limit", "key's credit limit"))


class OpenRouterAdapter(OpenAICompatAdapter):
    provider = "openrouter"
    probe_path = "key"
    extra_headers: ClassVar[Mapping[str, str]] = {"X-Title": "llm-key-rotation"}
    classify = staticmethod(classify)

    def probe_outcome(self, body: Any) -> Outcome:
        return probe_outcome(body, self.model.endswith(":free"))

    def stream_error(self) -> Outcome:
        return stream_error_outcome()

    def reasoning(self, model: str) -> tuple[dict[str, Any], int]:
        return reasoning(model)


SPEC = ProviderSpec(
    name="openrouter",
    key_prefix="sk-or-",
    title="OpenRouter",
    default_model="openai/gpt-oss-20b:free",
    default_base_url="https://openrouter.ai/api/v1",
    day_zone=UTC,
    classify=classify,
    adapter=OpenRouterAdapter,
    probe_vouches_for=frozenset({OutcomeKind.INVALID_KEY, OutcomeKind.NO_CREDITS}),
    probe_revives_credit=revives_credit,
    probe_at_start=True,
)
