"""Key state in Redis, shared by every process that points at the same server and prefix.

Layout under the prefix (default `llmkeys`), keyed by a key's fingerprint (a hash; no secret is written):
`{p}:pool:{provider}:ring` (list, rotation order), `:members` (set), `:cursor` (counter);
`{p}:key:{fp}` (hash: successes, failures, consecutive, last_error, last_used);
`{p}:cool:{fp}` ("until|reason|length", with a TTL so expired cooldowns vanish without a sweeper);
`{p}:mrest:{fp}` (hash: model → "until|reason|length", the key's rests for one model);
`{p}:pool:{provider}:pause` and `{p}:pool:{provider}/{model}:pause` ("until|reason|length", TTL: the pool, or one
model of it, rests); `{p}:events` (capped list of JSON events, newest first); `{p}:doc:{name}` (JSON documents:
what was learned about hidden limits); `{p}:layout` (the layout version, `LAYOUT`).

Picking the next key is one Lua script, so N processes share one round-robin order. `llms.state.failover`
keeps calls working on local memory while Redis is unreachable.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, replace
from typing import Any, TypeVar
from urllib.parse import urlsplit

try:
    import redis
except ImportError:  # only a store needs the driver: its URL is checked, and its scheme known, without it
    redis = None  # type: ignore[assignment]

from config.api_keys import redacted_url, with_encoded_credentials
from llms.state.base import (
    IN_FLIGHT_CEILING,
    LATENCY_BOUNDS,
    CooldownReason,
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
    StateError,
    StateStore,
    StoreHealth,
    bounded_until,
    gate_name,
    hour_of,
    latency_bucket,
    model_pool,
    outcome_columns,
)

T = TypeVar("T")
log = logging.getLogger("llms.state")

LAYOUT = 2
"""The layout under a prefix (`{prefix}:layout`). 1: before versions; 2: cooldowns and pauses as
`until|reason|length` (a value of layout 1, `until|reason`, still reads), per-model rests in `mrest:{fp}` hashes."""

_ACQUIRE = """
local ring, cursor, prefix, now = KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2])
local token, lease_until, model, suffix, grouped = ARGV[3], tonumber(ARGV[4]), ARGV[5], ARGV[6], ARGV[7] == '1'
for _, name in ipairs({KEYS[3], KEYS[4]}) do
  local pause = redis.call('GET', name)
  if pause and tonumber(string.match(pause, '^[^|]+')) > now then return false end
end
local n = redis.call('LLEN', ring)
if n == 0 then return -1 end
local excluded = {}
for i = 8, #ARGV do excluded[ARGV[i]] = true end
local function admit(key)
  local base = grouped and redis.call('HGET', prefix .. 'gates', key) or key  -- its group's gate, if any
  local id = base .. suffix  -- the key's gate, or its gate for one model (`StateStore.gate`)
  local g = redis.call('HMGET', prefix .. 'gate:' .. id, 'remaining', 'window_ends', 'probing', 'window_began')
  local probing, remaining, ends = g[3] == '1', tonumber(g[1]), tonumber(g[2] or '0')
  local in_window = tonumber(g[4] or '0') <= now and now < ends
  if not (probing or (remaining and (not in_window or remaining < IN_FLIGHT_CEILING))) then return true end
  local leases = prefix .. 'lease:' .. id
  redis.call('ZREMRANGEBYSCORE', leases, '-inf', now)
  local allowed = 1
  if not probing and remaining and in_window then allowed = remaining end
  if redis.call('ZCARD', leases) >= allowed then return false end
  redis.call('ZADD', leases, lease_until, token)
  redis.call('EXPIRE', leases, math.ceil(lease_until - now) + 60)
  return true
end
local function resting(value, rewrite)
  if not value then return false end
  local till, reason, rest = string.match(value, '^([^|]+)|([^|]*)|?([^|]*)$')
  till, rest = tonumber(till), tonumber(rest) or 0
  if rest > 0 and till - now > rest then  -- set by a clock ahead of this one: it rests its own length from now
    till = now + rest
    rewrite(string.format('%.6f|%s|%.6f', till, reason, rest))
  end
  return till > now
end
local function cooling(id)
  local name = prefix .. 'cool:' .. id
  if resting(redis.call('GET', name), function(v) redis.call('SET', name, v, 'KEEPTTL') end) then return true end
  if model == '' then return false end
  local rests = prefix .. 'mrest:' .. id
  return resting(redis.call('HGET', rests, model), function(v) redis.call('HSET', rests, model, v) end)
end
for _ = 1, n do
  local c = redis.call('INCR', cursor)
  local id = redis.call('LINDEX', ring, (c - 1) % n)
  if id and not excluded[id] and redis.call('SISMEMBER', prefix .. 'disabled', id) == 0 then
    if not cooling(id) and (token == '' or admit(id)) then
      redis.call('HSET', prefix .. 'key:' .. id, 'last_used', ARGV[2])
      return id
    end
  end
end
return false
"""

_REMEMBER = """
local function remember(o)
  if #ARGV < o then return end
  local p, hour, key = ARGV[o], ARGV[o + 2], ARGV[o + 3]
  redis.call('LPUSH', p .. 'requests', ARGV[o + 1])
  redis.call('LTRIM', p .. 'requests', 0, tonumber(ARGV[o + 13]) - 1)
  local h = p .. 'hist:' .. hour .. ':' .. key
  redis.call('HSET', h, 'hour', hour, 'key', key, 'provider', ARGV[o + 4], 'key_id', ARGV[o + 5])
  redis.call('HINCRBY', h, 'requests', 1)
  redis.call('HINCRBY', h, 'successes', ARGV[o + 6])
  redis.call('HINCRBY', h, 'rate_limits', ARGV[o + 7])
  redis.call('HINCRBY', h, 'errors', ARGV[o + 8])
  redis.call('HINCRBY', h, 'tokens_in', ARGV[o + 9])
  redis.call('HINCRBY', h, 'tokens_out', ARGV[o + 10])
  redis.call('HINCRBYFLOAT', h, 'latency_total', ARGV[o + 11])
  redis.call('HINCRBY', h, 'b' .. ARGV[o + 12], 1)
  redis.call('EXPIRE', h, ARGV[o + 14])
  redis.call('ZADD', p .. 'hist:index', hour, hour .. ':' .. key)
  redis.call('ZREMRANGEBYSCORE', p .. 'hist:index', '-inf', '(' .. ARGV[o + 15])
end
"""

_FINISH = """
local function finish(o)
  local prefix, id, token, remaining = ARGV[o], ARGV[o + 1], ARGV[o + 2], ARGV[o + 3]
  local gate = prefix .. 'gate:' .. id
  if token ~= '' then redis.call('ZREM', prefix .. 'lease:' .. id, token) end
  if ARGV[o + 5] == '1' and redis.call('HGET', gate, 'probing') == '1' then redis.call('HSET', gate, 'probing', '0') end
  if remaining ~= '' then
    local g = redis.call('HMGET', gate, 'remaining', 'window_ends', 'window_began')
    local now = tonumber(ARGV[o + 6])
    if g[1] and g[2] and tonumber(g[3] or '0') <= now and now < tonumber(g[2]) then
      if tonumber(remaining) < tonumber(g[1]) then
        redis.call('HSET', gate, 'remaining', remaining, 'window_ends', ARGV[o + 4])
      end
    else
      redis.call('HSET', gate, 'remaining', remaining, 'window_ends', ARGV[o + 4], 'window_began', ARGV[o + 6])
    end
  end
end
"""

_ACQUIRE = _ACQUIRE.replace("IN_FLIGHT_CEILING", str(IN_FLIGHT_CEILING))
_LOG = _REMEMBER + _FINISH + "finish(1)\nremember(8)"
_END_LEASE = _FINISH + "finish(1)"

_SUCCESS = (
    _REMEMBER
    + _FINISH
    + """
local before = tonumber(redis.call('HGET', KEYS[1], 'consecutive') or '0')
redis.call('HINCRBY', KEYS[1], 'successes', 1)
redis.call('HSET', KEYS[1], 'consecutive', 0, 'last_used', ARGV[1])
finish(2)
remember(9)
return before
"""
)

_FAILURE = (
    _REMEMBER
    + _FINISH
    + """
redis.call('HINCRBY', KEYS[1], 'failures', 1)
local streak = redis.call('HINCRBY', KEYS[1], 'consecutive', tonumber(ARGV[3]))
redis.call('HSET', KEYS[1], 'last_error', ARGV[2], 'last_used', ARGV[1])
finish(4)
remember(11)
return streak
"""
)

_SPEND = """
local recent, day = KEYS[1], KEYS[2]
local now, per_minute, per_day, day_ends = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
redis.call('ZREMRANGEBYSCORE', recent, '-inf', now - 60)
local ends = tonumber(redis.call('HGET', day, 'ends') or '0')
if now >= ends then redis.call('HSET', day, 'ends', day_ends, 'used', 0); ends = tonumber(day_ends) end
local in_minute = redis.call('ZCARD', recent)
local used = tonumber(redis.call('HGET', day, 'used') or '0')
local function rest(minute, today)
  local r = -1
  if minute then
    local nth = redis.call('ZRANGE', recent, -per_minute, -per_minute, 'WITHSCORES')
    r = tonumber(nth[2]) + 60 - now
  end
  if today then r = math.max(r, ends - now) end
  return tostring(r)
end
local full_minute = per_minute > 0 and in_minute >= per_minute
local full_day = per_day > 0 and used >= per_day
if full_minute or full_day then return {0, rest(full_minute, full_day)} end
if per_minute > 0 then
  redis.call('ZADD', recent, now, ARGV[5])
  redis.call('EXPIRE', recent, 120)
  in_minute = in_minute + 1
end
used = redis.call('HINCRBY', day, 'used', 1)
redis.call('EXPIREAT', day, math.ceil(ends) + 60)
local last_minute = per_minute > 0 and in_minute >= per_minute
local last_day = per_day > 0 and used >= per_day
if last_minute or last_day then return {1, rest(last_minute, last_day)} end
return {1, false}
"""

_COOL_MODEL = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[3]) then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
"""

_REGISTER = """
for i = 1, #ARGV do
  if redis.call('SADD', KEYS[2], ARGV[i]) == 1 then redis.call('RPUSH', KEYS[1], ARGV[i]) end
end
return redis.call('LLEN', KEYS[1])
"""


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
        self._acquire = self._redis.register_script(_ACQUIRE)
        self._register = self._redis.register_script(_REGISTER)
        self._streaks: dict[str, int] = {}
        self._pools: dict[str, list[str]] = {}
        self._grouped: dict[str, bool] = {}  # pools with keys in shared-limit groups
        self._failure = self._redis.register_script(_FAILURE)
        self._spend = self._redis.register_script(_SPEND)
        self._cool_model = self._redis.register_script(_COOL_MODEL)

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
        resumes = max(_until(pause, now), _until(model_pause, now) if model else 0.0, now)
        rests = self._model_rest_values(ids, model) if model else [None] * len(ids)
        frees = [
            (max(_until(raw, now), _until(rest, now), resumes), key_id)
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

    def cool_model(self, key_id: str, model: str, until: float, reason: CooldownReason, now: float) -> None:
        until, ttl_ms = _bounded(until, now)
        value = f"{until!r}|{reason.value}|{until - now!r}"
        self._run(lambda: self._cool_model(keys=[f"{self._p}mrest:{key_id}"], args=[model, value, ttl_ms]))

    def model_rests(self, key_ids: Sequence[str], now: float) -> list[dict[str, tuple[float, CooldownReason]]]:
        def fetch() -> list[Any]:
            pipe = self._redis.pipeline(transaction=False)
            for key_id in key_ids:
                pipe.hgetall(f"{self._p}mrest:{key_id}")
            return pipe.execute()

        found = self._run(fetch) if key_ids else []
        return [
            {
                model: (_until(raw, now), CooldownReason(raw.split("|")[1]))
                for model, raw in rests.items()
                if _until(raw, now) > now
            }
            for rests in found
        ]

    def pause(self, pool: str, until: float, reason: CooldownReason, now: float) -> None:
        name = f"{self._p}pool:{pool}:pause"
        if until <= now:
            pattern = f"{self._p}pool:{pool}/*:pause"  # and its models' pauses (a manual reset: a scan is fine)
            self._run(lambda: self._redis.delete(name, *self._redis.scan_iter(pattern, count=1000)))
            return
        until, ttl_ms = _bounded(until, now)
        self._run(lambda: self._redis.set(name, f"{until!r}|{reason.value}|{until - now!r}", px=ttl_ms))

    def paused(self, pool: str, now: float) -> tuple[float, CooldownReason] | None:
        raw = self._run(lambda: self._redis.get(f"{self._p}pool:{pool}:pause"))
        if not raw or _until(raw, now) <= now:
            return None
        return _until(raw, now), CooldownReason(raw.split("|")[1])

    def record_success(
        self, key_id: str, now: float, request: RequestRecord | None = None, finish: Finish | None = None
    ) -> int:
        """Sent without waiting for a reply (`CLIENT REPLY SKIP`): a success changes no rotation decision, so the
        call need not pay a round trip for it (the request log and history ride along in the same script).
        Returns the failure streak this process last saw for the key."""
        name = f"{self._p}key:{key_id}"
        finished = self._finish_args(key_id, finish, now, succeeded=True)
        command = ("EVAL", _SUCCESS, 1, name, repr(now), *finished, *self._remember_args(request))
        self._run(lambda: self._send_unacknowledged(command))
        return self._streaks.pop(key_id, 0)

    def _remember_args(self, request: RequestRecord | None) -> list[Any]:
        if request is None:
            return []
        hour = hour_of(request.at)
        ok, limited, failed = outcome_columns(request)
        return [
            self._p,
            json.dumps(asdict(request)),
            repr(hour),
            request.key,
            request.provider,
            request.key_id,
            ok,
            limited,
            failed,
            request.tokens_in,
            request.tokens_out,
            repr(request.latency),
            latency_bucket(request.latency),
            self.log_size,
            int(self.history_days * 86400) + 3600,
            repr(hour_of(request.at - self.history_days * 86400)),
        ]

    def spend(self, key_id: str, now: float, limits: RequestLimits) -> tuple[bool, float | None]:
        keys = [f"{self._p}limit:{key_id}:recent", f"{self._p}limit:{key_id}:day"]
        args = [repr(now), limits.per_minute or 0, limits.per_day or 0, repr(limits.day_ends_at), os.urandom(8).hex()]
        counted, rest = self._run(lambda: self._spend(keys=keys, args=args))
        return bool(counted), float(rest) if rest else None

    def log_request(self, request: RequestRecord, finish: Finish | None = None) -> None:
        finished = self._finish_args(request.key, finish, request.at, succeeded=False)
        self._run(lambda: self._send_unacknowledged(("EVAL", _LOG, 0, *finished, *self._remember_args(request))))

    def end_lease(self, key_id: str, finish: Finish, now: float) -> None:
        finished = self._finish_args(key_id, finish, now, succeeded=False)
        self._run(lambda: self._redis.eval(_END_LEASE, 0, *finished))

    def renew_leases(self, leases: Mapping[str, Mapping[str, float]], now: float) -> None:
        def apply() -> None:
            pipe = self._redis.pipeline(transaction=False)
            for key_id, ends in leases.items():
                if ends:
                    name = f"{self._p}lease:{key_id}"
                    pipe.zadd(name, dict(ends), xx=True)  # XX: a lease that already ended is not brought back
                    pipe.expire(name, math.ceil(max(ends.values()) - now) + 60)
            pipe.execute()

        if any(leases.values()):
            self._run(apply)

    def busy_until(self, pool: str, now: float, part: str = "") -> tuple[str, float] | None:
        ids = self._run(lambda: self._redis.lrange(f"{self._p}pool:{pool}:ring", 0, -1))
        if not ids:
            return None
        disabled = self._run(lambda: self._redis.smembers(f"{self._p}disabled"))
        cools = self._run(lambda: self._redis.mget([f"{self._p}cool:{i}" for i in ids]))
        free = [i for i, cool in zip(ids, cools, strict=True) if i not in disabled and _until(cool) <= now]

        def fetch() -> list[Any]:
            pipe = self._redis.pipeline(transaction=False)
            for key_id in free:
                name = self.gate(key_id, part)
                pipe.zrangebyscore(f"{self._p}lease:{name}", f"({now!r}", "+inf", withscores=True)
                pipe.hmget(f"{self._p}gate:{name}", "remaining", "window_ends", "probing", "window_began")
            return pipe.execute()

        found = self._run(fetch) if free else []
        best: tuple[str, float] | None = None
        for key_id, live, (remaining, ends, probing, began) in zip(free, found[::2], found[1::2], strict=True):
            if not live:
                continue
            gate = Gate(
                dict(live), int(remaining) if remaining else None, float(ends or 0), probing == "1", float(began or 0)
            )
            end = gate.held_until(now)
            if end is not None and (best is None or end < best[1]):
                best = (key_id, end)
        return best

    def probe_next(self, key_id: str, part: str = "") -> None:
        self._run(lambda: self._redis.hset(f"{self._p}gate:{self.gate(key_id, part)}", "probing", "1"))

    def _finish_args(self, key_id: str, finish: Finish | None, now: float, *, succeeded: bool) -> list[Any]:
        """The `finish(o)` block of the scripts: end the lease, clear probing on a success, learn the quota."""
        remaining = finish.remaining if finish is not None else None
        ends = finish.window_ends if finish is not None and finish.window_ends is not None else now + 60.0
        return [
            self._p,
            self.gate(key_id, finish.part if finish is not None else ""),
            finish.token if finish is not None else "",
            "" if remaining is None else remaining,
            repr(ends),
            "1" if succeeded else "0",
            repr(now),
        ]

    def request_log(self, limit: int = 100) -> list[RequestRecord]:
        raw = self._run(lambda: self._redis.lrange(f"{self._p}requests", 0, limit - 1))
        return [RequestRecord(**json.loads(item)) for item in raw]

    def history(self, since: float) -> list[HourOfKey]:
        members = self._run(lambda: self._redis.zrangebyscore(f"{self._p}hist:index", hour_of(since), "+inf"))

        def fetch() -> list[Any]:
            pipe = self._redis.pipeline(transaction=False)
            for member in members:
                pipe.hgetall(f"{self._p}hist:{member}")
            return pipe.execute()

        rows = self._run(fetch) if members else []
        return [_hour_row(fields) for fields in rows if fields]

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

    def cool(self, key_id: str, until: float, reason: CooldownReason, now: float) -> None:
        until, ttl_ms = _bounded(until, now)
        value = f"{until!r}|{reason.value}|{until - now!r}"  # the rest's own length too, for readers behind in time
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
            replace(_record(results[i], results[i + 1]), disabled=key_ids[i // 2] in disabled)
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


def _bounded(until: float, now: float) -> tuple[float, int]:
    """`until` within the store's bounds, with the matching TTL in milliseconds (plus a second)."""
    until = bounded_until(until, now)
    return until, math.ceil((until - now) * 1000) + 1000


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


def _hour_row(fields: dict[str, str]) -> HourOfKey:
    buckets = tuple(int(fields.get(f"b{i}", 0)) for i in range(len(LATENCY_BOUNDS) + 1))
    return HourOfKey(
        hour=float(fields["hour"]),
        key=fields["key"],
        provider=fields.get("provider", ""),
        key_id=fields.get("key_id", ""),
        requests=int(fields.get("requests", 0)),
        successes=int(fields.get("successes", 0)),
        rate_limits=int(fields.get("rate_limits", 0)),
        errors=int(fields.get("errors", 0)),
        tokens_in=int(fields.get("tokens_in", 0)),
        tokens_out=int(fields.get("tokens_out", 0)),
        latency_total=float(fields.get("latency_total", 0.0)),
        latency_buckets=buckets,
    )


def _until(raw: str | None, now: float | None = None) -> float:
    """The end of a cooldown or pause value (`until|reason[|rest]`), no further than its own length from `now`."""
    if not raw:
        return 0.0
    head, _, rest = [*raw.split("|"), ""][:3]
    until = float(head)
    return min(until, now + float(rest)) if now is not None and rest else until


def _record(fields: dict[str, str], cool: str | None) -> KeyRecord:
    until, reason, rest = 0.0, None, 0.0
    if cool:
        head, why, length = [*cool.split("|"), ""][:3]
        until, reason, rest = float(head), CooldownReason(why), float(length or 0)
    last_used = fields.get("last_used")
    return KeyRecord(
        cooldown_until=until,
        reason=reason,
        rest=rest,
        consecutive_failures=int(fields.get("consecutive", 0)),
        successes=int(fields.get("successes", 0)),
        failures=int(fields.get("failures", 0)),
        last_error=fields.get("last_error"),
        last_used=float(last_used) if last_used else None,
    )
