"""Spending each key's quota without earning 429s: configured limits, learned windows, storm detection.

These are the key manager's helpers for *avoiding* rate limits, as opposed to reacting to them. Configured
limits are counted in the store, and so is how many requests a key may have in flight (`llms.state.base.Gate`),
so every process sharing the store acts as one; learned windows and the storm detector still keep per-process
bookkeeping, and what they decide (a key must rest) goes through the store.
"""

from __future__ import annotations

import math
import threading
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass

from llms.outcomes import QuotaHint
from llms.state.base import RequestLimits


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


class LearnedWindows:
    """For keys whose provider reports no quota: learn how many requests a window holds, then treat it as one.

    The successes counted in a window that ended in a hint-less 429 are the window's size; answers still in
    flight when the 429 came (they arrive during the rest) count toward the window that just closed. Once the
    size is known, each success yields a `QuotaHint` (requests left, seconds of the learned rest), so the
    concurrency gate and the key manager spend the window exactly and rest the key before the next 429.
    """

    def __init__(self) -> None:
        self._used: Counter[str] = Counter()
        self._size: dict[str, int] = {}
        self._closed_until: dict[str, float] = {}
        self._lock = threading.Lock()

    def limited(self, subject: str, now: float, rest: float) -> None:
        with self._lock:
            self._closed_until[subject] = now + rest
            if self._used[subject]:
                self._size[subject] = self._used[subject]

    def succeeded(self, subject: str, now: float, rest: float | None) -> QuotaHint | None:
        with self._lock:
            closed_until = self._closed_until.get(subject)
            if closed_until is not None:
                if now < closed_until:  # a late answer from the window that just closed
                    self._used[subject] += 1
                    self._size[subject] = max(self._size.get(subject, 0), self._used[subject])
                    return None
                del self._closed_until[subject]
                self._used[subject] = 0
            self._used[subject] += 1
            size = self._size.get(subject)
            if size is None or rest is None:
                return None
            remaining = max(0, size - self._used[subject])
            if remaining == 0:
                self._closed_until[subject] = now + rest  # the key rests now; the next success opens a window
            return QuotaHint(remaining, rest)


class StormDetector:
    """Most keys of one provider answering 429 within a few seconds means a provider- or IP-wide limit.

    Then resting the provider's remaining keys briefly beats burning through every one of them. It takes at
    least `min_keys` distinct keys, so a small pool (the original 4 OpenRouter keys) is simply walked through.
    """

    def __init__(self, window: float = 5.0, share: float = 0.75, min_keys: int = 4) -> None:
        self._window = window
        self._share = share
        self._min_keys = min_keys
        self._seen: dict[str, deque[tuple[float, str, float]]] = defaultdict(deque)
        self._lock = threading.Lock()

    def observe(self, provider: str, key: str, rest: float, now: float, total_keys: int) -> float | None:
        """Record a 429 and the rest it earned; when it completes a storm, return the shortest of those rests.

        The other keys then rest no longer than the rate-limited ones do: a storm is a reason to pause, not to
        outlast the limit itself (with the adaptive policy that first pause is a second).
        """
        needed = max(self._min_keys, math.ceil(self._share * total_keys))
        if total_keys <= needed:
            return None
        with self._lock:
            seen = self._seen[provider]
            seen.append((now, key, rest))
            while seen and seen[0][0] < now - self._window:
                seen.popleft()
            if len({k for _, k, _ in seen}) < needed:
                return None
            shortest = min(r for _, _, r in seen)
            seen.clear()
            return shortest
