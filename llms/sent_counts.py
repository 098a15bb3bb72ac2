"""Counting answers in a log of when their requests were sent: the arithmetic that what 429s with a hint taught
(`llms.learned_windows`) and what hint-less ones taught (`llms.learned_pacing`) both go by."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from llms.outcomes import QuotaHint

IDLE_GAP = 10.0
"""An answer this long after the one before starts a new run: at a subject's first 429, only the latest run of
answers counts toward the window that 429 met (an idle key's earlier answers belong to windows long past)."""


def counted_until(times: Iterable[float], since: float, refused: float) -> int:
    """Answers sent after `since` (0: in the latest run) and before a 429 `refused` them more (or with it: sent at
    the same moment, and admitted where it was not)."""
    before = sorted(t for t in times if since <= t <= refused)
    return len(before if since else latest_run(before))


def latest_run(times: Sequence[float]) -> tuple[float, ...]:
    """The answers after the last gap of `IDLE_GAP` or more."""
    start = next((i for i in range(len(times) - 1, 0, -1) if times[i] - times[i - 1] >= IDLE_GAP), 0)
    return tuple(times[start:])


def sliding_quota(times: Sequence[float], size: int, length: float, now: float) -> QuotaHint:
    """A sliding log of at most `size` answers in any `length` seconds, answers sent at `times` (ascending): slots
    left at `now`, and seconds until the next one frees."""
    recent = [t for t in times if t > now - length]
    left = size - len(recent)
    if left > 0:
        return QuotaHint(left, (recent[0] + length - now) if recent else length, limit=size)
    frees = recent[len(recent) - size] + length  # the key manager adds `SLOT_MARGIN` to the rest
    return QuotaHint(0, max(0.0, frees - now), limit=size)


def counted_between(times: Iterable[float], start: float, end: float) -> int:
    """Answers sent from `start` to before `end`."""
    return sum(1 for t in times if start <= t < end)
