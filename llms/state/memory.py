"""`memory://`: key state in this process, behind one lock. For embedding, tests, and the failover's fallback."""

from __future__ import annotations

import heapq
import json
import math
import threading
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import replace

from llms.state.base import (
    Document,
    Finish,
    Gate,
    HourOfKey,
    KeyEvent,
    KeyRecord,
    Lease,
    LimitUsage,
    RequestLimits,
    RequestRecord,
    hour_of,
    model_pool,
    tally,
)
from llms.state.store import StateStore, StoreHealth


class MemoryStore(StateStore):
    """In-process state behind one lock.

    Picking a key costs O(1) amortised however many keys are cooling: available keys sit in a ring that is
    rotated, a cooling key is dropped from the ring the first time the rotation meets it, and cooldowns wait
    in a min-heap ordered by expiry that puts keys back into the ring when they free up.
    """

    SCHEMES = ("memory",)
    IN_MEMORY = True

    @staticmethod
    def describe(health: StoreHealth) -> str:
        return "in this process only (lost on restart)"

    def __init__(self, max_events: int = 500) -> None:
        self._lock = threading.Lock()
        self._records: dict[str, KeyRecord] = {}
        self._rings: dict[str, deque[str]] = {}
        self._in_ring: set[str] = set()
        self._heaps: dict[str, list[tuple[float, str]]] = {}
        self._pool_of: dict[str, str] = {}
        self._events: deque[KeyEvent] = deque(maxlen=max_events)
        self._pauses: dict[str, tuple[float, str]] = {}
        self._usage: dict[str, LimitUsage] = {}
        self._gates: dict[str, Gate] = {}
        self._log: deque[RequestRecord] = deque(maxlen=self.log_size)
        self._hours: dict[tuple[float, str], HourOfKey] = {}
        self._kept_from = -math.inf  # the oldest hour kept; older ones were dropped
        self._documents: dict[str, str] = {}
        self._model_rests: dict[str, dict[str, tuple[float, str]]] = {}

    def retain(self, history_days: float, log_size: int) -> None:
        super().retain(history_days, log_size)
        with self._lock:
            self._log = deque(self._log, maxlen=log_size)

    def register(self, pool: str, key_ids: Sequence[str], gates: Mapping[str, str] | None = None) -> None:
        with self._lock:
            self._share_gates(key_ids, gates)
            ring = self._rings.setdefault(pool, deque())
            self._heaps.setdefault(pool, [])
            for key_id in key_ids:
                if key_id in self._pool_of:
                    continue
                self._pool_of[key_id] = pool
                self._records[key_id] = KeyRecord()
                ring.append(key_id)
                self._in_ring.add(key_id)

    def acquire(
        self,
        pool: str,
        now: float,
        exclude: Collection[str] = (),
        lease: Lease | None = None,
        model: str | None = None,
    ) -> str | None:
        with self._lock:
            pause = self._pauses.get(pool)
            if pause is not None and pause[0] > now:
                return None
            if model is not None:
                pause = self._pauses.get(model_pool(pool, model))
                if pause is not None and pause[0] > now:
                    return None
            self._release_expired(pool, now)
            ring = self._rings.get(pool)
            if not ring:
                return None
            for _ in range(len(ring)):
                key_id = ring.popleft()
                record = self._records[key_id]
                if record.cooldown_until > now:
                    self._in_ring.discard(key_id)
                    continue
                ring.append(key_id)
                if key_id in exclude or record.disabled:
                    continue
                if model is not None and self._model_rest_ends(key_id, model) > now:
                    continue
                if lease is not None:
                    gate = self._gates.setdefault(self.gate(key_id, lease.part), Gate({}))
                    if not gate.allows(now):
                        continue
                    gate.take(lease, now)
                self._records[key_id] = _used(record, now)
                return key_id
            return None

    def _release_expired(self, pool: str, now: float) -> None:
        heap = self._heaps.get(pool)
        while heap and heap[0][0] <= now:
            until, key_id = heapq.heappop(heap)
            record = self._records[key_id]
            if record.cooldown_until != until:
                continue  # stale entry: the key was reset or re-cooled since
            self._records[key_id] = replace(record, cooldown_until=0.0, reason=None)
            self._put_back(key_id)

    def _put_back(self, key_id: str) -> None:
        if key_id not in self._in_ring:
            self._rings[self._pool_of[key_id]].append(key_id)
            self._in_ring.add(key_id)

    def next_free(self, pool: str, now: float, model: str | None = None) -> tuple[str, float] | None:
        with self._lock:
            self._release_expired(pool, now)
            pauses = [self._pauses.get(pool), self._pauses.get(model_pool(pool, model)) if model else None]
            resumes = max((p[0] for p in pauses if p is not None and p[0] > now), default=0.0)
            if model is not None and any(model in self._model_rests.get(k, {}) for k in self._pool_keys(pool)):
                return self._next_free_for(pool, now, model, resumes)
            if resumes:
                for key_id in self._rings.get(pool, ()):
                    if self._records[key_id].cooldown_until <= resumes and not self._records[key_id].disabled:
                        return key_id, resumes
            for until, key_id in sorted(self._heaps.get(pool, ())):
                record = self._records[key_id]
                if record.cooldown_until == until and not record.disabled:
                    return key_id, max(until, resumes)
            return None

    def _pool_keys(self, pool: str) -> list[str]:
        return [k for k, p in self._pool_of.items() if p == pool]

    def _model_rest_ends(self, key_id: str, model: str) -> float:
        """When the key's rest for `model` ends (0: it has none). Called with the lock held."""
        return self._model_rests.get(key_id, {}).get(model, (0.0,))[0]

    def _next_free_for(self, pool: str, now: float, model: str, resumes: float) -> tuple[str, float] | None:
        """`next_free` when keys of the pool rest for `model`: each key frees when its own rest and its rest for
        the model have both ended (O(keys); only on the way to an exhausted error or a wait)."""
        frees = []
        for key_id in self._pool_keys(pool):
            record = self._records[key_id]
            if record.disabled:
                continue
            rested = self._model_rest_ends(key_id, model)
            frees.append((max(record.cooldown_until, rested, resumes), key_id))
        waiting = [(until, key_id) for until, key_id in frees if until > now]
        if not waiting:
            return None
        until, key_id = min(waiting)
        return key_id, until

    def cool_model(self, key_id: str, model: str, until: float, reason: str, now: float) -> None:
        with self._lock:
            rests = {m: r for m, r in self._model_rests.get(key_id, {}).items() if r[0] > now}
            self._model_rests[key_id] = rests | {model: (until, str(reason))}

    def model_rests(self, key_ids: Sequence[str], now: float) -> list[dict[str, tuple[float, str]]]:
        with self._lock:
            return [{m: r for m, r in self._model_rests.get(k, {}).items() if r[0] > now} for k in key_ids]

    def pause(self, pool: str, until: float, reason: str, now: float) -> None:
        with self._lock:
            if until > now:
                self._pauses[pool] = (until, str(reason))
                return
            for name in [n for n in self._pauses if n == pool or n.startswith(f"{pool}/")]:
                del self._pauses[name]

    def paused(self, pool: str, now: float) -> tuple[float, str] | None:
        with self._lock:
            pause = self._pauses.get(pool)
            return pause if pause is not None and pause[0] > now else None

    def record_success(
        self, key_id: str, now: float, request: RequestRecord | None = None, finish: Finish | None = None
    ) -> int:
        with self._lock:
            self._end(key_id, finish, now, succeeded=True)
            before = self._records[key_id]
            self._records[key_id] = _used(before, now, succeeded=True)
            self._remember(request)
            return before.consecutive_failures

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
        with self._lock:
            self._end(key_id, finish, now, succeeded=False)
            record = self._records[key_id]
            consecutive = record.consecutive_failures + 1 if streak else record.consecutive_failures
            self._records[key_id] = replace(
                record, failures=record.failures + 1, consecutive_failures=consecutive, last_error=error, last_used=now
            )
            self._remember(request)
            return consecutive

    def _remember(self, request: RequestRecord | None) -> None:
        if request is None:
            return
        self._log.append(request)
        slot = (hour_of(request.at), request.key)
        oldest = hour_of(request.at - self.history_days * 86400)
        if oldest > self._kept_from:  # an hour aged out: once an hour, not on every new key's first request
            for stale in [s for s in self._hours if s[0] < oldest]:
                del self._hours[stale]
            self._kept_from = oldest
        self._hours[slot] = tally(self._hours.get(slot), request)

    def spend(self, key_id: str, now: float, limits: RequestLimits) -> tuple[bool, float | None]:
        with self._lock:
            return self._usage.setdefault(key_id, LimitUsage([])).spend(now, limits)

    def log_request(self, request: RequestRecord, finish: Finish | None = None) -> None:
        with self._lock:
            self._end(request.key, finish, request.at, succeeded=False)
            self._remember(request)

    def end_lease(self, key_id: str, finish: Finish, now: float) -> None:
        with self._lock:
            self._end(key_id, finish, now, succeeded=False)

    def renew_leases(self, leases: Mapping[str, Mapping[str, float]], now: float) -> None:
        with self._lock:
            for key_id, ends in leases.items():
                gate = self._gates.get(key_id)
                if gate is not None:
                    gate.leases.update({t: until for t, until in ends.items() if t in gate.leases})

    def busy_until(self, pool: str, now: float, part: str = "") -> tuple[str, float] | None:
        with self._lock:
            held = [
                (end, key_id)
                for key_id in self._rings.get(pool, ())
                if (gate := self._gates.get(self.gate(key_id, part))) is not None
                and self._records[key_id].cooldown_until <= now
                and not self._records[key_id].disabled
                and self._model_rest_ends(key_id, part) <= now  # (resting for it: not busy)
                and (end := gate.held_until(now)) is not None
            ]
        if not held:
            return None
        end, key_id = min(held)
        return key_id, end

    def probe_next(self, key_id: str, part: str = "") -> None:
        with self._lock:
            self._gates.setdefault(self.gate(key_id, part), Gate({})).probing = True

    def _end(self, key_id: str, finish: Finish | None, now: float, *, succeeded: bool) -> None:
        name = self.gate(key_id, finish.part if finish is not None else "")
        gate = self._gates.get(name)
        if gate is None and finish is not None and finish.remaining is not None:
            gate = self._gates.setdefault(name, Gate({}))
        if gate is not None:
            if finish is not None:
                gate.end(finish, now, succeeded=succeeded)
            elif succeeded:
                gate.probing = False

    def request_log(self, limit: int = 100) -> list[RequestRecord]:
        with self._lock:
            return list(self._log)[::-1][:limit]

    def history(self, since: float) -> list[HourOfKey]:
        with self._lock:
            first = hour_of(since)
            return sorted((row for (hour, _), row in self._hours.items() if hour >= first), key=lambda r: r.hour)

    def cool(self, key_id: str, until: float, reason: str, now: float) -> None:
        with self._lock:
            self._records[key_id] = replace(
                self._records[key_id], cooldown_until=until, reason=str(reason), rest=until - now
            )
            heapq.heappush(self._heaps[self._pool_of[key_id]], (until, key_id))

    def reset(self, key_ids: Iterable[str]) -> None:
        with self._lock:
            for key_id in key_ids:
                record = self._records[key_id]
                self._records[key_id] = replace(record, cooldown_until=0.0, reason=None, consecutive_failures=0)
                self._model_rests.pop(key_id, None)
                self._put_back(key_id)

    def set_disabled(self, key_ids: Iterable[str], disabled: bool) -> None:
        with self._lock:
            for key_id in key_ids:
                self._records[key_id] = replace(self._records[key_id], disabled=disabled)

    def records(self, key_ids: Sequence[str]) -> list[KeyRecord]:
        with self._lock:
            return [self._records.get(k, KeyRecord()) for k in key_ids]

    def change(self, name: str, change: Callable[[Document], Document]) -> Document:
        """Kept as JSON text, so what callers get back behaves exactly as from a shared store (no aliasing)."""
        with self._lock:
            raw = self._documents.get(name)
            self._documents[name] = json.dumps(change(json.loads(raw) if raw else {}))
            return json.loads(self._documents[name])

    def documents(self, names: Sequence[str]) -> list[Document]:
        with self._lock:
            raws = [self._documents.get(name) for name in names]
        return [json.loads(raw) if raw else {} for raw in raws]

    def add_event(self, event: KeyEvent) -> None:
        with self._lock:
            self._events.append(event)

    def events(self, limit: int = 100) -> list[KeyEvent]:
        with self._lock:
            return list(self._events)[::-1][:limit]


def _used(record: KeyRecord, now: float, *, succeeded: bool = False) -> KeyRecord:
    """`record` as a request taken (or, `succeeded`, answered) now leaves it: on every request, so built field by
    field (`replace` cost twice as much)."""
    return KeyRecord(
        record.cooldown_until,
        record.reason,
        0 if succeeded else record.consecutive_failures,
        record.successes + succeeded,
        record.failures,
        record.last_error,
        now,
        record.disabled,
        record.rest,
    )
