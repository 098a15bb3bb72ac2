"""Key state in Redis, shared by every process that points at the same server and prefix.

The keys under the prefix, and how each value is written, are in `llms.state.redis_layout`; every operation that
reads and then writes is one Lua script (`llms.state.redis_scripts`), so picking the next key is atomic and N
processes share one round-robin order. `llms.state.failover` keeps calls working on local memory while Redis is
unreachable.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any, TypeVar
from urllib.parse import urlsplit

try:
    import redis
except ImportError:  # only a store needs the driver: its URL is checked, and its scheme known, without it
    redis = None  # type: ignore[assignment]

from config.api_keys import redacted_url, with_encoded_credentials
from llms.state.base import (
    Document,
    EventKind,
    Finish,
    Gate,
    HourOfKey,
    KeyEvent,
    KeyRecord,
    Lease,
    RequestLimits,
    RequestRecord,
    SentOut,
    gate_name,
    hour_of,
    model_pool,
)
from llms.state.redis_layout import LAYOUT, bounded, hour_row, key_record, until_of
from llms.state.redis_scripts import (
    ACQUIRE,
    COOL_MODEL,
    END_LEASE,
    FAILURE,
    LOG,
    NOTE_SENT,
    REGISTER,
    SENDS_OUT,
    SENT_TIMES,
    SPEND,
    SUCCESS,
    finish_args,
    remember_args,
)
from llms.state.store import StateError, StateStore, StoreHealth

T = TypeVar("T")
log = logging.getLogger("llms.state")


class RedisStore(StateStore):
    SCHEMES = ("redis", "rediss")
    SHARED = True

    def __init__(self, url: str, prefix: str = "llmkeys", max_events: int = 500, timeout: float = 0.5) -> None:
        self.url = url
        self._p = f"{prefix}:"
        self._max_events = max_events
        self._redis = redis.Redis.from_url(
            url, decode_responses=True, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        self._acquire = self._redis.register_script(ACQUIRE)
        self._register = self._redis.register_script(REGISTER)
        self._streaks: dict[str, int] = {}
        self._pools: dict[str, list[str]] = {}
        self._grouped: dict[str, bool] = {}  # pools with keys in shared-limit groups
        self._failure = self._redis.register_script(FAILURE)
        self._spend = self._redis.register_script(SPEND)
        self._cool_model = self._redis.register_script(COOL_MODEL)
        self._sent_times = self._redis.register_script(SENT_TIMES)
        self._note_sent = self._redis.register_script(NOTE_SENT)
        self._sends_out = self._redis.register_script(SENDS_OUT)

    @classmethod
    def check_url(cls, url: str) -> str:
        """`redis[s]://[user:password@]host[:port][/db]`; a password's reserved characters are percent-encoded."""
        url = with_encoded_credentials(url)
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            raise ValueError("has a port that is not a number from 1 to 65535") from None
        if port == 0:
            raise ValueError("has port 0")
        if not parts.hostname:
            raise ValueError("names no host")
        db = parts.path.strip("/")
        if db and not db.isdigit():
            raise ValueError(f"has a database {db!r} that is not a number (redis://host:6379/0)")
        return url

    @staticmethod
    def describe(health: StoreHealth) -> str:
        return f"in Redis at `{health.location}` (shared by every process that uses it)"

    @classmethod
    def from_url(cls, url: str, prefix: str) -> RedisStore:
        if redis is None:
            raise StateError("the redis:// store needs the `redis` package: pip install redis")
        return cls(url, prefix)

    def health(self) -> StoreHealth:
        """Says what is wrong, not just that something is: unreachable, authentication, DB index, memory."""
        try:
            self._redis.ping()
            self._redis.set(f"{self._p}health", "1", px=60_000)
        except redis.RedisError as exc:
            return StoreHealth("redis", redacted_url(self.url), False, describe(exc))
        return StoreHealth("redis", redacted_url(self.url), True)

    def _run(self, operation: Callable[[], T]) -> T:
        try:
            return operation()
        except redis.RedisError as exc:
            raise StateError(f"redis at {redacted_url(self.url)}: {describe(exc)}", describe(exc)) from exc

    def register(self, pool: str, key_ids: Sequence[str], gates: Mapping[str, str] | None = None) -> None:
        ring, members = f"{self._p}pool:{pool}:ring", f"{self._p}pool:{pool}:members"
        self._pools[pool] = list(key_ids)
        self._share_gates(key_ids, gates)
        self._grouped[pool] = bool(gates)
        self._check_layout()
        if key_ids:
            self._run(lambda: self._register(keys=[ring, members], args=list(key_ids)))
        if gates:  # the acquire script finds a key's group gate here
            self._run(lambda: self._redis.hset(f"{self._p}gates", mapping=dict(gates)))

    def _check_layout(self) -> None:
        """The layout version under the prefix: written when absent (a new prefix, or one from before versions:
        its values read as they are), refused when newer than this code knows."""
        name = f"{self._p}layout"
        found = self._run(lambda: self._redis.get(name))
        if found is not None and found.isdigit() and int(found) > LAYOUT:
            reason = f"written by a newer version (layout {found}; this one knows {LAYOUT})"
            raise StateError(f"redis at {redacted_url(self.url)} under {self._p!r}: {reason}", reason)
        if found != str(LAYOUT):
            self._run(lambda: self._redis.set(name, LAYOUT))

    def acquire(
        self,
        pool: str,
        now: float,
        exclude: Collection[str] = (),
        lease: Lease | None = None,
        model: str | None = None,
    ) -> str | None:
        """An empty ring for a pool this store registered means Redis restarted or was flushed: register again
        and pick once more, so a restart costs no call."""
        keys = [
            f"{self._p}pool:{pool}:ring",
            f"{self._p}pool:{pool}:cursor",
            f"{self._p}pool:{pool}:pause",
            f"{self._p}pool:{model_pool(pool, model or '')}:pause",
        ]
        token, until = (lease.token, repr(lease.until)) if lease else ("", "0")
        suffix = gate_name("", lease.part) if lease else ""
        grouped = "1" if self._grouped.get(pool) else "0"
        args = [self._p, repr(now), token, until, model or "", suffix, grouped, *exclude]
        found = self._run(lambda: self._acquire(keys=keys, args=args))
        if found == -1 and self._pools.get(pool):
            log.warning("key state for %s is gone from Redis (restarted or flushed); registering the keys again", pool)
            for name, ids in self._pools.items():
                self.register(name, ids, {k: self.shared_gates[k] for k in ids if k in self.shared_gates})
            found = self._run(lambda: self._acquire(keys=keys, args=args))
        return found if isinstance(found, str) else None

    def next_free(self, pool: str, now: float, model: str | None = None) -> tuple[str, float] | None:
        ids = self._run(lambda: self._redis.lrange(f"{self._p}pool:{pool}:ring", 0, -1))
        disabled = self._run(lambda: self._redis.smembers(f"{self._p}disabled")) if ids else set()
        ids = [i for i in ids if i not in disabled]
        pauses = [f"{self._p}pool:{pool}:pause", f"{self._p}pool:{model_pool(pool, model or '')}:pause"]
        pause, model_pause, *cools = self._run(
            lambda: self._redis.mget([*pauses, *(f"{self._p}cool:{i}" for i in ids)])
        )
        resumes = max(until_of(pause, now), until_of(model_pause, now) if model else 0.0, now)
        rests = self._model_rest_values(ids, model) if model else [None] * len(ids)
        frees = [
            (max(until_of(raw, now), until_of(rest, now), resumes), key_id)
            for key_id, raw, rest in zip(ids, cools, rests, strict=True)
        ]
        waiting = [(until, key_id) for until, key_id in frees if until > now]
        if not waiting:
            return None
        until, key_id = min(waiting)
        return key_id, until

    def _model_rest_values(self, ids: Sequence[str], model: str) -> list[str | None]:
        def fetch() -> list[Any]:
            pipe = self._redis.pipeline(transaction=False)
            for key_id in ids:
                pipe.hget(f"{self._p}mrest:{key_id}", model)
            return pipe.execute()

        return self._run(fetch) if ids else []

    def cool_model(self, key_id: str, model: str, until: float, reason: str, now: float) -> None:
        until, ttl_ms = bounded(until, now)
        value = f"{until!r}|{reason}|{until - now!r}"
        self._run(lambda: self._cool_model(keys=[f"{self._p}mrest:{key_id}"], args=[model, value, ttl_ms]))

    def model_rests(self, key_ids: Sequence[str], now: float) -> list[dict[str, tuple[float, str]]]:
        def fetch() -> list[Any]:
            pipe = self._redis.pipeline(transaction=False)
            for key_id in key_ids:
                pipe.hgetall(f"{self._p}mrest:{key_id}")
            return pipe.execute()

        found = self._run(fetch) if key_ids else []
        return [
            {model: (until_of(raw, now), raw.split("|")[1]) for model, raw in rests.items() if until_of(raw, now) > now}
            for rests in found
        ]

    def pause(self, pool: str, until: float, reason: str, now: float) -> None:
        name = f"{self._p}pool:{pool}:pause"
        if until <= now:
            pattern = f"{self._p}pool:{pool}/*:pause"  # and its models' pauses (a manual reset: a scan is fine)
            self._run(lambda: self._redis.delete(name, *self._redis.scan_iter(pattern, count=1000)))
            return
        until, ttl_ms = bounded(until, now)
        self._run(lambda: self._redis.set(name, f"{until!r}|{reason}|{until - now!r}", px=ttl_ms))

    def paused(self, pool: str, now: float) -> tuple[float, str] | None:
        raw = self._run(lambda: self._redis.get(f"{self._p}pool:{pool}:pause"))
        if not raw or until_of(raw, now) <= now:
            return None
        return until_of(raw, now), raw.split("|")[1]

    def record_success(
        self, key_id: str, now: float, request: RequestRecord | None = None, finish: Finish | None = None
    ) -> int:
        """Sent without waiting for a reply (`CLIENT REPLY SKIP`): a success changes no rotation decision, so the
        call need not pay a round trip for it (the request log and history ride along in the same script).
        Returns the failure streak this process last saw for the key."""
        name = f"{self._p}key:{key_id}"
        finished = self._finish_args(key_id, finish, now, succeeded=True)
        command = ("EVAL", SUCCESS, 1, name, repr(now), *finished, *self._remember_args(request))
        self._run(lambda: self._send_unacknowledged(command))
        return self._streaks.pop(key_id, 0)

    def spend(self, key_id: str, now: float, limits: RequestLimits) -> tuple[bool, float | None]:
        keys = [f"{self._p}limit:{key_id}:recent", f"{self._p}limit:{key_id}:day"]
        args = [repr(now), limits.per_minute or 0, limits.per_day or 0, repr(limits.day_ends_at), os.urandom(8).hex()]
        counted, rest = self._run(lambda: self._spend(keys=keys, args=args))
        return bool(counted), float(rest) if rest else None

    def log_request(self, request: RequestRecord, finish: Finish | None = None) -> None:
        finished = self._finish_args(request.key, finish, request.at, succeeded=False)
        self._run(lambda: self._send_unacknowledged(("EVAL", LOG, 0, *finished, *self._remember_args(request))))

    def end_lease(self, key_id: str, finish: Finish, now: float) -> None:
        finished = self._finish_args(key_id, finish, now, succeeded=False)
        self._run(lambda: self._redis.eval(END_LEASE, 0, *finished))

    def renew_leases(self, leases: Mapping[str, Mapping[str, float]], now: float) -> None:
        def apply() -> None:
            pipe = self._redis.pipeline(transaction=False)
            for key_id, ends in leases.items():
                if not ends:
                    continue
                ttl = math.ceil(max(ends.values()) - now) + 60
                for name in (f"{self._p}lease:{key_id}", f"{self._p}out:{key_id}"):  # (sends kept: `note_sent`)
                    pipe.zadd(name, dict(ends), xx=True)  # XX: a lease that already ended is not brought back
                    pipe.expire(name, ttl)
                pipe.expire(f"{self._p}sent:{key_id}", ttl)
                pipe.expire(f"{self._p}size:{key_id}", ttl)
            pipe.execute()

        if any(leases.values()):
            self._run(apply)

    def busy_until(self, pool: str, now: float, part: str = "") -> tuple[str, float] | None:
        ids = self._run(lambda: self._redis.lrange(f"{self._p}pool:{pool}:ring", 0, -1))
        if not ids:
            return None
        disabled = self._run(lambda: self._redis.smembers(f"{self._p}disabled"))
        cools = self._run(lambda: self._redis.mget([f"{self._p}cool:{i}" for i in ids]))
        free = [i for i, cool in zip(ids, cools, strict=True) if i not in disabled and until_of(cool) <= now]
        if part and free:  # a key resting for the model is resting, not busy
            rests = self._model_rest_values(free, part)
            free = [i for i, rest in zip(free, rests, strict=True) if until_of(rest, now) <= now]

        def fetch() -> list[Any]:
            pipe = self._redis.pipeline(transaction=False)
            for key_id in free:
                name = self.gate(key_id, part)
                pipe.zrangebyscore(f"{self._p}lease:{name}", f"({now!r}", "+inf", withscores=True)
                pipe.hmget(f"{self._p}gate:{name}", "remaining", "window_ends", "probing", "window_began", "size")
            return pipe.execute()

        found = self._run(fetch) if free else []
        best: tuple[str, float] | None = None
        for key_id, live, (remaining, ends, probing, began, size) in zip(free, found[::2], found[1::2], strict=True):
            if not live and remaining != "0":  # (full by its count with no lease: `Gate.held_until`)
                continue
            gate = Gate(
                dict(live),
                int(remaining) if remaining else None,
                float(ends or 0),
                probing == "1",
                float(began or 0),
                int(size) if size else None,
            )
            end = gate.held_until(now)
            if end is not None and (best is None or end < best[1]):
                best = (key_id, end)
        return best

    def probe_next(self, key_id: str, part: str = "") -> None:
        self._run(lambda: self._redis.hset(f"{self._p}gate:{self.gate(key_id, part)}", "probing", "1"))

    def _finish_args(self, key_id: str, finish: Finish | None, now: float, *, succeeded: bool) -> list[Any]:
        gate = self.gate(key_id, finish.part if finish is not None else "")
        return finish_args(self._p, gate, finish, now, succeeded=succeeded)

    def _remember_args(self, request: RequestRecord | None) -> list[Any]:
        return remember_args(self._p, request, self.log_size, self.history_days)

    def request_log(self, limit: int = 100) -> list[RequestRecord]:
        raw = self._run(lambda: self._redis.lrange(f"{self._p}requests", 0, limit - 1))
        return [RequestRecord(**json.loads(item)) for item in raw]

    def sent_times(self, keys: Collection[str], model: str | None = None) -> list[float]:
        """Read where the log is (`SENT_TIMES`): only the sends of the keys' answers cross the network."""
        if not keys:
            return []
        args = [self.log_size, model or "", *keys]
        return sorted(float(t) for t in self._run(lambda: self._sent_times(keys=[f"{self._p}requests"], args=args)))

    def note_sent(self, key_id: str, lease: Lease, keys: Collection[str], now: float) -> list[SentOut]:
        name, names = self.gate(key_id, lease.part), sorted({self.gate(fp, lease.part) for fp in keys})
        args = [self._p, repr(now), lease.token, repr(lease.until), name, repr(lease.sent), lease.tokens, *names]
        return sorted(_sent_out(kept) for kept in self._run(lambda: self._note_sent(args=args)))

    def sends_out(self, keys: Collection[str], part: str, now: float) -> list[float]:
        names = sorted({self.gate(fp, part) for fp in keys})
        kept = self._run(lambda: self._sends_out(args=[self._p, repr(now), *names]))
        return sorted(_sent_out(one)[0] for one in kept)

    def history(self, since: float) -> list[HourOfKey]:
        members = self._run(lambda: self._redis.zrangebyscore(f"{self._p}hist:index", hour_of(since), "+inf"))

        def fetch() -> list[Any]:
            pipe = self._redis.pipeline(transaction=False)
            for member in members:
                pipe.hgetall(f"{self._p}hist:{member}")
            return pipe.execute()

        rows = self._run(fetch) if members else []
        return [hour_row(fields) for fields in rows if fields]

    def _send_unacknowledged(self, command: tuple[Any, ...]) -> None:
        pool = self._redis.connection_pool
        connection = pool.get_connection()
        try:
            connection.send_packed_command(connection.pack_commands([("CLIENT", "REPLY", "SKIP"), command]))
        except redis.RedisError:
            connection.disconnect()
            raise
        finally:
            pool.release(connection)

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
        finished = self._finish_args(key_id, finish, now, succeeded=False)
        args = [repr(now), error[:300], 1 if streak else 0, *finished, *self._remember_args(request)]
        count = int(self._run(lambda: self._failure(keys=[f"{self._p}key:{key_id}"], args=args)))
        self._streaks[key_id] = count
        return count

    def cool(self, key_id: str, until: float, reason: str, now: float) -> None:
        until, ttl_ms = bounded(until, now)
        value = f"{until!r}|{reason}|{until - now!r}"  # the rest's own length too, for readers behind in time
        self._run(lambda: self._redis.set(f"{self._p}cool:{key_id}", value, px=ttl_ms))

    def reset(self, key_ids: Iterable[str]) -> None:
        ids = list(key_ids)

        def apply() -> None:
            pipe = self._redis.pipeline(transaction=True)
            for key_id in ids:
                pipe.delete(f"{self._p}cool:{key_id}", f"{self._p}mrest:{key_id}")
                pipe.hset(f"{self._p}key:{key_id}", "consecutive", 0)
            pipe.execute()

        if ids:
            self._run(apply)

    def set_disabled(self, key_ids: Iterable[str], disabled: bool) -> None:
        ids = list(key_ids)
        if ids:
            name = f"{self._p}disabled"
            self._run(lambda: self._redis.sadd(name, *ids) if disabled else self._redis.srem(name, *ids))

    def records(self, key_ids: Sequence[str]) -> list[KeyRecord]:
        def fetch() -> list[Any]:
            pipe = self._redis.pipeline(transaction=False)
            for key_id in key_ids:
                pipe.hgetall(f"{self._p}key:{key_id}")
                pipe.get(f"{self._p}cool:{key_id}")
            pipe.smembers(f"{self._p}disabled")
            return pipe.execute()

        if not key_ids:
            return []
        *results, disabled = self._run(fetch)
        return [
            replace(key_record(results[i], results[i + 1]), disabled=key_ids[i // 2] in disabled)
            for i in range(0, len(results), 2)
        ]

    def change(self, name: str, change: Callable[[Document], Document]) -> Document:
        """Optimistic: WATCH the document, compute, and write in MULTI/EXEC; redis-py runs `change` again when
        another process wrote the document in between. It is kept as long as the history."""
        key = f"{self._p}doc:{name}"
        ttl = max(3600, int(self.history_days * 86400))

        def apply(pipe: redis.client.Pipeline) -> Document:
            raw = pipe.get(key)
            document = change(json.loads(raw) if raw else {})
            pipe.multi()
            pipe.set(key, json.dumps(document), ex=ttl)
            return document

        return self._run(lambda: self._redis.transaction(apply, key, value_from_callable=True))

    def documents(self, names: Sequence[str]) -> list[Document]:
        if not names:
            return []
        raws = self._run(lambda: self._redis.mget([f"{self._p}doc:{name}" for name in names]))
        return [json.loads(raw) if raw else {} for raw in raws]

    def add_event(self, event: KeyEvent) -> None:
        payload = json.dumps({"at": event.at, "key_id": event.key_id, "kind": event.kind.value, "detail": event.detail})

        def apply() -> None:
            pipe = self._redis.pipeline(transaction=True)
            pipe.lpush(f"{self._p}events", payload)
            pipe.ltrim(f"{self._p}events", 0, self._max_events - 1)
            pipe.execute()

        self._run(apply)

    def events(self, limit: int = 100) -> list[KeyEvent]:
        raw = self._run(lambda: self._redis.lrange(f"{self._p}events", 0, limit - 1))
        events = []
        for item in raw:
            data = json.loads(item)
            events.append(KeyEvent(data["at"], data["key_id"], EventKind(data["kind"]), data.get("detail", "")))
        return events

    def clear(self) -> None:
        """Delete everything under this store's prefix (tests and `reset --hard` style maintenance)."""
        keys = list(self._run(lambda: list(self._redis.scan_iter(f"{self._p}*", count=1000))))
        if keys:
            self._run(lambda: self._redis.delete(*keys))

    def close(self) -> None:
        self._redis.close()


def describe(exc: redis.RedisError) -> str:
    """What an operator should read on the status page for a Redis error."""
    text = str(exc)
    if isinstance(exc, redis.AuthenticationError) or "NOAUTH" in text or "WRONGPASS" in text:
        return "authentication failed (check the password in LLM_STATE_URL)"
    if "DB index is out of range" in text:
        return "DB index out of range (check the number at the end of LLM_STATE_URL)"
    if text.startswith("OOM") or "maxmemory" in text:
        return "out of memory (maxmemory reached; writes are refused)"
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
        return f"unreachable ({type(exc).__name__})"
    return f"{type(exc).__name__}: {text[:200]}"


def _sent_out(kept: str) -> SentOut:
    """A request out as the scripts return it (`sends`: "sent|tokens")."""
    sent, _, tokens = kept.partition("|")
    return float(sent), int(tokens or 0)
