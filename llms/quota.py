"""Spending each key's quota without earning 429s: configured limits, storm detection, adaptive in-flight limits, the
windows a provider's counts show, and budgets of tokens where answers report them (what 429s taught of limits a
provider keeps to itself: `llms.learned_windows`, `llms.learned_pacing`; what is left of it, as status pages read
it: `llms.quota_left`).

These are the key manager's helpers for *avoiding* rate limits, as opposed to reacting to them. They are pure
rules; what they count lives in the store (configured limits in `StateStore.spend`, in-flight requests in
`llms.state.base.Gate`, storms as a document), so every process sharing it acts as one — except `InFlightLimit`,
which is each process's own, like a TCP connection's window, though while a key's quota is unknown it counts every
process's requests out (`Leases.admit`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from config.api_keys import ApiKey
from llms.cooldown import SLOT_MARGIN, TRIP_SPREAD
from llms.outcomes import TOKENS_WINDOW
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
        doubled = 2 * self.limit
        self.limit = min(self.CEILING, grown)
        if remaining is not None:
            self.told_of(remaining, window, at_most=doubled if learned else math.inf)

    def told_of(self, remaining: int, window: int | None, *, at_most: float = math.inf) -> None:
        """An answer said how many requests are left (of `window`): the limit is at least that, `at_most` so much
        (`succeeded`). Where processes share the store, another process's answer says so too: held to one request
        out among all until its own answer came, under 15 s answers a process spent a limit on tokens its answers
        read 0.03 below one process alone."""
        self.told = True
        self.limit = min(self.CEILING, max(self.limit, min(float(max(remaining, window or 0)), at_most)))

    def limited(self) -> None:
        self.refused = True
        self.limit = max(1.0, self.limit / 2.0)


@dataclass(frozen=True, slots=True)
class WindowsShown:
    """What a provider's counts showed of its windows (per model where it counts per model): the longest a window
    lasts, at least. One count alone says little: a window on the clock read in its last 0.1 s resets in 0.1 s, and
    a request's slot released after that cost a 429 a window."""

    reset: float = 0.0  # the longest reset a count gave
    between: float = 0.0  # the shortest a window lasted as two counts' ends showed it (0: not yet shown)
    last: tuple[float, float] | None = None  # the latest count's read and end
    ends: int = 0  # windows' ends seen
    learned: float | None = None
    """The length of a window learned from 429s, where the provider's counts say nothing of it (`longest` till they
    show one): answers slower than a learned window held their keys' slots until they came (fixed 1 a second under
    5 s answers, a hint only on the 429: 0.20 of the quota over 30 s; 0.60 so)."""
    margin: float = SLOT_MARGIN
    """Seconds past the window that a request out holds its slot (`SlotEnds.until`): as much as trips out differ,
    which a 429 on a key whose requests out had freed theirs shows is more (`SlotEnds.refused`: twice, up to
    `TRIP_SPREAD`). At a constant 0.1 s, a bucket of 1 a second under 5 s answers sent one every 1.1 s."""

    def counted(self, read: float, reset: float) -> WindowsShown:
        """One more count, read then, saying the window resets `reset` later."""
        end, between = read + reset, self.between
        if self.last is not None and abs(end - self.last[1]) <= TRIP_SPREAD:  # the same window, read again
            return replace(self, reset=max(self.reset, reset), last=(read, max(end, self.last[1])))
        if self.last is not None and read > self.last[0] and end - self.last[1] > read - self.last[0] + TRIP_SPREAD:
            # The window ended further on than time went: a window on the clock, a whole length after the last; or
            # windows apart (idle between, or started at their first request): each such span is at least a window,
            # so the shortest is the nearest (the longest grew with every idle spell: a fixed 5/1 s window under
            # 5 s answers held each request's slot 3.6 s after a minute, and the key to 0.43 of its quota).
            between = min(between or math.inf, end - self.last[1])
        return replace(self, reset=max(self.reset, reset), between=between, last=(read, end), ends=self.ends + 1)

    @property
    def longest(self) -> float | None:
        """The longest a window may last, as far as the counts tell (None until two windows' ends were seen)."""
        return max(self.reset, self.between) if self.ends >= 2 else self.learned


@dataclass(frozen=True)
class TokenBudget:
    """The tokens a subject has left in its provider's window of tokens, as an answer that said so read them
    (OpenAI's, Groq's `x-ratelimit-remaining-tokens`): a request is sent only if what is left, less what this
    process's requests sent since that answer's request may spend (`ChatRequest.tokens`), pays for it (by every
    reading `Leases` keeps: the newest and those a trip's spread before it). A count of
    requests cannot hold such a limit: requests differ in size, and a window of 500 tokens took ten requests of 50
    or three of 150. The window refills evenly until `resets`, the moment the provider said it is whole again (a
    bucket: Groq's reset is what was spent over its rate — 73 of 8,000 a minute back in 547 ms, README, provider
    facts — and a request goes as soon as it fits: waiting for the whole bucket left 0.1 of it unspent at a run's
    end; a window that comes back whole at its end costs a 429 where the refill was counted on, and its hint
    rests the key); from `resets` on it holds its `limit`, where said, or, where not, one request goes to learn
    what it holds."""

    left: int
    read: float  # when the request whose answer said so was sent (what the provider counted then)
    resets: float
    limit: int | None = None

    def fits_at(self, tokens: int, spent_since: int) -> float:
        """When a request of `tokens` fits beside `spent_since` (`resets`, at the latest, where the limit is said;
        where it is not, only then with nothing sent since)."""
        needed = spent_since + max(1, tokens)
        if needed <= self.left:
            return -math.inf
        if self.limit is None or needed > self.limit:  # (larger than the window: the provider will say so)
            return self.resets if spent_since == 0 else math.inf  # (else the answers out will say more)
        if self.resets <= self.read:
            return self.resets
        rate = (self.limit - self.left) / (self.resets - self.read)
        return min(self.resets, self.read + (needed - self.left) / rate + SLOT_MARGIN) if rate > 0 else self.resets


DRIP_KEPT = 5 * TOKENS_WINDOW
"""Seconds of the latest spans between 429s a `TokenDrip` measures its rate over (a limit raised is read anew)."""
SENDS_LISTED = 256
"""Requests a `TokenDrip` lists one by one since its latest 429 (the older ones: a sum), however long it goes
without one (a process serving for days sent a million)."""
SPANS_LISTED = 64
"""Spans a `TokenDrip` keeps at most, however short (the oldest go first: the rate stays read from above)."""
DRIP_SURE = 10.0
"""Seconds of spans between 429s before a `TokenDrip`'s rate is read as sure: until then a 429 rests its key for
its hint, and then requests go one at a time until one is admitted (`TokenDrip.single_file`). A rate read from
above over half a second is several times too high: each 429 then about doubled the seconds measured, ten 429s a
key."""
DRIP_PROBE = 0.005
"""The share of its measured rate a `TokenDrip` adds each window that passes without a 429: a rate measured short
(a limit raised since it was measured) is never corrected by a 429, so it creeps up until one comes and measures
it again."""


@dataclass(frozen=True)
class TokenDrip:
    """A limit on tokens that only its 429s speak of (Azure's "exceeded token rate limit" with a whole-second
    `Retry-After`, Gemini's input tokens a minute; nothing on its answers), kept by the rate it refills at. Each
    429 finds it about empty (less than the refused request left), so the tokens admitted between two 429s are what
    dripped back meanwhile: their sum over the spans' seconds is the rate (a span in which it may have been full
    counts not: `_may_have_filled`). After a 429 a request goes when the tokens dripped since pay for it beside those
    sent since (`fits_at`). Learned as a window of *requests*, such a limit was read anew at every 429 — requests
    differ in size, 50 to 150 tokens, and 30 of them a window were 26 or 35 — 0.94 of the quota at 0.15 429s per
    answer, where tokens are what the client knows of each request before it sends it (`ChatRequest.tokens`).
    Each process keeps its own; where processes share a store, what they all sent counts (`shared`: a running total
    of every process's requests sent, less those refused, `llms.shared_tokens`), else each measured only its own
    share, and learned it on its own (four processes: 0.89 of the quota at 0.13 429s per answer)."""

    refused: float  # when the latest 429's request was sent: the window about empty then
    sends: tuple[tuple[float, int], ...] = ()  # (when, tokens) of the requests sent since, answered or out
    spans: tuple[tuple[float, float], ...] = ()  # (tokens, seconds) admitted between 429s, the latest `DRIP_KEPT`
    emptied: bool = True  # False where `refused` marks a window this reckons full again (an idle spell), not a 429
    short: int = 0  # the tokens the latest 429's request asked: the window had less left (at most that much more)
    answered: bool = False  # whether a request sent since the latest 429 was admitted (`answered_to`)
    folded: tuple[float, int] = (0.0, 0)  # the latest send and the tokens of those no longer in `sends` one by one
    shared_at: int | None = None  # every process's total sent (`shared`) as the latest 429 came (None: alone)

    @property
    def rate(self) -> float | None:
        """Tokens a second the window refills at, as measured (None: not measured yet), at most: the spans' tokens
        plus what the latest 429 may have left unspent, over their seconds. Each span's tokens are what dripped
        back less the few the window held as its 429 came, plus those it held as the span began (less than that
        429's request): over spans end to end these cancel but the last — so the rate is known within one
        request over the seconds measured, and read from above, since a rate read low is never corrected by a
        429 (one read from a second of 0 tokens and a second of 50 kept a refill of 50 a second to 17: 0.58 of
        the quota), where one read high costs a 429 that measures it again."""
        tokens, seconds = sum(t for t, _ in self.spans), sum(s for _, s in self.spans)
        # Plus, alone, those sent with the latest 429's, which may have come before it (six went together as a rest
        # ended, one was refused). Where processes share the store every process's sends are in the total its spans
        # count, and this one's added again read each process's rate apart (49.9–57 a second for 50, the highest
        # over-sending: 0.17 429s per answer, now 0.12).
        together = 0 if self.shared_at is not None else sum(t for s, t in self.sends if s <= self._together)
        tokens += self.short + together
        return tokens / seconds if seconds > 0 and tokens > 0 else None

    def fits_at(self, tokens: int, now: float, shared: int | None = None) -> float:
        """When a request of `tokens` fits beside those sent since the latest 429 (-inf: the rate is unknown), by
        every process sharing the store where `shared` (their total sent now) says."""
        rate = self.rate
        if rate is None:
            return -math.inf
        rate *= 1 + DRIP_PROBE * max(0.0, now - self.refused) / TOKENS_WINDOW
        return self.refused + (self._spent_by_all(shared, self.spent) + max(1, tokens)) / rate + SLOT_MARGIN

    def _spent_by_all(self, shared: int | None, own: int) -> int:
        """The tokens sent since the latest 429: by every process, where their running total is known then and now
        (`shared`), never less than this process's `own`."""
        if shared is None or self.shared_at is None:
            return own
        return max(own, shared - self.shared_at)

    @property
    def spent(self) -> int:
        """The tokens of the requests sent since the latest 429, answered or out."""
        return self.folded[1] + sum(t for _, t in self.sends)

    @property
    def _together(self) -> float:
        """Until when a request left with the latest 429's."""
        return self.refused + TRIP_SPREAD

    def sent(self, at: float, tokens: int, shared: int | None = None) -> TokenDrip:
        """A request of `tokens` sent then (`shared`: every process's total sent before it, where they share the
        store). A window idle long enough to be whole again by the rate starts over from full (a minute's worth),
        its next 429 measuring nothing (it did not find the window emptied by one)."""
        rate = self.rate
        if (
            rate is not None
            and rate * (at - self.refused) - self._spent_by_all(shared, self.spent) >= rate * TOKENS_WINDOW
        ):
            return TokenDrip(
                at - TOKENS_WINDOW, ((at, tokens),), self.spans, emptied=False, short=self.short, shared_at=shared
            )
        sends, folded = [*self.sends, (at, tokens)], self.folded
        if len(sends) > SENDS_LISTED:  # (the oldest past those sent with the 429's: a sum, and when the last left)
            first = next((i for i, (s, _) in enumerate(sends) if s > self._together), len(sends) - 1)
            (sent, cost) = sends.pop(first)
            folded = (max(folded[0], sent), folded[1] + cost)
        return replace(self, sends=tuple(sends), folded=folded)

    def _may_have_filled(self, at: float, sends: Sequence[tuple[float, int]], high: float | None) -> bool:
        """Whether the window may have been full (and dripped nothing) between the latest 429 and `at`: held less
        than that 429's request, what dripped back by the rate read from above less what was sent since never
        reached a minute's worth by the rate read from below. A span of a window spent as it refills counts
        however long (kept to spans shorter than a minute, a key's 429s a few minutes apart measured nothing).
        `high`: the rate read from above (`rate`)."""
        seconds = sum(s for _, s in self.spans)
        if high is None or seconds <= 0:
            return True
        low = max(0.0, sum(t for t, _ in self.spans) - self.short) / seconds
        level, last = float(self.short), self.refused
        lump = [self.folded] if self.folded[1] else []  # (as though all went when the last of them did)
        for sent, tokens in sorted([(s, t) for s, t in sends if s < at] + lump):
            level += high * (sent - last) - tokens
            last = sent
            if level >= low * TOKENS_WINDOW:
                return True
        return level + high * (at - last) >= low * TOKENS_WINDOW

    @property
    def single_file(self) -> bool:
        """Whether requests go one at a time (`spacing`): its rate not sure yet, and none admitted since its latest
        429 or no rate measured at all (after the first 429's rest, every waiting caller went at once, and again as
        the first answer after it came, a rate not yet measured pacing none: four 429s a key at once, 0.062 429s
        per answer where 0.05 is the target)."""
        return not self.sure and (not self.answered or self.rate is None)

    @property
    def spacing(self) -> float:
        """Seconds between requests while they go one at a time (`single_file`) and one is out: a 429 comes back
        sooner (refused before any model runs), so slow answers hold no one back; halved every few admitted, as
        `InFlightLimit.spacing`, so a rate the first 429s left unmeasured (two together measure nothing) is
        reached and measured by the next, not kept to answers' pace."""
        halved = InFlightLimit.SPACING * 0.5 ** (len(self.sends) // InFlightLimit.SPACING_HALVED_AFTER)
        return max(TRIP_SPREAD, halved)

    @property
    def sure(self) -> bool:
        """Whether the rate was measured over `DRIP_SURE` seconds: till then a 429's hint says when to go on."""
        return sum(s for _, s in self.spans) >= DRIP_SURE

    def answered_to(self, sent: float) -> TokenDrip:
        """An answer to a request sent then: the window had room again, if it was sent after the latest 429 (not
        with it: one sent together may have come first)."""
        return replace(self, answered=True) if sent > self.refused + TRIP_SPREAD and not self.answered else self

    def limited(self, at: float, tokens: int, shared: int | None = None) -> TokenDrip:
        """A 429 to a request of `tokens` sent then, which cost nothing: the window held less as it came. `shared`:
        every process's total sent now, this one taken out (None: alone)."""
        sends = list(self.sends)
        if (at, tokens) in sends:
            sends.remove((at, tokens))
        # (one sent before the latest 429 came was in the total it read: taken out since, it is not this span's)
        before = None if shared is None or self.shared_at is None else self.shared_at - tokens
        if at <= self.refused - TRIP_SPREAD:  # sent before the latest 429's: its window is already closed
            return replace(self, sends=tuple(sends), shared_at=before)
        spans, span = self.spans, at - self.refused
        if span < TRIP_SPREAD:  # another sent with the latest 429's: the rate is read from above
            return replace(self, sends=tuple(sends), short=max(self.short, tokens), shared_at=before)
        rate = self.rate
        short = span <= TOKENS_WINDOW - (self.short / rate if rate else 0.0)  # (too short to have filled)
        if self.emptied and (short or not self._may_have_filled(at, sends, rate)):
            sent = self._spent_by_all(shared, self.folded[1] + sum(t for s, t in sends if s < at))
            spans = (*spans, (sent, span))[-SPANS_LISTED:]
            while sum(s for _, s in spans[1:]) >= DRIP_KEPT:
                spans = spans[1:]
        elif spans:  # spans apart: what the latest 429 may have left unspent stays in the sum, as seconds of none
            spans = (*spans, (self.short, 0.0))[-SPANS_LISTED:]
        # (those sent with it may have come before it, or be refused after it: the next span counts them)
        return TokenDrip(at, tuple((s, t) for s, t in sends if s >= at), spans, short=tokens, shared_at=shared)


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
