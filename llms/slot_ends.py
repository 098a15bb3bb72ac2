"""When a request out frees its slot of its key's quota before its answer comes: once the window that counted it has
surely passed, by what the provider's counts showed of its windows (or 429s taught), per provider and model.

Apart from `llms.leases` (what this process has in flight, and its in-flight limit), which asks it per request: a
slot's end is read from the windows, and moves with them while the request is out.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, replace

from llms.cooldown import TRIP_SPREAD
from llms.outcomes import QuotaHint
from llms.quota import WindowsShown


@dataclass(frozen=True, slots=True)
class _Out:
    provider: str
    part: str
    sent: float
    until: float  # when its slot frees, if its request has not ended by then
    deadline: float  # when its request ends at the latest


class SlotEnds:
    """The windows each provider's counts showed, and the slots of this process's requests out that free before
    their answers. Not thread-safe: `Leases` calls it with its lock held."""

    def __init__(self) -> None:
        self._windows: dict[tuple[str, str], WindowsShown] = {}  # (provider, part) → what its counts showed
        self._out: defaultdict[str, dict[str, _Out]] = defaultdict(dict)  # subject → lease token → its request

    def until(self, sent: float, provider: str, part: str) -> float:
        """Until when a request sent then holds a slot of its key's quota: until the longest window its provider's
        counts have shown (or one learned from 429s: `WindowsShown.learned`) has passed since, and a margin;
        until it ends where none is known. Held until its answer, one slower than the window (a reasoning model's 15
        s under 5 a 10 s) kept its key to one request at a time: 0.20 of its quota."""
        shown = self._windows.get((provider, part))
        longest = shown.longest if shown is not None else None
        return sent + longest + shown.margin if shown is not None and longest is not None else math.inf

    def hold(self, subject: str, token: str, provider: str, part: str, sent: float, deadline: float) -> float:
        """A request sent then, which ends by `deadline` at the latest: until when its slot is held."""
        until = self.until(sent, provider, part)
        if until < deadline:
            self._out[subject][token] = _Out(provider, part, sent, until, deadline)
        return min(until, deadline)

    def let_go(self, subject: str, token: str) -> None:
        self._out[subject].pop(token, None)

    def refused(self, subject: str, provider: str, part: str, sent: float) -> None:
        """A 429 to a request of the subject sent then: where its requests out had freed their slots by then, their
        trips out were longer than its own by more than the margin (`WindowsShown.margin`), which doubles."""
        shown = self._windows.get((provider, part))
        if shown is not None and self.freed(subject, sent):
            self._windows[(provider, part)] = replace(shown, margin=min(TRIP_SPREAD, 2 * shown.margin))

    def freed(self, subject: str, now: float) -> int:
        """How many of the subject's requests out no longer hold their slots."""
        return sum(1 for out in self._out[subject].values() if out.until <= now)

    def next_free(self, subject: str, now: float) -> float:
        """When a slot of the subject's requests out next frees (inf: none does before its request ends)."""
        return min((out.until for out in self._out[subject].values() if out.until > now), default=math.inf)

    def frees(self, now: float) -> list[float]:
        """When each slot still held frees, every subject's."""
        return [out.until for outs in self._out.values() for out in outs.values() if out.until > now]

    def reported(
        self, provider: str, part: str, quota: QuotaHint | None, sent: float, learned: float | None
    ) -> dict[str, float]:
        """Note the window a provider's own count, read when the request was `sent`, shows, and the length of one
        `learned` from 429s. Not a count worked out from a learned window: its reset is when the next slot frees,
        however long the window (a hint-less key's slots, freed so, let in a burst). Shown longer by a count, the
        requests out hold their slots as long (held as the window read when they left, a clock 1/1 s under 1 s
        answers freed each 0.6 s after it left, its first two counts' resets: a 429 a key); those, by lease token,
        with their new ends. Not by a length 429s taught, which each 429 revises (a bucket under 15 s answers paid
        more 429s so)."""
        reset = quota.reset_after if quota is not None and not quota.per_day and quota.remaining is not None else None
        if reset is None and not learned:
            return {}
        before = shown = self._windows.get((provider, part), WindowsShown())
        shown = replace(shown, learned=learned) if learned and learned != shown.learned else shown
        shown = self._windows[(provider, part)] = shown.counted(sent, reset) if reset is not None else shown
        longest, moved = shown.longest or 0.0, {}
        if reset is not None and before.longest is not None and longest > before.longest:  # (None: none held)
            for outs in self._out.values():
                for token, out in outs.items():
                    if (out.provider, out.part) == (provider, part):
                        outs[token] = replace(out, until=min(out.sent + longest + shown.margin, out.deadline))
                        moved[token] = outs[token].until
        return moved
