"""What a key-state store is: the records it keeps, the atomic operations it offers, and the scheme registry.

The key manager decides *what* happens to a key; a `StateStore` only remembers it, atomically. Each backend
subclasses `StateStore`, names its URL schemes in `SCHEMES` and is registered by that (the way the `limits`
library registers its storages); `llms.state.store_from_url` picks one. This module imports no backend. A
store knows key fingerprints and pool names (one pool per provider) and nothing about providers or HTTP.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar


class CooldownReason(StrEnum):
    RATE_LIMIT = "rate_limit"
    INVALID_KEY = "invalid_key"
    NO_CREDITS = "no_credits"
    SPEND_CAP = "spend_cap"
    NO_ACCESS = "no_access"
    ERRORS = "errors"
    UPSTREAM = "upstream"
    MANUAL = "manual"


@dataclass(frozen=True)
class KeyRecord:
    """Everything remembered about one key. A key is cooling while `cooldown_until` is in the future."""

    cooldown_until: float = 0.0
    reason: CooldownReason | None = None
    consecutive_failures: int = 0
    successes: int = 0
    failures: int = 0
    last_error: str | None = None
    last_used: float | None = None


class EventKind(StrEnum):
    COOLED = "cooled"
    RESET = "reset"
    FAILED = "failed"
    RECOVERED = "recovered"


@dataclass(frozen=True)
class KeyEvent:
    at: float
    key_id: str
    kind: EventKind
    detail: str = ""


class StateError(RuntimeError):
    """The store could not be reached or understood; backend-specific errors are wrapped in this.

    `reason` is a short text for operators ("out of memory", "unreachable", "DB index out of range").
    """

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message


@dataclass(frozen=True)
class StoreHealth:
    """Which backend holds key state and whether it is working; shown on the status page."""

    backend: str
    location: str
    healthy: bool
    detail: str = ""


BACKENDS: dict[str, type[StateStore]] = {}
"""URL scheme → backend class, filled as backend modules are imported."""


class StateStore(ABC):
    """Atomic operations on key state. Every method is safe to call from many threads at once.

    `SHARED`: the state lives outside this process (and so can be unreachable: `store_from_url` then wraps the
    backend in a failover to local memory).
    """

    SCHEMES: ClassVar[tuple[str, ...]] = ()
    SHARED: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for scheme in cls.__dict__.get("SCHEMES", ()):
            BACKENDS[scheme] = cls

    @classmethod
    def from_url(cls, url: str, prefix: str) -> StateStore:
        """Build the backend from its URL (`prefix` namespaces what several clients share)."""
        return cls()

    def health(self) -> StoreHealth:
        return StoreHealth(backend=self.SCHEMES[0], location="this process", healthy=True)

    def close(self) -> None:  # noqa: B027 - most backends hold nothing to release
        """Release connections; the store is not used afterwards."""

    @abstractmethod
    def register(self, pool: str, key_ids: Sequence[str]) -> None:
        """Declare a pool's keys in rotation order (idempotent; state of known keys is kept)."""

    @abstractmethod
    def acquire(self, pool: str, now: float, exclude: Collection[str] = ()) -> str | None:
        """The next available key of the pool in round-robin order, marked as used; None if all are cooling or
        the pool is paused."""

    @abstractmethod
    def next_free(self, pool: str, now: float) -> tuple[str, float] | None:
        """The key of the pool that frees up first, with when: its `cooldown_until`, or the pool's pause end."""

    @abstractmethod
    def record_success(self, key_id: str, now: float) -> int:
        """Count a success and clear the consecutive-failure streak; returns the streak that just ended."""

    @abstractmethod
    def record_failure(self, key_id: str, now: float, error: str, *, streak: bool) -> int:
        """Count a failure (extending the consecutive streak if `streak`); returns the streak length."""

    @abstractmethod
    def cool(self, key_id: str, until: float, reason: CooldownReason, now: float) -> None: ...

    @abstractmethod
    def pause(self, pool: str, until: float, reason: CooldownReason, now: float) -> None:
        """Rest a whole pool until `until` (a limit every key shares); `until <= now` lifts the pause."""

    @abstractmethod
    def paused(self, pool: str, now: float) -> tuple[float, CooldownReason] | None:
        """The pool's pause, if one is in force: (until, reason)."""

    @abstractmethod
    def reset(self, key_ids: Iterable[str]) -> None:
        """End cooldowns and failure streaks now (counters and history are kept)."""

    @abstractmethod
    def records(self, key_ids: Sequence[str]) -> list[KeyRecord]: ...

    @abstractmethod
    def add_event(self, event: KeyEvent) -> None: ...

    @abstractmethod
    def events(self, limit: int = 100) -> list[KeyEvent]:
        """The most recent events, newest first."""
