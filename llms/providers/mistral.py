"""Mistral (La Plateforme): how its answers read, and its adapter. Sources: docs/providers.md, "Provider facts".

- A bad key is 401 with `{"detail": "Invalid API Key"}`, `{"detail": "Unauthorized"}` or `{"message":
  "Unauthorized", "request_id"}`: no `code`, so the status decides.
- A 429 is `{"object": "error", "message": "Rate limit exceeded", "type": "rate_limited", "code": "1300"}` (older:
  `{"message": "Requests rate limit exceeded"}`). Limits are set per **organization** (per model is not
  documented). "Service tier capacity exceeded for this model." is the model's capacity, not the key's quota.
- Successes carry `x-ratelimit-{limit,remaining}-req-minute` (`req`, not `requests`), `…-tokens-minute` and
  `…-tokens-month`; a month's tokens used up means 429s until the next month.
- An unknown model is a 400 `invalid_model` (code "1500"); unknown fields are a 422 ("Extra inputs are not
  permitted"): Mistral is stricter than the others, so another provider may take the same request.
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
from llms.wire import classify_common, lower_headers, retry_after_header, seconds_until_next_month


def classify(status: int, headers: Mapping[str, str], body: Any, now: float) -> Outcome:
    fields = error_fields(body)
    if status == 200 and not fields:
        return classify_answer(body)
    message = message_of(body)
    lowered = lower_headers(headers)
    hint = retry_after_header(lowered, now)
    if "capacity exceeded" in message.lower():
        return Outcome(OutcomeKind.RATE_LIMIT, status, f"model busy: {message}", hint, scope=Scope.UPSTREAM)
    if status == 429:
        if lowered.get("x-ratelimit-remaining-tokens-month", "").strip() == "0":
            until = seconds_until_next_month(UTC, now)
            return Outcome(
                OutcomeKind.RATE_LIMIT, status, f"monthly tokens used up: {message}", until, daily_quota=True
            )
        return Outcome(OutcomeKind.RATE_LIMIT, status, message, hint)
    if status == 401:
        return Outcome(OutcomeKind.INVALID_KEY, status, message or "unauthorized")
    if fields.get("type") == "invalid_model" or str(fields.get("code")) == "1500":
        return rejected(message, status, config=True)
    if status == 422:
        return rejected(message or "request refused (422)", status)
    return classify_common(status, message, hint)


QUOTA = QuotaHeaders(
    requests="x-ratelimit-remaining-req-minute",
    requests_reset="x-ratelimit-reset-req-minute",
    tokens="x-ratelimit-remaining-tokens-minute",
    tokens_reset="x-ratelimit-reset-tokens-minute",
    requests_limit="x-ratelimit-limit-req-minute",
    tokens_limit="x-ratelimit-limit-tokens-minute",
    default_reset=60.0,  # the windows are a minute; reset headers are not documented
)


class MistralAdapter(OpenAICompatAdapter):
    provider = "mistral"
    probe_path = "models"
    classify = staticmethod(classify)

    def quota(self, headers: Mapping[str, str], request: ChatRequest) -> QuotaHint | None:
        return QUOTA.read(headers)


SPEC = ProviderSpec(
    name="mistral",
    title="Mistral",
    default_model="mistral-small-latest",
    default_base_url="https://api.mistral.ai/v1",
    day_zone=UTC,
    classify=classify,
    adapter=MistralAdapter,
)
