"""A shared store with a safety net: local memory while the shared backend is unreachable.

Nothing raises out of the client because of the store: an unreachable backend costs one failed attempt per
`retry_every` seconds, and state written locally meanwhile stays local (cooldowns are short-lived anyway). The
operator's switches are not short-lived: the local memory keeps the last known ones (disabled keys, parked and
cooling keys) so that an outage never puts a disabled or parked key back into rotation.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

from llms.state.base import (
    Document,
    Finish,
    HourOfKey,
    KeyEvent,
    KeyRecord,
    Lease,
    RequestLimits,
    RequestRecord,
    SentOut,
)
from llms.state.store import StateError, StateStore, StoreHealth

log = logging.getLogger("llms.state")


class FailoverStore(StateStore):
    """The shared backend first; local memory while it is unreachable, with one warning per outage."""

    SHARED = True  # it wraps only shared backends (`store_from_url`)

    def __init__(
        self, primary: StateStore, fallback: StateStore, retry_every: float = 2.0, switches_every: float = 5.0
    ) -> None:
        self.primary = primary
        self._fallback = fallback
        self._retry_every = retry_every
        self._switches_every = switches_every
        self._switches_read = -math.inf
        self._reading_switches = threading.Lock()
        self._lock = threading.Lock()
        self._pools: dict[str, list[str]] = {}
        self._down_since: float | None = None
        self._down_reason = ""
        self._last_try = 0.0
        self._synced: set[str] = set()

    def health(self) -> StoreHealth:
        primary = self.primary.health()
        if self._down_since is None:
            return primary
        since = time.strftime("%H:%M:%S", time.localtime(self._down_since))
        detail = f"degraded since {since}, using local memory: {self._down_reason}"
        return StoreHealth(primary.backend, primary.location, False, detail)

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if self._down_since is not None and time.monotonic() - self._last_try < self._retry_every:
            return getattr(self._fallback, name)(*args, **kwargs)
        try:
            self._sync_pools()
            result = getattr(self.primary, name)(*args, **kwargs)
        except StateError as exc:
            with self._lock:
                self._last_try = time.monotonic()
                self._down_reason = exc.reason
                began = self._down_since is None
                if began:
                    self._down_since = time.time()
                    self._synced.clear()
                    log.warning("key state store unavailable, continuing on local memory: %s", exc)
            if began:  # a store that refuses writes may still answer reads: take its latest switches along
                self._switches_read = -math.inf
                self._copy_switches(time.time())
            return getattr(self._fallback, name)(*args, **kwargs)
        if self._down_since is not None:
            with self._lock:
                self._down_since = None
            log.warning("key state store is back: %s", self.primary.health().location)
        return result

    def _sync_pools(self) -> None:
        """(Re-)register pools on Redis after a start or an outage; a restarted Redis has lost them."""
        for pool, ids in list(self._pools.items()):
            if pool not in self._synced:
                self.primary.register(pool, ids, self.shared_gates)
                self._synced.add(pool)

    def register(self, pool: str, key_ids: Sequence[str], gates: Mapping[str, str] | None = None) -> None:
        self._pools[pool] = list(key_ids)
        self._share_gates(key_ids, gates)
        self._fallback.register(pool, key_ids, gates)
        self._call("register", pool, key_ids, gates)

    def acquire(
        self,
        pool: str,
        now: float,
        exclude: Collection[str] = (),
        lease: Lease | None = None,
        model: str | None = None,
    ) -> str | None:
        if time.monotonic() - self._switches_read >= self._switches_every:
            self._copy_switches(now)
        return self._call("acquire", pool, now, exclude, lease, model)

    def _copy_switches(self, now: float) -> None:
        """Copy the shared store's switches into local memory: which keys are disabled (exactly), and cooldowns
        (only ever lengthened here, so a rest learned locally during an outage is kept). Read from the backend
        even while it is failing: a read-only file or a Redis out of memory still answers reads. Only one thread
        at a time, every `switches_every` seconds."""
        if not self._reading_switches.acquire(blocking=False):
            return
        try:
            self._switches_read = time.monotonic()
            ids = [fp for pool_ids in list(self._pools.values()) for fp in pool_ids]
            try:
                shared = self.primary.records(ids)
            except StateError:
                return  # unreadable: the last switches copied stay in force
            local = self._fallback.records(ids)
            for disabled in (True, False):
                self._fallback.set_disabled(
                    [fp for fp, r in zip(ids, shared, strict=True) if r.disabled == disabled], disabled
                )
            for fp, mine, record in zip(ids, local, shared, strict=True):
                if record.reason is not None and record.cooldown_until > mine.cooldown_until:
                    self._fallback.cool(fp, record.cooldown_until, record.reason, now)
        finally:
            self._reading_switches.release()

    def next_free(self, pool: str, now: float, model: str | None = None) -> tuple[str, float] | None:
        return self._call("next_free", pool, now, model)

    def cool_model(self, key_id: str, model: str, until: float, reason: str, now: float) -> None:
        self._fallback.cool_model(key_id, model, until, reason, now)  # kept locally too, as `cool` is
        self._call("cool_model", key_id, model, until, reason, now)

    def model_rests(self, key_ids: Sequence[str], now: float) -> list[dict[str, tuple[float, str]]]:
        return self._call("model_rests", key_ids, now)

    def record_success(
        self, key_id: str, now: float, request: RequestRecord | None = None, finish: Finish | None = None
    ) -> int:
        return self._call("record_success", key_id, now, request, finish)

    def record_failure(
        self,
        key_id: str,
        now: float,
        error: str,
        *,
        streak: bool,
        request: RequestRecord | None = None,
        finish: Finish | None = None,
    ) -> int:
        return self._call("record_failure", key_id, now, error, streak=streak, request=request, finish=finish)

    def spend(self, key_id: str, now: float, limits: RequestLimits) -> tuple[bool, float | None]:
        return self._call("spend", key_id, now, limits)

    def log_request(self, request: RequestRecord, finish: Finish | None = None) -> None:
        self._call("log_request", request, finish)

    def end_lease(self, key_id: str, finish: Finish, now: float) -> None:
        self._call("end_lease", key_id, finish, now)

    def renew_leases(self, leases: Mapping[str, Mapping[str, float]], now: float) -> None:
        self._call("renew_leases", leases, now)

    def busy_until(self, pool: str, now: float, part: str = "") -> tuple[str, float] | None:
        return self._call("busy_until", pool, now, part)

    def probe_next(self, key_id: str, part: str = "") -> None:
        self._call("probe_next", key_id, part)

    def request_log(self, limit: int = 100) -> list[RequestRecord]:
        return self._call("request_log", limit)

    def sent_times(self, keys: Collection[str], model: str | None = None) -> list[float]:
        return self._call("sent_times", keys, model)

    def note_sent(self, key_id: str, lease: Lease, keys: Collection[str], now: float) -> list[SentOut]:
        return self._call("note_sent", key_id, lease, keys, now)

    def sends_out(self, keys: Collection[str], part: str, now: float) -> list[float]:
        return self._call("sends_out", keys, part, now)

    def history(self, since: float) -> list[HourOfKey]:
        return self._call("history", since)

    def retain(self, history_days: float, log_size: int) -> None:
        super().retain(history_days, log_size)
        self.primary.retain(history_days, log_size)
        self._fallback.retain(history_days, log_size)

    def cool(self, key_id: str, until: float, reason: str, now: float) -> None:
        self._fallback.cool(key_id, until, reason, now)  # kept locally too, should the store fail next
        self._call("cool", key_id, until, reason, now)

    def pause(self, pool: str, until: float, reason: str, now: float) -> None:
        self._call("pause", pool, until, reason, now)

    def paused(self, pool: str, now: float) -> tuple[float, str] | None:
        return self._call("paused", pool, now)

    def reset(self, key_ids: Iterable[str]) -> None:
        ids = list(key_ids)
        self._fallback.reset(ids)
        self._call("reset", ids)

    def set_disabled(self, key_ids: Iterable[str], disabled: bool) -> None:
        ids = list(key_ids)
        self._fallback.set_disabled(ids, disabled)
        self._call("set_disabled", ids, disabled)

    def records(self, key_ids: Sequence[str]) -> list[KeyRecord]:
        return self._call("records", key_ids)

    def change(self, name: str, change: Callable[[Document], Document]) -> Document:
        return self._call("change", name, change)

    def documents(self, names: Sequence[str]) -> list[Document]:
        return self._call("documents", names)

    def add_event(self, event: KeyEvent) -> None:
        self._call("add_event", event)

    def events(self, limit: int = 100) -> list[KeyEvent]:
        return self._call("events", limit)

    def close(self) -> None:
        self.primary.close()
        self._fallback.close()
