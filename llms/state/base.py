"""The records a key-state store keeps, and the rules every store applies to them the same way.

Keys' records and events, the request log's rows and the hourly history, leases and the `Gate` on requests in
flight, configured limits (`LimitUsage`) and the bounds on rests: the values the key manager, the status page and
every backend share. The operations that keep them are `llms.state.store.StateStore`. This module imports nothing
of the project, so these values stay apart from any store, and any module can read them without importing a
backend. A store knows key fingerprints and pool names (one pool per provider) and nothing about providers or HTTP.
A cooldown's reason is kept as a plain string (a `llms.key_states.KeyState` value): a store writes and reads it
back as it is, and code that acts on it makes it a `KeyState`.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

Document = dict[str, Any]
"""A small JSON object a store keeps under a name without interpreting it: what the client has learned about a
key's hidden limits (its backoff ladder, window size) or a provider's recent 429s. Changed atomically by
`StateStore.change`, so every process sharing the store learns together."""


@dataclass(frozen=True)
class KeyRecord:
    """Everything remembered about one key. A key is cooling while `cooldown_until` is in the future."""

    cooldown_until: float = 0.0
    reason: str | None = None
    """Why it cools: a `KeyState` value as stored (the store never interprets it)."""
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
    """The first bucket whose bound is at least `seconds` (the last: slower than every bound)."""
    return bisect.bisect_left(LATENCY_BOUNDS, seconds)


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
    `part`: the model, where the provider counts limits per model (the slot is of that model's gate). `sent`: when
    its request left, for the store to keep where processes count each other's requests out (`StateStore.note_sent`;
    None until then); `tokens`, as many as it may spend (0: not counted), which they count too (`SentOut`)."""

    token: str
    until: float
    part: str = ""
    sent: float | None = None
    tokens: int = 0


SentOut = tuple[float, int]
"""A request out that another process may not see, as the store kept it (`StateStore.note_sent`): when it left, and
the tokens it may spend (0: its process did not say: one of an older version)."""


@dataclass(frozen=True)
class Finish:
    """The end of a lease, with what the answer said about the key's quota: `remaining` requests until
    `window_ends` (an absolute time), when the provider reports them, as it read them at `read_at` (when the request
    was sent; None: a count taken now, as a learned window's); `part` as the lease's. `size`: the window's whole
    size, where the provider said it and the window is back to it at `window_ends` (OpenAI's reset)."""

    token: str
    remaining: int | None = None
    window_ends: float | None = None
    part: str = ""
    read_at: float | None = None
    size: int | None = None

    def read(self, now: float) -> float:
        """When the count was read, as a store orders counts by it (never in the future of `now`)."""
        return now if self.read_at is None else min(self.read_at, now)


def gate_name(key_id: str, part: str) -> str:
    """The name a key's `Gate` (and its leases) is kept under: the key's own (or its shared-limit group's, see
    `StateStore.gate`), or one per model (`part`) where the provider counts limits per model, so one model's quota
    never gates another's requests."""
    return f"{key_id}|{part}" if part else key_id


def group_gate(pool: str, group: str) -> str:
    """The gate a shared-limit group's keys share: what an answer on one of them reports is the account's count,
    so the requests in flight on all of them are checked against it together."""
    return f"group:{pool}/{group}"


TRIP_SPREAD = 0.1
"""Seconds by which two answers' trips out to the provider may differ (one queued at its door, one not): two resets
that answers of one window bound further apart than this are two different moments (a bucket's next token and its
refill to full), not one seen through two trips; two counts read closer than this are read in the order the
provider saw their requests, not the one they left in. (Here, where the stores' gate reads it: they import nothing
of the client; `llms.cooldown` names it for the rest.)"""
WRITE_LAG = 1.0
"""Seconds a store write's `now` may trail the count its gate holds and still be this clock's present: a writer
reads its clock, then waits for the store's lock (on a SQLite file 16 threads wait up to 50 ms), so counts reach a
gate in a slightly other order than they were taken. Read as a count from this clock's future, a newer count was
replaced by an older one that said more was left, and a clock window of 10 on a SQLite file took 11 or 12. A count
further ahead was written by a clock ahead of this one (or this one stepped back)."""
IN_FLIGHT_CEILING = 256
"""More requests left than could ever be in flight on one key at once: such a key needs no counting."""


@dataclass
class Gate:
    """How many requests may be in flight on one key: the rule every store applies the same way.

    Never more than the provider said the key has left (at least one once that window has ended: what was left is
    still left), and one at a time while the key is being probed after a hint-less rest. Leases are
    only counted while the rule can bind (`tracks`), so a key with plenty left costs the store nothing.
    """

    leases: dict[str, float]
    remaining: int | None = None
    window_ends: float = 0.0
    probing: bool = False
    window_began: float = 0.0
    size: int | None = None

    def in_window(self, now: float) -> bool:
        """Whether `remaining` still describes now: its window has not ended, and did not begin in this clock's
        future (a writer whose clock is ahead, or this one stepped back: then one at a time until an answer
        reports again, never an hour of trusting an old count)."""
        return self.window_began - WRITE_LAG <= now < self.window_ends

    def tracks(self, now: float) -> bool:
        if self.probing:
            return True
        return self.remaining is not None and (not self.in_window(now) or self.remaining < IN_FLIGHT_CEILING)

    def allowed(self, now: float) -> int:
        """A count only grows once its window ends (a fixed window refills, a sliding one frees slots, a bucket
        drips), so what was left is still left after it: a sliding window's reset names its next slot, often
        sooner than the answer that reports it comes back, and read as "one at a time" it held a key that reported
        slots to spare at one request in flight. Where the count said its window's `size` and that the window is
        back to it at its end (OpenAI's reset), all of it is there: answers slower than the window each read a
        window already over, and held to what was left then, a key of 5 a second got 0.49 of its quota."""
        if self.probing or self.remaining is None or self.window_began > now + WRITE_LAG:
            return 1
        return self.remaining if now < self.window_ends else max(1, self.remaining, self.size or 0)

    def allows(self, now: float) -> bool:
        if not self.tracks(now):
            return True
        return sum(1 for until in self.leases.values() if until > now) < self.allowed(now)

    def held_until(self, now: float) -> float | None:
        """When a slot frees, if every slot this gate allows is held now (None: a slot is free): as the first lease
        ends, or, where the count says none are left, as its window ends. No lease need hold a count's slots (a
        learned window's count, told the gate with no rest: `LearnedLimits.refresh_gates`): read as neither busy nor
        resting, such a key sent the callers of a process with nothing in flight to sleep until another key's rest
        ended (4 processes on a fixed 60 a 10 s window: 0.935 of the quota where one process had all of it)."""
        if self.allows(now):
            return None
        frees = [until for until in self.leases.values() if until > now]
        if not self.probing and self.remaining is not None and self.window_began - WRITE_LAG <= now < self.window_ends:
            held_past = sum(1 for until in frees if until > self.window_ends)
            if held_past < self.allowed(self.window_ends):  # a slot frees as the window ends
                frees.append(self.window_ends)
        return min(frees) if frees else None

    def take(self, lease: Lease, now: float) -> None:
        if self.tracks(now):
            self.leases = {token: until for token, until in self.leases.items() if until > now}
            self.leases[lease.token] = lease.until

    def end(self, finish: Finish, now: float, *, succeeded: bool) -> None:
        """Answers can arrive out of order, and one key can report two limits (the day's count, the minute's
        learned window), so while a count is current the lowest reported value wins, with its own window's end;
        once it has ended, a count the provider read before it (a slower answer's) is taken only where it says
        less, or where its own window has not ended yet: read as current, an answer 10 s late on a sliding window
        sent a burst into a window already full (and where machines' clocks differ, the more careful of two counts
        is the safe one)."""
        self.leases.pop(finish.token, None)
        if succeeded:
            self.probing = False
        self.learn(finish, now)

    def learn(self, finish: Finish, now: float) -> None:
        if finish.remaining is None:
            return
        if self.in_window(now) and self.remaining is not None:
            # The tighter count binds, until its own window ends; a later reading of the same limit replaces it
            # (a bucket's count grows as it drips: held to its lowest, a bucket of 60 a 10 s went one at a time).
            # Later by more than a trip's spread: a burst's counts are read in the order its requests arrive.
            read_at = finish.read(now)
            later = finish.size is not None and finish.size == self.size and read_at > self.window_began + TRIP_SPREAD
            if finish.remaining < self.remaining or later:
                ends = finish.window_ends or self.window_ends
                self.remaining, self.window_ends, self.size = finish.remaining, ends, finish.size
                self.window_began = max(self.window_began, read_at)
        else:
            read_at, ends = finish.read(now), finish.window_ends or now + 60.0
            newer = self.remaining is None or read_at >= self.window_began or self.window_began > now + WRITE_LAG
            current = self.window_ends <= now < ends  # the count held is of a window over; this one's is not
            if newer or current or finish.remaining < self.remaining:  # an older count: if current, or it says less
                self.remaining, self.window_ends, self.size = finish.remaining, ends, finish.size
                if newer:
                    self.window_began = read_at


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
    """`row` with one more request counted (a new row for a new hour). Built field by field, not by `replace`: it
    runs on every answer a store in memory logs, where `replace` cost twice as much."""
    if row is None:
        row = HourOfKey(hour_of(request.at), request.key, request.provider, request.key_id)
    ok, limited, failed = outcome_columns(request)
    buckets = list(row.latency_buckets)
    buckets[latency_bucket(request.latency)] += 1
    return HourOfKey(
        row.hour,
        row.key,
        row.provider,
        request.key_id,
        row.requests + 1,
        row.successes + ok,
        row.rate_limits + limited,
        row.errors + failed,
        row.tokens_in + request.tokens_in,
        row.tokens_out + request.tokens_out,
        row.latency_total + request.latency,
        tuple(buckets),
    )
