"""Spending each key's quota without earning 429s: configured limits, learned windows, storm detection, and
adaptive in-flight limits.

These are the key manager's helpers for *avoiding* rate limits, as opposed to reacting to them. They are pure
rules; what they count lives in the store (configured limits in `StateStore.spend`, in-flight requests in
`llms.state.base.Gate`, learned windows and storms as documents), so every process sharing it acts as one —
except `InFlightLimit`, which is each process's own, like a TCP connection's window.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from llms.cooldown import Backoff, CooldownPolicy
from llms.outcomes import QuotaHint
from llms.state.base import Document, RequestLimits


@dataclass(frozen=True)
class ConfiguredLimits:
    """A provider's configured per-key limits (requests per minute / per day), so a known free-tier limit is never
    hit. The counting lives in the store (`StateStore.spend`), so every process sharing it counts together."""

    per_minute: int | None
    per_day: int | None
    day_ends_in: Callable[[float], float]
    """Seconds from a moment until the provider's day ends (its per-day quotas reset)."""

    @property
    def active(self) -> bool:
        return bool(self.per_minute or self.per_day)

    def at(self, now: float) -> RequestLimits:
        return RequestLimits(self.per_minute, self.per_day, now + self.day_ends_in(now))


@dataclass
class InFlightLimit:
    """How many requests this process may have in flight at once on one key (or one shared-limit group): learned,
    additive increase / multiplicative decrease, as Netflix's `concurrency-limits` AIMD limiter and TCP.

    A key whose quota is unknown (no remaining-quota headers, no learned window) starts at one request at a time:
    whatever is in flight when its window fills earns a 429, and a burst would otherwise put every thread on the
    last keys with quota left at once. It stays there for its first `PROVEN_AFTER` answers — free tiers hold 5 to
    30 requests a window — then, like TCP, grows by one per answer (doubling each round of answers) until its first
    429, and by 1/limit per answer (one more per round) after it; a 429 halves it. An answer that says how many
    requests the key has left in a short window (Mistral's minute) sets the limit to at least that, so known quota
    is used at once; a learned window's slots lift it at most twice over per answer; a count of the day (Groq's,
    Cerebras') does not.
    """

    limit: float = 1.0
    answers: int = 0
    refused: bool = False  # a 429 has been seen: grow additively from now on
    CEILING = 256.0
    PROVEN_AFTER = 20

    @property
    def allowed(self) -> int:
        return int(self.limit)

    def succeeded(self, remaining: int | None, *, learned: bool = False) -> None:
        """An answer; `remaining`: requests it says are left, reported by the provider or, `learned`, read from a
        window learned from 429s — which may be wrong (a token bucket read as a sliding window): that lifts the
        limit no more than twice over per answer, so a wrong window costs the requests of one doubling."""
        self.answers += 1
        if self.answers <= self.PROVEN_AFTER:
            grown = self.limit
        else:
            grown = self.limit + (1.0 / self.limit if self.refused else 1.0)
        if remaining is not None:
            grown = max(grown, min(float(remaining), 2 * self.limit) if learned else float(remaining))
        self.limit = min(self.CEILING, grown)

    def limited(self) -> None:
        self.refused = True
        self.limit = max(1.0, self.limit / 2.0)


@dataclass(frozen=True)
class Pacing:
    """What was learned about one subject's hidden limit (a key, or a shared-limit group), for providers that
    report no quota: the backoff ladder, and how many answers a window holds.

    The successes counted in a window that ended in a hint-less 429 are the window's size; answers still in
    flight when the 429 came (they arrive during the rest) count toward the window that just closed. Once the
    size is known, each success yields a `QuotaHint` (requests left, seconds of the learned rest), so the store's
    in-flight gate and the key manager spend the window exactly and rest the key before the next 429.

    Kept in the store as a document and changed atomically (`StateStore.change`), so every process sharing the
    store counts one window and climbs one ladder.
    """

    backoff: Backoff = field(default_factory=Backoff)
    window: int | None = None
    used: int = 0
    closed_until: float = 0.0

    @classmethod
    def of(cls, document: Document) -> Pacing:
        ladder = document.get("backoff") or [0, None, None]
        return cls(Backoff(*ladder), document.get("window"), document.get("used", 0), document.get("closed", 0.0))

    def document(self) -> Document:
        ladder = [self.backoff.step, self.backoff.rest, self.backoff.learned]
        return {"backoff": ladder, "window": self.window, "used": self.used, "closed": self.closed_until}

    def limited(self, now: float, policy: CooldownPolicy, seen: int = 0) -> Pacing:
        """A hint-less 429: one step up the ladder, and the current window closes for that step's rest.

        `seen`: successes the caller counted itself before anything was learned (the first 429 of a subject),
        a first guess at the window's size that the next 429 corrects."""
        backoff = policy.climb(self.backoff)
        used = self.used or (seen if self.window is None else 0)
        closed_until = now + (backoff.rest or 0)
        return replace(self, backoff=backoff, window=used or self.window, used=used, closed_until=closed_until)

    def succeeded(self, now: float, policy: CooldownPolicy) -> Pacing:
        pacing = replace(self, backoff=policy.settle(self.backoff))
        if now < pacing.closed_until:  # a late answer from the window that just closed
            used = pacing.used + 1
            return replace(pacing, used=used, window=max(pacing.window, used) if pacing.window else None)
        used = 1 if pacing.closed_until else pacing.used + 1
        remaining = self._remaining(pacing.window, used, pacing.backoff.learned)
        closed_until = now + (pacing.backoff.learned or 0) if remaining == 0 else 0.0
        return replace(pacing, used=used, closed_until=closed_until)

    def quota(self) -> QuotaHint | None:
        """What the window has left after the success that produced this state (None while nothing is learned)."""
        remaining = self._remaining(self.window, self.used, self.backoff.learned)
        return None if remaining is None else QuotaHint(remaining, self.backoff.learned)

    @staticmethod
    def _remaining(window: int | None, used: int, rest: float | None) -> int | None:
        return None if window is None or rest is None else max(0, window - used)


SLOT_MARGIN = 0.01
"""Seconds added to the moment a limit frees (a slot, a window's reset, a hint's wait), so the provider has surely
freed it when the key resumes: hints come rounded to the centisecond (Go durations) or the millisecond."""
SLOTS_KEPT = 256


@dataclass(frozen=True)
class SlotLog:
    """A subject's sliding window, learned from 429s that carry a hint (OpenRouter, Gemini say nothing about quota
    on a success): at most `size` answers in any `length` seconds, each slot freeing `length` after the answer
    that took it.

    The hint names when the oldest answer in the provider's window frees its slot. In the log of recent answers,
    that oldest one is the latest that follows a gap of at least the hint (the one before it is already out of
    the window), so one 429 gives both numbers: `length` = the hint's moment − that answer, `size` = the answers
    since it. From then on each success yields a `QuotaHint`: slots left now, and when one frees (the next slot,
    not the whole window: a sliding window refills one answer at a time), so the store's in-flight gate and the
    key manager keep to it. Kept in the store like `Pacing`, so every process sharing it keeps one log.
    """

    times: tuple[float, ...] = ()
    size: int | None = None
    length: float | None = None
    closed_until: float = 0.0

    @classmethod
    def of(cls, document: Document) -> SlotLog:
        return cls(
            tuple(document.get("times", ())), document.get("size"), document.get("length"), document.get("closed", 0.0)
        )

    def document(self) -> Document:
        return {"times": list(self.times), "size": self.size, "length": self.length, "closed": self.closed_until}

    def limited(self, now: float, hint: float, seen: Sequence[float] = ()) -> SlotLog:
        """A 429 with a hint. `seen`: answer times the caller logged itself before anything was learned."""
        if now < self.closed_until:  # another request of the same full window: nothing new
            return replace(self, closed_until=max(self.closed_until, now + hint))
        log = self.times or tuple(seen)
        if self.size and self.length and len(log) >= self.size:
            # Refused though the log said a slot had freed: the provider's oldest slot frees later than learned (a
            # window on the clock first seen in part, a length read from a rounded hint). Stretch the window to it;
            # and where the provider reopened lately (the last 429's moment), to the pace it kept since: `size`
            # slots at the rate it admitted them (a token bucket read from its burst refills slower than that).
            length = max(self.length, now + hint - log[-self.size])
            since, span = sum(1 for t in log if t >= self.closed_until - SLOT_MARGIN), now + hint - self.closed_until
            if since and 0 < span <= 2 * self.length:
                length = max(length, self.size * span / since)
            return replace(self, times=log, length=length, closed_until=now + hint)
        if not log or (self.length and hint < 0.1 * self.length):
            return replace(self, closed_until=now + hint)  # a slot about to free says nothing about the window
        oldest = max(i for i in range(len(log)) if i == 0 or log[i] - log[i - 1] >= hint)
        for first in (oldest, 0):  # the gap rule's reading, else the whole log as one window
            size, length = len(log) - first, now + hint - log[first]
            if length > 0 and _densest(log, length) <= size:  # it admitted every answer logged: a window that fits
                return replace(self, times=log, size=size, length=length, closed_until=now + hint)
        return replace(self, closed_until=now + hint)  # no window fits what was admitted: learn nothing yet

    def succeeded(self, now: float) -> SlotLog:
        horizon = now - self.length if self.length else -math.inf
        times = (*(t for t in self.times if t > horizon), now)[-SLOTS_KEPT:]
        if self.size and self.length and now < self.closed_until:  # a late answer of the window a 429 closed
            opened = self.closed_until - self.length
            return replace(self, times=times, size=max(self.size, sum(1 for t in times if t >= opened)))
        return replace(self, times=times)

    def quota(self, now: float) -> QuotaHint | None:
        """Slots left now and seconds until one frees (None while nothing is learned)."""
        if self.size is None or self.length is None:
            return None
        recent = [t for t in self.times if t > now - self.length]
        left = self.size - len(recent)
        if left > 0:
            return QuotaHint(left, (recent[0] + self.length - now) if recent else self.length)
        frees = recent[len(recent) - self.size] + self.length  # the key manager adds `SLOT_MARGIN` to the rest
        return QuotaHint(0, max(0.0, frees - now))


def _densest(times: Sequence[float], length: float) -> int:
    """The most of `times` (ascending) within any `length` seconds."""
    most, first = 0, 0
    for last, at in enumerate(times):
        while first < last and at - times[first] >= length:
            first += 1
        most = max(most, last - first + 1)
    return most


@dataclass(frozen=True)
class StormRule:
    """Most keys of one provider answering 429 within a few seconds means a provider- or IP-wide limit.

    Then resting the provider's remaining keys briefly beats burning through every one of them. It takes at
    least `min_keys` distinct keys, so a small pool (the original 4 OpenRouter keys) is simply walked through.
    The 429s seen are a document in the store, so 429s in different processes add up to one storm.
    """

    window: float = 5.0
    share: float = 0.75
    min_keys: int = 4

    def applies(self, total_keys: int) -> bool:
        return total_keys > self._needed(total_keys)

    def observe(self, seen: Document, key: str, rest: float, now: float, total_keys: int) -> Document:
        """`seen` with one more 429 and the rest it earned. When it completes a storm, `storm` holds the shortest
        of those rests (the other keys then rest no longer than the rate-limited ones: a storm is a reason to
        pause, not to outlast the limit itself), `since` when its first 429 came, and the list starts over."""
        recent = [entry for entry in seen.get("seen", []) if entry[0] >= now - self.window] + [[now, key, rest]]
        if len({entry[1] for entry in recent}) < self._needed(total_keys):
            return {"seen": recent, "storm": None}
        return {"seen": [], "storm": min(entry[2] for entry in recent), "since": min(e[0] for e in recent)}

    def _needed(self, total_keys: int) -> int:
        return max(self.min_keys, math.ceil(self.share * total_keys))
