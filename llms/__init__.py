"""A drop-in LLM client that rotates API keys across OpenRouter, Groq and Gemini.

from llms import get_smart_client
client = get_smart_client()
print(client.chat([{"role": "user", "content": "Hello"}], temperature=0.3, max_tokens=500))

Names are loaded on first use (PEP 562), so importing a submodule such as `llms.providers` (which the settings
module reads for provider names and defaults) does not build the whole client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "AllKeysExhaustedError": "llms.exceptions",
    "LLMError": "llms.exceptions",
    "ProviderError": "llms.exceptions",
    "RequestRejectedError": "llms.exceptions",
    "StreamInterruptedError": "llms.exceptions",
    "Attempt": "llms.outcomes",
    "Outcome": "llms.outcomes",
    "OutcomeKind": "llms.outcomes",
    "KeyStatus": "llms.key_status",
    "PARKED_REASONS": "llms.key_states",
    "KeyState": "llms.key_states",
    "ProviderStatus": "llms.status",
    "AsyncChatStream": "llms.streams",
    "ChatStream": "llms.streams",
    "SmartClient": "llms.smart_client",
    "get_smart_client": "llms.smart_client",
    "latency_quantile": "llms.status",
    "reset_smart_client": "llms.smart_client",
    "StoreHealth": "llms.state",
    "ABANDONED": "llms.state.base",
    "client_time": "llms.clock",
    "ChatResult": "llms.types",
    "EmbeddingResult": "llms.types",
    "Usage": "llms.types",
}

__all__ = [
    "ABANDONED",
    "PARKED_REASONS",
    "AllKeysExhaustedError",
    "AsyncChatStream",
    "Attempt",
    "ChatResult",
    "ChatStream",
    "EmbeddingResult",
    "KeyState",
    "KeyStatus",
    "LLMError",
    "Outcome",
    "OutcomeKind",
    "ProviderError",
    "ProviderStatus",
    "RequestRejectedError",
    "SmartClient",
    "StoreHealth",
    "StreamInterruptedError",
    "Usage",
    "client_time",
    "get_smart_client",
    "latency_quantile",
    "reset_smart_client",
]

if TYPE_CHECKING:
    from llms.clock import client_time
    from llms.exceptions import (
        AllKeysExhaustedError,
        LLMError,
        ProviderError,
        RequestRejectedError,
        StreamInterruptedError,
    )
    from llms.key_states import PARKED_REASONS, KeyState
    from llms.key_status import KeyStatus
    from llms.outcomes import Attempt, Outcome, OutcomeKind
    from llms.smart_client import SmartClient, get_smart_client, reset_smart_client
    from llms.state import StoreHealth
    from llms.state.base import ABANDONED
    from llms.status import ProviderStatus, latency_quantile
    from llms.streams import AsyncChatStream, ChatStream
    from llms.types import ChatResult, EmbeddingResult, Usage


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'llms' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
