"""The provider catalogue: one module per provider, one line each here, in the default fallback order.

Adding an OpenAI-compatible provider is a module like `groq.py` (its classifier, quota headers, probe and
`SPEC`) plus its line below; settings, the key manager, the CLI and the dashboard read everything else from
its `ProviderSpec`.
"""

from __future__ import annotations

from collections.abc import Mapping

from llms.providers import gemini, groq, openrouter
from llms.providers.base import Endpoint, ProviderAdapter, ProviderSpec

PROVIDERS: Mapping[str, ProviderSpec] = {
    openrouter.SPEC.name: openrouter.SPEC,
    groq.SPEC.name: groq.SPEC,
    gemini.SPEC.name: gemini.SPEC,
}

__all__ = ["PROVIDERS", "Endpoint", "ProviderAdapter", "ProviderSpec", "spec"]


def spec(name: str) -> ProviderSpec:
    try:
        return PROVIDERS[name]
    except KeyError:
        raise KeyError(f"unknown provider {name!r}; known: {', '.join(PROVIDERS)}") from None
