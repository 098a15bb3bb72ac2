"""A drop-in LLM client that rotates API keys across OpenRouter, Groq and Gemini.

from llms import get_smart_client
client = get_smart_client()
print(client.chat([{"role": "user", "content": "Hello"}], temperature=0.3, max_tokens=500))
"""

from llms.errors import (
    AllKeysExhaustedError,
    Attempt,
    LLMError,
    Outcome,
    OutcomeKind,
    ProviderError,
    RequestRejectedError,
    StreamInterruptedError,
)
from llms.key_manager import KeyStatus
from llms.smart_client import ChatStream, SmartClient, get_smart_client, reset_smart_client
from llms.state import StoreHealth
from llms.types import ChatResult, Usage

__all__ = [
    "AllKeysExhaustedError",
    "Attempt",
    "ChatResult",
    "ChatStream",
    "KeyStatus",
    "LLMError",
    "Outcome",
    "OutcomeKind",
    "ProviderError",
    "RequestRejectedError",
    "SmartClient",
    "StoreHealth",
    "StreamInterruptedError",
    "Usage",
    "get_smart_client",
    "reset_smart_client",
]
