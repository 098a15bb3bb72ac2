"""This process's limits on tokens, per subject: what answers read of the tokens left (`TokenBudget`) and what 429s
that named a limit on tokens taught of its rate (`TokenDrip`). `Leases` asks before each request whether its tokens
fit beside this process's requests out; rules in `llms.quota`, kept here as each process's own, as budgets are."""

from __future__ import annotations

import math
from collections.abc import Sequence

from llms.cooldown import TRIP_SPREAD
from llms.outcomes import TokensLeft
from llms.quota import TokenBudget, TokenDrip

READINGS_KEPT = 4
"""Readings of a subject's tokens left kept at once (`read`), however busy the key."""

Sends = Sequence[tuple[float, int]]
"""(when, tokens) of this process's requests out for a subject."""


class TokenLimits:
    """Each subject's readings and learned rate. Not thread-safe: `Leases` calls it with its lock held."""

    def __init__(self) -> None:
        self._budgets: dict[str, list[TokenBudget]] = {}  # every reading within a trip's spread of the newest sent
        self._drips: dict[str, TokenDrip] = {}

    def fits_at(self, subject: str, tokens: int, out: Sends, now: float) -> tuple[float, bool]:
        """When a request of `tokens` fits beside the requests `out` (-inf: now), and whether to wait for one of
        their answers rather than rest (an answer out will read the tokens left again; a rate not measured yet
        takes one request at a time: `TokenDrip.single_file`). By every reading kept, the latest moment: a request
        out counts against readings sent up to a trip's spread after it, as it may have reached the provider
        after their requests (over HTTP, one sent 1.5 ms before one whose answer read 320 left came 0.9 ms after
        it, and 100 tokens went unaccounted for)."""
        fits, waits = -math.inf, False
        for budget in self._budgets.get(subject, ()):
            spent = sum(cost for sent, cost in out if sent >= budget.read - TRIP_SPREAD)
            fits, waits = max(fits, budget.fits_at(tokens, spent)), waits or spent > 0
        if (drip := self._drips.get(subject)) is not None:
            waits = waits or (drip.single_file and bool(out))
            fits = max(fits, math.inf if drip.single_file and out else drip.fits_at(tokens, now))
        return fits, waits

    def known(self, subject: str) -> bool:
        return subject in self._budgets or subject in self._drips

    def sent(self, subject: str, tokens: int, now: float) -> None:
        if (drip := self._drips.get(subject)) is not None:
            self._drips[subject] = drip.sent(now, tokens)

    def answered(self, subject: str, told: TokensLeft | None, sent: float) -> None:
        """An answer to a request sent then, with the tokens left it read (None: it read none). Each reading is
        kept beside those read from requests sent within a trip's spread before the newest: requests sent close
        together reach the provider in either order (threads of one process, over HTTP: 6 ms apart the other way
        round), so the newest by its send may not have counted one sent a moment before it, which an older
        reading did (kept to the newest, 0.06–0.14 429s per answer on the named token cells over HTTP)."""
        if (drip := self._drips.get(subject)) is not None:
            self._drips[subject] = drip.answered_to(sent)
        if told is None:
            return
        kept = [*self._budgets.get(subject, ()), TokenBudget(told.left, sent, sent + told.whole_in, told.limit)]
        kept.sort(key=lambda budget: budget.read)
        newest = kept[-1].read
        self._budgets[subject] = [budget for budget in kept[-READINGS_KEPT:] if budget.read >= newest - TRIP_SPREAD]

    def refused(self, subject: str, sent: float, tokens: int, out: Sends, now: float) -> float | None:
        """A 429 that named a limit on tokens, to a request of `tokens` sent then: learn the limit's rate, and say
        when a request as large fits again (None: till the rate is sure, the 429's hint says). `out`: this
        process's requests out, which count against what drips back from then."""
        drip = self._drips.get(subject) or TokenDrip(sent, tuple(sorted((s, t) for s, t in out if s > sent)))
        drip = self._drips[subject] = drip.limited(sent, tokens)
        back = drip.fits_at(tokens, now)
        return back if drip.sure and math.isfinite(back) else None
