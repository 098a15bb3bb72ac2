"""How long a key rests after a 429 that carries no hint: a small, swappable policy.

A provider hint always wins; these policies only decide the hint-less case. `FixedCooldown` is the original
rule (rest `LLM_RATE_LIMIT_COOLDOWN`, an hour by default). `AdaptiveCooldown` (the default) starts short,
lets the next real request be the probe, doubles the rest on every repeated hint-less 429 up to that same
maximum, and remembers per key (or per shared-limit group) the rest that worked, so the next rest starts
there. A fixed hour throws most of a short window's quota away; the ladder finds the window in a few probes.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Backoff:
    """Where a key stands on the ladder, for the status page: `step` 0 means it is not backing off."""

    step: int = 0
    rest: float | None = None
    learned: float | None = None


class CooldownPolicy(Protocol):
    name: str

    def hintless_rest(self, subject: str) -> float:
        """Seconds to rest `subject` (a key fingerprint or a group) after a 429 without a hint."""
        ...

    def succeeded(self, subject: str) -> None: ...

    def backoff(self, subject: str) -> Backoff: ...


class FixedCooldown:
    name = "fixed"

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds

    def hintless_rest(self, subject: str) -> float:
        return self._seconds

    def succeeded(self, subject: str) -> None:
        pass

    def backoff(self, subject: str) -> Backoff:
        return Backoff()


@dataclass
class _Ladder:
    step: int = 0
    rest: float | None = None
    learned: float | None = None


class AdaptiveCooldown:
    name = "adaptive"

    def __init__(self, maximum: float, initial: float = 1.0, factor: float = 2.0) -> None:
        self._maximum = maximum
        self._initial = min(initial, maximum)
        self._factor = factor
        self._ladders: dict[str, _Ladder] = {}
        self._lock = threading.Lock()

    def hintless_rest(self, subject: str) -> float:
        with self._lock:
            ladder = self._ladders.setdefault(subject, _Ladder())
            if ladder.step == 0:
                rest = ladder.learned or self._initial
            else:
                rest = min((ladder.rest or self._initial) * self._factor, self._maximum)
            ladder.step += 1
            ladder.rest = rest
            return rest

    def succeeded(self, subject: str) -> None:
        """The request after a rest went through: that rest was long enough, start there next time."""
        with self._lock:
            ladder = self._ladders.get(subject)
            if ladder is not None and ladder.step:
                ladder.learned, ladder.step, ladder.rest = ladder.rest, 0, None

    def backoff(self, subject: str) -> Backoff:
        with self._lock:
            ladder = self._ladders.get(subject)
            return Backoff(ladder.step, ladder.rest, ladder.learned) if ladder else Backoff()


def cooldown_policy(name: str, maximum: float) -> CooldownPolicy:
    if name == "fixed":
        return FixedCooldown(maximum)
    return AdaptiveCooldown(maximum)
