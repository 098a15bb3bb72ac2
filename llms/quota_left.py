"""What is left of a key's quota, as status pages and alerts read it: its window's count and today's, from what
answers reported, probes read, windows learned and configured limits said; and when a provider runs out today.

Apart from `llms.quota`, whose rules keep keys clear of their limits: this only reports on them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from llms.outcomes import QuotaHint
from llms.state.base import Document


@dataclass(frozen=True)
class QuotaLeft:
    """Requests a key (or its shared-limit group) has left, as far as anything says: in its current window
    (reported on its answers, or learned from 429s: the tighter) and today (reported on its answers, read by a
    probe, or counted against a configured daily limit: the tighter), with seconds until each resets. None where
    nothing says."""

    window_left: int | None = None
    window_resets_in: float | None = None
    today_left: int | None = None
    today_resets_in: float | None = None
    tokens_left: int | None = None
    """Tokens left in the provider's window of tokens as an answer reported them (OpenAI's, Groq's minute), with
    seconds until that window is whole again; None where no answer says."""
    tokens_resets_in: float | None = None


def quota_left(
    now: float,
    reported: Document,
    probed: Document,
    learned: QuotaHint | None = None,
    configured_today: tuple[int, float] | None = None,
) -> QuotaLeft:
    """`reported`: the latest quota an answer reported (`KeyManager` notes it: `remaining`, `until`, `per_day`,
    and `tokens`, `tokens_until` where it says them);
    `probed`: a probe's reading of the day (`remaining`, `until`); `learned`: what a window learned from 429s
    has left; `configured_today`: (left, resets in) of a configured daily limit."""
    window = today = None
    if reported.get("remaining") is not None and reported.get("until", 0.0) > now:
        found = (int(reported["remaining"]), reported["until"] - now)
        today, window = (found, None) if reported.get("per_day") else (None, found)
    if learned is not None and learned.remaining is not None:
        found = (learned.remaining, learned.reset_after or 0.0)
        window = found if window is None or found[0] < window[0] else window
    if today is None and probed.get("remaining") is not None and probed.get("until", 0.0) > now:
        today = (int(probed["remaining"]), probed["until"] - now)
    if configured_today is not None and (today is None or configured_today[0] < today[0]):
        today = configured_today
    tokens = None
    if reported.get("tokens") is not None and reported.get("tokens_until", 0.0) > now:
        tokens = (int(reported["tokens"]), reported["tokens_until"] - now)
    return QuotaLeft(*(window or (None, None)), *(today or (None, None)), *(tokens or (None, None)))


@dataclass(frozen=True)
class Forecast:
    """When a provider runs out of today's requests at its recent pace, and when its day's quota frees: None
    where the keys' quota for the day is unknown (or, `runs_out_in`, nothing was asked lately)."""

    runs_out_in: float | None = None
    frees_in: float | None = None
    today_left: int | None = None
    """Requests its accounts have left today, each counted once."""


def forecast(left: Iterable[QuotaLeft], per_second: float) -> Forecast:
    """From each account's `QuotaLeft` (a shared-limit group counted once) and the provider's requests per second
    lately: the requests left today over that pace, and the soonest reset of a day's quota."""
    known = [q for q in left if q.today_left is not None]
    if not known:
        return Forecast()
    total = sum(q.today_left or 0 for q in known)
    frees_in = min((q.today_resets_in for q in known if q.today_resets_in is not None), default=None)
    runs_out_in = 0.0 if total == 0 else total / per_second if per_second > 0 else None
    return Forecast(runs_out_in, frees_in, total)
