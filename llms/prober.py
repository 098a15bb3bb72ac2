"""Background health probes: bring back keys parked for a day by an error that was really a blip.

A key cooled as invalid or out of credit rests `LLM_INVALID_KEY_COOLDOWN` (24 h). If the 401 was a provider
hiccup, the key is lost for a day; if it was real, it costs a wasted call each time the cooldown ends. The
prober re-tests such keys with a call that spends no tokens, at most once per interval per key, one key at a
time (never a burst against a provider), and never touches keys in a short cooldown (rate limits, errors).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from llms.key_states import KeyState
from llms.outcomes import Outcome, OutcomeKind

log = logging.getLogger("llms.prober")

LONG_COOLDOWNS = frozenset(state.value for state in KeyState if state.facts.probed)
"""The parked states a probe may revive."""


class Prober:
    """`parked()` lists key ids in a long cooldown; `check(key_id)` probes one and records the verdict."""

    def __init__(
        self,
        parked: Callable[[], Iterable[str]],
        check: Callable[[str], Outcome],
        interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._parked = parked
        self._check = check
        self.interval = interval
        self._clock = clock
        self._last_probe: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def due(self) -> list[str]:
        """Key ids in a long cooldown whose last probe is at least one interval old."""
        now = self._clock()
        return [key_id for key_id in self._parked() if now - self._last_probe.get(key_id, -1e18) >= self.interval]

    def run_once(self) -> list[str]:
        """Probe every due key, one after another; returns the ids of keys that came back."""
        recovered = []
        for key_id in self.due():
            if self._stop.is_set():
                break
            self._last_probe[key_id] = self._clock()
            outcome = self._check(key_id)
            if outcome.kind is OutcomeKind.OK:
                recovered.append(key_id)
            log.info("probe %s: %s", key_id, outcome.kind.value)
        return recovered

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="llms-prober", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.run_once()
            except Exception:  # a probe must never take the client down
                log.exception("probe round failed")
