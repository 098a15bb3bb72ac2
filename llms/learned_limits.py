"""What was learned about keys' hidden limits: the windows their 429s taught, and the quota their answers reported.

A provider that keeps a limit to itself teaches it one 429 at a time. What each 429 taught (`Pacing`, `SlotLog`)
is a document in the store per subject (`limit_subject`), named in one index, so every process sharing the store
counts its answers toward the same window and reads what the others learned in one read. The key manager decides
what a verdict costs a key; this module keeps what is known about the limits that cost it, apart from the rotation.
"""

from __future__ import annotations

import math
import threading
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

from config.api_keys import ApiKey
from llms.cooldown import SLOT_MARGIN, TRIP_SPREAD, CooldownPolicy
from llms.learned_pacing import Pacing
from llms.learned_windows import READ_BACK, SLIDING_AFTER, SLOTS_KEPT, SlotLog
from llms.outcomes import QuotaHint
from llms.quota import limit_subject
from llms.state import StateStore
from llms.state.base import Document, Finish

_PACED_REFRESH = 0.5
"""Seconds between reads of what other processes learned: one read of one document, so often enough that their
answers count toward a window another process learned within a fraction of it."""
_LEARNED_INDEX = "learned"
"""The document that names every `pace/…` and `slots/…` document: what a process reads to learn what the others
learned, one read whatever the number of keys."""
DUE_NOW_REST = 0.25
"""Seconds a key rests after a 429 whose hint says its limit frees now (a reset moment already past when the answer
came: a sliding window's slot freeing as the request arrived). Long enough not to spin, too short to cost quota;
nothing is learned from it: read as no hint, it taught a window of every answer since the last idle gap and rested
the key on the ladder's rungs. A second one within `DUE_NOW_REPEAT` seconds is read as no hint (a provider whose
resets are always past)."""
DUE_NOW_REPEAT = 1.0
_ROUNDED = 0.005
"""Seconds a reported reset may be off by: Go durations come rounded to the centisecond."""
RECOUNT_FOR = 2 * _PACED_REFRESH
"""Seconds after a 429 during which every answer counts the window it taught again (`SlotLog.recounted`): another
process's answers of the window reach the learned log only once it has read that the window exists (up to
`_PACED_REFRESH` later), and the request log only as they come; counted again once, at this process's first answer
after a short rest (a sliding window's slot about to free), a window stayed short of what the provider admitted."""
NOTE_QUOTA_EVERY = 5.0
"""Seconds between notes of a subject's reported quota in the store, for status pages in any process (a write per
answer would add a store write to every call); a count that reached zero, or grew (a new window), is noted at once."""


class LearnedLimits:
    """What this process and the others sharing its store learned about each subject's hidden limits."""

    def __init__(
        self,
        store: StateStore,
        lock: threading.Lock,
        account: Callable[[ApiKey], list[ApiKey]],
        subjects: Callable[[], set[str]],
    ) -> None:
        """`lock`: the key manager's lock, which also guards what `subjects` reads (every subject this process
        knows: its keys' and those it sent requests for; called with the lock held). `account`: a key and the keys
        that share its limits."""
        self._store = store
        self._lock = lock
        self._account = account
        self._subjects = subjects
        self._learned: set[str] = set()  # names of the documents that hold what was learned about a subject
        self._paced_read_at = -math.inf
        self._unpaced: defaultdict[str, deque[float]] = defaultdict(lambda: deque(maxlen=64))
        self._due_now: dict[str, float] = {}  # when a subject last met a 429 that said its limit frees now
        self._noted: dict[str, tuple[float, int]] = {}  # when a subject's reported quota was last noted, and what
        self._resets: dict[tuple[str, bool], float] = {}  # (subject, per day) → the latest bound on its reset
        self._grows: dict[str, tuple[float, ApiKey, str]] = {}  # subject → when its learned window next frees a slot
        self._drips: dict[str, _Drip] = {}  # subject → what its counts said of a bucket's drip (`_dripping`)
        self._before_full: dict[str, _EarlyCounts] = {}  # subject → its counts before its first full one
        self._next_growth = math.inf
        self._lengths: dict[str, float | None] = {}  # subject → its learned window's length (`length_of`)
        self._process = uuid.uuid4().hex[:12] if store.SHARED else ""  # what names this process's answers in a log

    def about(self, now: float) -> set[str]:
        """The documents holding what was learned about subjects' hidden limits, whose successes must be counted.

        Only subjects that met a 429 have one, and only they cost a store write per success. What other
        processes sharing the store learned is read every `_PACED_REFRESH` seconds, from the index of them (one
        read: reading every key's documents cost 30,000 keys 3 µs a call). A store from before the index is
        searched once, and the index written."""
        if now - self._paced_read_at >= _PACED_REFRESH:
            self._paced_read_at = now
            names = self._store.documents([_LEARNED_INDEX])[0].get("names")
            if names is None:
                with self._lock:
                    subjects = sorted(self._subjects())
                candidates = [f"{kind}/{s}" for s in subjects for kind in ("pace", "slots")]
                documents = self._store.documents(candidates)
                names = [name for name, d in zip(candidates, documents, strict=True) if d]
                self._store.change(_LEARNED_INDEX, _indexing(names))  # written even when empty: searched once
            with self._lock:
                fresh = set(names) - self._learned
                self._learned |= set(names)
            for name in sorted(fresh):  # what this process counted of them before it knew they existed
                kind, _, subject = name.partition("/")
                if kind == "slots" and (sends := self._unpaced.pop(subject, None)):
                    self._slots(subject, lambda log, sends=tuple(sends): log.caught_up(sends, self._process))
        return self._learned

    def counted(
        self,
        subject: str,
        key: ApiKey,
        part: str,
        quota: QuotaHint | None,
        sent: float,
        now: float,
        policy: CooldownPolicy,
    ) -> QuotaHint | None:
        """Count an answer to a request `sent` then in the windows learned for its subject (none learned: keep when
        it was sent, for a first 429 to learn from), and say the quota that binds the key: what the answer
        reported (`quota`), or what a learned window has left (`_binding_quota`)."""
        learned, reported, count = self.about(now), quota, _window_count(quota)
        first_window = f"slots/{subject}" not in learned  # no full count yet
        if count is not None and count.remaining == 0 and count.reset_after:  # a full window, its size, its reset
            limit, reset = count.limit or 0, count.reset_after
            seen = self._seen(subject, key, part, now) if first_window else ()
            before = self._before_full.pop(subject, _EarlyCounts()).sliding
            self._slots(subject, lambda log: log.reported(limit, reset, seen, before))
        elif count is not None and count.remaining and count.reset_after is not None and first_window:
            early = self._before_full.get(subject, _EarlyCounts())
            self._before_full[subject] = early.counted(count.reset_after, sent)
        if f"pace/{subject}" in learned:
            pacing = self._pace(subject, lambda p: p.succeeded(sent, policy))
            if pacing.uncounted is not None and sent > pacing.uncounted[1]:  # after the 429: count it again
                seen, settled = self._recount(subject, key, part, now, pacing.uncounted)
                pacing = self._pace(subject, lambda p: p.recounted(seen, settled))
            quota = _binding_quota(quota, pacing.quota(sent))
        if f"slots/{subject}" in learned:
            slots = self._slots(subject, lambda log: _counted_answer(log, sent, count, self._process))
            if slots.uncounted is not None and sent > slots.uncounted[1]:
                seen, settled = self._recount(subject, key, part, now, slots.uncounted)
                slots = self._slots(subject, lambda log: log.recounted(seen, settled))
            # A sliding log's count: its slots free one by one, before the reset it reported.
            sliding = count is not None and count.limit == slots.size and slots.sliding
            # On the clock, read as the answer came: a request sent just after the window turned may have come
            # before it, so at `sent` the window it left in reads full until it has surely turned, a moment over by
            # the time the answer comes, which the gate took for the window's end (one more request, a 429).
            self._lengths[subject] = slots.length
            window = _since_sent(slots.quota(now), now - sent) if slots.clock is not None else slots.quota(sent)
            quota = _sliding_binding(count, window) if count is not None and sliding else _binding_quota(quota, window)
            # (a count of the day, Groq's, says nothing of the window: kept from the gate by it, a learned window's
            # freed slots held a fixed 20 a 1 s under 1 s answers to 0.41 of its quota)
            day_only = reported is not None and reported.per_day
            if (reported is None or day_only or sliding) and quota is not None and quota.reset_after is not None:
                self._grow_at(subject, key, part, sent + quota.reset_after + slots.margin)
        elif f"pace/{subject}" not in learned:
            self._unpaced[subject].append(sent)  # what a first 429 learns from, should one come
        return self._dripping(subject, count) if quota is reported and count is not None else quota

    def _dripping(self, subject: str, reported: QuotaHint) -> QuotaHint:
        """A bucket's count, read as one: its reset is the time until it is full again (OpenAI's "initial
        state"), the requests it lacks times the seconds each takes to drip back (a fraction of one already
        dripping). Each count bounds those seconds; where every count agreed on them (a fixed window's soon
        disagree), and an empty bucket's reset was longer than any with requests left (a sliding log's are all
        its length), the next request goes when one more has dripped back, not when the bucket is full: waited
        for whole, a bucket of 10 a 10 s gave 0.82 of its quota over 40 s. The lower bound is taken, which puts
        the next request no sooner than it frees."""
        limit, remaining, reset = reported.limit or 0, reported.remaining or 0, reported.reset_after or 0.0
        if remaining >= limit:
            return reported
        lacking = limit - remaining
        with self._lock:
            drip = self._drips[subject] = self._drips.get(subject, _Drip()).counted(lacking, reset, remaining > 0)
        if not drip.agreed:
            return reported
        return replace(reported, reset_after=max(0.0, reset + _ROUNDED - (lacking - 1) * drip.least))

    @property
    def grows_at(self) -> float:
        """When a learned window next frees a slot its gate has not been told of (`refresh_gates`; inf: none)."""
        return self._next_growth

    def length_of(self, subject: str) -> float | None:
        """How long the subject's window learned from 429s lasts, as its latest answer read it (None: none learned)."""
        return self._lengths.get(subject)

    def refresh(self, now: float) -> None:
        """Before a request: read what other processes learned (`about`, every `_PACED_REFRESH` seconds), and tell
        the gates of the learned windows that freed slots since their last answers (`refresh_gates`)."""
        self.about(now)
        self.refresh_gates(now)

    def refresh_gates(self, now: float) -> None:
        """Tell the store's gates of the learned windows that freed slots since their last answers what each has
        left now. A gate holds a key to one request at a time from its window's end until an answer reports again,
        and a key whose answers take longer than its slots take to free (a reasoning model's 20 s under 5 a
        minute) would otherwise keep to one at a time: 0.63 of its quota."""
        if now < self._next_growth:
            return
        with self._lock:
            due = [(s, key, part) for s, (at, key, part) in self._grows.items() if at <= now]
            for subject, _, _ in due:
                del self._grows[subject]
            self._next_growth = min((at for at, _, _ in self._grows.values()), default=math.inf)
        for subject, key, part in due:
            # Slots that freed a margin ago: a request's trip out may be that much shorter than the one of the answer
            # whose slot it takes (the log holds when requests left, the provider counts when they came): a trip's
            # spread, or as much as trips were measured to differ (`SlotLog.margin`).
            slots = SlotLog.of(self._store.documents([f"slots/{subject}"])[0])
            quota = slots.quota(now - slots.margin)
            if quota is not None and quota.reset_after is not None:
                finish = Finish("", quota.remaining, now + quota.reset_after, part)  # a lease no one holds
                self._store.end_lease(key.fingerprint, finish, now)
                self._grow_at(subject, key, part, now + max(quota.reset_after, slots.margin))

    def _grow_at(self, subject: str, key: ApiKey, part: str, at: float) -> None:
        with self._lock:
            self._grows[subject] = (at, key, part)
            self._next_growth = min(self._next_growth, at)

    def hinted(
        self,
        subject: str,
        key: ApiKey,
        part: str,
        sent: float,
        hint: float,
        now: float,
        in_flight: Sequence[float] = (),
        grid: float | None = None,
        siblings: Iterable[ApiKey] = (),
    ) -> None:
        """A 429 to a request `sent` then, whose hint says when its limit frees: learn the sliding window it shows
        (`in_flight`: when this process's other requests of the subject still out were sent; `grid`: `Outcome.grid`;
        `siblings`: the provider's keys, whose windows for the same model are likely its own: `_share_clock`)."""
        mine = tuple(self._unpaced.get(subject, ()))
        seen, before = self._seen(subject, key, part, now), []
        # Where the store is shared, this process's requests out are every one out where it alone sent the answers
        # the log holds (at the first 429, those the store's request log holds: `seen`).
        writer = self._process if _same_sends(seen, mine) else ""

        def learn(log: SlotLog) -> SlotLog:
            before.append(log)  # (the store may run a change again: the last is the one it kept)
            if log.size is None and self._store.SHARED:
                log = log.written(writer, now)
            alone = not self._store.SHARED or log.written_only_by(self._process)
            return log.limited(sent, hint, seen, in_flight, grid, alone)

        log, was = self._slots(subject, learn), before[-1]
        changed = (was.clock, was.size, was.length) != (log.clock, log.size, log.length)
        if changed and log.clock is not None and log.length and log.size:  # a clock read: the others turn with it
            others = {f"slots/{limit_subject(k, part)}" for k in siblings} - {f"slots/{subject}"}
            self._share_clock(log.clock, log.length, log.size, others)

    def _share_clock(self, clock: float, length: float, size: int, others: set[str]) -> None:
        """Put the other subjects of the provider on a clock one read, where their latest closing turned with it
        (`SlotLog.on_clock_of`). (A sliding log two closings agree on was shared too, to keys whose closings fit
        it: over HTTP, Gemini's sliding 5 a 2 s on 7 keys fell from 1.00 to 0.92.)"""
        with self._lock:
            names = sorted(others & self._learned)
        for name, document in zip(names, self._store.documents(names), strict=True):
            log = SlotLog.of(document)
            if log.on_clock_of(clock, length, size) != log:
                self._slots(name.partition("/")[2], lambda other: other.on_clock_of(clock, length, size))

    def hintless(self, subject: str, key: ApiKey, part: str, sent: float, now: float, policy: CooldownPolicy) -> Pacing:
        """A 429 without a hint to a request `sent` then: the subject's pacing after it (its window and backoff)."""
        seen = self._seen(subject, key, part, now, recount=True)
        return self._pace(subject, lambda p: p.limited(sent, policy, seen))

    def bound_reset(self, subject: str, quota: QuotaHint | None, sent: float, now: float) -> QuotaHint | None:
        """The quota with its reset counted from the latest bound any answer of the same window gave.

        The provider read each answer's reset when the request arrived, some time after it was `sent`, so each
        answer says the window resets no earlier than `sent + reset_after`; how much later is that request's own
        trip out. Trips vary (a burst queues at the provider's door; a quiet request goes straight in) while the
        request that resumes the key makes a quick one, so the rest follows the latest bound of the window's
        answers — the one whose trip out was shortest — and not whichever answer happened to say 0 left. Bounds
        further apart than trips differ (`TRIP_SPREAD`) are different resets, and the latest answer's stands."""
        if quota is None or quota.reset_after is None:
            return quota
        bound = sent + quota.reset_after
        with self._lock:
            known = self._resets.get((subject, quota.per_day), -math.inf)
            if now < known and 0 < known - bound <= TRIP_SPREAD:  # the same reset, bounded later by another answer
                return replace(quota, reset_after=known - sent)
            self._resets[(subject, quota.per_day)] = bound
        return quota

    def note_reported(self, subject: str, quota: QuotaHint, sent: float, now: float) -> None:
        """Keep the quota an answer reported where every process's status page reads it (`reported/…`): requests
        left, and tokens left where it says them; at most every `NOTE_QUOTA_EVERY` seconds per subject, and at
        once when the requests left reached zero or grew (tokens drip back between answers: they wait their turn)."""
        remaining = quota.remaining
        last = self._noted.get(subject)
        level = remaining if remaining is not None else 1
        if last is not None and now - last[0] < NOTE_QUOTA_EVERY and 0 < level <= last[1]:
            return
        self._noted[subject] = (now, level)
        until = sent + (quota.reset_after if quota.reset_after is not None else 60.0)  # the gate's default too
        document = {"remaining": remaining, "until": until, "per_day": quota.per_day, "at": now}
        if (tokens := quota.tokens) is not None:
            document |= {"tokens": tokens.left, "tokens_until": sent + tokens.whole_in}
        self._store.change(f"reported/{subject}", lambda _: document)

    def first_due_now(self, subject: str, now: float) -> bool:
        """Whether a 429 saying the subject's limit frees now is the first in `DUE_NOW_REPEAT` seconds."""
        first = now - self._due_now.get(subject, -math.inf) >= DUE_NOW_REPEAT
        self._due_now[subject] = now
        return first

    def _seen(self, subject: str, key: ApiKey, part: str, now: float, *, recount: bool = False) -> tuple[float, ...]:
        """When the subject's answers were sent, for a first 429 to learn its window from: where the store is
        shared, every process's (its request log), else this process's own. One process of four sees a quarter of
        the window, and a window learned that small is never corrected: the key stops before the real one fills.
        Read once per subject, at the 429 that teaches it, or, `recount`, at every hint-less one and at the first
        answer after a window was taught: another process writes its answers to the learned window only once it
        has read that the window exists, and its answers of the window may not be written yet when the 429 comes."""
        mine = tuple(self._unpaced.pop(subject, ()))
        learned = self.about(now)
        if not self._store.SHARED:
            return mine
        if not recount and (f"slots/{subject}" in learned or f"pace/{subject}" in learned):
            return mine
        theirs = self._store.sent_times({m.fingerprint for m in self._account(key)}, part or None)
        # The log holds this process's answers too (their times read a moment apart from `mine`: not merged).
        return tuple(theirs)[-SLOTS_KEPT:] if len(theirs) >= len(mine) else mine

    def _recount(
        self, subject: str, key: ApiKey, part: str, now: float, uncounted: tuple[float, float]
    ) -> tuple[tuple[float, ...], bool]:
        """What a window a 429 taught (`uncounted`: from when, to the 429) is counted again from (`_seen`), and
        whether it is settled: `RECOUNT_FOR` has passed since the 429, so no answer of it is still to be written."""
        return self._seen(subject, key, part, now, recount=True), now >= uncounted[1] + RECOUNT_FOR

    def _pace(self, subject: str, change: Callable[[Pacing], Pacing]) -> Pacing:
        self._index(f"pace/{subject}")
        return Pacing.of(self._store.change(f"pace/{subject}", lambda d: change(Pacing.of(d)).document()))

    def _slots(self, subject: str, change: Callable[[SlotLog], SlotLog]) -> SlotLog:
        self._index(f"slots/{subject}")
        return SlotLog.of(self._store.change(f"slots/{subject}", lambda d: change(SlotLog.of(d)).document()))

    def _index(self, name: str) -> None:
        """Name a document of what was learned in the store's index, once per process."""
        with self._lock:
            new = name not in self._learned
            self._learned.add(name)
        if new:
            self._store.change(_LEARNED_INDEX, _indexing([name]))


def learned_documents(store: StateStore) -> dict[str, Document]:
    """Every document of what was learned about hidden limits (`pace/<subject>`, `slots/<subject>`), by name, as
    the processes sharing `store` wrote them: for tools that show it (`bench/shape_cell.py --learned`)."""
    names = list(store.documents([_LEARNED_INDEX])[0].get("names") or ())
    return dict(zip(names, store.documents(names), strict=True))


def _indexing(names: Iterable[str]) -> Callable[[Document], Document]:
    """The change that adds `names` to the index of learned documents (`_LEARNED_INDEX`)."""
    return lambda index: {"names": sorted({*(index.get("names") or ()), *names})}


@dataclass(frozen=True)
class _EarlyCounts:
    """The counts with requests left a subject's answers gave before its first full one (`SlotLog.reported`):
    their resets, how many, and when the first and last were read."""

    least: float = math.inf
    most: float = 0.0
    counts: int = 0
    first: float = math.inf
    last: float = -math.inf

    def counted(self, reset: float, sent: float) -> _EarlyCounts:
        """One more count, its reset, read when its request was `sent`."""
        return _EarlyCounts(
            min(self.least, reset), max(self.most, reset), self.counts + 1, min(self.first, sent), max(self.last, sent)
        )

    @property
    def sliding(self) -> tuple[float, float, int] | None:
        """Their resets (least, most, how many) where they read a sliding log: all the window's length, within a
        trip's spread, and read over more than a trip's spread (counts of one burst, read together, agree whatever
        the window: a fixed window's read so); else None."""
        if self.most - self.least <= TRIP_SPREAD and self.last - self.first > TRIP_SPREAD:
            return self.least, self.most, self.counts
        return None


@dataclass(frozen=True)
class _Drip:
    """What a subject's counts said of a bucket's drip (`LearnedLimits._dripping`): the bounds on its seconds per
    request, how many counts said, the longest reset, and the longest of a count with requests left."""

    least: float = 0.0
    most: float = math.inf
    counts: int = 0
    longest: float = 0.0
    longest_left: float = 0.0

    def counted(self, lacking: int, reset: float, left: bool) -> _Drip:
        """One more count: `lacking` requests from full, back to full in `reset` seconds; `left`: it had some."""
        low = (reset - _ROUNDED) / lacking  # (a reset rounded to the centisecond bounds a little less)
        high = (reset + _ROUNDED) / (lacking - 1) if lacking > 1 else math.inf
        return _Drip(  # (built whole: `replace` costs a count twice as much on every answer)
            max(self.least, low),
            min(self.most, high),
            self.counts + 1,
            max(self.longest, reset),
            max(self.longest_left, reset) if left else self.longest_left,
        )

    @property
    def agreed(self) -> bool:
        """Enough counts agree on the seconds per request, and an empty bucket's reset was the longest (a sliding
        log's are all its length)."""
        return (
            self.counts >= SLIDING_AFTER
            and self.least <= self.most + SLOT_MARGIN
            and self.longest - self.longest_left > TRIP_SPREAD
        )


def _window_count(reported: QuotaHint | None) -> QuotaHint | None:
    """The answer's count, where it is one of a window the provider sizes (its limit, what is left, and when it is
    back to its initial state): what the readings of sliding logs and buckets go by. Not a day's count."""
    if reported is None or reported.per_day or not reported.limit:
        return None
    return reported if reported.remaining is not None and reported.reset_after is not None else None


def _same_sends(seen: Sequence[float], mine: Sequence[float]) -> bool:
    """Whether the store's request log (`seen`) holds no answer beside this process's own (`mine`, its latest) since
    its first: sends read back from the log as answer − latency, a moment off."""
    first = mine[0] - READ_BACK if mine else -math.inf
    return sum(1 for t in seen if t >= first) <= len(mine)


def _counted_answer(log: SlotLog, sent: float, count: QuotaHint | None, writer: str) -> SlotLog:
    """The log with an answer sent then (by the process `writer`), and the count it reported where counts taught
    the window."""
    log = log.succeeded(sent, writer)
    if count is None or not log.read_from_counts:
        return log
    return log.report(count.reset_after or 0.0, count.remaining or 0)


def _since_sent(quota: QuotaHint | None, trip: float) -> QuotaHint | None:
    """A quota read as the answer came, its reset counted from when the request was sent, `trip` before."""
    if quota is None or quota.reset_after is None:
        return quota
    return replace(quota, reset_after=quota.reset_after + trip)


def _sliding_binding(count: QuotaHint, learned: QuotaHint | None) -> QuotaHint | None:
    """A sliding log's count: the fewer of what the answer reported and what the log has left, until the log's next
    slot frees (`refresh_gates` says what is left then)."""
    if learned is None or count.remaining is None or learned.remaining is None:
        return learned or count
    return replace(learned, remaining=min(learned.remaining, count.remaining))


def _binding_quota(reported: QuotaHint | None, learned: QuotaHint | None) -> QuotaHint | None:
    """What an answer reported of the key's quota, unless that is a count of the day with requests left: then the
    window learned from 429s (a minute's limit the provider does not report) is what paces the key."""
    if reported is None or (reported.per_day and reported.remaining and learned is not None):
        return learned or reported
    return reported
