"""The client's clock: wall time that never steps; and each provider's, as its answers show it.

Cooldowns are durations. Kept against the wall clock, a step back of an hour (NTP, an operator, a VM restored)
stretched a 7.6 s rest to 3,607 s, and a step forward ended rests early. This clock reads the wall clock once,
when it is made, and then advances with the boot-time clock (monotonic, and counting time asleep), so within a
process every duration is exact whatever the wall clock does. What it gives is still epoch seconds — the request
log, history hours and daily resets read it as wall time, as the wall clock stood when the process started plus
the time since.

Processes started on either side of a step disagree by the step; what they share in a store is bounded for that
(see `StateStore.cool`: a rest never outlasts its own stated length).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime


def _boot_time() -> float:
    """Seconds since boot, asleep included (Linux); elsewhere the monotonic clock."""
    try:
        return time.clock_gettime(time.CLOCK_BOOTTIME)
    except (AttributeError, OSError):
        return time.monotonic()


class SteadyClock:
    """Epoch seconds from `wall()` read once, advanced by `elapsed()` since. Call it for the time."""

    def __init__(self, wall: Callable[[], float] = time.time, elapsed: Callable[[], float] = _boot_time) -> None:
        self._elapsed = elapsed
        self._anchor = wall() - elapsed()

    def __call__(self) -> float:
        return self._anchor + self._elapsed()


client_time = SteadyClock()
"""The clock every client of this process keeps key state by (unless given another): `client_time()`."""


class ProviderClock:
    """How far a provider's clock is ahead of this one, learned from its answers' `Date` headers, so a reset it
    names as a moment (OpenRouter's `X-RateLimit-Reset` epoch ms, an HTTP-date `Retry-After`) is read on its clock:
    a client 1.5 s behind its provider rested 1.5 s too long every window (0.60 of the quota on 2 s windows).

    A `Date` is whole seconds: the provider's time when it answered lay in [Date, Date + 1), and that moment lay
    between the request leaving and the answer arriving, so each answer bounds the offset to an interval. Answers
    land at different fractions of a second, so the intersection of them narrows to a fraction of a round trip.
    Clocks that may agree (zero lies in the interval) are taken to agree: a lone `Date` says nothing finer than a
    second, and only a provider shown to be off moves its moments. One shown to be off is read half the fastest
    trip above the interval's low end: exact once the interval has narrowed to a trip (the `Date` made halfway
    through it, as every hint is read), and below the truth until then — a moment read early is a 429, one read
    late only a rest a little long. An empty intersection (a clock was stepped) starts over from the answer
    that emptied it.
    """

    def __init__(self) -> None:
        self._low, self._high = -math.inf, math.inf
        self._fastest = math.inf  # the shortest round trip seen
        self._date: tuple[str, float | None] = ("", None)  # the last `Date` read (it changes once a second)
        self._lock = threading.Lock()

    def read(self, headers: Mapping[str, str], sent: float, received: float) -> float:
        """Learn from an answer's headers; the moment the provider most likely read its limits for it (halfway
        through the trip), on the provider's clock."""
        date = headers.get("date") or headers.get("Date")
        if date:
            self._observe(date, sent, received)
        return (sent + received) / 2 + self.offset()

    def offset(self) -> float:
        """Seconds the provider's clock is ahead of this one, as far as its answers show (0 while they agree)."""
        low, high = self._low, self._high
        return 0.0 if low <= 0.0 <= high else min(low + self._fastest / 2, high)

    def _observe(self, date: str, sent: float, received: float) -> None:
        raw, at = self._date
        if raw != date:
            try:
                at = parsedate_to_datetime(date).timestamp()
            except (TypeError, ValueError, IndexError, OverflowError):
                at = None
            self._date = (date, at)
        if at is None or received < sent:
            return
        low, high = at - received, at + 1.0 - sent
        with self._lock:
            self._fastest = min(self._fastest, received - sent)
            narrowed = max(self._low, low), min(self._high, high)
            self._low, self._high = narrowed if narrowed[0] <= narrowed[1] else (low, high)
