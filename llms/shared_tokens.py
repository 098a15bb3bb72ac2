"""What processes sharing a store tell each other of limits on tokens their answers report.

Each process keeps its own readings of tokens left (`llms.token_limits`), and where it alone uses the store that is
every reading there is. Where others use it too, each one's newest reading came after requests the others had sent
and had answered, and their requests out were unseen, so each spent what it read whole (four processes: 0.2–0.4
429s per answer where one had none). So, once another process is seen (the `processes` document), each answer's
reading goes to a `tokens/…` document every process takes in before it sends, and its requests out are counted
from the store's sends (`StateStore.note_sent`). Where a limit on tokens speaks only through its 429s (`TokenDrip`),
every process adds what it sends to a running total (`sent/…`, less what was refused), which each one's drip reads
at its 429s and before it sends: the subjects so kept are listed in the `drips` document, read with the presence."""

from __future__ import annotations

import logging
import math
import uuid
from collections import Counter, deque
from collections.abc import Callable, Sequence

from llms.outcomes import TokensLeft
from llms.quota import TokenBudget
from llms.state import StateError, StateStore
from llms.state.base import Document, SentOut
from llms.token_limits import Sends, shared

log = logging.getLogger("llms.keys")
PRESENCE_EVERY = 1.0
"""Seconds between a process's notes that it uses a shared store, which tell it whether another does: only then are
readings and requests out shared, a store round trip or two a request (on Redis, 0.16 → 1.4 ms a call where one
process alone used it)."""
PRESENT_FOR = 5.0
"""Seconds a process's note says it still uses the store."""
REFUSALS_KEPT = 16
"""429s of a limit on tokens that only 429s speak of kept for every process's drip to learn from (`sent/…`)."""
READERS = "token_readers"
"""The document listing the providers whose answers read tokens left (in any process): a process reads the others'
readings of such a provider's subjects before its own first answer came (under 15 s answers, three of four
processes sent one request at a time for 15 s, 0.89 of the quota where one process had 0.92)."""
RECENT_SIZES = 32
"""This process's latest requests whose largest size stands for a request out of another process that did not say
its size (one of an older version: `SentOut`); taken as large as the one being sent, a 150 out elsewhere counted as
50 let a request past what was left."""


def total_of(document: Document) -> int:
    """Every process's total sent, as a subject's `sent/…` document (`SharedTokens.add_sent`) holds it."""
    return int(document.get("tokens", 0))


class SharedTokens:
    """This process's side of sharing readings of tokens left. Called from many threads without a lock: its state
    changes by single assignments and appends, and a race costs at most one note of presence more."""

    def __init__(self, store: StateStore, clock: Callable[[], float]) -> None:
        self._store, self._clock = store, clock
        self._process = uuid.uuid4().hex[:12]
        self._noted_at, self._others, self._readers_at = -math.inf, False, -math.inf
        self._providers: set[str] = set()  # whose answers read tokens left, here or in another process
        self._sizes: deque[int] = deque(maxlen=RECENT_SIZES)
        self._drips: set[str] = set()  # subjects whose sends every process totals (the `drips` document)

    def not_alone(self, now: float) -> bool:
        """Whether another process uses the store now, as the `processes` document says (this one notes itself
        there every `PRESENCE_EVERY` seconds)."""
        if not self._store.SHARED:
            return False
        if now >= self._noted_at + PRESENCE_EVERY:
            self._noted_at, me = now, self._process

            def note(document: Document) -> Document:
                return {process: at for process, at in document.items() if at > now - PRESENT_FOR} | {me: now}

            try:
                self._others = len(self._store.change("processes", note)) > 1
                self._drips |= set(self._store.documents(["drips"])[0].get("subjects", ()))
            except StateError as exc:
                log.debug("could not note this process's use of the store: %s", exc)
        return self._others

    def readings(self, subject: str, provider: str) -> Document | None:
        """The subject's readings as every process sharing the store took them (None: no other process uses it, or
        the provider's answers read none here)."""
        if not self._reads_tokens(provider) or not self.not_alone(self._clock()):
            return None
        try:
            return self._store.documents([f"tokens/{subject}"])[0]
        except StateError as exc:  # (this process's own readings hold)
            log.debug("could not read the shared readings of tokens: %s", exc)
            return None

    def _reads_tokens(self, provider: str) -> bool:
        """Whether the provider's answers read tokens left, here or in another process (`READERS`, looked at once a
        `PRESENCE_EVERY` at most while it is not listed)."""
        if provider in self._providers or not self._store.SHARED:
            return provider in self._providers
        now = self._clock()
        if now >= self._readers_at + PRESENCE_EVERY:
            self._readers_at = now
            try:
                self._providers |= set(self._store.documents([READERS])[0].get("providers", ()))
            except StateError as exc:
                log.debug("could not read the providers whose answers read tokens left: %s", exc)
        return provider in self._providers

    def sent(self, tokens: int) -> None:
        self._sizes.append(tokens)

    def add_sent(self, subject: str, tokens: int, refused: tuple[float, int] | None = None) -> Document | None:
        """Add `tokens` to the subject's total sent, where it is kept (less: a request taken out), and list a 429
        (`refused`: when its request was sent, and its tokens), which every process's drip learns from
        (`TokenLimits.caught_up`); the document now (`sent/…`: `tokens`, `refused` as [sent, total after, tokens]).
        None: no other process uses the store, or no 429 listed the subject (`drips`)."""
        if subject not in self._drips or not self.not_alone(self._clock()):
            return None

        def add(document: Document) -> Document:
            total, refusals = document.get("tokens", 0) + tokens, document.get("refused", [])
            if refused is not None:
                refusals = [*refusals, [refused[0], total, refused[1]]][-REFUSALS_KEPT:]
            return {"tokens": total, "refused": refusals}

        try:
            return self._store.change(f"sent/{subject}", add)
        except StateError as exc:
            log.debug("could not add to the tokens sent by every process: %s", exc)
            return None

    def refused(self, subject: str, tokens: int, sent: float) -> Document | None:
        """A 429 of a limit on tokens that only 429s speak of, to a request of `tokens` sent then: from now on every
        process totals the subject's sends; this one is taken out of the total, where it was added, and listed for
        the others' drips (None: alone, or the store failed)."""
        if subject not in self._drips and self._store.SHARED:  # (the first here)
            try:
                listed = self._store.change("drips", lambda d: {"subjects": sorted({*d.get("subjects", ()), subject})})
                self._drips |= set(listed["subjects"])
            except StateError as exc:
                log.debug("could not list a limit on tokens for every process: %s", exc)
            return self.add_sent(subject, 0, refused=(sent, tokens))  # (its send was not added)
        return self.add_sent(subject, -tokens, refused=(sent, tokens))

    def answered(
        self, provider: str, subject: str, told: TokensLeft, sent: float, at_once: tuple[int, int | None] | None = None
    ) -> None:
        """An answer's reading of tokens left, to a request sent then, and the requests it said are left (`at_once`:
        how many, of how many): for the others, where there are any."""
        if not self._store.SHARED:
            return
        if provider not in self._providers:  # (listed for every process, which then reads the others' readings)
            self._providers.add(provider)
            try:
                self._store.change(READERS, lambda d: {"providers": sorted({*d.get("providers", ()), provider})})
            except StateError as exc:
                log.debug("could not list a provider whose answers read tokens left: %s", exc)
        if not self.not_alone(self._clock()):
            return
        reading = TokenBudget(told.left, sent, sent + told.whole_in, told.limit)
        try:
            self._store.change(f"tokens/{subject}", lambda document: shared(document, reading, at_once))
        except StateError as exc:
            log.debug("could not share a reading of tokens: %s", exc)

    def theirs(self, sends: Sequence[SentOut], mine: Sends, tokens: int) -> list[tuple[float, int]]:
        """The other processes' requests out among the store's `sends` (this process's are `mine`; sent at the same
        moment with as many tokens, one of two is), each as large as it said, or where it did not, as the largest
        sent here lately, or `tokens` (so sized every time, four processes paid 0.06–0.08 429s per answer where
        one paid none)."""
        size = max((tokens, *self._sizes))
        theirs = (Counter(sends) - Counter(mine)).elements()
        return [(sent, spends or size) for sent, spends in theirs]
