"""How long a key rests after a 429 that carries no hint: a small, swappable policy.

A provider hint always wins; these policies only decide the hint-less case. `FixedCooldown` is the original
rule (rest `LLM_RATE_LIMIT_COOLDOWN`, an hour by default). `AdaptiveCooldown` (the default) starts short,
lets the next real request be the probe, doubles the rest on every repeated hint-less 429 up to that same
maximum, and remembers per key (or per shared-limit group) the rest that worked, so the next rest starts
there. A fixed hour throws most of a short window's quota away; the ladder finds the window in a few probes.

Policies are pure: they turn one `Backoff` into the next. Where a key stands is kept in the store
(`llms.quota.Pacing`), so every process sharing it climbs one ladder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Backoff:
    """Where a key stands on the ladder: `step` 0 means it is not backing off; `rest` is the current step's rest,
    `learned` the rest that worked last time."""

    step: int = 0
    rest: float | None = None
    learned: float | None = None


class CooldownPolicy(Protocol):
    name: str

    def climb(self, backoff: Backoff) -> Backoff:
        """The ladder after one more hint-less 429; its `rest` is how long the key rests now."""
        ...

    def settle(self, backoff: Backoff) -> Backoff:
        """The ladder after a request went through."""
        ...


class FixedCooldown:
    name = "fixed"

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds

    def climb(self, backoff: Backoff) -> Backoff:
        return Backoff(rest=self._seconds)

    def settle(self, backoff: Backoff) -> Backoff:
        return Backoff()


class AdaptiveCooldown:
    name = "adaptive"

    def __init__(self, maximum: float, initial: float = 1.0, factor: float = 2.0) -> None:
        self._maximum = maximum
        self._initial = min(initial, maximum)
        self._factor = factor

    def climb(self, backoff: Backoff) -> Backoff:
        if backoff.step == 0:
            rest = backoff.learned or self._initial
        else:
            rest = min((backoff.rest or self._initial) * self._factor, self._maximum)
        return Backoff(backoff.step + 1, rest, backoff.learned)

    def settle(self, backoff: Backoff) -> Backoff:
        """The request after a rest went through: that rest was long enough, start there next time."""
        return Backoff(0, None, backoff.rest) if backoff.step else backoff


def cooldown_policy(name: str, maximum: float) -> CooldownPolicy:
    if name == "fixed":
        return FixedCooldown(maximum)
    return AdaptiveCooldown(maximum)
