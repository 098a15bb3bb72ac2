"""How often a window learned from 429s takes one request beyond it (a probe), and how refusals make that rarer.

A reading too small or too slow (a window not full when read, read from another key's clock, or from a paced start)
is never corrected by a 429, so now and then one request more goes: admitted, the window grows; refused, probes go
half as often. Apart from `llms.learned_windows` (what the 429s taught), which keeps the schedule in each log
(`SlotLog.probe_every`) and asks here when its windows probe.
"""

from __future__ import annotations

import math

PROBE_EVERY = 4
"""Windows on the clock (a sliding log's lengths) between probes at first (`SlotLog.probe_every`, at least
`PROBE_ANSWERS` answers apart); doubled by each refused probe, up to `PROBE_EVERY_MOST`: a size on the clock that
holds costs a 429 in windows 4, 8, 16, 32, … (four in the first 40)."""
PROBE_EVERY_MOST = 256
PROBE_ANSWERS = 40
"""Answers at least between probes at first: a probe refused costs a 429, which small windows feel most."""


def every(kept: int, size: int | None) -> int:
    """Windows between probes: as a log keeps it, or, where it keeps 0, from `PROBE_EVERY` and `PROBE_ANSWERS`."""
    return kept or max(PROBE_EVERY, math.ceil(PROBE_ANSWERS / (size or 1)))


def rarer(kept: int, size: int | None) -> int:
    """Windows between probes after a probe was refused: half as often."""
    return min(2 * every(kept, size), PROBE_EVERY_MOST)


def window_probes(clock: float, length: float, turned: float, kept: int, size: int | None) -> bool:
    """Whether the window on the clock (one turned at `clock`, each `length` long) that turned at `turned` probes."""
    window = round((turned - clock) / length)
    return window > 0 and window % every(kept, size) == 0


def probe_due(quiet: float, length: float, kept: int, size: int | None) -> bool:
    """Whether a sliding log probes after `quiet` seconds since its latest closing or probe."""
    return quiet >= every(kept, size) * length
