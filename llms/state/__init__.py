"""Key-state stores, chosen by URL scheme: `sqlite://` (the default; every process of one machine), `memory://`
(this process), `redis://` / `rediss://` (every machine).

A backend is one module: its `StateStore` subclass names its schemes (`SCHEMES`, registered when the module is
imported), checks and describes its URL (`check_url`, `describe`) and builds itself (`from_url`). `MODULES` is the
one line per backend that says where to find a scheme, so only the backend in use is imported (a Redis-less install
never imports `redis`), and settings, the status page and the tests all read this registry.
"""

from __future__ import annotations

import importlib

from llms.state.base import EventKind, KeyEvent, KeyRecord
from llms.state.store import BACKENDS, StateError, StateStore, StoreHealth

MODULES: dict[str, str] = {
    "sqlite": "llms.state.sqlite",
    "memory": "llms.state.memory",
    "redis": "llms.state.redis",
    "rediss": "llms.state.redis",
}
"""URL scheme → the module of its backend."""

__all__ = [
    "EventKind",
    "KeyEvent",
    "KeyRecord",
    "StateError",
    "StateStore",
    "StoreHealth",
    "backend_for",
    "check_url",
    "describe",
    "store_from_url",
]


def backend_for(url: str) -> type[StateStore]:
    """The backend class `url`'s scheme names; `ValueError` for a scheme no backend serves."""
    scheme, sep, _ = url.partition("://")
    if not sep or scheme.lower() not in MODULES:
        known = ", ".join(f"{s}://" for s in MODULES)
        unknown = f"has unknown scheme {scheme!r}: it " if sep else ""
        raise ValueError(f"{unknown}must start with one of {known}")
    importlib.import_module(MODULES[scheme.lower()])
    return BACKENDS[scheme.lower()]


def check_url(url: str) -> str:
    """`url` as its backend will use it; `ValueError` saying what is wrong (the caller names the variable)."""
    return backend_for(url).check_url(url)


def describe(health: StoreHealth) -> str:
    """Where the store `health` speaks for keeps key state, in the status page's words."""
    return BACKENDS[health.backend].describe(health) if health.backend in BACKENDS else f"in {health.backend}"


def store_from_url(url: str, prefix: str = "llmkeys", *, failover: bool = True) -> StateStore:
    """The backend for `url`. A shared backend comes wrapped in a failover to local memory (so no call fails
    because the store is down) unless `failover=False`, which tests use to exercise the bare backend."""
    try:
        backend = backend_for(url).from_url(url, prefix)
    except ValueError as exc:
        raise StateError(f"LLM_STATE_URL {exc}") from None
    if not backend.SHARED or not failover:
        return backend
    from llms.state.failover import FailoverStore
    from llms.state.memory import MemoryStore

    return FailoverStore(backend, MemoryStore())
