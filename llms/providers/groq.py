"""Groq: how its answers read, and its adapter. Sources: docs/providers.md, "Provider facts".

- `x-ratelimit-*-requests` count requests per **day**; `x-ratelimit-*-tokens` count tokens per **minute**, the
  limit most users hit: a request goes only where the tokens left pay for it (`llms.quota.TokenBudget`), instead
  of earning a 429.
- Limits and spend caps belong to the **organization**. A spend cap answers 400 `blocked_api_access` (documented)
  or `spend_limit_reached` (what users receive) for every key of it until the 1st of the month.
- 429 messages name the limit (RPM, RPD, TPM, TPD, OTPM) and end "Please try again in 7.66s" (also `817.5ms`,
  `1h15m4.753s`). "Request too large … reduce max_tokens" is about the request, even as a 429.
- 498 `capacity_exceeded` (flex tier) is transient; 403 "Access denied. Please check your network settings." is
  the network's, not the key's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC
from typing import Any

from llms.outcomes import Outcome, OutcomeKind, QuotaHint, Scope, rejected, transient
from llms.providers.base import ProviderSpec
from llms.providers.openai_compat import OpenAICompatAdapter
from llms.providers.openai_wire import QuotaHeaders, classify_answer
from llms.types import ChatRequest
from llms.wire import (
    TOKEN_LIMIT_WORDS,
    classify_common,
    error_message,
    error_object,
    lower_headers,
    message_hint,
    moment_grid,
    retry_after_header,
    seconds_until_next_month,
)

_DAILY = re.compile(r"per day|\((RPD|TPD)\)", re.I)
_SPEND = re.compile(r"spend (alert|limit)|blocked api access", re.I)
_TOO_LARGE = re.compile(r"request too large", re.I)
_NETWORK = re.compile(r"check your network settings", re.I)


def classify(status: int, headers: Mapping[str, str], body: Any, now: float) -> Outcome:
    error = error_object(body)
    if status == 200 and not error:
        return classify_answer(body)
    message = error_message(body)
    code = str(error.get("code") or "")
    lowered = lower_headers(headers)
    precise = message_hint(message)  # "try again in 7.66s": to the centisecond, where `retry-after` is whole seconds
    hint = precise if precise is not None else retry_after_header(lowered, now)

    if code in ("blocked_api_access", "spend_limit_reached") or _SPEND.search(message):
        until = seconds_until_next_month(UTC, now)
        return Outcome(
            OutcomeKind.SPEND_CAP, status, f"spend cap: {message}", until, scheduled=True, scope=Scope.ACCOUNT
        )
    if _TOO_LARGE.search(message):
        return rejected(message, status)
    if status == 429:
        daily = bool(_DAILY.search(message))
        grid = None if daily or precise is None else moment_grid(now + precise)  # (a whole second is too coarse)
        on_tokens = bool(TOKEN_LIMIT_WORDS.search(message))
        return Outcome(
            OutcomeKind.RATE_LIMIT,
            status,
            message,
            hint,
            daily_quota=daily,
            scope=Scope.MODEL,
            grid=grid,
            on_tokens=on_tokens,
        )
    if code in ("model_decommissioned", "model_not_found"):
        return rejected(message, status, config=True)
    if code == "organization_restricted":
        return Outcome(OutcomeKind.INVALID_KEY, status, message, scope=Scope.ACCOUNT)
    if status == 403 and code == "model_permission_blocked_org":
        return Outcome(OutcomeKind.NO_ACCESS, status, message, scope=Scope.MODEL)
    if status == 403 and _NETWORK.search(message):
        return Outcome(OutcomeKind.TRANSIENT, status, f"network blocked: {message}", scope=Scope.PROVIDER)
    if status == 498:
        return transient(f"flex capacity exceeded: {message}", status)
    return classify_common(status, message, hint)


QUOTA = QuotaHeaders(
    requests="x-ratelimit-remaining-requests",  # per day
    requests_reset="x-ratelimit-reset-requests",
    tokens="x-ratelimit-remaining-tokens",  # per minute
    tokens_reset="x-ratelimit-reset-tokens",
    tokens_limit="x-ratelimit-limit-tokens",
    per_day=True,  # the per-minute request limit (e.g. 30) is never reported
)


def reasoning(model: str) -> tuple[dict[str, Any], int]:
    """Groq's reasoning models (docs: Reasoning): `gpt-oss` takes `reasoning_effort` low/medium/high only (default
    medium; `none` is a 400) — low, with 256 tokens for it. Which values Qwen 3.6 takes is not documented: it gets
    nothing added."""
    return ({"reasoning_effort": "low"}, 256) if "gpt-oss" in model.lower() else ({}, 0)


def quota(headers: Mapping[str, str], request: ChatRequest) -> QuotaHint | None:
    """Requests left today, and this minute's tokens left."""
    return QUOTA.read(headers)


class GroqAdapter(OpenAICompatAdapter):
    provider = "groq"
    probe_path = "models"
    classify = staticmethod(classify)

    def quota(self, headers: Mapping[str, str], request: ChatRequest) -> QuotaHint | None:
        return quota(headers, request)

    def reasoning(self, model: str) -> tuple[dict[str, Any], int]:
        return reasoning(model)


SPEC = ProviderSpec(
    name="groq",
    key_prefix="gsk_",
    title="Groq",
    default_model="openai/gpt-oss-20b",
    default_base_url="https://api.groq.com/openai/v1",
    day_zone=UTC,
    classify=classify,
    adapter=GroqAdapter,
    limits_per_model=True,
)
