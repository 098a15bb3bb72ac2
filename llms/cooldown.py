"""How long a key rests after a 429 that carries no hint: a small, swappable policy.

A provider hint always wins; these policies only decide the hint-less case. `FixedCooldown` is the original
rule (rest `LLM_RATE_LIMIT_COOLDOWN`, an hour by default). `AdaptiveCooldown` (the default) searches for the
window's length among the lengths providers use (a second, a minute, an hour, …): each repeated hint-less 429
moves the next try to the next such length after the window opened, the try that goes through says the window
is at most that long, and shorter round lengths are tried later, one at a time, while the key's window is spent
anyway. A fixed hour throws most of a short window's quota away; doubling rests from each 429 land between a
window's ends and leave up to half of it unused for good.

Policies are pure: they turn one `Backoff` into the next. Where a key stands is kept in the store
(`llms.learned_pacing.Pacing`), so every process sharing it climbs one ladder.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Protocol

from llms.state.base import TRIP_SPREAD as TRIP_SPREAD  # (defined beside the stores' gate, which reads it too)

ROUND_LENGTHS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0)
"""The ladder: window lengths providers use (per second, per minute, per hour, per day), about 2–3× apart, so a
window of any length is found within that factor in a few 429s."""
FINER_LENGTHS = tuple(
    sorted({*ROUND_LENGTHS, 1.5, 3, 4, 6, 8, 12, 15, 20, 40, 45, 90, 180, 240, 900, 1200, 2700, 10800, 14400, 43200})
)
"""Round lengths between the ladder's rungs, tried once the window is known to be at most the rung that worked;
among them the refill intervals of per-minute buckets (10 a minute: one every 6 s)."""
WORTH_PROBING = 0.95
"""A shorter length is tried only if it would spend the window at least 5 % faster."""
SLOT_MARGIN = 0.01
"""Seconds added to the moment a limit frees (a slot, a window's reset, a hint's wait), so the provider has surely
freed it when the key resumes: hints come rounded to the centisecond (Go durations) or the millisecond."""
TRY_MARGIN = 0.05
"""Seconds a hint-less try (a rung, a shorter length) aims past the length it tries. Its moment is counted from the
window's first answer as this client saw it leave, which a busy threaded client notes some milliseconds before the
request is on the wire; nothing in a bare 429 corrects it, and a try refused at the very length it tried would
teach that the window is longer than it is (a 2 s window kept as 3 s, for good)."""


@dataclass(frozen=True)
class Backoff:
    """Where a key stands on the ladder: `step` 0 means it is not backing off; `rest` is the current step's
    rest, counted from when the refused request was sent; `learned` the longest the window can be (the length
    after which a try went through)."""

    step: int = 0
    rest: float | None = None
    learned: float | None = None


class CooldownPolicy(Protocol):
    name: str

    def climb(self, backoff: Backoff, elapsed: float) -> Backoff:
        """The ladder after one more hint-less 429, sent `elapsed` seconds after the window it met opened."""
        ...

    def settle(self, backoff: Backoff, length: float) -> Backoff:
        """The ladder after a try went through, sent `length` seconds after the window it waited for opened."""
        ...

    def probe(self, shortest: float, longest: float) -> float | None:
        """A window length worth trying, shorter than `longest` (it works) and longer than `shortest` (it did
        not); None: keep to `longest`."""
        ...


class FixedCooldown:
    name = "fixed"

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds

    def climb(self, backoff: Backoff, elapsed: float) -> Backoff:
        return Backoff(rest=self._seconds)

    def settle(self, backoff: Backoff, length: float) -> Backoff:
        return Backoff()

    def probe(self, shortest: float, longest: float) -> float | None:
        return None


class AdaptiveCooldown:
    name = "adaptive"

    def __init__(self, maximum: float) -> None:
        self._maximum = maximum

    def climb(self, backoff: Backoff, elapsed: float) -> Backoff:
        """Rest until the next rung after `elapsed` (never longer than the maximum)."""
        rung = next((length for length in ROUND_LENGTHS if length > elapsed), None)
        rest = self._maximum if rung is None else min(rung - elapsed + TRY_MARGIN, self._maximum)
        return Backoff(backoff.step + 1, rest, backoff.learned)

    def settle(self, backoff: Backoff, length: float) -> Backoff:
        """The try after a rest went through: the window is at most `length` long."""
        return Backoff(0, None, length) if backoff.step else backoff

    def probe(self, shortest: float, longest: float) -> float | None:
        """The middle of the round lengths between the two (a binary search among them)."""
        low = bisect.bisect_right(FINER_LENGTHS, shortest)
        high = bisect.bisect_left(FINER_LENGTHS, longest * WORTH_PROBING)
        return FINER_LENGTHS[(low + high) // 2] if low < high else None


def cooldown_policy(name: str, maximum: float) -> CooldownPolicy:
    if name == "fixed":
        return FixedCooldown(maximum)
    return AdaptiveCooldown(maximum)
