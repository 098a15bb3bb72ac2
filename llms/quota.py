"""Spending each key's quota without earning 429s: configured limits, storm detection, and adaptive in-flight limits
(what 429s taught of limits a provider keeps to itself: `llms.learned_windows`, `llms.learned_pacing`; what is left
of it, as status pages read it: `llms.quota_left`).

These are the key manager's helpers for *avoiding* rate limits, as opposed to reacting to them. They are pure
rules; what they count lives in the store (configured limits in `StateStore.spend`, in-flight requests in
`llms.state.base.Gate`, storms as a document), so every process sharing it acts as one — except `InFlightLimit`,
which is each process's own, like a TCP connection's window, though while a key's quota is unknown it counts every
process's requests out (`Leases.admit`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from config.api_keys import ApiKey
from llms.state.base import Document, RequestLimits


def limit_subject(key: ApiKey, part: str) -> str:
    """What a limit is learned and counted for: the shared-limit group when the key has one, else the key; and the
    model (`part`) where the provider counts limits per model."""
    base = f"{key.provider}/{key.group}" if key.group else key.fingerprint
    return f"{base}|{part}" if part else base


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
    last keys with quota left at once. Once its first answer said nothing of the quota, one more may go every
    `spacing` seconds whatever is in flight (`room`), so slow answers do not leave its window part unused: `SPACING`
    at first, halved every `SPACING_HALVED_AFTER` answers (a 2 s window of 10 under half-second answers got 0.42 of
    its quota at one send per `SPACING`), never below half the quickest answer's round trip. It stays
    there for its first `PROVEN_AFTER` answers — free tiers hold 5 to 30 requests a window — then, like TCP, grows
    by one per answer (doubling each round of answers) until its first 429, and by 1/limit per answer (one more per
    round) after it; a 429 halves it. An answer that says how many requests the key has left in a short window
    (Mistral's minute) sets the limit to at least that, so known quota is used at once; a window's size, where the
    count gives it (OpenAI's), or a learned window's, lifts it to that size (every slot may be out at once: the
    store's gate keeps to the slots) — a learned one at most twice over per answer; a count of the day (Groq's,
    Cerebras') does not.
    """

    limit: float = 1.0
    answers: int = 0
    refused: bool = False  # a 429 has been seen: grow additively from now on
    told: bool = False  # an answer said how many requests are left (or a learned window did)
    fastest: float = math.inf  # the quickest answer's round trip, seconds
    CEILING = 256.0
    PROVEN_AFTER = 20
    SPACING = 0.5
    """Seconds between sends beyond the first in flight to a key whose quota is unknown: a 429 comes back sooner
    than that (a gateway refusing before any model runs), so the key is cooled before the next send and the window
    that fills costs one 429, however slow the answers are — where one request at a time got 3 of a window of 5 a
    minute when answers took 20 s."""
    SPACING_HALVED_AFTER = 4

    @property
    def allowed(self) -> int:
        return int(self.limit)

    def room(self, in_flight: int, since_sent: float) -> bool:
        """Whether one more request may go with `in_flight` in flight, the last sent `since_sent` seconds ago."""
        return in_flight < self.allowed or (self.unknown and since_sent >= self.spacing)

    @property
    def spacing(self) -> float:
        """Seconds between sends beyond the first in flight while the quota is unknown. Never below half the
        quickest answer's trip: a 429 is refused before any model runs (the network's trip, where an answer's is
        mostly the model's), so it comes back before the next send and the key is cooled (the window that fills
        still costs one 429). At the whole trip, answers of a third of a second held a 2 s window of 20 to 0.51
        of it over ten windows (0.62 at half): its first 429 came after windows of 7 to 15, read as one slow one."""
        halved = self.SPACING * 0.5 ** (self.answers // self.SPACING_HALVED_AFTER)
        return min(self.SPACING, max(self.fastest / 2, halved))

    @property
    def unknown(self) -> bool:
        """Nothing is known of the quota yet: no 429, no count of what is left, not yet proven by answers."""
        return self.answers > 0 and self.learning

    @property
    def learning(self) -> bool:
        """Nothing is known of the quota yet, from the first request on (`unknown` starts at the first answer):
        while so, the limit counts every process's requests out, where processes share the store (`Leases.admit`).
        Once proven, each process's own window grows with its own answers, as a TCP sender's does."""
        return self.answers <= self.PROVEN_AFTER and not self.refused and not self.told

    def succeeded(
        self, remaining: int | None, *, learned: bool = False, window: int | None = None, trip: float = math.inf
    ) -> None:
        """An answer; `remaining`: requests it says are left (`window`: of how many), reported by the provider or,
        `learned`, read from a window learned from 429s — which may be wrong (a token bucket read as a sliding
        window): that lifts the limit no more than twice over per answer, so a wrong window costs the requests of
        one doubling. `trip`: seconds from its send to its answer."""
        self.answers += 1
        self.fastest = min(self.fastest, trip)
        if self.answers <= self.PROVEN_AFTER:
            grown = self.limit
        else:
            grown = self.limit + (1.0 / self.limit if self.refused else 1.0)
        if remaining is not None:
            self.told = True
            at_once = float(max(remaining, window or 0))
            grown = max(grown, min(at_once, 2 * self.limit) if learned else at_once)
        self.limit = min(self.CEILING, grown)

    def limited(self) -> None:
        self.refused = True
        self.limit = max(1.0, self.limit / 2.0)


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
        """`seen` with one more 429 and the rest it earned. When it completes a storm, `storm` holds the seconds
        from `now` until the first of those rests ends (the other keys then rest no longer than the rate-limited
        ones: a storm is a reason to pause, not to outlast the limit itself; the shortest rest counted from `now`
        outlasted the one that began earlier, by as long as the store took between the two 429s), `since` when its
        first 429 came, and the list starts over."""
        recent = [entry for entry in seen.get("seen", []) if entry[0] >= now - self.window] + [[now, key, rest]]
        if len({entry[1] for entry in recent}) < self._needed(total_keys):
            return {"seen": recent, "storm": None}
        ends = min(at + seconds for at, _, seconds in recent)
        return {"seen": [], "storm": max(0.0, ends - now), "since": min(e[0] for e in recent)}

    def _needed(self, total_keys: int) -> int:
        return max(self.min_keys, math.ceil(self.share * total_keys))
