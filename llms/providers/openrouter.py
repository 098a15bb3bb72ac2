"""OpenRouter: how its answers read, and its adapter. Sources are in the README's "Provider facts".

- An error can come with HTTP 200: `{"error": …}` as the body, as an SSE event, or in a choice with
  `finish_reason: "error"`. `error.code` (a number, a numeric string, or missing) is the real status.
- 429 "Provider returned error" with `metadata.raw` "… is temporarily rate-limited upstream" (or
  `limit_source: upstream_provider_shared_pool`) is a limit of the *model*, shared by every key: rest the
  provider briefly and move on, burning no other key.
- `free-models-per-day` resets at the next UTC midnight, given in `metadata.headers["X-RateLimit-Reset"]` (ms).
- 402 "Insufficient credits" parks the key; "requires more credits, or fewer max_tokens … can only afford N"
  with N > 0 is about the request (a smaller `max_tokens` would fit). 403 "Key limit exceeded" is the key's own
  spend limit; other 403s with moderation metadata or "Request blocked" are the request's.
- `GET /key` answers 200 for a key with no credit left: the probe reads `limit_remaining`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC
from typing import Any, ClassVar

from llms.outcomes import OK, Outcome, OutcomeKind, Scope, rejected, transient
from llms.providers.base import ProviderSpec
from llms.providers.openai_compat import OpenAICompatAdapter, classify_answer
from llms.wire import (
    MODERATION_WORDS,
    classify_common,
    epoch_reset,
    error_message,
    error_metadata,
    error_object,
    lower_headers,
    message_hint,
    retry_after_header,
    seconds_until_midnight,
    status_of,
)

_UPSTREAM = re.compile(r"rate-?limited upstream", re.I)
_DAILY = re.compile(r"free-models-per-day|per.?day", re.I)
_AFFORD = re.compile(r"can only afford (\d+)", re.I)
_BLOCKED = re.compile(r"request blocked|guardrail|flagged", re.I)
_KEY_LIMIT = re.compile(r"key limit exceeded", re.I)
_IN_FLIGHT = re.compile(r"in.?flight|concurren", re.I)


def classify(status: int, headers: Mapping[str, str], body: Any, now: float) -> Outcome:
    error = error_object(body)
    if status == 200:
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
    hint = _hint(headers, body, meta, now)

    if status == 429 or (status == 503 and limit_source.startswith("upstream")):
        if (
            _UPSTREAM.search(message)
            or limit_source.startswith("upstream")
            or _availability(error) == "capacity_exhausted"
        ):
            return Outcome(
                OutcomeKind.RATE_LIMIT, status, f"model busy upstream: {message}", hint, scope=Scope.UPSTREAM
            )
        if "free-models-per-day" in message or "daily" in limit_source:
            wait = hint if hint is not None else seconds_until_midnight(UTC, now)
            return Outcome(OutcomeKind.RATE_LIMIT, status, message, wait, daily_quota=True, scope=Scope.ACCOUNT)
        return Outcome(OutcomeKind.RATE_LIMIT, status, message, hint, daily_quota=bool(_DAILY.search(message)))
    if status == 402:
        afford = _AFFORD.search(message)
        if afford and int(afford.group(1)) > 0:
            return rejected(f"needs a smaller max_tokens: {message}", status)
        if hint is not None or _IN_FLIGHT.search(limit_source):
            return Outcome(OutcomeKind.RATE_LIMIT, status, f"in-flight budget: {message}", hint)
        return Outcome(OutcomeKind.NO_CREDITS, status, message)
    if status == 403:
        if _KEY_LIMIT.search(message):
            return Outcome(OutcomeKind.NO_CREDITS, status, message)
        if _BLOCKED.search(message) or MODERATION_WORDS.search(message) or "reasons" in meta or "patterns" in meta:
            return rejected(message, status)
    return classify_common(status, message, hint)


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


def _hint(headers: Mapping[str, str], body: Any, meta: Mapping[str, Any], now: float) -> float | None:
    """`Retry-After`, `X-RateLimit-Reset` (epoch ms), in the headers or copied into `metadata.headers`."""
    merged = lower_headers(headers)
    if isinstance(meta.get("headers"), dict):
        merged = {**lower_headers(meta["headers"]), **merged}
    for value in (
        retry_after_header(merged, now),
        epoch_reset(merged["x-ratelimit-reset"], now) if "x-ratelimit-reset" in merged else None,
        epoch_reset(meta["retry_after_seconds"], now) if "retry_after_seconds" in meta else None,
    ):
        if value is not None:
            return value
    availability = error_object(body).get("availability")
    if isinstance(availability, dict) and availability.get("retry_after") is not None:
        return epoch_reset(availability["retry_after"], now)
    return message_hint(error_message(body))


_REASONS = re.compile(r"gpt-oss|deepseek-r1|qwen3|qwq|magistral|/o\d|gpt-5", re.I)


def reasoning(model: str) -> tuple[dict[str, Any], int]:
    """OpenRouter normalises reasoning as `reasoning: {"effort": …}` (docs: Reasoning Tokens; the tokens count as
    output): its reasoning families get `low`, with 256 tokens for it. Other models get nothing added."""
    return ({"reasoning": {"effort": "low"}}, 256) if _REASONS.search(model) else ({}, 0)


def probe_outcome(body: Any) -> Outcome:
    """`GET /key` is 200 for a key that cannot pay for a request: read its remaining limit."""
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, dict):
        return transient("key info had no data", 200)
    remaining = data.get("limit_remaining")
    if isinstance(remaining, (int, float)) and not isinstance(remaining, bool) and remaining <= 0:
        return Outcome(OutcomeKind.NO_CREDITS, 200, f"key's credit limit is used up (limit {data.get('limit')})")
    free = " (free tier)" if data.get("is_free_tier") else ""
    return Outcome(OK.kind, 200, f"key accepted{free}")


class OpenRouterAdapter(OpenAICompatAdapter):
    provider = "openrouter"
    probe_path = "key"
    extra_headers: ClassVar[Mapping[str, str]] = {"X-Title": "llm-key-rotation"}
    classify = staticmethod(classify)

    def probe_outcome(self, body: Any) -> Outcome:
        return probe_outcome(body)

    def reasoning(self, model: str) -> tuple[dict[str, Any], int]:
        return reasoning(model)


SPEC = ProviderSpec(
    name="openrouter",
    title="OpenRouter",
    default_model="openai/gpt-oss-20b:free",
    default_base_url="https://openrouter.ai/api/v1",
    day_zone=UTC,
    classify=classify,
    adapter=OpenRouterAdapter,
    probe_vouches_for=frozenset({OutcomeKind.INVALID_KEY, OutcomeKind.NO_CREDITS}),
)
