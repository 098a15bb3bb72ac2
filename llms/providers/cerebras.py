"""Cerebras: how its answers read, and its adapter. Sources: docs/providers.md, "Provider facts".

- Errors are flat, not under `error`: `{"message", "type", "param", "code"}`; a bad key is 401 `wrong_api_key`,
  no key at all 403 `{"detail": "Not authenticated"}`; no credit 402 `payment_required`; an unknown model 404
  `model_not_found`.
- Limits are per **organization and per model**: 429 `request_quota_exceeded` / `token_quota_exceeded` with
  `param: "quota"`, the message naming "per minute" or "per day". A 429 `queue_exceeded` (`param: "queue"`) is the
  service's own traffic ("We're experiencing high traffic right now!"): every key is turned away alike.
- Every answer carries `x-ratelimit-{limit,remaining,reset}-{requests,tokens}-{minute,day}`; resets are seconds
  (floats). Tokens are counted up front from `max_completion_tokens`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC
from typing import Any

from llms.outcomes import Outcome, OutcomeKind, QuotaHint, Scope, rejected
from llms.providers.base import ProviderSpec
from llms.providers.generic import error_fields, message_of
from llms.providers.openai_compat import OpenAICompatAdapter
from llms.providers.openai_wire import QuotaHeaders, classify_answer
from llms.types import ChatRequest
from llms.wire import classify_common, lower_headers, parse_duration, retry_after_header


def classify(status: int, headers: Mapping[str, str], body: Any, now: float) -> Outcome:
    fields = error_fields(body)
    if status == 200 and not fields:
        return classify_answer(body)
    message = message_of(body)
    code = str(fields.get("code") or "")
    lowered = lower_headers(headers)
    hint = retry_after_header(lowered, now)
    if code == "queue_exceeded" or fields.get("param") == "queue":
        return Outcome(OutcomeKind.RATE_LIMIT, status, f"busy: {message}", hint, scope=Scope.UPSTREAM)
    if status == 429 or code.endswith("_quota_exceeded"):
        daily = "per day" in message.lower()
        window = "day" if daily else "minute"
        what = "tokens" if code.startswith("token") else "requests"
        if hint is None:
            hint = parse_duration(lowered.get(f"x-ratelimit-reset-{what}-{window}", ""))
        return Outcome(
            OutcomeKind.RATE_LIMIT,
            status,
            message,
            hint,
            daily_quota=daily,
            scope=Scope.MODEL,
            on_tokens=what == "tokens",
        )
    if status == 402 or code == "payment_required":
        return Outcome(OutcomeKind.NO_CREDITS, status, message, scope=Scope.ACCOUNT)
    if code == "wrong_api_key" or (status == 403 and "not authenticated" in message.lower()):
        return Outcome(OutcomeKind.INVALID_KEY, status, message)
    if code == "model_not_found":
        return rejected(message, status, config=True)
    return classify_common(status, message, hint)


QUOTA = QuotaHeaders(
    requests="x-ratelimit-remaining-requests-day",
    requests_reset="x-ratelimit-reset-requests-day",
    tokens="x-ratelimit-remaining-tokens-minute",
    tokens_reset="x-ratelimit-reset-tokens-minute",
    tokens_limit="x-ratelimit-limit-tokens-minute",
    per_day=True,
)


class CerebrasAdapter(OpenAICompatAdapter):
    provider = "cerebras"
    probe_path = "models"
    classify = staticmethod(classify)

    def quota(self, headers: Mapping[str, str], request: ChatRequest) -> QuotaHint | None:
        return QUOTA.read(headers)


SPEC = ProviderSpec(
    name="cerebras",
    title="Cerebras",
    default_model="gpt-oss-120b",
    default_base_url="https://api.cerebras.ai/v1",
    day_zone=UTC,
    classify=classify,
    adapter=CerebrasAdapter,
    limits_per_model=True,
)
