"""What a key-state store is: the records it keeps, the atomic operations it offers, and the scheme registry.

The key manager decides *what* happens to a key; a `StateStore` only remembers it, atomically. Each backend
subclasses `StateStore`, names its URL schemes in `SCHEMES` and is registered by that (the way the `limits`
library registers its storages); `llms.state.store_from_url` picks one. This module imports no backend. A
store knows key fingerprints and pool names (one pool per provider) and nothing about providers or HTTP.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from types import MappingProxyType
from typing import Any, ClassVar

Document = dict[str, Any]
"""A small JSON object a store keeps under a name without interpreting it: what the client has learned about a
key's hidden limits (its backoff ladder, window size) or a provider's recent 429s. Changed atomically by
`StateStore.change`, so every process sharing the store learns together."""


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
    disabled: bool = False
    rest: float = 0.0
    """The cooldown's own length, as stated when it was set (0: not known). No reader keeps a key resting longer
    than this from now: a `cooldown_until` further away was set by a clock ahead of the reader's."""


class EventKind(StrEnum):
    COOLED = "cooled"
    RESET = "reset"
    FAILED = "failed"
    RECOVERED = "recovered"
    DISABLED = "disabled"
    ENABLED = "enabled"
    CHECKED = "checked"  # a person tested the key
    ADDED = "added"  # the key joined the configuration
    REMOVED = "removed"  # the key left it


@dataclass(frozen=True)
class KeyEvent:
    at: float
    key_id: str
    kind: EventKind
    detail: str = ""


@dataclass(frozen=True)
class RequestRecord:
    """One provider call, for the request log and the hourly history: who answered and how, never what.

    `key` is the store's name for the key (its fingerprint); `key_id` ("groq:2") is how people know it.
    """

    at: float
    provider: str
    model: str
    key: str
    key_id: str
    outcome: str
    status: int | None
    latency: float
    tokens_in: int = 0
    tokens_out: int = 0


LATENCY_BOUNDS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 30.0)
"""Upper bounds (seconds) of the latency buckets kept per hour; one more bucket holds everything slower."""


def latency_bucket(seconds: float) -> int:
    return next((i for i, bound in enumerate(LATENCY_BOUNDS) if seconds <= bound), len(LATENCY_BOUNDS))


@dataclass(frozen=True)
class HourOfKey:
    """What one key did in one hour (`hour` is the hour's start, epoch seconds)."""

    hour: float
    key: str
    provider: str
    key_id: str
    requests: int = 0
    successes: int = 0
    rate_limits: int = 0
    errors: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    latency_total: float = 0.0
    latency_buckets: tuple[int, ...] = (0,) * (len(LATENCY_BOUNDS) + 1)


@dataclass(frozen=True)
class Lease:
    """A slot for one request in flight on a key. A process that dies without ending it frees it at `until`.
    `part`: the model, where the provider counts limits per model (the slot is of that model's gate)."""

    token: str
    until: float
    part: str = ""


@dataclass(frozen=True)
class Finish:
    """The end of a lease, with what the answer said about the key's quota: `remaining` requests until
    `window_ends` (an absolute time), when the provider reports them; `part` as the lease's."""

    token: str
    remaining: int | None = None
    window_ends: float | None = None
    part: str = ""


def gate_name(key_id: str, part: str) -> str:
    """The name a key's `Gate` (and its leases) is kept under: the key's own (or its shared-limit group's, see
    `StateStore.gate`), or one per model (`part`) where the provider counts limits per model, so one model's quota
    never gates another's requests."""
    return f"{key_id}|{part}" if part else key_id


def group_gate(pool: str, group: str) -> str:
    """The gate a shared-limit group's keys share: what an answer on one of them reports is the account's count,
    so the requests in flight on all of them are checked against it together."""
    return f"group:{pool}/{group}"


IN_FLIGHT_CEILING = 256
"""More requests left than could ever be in flight on one key at once: such a key needs no counting."""


@dataclass
class Gate:
    """How many requests may be in flight on one key: the rule every store applies the same way.

    Never more than the provider said the key has left (trusted until that window ends, then one at a time until
    an answer reports again), and one at a time while the key is being probed after a hint-less rest. Leases are
    only counted while the rule can bind (`tracks`), so a key with plenty left costs the store nothing.
    """

    leases: dict[str, float]
    remaining: int | None = None
    window_ends: float = 0.0
    probing: bool = False
    window_began: float = 0.0

    def in_window(self, now: float) -> bool:
        """Whether `remaining` still describes now: its window has not ended, and did not begin in this clock's
        future (a writer whose clock is ahead, or this one stepped back: then one at a time until an answer
        reports again, never an hour of trusting an old count)."""
        return self.window_began <= now < self.window_ends

    def tracks(self, now: float) -> bool:
        if self.probing:
            return True
        return self.remaining is not None and (not self.in_window(now) or self.remaining < IN_FLIGHT_CEILING)

    def allowed(self, now: float) -> int:
        if self.probing:
            return 1
        return self.remaining if self.remaining is not None and self.in_window(now) else 1

    def allows(self, now: float) -> bool:
        if not self.tracks(now):
            return True
        return sum(1 for until in self.leases.values() if until > now) < self.allowed(now)

    def held_until(self, now: float) -> float | None:
        """When the first lease ends, if every slot this gate allows is held now (None: a slot is free)."""
        if self.allows(now):
            return None
        live = [until for until in self.leases.values() if until > now]
        return min(live) if live else None

    def take(self, lease: Lease, now: float) -> None:
        if self.tracks(now):
            self.leases = {token: until for token, until in self.leases.items() if until > now}
            self.leases[lease.token] = lease.until

    def end(self, finish: Finish, now: float, *, succeeded: bool) -> None:
        """Answers can arrive out of order, and one key can report two limits (the day's count, the minute's
        learned window), so while a count is current the lowest reported value wins, with its own window's end."""
        self.leases.pop(finish.token, None)
        if succeeded:
            self.probing = False
        self.learn(finish, now)

    def learn(self, finish: Finish, now: float) -> None:
        if finish.remaining is None:
            return
        if self.in_window(now) and self.remaining is not None:
            if finish.remaining < self.remaining:  # the tighter count binds, until its own window ends
                self.remaining, self.window_ends = finish.remaining, finish.window_ends or self.window_ends
        else:
            self.remaining, self.window_ends = finish.remaining, finish.window_ends or now + 60.0
            self.window_began = now


@dataclass(frozen=True)
class RequestLimits:
    """A key's configured request limits: at most `per_minute` in any 60 s, `per_day` until `day_ends_at`."""

    per_minute: int | None
    per_day: int | None
    day_ends_at: float


@dataclass
class LimitUsage:
    """What a key has spent of its configured limits: recent request times, and this day's count."""

    recent: list[float]
    day_ends_at: float = 0.0
    day_used: int = 0

    def spend(self, now: float, limits: RequestLimits) -> tuple[bool, float | None]:
        """Count one request if a slot is free. Returns (counted, rest): `rest` is how long until a slot frees
        when this request used the last one, or when none was free (then nothing is counted)."""
        recent = [at for at in self.recent if at > now - 60.0]
        if now >= self.day_ends_at:
            self.day_ends_at, self.day_used = limits.day_ends_at, 0
        full_minute = bool(limits.per_minute) and len(recent) >= (limits.per_minute or 0)
        full_day = bool(limits.per_day) and self.day_used >= (limits.per_day or 0)
        if full_minute or full_day:
            self.recent = recent
            return False, self._rest(now, limits, full_minute, full_day)
        self.recent = [*recent[-(limits.per_minute or 1) + 1 :], now] if limits.per_minute else []
        self.day_used += 1
        used_minute = bool(limits.per_minute) and len(self.recent) >= (limits.per_minute or 0)
        used_day = bool(limits.per_day) and self.day_used >= (limits.per_day or 0)
        return True, self._rest(now, limits, used_minute, used_day) if used_minute or used_day else None

    def _rest(self, now: float, limits: RequestLimits, minute: bool, day: bool) -> float:
        rests = [self.recent[-(limits.per_minute or 1)] + 60.0 - now] if minute else []
        if day:
            rests.append(self.day_ends_at - now)
        return max(rests)


LONGEST_REST = 366 * 86400.0
"""No cooldown is kept longer than a year, whatever value reaches a store: every backend's numbers must hold it."""


def model_pool(pool: str, model: str) -> str:
    """The name a pause of one model of a pool is kept under (`pause(model_pool("openrouter", m), …)`)."""
    return f"{pool}/{model}"


def bounded_until(until: float, now: float) -> float:
    """`until` made finite, not in the past, and at most a year away."""
    rest = until - now
    if not math.isfinite(rest) or rest > LONGEST_REST:
        rest = LONGEST_REST
    return now + max(0.0, rest)


def hour_of(at: float) -> float:
    return at - at % 3600


ABANDONED = "abandoned"
"""The request log's outcome for a request its caller gave up on mid-way: no verdict on the key."""


def outcome_columns(request: RequestRecord) -> tuple[int, int, int]:
    """(success, rate limit, other error) as 0/1 counts; request errors count as errors of the request, an
    abandoned request as none of them (it is still a request)."""
    ok = request.outcome == "ok"
    limited = request.outcome == "rate_limit"
    return int(ok), int(limited), int(not ok and not limited and request.outcome != ABANDONED)


def tally(row: HourOfKey | None, request: RequestRecord) -> HourOfKey:
    """`row` with one more request counted (a new row for a new hour)."""
    if row is None:
        row = HourOfKey(hour_of(request.at), request.key, request.provider, request.key_id)
    ok, limited, failed = outcome_columns(request)
    buckets = list(row.latency_buckets)
    buckets[latency_bucket(request.latency)] += 1
    return replace(
        row,
        key_id=request.key_id,
        requests=row.requests + 1,
        successes=row.successes + ok,
        rate_limits=row.rate_limits + limited,
        errors=row.errors + failed,
        tokens_in=row.tokens_in + request.tokens_in,
        tokens_out=row.tokens_out + request.tokens_out,
        latency_total=row.latency_total + request.latency,
        latency_buckets=tuple(buckets),
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
    def cool_model(self, key_id: str, model: str, until: float, reason: CooldownReason, now: float) -> None:
        """Rest a key for one model only (a limit its provider counts per model): other models still use it."""

    @abstractmethod
    def model_rests(self, key_ids: Sequence[str], now: float) -> list[dict[str, tuple[float, CooldownReason]]]:
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

    @abstractmethod
    def history(self, since: float) -> list[HourOfKey]:
        """Every key's hours from the one containing `since` on (older hours are pruned as they age out)."""

    @abstractmethod
    def cool(self, key_id: str, until: float, reason: CooldownReason, now: float) -> None: ...

    @abstractmethod
    def pause(self, pool: str, until: float, reason: CooldownReason, now: float) -> None:
        """Rest a whole pool until `until` (a limit every key shares), or one model of it (`model_pool`);
        `until <= now` lifts the pause — of a pool: its own and every one of its models'."""

    @abstractmethod
    def paused(self, pool: str, now: float) -> tuple[float, CooldownReason] | None:
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
