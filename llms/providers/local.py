"""A server on this machine or network speaking OpenAI's API: Ollama and vLLM. Sources: docs/providers.md.

- No key is needed (Ollama ignores one; vLLM checks one only when started with `--api-key`, answering 401
  `{"error": "Unauthorized"}`, a string): with none configured the provider gets one placeholder key.
- Errors: Ollama `{"error": {"message", "type": "invalid_request_error" | "not_found_error" | "api_error"}}`;
  vLLM `{"error": {"message", "type": "BadRequestError", "code": 400}}` (older: flat `{"object": "error", …}`).
  A model that is not pulled or served is a 404: a configuration problem.
- A full queue is a 503 ("server busy … maximum pending requests exceeded"): the server's, not a key's.
- No default model (whatever was pulled): `OLLAMA_CHAT_MODEL` / `VLLM_CHAT_MODEL` are required.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from datetime import UTC
from typing import Any

from llms.outcomes import Outcome, OutcomeKind, Scope
from llms.providers.base import ProviderSpec
from llms.providers.generic import GenericAdapter, error_fields, hint_of, message_of
from llms.providers.openai_wire import classify_answer
from llms.wire import classify_common


def classify(status: int, headers: Mapping[str, str], body: Any, now: float) -> Outcome:
    if status == 200 and not error_fields(body):
        return classify_answer(body)
    message = message_of(body)
    hint = hint_of(headers, message, now)
    if status == 503:
        return Outcome(OutcomeKind.TRANSIENT, status, f"server busy: {message}", hint, scope=Scope.UPSTREAM)
    return classify_common(status, message, hint)


class LocalAdapter(GenericAdapter):
    classify = staticmethod(classify)


def _spec(name: str, title: str, base_url: str) -> ProviderSpec:
    return ProviderSpec(
        name=name,
        title=title,
        default_model="",  # required: whatever the server has
        default_base_url=base_url,
        day_zone=UTC,
        classify=classify,
        adapter=functools.partial(LocalAdapter, name=name),
        keyless=True,
    )


OLLAMA = _spec("ollama", "Ollama", "http://localhost:11434/v1")
VLLM = _spec("vllm", "vLLM", "http://localhost:8000/v1")
