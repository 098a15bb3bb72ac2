"""Which (provider, model) pairs a call may be answered by, in order: the model selector, resolved.

A selector is one of (checked in this order):
- `None` / `"auto"`: every provider in `LLM_PROVIDER_ORDER` with its default model (`<PROVIDER>_CHAT_MODEL`);
- an alias (`LLM_ALIAS_<NAME>`, case-insensitive): its targets, in the order given;
- a provider name (`"groq"`): that provider's default model;
- `"provider/model"` (`"groq/openai/gpt-oss-120b"`, `"openrouter/meta-llama/llama-3.3-70b-instruct:free"`):
  exactly that model there, listed in its catalogue or not (providers add models faster than anyone lists them);
- a bare model id (`"openai/gpt-oss-20b"`): every provider whose catalogue (`<PROVIDER>_MODELS` and its default)
  has it, in provider order.
Anything else is a `ValueError` raised before any network call, naming what is served. Only providers with keys
can serve. The failover loop goes through the targets as `auto` goes through providers.

Embeddings (`embedding_route`) are routed the same way over each provider's one embedding model
(`<PROVIDER>_EMBEDDING_MODEL`): `None`/`auto` is every provider that has one, in order; a provider name is its
embedding model; `provider/model` is exactly that; a bare id is every provider whose embedding model it is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from config.settings import ProviderSettings

AUTO = "auto"


@dataclass(frozen=True, slots=True)
class Target:
    """One provider and the model to ask it for."""

    provider: str
    model: str

    def __str__(self) -> str:
        return f"{self.provider}/{self.model}"


Route = tuple[Target, ...]


class Router:
    """Resolves selectors against the providers that have keys (in fallback order), their catalogues and aliases."""

    def __init__(
        self,
        providers: Mapping[str, ProviderSettings],
        order: Sequence[str],
        aliases: Mapping[str, Sequence[tuple[str, str]]],
    ) -> None:
        self._order = tuple(order)
        self._providers = providers
        self.auto: Route = tuple(Target(p, providers[p].model) for p in self._order)
        self._aliases = {
            name: route
            for name, targets in aliases.items()
            if (route := tuple(Target(p, m) for p, m in targets if p in self._order))
        }
        self._routes: dict[str, Route] = {AUTO: self.auto}  # every selector resolved so far (a few dozen at most)
        self.embedding_auto: Route = tuple(
            Target(p, model) for p in self._order if (model := providers[p].embedding_model)
        )

    def route(self, selector: str | None) -> Route:
        if selector is None:
            return self.auto
        found = self._routes.get(selector)
        if found is None:
            found = self._resolve(selector)
            if len(self._routes) < 10_000:
                self._routes[selector] = found
        return found

    def _resolve(self, selector: str) -> Route:
        if not isinstance(selector, str) or not selector.strip():
            raise ValueError(f"model must be a non-empty string or None, got {selector!r}")
        name = selector.strip()
        if name.lower() == AUTO:
            return self.auto
        alias = self._aliases.get(name.lower())
        if alias is not None:
            return alias
        if name.lower() in self._order:
            provider = name.lower()
            return (Target(provider, self._providers[provider].model),)
        prefix, slash, model = name.partition("/")
        if slash and prefix.lower() in self._providers:
            provider = prefix.lower()
            if provider not in self._order:
                raise ValueError(f"model {name!r}: {provider} has no API keys configured; {self.served_text()}")
            if not model.strip():
                raise ValueError(f"model {name!r} names no model after '{prefix}/'")
            return (Target(provider, model.strip()),)
        listed = tuple(Target(p, name) for p in self._order if name in self._providers[p].models)
        if listed:
            return listed
        raise ValueError(f"unknown model {name!r}; {self.served_text()}")

    def served(self) -> list[tuple[str, str]]:
        """Every selector that needs no provider prefix, with who serves it: `auto`, aliases, providers, each
        `provider/model` of the catalogues and each bare model id (what the gateway's `/v1/models` lists)."""
        ids: list[tuple[str, str]] = [(AUTO, "llm-gateway")]
        ids += [(name, "alias") for name in self._aliases]
        ids += [(p, p) for p in self._order]
        ids += [(f"{p}/{m}", p) for p in self._order for m in self._providers[p].models]
        seen = {i for i, _ in ids}
        bare = dict.fromkeys(m for p in self._order for m in self._providers[p].models)
        ids += [(m, "llm-gateway") for m in bare if m not in seen]
        return ids

    def served_text(self) -> str:
        names = [AUTO, *self._aliases, *self._order]
        models = [f"{p}/{m}" for p in self._order for m in self._providers[p].models]
        return f"use one of: {', '.join(names + models)} (or any provider/model)"

    def embedding_route(self, selector: str | None) -> Route:
        """The targets an `embed` call with this selector tries; `ValueError` naming the embedding models served."""
        if selector is None or (isinstance(selector, str) and selector.strip().lower() == AUTO):
            if not self.embedding_auto:
                raise ValueError(f"no provider with keys has an embedding model; {self.embedding_served_text()}")
            return self.embedding_auto
        if not isinstance(selector, str) or not selector.strip():
            raise ValueError(f"model must be a non-empty string or None, got {selector!r}")
        name = selector.strip()
        if name.lower() in self._order:
            provider = name.lower()
            model = self._providers[provider].embedding_model
            if model is None:
                raise ValueError(
                    f"{provider} has no embedding model (set {provider.upper()}_EMBEDDING_MODEL); "
                    f"{self.embedding_served_text()}"
                )
            return (Target(provider, model),)
        prefix, slash, model = name.partition("/")
        if slash and prefix.lower() in self._order and model.strip():
            return (Target(prefix.lower(), model.strip()),)
        listed = tuple(Target(p, name) for p in self._order if self._providers[p].embedding_model == name)
        if listed:
            return listed
        raise ValueError(f"unknown embedding model {name!r}; {self.embedding_served_text()}")

    def embedding_served(self) -> list[tuple[str, str]]:
        """Each embedding model as `provider/model` and as a bare id, with who serves it (for `/v1/models`)."""
        ids = [(str(t), t.provider) for t in self.embedding_auto]
        ids += [(m, "llm-gateway") for m in dict.fromkeys(t.model for t in self.embedding_auto)]
        return ids

    def embedding_served_text(self) -> str:
        served = [i for i, _ in self.embedding_served()]
        if not served:
            return "no embedding model is served (set <PROVIDER>_EMBEDDING_MODEL for a provider with keys)"
        return f"embedding models served: {', '.join(served)} (or any provider/model)"
