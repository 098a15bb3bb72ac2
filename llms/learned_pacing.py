"""What a subject's hint-less 429s taught of a limit its provider keeps to itself: `Pacing`, a ladder of round
lengths and the window found on it (where 429s name when the limit frees: `llms.learned_windows`).

Pure rules, as `llms.learned_windows`: a document in the store per subject, which `llms.learned_limits` reads and
changes atomically, so every process sharing the store counts one window and climbs one ladder."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from llms.cooldown import TRIP_SPREAD, TRY_MARGIN, Backoff, CooldownPolicy
from llms.learned_windows import SLOTS_KEPT
from llms.outcomes import QuotaHint
from llms.sent_counts import counted_until, latest_run, sliding_quota
from llms.state.base import Document


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
    store counts one window and climbs one ladder."""

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
    share the store, answers another process had not yet written were missing from the count, and a window learned
    too small is never corrected by a 429. (Since when answers count, or 0 for the latest run; the 429's sending.)"""

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
            counted = [t for t in times if t > sent - longest] if longest is not None else list(latest_run(times))
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
        # A try after a rest, refused, says the window is longer than its wait less a trip's spread: the window
        # opened as its first request arrived, and the try may have come that much sooner after it than its send
        # says. (Taken as sent, a window of 20 a 6 s refused the try at 6.06 s: the ladder went on to 10 s, and
        # its probes never tried 6 s, 0.80 of the quota.) Not a refused probe: its length would be tried again.
        spread = TRIP_SPREAD if self.backoff.step else 0.0
        shortest, closed_until = max(pacing.shortest, elapsed - spread), sent + (backoff.rest or 0.0)
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
        if window and learned is not None and sliding_quota(times, window, learned, sent).remaining == 0:
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
        window = counted_until(seen or self.times, *self.uncounted)
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
        return sliding_quota(self.times, self.window, learned, now)
