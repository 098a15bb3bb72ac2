"""What a key-state store is: the atomic operations every backend offers, its health and errors, and the scheme
registry.

The key manager decides *what* happens to a key; a `StateStore` only remembers it, atomically. Each backend
subclasses `StateStore`, names its URL schemes in `SCHEMES` and is registered by that (the way the `limits`
library registers its storages); `llms.state.store_from_url` picks one. This module imports no backend. The
records the operations take and return are in `llms.state.base`, apart from this class, so that the values the
rest of the client reads import nothing of the store.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar

from llms.state.base import (
    Document,
    Finish,
    HourOfKey,
    KeyEvent,
    KeyRecord,
    Lease,
    RequestLimits,
    RequestRecord,
    SentOut,
    gate_name,
)


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
    backend in a failover to local memory). `IN_MEMORY`: no operation ever waits on I/O (a file lock, the
    network), so a caller on an event loop may run them inline.
    """

    SCHEMES: ClassVar[tuple[str, ...]] = ()
    SHARED: ClassVar[bool] = False
    IN_MEMORY: ClassVar[bool] = False
    history_days: float = 30.0
    log_size: int = 5000

    def retain(self, history_days: float, log_size: int) -> None:
        """How long hourly history is kept, and how many requests the log holds."""
        self.history_days = history_days
        self.log_size = log_size

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for scheme in cls.__dict__.get("SCHEMES", ()):
            BACKENDS[scheme] = cls

    @classmethod
    def from_url(cls, url: str, prefix: str) -> StateStore:
        """Build the backend from its URL (`prefix` namespaces what several clients share)."""
        return cls()

    @classmethod
    def check_url(cls, url: str) -> str:
        """The URL as this backend will use it, checked before any store is made (the settings do, so a typo is
        named with its variable); raises `ValueError` saying what is wrong, never echoing a password."""
        return url

    @staticmethod
    def describe(health: StoreHealth) -> str:
        """Where this backend keeps key state, in the status page's words ("in this process only …")."""
        return f"in `{health.location}`"

    def health(self) -> StoreHealth:
        return StoreHealth(backend=self.SCHEMES[0], location="this process", healthy=True)

    def close(self) -> None:  # noqa: B027 - most backends hold nothing to release
        """Release connections; the store is not used afterwards."""

    shared_gates: Mapping[str, str] = MappingProxyType({})
    """Key id → the gate it shares with its shared-limit group (`register`'s `gates`); other keys gate alone."""

    @abstractmethod
    def register(self, pool: str, key_ids: Sequence[str], gates: Mapping[str, str] | None = None) -> None:
        """Declare a pool's keys in rotation order (idempotent; state of known keys is kept), and for keys of a
        shared-limit group the gate they share (`group_gate`)."""

    def _share_gates(self, key_ids: Sequence[str], gates: Mapping[str, str] | None) -> None:
        shared = {k: g for k, g in self.shared_gates.items() if k not in key_ids}
        self.shared_gates = MappingProxyType({**shared, **(gates or {})})

    def gate(self, key_id: str, part: str = "") -> str:
        """The name the key's `Gate` and leases are kept under for `part`: its group's where it has one."""
        return gate_name(self.shared_gates.get(key_id, key_id), part)

    @abstractmethod
    def acquire(
        self,
        pool: str,
        now: float,
        exclude: Collection[str] = (),
        lease: Lease | None = None,
        model: str | None = None,
    ) -> str | None:
        """The next available key of the pool in round-robin order, marked as used; None if all are cooling or
        the pool is paused. With a `lease`, only a key whose `Gate` allows one more request in flight is picked,
        and the lease is taken on it in the same step. With a `model`, a key resting for that model is passed
        over, and the pool's pause for that model (`model_pool(pool, model)`) counts too."""

    @abstractmethod
    def next_free(self, pool: str, now: float, model: str | None = None) -> tuple[str, float] | None:
        """The key of the pool that frees up first, with when: its `cooldown_until` (and with a `model`, the end
        of its rest for that model), or the pool's pause end (and its pause for that model)."""

    @abstractmethod
    def cool_model(self, key_id: str, model: str, until: float, reason: str, now: float) -> None:
        """Rest a key for one model only (a limit its provider counts per model): other models still use it."""

    @abstractmethod
    def model_rests(self, key_ids: Sequence[str], now: float) -> list[dict[str, tuple[float, str]]]:
        """For each key, the models it rests for now: model → (until, reason); `reset` ends them too."""

    @abstractmethod
    def record_success(
        self, key_id: str, now: float, request: RequestRecord | None = None, finish: Finish | None = None
    ) -> int:
        """Count a success and clear the consecutive-failure streak; returns the streak that just ended.

        `request`, when given, goes to the request log and the hour's history, and `finish` ends the request's
        lease (with the quota the answer reported), in the same write."""

    @abstractmethod
    def record_failure(
        self,
        key_id: str,
        now: float,
        error: str,
        *,
        streak: bool,
        request: RequestRecord | None = None,
        finish: Finish | None = None,
    ) -> int:
        """Count a failure (extending the consecutive streak if `streak`); returns the streak length."""

    @abstractmethod
    def log_request(self, request: RequestRecord, finish: Finish | None = None) -> None:
        """Log a request that changes nothing about its key (the request's own fault), ending its lease."""

    @abstractmethod
    def end_lease(self, key_id: str, finish: Finish, now: float) -> None:
        """End a lease without an answer (the caller gave up on a stream)."""

    @abstractmethod
    def renew_leases(self, leases: Mapping[str, Mapping[str, float]], now: float) -> None:
        """Move on the ends of leases this process holds (`gate_name` → token → new end; a lease already gone stays
        gone),
        so that a lease outlives its request by seconds only: a process that dies stops renewing, and its slots
        free soon after for every process."""

    @abstractmethod
    def busy_until(self, pool: str, now: float, part: str = "") -> tuple[str, float] | None:
        """A free key of the pool (not cooling, not disabled) whose every in-flight slot (of its gate for `part`)
        is held now, by any process, with when its first lease ends; None when no key is held that way."""

    @abstractmethod
    def probe_next(self, key_id: str, part: str = "") -> None:
        """After a hint-less rest, the key (its gate for `part`) takes one request at a time until one succeeds."""

    @abstractmethod
    def request_log(self, limit: int = 100) -> list[RequestRecord]:
        """The most recent requests, newest first."""

    def sent_times(self, keys: Collection[str], model: str | None = None) -> list[float]:
        """When the answered requests of `keys` (fingerprints) in the request log were sent (answer − latency),
        for `model` where given, oldest first: every process's answers of a window a 429 taught (`LearnedLimits`).
        Backends that keep the log outside this process read only those rows (the whole log, 5,000 records, cost
        16 ms on SQLite and 45 ms on Redis, on every answer within a second of a 429)."""
        rows = self.request_log(self.log_size)
        answered = (r for r in rows if r.key in keys and r.outcome == "ok" and model in (None, r.model))
        return sorted(r.at - r.latency for r in answered)

    def note_sent(self, key_id: str, lease: Lease, keys: Collection[str], now: float) -> list[SentOut]:
        """Keep that the request of `lease` (on the key's gate for `lease.part`, counted there or not) left at
        `lease.sent` with its `lease.tokens`, until the lease ends or runs out, and return the requests out on the
        gates of `keys` (fingerprints: the key's account) that the store kept before it, when each was sent and its
        tokens, oldest first: while a key's quota is unknown, each process's in-flight limit counts every process's
        requests out (`Leases.admit`; four processes, one request each, put four at once on an account of 1 a
        window), and where answers read the tokens left, every process's requests out spend them. A store no other
        process shares keeps none: its process's own count holds every request out."""
        return []

    def sends_out(self, keys: Collection[str], part: str, now: float) -> list[float]:
        """When the requests out on the gates of `keys` for `part` whose sends were kept (`note_sent`) left, oldest
        first: a first 429's window holds the other processes' requests out too."""
        return []

    @abstractmethod
    def history(self, since: float) -> list[HourOfKey]:
        """Every key's hours from the one containing `since` on (older hours are pruned as they age out)."""

    @abstractmethod
    def cool(self, key_id: str, until: float, reason: str, now: float) -> None:
        """Rest a key until `until`. Like every reason a store takes, `reason` is kept as its plain string (a
        `KeyState` value, which the store never interprets) and read back as that string."""

    @abstractmethod
    def pause(self, pool: str, until: float, reason: str, now: float) -> None:
        """Rest a whole pool until `until` (a limit every key shares), or one model of it (`model_pool`);
        `until <= now` lifts the pause — of a pool: its own and every one of its models'."""

    @abstractmethod
    def paused(self, pool: str, now: float) -> tuple[float, str] | None:
        """The pool's pause, if one is in force: (until, reason)."""

    @abstractmethod
    def reset(self, key_ids: Iterable[str]) -> None:
        """End cooldowns and failure streaks now (counters and history are kept)."""

    @abstractmethod
    def set_disabled(self, key_ids: Iterable[str], disabled: bool) -> None:
        """An operator's switch: a disabled key is never acquired, whatever its cooldown, until enabled again."""

    @abstractmethod
    def records(self, key_ids: Sequence[str]) -> list[KeyRecord]: ...

    @abstractmethod
    def spend(self, key_id: str, now: float, limits: RequestLimits) -> tuple[bool, float | None]:
        """Count one request against the key's configured limits, atomically for every process sharing the
        store: (counted, rest) — see `LimitUsage.spend`."""

    @abstractmethod
    def change(self, name: str, change: Callable[[Document], Document]) -> Document:
        """Replace the document `name` by `change(current)` ({} when there is none) atomically for every process
        sharing the store, and return what was stored. `change` must be pure: a backend may call it again when
        another process changed the document meanwhile."""

    @abstractmethod
    def documents(self, names: Sequence[str]) -> list[Document]:
        """The documents under `names`, {} for a name that has none."""

    @abstractmethod
    def add_event(self, event: KeyEvent) -> None: ...

    @abstractmethod
    def events(self, limit: int = 100) -> list[KeyEvent]:
        """The most recent events, newest first."""
