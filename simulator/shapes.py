"""The shapes a provider's request limit can take, as pure models: the HTTP simulator's key limits (`add_key(limit=…)`)
and what the virtual-time harness counts against.

Each model answers three questions on the provider's clock: may a request of `cost` go now (`admit`, which
takes it), what would an answer say of the quota now (`quota`), and when would the next request be admitted
(`frees_at`, which also gives the most a client with perfect knowledge could have sent: `capacity`).
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Protocol

from simulator.core import Quota

DAY = 86400.0
TICK = 1e-4
"""The provider's clock resolution: a window ending at t has ended for a request arriving at t (floats aside)."""


class WindowKind(StrEnum):
    FIXED_FIRST = "fixed"  # a window starts at the first request after the last one ended (the HTTP simulator's)
    FIXED_CLOCK = "clock"  # windows on the clock's multiples of the length (a minute from :00)
    SLIDING = "sliding"  # at most n in any `length` seconds: each slot frees `length` after it was taken
    TOKEN_BUCKET = "bucket"  # n tokens, refilled evenly over `length`: a request takes one
    TOKENS = "tokens"  # a bucket of tokens that requests of different sizes draw from (tokens per minute)
    PER_DAY = "day"  # n a day, the day ending at midnight UTC


class Limit(Protocol):
    size: int
    length: float

    def admit(self, now: float, cost: float = 1.0) -> bool: ...
    def quota(self, now: float) -> Quota: ...
    def frees_at(self, now: float, cost: float = 1.0) -> float: ...


@dataclass
class _CountedWindow:
    """A window that admits `size` requests until it ends, then starts over: what the fixed kinds share."""

    size: int
    length: float
    used: float = 0.0

    def _ends(self, now: float) -> float:
        """Move on to the window `now` falls in (starting it over); when that window ends."""
        raise NotImplementedError

    def admit(self, now: float, cost: float = 1.0) -> bool:
        self._ends(now)
        if self.used + cost > self.size:
            return False
        self.used += cost
        return True

    def quota(self, now: float) -> Quota:
        ends = self._ends(now)
        return Quota(self.size, max(0, int(self.size - self.used)), ends - now, self.length)

    def frees_at(self, now: float, cost: float = 1.0) -> float:
        ends = self._ends(now)
        return now if self.used + cost <= self.size else ends


@dataclass
class FixedFromFirst(_CountedWindow):
    """A window starts at the first request after the last one ended (the HTTP simulator's default)."""

    start: float | None = None

    def _ends(self, now: float) -> float:
        if self.start is None or now >= self.start + self.length - TICK:
            self.start, self.used = now, 0.0
        return self.start + self.length


@dataclass
class FixedOnClock(_CountedWindow):
    """Windows on the clock's multiples of the length."""

    index: int | None = None

    def _ends(self, now: float) -> float:
        index = math.floor((now + TICK) / self.length)
        if index != self.index:
            self.index, self.used = index, 0.0
        return (index + 1) * self.length


@dataclass
class SlidingLog:
    size: int
    length: float
    taken: deque[float] = field(default_factory=deque)

    def _prune(self, now: float) -> None:
        while self.taken and self.taken[0] <= now - self.length + TICK:
            self.taken.popleft()

    def admit(self, now: float, cost: float = 1.0) -> bool:
        self._prune(now)
        if len(self.taken) >= self.size:
            return False
        self.taken.append(now)
        return True

    def quota(self, now: float) -> Quota:
        self._prune(now)
        reset = self.taken[-1] + self.length - now if self.taken else 0.0  # until the newest slot frees too
        return Quota(self.size, max(0, self.size - len(self.taken)), reset, self.length)

    def frees_at(self, now: float, cost: float = 1.0) -> float:
        self._prune(now)
        return now if len(self.taken) < self.size else self.taken[0] + self.length


@dataclass
class TokenBucket:
    """`size` tokens, refilled at `size / length` a second; a request takes `cost` of them."""

    size: int
    length: float
    tokens: float | None = None  # full until the first request
    at: float = 0.0

    def _refill(self, now: float) -> float:
        if self.tokens is None:
            self.tokens, self.at = float(self.size), now
        self.tokens = min(float(self.size), self.tokens + (now - self.at) * self.size / self.length)
        self.at = now
        return self.tokens

    def admit(self, now: float, cost: float = 1.0) -> bool:
        if self._refill(now) + 1e-6 < cost:
            return False
        self.tokens = self._refill(now) - cost
        return True

    def quota(self, now: float) -> Quota:
        tokens = self._refill(now)
        full = (self.size - tokens) * self.length / self.size  # until the bucket is full again
        return Quota(self.size, math.floor(tokens + 1e-6), max(0.0, full), self.length)

    def frees_at(self, now: float, cost: float = 1.0) -> float:
        tokens = self._refill(now)
        return now if tokens + 1e-6 >= cost else now + (cost - tokens) * self.length / self.size + 1e-6


def refusal(limit: Limit, now: float, cost: float = 1.0) -> Quota:
    """What a 429 says of a limit: nothing left, and when the refused request would be admitted (an answer's count
    says when the limit is back to its initial state instead)."""
    return replace(limit.quota(now), remaining=0, reset_in=limit.frees_at(now, cost) - now)


REQUESTS_BESIDE_TOKENS = 10_000
"""A provider's limit on requests beside its limit on tokens, as its answers report it: far beyond reach, as paid
tiers' are (OpenAI reports both)."""


def admission_tokens(characters: int, max_tokens: int) -> int:
    """What a provider that counts a request's tokens as it admits it charges: its text's `characters` at four a
    token and all of `max_tokens`, before the model runs (OpenAI's reckoning, as its users found it:
    docs/providers.md)."""
    return math.ceil(characters / 4) + max_tokens


def limit_of(kind: WindowKind, size: int, length: float) -> Limit:
    if kind is WindowKind.FIXED_FIRST:
        return FixedFromFirst(size, length)
    if kind is WindowKind.FIXED_CLOCK:
        return FixedOnClock(size, length)
    if kind is WindowKind.SLIDING:
        return SlidingLog(size, length)
    if kind is WindowKind.PER_DAY:
        return FixedOnClock(size, DAY)
    return TokenBucket(size, length)


def capacity(
    kind: WindowKind, size: int, length: float, start: float, until: float, costs: list[float] | None = None
) -> int:
    """The requests a client that knew the limit exactly could have had admitted in [start, until): each sent the
    moment the limit allows it (requests of `costs`, in turn, for a limit on tokens)."""
    limit, now, count = limit_of(kind, size, length), start, 0
    while True:
        cost = costs[count % len(costs)] if costs else 1.0
        now = limit.frees_at(now, cost)
        if now >= until or not limit.admit(now, cost):
            return count
        count += 1


def served(
    kind: WindowKind,
    size: int,
    length: float,
    start: float,
    until: float,
    *,
    subjects: int = 1,
    callers: int,
    latency: float,
    costs: list[float] | None = None,
) -> float:
    """The requests a client that knew every limit exactly could have had admitted in [start, until) with
    `callers` callers, each waiting `latency` for its answer before it asks again: a free caller sends the moment
    the first of the `subjects`' limits allows. For a limit on tokens, requests of `costs` in turn, and what they
    spent is the answer: the tokens admitted (the quota's own unit).

    The callers bound it window by window, not over the whole span: 16 callers with 0.2 s trips cannot send 60
    requests in the last 0.13 s of a clock window, which `capacity` × the span's demand counted as theirs."""
    limits = [limit_of(kind, size, length) for _ in range(subjects)]
    sent = [0] * subjects
    free = [start] * max(1, callers)  # when each caller can next send (a heap)
    now, count = start, 0.0
    while True:
        now = max(now, heapq.heappop(free))
        when, subject, cost = min(
            (limit.frees_at(now, c), i, c)
            for i, limit in enumerate(limits)
            for c in [costs[sent[i] % len(costs)] if costs else 1.0]
        )
        if when >= until or not limits[subject].admit(when, cost):
            return count
        now, count = when, count + cost
        sent[subject] += 1
        heapq.heappush(free, when + latency)
