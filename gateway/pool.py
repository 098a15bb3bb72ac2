"""The gateway's client: one `SmartClient` over the store, every request's `model` a route of it.

A request's `model` is a selector of `llms.routing` (`auto`, an alias, a provider, `provider/model`, a model id):
the one client serves them all, so cooldowns, limits, in-flight counts and the request log are one pool whichever
name a request used, and the background work (alerts webhook, prober) runs once.
"""

from __future__ import annotations

from config.settings import Settings
from llms import SmartClient
from llms.state import StateStore, store_from_url


class ClientPool:
    """The client and the store it shares with every other process (the caller owns the pool's lifetime)."""

    def __init__(self, settings: Settings, store: StateStore | None = None) -> None:
        self.settings = settings
        self._own_store = store is None
        self.store = store or store_from_url(settings.state_url, settings.state_prefix)
        self.auto = SmartClient(settings, store=self.store)
        self.providers = tuple(p for p in settings.provider_order if settings.providers[p].keys)

    def resolve(self, name: str) -> SmartClient | None:
        """The client, when `name` is a model it can serve (None: answer 404 with what is served)."""
        try:
            self.auto.route(name)
        except ValueError:
            return None
        return self.auto

    def model_ids(self) -> list[tuple[str, str]]:
        """(id, owner) for `GET /v1/models`: `auto`, aliases, each provider, each `provider/model` of the
        catalogues, each bare model id, then each embedding model (as `provider/model` and bare)."""
        chat = self.auto.models()
        seen = {i for i, _ in chat}
        return chat + [(i, owner) for i, owner in self.auto.embedding_models() if i not in seen]

    async def aclose_connections(self) -> None:
        """Close the connections the client's awaited calls opened, from the event loop that opened them (the
        app's lifespan); the client stays usable."""
        await self.auto.aclose_connections()

    def close(self) -> None:
        self.auto.close()
        if self._own_store:
            self.store.close()
