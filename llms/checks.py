"""Checking keys in the background, so an operator can test one key or all of them without anything freezing.

One thread per provider checks that provider's keys one after another (never a burst against a provider), each
call with its own short timeout (`LLM_PROBE_TIMEOUT`). Progress and results are plain data the dashboard polls.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from llms.clock import client_time
from llms.outcomes import Outcome, OutcomeKind

log = logging.getLogger("llms.checks")


@dataclass(frozen=True)
class CheckResult:
    key_id: str
    at: float
    ok: bool
    outcome: str
    status: int | None
    message: str

    @property
    def verdict(self) -> str:
        if self.ok:
            return "OK, the key works"
        status = f" (HTTP {self.status})" if self.status else ""
        return f"{self.outcome}{status}" + (f": {self.message}" if self.message else "")


class KeyChecks:
    """`start(ids)` checks keys in the background; `progress()` says how far it got and what each check found."""

    def __init__(self, check: Callable[[str, str], Outcome], provider_of: Callable[[str], str]) -> None:
        """`check(key_id, by)`: one key's check, on behalf of `by` (who started the run)."""
        self._check = check
        self._provider_of = provider_of
        self._lock = threading.Lock()
        self._results: dict[str, CheckResult] = {}
        self._pending: set[str] = set()
        self._done = 0
        self._total = 0
        self._stop = threading.Event()

    def start(self, key_ids: Sequence[str], by: str = "an operator") -> bool:
        """Begin checking `key_ids` on behalf of `by` (False, and nothing started, while an earlier run is still
        going)."""
        by_provider: dict[str, list[str]] = defaultdict(list)
        for key_id in dict.fromkeys(key_ids):
            by_provider[self._provider_of(key_id)].append(key_id)
        with self._lock:
            if self._pending:
                return False
            self._pending = {k for ids in by_provider.values() for k in ids}
            self._done, self._total = 0, len(self._pending)
        for provider, ids in by_provider.items():
            threading.Thread(target=self._run, args=(ids, by), name=f"llms-check-{provider}", daemon=True).start()
        return True

    def _run(self, key_ids: list[str], by: str) -> None:
        for key_id in key_ids:
            if self._stop.is_set():
                break
            try:
                outcome = self._check(key_id, by)
            except Exception as exc:  # a check must never take anything down with it
                log.warning("checking %s failed: %s", key_id, type(exc).__name__)
                outcome = Outcome(OutcomeKind.TRANSIENT, None, f"check failed: {type(exc).__name__}")
            result = CheckResult(
                key_id,
                client_time(),
                outcome.kind is OutcomeKind.OK,
                outcome.kind.value,
                outcome.status,
                outcome.message,
            )
            with self._lock:
                self._results[key_id] = result
                self._pending.discard(key_id)
                self._done += 1
        with self._lock:
            self._pending.difference_update(key_ids)

    def progress(self) -> dict[str, Any]:
        """`{"running", "done", "total", "results": {key_id: {"at", "ok", "outcome", "status", "message",
        "verdict"}}}`: the current (or last) run's progress, and the latest result of every key ever checked."""
        with self._lock:
            results = {k: {**asdict(r), "verdict": r.verdict} for k, r in self._results.items()}
            return {"running": bool(self._pending), "done": self._done, "total": self._total, "results": results}

    def stop(self) -> None:
        self._stop.set()
