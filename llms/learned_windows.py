"""What a subject's 429s taught of a limit its provider keeps to itself where they name when it frees: `SlotLog`, a
sliding log or a window on the clock (where they carry no hint: `llms.learned_pacing`, which counts answers by the
rules here too).

Pure rules, kept apart from the rest of `llms.quota` (what keeps keys clear of limits they were told): each is a
document in the store per subject, which `llms.learned_limits` reads and changes atomically, so every process sharing
the store counts one window."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from llms.cooldown import ROUND_LENGTHS, SLOT_MARGIN, TRIP_SPREAD
from llms.learned_closings import (
    CLOSINGS_KEPT,
    ON_CLOCK,
    SENDS_KEPT,
    TIE,
    Closing,
    agreed_window,
    densest,
    round_length,
    round_reading,
    trips_spread,
    windows_apart,
)
from llms.outcomes import QuotaHint
from llms.probe_schedule import probe_due, rarer, window_probes
from llms.sent_counts import counted_between, counted_until, sliding_quota
from llms.state.base import Document

SLOTS_KEPT = 256
SLIDING_AFTER = 3
"""Counts with requests left whose resets all agree it takes to read a window as a sliding log
(`SlotLog.sliding`), and counts that agree on a bucket's seconds per request (`LearnedLimits._dripping`)."""
READ_BACK = 0.01
"""Seconds a send read back from a shared store's request log (answer − latency) may lie from its process's."""


@dataclass(frozen=True)
class SlotLog:
    """A subject's sliding window, learned from 429s that carry a hint (OpenRouter, Gemini say nothing about quota
    on a success): at most `size` answers in any `length` seconds, each slot freeing `length` after its answer.

    The hint names when the oldest answer in the provider's window frees its slot. In the log of recent answers,
    that oldest one is the latest that follows a gap of at least the hint (the one before it is already out of
    the window), so one 429 gives both numbers: `length` = the hint's moment − that answer, `size` = the answers
    since it. From then on each success yields a `QuotaHint`: slots left now, and when one frees (the next slot,
    not the whole window: a sliding window refills one answer at a time), so the store's in-flight gate and the
    key manager keep to it. Where later 429s show the window turning on the clock (`clock`), all its slots free
    as it turns instead. Kept in the store like `Pacing`, so every process sharing it keeps one log."""

    times: tuple[float, ...] = ()
    size: int | None = None
    length: float | None = None
    closed_until: float = 0.0
    uncounted: tuple[float, float] | None = None
    """The window a 429 taught, to count again once an answer sent after it comes, as `Pacing.uncounted`."""
    resets: tuple[float, float, int] = (math.inf, 0.0, 0)
    """The shortest and longest resets the answers reported since a full one taught the window (`reported`), and
    how many of them had requests left: a sliding log's are all its length."""
    clock: float | None = None
    """A moment the provider's window turned, where its windows are on the clock (`_on_clock`): then every slot
    frees at once when the window turns, not `length` after the answer that took it."""
    waited: float = 0.0
    """The longest hint of the latest closed window's 429s."""
    refuted: bool = False
    """A 429 came where the clock said the window had slots left: not on the clock, whatever its 429s' moments."""
    least_left: float = math.inf
    """The shortest reset of the counts with requests left, a sliding log's length (`report`): not a full count's,
    which a fixed window's last request reads as the time to its end (requests close together read it as sliding:
    its first slot then freed early by their spacing, a 429 a window)."""
    probe_every: int = 0
    """Every how many windows on the clock (a sliding log: lengths after its latest closing or probe) one request
    more than its size goes (0: `probe_schedule.PROBE_EVERY`): a reading too small or too slow is never corrected
    by a 429, so now and then it takes one more; admitted, the size grows; refused, probes go half as often."""
    probed: float = 0.0
    """When the latest admitted probe went: a sliding log's next one counts from it; on the clock, a 429 with slots
    left after it takes its slot back rather than refute the clock."""
    closings: tuple[Closing, ...] = ()
    """The latest windows 429s closed (`CLOSINGS_KEPT`), each as its first 429 read it (`Closing`): their moments
    on a round grid put a window on the clock read long on it (`_on_round_clock`); a sliding log's length lies
    between each one's moment and the same one of its sends (`_agreed`)."""
    writer: str = ""
    """Where processes share the store, the one that wrote the latest answer (`succeeded`)."""
    mixed: float = 0.0
    """When the latest answer went that a process wrote after another's: a closing keeps its sends only where no
    other process's requests can be out unseen among them (`written_only_by`)."""
    counts_margin: float = SLOT_MARGIN
    """`margin` where answers' counts taught the log: by each 429 it had a slot for, doubled or made the 429's hint
    (how early it came) and `SLOT_MARGIN`, whichever is more, up to `TRIP_SPREAD`."""

    @property
    def moments(self) -> tuple[float, ...]:
        """When the latest closed windows freed."""
        return tuple(closing.frees for closing in self.closings)

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
            document.get("clock"),
            document.get("waited", 0.0),
            document.get("refuted", False),
            math.inf if document.get("least_left") is None else document["least_left"],
            document.get("probe_every", 0),
            document.get("probed", 0.0),
            tuple(Closing.of(closing) for closing in document.get("closings", ())),
            document.get("writer", ""),
            document.get("mixed", 0.0),
            document.get("counts_margin", SLOT_MARGIN),
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
            "clock": self.clock,
            "waited": self.waited,
            "refuted": self.refuted,
            "least_left": self.least_left if math.isfinite(self.least_left) else None,
            "probe_every": self.probe_every,
            "probed": self.probed,
            "closings": [closing.document() for closing in self.closings],
            "writer": self.writer,
            "mixed": self.mixed,
            "counts_margin": self.counts_margin,
        }

    def caught_up(self, sends: Sequence[float], writer: str) -> SlotLog:
        """The log with the answers a process sharing the store had counted before it read that the log exists
        (`sends`; up to `_PACED_REFRESH` late, while the request log the log was read from at the 429 already held
        those answered before it: those are left out, read back within `READ_BACK`). A request out beside the 429
        in another process, left out of its reading, is counted as its answer's moment says (`succeeded`): four
        processes on a sliding 5 a 2 s read it as 4, and no 429 corrected it (0.85 of the quota)."""
        log, oldest = self, self.times[0] - READ_BACK if self.times else math.inf
        for sent in sorted(sends):
            if sent >= oldest and not any(abs(t - sent) <= READ_BACK for t in self.times):
                log = log.succeeded(sent, writer)
        return log

    def written(self, writer: str, now: float) -> SlotLog:
        """The log as a first 429 read the store's request log: sent by `writer` alone, or ("") by several to `now`."""
        return replace(self, writer=writer, mixed=self.mixed if writer else now)

    def written_only_by(self, writer: str) -> bool:
        """Whether every answer the log holds was written by `writer` (a process sharing the store), none since
        another's: then its requests out are every request out, as where the store is this process's alone."""
        return self.writer == writer and (not self.times or self.mixed < self.times[0])

    def limited(
        self,
        now: float,
        hint: float,
        seen: Sequence[float] = (),
        in_flight: Sequence[float] = (),
        grid: float | None = None,
        sees_all: bool = True,
    ) -> SlotLog:
        """A 429 with a hint. `seen`: answer times the caller logged itself before anything was learned; `in_flight`:
        when the subject's other requests still out were sent, their answers not yet in (those sent before this one were
        admitted before it); `grid`: the longest round length the hint's moment lies on, on the provider's clock
        (`Outcome.grid`); `sees_all`: whether `in_flight` holds every request out (not so where processes share the
        store: their closings' sends would miss the others' requests out, and a size read from them would be short)."""
        closings = tuple(closing.refused(now) for closing in self.closings)
        if now < self.closed_until:  # another request of the same full window: nothing new
            closed_until, waited = max(self.closed_until, now + hint), max(self.waited, hint)
            return replace(self, closed_until=closed_until, waited=waited, closings=closings)
        every = self._rarer_probes if self.probe_due(now) else self.probe_every  # a sliding log's probe refused
        log = replace(self, closings=closings, probe_every=every)
        return log._closed(now, hint, seen, in_flight, grid, sees_all)

    def _closed(
        self,
        now: float,
        hint: float,
        seen: Sequence[float],
        in_flight: Sequence[float],
        grid: float | None,
        sees_all: bool,
    ) -> SlotLog:
        """A 429 that closed a window (`limited`; a sliding log's probe refused already made rarer)."""
        log = self
        if self.clock is not None and self.length and windows_apart(self.clock, now + hint, self.length) is not None:
            left = self.quota(now, probing=False)
            if left is not None and (left.remaining or 0) <= len(in_flight):  # full where the clock says: nothing new
                every = self._rarer_probes if self.probing(now + hint - self.length) else self.probe_every  # refused
                return replace(self, closed_until=now + hint, waited=hint, probe_every=every)
            grown = self.probed and self.probed > self.clock - self.length  # its size grown by a probe since
            # One slot left, the hint precise (its moment on the grid): a send at a turn counted in the window after it.
            edge = (self.size or 1) > 1 >= (left.remaining or 0) - len(in_flight) and not float(hint).is_integer()
            if grown or edge:  # one too many
                size, every = max(1, (self.size or 1) - 1), self._rarer_probes if grown else self.probe_every
                return replace(self, size=size, closed_until=now + hint, waited=hint, probe_every=every)
            # Refused with slots left where the clock says: not on the clock (a bucket's drips on its grid, say).
            log = replace(self, clock=None, refuted=True)
        learned = log._learned(now, hint, seen, in_flight)
        held = sorted((*learned.times, *(t for t in in_flight if t <= now + TIE)), reverse=True)[:SENDS_KEPT]
        closing = Closing(now, now + hint, tuple(t for t in held if t < now + TIE) if sees_all else ())
        learned = replace(learned, closings=(*self.closings, closing)[-CLOSINGS_KEPT:])
        if not log.refuted:
            learned = learned._on_clock(self.closed_until, now + hint, max(self.waited, hint), self.length)
            if learned.clock is None:
                learned = learned._on_round_clock(now + hint, in_flight, now)
            if grid and learned.clock is None:
                learned = learned._on_grid(grid, now, now + hint, len(in_flight))
            if learned.clock is None and not float(hint).is_integer():
                learned = learned._agreed()
        return replace(learned, waited=hint)

    def _agreed(self) -> SlotLog:
        """The sliding log whose length its closings agree on, where the size read does not (`agreed_window`)."""
        agreed = agreed_window(self.closings, self.size, self.times) if self.size and self.length else None
        return replace(self, size=agreed[0], length=agreed[1]) if agreed is not None else self

    def _on_round_clock(self, frees: float, in_flight: Sequence[float], now: float) -> SlotLog:
        """The log on the clock where its closings free on a round grid (`round_length`), sized by what it sent since
        it turned: answered, or still out and sent a trip's spread before the refused request (admitted before it)."""
        if (length := round_length(self.moments, self.length) if self.length else None) is None:
            return self
        sent = (*self.times, *(t for t in in_flight if t < now - TRIP_SPREAD))
        return replace(self, clock=frees, length=length, size=max(1, counted_between(sent, frees - length, frees)))

    def on_clock_of(self, clock: float, length: float, size: int = 0) -> SlotLog:
        """The log on another subject's clock (`clock`, a moment it turned; `length`), where the latest window a 429
        closed here freed as that clock turned: a provider's windows on the clock turn at once for all its keys
        (OpenRouter's, Gemini's per-minute limits turn on the minute), and a key whose only 429 read it as a
        sliding log too long is kept to it with no 429 to correct it (Gemini's 5 a 2 s read 8 a 3.6 s: 0.88 of
        its quota). Its size is what it sent in the latest whole window, at least (probes grow it)."""
        if self.clock is not None or self.refuted or not self.moments or not self.length:
            return self
        if self.length <= length * (1 + ON_CLOCK):  # read no longer than the clock's: nothing to correct
            return self
        moment = self.moments[-1]
        if not (windows_apart(moment, clock, length) or windows_apart(clock, moment, length)):
            return self
        turned = clock + math.floor((self.times[-1] - clock) / length) * length if self.times else clock
        held = counted_between(self.times, turned - length + TRIP_SPREAD, turned - TRIP_SPREAD)
        return replace(self, clock=clock, length=length, size=max(1, held, size))

    def _on_grid(self, grid: float, now: float, frees: float, out: int) -> SlotLog:
        """A 429 whose moment lies on a round grid of the provider's clock (`Outcome.grid`: OpenRouter's per-minute
        limit resets on the minute; a Groq or Gemini wait that ends on one) turns on the clock: a sliding log's
        oldest request frees at any millisecond. Its length is the shortest round one on that grid whose window
        has sends of its own and in which none of the three windows before held as many as this one with its
        answers still out (steady sends fill shorter windows before it; a burst's window holds it; a slow start's
        windows before held a little less, and a 10 s window was read as 5); its size, what this window holds so
        far (answers still out that it admitted add to it as they come: `succeeded`). Not where the wait is no
        longer than a drip of that window (its length over what it admitted): a bucket's 429 waits one drip, and
        where its drips fall on whole seconds, so do its moments (a window of one drips the whole window). Kept to
        a sliding log, the next window's requests went as this one's slots freed, and its second 429 put it on the
        clock: two 429s a key where one is the floor (OpenRouter's 20 a minute, 4 keys, 4 minutes: 8 → 4).

        A request sent a trip's spread before a turn may have come after it: such requests are first counted in
        the window before, as the size read counts them, and only where no length fits so are they read in either
        window, leniently. (Read leniently first, a key whose first requests went 0.8 s into Gemini's 10 a 2 s
        window, 3 of them after its second 1.0, was read as 3 a 1 s: a window that fit only where the requests sent
        just before 1.0 came after it, sized as though they had not; no 429 ever came to correct it, 0.6 of its
        quota.)"""
        for spread in (0.0, TRIP_SPREAD):
            for length in ROUND_LENGTHS:
                if length > grid or not windows_apart(0.0, grid, length):
                    continue
                turned = frees - length
                held = counted_between(self.times, turned, now)
                most = counted_between(self.times, turned - spread, now) + out
                earlier = (
                    counted_between(self.times, turned - k * length, turned - (k - 1) * length - spread)
                    for k in (1, 2, 3)
                )
                dripped = most > 1 and frees - now <= length / most + TRIP_SPREAD
                if held and not dripped and all(count < most for count in earlier):
                    return replace(self, clock=frees, length=length, size=held, uncounted=(turned, now))
        return self

    def _learned(self, now: float, hint: float, seen: Sequence[float], in_flight: Sequence[float]) -> SlotLog:
        """What a 429 in a window not yet closed teaches (`limited`)."""
        log, out = self.times or tuple(sorted(seen)), len(in_flight)
        sent = sorted((*log, *(t for t in in_flight if t <= now + TIE)))  # (one sent with this one may be in)
        if self.size and self.length and len(sent) >= self.size and self.probed > max(0.0, now - self.length):
            # Refused within a window of an admitted probe: the size it grew was one too many (a fixed window admits
            # more in a span across its turn); stretched by a 2 s hint, a fixed 10 a 2 s read 11 a 4.1 s: 0.66 of it.
            return replace(self, times=log, size=self.size - 1, closed_until=now + hint, probe_every=self._rarer_probes)
        if self.size and self.length and len(sent) >= self.size:
            # Refused though the log said a slot had freed: the provider's oldest slot frees later than learned (a
            # window on the clock first seen in part, a length read from a rounded hint). Stretch the window to it,
            # counting the requests still out (from the answers alone, a sliding 10 a 2 s sent every 0.2 s, three
            # answers out, was stretched to 2.6 s); and where the provider reopened lately (the last 429's moment),
            # to the pace it kept since, answers still out counted (a bucket read from its burst refills slower), at
            # most twice over per 429 (a pace read from a few answers is rough). Refused after one answer since, at
            # the rate learned (within a slot), waiting less than that slot (a precise hint): a bucket's drip, the
            # rate right and the burst in the log not (stretched by it a slot a 429, a bucket of 20 a 30 s paid a 429
            # an answer until its log forgot the burst: 0.29 429s per answer over 30 windows, 0.04 as a drip).
            length = max(self.length, now + hint - sent[-self.size])
            widened = max(2 * self.counts_margin, hint + SLOT_MARGIN)  # (the hint: how early it came)
            margin = min(TRIP_SPREAD, widened) if self.read_from_counts else self.counts_margin
            since = sum(1 for t in log if t >= self.closed_until - SLOT_MARGIN) + out
            span = now + hint - self.closed_until
            if self.closed_until and since and 0 < span <= 2 * self.length:
                drip = since == 1 and hint < span and not float(hint).is_integer()
                if drip and abs(self.size * span - self.length) <= span + TRIP_SPREAD:
                    return replace(self, times=log, size=1, length=span, closed_until=now + hint, counts_margin=margin)
                length = max(length, min(self.size * span / since, 2 * self.length))
            return replace(self, times=log, length=length, closed_until=now + hint, counts_margin=margin)
        if not log or (self.length and hint < 0.1 * self.length):
            # Refused where the log had slots left, one about to free: the provider holds no more than the log's
            # window and those still out (a token bucket read from its burst: each drip's second request refused).
            # One slot off is a race at the window's edge (an answer the log let go of a moment before the provider
            # did: over HTTP, shrinking on it held a sliding 5/2 s window to 0.90-0.97 of its quota).
            held = sum(1 for t in log if t > now - self.length) + out if self.size and self.length else 0
            if 0 < held < (self.size or 0) - 1:
                return replace(self, size=held, closed_until=now + hint)
            return replace(self, closed_until=now + hint)  # a slot about to free says nothing about the window
        if self.size and self.length and len(log) + out >= self.size:
            return replace(self, closed_until=now + hint)  # its answers still out: not a smaller window
        # The oldest answer in the window follows a gap of at least the hint; where paced answers left many such gaps,
        # the latest whose window fits what was admitted (read as the whole log, the last resort, a window on the
        # clock learned 8 a 3.6 s for 5 a 2 s, and no 429 came to correct it: 0.84 of its quota).
        gaps = [i for i in range(len(log)) if i == 0 or log[i] - log[i - 1] >= hint]
        for first in reversed(gaps):
            size, length = len(log) - first, now + hint - log[first]
            if length > 0 and densest(log, length) <= size:  # it admitted every answer logged: a window that fits
                # Counted again once the answers still out are in, from where the provider's window began as the
                # hint and the window learned before say (another process's answers of it may not be logged yet).
                counted = (min(log[first], now + hint - (self.length or length)), now)
                if (rounder := round_reading(sent, now, hint, (size, length), whole=not first)) is not None:
                    size, length, counted = *rounder[:2], (rounder[2], now)
                return replace(self, times=log, size=size, length=length, closed_until=now + hint, uncounted=counted)
        return replace(self, closed_until=now + hint)  # no window fits what was admitted: learn nothing yet

    def _on_clock(self, last: float, frees: float, waited: float, before: float | None = None) -> SlotLog:
        """The log after a 429 whose limit frees then, on the clock where that moment lies a whole number of windows
        after the one the window turned at before (`clock`), or after `last`, when the 429 before freed: a window
        on the clock turns on its own, whatever was sent when. Its length is then the time between the two over
        the windows between (a hint's moment is nearer the truth than a length read from sends). Kept to a
        sliding log instead, its slots free `length` after the answers that took them, and each window's answers
        start as late as the slots they reuse freed: a caller's pause later every window, until they spill into
        the next (Groq's clock 30/30 s under 1.5 s answers: 0.957 of the quota). `waited`: the longest hint of the
        two windows' 429s, which must be longer than a bucket's drip of a slot (a bucket's 429s wait for one
        slot, and their moments lie on a grid of those). `before`: the length learned before this 429 stretched
        it; a window first seen in part was read short, and stretched by a pace, long: where the two moments lie
        between the two, they are one window apart (read long too where it turned after its oldest request was
        sent: Gemini's 10 a minute read 11 a 60.1 s, was stretched to 118 s and kept sliding, half its quota).
        Going onto the clock, its size is what was sent since it turned (answers still out add to it: `succeeded`)."""
        length, size = self.length, self.size
        if not length or not size:
            return self
        drip = min(length, before or length) / size
        since = self.clock if self.clock is not None else last if waited > drip + TRIP_SPREAD else 0.0
        windows = windows_apart(since, frees, length) if since else None
        if windows is None and since and since == last and before:  # (it turned by the send after the oldest)
            turned = min((t for t in self.times if t > last - before + TIE), default=last - before) + TRIP_SPREAD
            windows = 1 if last - turned <= frees - last <= length else None
        if not windows:  # off the grid (not on the clock, or not any more), or the same turn again
            return replace(self, clock=None) if windows is None else self
        length = (frees - since) / windows
        size = size if self.clock is not None else max(1, counted_between(self.times, frees - length, frees))
        return replace(self, clock=frees, length=length, size=size)

    def succeeded(self, now: float, writer: str = "") -> SlotLog:
        """An answer to a request sent `now`, written by the process `writer` where processes share the store."""
        if writer != self.writer:
            mixed = now if self.writer else self.mixed
            return replace(self, writer=writer, mixed=max(self.mixed, mixed)).succeeded(now, writer)
        # (on the clock, what `quota` counts goes back to a trip's spread before the window turned)
        horizon = now - self.length - (2 * TRIP_SPREAD if self.clock is not None else 0.0) if self.length else -math.inf
        if self.uncounted is not None:  # (kept until the window a 429 taught is counted again)
            horizon = min(horizon, self.uncounted[0] - SLOT_MARGIN)
        times = tuple(sorted((*(t for t in self.times if t > horizon), now)))[-SLOTS_KEPT:]  # answers come out of order
        if self.size and self.length and now < self.closed_until:  # a late answer of the window a 429 closed
            opened = self.closed_until - self.length
            return replace(self, times=times, size=max(self.size, sum(1 for t in times if t >= opened)))
        if self.size and self.probe_due(now) and sum(1 for t in self.times if t > now - self.length) >= self.size:
            return replace(self, times=times, size=self.size + 1, probed=now, probe_every=0)  # a probe admitted
        if self.clock is not None and self.size and self.length:  # more than its size in a window: a probe admitted
            turned = self.clock + math.floor((now - self.clock) / self.length) * self.length
            held = counted_between(times, turned + TRIP_SPREAD, turned + self.length - TRIP_SPREAD)
            if held > self.size:
                return replace(self, times=times, size=held, probe_every=0, probed=now)
        return replace(self, times=times)

    def reported(
        self, limit: int, reset: float, seen: Sequence[float] = (), before: tuple[float, float, int] | None = None
    ) -> SlotLog:
        """What an answer that found the window full said of it: its size (`x-ratelimit-limit-requests`) and
        the time until it is back to its initial state (`x-ratelimit-reset-requests`, as OpenAI defines it).
        That time is the window's length for a sliding log, on every answer (the request just admitted is the
        newest in it); a bucket's and a fixed window's vary (`report`, `sliding`). Read as a sliding log of that
        size and length over the answers' own sends, the window frees each slot as it frees, where a count read
        10 s before its answer came said only how many were left then. `before`: the resets (least, most, how
        many) of the counts with requests left that came before the first full one, where they read a sliding log
        (`LearnedLimits`), which count toward reading it: else the first window rests until the whole of it is
        back (a sliding 20 a 2 s: its first slots freed 1 s before the key went on, 0.945 of its quota)."""
        times = self.times or tuple(sorted(seen))[-SLOTS_KEPT:]  # `seen`: sent before anything was learned
        fresh = None if self.read_from_counts else before  # (`before`: counts with requests left, so its least is)
        resets, least_left = (fresh, fresh[0]) if fresh is not None else (self.resets, self.least_left)
        return replace(self, times=times, size=limit, resets=resets, least_left=least_left).report(reset, 0)

    def report(self, reset: float, remaining: int) -> SlotLog:
        """An answer's reported reset, where a full one taught the window (`reported`). While they agree, the
        length is the shortest (the others were read from answers bounded later: `bound_reset`), else the
        longest. Only counts with requests left count toward reading it as a sliding log: an empty bucket's
        reset is its whole refill too."""
        least, most = min(self.resets[0], reset), max(self.resets[1], reset)
        count = self.resets[2] + (remaining > 0)
        least_left = min(self.least_left, reset) if remaining > 0 else self.least_left
        length = (least_left if math.isfinite(least_left) else least) if most - least <= TRIP_SPREAD else most
        return replace(self, length=length, resets=(least, most, count), least_left=least_left)

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
        if firsts and hint > TRIP_SPREAD and self.clock is None:  # (on the clock, the window began as it turned)
            since = before[firsts[-1]]
            length = max(length or 0.0, self.closed_until - since)
        # (a shared store's log reads sends as answer − latency: a little off)
        size = max(self.size, counted_until(times, since - SLOT_MARGIN, refused))
        return replace(self, size=size, length=length, uncounted=None if settled else (since, refused))

    def quota(self, now: float, probing: bool = True) -> QuotaHint | None:
        """Slots left now and seconds until one frees (None while nothing is learned); on the clock, the slots the
        window has left and seconds until it turns (a request sent a trip's spread before it turned may have come
        after it: counted in the new window too)."""
        if self.size is None or self.length is None:
            return None
        if self.clock is None:
            return sliding_quota(self.times, self.size + (probing and self.probe_due(now)), self.length, now)
        # A window turned less than a trip's spread ago may not have turned yet where requests arrive.
        turned = self.clock + math.floor((now - TRIP_SPREAD - self.clock) / self.length) * self.length
        used = sum(1 for t in self.times if t >= turned - TRIP_SPREAD)  # (sent later too: no longer in flight)
        size = self.size + (probing and self.probing(turned))
        return QuotaHint(max(0, size - used), turned + self.length + TRIP_SPREAD - now, limit=self.size)

    def probing(self, turned: float) -> bool:
        """Whether the window on the clock that turned then takes a probe (`probe_every`)."""
        if self.clock is None or not self.length:
            return False
        return window_probes(self.clock, self.length, turned, self.probe_every, self.size)

    @property
    def margin(self) -> float:
        """Seconds after a slot frees by the log that it is given back (`LearnedLimits.refresh_gates`): a request's
        trip out may be shorter than the one whose slot it takes by as much as trips differ — twice their spread where
        closings agree on a sliding log, else `TRIP_SPREAD`; where answers' counts taught it (the provider's length),
        what its 429s showed (`counts_margin`), at least. 0.1 s late, a sliding 30 a 1 s turns over every 1.1 s: 0.90
        of its quota (1.00 at 0.01 s, over HTTP too)."""
        spread = trips_spread(self.closings, self.size) if self.clock is None and self.size else None
        fallback = self.counts_margin if self.read_from_counts else TRIP_SPREAD
        return fallback if spread is None else max(self.counts_margin, 2 * spread)

    def probe_due(self, now: float) -> bool:
        """Whether a sliding log takes one request beyond it now (`probe_every` of its lengths after its latest
        window closed or probe went; not where answers' counts taught it)."""
        if self.clock is not None or not self.length or self.read_from_counts:
            return False
        return probe_due(now - max(self.closed_until, self.probed), self.length, self.probe_every, self.size)

    @property
    def _rarer_probes(self) -> int:
        """`probe_every` after a probe was refused: half as often (`probe_schedule.rarer`)."""
        return rarer(self.probe_every, self.size)
