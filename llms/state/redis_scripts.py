"""The Redis store's Lua scripts, and the arguments each takes.

Every operation that reads and then writes runs as one script, so it is atomic for every process sharing the
server: picking the next key (one round-robin order for N processes, with its lease), recording an outcome with
its request log and history, ending a lease, spending a configured limit. The scripts share blocks (`finish(o)`,
`remember(o)`) whose arguments start at offset `o`; `finish_args` and `remember_args` build them, here beside the
Lua that reads them, so their order is written down once.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from llms.state.base import (
    IN_FLIGHT_CEILING,
    TRIP_SPREAD,
    WRITE_LAG,
    Finish,
    RequestRecord,
    hour_of,
    latency_bucket,
    outcome_columns,
)

ACQUIRE = """
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
  local g = redis.call('HMGET', prefix .. 'gate:' .. id, 'remaining', 'window_ends', 'probing', 'window_began', 'size')
  local probing, remaining, ends = g[3] == '1', tonumber(g[1]), tonumber(g[2] or '0')
  local began = tonumber(g[4] or '0') <= now + WRITE_LAG  -- not in this clock's future (`Gate.in_window`)
  local in_window = began and now < ends
  if not (probing or (remaining and (not in_window or remaining < IN_FLIGHT_CEILING))) then return true end
  local leases = prefix .. 'lease:' .. id
  redis.call('ZREMRANGEBYSCORE', leases, '-inf', now)
  local allowed = 1  -- the rule of `Gate.allowed`: what was left (or the window's size) once its window ends
  if not probing and remaining and began then
    allowed = in_window and remaining or math.max(1, remaining, tonumber(g[5] or '') or 0)
  end
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
  if token ~= '' then
    redis.call('ZREM', prefix .. 'lease:' .. id, token)
    if redis.call('ZREM', prefix .. 'out:' .. id, token) == 1 then
      redis.call('HDEL', prefix .. 'sent:' .. id, token)  -- its send, kept (`note_sent`)
      redis.call('HDEL', prefix .. 'size:' .. id, token)
    end
  end
  if ARGV[o + 5] == '1' and redis.call('HGET', gate, 'probing') == '1' then redis.call('HSET', gate, 'probing', '0') end
  if remaining ~= '' then
    local g = redis.call('HMGET', gate, 'remaining', 'window_ends', 'window_began', 'size')
    local now, began = tonumber(ARGV[o + 6]), tonumber(g[3] or '0')
    local read = tonumber(ARGV[o + 7])
    local size = ARGV[o + 8]
    if g[1] and g[2] and began <= now + WRITE_LAG and now < tonumber(g[2]) then
      local later = size ~= '' and size == g[4] and read > began + TRIP_SPREAD  -- `Gate.learn`
      if tonumber(remaining) < tonumber(g[1]) or later then
        redis.call('HSET', gate, 'remaining', remaining, 'window_ends', ARGV[o + 4], 'size', size)
        if read > began then redis.call('HSET', gate, 'window_began', ARGV[o + 7]) end
      end
    elseif not g[1] or read >= began or began > now + WRITE_LAG then
      redis.call('HSET', gate, 'remaining', remaining, 'window_ends', ARGV[o + 4], 'window_began', ARGV[o + 7],
        'size', size)
    elseif tonumber(remaining) < tonumber(g[1]) or (tonumber(g[2] or '0') <= now and now < tonumber(ARGV[o + 4])) then
      redis.call('HSET', gate, 'remaining', remaining, 'window_ends', ARGV[o + 4], 'size', size)
    end
  end
end
"""

ACQUIRE = ACQUIRE.replace("IN_FLIGHT_CEILING", str(IN_FLIGHT_CEILING)).replace("WRITE_LAG", repr(WRITE_LAG))
_FINISH = _FINISH.replace("TRIP_SPREAD", repr(TRIP_SPREAD)).replace("WRITE_LAG", repr(WRITE_LAG))
LOG = _REMEMBER + _FINISH + "finish(1)\nremember(10)"
END_LEASE = _FINISH + "finish(1)"

SUCCESS = (
    _REMEMBER
    + _FINISH
    + """
local before = tonumber(redis.call('HGET', KEYS[1], 'consecutive') or '0')
redis.call('HINCRBY', KEYS[1], 'successes', 1)
redis.call('HSET', KEYS[1], 'consecutive', 0, 'last_used', ARGV[1])
finish(2)
remember(11)
return before
"""
)

FAILURE = (
    _REMEMBER
    + _FINISH
    + """
redis.call('HINCRBY', KEYS[1], 'failures', 1)
local streak = redis.call('HINCRBY', KEYS[1], 'consecutive', tonumber(ARGV[3]))
redis.call('HSET', KEYS[1], 'last_error', ARGV[2], 'last_used', ARGV[1])
finish(4)
remember(13)
return streak
"""
)

SPEND = """
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

COOL_MODEL = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[3]) then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
"""

SENT_TIMES = """
-- The request log's answered requests of the keys in ARGV[3..] (for model ARGV[2], unless empty), among its
-- ARGV[1] newest: when each was sent, as text (a Lua number returned to Redis would lose its fraction).
local wanted, out = {}, {}
for i = 3, #ARGV do wanted[ARGV[i]] = true end
for _, item in ipairs(redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)) do
  for i = 3, #ARGV do
    if string.find(item, ARGV[i], 1, true) then  -- only entries that name a key are decoded
      local r = cjson.decode(item)
      if wanted[r.key] and r.outcome == 'ok' and (ARGV[2] == '' or r.model == ARGV[2]) then
        out[#out + 1] = string.format('%.17g', r.at - r.latency)
      end
      break
    end
  end
end
return out
"""

_SENDS = """
local function sends(prefix, now, name)  -- the gate's requests out whose sends were kept: {order, "sent|tokens"}
  local out, kept, sizes = prefix .. 'out:' .. name, prefix .. 'sent:' .. name, prefix .. 'size:' .. name
  local gone = redis.call('ZRANGEBYSCORE', out, '-inf', now)  -- a dead process's
  if #gone > 0 then
    redis.call('ZREMRANGEBYSCORE', out, '-inf', now)
    redis.call('HDEL', kept, unpack(gone))
    redis.call('HDEL', sizes, unpack(gone))
  end
  local live, found = redis.call('ZRANGE', out, 0, -1), {}
  if #live > 0 then
    local tokens = redis.call('HMGET', sizes, unpack(live))  -- (none from a process of an older version)
    for i, value in ipairs(redis.call('HMGET', kept, unpack(live))) do
      if value then
        local order, sent = string.match(value, '^(%d+)|(.*)$')
        found[#found + 1] = {tonumber(order), sent .. '|' .. (tokens[i] or '0')}
      end
    end
  end
  return found
end
"""

NOTE_SENT = (
    _SENDS
    + """
-- `StateStore.note_sent`: keep lease ARGV[3] (until ARGV[4]) on gate ARGV[5] as sent at ARGV[6] with ARGV[7] tokens,
-- in the order taken (the counter `outs`), and return the sends kept before it on the gates ARGV[8..] (prefix
-- ARGV[1], now ARGV[2]), each as "sent|tokens".
local prefix, now, token, ends, name = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4]), ARGV[5]
local order, before = redis.call('INCR', prefix .. 'outs'), {}
for i = 8, #ARGV do
  for _, kept in ipairs(sends(prefix, now, ARGV[i])) do
    if kept[1] < order then before[#before + 1] = kept[2] end
  end
end
local out, kept, sizes = prefix .. 'out:' .. name, prefix .. 'sent:' .. name, prefix .. 'size:' .. name
local ttl = math.ceil(ends - now) + 60
redis.call('ZADD', out, ends, token)
redis.call('HSET', kept, token, order .. '|' .. ARGV[6])
redis.call('HSET', sizes, token, ARGV[7])
for _, held in ipairs({out, kept, sizes}) do
  if redis.call('TTL', held) < ttl then redis.call('EXPIRE', held, ttl) end
end
return before
"""
)

SENDS_OUT = (
    _SENDS
    + """
-- `StateStore.sends_out`: the sends kept on the gates ARGV[3..] (prefix ARGV[1], now ARGV[2]), as text.
local found = {}
for i = 3, #ARGV do
  for _, kept in ipairs(sends(ARGV[1], tonumber(ARGV[2]), ARGV[i])) do found[#found + 1] = kept[2] end
end
return found
"""
)

REGISTER = """
for i = 1, #ARGV do
  if redis.call('SADD', KEYS[2], ARGV[i]) == 1 then redis.call('RPUSH', KEYS[1], ARGV[i]) end
end
return redis.call('LLEN', KEYS[1])
"""


def remember_args(prefix: str, request: RequestRecord | None, log_size: int, history_days: float) -> list[Any]:
    """The `remember(o)` block's arguments: the request for the log, and its hour's counts for the history."""
    if request is None:
        return []
    hour = hour_of(request.at)
    ok, limited, failed = outcome_columns(request)
    return [
        prefix,
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
        log_size,
        int(history_days * 86400) + 3600,
        repr(hour_of(request.at - history_days * 86400)),
    ]


def finish_args(prefix: str, gate: str, finish: Finish | None, now: float, *, succeeded: bool) -> list[Any]:
    """The `finish(o)` block's arguments: end the lease, clear probing on a success, learn the quota (`gate`: the
    name the lease's gate is kept under, `StateStore.gate`)."""
    remaining = finish.remaining if finish is not None else None
    ends = finish.window_ends if finish is not None and finish.window_ends is not None else now + 60.0
    return [
        prefix,
        gate,
        finish.token if finish is not None else "",
        "" if remaining is None else remaining,
        repr(ends),
        "1" if succeeded else "0",
        repr(now),
        repr(now if finish is None else finish.read(now)),
        "" if finish is None or finish.size is None else finish.size,
    ]
