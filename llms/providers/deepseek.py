"""DeepSeek: how its answers read, and its adapter. Sources: docs/providers.md, "Provider facts".

- Errors are `{"error": {"message", "type", "param", "code"}}` with `code: "invalid_request_error"` for nearly
  everything, so the status and the message decide: 401 "Authentication Fails" (a bad key), 402 "Insufficient
  Balance" (the account's), 400 "Model Not Exist", 400 "Content Exists Risk" (moderation), 400 "This model's
  maximum context length is …", 503 "Server Overloaded" (every key alike).
- The only limit is on concurrent requests, **per account and per model**, whichever key is used; no rate-limit
  headers. Under load the server holds the connection, sending blank lines (or `: keep-alive` in a stream).
- `GET /user/balance` checks a key and its credit without spending tokens (`is_available`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC
from typing import Any

from llms.outcomes import OK, Outcome, OutcomeKind, Scope, rejected, transient
from llms.providers.base import ProviderSpec
from llms.providers.generic import error_fields, message_of
from llms.providers.openai_compat import OpenAICompatAdapter
from llms.providers.openai_wire import classify_answer
from llms.wire import classify_common, lower_headers, retry_after_header


def classify(status: int, headers: Mapping[str, str], body: Any, now: float) -> Outcome:
    if status == 200 and not error_fields(body):
        return classify_answer(body)
    message = message_of(body)
    hint = retry_after_header(lower_headers(headers), now)
    lowered = message.lower()
    if status == 429:
        return Outcome(OutcomeKind.RATE_LIMIT, status, message, hint, scope=Scope.MODEL)
    if status == 402 or "insufficient balance" in lowered:
        return Outcome(OutcomeKind.NO_CREDITS, status, message, scope=Scope.ACCOUNT)
    if "model not exist" in lowered:
        return rejected(message, status, config=True)
    if "content exists risk" in lowered:
        return rejected(f"refused by moderation: {message}", status)
    if status == 503:
        return Outcome(OutcomeKind.TRANSIENT, status, f"overloaded: {message}", hint, scope=Scope.UPSTREAM)
    return classify_common(status, message, hint)


def probe_outcome(body: Any) -> Outcome:
    """`GET /user/balance` answers 200 for a key whose account cannot pay: read `is_available`."""
    if not isinstance(body, dict) or "is_available" not in body:
        return transient("balance answer had no is_available", 200)
    if body["is_available"] is not True:
        return Outcome(OutcomeKind.NO_CREDITS, 200, "the account has no balance for API calls")
    return Outcome(OK.kind, 200, "key accepted")


class DeepSeekAdapter(OpenAICompatAdapter):
    provider = "deepseek"
    probe_path = "user/balance"
    classify = staticmethod(classify)

    def probe_outcome(self, body: Any) -> Outcome:
        return probe_outcome(body)


SPEC = ProviderSpec(
    name="deepseek",
    title="DeepSeek",
    default_model="deepseek-v4-flash",
    default_base_url="https://api.deepseek.com",
    day_zone=UTC,
    classify=classify,
    adapter=DeepSeekAdapter,
    probe_vouches_for=frozenset({OutcomeKind.INVALID_KEY, OutcomeKind.NO_CREDITS}),
    limits_per_model=True,
)
