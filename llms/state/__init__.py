"""Key-state stores, chosen by URL scheme: `sqlite://` (the default; every process of one machine), `memory://`
(this process), `redis://` / `rediss://` (every machine).

Backends register their schemes when their module is imported (`StateStore.SCHEMES`); `_MODULES` says which
module to import for a scheme, so a Redis-less install never imports `redis`.
"""

from __future__ import annotations

import importlib

from llms.state.base import (
    BACKENDS,
    CooldownReason,
    EventKind,
    KeyEvent,
    KeyRecord,
    StateError,
    StateStore,
    StoreHealth,
)

_MODULES = {
    "memory": "llms.state.memory",
    "sqlite": "llms.state.sqlite",
    "redis": "llms.state.redis",
    "rediss": "llms.state.redis",
}

__all__ = [
    "CooldownReason",
    "EventKind",
    "KeyEvent",
    "KeyRecord",
    "StateError",
    "StateStore",
    "StoreHealth",
    "store_from_url",
]


def store_from_url(url: str, prefix: str = "llmkeys", *, failover: bool = True) -> StateStore:
    """The backend for `url`. A shared backend comes wrapped in a failover to local memory (so no call fails
    because the store is down) unless `failover=False`, which tests use to exercise the bare backend."""
    scheme = url.split("://", 1)[0].lower()
    if scheme not in _MODULES:
        known = ", ".join(f"{s}://" for s in _MODULES)
        raise StateError(f"LLM_STATE_URL has unknown scheme {scheme!r}; supported: {known}")
    importlib.import_module(_MODULES[scheme])
    backend = BACKENDS[scheme].from_url(url, prefix)
    if not backend.SHARED or not failover:
        return backend
    from llms.state.failover import FailoverStore
    from llms.state.memory import MemoryStore

    return FailoverStore(backend, MemoryStore())
