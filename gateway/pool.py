"""Which `SmartClient` answers a `model` name: `auto`, a provider (`groq`), or `provider/model`.

`SmartClient` has no per-request provider choice, so pinning is done with one client per pinned provider order,
built from the same settings (`provider_order` replaced) over the SAME store object: cooldowns, limits, in-flight
counts and the request log stay one pool whichever name a request used. Only the `auto` client runs the
background work (alerts webhook, prober), so pinned clients add no second watcher.
"""

from __future__ import annotations

from dataclasses import replace

from config.settings import Settings
from llms import SmartClient
from llms.state import StateStore, store_from_url


class ClientPool:
    """The `auto` client plus one pinned client per configured provider, all on one store."""

    def __init__(self, settings: Settings, store: StateStore | None = None) -> None:
        self.settings = settings
        self._own_store = store is None
        self.store = store or store_from_url(settings.state_url, settings.state_prefix)
        self.auto = SmartClient(settings, store=self.store)
        self.providers = tuple(p for p in settings.provider_order if settings.providers[p].keys)
        quiet = replace(settings, alert_webhook=None, probe_interval=0.0)
        self.pinned = {p: SmartClient(replace(quiet, provider_order=(p,)), store=self.store) for p in self.providers}
        self.models = {p: settings.providers[p].model for p in self.providers}
        self._by_model: dict[str, SmartClient] = {}
        self._quiet = quiet
        for model in dict.fromkeys(self.models.values()):
            order = tuple(p for p in self.providers if self.models[p] == model)
            self._by_model[model] = self.pinned[order[0]] if len(order) == 1 else self._client(order)

    def _client(self, order: tuple[str, ...]) -> SmartClient:
        return SmartClient(replace(self._quiet, provider_order=order), store=self.store)

    def resolve(self, name: str) -> SmartClient | None:
        """The client for a request's `model`, or None when the pool cannot serve that name.

        `auto`: the configured order. `groq`: only Groq, its configured model. `groq/<model>`: the same, and the
        model must be the configured one (a pinned model names what the keys are set up for; serving arbitrary
        models would need a client per name). A bare configured model name (`openai/gpt-oss-20b`) goes to the
        providers configured with it, so programs that hard-code a model name work unchanged."""
        if name == "auto":
            return self.auto
        client = self.pinned.get(name)
        if client is not None:
            return client
        provider, slash, model = name.partition("/")
        if slash and self.models.get(provider) == model:
            return self.pinned[provider]
        return self._by_model.get(name)

    def model_ids(self) -> list[tuple[str, str]]:
        """(id, owner) for `GET /v1/models`: `auto`, each provider, each `provider/model`, each bare model name."""
        ids = [("auto", "llm-gateway")]
        ids += [(p, p) for p in self.providers]
        ids += [(f"{p}/{self.models[p]}", p) for p in self.providers]
        seen = {i for i, _ in ids}
        ids += [(m, "llm-gateway") for m in self._by_model if m not in seen]
        return ids

    def _clients(self) -> list[SmartClient]:
        return list({id(c): c for c in (self.auto, *self.pinned.values(), *self._by_model.values())}.values())

    async def aclose_connections(self) -> None:
        """Close the connections the clients' awaited calls opened, from the event loop that opened them (the
        app's lifespan); the clients stay usable."""
        for client in self._clients():
            await client.aclose_connections()

    def close(self) -> None:
        for client in self._clients():
            client.close()
        if self._own_store:
            self.store.close()
