"""The provider catalogue: one module per provider, one line each here; the first three are the default fallback
order (`LLM_PROVIDER_ORDER`), the others are presets a user names there.

Adding an OpenAI-compatible provider is a module like `groq.py` (its classifier, quota headers, probe and
`SPEC`) plus its line below; settings, the key manager, the CLI and the dashboard read everything else from
its `ProviderSpec`. A name in `LLM_PROVIDER_ORDER` that is not here is served by `generic.spec_for(name)`.
"""

from __future__ import annotations

from collections.abc import Mapping

from llms.providers import cerebras, deepseek, gemini, generic, groq, local, mistral, openrouter
from llms.providers.base import AwaitedAdapter, Endpoint, ProviderAdapter, ProviderSpec, awaited

PROVIDERS: Mapping[str, ProviderSpec] = {
    openrouter.SPEC.name: openrouter.SPEC,
    groq.SPEC.name: groq.SPEC,
    gemini.SPEC.name: gemini.SPEC,
    cerebras.SPEC.name: cerebras.SPEC,
    mistral.SPEC.name: mistral.SPEC,
    deepseek.SPEC.name: deepseek.SPEC,
    local.OLLAMA.name: local.OLLAMA,
    local.VLLM.name: local.VLLM,
}
DEFAULT_ORDER: tuple[str, ...] = (openrouter.SPEC.name, groq.SPEC.name, gemini.SPEC.name)

__all__ = [
    "DEFAULT_ORDER",
    "PROVIDERS",
    "AwaitedAdapter",
    "Endpoint",
    "ProviderAdapter",
    "ProviderSpec",
    "awaited",
    "spec",
]


def spec(name: str) -> ProviderSpec:
    """A built-in provider's facts, or those every OpenAI-compatible server shares for any other name."""
    return PROVIDERS.get(name) or generic.spec_for(name)
