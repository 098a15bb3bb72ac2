"""This process's limits on tokens, per subject: what answers read of the tokens left (`TokenBudget`) and what 429s
that named a limit on tokens taught of its rate (`TokenDrip`). `Leases` asks before each request whether its tokens
fit beside this process's requests out; rules in `llms.quota`, kept here as each process's own, as budgets are."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from llms.cooldown import TRIP_SPREAD
from llms.outcomes import TokensLeft
from llms.quota import TokenBudget, TokenDrip
from llms.state.base import Document

READINGS_KEPT = 4
"""Readings of a subject's tokens left kept at once (`read`), however busy the key."""

Sends = Sequence[tuple[float, int]]
"""(when, tokens) of this process's requests out for a subject."""


class TokenLimits:
    """Each subject's readings and learned rate. Not thread-safe: `Leases` calls it with its lock held."""

    def __init__(self) -> None:
        self._budgets: dict[str, list[TokenBudget]] = {}  # every reading within a trip's spread of the newest sent
        self._drips: dict[str, TokenDrip] = {}

    def fits_at(
        self, subject: str, tokens: int, out: Sends, now: float, *, read: bool = False, shared: int | None = None
    ) -> tuple[float, bool]:
        """When a request of `tokens` fits beside the requests `out` (-inf: now), and whether to wait for one of
        their answers rather than rest (an answer out will read the tokens left again; a rate not measured yet
        takes one request at a time: `TokenDrip.single_file`). By every reading kept, the latest moment: a request
        out counts against readings sent up to a trip's spread after it, as it may have reached the provider
        after their requests (over HTTP, one sent 1.5 ms before one whose answer read 320 left came 0.9 ms after
        it, and 100 tokens went unaccounted for). `read`: by the readings alone (a drip counts its own sends);
        `shared`: every process's total sent, where processes share the store (`TokenDrip.limited`)."""
        fits, waits, budgets = -math.inf, False, self._budgets.get(subject, ())
        if budgets and sum([cost for _, cost in out]) + max(1, tokens) <= min(budget.left for budget in budgets):
            return fits, waits  # by every reading, even were all that is out sent since it (no answer waited for)
        for budget in budgets:
            since = budget.read - TRIP_SPREAD
            spent = sum([cost for sent, cost in out if sent >= since])  # (a list: on every admit)
            fits, waits = max(fits, budget.fits_at(tokens, spent)), waits or spent > 0
        if (drip := self._drips.get(subject)) is not None and not read and not self.read(subject):
            if drip.single_file and out:  # (a 429 comes back sooner than the spacing: slow answers pay no wait)
                fits, waits = max(fits, max(sent for sent, _ in out) + drip.spacing), True
            else:
                fits = max(fits, drip.fits_at(tokens, now, shared))
        return fits, waits

    def read(self, subject: str) -> bool:
        """Whether answers read the subject's tokens left."""
        return subject in self._budgets

    def merge(self, subject: str, document: Document) -> None:
        """Take in the readings other processes' answers gave (`shared`): where processes share the store, each
        one's newest reading was read after requests the others sent and had answered, which no request out
        shows (four processes each spending their own reading: 0.2–0.4 429s per answer)."""
        for fields in document.get("readings", ()):
            self._keep(subject, TokenBudget(*fields))

    def sent(self, subject: str, tokens: int, now: float, shared: int | None = None) -> None:
        if (drip := self._drips.get(subject)) is not None:
            self._drips[subject] = drip.sent(now, tokens, shared)

    def answered(self, subject: str, told: TokensLeft | None, sent: float) -> None:
        """An answer to a request sent then, with the tokens left it read (None: it read none). Each reading is
        kept beside those read from requests sent within a trip's spread before the newest: requests sent close
        together reach the provider in either order (threads of one process, over HTTP: 6 ms apart the other way
        round), so the newest by its send may not have counted one sent a moment before it, which an older
        reading did (kept to the newest, 0.06–0.14 429s per answer on the named token cells over HTTP)."""
        if (drip := self._drips.get(subject)) is not None:
            self._drips[subject] = drip.answered_to(sent)
        if told is not None:
            self._keep(subject, TokenBudget(told.left, sent, sent + told.whole_in, told.limit))

    def _keep(self, subject: str, reading: TokenBudget) -> None:
        self._budgets[subject] = kept(self._budgets.get(subject, ()), reading)

    def refused(
        self, subject: str, sent: float, tokens: int, out: Sends, now: float, shared: int | None = None
    ) -> float | None:
        """A 429 that named a limit on tokens, to a request of `tokens` sent then: learn the limit's rate, and say
        when a request as large fits again (None: till the rate is sure, the 429's hint says). `out`: this
        process's requests out, which count against what drips back from then. Not where answers read the tokens
        left: they say what the limit holds, where a drip measures only what this process was admitted (four
        processes sharing a store each read a quarter of the rate, and a key rested for minutes: 0.68 of the
        quota where one process had 0.92). `shared`: every process's total sent, this request taken out, where
        processes share the store (`TokenDrip.limited`)."""
        if self.read(subject):
            return None
        drip = self._drips.get(subject) or _first_drip(sent, tokens, out, shared)
        drip = self._drips[subject] = drip.limited(sent, tokens, shared)
        back = drip.fits_at(tokens, now, shared)
        return back if drip.sure and math.isfinite(back) else None

    def caught_up(self, subject: str, refusals: Iterable[Sequence[float]], out: Sends) -> None:
        """Learn from the 429s other processes sharing the store had of a limit on tokens that only 429s speak of
        (`refusals`: [sent, every process's total after, tokens], oldest first), those after the latest this drip
        knows: each found the window about empty for every process (each learning from its own alone, four
        processes paid 0.11 429s per answer over ten minutes, 0.08 so)."""
        if self.read(subject):
            return
        drip = self._drips.get(subject)
        for at, total, tokens in sorted(refusals):
            if drip is not None and at <= drip.refused:  # (this one's own, or caught up already)
                continue
            drip = (drip or _first_drip(at, int(tokens), out, int(total))).limited(at, int(tokens), int(total))
        if drip is not None:
            self._drips[subject] = drip


def _first_drip(sent: float, tokens: int, out: Sends, shared: int | None) -> TokenDrip:
    """A subject's drip as its first 429 (to a request of `tokens` sent then) finds it, before it learns from it
    (`TokenDrip.limited`): the requests out sent after it count against what drips back, and every process's total
    (`shared`, that request taken out) reads as though the request were still counted."""
    out_after = tuple(sorted((s, t) for s, t in out if s > sent))
    return TokenDrip(sent, out_after, shared_at=None if shared is None else shared + tokens)


def kept(readings: Iterable[TokenBudget], reading: TokenBudget) -> list[TokenBudget]:
    """The readings kept with one more: at most `READINGS_KEPT`, the latest sent, within a trip's spread of the
    newest."""
    readings = sorted([*(b for b in readings if b != reading), reading], key=lambda budget: budget.read)
    newest = readings[-1].read
    return [budget for budget in readings[-READINGS_KEPT:] if budget.read >= newest - TRIP_SPREAD]


def shared(document: Document, reading: TokenBudget, at_once: tuple[int, int | None] | None = None) -> Document:
    """A subject's readings document with one more, for a store processes share (`TokenLimits.merge`); `at_once`:
    the requests the same answer said are left, and of how many (`InFlightLimit.told_of`), where it said so."""
    readings = [TokenBudget(*fields) for fields in document.get("readings", ())]
    updated: Document = {"readings": [[b.left, b.read, b.resets, b.limit] for b in kept(readings, reading)]}
    if (told := list(at_once) if at_once is not None else document.get("at_once")) is not None:
        updated["at_once"] = told
    return updated
