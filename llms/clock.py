"""The client's clock: wall time that never steps.

Cooldowns are durations. Kept against the wall clock, a step back of an hour (NTP, an operator, a VM restored)
stretched a 7.6 s rest to 3,607 s, and a step forward ended rests early. This clock reads the wall clock once,
when it is made, and then advances with the boot-time clock (monotonic, and counting time asleep), so within a
process every duration is exact whatever the wall clock does. What it gives is still epoch seconds — the request
log, history hours and daily resets read it as wall time, as the wall clock stood when the process started plus
the time since.

Processes started on either side of a step disagree by the step; what they share in a store is bounded for that
(see `StateStore.cool`: a rest never outlasts its own stated length).
"""

from __future__ import annotations

import time
from collections.abc import Callable


def _boot_time() -> float:
    """Seconds since boot, asleep included (Linux); elsewhere the monotonic clock."""
    try:
        return time.clock_gettime(time.CLOCK_BOOTTIME)
    except (AttributeError, OSError):
        return time.monotonic()


class SteadyClock:
    """Epoch seconds from `wall()` read once, advanced by `elapsed()` since. Call it for the time."""

    def __init__(self, wall: Callable[[], float] = time.time, elapsed: Callable[[], float] = _boot_time) -> None:
        self._elapsed = elapsed
        self._anchor = wall() - elapsed()

    def __call__(self) -> float:
        return self._anchor + self._elapsed()


client_time = SteadyClock()
"""The clock every client of this process keeps key state by (unless given another): `client_time()`."""
