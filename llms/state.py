"""Where key state lives: cooldowns, counters, the round-robin cursor and the event log.

The key manager decides *what* happens to a key; a `StateStore` only remembers it, atomically. Stores are
chosen by URL scheme (`memory://`, later `redis://`), the way the `limits` library picks its storage, so the
same key manager runs embedded in one process or shared by many. A store knows key ids and pool names
(one pool per provider) and nothing about providers or HTTP.
"""

from __future__ import annotations

import heapq
import threading
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import ClassVar


class CooldownReason(StrEnum):
    RATE_LIMIT = "rate_limit"
    INVALID_KEY = "invalid_key"
    NO_CREDITS = "no_credits"
    ERRORS = "errors"
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
    """The store could not be reached or understood; backend-specific errors are wrapped in this."""


@dataclass(frozen=True)
class StoreHealth:
    """Which backend holds key state and whether it is working; shown on the status page."""

    backend: str
    location: str
    healthy: bool
    detail: str = ""


class StateStore(ABC):
    """Atomic operations on key state. Every method is safe to call from many threads at once."""

    SCHEMES: ClassVar[tuple[str, ...]] = ()

    def health(self) -> StoreHealth:
        return StoreHealth(backend=self.SCHEMES[0], location="this process", healthy=True)

    @abstractmethod
    def register(self, pool: str, key_ids: Sequence[str]) -> None:
        """Declare a pool's keys in rotation order (idempotent; state of known keys is kept)."""

    @abstractmethod
    def acquire(self, pool: str, now: float, exclude: Collection[str] = ()) -> str | None:
        """The next available key of the pool in round-robin order, marked as used; None if all are cooling."""

    @abstractmethod
    def next_free(self, pool: str, now: float) -> tuple[str, float] | None:
        """The cooling key of the pool that frees up first, with its `cooldown_until`."""

    @abstractmethod
    def record_success(self, key_id: str, now: float) -> int:
        """Count a success and clear the consecutive-failure streak; returns the streak that just ended."""

    @abstractmethod
    def record_failure(self, key_id: str, now: float, error: str, *, streak: bool) -> int:
        """Count a failure (extending the consecutive streak if `streak`); returns the streak length."""

    @abstractmethod
    def cool(self, key_id: str, until: float, reason: CooldownReason, now: float) -> None: ...

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


class MemoryStore(StateStore):
    """In-process state behind one lock.

    Picking a key costs O(1) amortised however many keys are cooling: available keys sit in a ring that is
    rotated, a cooling key is dropped from the ring the first time the rotation meets it, and cooldowns wait
    in a min-heap ordered by expiry that puts keys back into the ring when they free up.
    """

    SCHEMES = ("memory",)

    def __init__(self, max_events: int = 500) -> None:
        self._lock = threading.Lock()
        self._records: dict[str, KeyRecord] = {}
        self._rings: dict[str, deque[str]] = {}
        self._in_ring: set[str] = set()
        self._heaps: dict[str, list[tuple[float, str]]] = {}
        self._pool_of: dict[str, str] = {}
        self._events: deque[KeyEvent] = deque(maxlen=max_events)

    def register(self, pool: str, key_ids: Sequence[str]) -> None:
        with self._lock:
            ring = self._rings.setdefault(pool, deque())
            self._heaps.setdefault(pool, [])
            for key_id in key_ids:
                if key_id in self._pool_of:
                    continue
                self._pool_of[key_id] = pool
                self._records[key_id] = KeyRecord()
                ring.append(key_id)
                self._in_ring.add(key_id)

    def acquire(self, pool: str, now: float, exclude: Collection[str] = ()) -> str | None:
        with self._lock:
            self._release_expired(pool, now)
            ring = self._rings.get(pool)
            if not ring:
                return None
            for _ in range(len(ring)):
                key_id = ring.popleft()
                record = self._records[key_id]
                if record.cooldown_until > now:
                    self._in_ring.discard(key_id)
                    continue
                ring.append(key_id)
                if key_id in exclude:
                    continue
                self._records[key_id] = replace(record, last_used=now)
                return key_id
            return None

    def _release_expired(self, pool: str, now: float) -> None:
        heap = self._heaps.get(pool)
        while heap and heap[0][0] <= now:
            until, key_id = heapq.heappop(heap)
            record = self._records[key_id]
            if record.cooldown_until != until:
                continue  # stale entry: the key was reset or re-cooled since
            self._records[key_id] = replace(record, cooldown_until=0.0, reason=None)
            self._put_back(key_id)

    def _put_back(self, key_id: str) -> None:
        if key_id not in self._in_ring:
            self._rings[self._pool_of[key_id]].append(key_id)
            self._in_ring.add(key_id)

    def next_free(self, pool: str, now: float) -> tuple[str, float] | None:
        with self._lock:
            self._release_expired(pool, now)
            for until, key_id in sorted(self._heaps.get(pool, ())):
                if self._records[key_id].cooldown_until == until:
                    return key_id, until
            return None

    def record_success(self, key_id: str, now: float) -> int:
        with self._lock:
            before = self._records[key_id]
            self._records[key_id] = replace(
                before, successes=before.successes + 1, consecutive_failures=0, last_used=now
            )
            return before.consecutive_failures

    def record_failure(self, key_id: str, now: float, error: str, *, streak: bool) -> int:
        with self._lock:
            record = self._records[key_id]
            consecutive = record.consecutive_failures + 1 if streak else record.consecutive_failures
            self._records[key_id] = replace(
                record, failures=record.failures + 1, consecutive_failures=consecutive, last_error=error, last_used=now
            )
            return consecutive

    def cool(self, key_id: str, until: float, reason: CooldownReason, now: float) -> None:
        with self._lock:
            self._records[key_id] = replace(self._records[key_id], cooldown_until=until, reason=reason)
            heapq.heappush(self._heaps[self._pool_of[key_id]], (until, key_id))

    def reset(self, key_ids: Iterable[str]) -> None:
        with self._lock:
            for key_id in key_ids:
                record = self._records[key_id]
                self._records[key_id] = replace(record, cooldown_until=0.0, reason=None, consecutive_failures=0)
                self._put_back(key_id)

    def records(self, key_ids: Sequence[str]) -> list[KeyRecord]:
        with self._lock:
            return [self._records.get(k, KeyRecord()) for k in key_ids]

    def add_event(self, event: KeyEvent) -> None:
        with self._lock:
            self._events.append(event)

    def events(self, limit: int = 100) -> list[KeyEvent]:
        with self._lock:
            return list(self._events)[::-1][:limit]


def store_from_url(url: str, prefix: str = "llmkeys") -> StateStore:
    """Pick a backend by URL scheme: `memory://`, or `redis://host:port/db` / `rediss://…` (shared)."""
    scheme = url.split("://", 1)[0].lower()
    if scheme in MemoryStore.SCHEMES:
        return MemoryStore()
    from llms.redis_state import REDIS_SCHEMES, FailoverStore, RedisStore

    if scheme in REDIS_SCHEMES:
        return FailoverStore(RedisStore(url, prefix), MemoryStore())
    known = ", ".join(f"{s}://" for s in (*MemoryStore.SCHEMES, *REDIS_SCHEMES))
    raise StateError(f"LLM_STATE_URL has unknown scheme {scheme!r}; supported: {known}")
