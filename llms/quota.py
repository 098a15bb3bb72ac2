"""Spending each key's quota without earning 429s: configured limits, learned windows, storm detection, and
adaptive in-flight limits (what is left of it, as status pages read it: `llms.quota_left`).

These are the key manager's helpers for *avoiding* rate limits, as opposed to reacting to them. They are pure
rules; what they count lives in the store (configured limits in `StateStore.spend`, in-flight requests in
`llms.state.base.Gate`, learned windows and storms as documents), so every process sharing it acts as one —
except `InFlightLimit`, which is each process's own, like a TCP connection's window.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

from config.api_keys import ApiKey
from llms.cooldown import SLOT_MARGIN, TRIP_SPREAD, TRY_MARGIN, Backoff, CooldownPolicy
from llms.outcomes import QuotaHint
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
    its quota at one send per `SPACING`), never below the quickest answer's round trip. It stays
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
        """Seconds between sends beyond the first in flight while the quota is unknown. Never below the quickest
        answer's trip: a 429 is refused before any model runs, so it comes back no later than that, and the key is
        cooled before the next send (the window that fills still costs one 429)."""
        halved = self.SPACING * 0.5 ** (self.answers // self.SPACING_HALVED_AFTER)
        return min(self.SPACING, max(self.fastest, halved))

    @property
    def unknown(self) -> bool:
        """Nothing is known of the quota yet: no 429, no count of what is left, not yet proven by answers."""
        return 0 < self.answers <= self.PROVEN_AFTER and not self.refused and not self.told

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


SLOTS_KEPT = 256
SLIDING_AFTER = 3
"""Counts with requests left whose resets all agree it takes to read a window as a sliding log
(`SlotLog.sliding`), and counts that agree on a bucket's seconds per request (`LearnedLimits._dripping`)."""
IDLE_GAP = 10.0
"""An answer this long after the one before starts a new run: at a subject's first 429, only the latest run of
answers counts toward the window that 429 met (an idle key's earlier answers belong to windows long past)."""


@dataclass(frozen=True)
class Pacing:
    """What was learned about one subject's hidden limit (a key, or a shared-limit group), for providers that
    report no quota: how many answers a window holds, and how long it lasts.

    A window's size is the answers counted from its opening (its first answer) to the 429 that met it; answers
    still in flight when the 429 came count too. Its length is bracketed: a 429 sent `t` after the window opened
    says it is longer than `t` (`shortest`); a try that goes through after a rest says it is at most that long
    (`backoff.learned`). The policy's ladder climbs round lengths until a try goes through, then, while the key
    spends its windows anyway, tries a shorter round length now and then (`probe`); a refused probe costs one
    429 and the key keeps to the length that works. Once known, answers are kept to a sliding log — at most
    `window` answers in any `learned` seconds — which spends a fixed window (its answers come in a burst) as
    exactly as a sliding one; each success yields a `QuotaHint` so the key rests before the next 429.

    Kept in the store as a document and changed atomically (`StateStore.change`), so every process sharing the
    store counts one window and climbs one ladder.
    """

    backoff: Backoff = field(default_factory=Backoff)
    window: int | None = None
    times: tuple[float, ...] = ()
    """When the subject's recent answers were sent, ascending."""
    opened: float = 0.0
    """When the current window opened: its first answer (the first after a rest)."""
    shortest: float = 0.0
    probe: float | None = None
    closed_until: float = 0.0
    uncounted: tuple[float, float] | None = None
    """A window counted at a 429, to count again once an answer sent after it comes (`recounted`): where processes
    share the store, answers another process had not yet written were missing from the count, and a window
    learned too small is never corrected by a 429. (Since when answers count, or 0 for the latest run; the 429's
    sending.)"""

    @classmethod
    def of(cls, document: Document) -> Pacing:
        ladder = document.get("backoff") or [0, None, None]
        return cls(
            Backoff(*ladder),
            document.get("window"),
            tuple(document.get("times", ())),
            document.get("opened", 0.0),
            document.get("shortest", 0.0),
            document.get("probe"),
            document.get("closed", 0.0),
            tuple(document["uncounted"]) if document.get("uncounted") else None,
        )

    def document(self) -> Document:
        ladder = [self.backoff.step, self.backoff.rest, self.backoff.learned]
        return {
            "backoff": ladder,
            "window": self.window,
            "times": list(self.times),
            "opened": self.opened,
            "shortest": self.shortest,
            "probe": self.probe,
            "closed": self.closed_until,
            "uncounted": list(self.uncounted) if self.uncounted else None,
        }

    def limited(self, sent: float, policy: CooldownPolicy, seen: Sequence[float] = ()) -> Pacing:
        """A hint-less 429 for a request sent at `sent`; the rest ends at `closed_until`.

        `seen`: when the subject's answers were sent, as the caller counted them: its own before anything was
        learned (the first 429 of a subject), or every process's (a shared store's request log), which replace
        the answers this log holds."""
        if sent < self.closed_until:  # sent before the current rest ends: the window that already closed
            return self
        longest = self.backoff.learned
        pacing = replace(self, times=tuple(sorted(seen))[-SLOTS_KEPT:]) if seen else self
        if longest is not None and not pacing.window:  # the length was found before any answer was counted
            pacing = replace(pacing, window=sum(1 for t in pacing.times if t > sent - longest) or None)
        if pacing.window and longest is not None and len(pacing.times) >= pacing.window:
            first = pacing.times[-pacing.window]
            if sent - first < longest:  # the log was full: a shorter length tried and refused, or requests raced
                shortest = max(pacing.shortest, sent - first)
                return replace(pacing, shortest=shortest, probe=None, closed_until=first + longest)
        if pacing.backoff.step == 0:  # a first 429, or the learned window no longer holds: count this window
            times = pacing.times
            counted = [t for t in times if t > sent - longest] if longest is not None else list(_latest_run(times))
            opened, window = (counted[0] if counted else sent), len(counted) or pacing.window
            pacing = replace(
                pacing,
                backoff=Backoff(),
                window=window,
                opened=opened,
                shortest=0.0,
                uncounted=(sent - longest if longest is not None else 0.0, sent),
            )
        elapsed = max(0.0, sent - pacing.opened)
        backoff = policy.climb(pacing.backoff, elapsed)
        shortest, closed_until = max(pacing.shortest, elapsed), sent + (backoff.rest or 0.0)
        return replace(pacing, backoff=backoff, shortest=shortest, probe=None, closed_until=closed_until)

    def succeeded(self, sent: float, policy: CooldownPolicy) -> Pacing:
        """An answer to a request sent at `sent`."""
        before = self.times
        times = tuple(sorted((*before, sent)))[-SLOTS_KEPT:]
        if sent < self.closed_until:  # sent before the rest began: a late answer of the window a 429 closed
            used = sum(1 for t in times if t >= self.opened)
            return replace(self, times=times, window=max(self.window, used) if self.window else None)
        pacing = replace(self, times=times)
        if self.closed_until:  # the first answer after a rest: the window reopened
            first = before[-self.window] if self.window and len(before) >= self.window else self.opened
            length = sent - first
            backoff = self.backoff
            if backoff.step:
                backoff = policy.settle(backoff, length)
            elif backoff.learned is not None and self.uncounted is None:  # (a window yet to recount may be short)
                backoff = replace(backoff, learned=min(backoff.learned, length))
            shortest = self.shortest if backoff.learned is None or self.shortest < backoff.learned else 0.0
            pacing = replace(pacing, backoff=backoff, shortest=shortest, opened=sent, probe=None, closed_until=0.0)
        learned, window = pacing.backoff.learned, pacing.window
        if window and learned is not None and _sliding_quota(times, window, learned, sent).remaining == 0:
            # The log is full: rest until its first answer ages out (sooner, where a shorter length is tried).
            probe = policy.probe(pacing.shortest, learned)
            if probe is not None and times[-window] + probe <= sent:
                probe = None  # already past: nothing to learn from the next answer
            length = learned if probe is None else probe + TRY_MARGIN
            return replace(pacing, probe=probe, closed_until=times[-window] + length)
        return pacing

    def recounted(self, seen: Sequence[float], settled: bool = True) -> Pacing:
        """The window counted at a 429 counted again once an answer sent after the 429 came (the rest is over, and
        every answer sent before it has been written), from `seen` (every process's answers, a shared store's
        request log; else this log's own): never smaller than it was. Until `settled` (other processes' answers
        may still be on their way: `RECOUNT_FOR`) it is counted again at the next answer too."""
        if self.uncounted is None:
            return self
        window = _counted(seen or self.times, *self.uncounted)
        return replace(
            self, window=max(self.window or 0, window) or None, uncounted=None if settled else self.uncounted
        )

    def quota(self, now: float) -> QuotaHint | None:
        """What the window has left at `now` (None while nothing is learned): requests, and seconds until the
        rest ends or the oldest answer in it ages out."""
        learned = self.backoff.learned
        if self.window is None or learned is None:
            return None
        if self.closed_until > now:
            return QuotaHint(0, self.closed_until - now, limit=self.window)
        return _sliding_quota(self.times, self.window, learned, now)


def _counted(times: Iterable[float], since: float, refused: float) -> int:
    """Answers sent after `since` (0: in the latest run) and before a 429 `refused` them more."""
    before = sorted(t for t in times if since <= t < refused)
    return len(before if since else _latest_run(before))


def _latest_run(times: Sequence[float]) -> tuple[float, ...]:
    """The answers after the last gap of `IDLE_GAP` or more."""
    start = next((i for i in range(len(times) - 1, 0, -1) if times[i] - times[i - 1] >= IDLE_GAP), 0)
    return tuple(times[start:])


def _sliding_quota(times: Sequence[float], size: int, length: float, now: float) -> QuotaHint:
    """A sliding log of at most `size` answers in any `length` seconds, answers sent at `times` (ascending): slots
    left at `now`, and seconds until the next one frees."""
    recent = [t for t in times if t > now - length]
    left = size - len(recent)
    if left > 0:
        return QuotaHint(left, (recent[0] + length - now) if recent else length, limit=size)
    frees = recent[len(recent) - size] + length  # the key manager adds `SLOT_MARGIN` to the rest
    return QuotaHint(0, max(0.0, frees - now), limit=size)


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
    uncounted: tuple[float, float] | None = None
    """The window a 429 taught, to count again once an answer sent after it comes, as `Pacing.uncounted`."""
    resets: tuple[float, float, int] = (math.inf, 0.0, 0)
    """The shortest and longest resets the answers reported since a full one taught the window (`reported`), and
    how many of them had requests left: a sliding log's are all its length."""

    @classmethod
    def of(cls, document: Document) -> SlotLog:
        uncounted, resets = document.get("uncounted"), document.get("resets")
        return cls(
            tuple(document.get("times", ())),
            document.get("size"),
            document.get("length"),
            document.get("closed", 0.0),
            tuple(uncounted) if uncounted else None,
            (math.inf if resets[0] is None else resets[0], resets[1], resets[2]) if resets else (math.inf, 0.0, 0),
        )

    def document(self) -> Document:
        least, most, count = self.resets
        return {
            "times": list(self.times),
            "size": self.size,
            "length": self.length,
            "closed": self.closed_until,
            "uncounted": list(self.uncounted) if self.uncounted else None,
            "resets": [least if math.isfinite(least) else None, most, count],
        }

    def limited(self, now: float, hint: float, seen: Sequence[float] = (), in_flight: int = 0) -> SlotLog:
        """A 429 with a hint. `seen`: answer times the caller logged itself before anything was learned;
        `in_flight`: requests of the subject still out, their answers not yet in (admitted before this one)."""
        if now < self.closed_until:  # another request of the same full window: nothing new
            return replace(self, closed_until=max(self.closed_until, now + hint))
        log = self.times or tuple(sorted(seen))
        if self.size and self.length and len(log) >= self.size:
            # Refused though the log said a slot had freed: the provider's oldest slot frees later than learned (a
            # window on the clock first seen in part, a length read from a rounded hint). Stretch the window to it;
            # and where the provider reopened lately (the last 429's moment), to the pace it kept since: `size`
            # slots at the rate it admitted them, answers still out counted (a token bucket read from its burst
            # refills slower than that); at most twice the length per 429, as a pace read from a few answers is rough.
            length = max(self.length, now + hint - log[-self.size])
            since = sum(1 for t in log if t >= self.closed_until - SLOT_MARGIN) + in_flight
            span = now + hint - self.closed_until
            if since and 0 < span <= 2 * self.length:
                length = max(length, min(self.size * span / since, 2 * self.length))
            return replace(self, times=log, length=length, closed_until=now + hint)
        if not log or (self.length and hint < 0.1 * self.length):
            return replace(self, closed_until=now + hint)  # a slot about to free says nothing about the window
        if self.size and self.length and len(log) + in_flight >= self.size:
            return replace(self, closed_until=now + hint)  # its answers still out: not a smaller window
        oldest = max(i for i in range(len(log)) if i == 0 or log[i] - log[i - 1] >= hint)
        for first in (oldest, 0):  # the gap rule's reading, else the whole log as one window
            size, length = len(log) - first, now + hint - log[first]
            if length > 0 and _densest(log, length) <= size:  # it admitted every answer logged: a window that fits
                # Counted again once the answers still out are in, from where the provider's window began as the
                # hint and the window learned before say (another process's answers of it may not be logged yet).
                counted = (min(log[first], now + hint - (self.length or length)), now)
                return replace(self, times=log, size=size, length=length, closed_until=now + hint, uncounted=counted)
        return replace(self, closed_until=now + hint)  # no window fits what was admitted: learn nothing yet

    def succeeded(self, now: float) -> SlotLog:
        horizon = now - self.length if self.length else -math.inf
        times = tuple(sorted((*(t for t in self.times if t > horizon), now)))[-SLOTS_KEPT:]  # answers come out of order
        if self.size and self.length and now < self.closed_until:  # a late answer of the window a 429 closed
            opened = self.closed_until - self.length
            return replace(self, times=times, size=max(self.size, sum(1 for t in times if t >= opened)))
        return replace(self, times=times)

    def reported(self, limit: int, reset: float, seen: Sequence[float] = ()) -> SlotLog:
        """What an answer that found the window full said of it: its size (`x-ratelimit-limit-requests`) and
        the time until it is back to its initial state (`x-ratelimit-reset-requests`, as OpenAI defines it).
        That time is the window's length for a sliding log, on every answer (the request just admitted is the
        newest in it); a bucket's and a fixed window's vary (`report`, `sliding`). Read as a sliding log of that
        size and length over the answers' own sends, the window frees each slot as it frees, where a count read
        10 s before its answer came said only how many were left then."""
        times = self.times or tuple(sorted(seen))[-SLOTS_KEPT:]  # `seen`: sent before anything was learned
        return replace(self, times=times, size=limit).report(reset, 0)

    def report(self, reset: float, remaining: int) -> SlotLog:
        """An answer's reported reset, where a full one taught the window (`reported`). While they agree, the
        length is the shortest (the others were read from answers bounded later: `bound_reset`), else the
        longest. Only counts with requests left count toward reading it as a sliding log: an empty bucket's
        reset is its whole refill too."""
        least, most = min(self.resets[0], reset), max(self.resets[1], reset)
        count = self.resets[2] + (remaining > 0)
        return replace(self, length=least if most - least <= TRIP_SPREAD else most, resets=(least, most, count))

    @property
    def read_from_counts(self) -> bool:
        """Whether answers' counts taught the window (`reported`), so each later count reports its reset."""
        return math.isfinite(self.resets[0])

    @property
    def sliding(self) -> bool:
        """Whether the answers' counts are a sliding log's: every reset they reported was the window's whole
        length, with requests left in enough of them to tell (a fixed window's first request reads so too, its
        others less; an empty bucket's, its full refill)."""
        least, most, count = self.resets
        return count >= SLIDING_AFTER and most - least <= TRIP_SPREAD

    def recounted(self, seen: Sequence[float], settled: bool = True) -> SlotLog:
        """The window a 429 taught counted again, as `Pacing.recounted`: never smaller than it was."""
        if self.uncounted is None or self.size is None:
            return replace(self, uncounted=None)
        since, refused = self.uncounted
        times, length = sorted(seen or self.times), self.length
        # The window's oldest answer may have been written after the 429 was read (another process's): where the
        # log now shows one sent at most a trip's spread before the oldest read then, which the gap rule puts first
        # (the hint's gap, less that spread, before it; or nothing), the window began there. Four processes learned
        # windows of 4 of 5, their oldest answer 20 ms unwritten.
        before, hint = [t for t in times if t < since], self.closed_until - refused
        firsts = [
            i
            for i in range(len(before))
            if since - before[i] <= TRIP_SPREAD and (i == 0 or before[i] - before[i - 1] >= hint - TRIP_SPREAD)
        ]
        if firsts and hint > TRIP_SPREAD:
            since = before[firsts[-1]]
            length = max(length or 0.0, self.closed_until - since)
        # (a shared store's log reads sends as answer − latency: a little off)
        size = max(self.size, _counted(times, since - SLOT_MARGIN, refused))
        return replace(self, size=size, length=length, uncounted=None if settled else (since, refused))

    def quota(self, now: float) -> QuotaHint | None:
        """Slots left now and seconds until one frees (None while nothing is learned)."""
        if self.size is None or self.length is None:
            return None
        return _sliding_quota(self.times, self.size, self.length, now)


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
