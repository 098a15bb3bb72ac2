"""What the windows a subject's 429s closed teach together, where one 429 alone reads a window wrong: the length a
sliding log's closings agree on, and a window on the clock whose closings free on a round grid.

Pure rules over `Closing`s, which `llms.learned_windows.SlotLog` keeps (the latest `CLOSINGS_KEPT`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from llms.cooldown import ROUND_LENGTHS, TRIP_SPREAD

CLOSINGS_KEPT = 3
FASTER_THAN_RAMP = 1.5
"""How much faster than the window read from a first 429's sends a round length must read to be taken instead
(`round_reading`), that window read from the first send: a little faster is only the ramp's latest pace (Groq's
30 a 6 s, read whole as 26 a 5.6 s, would be 10 a 2 s: a small window read too fast sheds its size to the 429s that
correct it)."""
FASTER_THAN_GAP = 2.0
"""As `FASTER_THAN_RAMP`, that window read from a gap as long as the hint, a sliding log's sign (Gemini's 5 a 2 s
on the clock, read from a gap as 5 a 2.7 s, would be 3 a 1 s: 0.96 of its quota over 30 windows, 0.83 so read)."""
ROUND_OVER = 0.1
"""How much longer than a round length (a share of it) a window read from sends may be and still be that length: it is
read from a request's send to a moment the provider named, its trip out and the answers' spread on top."""
SENDS_KEPT = 64
TIE = 0.001
"""Seconds within which two requests left together: which the provider took first is not known."""
ON_CLOCK = 0.01
"""How far from a whole number of windows apart (a share of the window) two 429s' freeing moments may lie and still
read as a window on the clock: trips differ, and a length learned from sends is a little off."""


@dataclass(frozen=True)
class Closing:
    """A window a 429 closed: when the refused request left (`sent`), when its limit frees (`frees`, from the hint),
    and when the requests the provider held before it left, newest first (`SENDS_KEPT`: answers, and those still
    out, a refused one taken out as its 429 comes). Under a sliding log of `n`, the `n`th of them left the log's
    length before `frees`, at every closing."""

    sent: float
    frees: float
    sends: tuple[float, ...] = ()

    @classmethod
    def of(cls, document: list) -> Closing:
        return cls(document[0], document[1], tuple(document[2]))

    def document(self) -> list:
        return [self.sent, self.frees, list(self.sends)]

    def refused(self, sent: float) -> Closing:
        """The closing with a request sent then taken out of its sends: refused, not held."""
        for i, t in enumerate(self.sends):
            if abs(t - sent) <= TIE:
                return replace(self, sends=self.sends[:i] + self.sends[i + 1 :])
        return self


def agreed_window(closings: Sequence[Closing], size: int, times: Sequence[float]) -> tuple[int, float] | None:
    """The sliding log's size and length every closing agrees on, where the size read (`size`) gives lengths further
    apart than trips differ (`TRIP_SPREAD`): the size whose lengths agree closest (their spread over the shortest),
    among those the answers sent at `times` fit (no more in any of its length, less a trip's spread). The shortest
    of its lengths: each lies after the request's send by its trip out. (A first 429 under a ramping client read
    OpenRouter's 20 a 2 s — its minute with time scaled by 30 — as 23 a 3.4 s, a pace no 429 corrected: 0.78 of the
    quota over 30 windows; 0.89 with this, at its second closing.) None: two closings at least, or no change, or
    closings whose moments lie within a trip's spread of each other: they hold the same sends, so every size gives
    lengths that agree (a burst of 429s as a token bucket of 60 a 5 s ran dry, each hint a drip, read 62 a 1.06 s,
    and 64 waiting callers sent 23 requests at once: 0.54 429s per answer, 0.17 without such an agreement)."""
    if len(closings) < 2 or trips_spread(closings, size) is not None:
        return None
    moments = [closing.frees for closing in closings]
    if max(moments) - min(moments) <= TRIP_SPREAD:  # (one moment seen twice: nothing to agree on)
        return None
    fits = []
    for n in range(1, min(len(closing.sends) for closing in closings) + 1):
        lengths = _lengths(closings, n)
        spread, shortest = max(lengths) - min(lengths), min(lengths)
        if spread <= TRIP_SPREAD < shortest / 2 and densest(times, shortest - TRIP_SPREAD) <= n:
            fits.append((spread / shortest, n, shortest))
    if not fits:
        return None
    _, agreed, length = min(fits)
    return agreed, length


def trips_spread(closings: Sequence[Closing], size: int) -> float | None:
    """How far apart the lengths a sliding log of `size` gives at each closing lie (None: fewer than two closings,
    or not a sliding log of that size): each lies after its request's send by that request's trip out, so this is
    how much trips out differ, measured."""
    if len(closings) < 2 or not 0 < size <= min(len(closing.sends) for closing in closings):
        return None
    lengths = _lengths(closings, size)
    spread = max(lengths) - min(lengths)
    return spread if spread <= TRIP_SPREAD else None


def _lengths(closings: Sequence[Closing], n: int) -> list[float]:
    """The length a sliding log of `n` gives at each closing: from its `n`th send to its moment."""
    return [closing.frees - closing.sends[n - 1] for closing in closings]


def round_length(moments: Sequence[float], read: float) -> float | None:
    """The longest round length (`ROUND_LENGTHS`: per second, per minute) that the closings' freeing moments all lie
    whole numbers of apart, no longer than the length read and at least half of it (a bucket's moments lie on its
    drips: every second for 30 a 30 s), where `CLOSINGS_KEPT` moments are known: a window on the clock first read
    as a sliding log is read long (its oldest request sent before it turned), and the one-window-apart rule then
    finds no whole number of that length between its 429s (Gemini's 5 a 2 s under answers of 0.3 to 1 s read 7 a
    2.9 s, and kept sliding at 0.87 of its quota while its 429s freed exactly 12 s and 2 s apart). Three moments
    at least: a bucket's lie on a grid of its drip, and two of them whole round windows apart by chance."""
    if len(moments) < CLOSINGS_KEPT:
        return None
    for length in sorted((r for r in ROUND_LENGTHS if read / 2 <= r <= read * (1 + ON_CLOCK)), reverse=True):
        if all(windows_apart(moments[0], moment, length) for moment in moments[1:]):
            return length
    return None


def windows_apart(turned: float, moment: float, length: float) -> int | None:
    """How many windows of `length` `moment` lies after `turned` (None: not a whole number of them)."""
    windows = round((moment - turned) / length)
    return windows if windows >= 0 and abs(moment - turned - windows * length) <= ON_CLOCK * length else None


def densest(times: Sequence[float], length: float) -> int:
    """The most of `times` (ascending) within any `length` seconds."""
    most, first = 0, 0
    for last, at in enumerate(times):
        while first < last and at - times[first] >= length:
            first += 1
        most = max(most, last - first + 1)
    return most


def round_reading(
    sent: Sequence[float], now: float, hint: float, read: tuple[int, float], whole: bool
) -> tuple[int, float, float] | None:
    """A first 429's window read on a round length, where the window its sends (`sent`, ascending, answered or
    still out) show — `read`: its size and length, from the latest gap as long as the hint (a sliding log's oldest
    request follows one: the request before it has left the window), or from the first send, `whole`, where there
    is none — is not round. A window fixed from its first request or on the clock follows no gap, and read from the
    whole ramp that filled it is far too slow. Read instead as the shortest round length (`ROUND_LENGTHS`) longer
    than the hint can be, holding what was sent in it — counted from the earliest moment it can have begun, a
    whole-second hint being up to a second long — and no span of it more than twice as much (a fixed window's
    boundary takes one window's end and the next's start), if that is much faster than `read`
    (`FASTER_THAN_RAMP`, `FASTER_THAN_GAP`). Too fast is corrected by the next 429, which stretches it to the pace
    the provider kept; too slow never is (a fixed 20 a 1 s under a ramping client was read as 51 a 16.1 s and held
    to 0.19 of its quota over 100 windows; 0.48 so read, 0.86 once the gate heard of its freed slots). Its size,
    length and the moment it is counted from; None where `read` may be round (a whole-second hint reads it up to a
    second long) or no shorter round length fits faster.

    A reading longer than a round length by more than a tenth (`ROUND_OVER`), by no more than the second a
    whole-second hint may add, is that length: a fixed 1 a 1 s whose second request, 0.2 s after the first, was
    refused with "1" (0.8 s left, rounded up) read 1 a 1.2 s, a pace no 429 corrects (0.83 of its quota over 30
    windows; random sample over 30 windows 85 → 83 misses, over 4 windows 133 → 131; two buckets of 60 a 10 s and
    a 30 s, whose readings are rough either way, fell from 0.99 to 0.97)."""
    rounding, (held, over) = (1.0 if float(hint).is_integer() else 0.0), read
    if any(length - TRIP_SPREAD <= over <= length * (1 + ROUND_OVER) for length in ROUND_LENGTHS):
        return None
    rounded = [length for length in ROUND_LENGTHS if 0 < over - length * (1 + ROUND_OVER) <= rounding]
    if rounded:  # round only by the second a whole-second hint may add: that length, not the reading's
        opened = now + hint - rounding - rounded[-1]
        size = sum(1 for t in sent if opened - TIE < t <= now + TIE)
        return (size, rounded[-1], opened) if size and densest(sent, rounded[-1]) <= 2 * size else None
    for length in ROUND_LENGTHS:
        if length >= over:
            return None
        if length < hint - TIE if not rounding else length <= hint - rounding + TIE:
            continue  # (a window lasts at least what it had left)
        opened = now + hint - rounding - length
        size = sum(1 for t in sent if opened - TIE < t <= now + TIE)
        if size and densest(sent, length) <= 2 * size:
            faster = FASTER_THAN_RAMP if whole else FASTER_THAN_GAP
            return (size, length, opened) if size / length > faster * held / over else None
    return None
