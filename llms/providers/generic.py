"""Any OpenAI-compatible provider named in `LLM_PROVIDER_ORDER` without a module of its own.

Configured by `<NAME>_BASE_URL` and `<NAME>_CHAT_MODEL` (both required), `<NAME>_API_KEY_N` and `<NAME>_MODELS`.
It is read by the rules every OpenAI-compatible server shares (`llms.wire.classify_common`): the error is
`{"error": {...}}`, `{"error": "..."}` (vLLM), or flat `{"message", "code"}` / `{"detail"}` (FastAPI servers); a 429
rests the key for `Retry-After` or `x-ratelimit-reset-requests`, else the cooldown policy learns the window; the
quota headers OpenAI made common (`x-ratelimit-remaining-requests` with a Go-duration reset) are read when sent.
Rate limits are taken as the key's, for every model: nothing says more.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from datetime import UTC
from typing import Any

from llms.outcomes import Outcome, QuotaHint
from llms.providers.base import Endpoint, ProviderSpec
from llms.providers.openai_compat import OpenAICompatAdapter
from llms.providers.openai_wire import QuotaHeaders, classify_answer
from llms.types import ChatRequest
from llms.wire import (
    classify_common,
    error_message,
    lower_headers,
    message_hint,
    most_precise,
    parse_duration,
    retry_after_header,
)


def error_fields(body: Any) -> dict[str, Any]:
    """The error's fields, wherever the server put them: `{"error": {...}}`, or the body itself when it is a flat
    error (`{"message", "type", "code"}`, `{"detail"}`) rather than an answer."""
    if isinstance(body, dict):
        if isinstance(body.get("error"), dict):
            return body["error"]
        if "choices" not in body and ("message" in body or "detail" in body or isinstance(body.get("error"), str)):
            return body
    return {}


def message_of(body: Any) -> str:
    fields = error_fields(body)
    if "detail" in fields and "message" not in fields:
        return error_message({"message": str(fields["detail"])})
    return error_message(body)


def hint_of(headers: Mapping[str, str], message: str, now: float) -> float | None:
    """`Retry-After`, else how long until the request window resets, else a wait named in the message."""
    lowered = lower_headers(headers)
    return most_precise(
        retry_after_header(lowered, now),
        parse_duration(lowered.get("x-ratelimit-reset-requests", "")),
        message_hint(message),
    )


def classify(status: int, headers: Mapping[str, str], body: Any, now: float) -> Outcome:
    if status == 200 and not error_fields(body):
        return classify_answer(body)
    message = message_of(body)
    return classify_common(status, message, hint_of(headers, message, now))


OPENAI_QUOTA = QuotaHeaders(
    requests="x-ratelimit-remaining-requests",
    requests_reset="x-ratelimit-reset-requests",
    tokens="x-ratelimit-remaining-tokens",
    tokens_reset="x-ratelimit-reset-tokens",
    requests_limit="x-ratelimit-limit-requests",
    tokens_limit="x-ratelimit-limit-tokens",
)
"""OpenAI's quota headers, read when the server sends them: requests and tokens left, the window's size, and when
each limit is back to its initial state (OpenAI's words for the resets)."""


class GenericAdapter(OpenAICompatAdapter):
    provider = "generic"
    probe_path = "models"
    classify = staticmethod(classify)

    def __init__(self, endpoint: Endpoint, name: str = "generic") -> None:
        super().__init__(endpoint)
        self.provider = name

    def quota(self, headers: Mapping[str, str], request: ChatRequest) -> QuotaHint | None:
        return OPENAI_QUOTA.read(headers)


@functools.cache
def spec_for(name: str) -> ProviderSpec:
    """The facts of a provider known only by its configuration: what every OpenAI-compatible server shares."""
    return ProviderSpec(
        name=name,
        title=name.replace("_", " ").title(),
        default_model="",  # required: <NAME>_CHAT_MODEL
        default_base_url="",  # required: <NAME>_BASE_URL
        day_zone=UTC,
        classify=classify,
        adapter=functools.partial(GenericAdapter, name=name),
    )
