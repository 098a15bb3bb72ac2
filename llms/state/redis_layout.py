"""How the Redis store lays out key state under its prefix, and how each value is written and read back.

Layout under the prefix (default `llmkeys`), keyed by a key's fingerprint (a hash; no secret is written):
`{p}:pool:{provider}:ring` (list, rotation order), `:members` (set), `:cursor` (counter); `{p}:key:{fp}` (hash:
successes, failures, consecutive, last_error, last_used); `{p}:cool:{fp}` ("until|reason|length", with a TTL so expired
cooldowns vanish without a sweeper); `{p}:mrest:{fp}` (hash: model → "until|reason|length", the key's rests for one
model); `{p}:pool:{provider}:pause` and `{p}:pool:{provider}/{model}:pause` ("until|reason|length", TTL: the pool, or
one model of it, rests); `{p}:events` (capped list of JSON events, newest first); `{p}:doc:{name}` (JSON documents: what
was learned about hidden limits); `{p}:layout` (the layout version, `LAYOUT`). Beside them: `{p}:disabled` (set);
`{p}:requests` (capped list of JSON requests, newest first); `{p}:hist:{hour}:{fp}` (hash: one key's hour) indexed by
`{p}:hist:index` (sorted set by hour); `{p}:gate:{gate}` (hash: remaining, window_ends, probing, window_began, size) and
`{p}:lease:{gate}` (sorted set: token → end), with `{p}:gates` (hash: key → its group's gate); `{p}:out:{gate}` (sorted
set: token → end, every request out whose lease said when it left, counted by the gate or not) with `{p}:sent:{gate}`
(hash: token → "order|sent", the order from the counter `{p}:outs`) and `{p}:size:{gate}` (hash: token → the tokens
it may spend); `{p}:limit:{fp}:recent` (sorted set) and `:day`
(hash: ends, used) for configured limits.

A value's format is part of the layout: `LAYOUT` moves on when one changes, and a value of an older layout must
still read (`until_of`, `key_record`). The names are also written in the scripts (`llms.state.redis_scripts`).
"""

from __future__ import annotations

import math

from llms.state.base import LATENCY_BOUNDS, HourOfKey, KeyRecord, bounded_until

LAYOUT = 3
"""The layout under a prefix (`{prefix}:layout`). 1: before versions; 2: cooldowns and pauses as
`until|reason|length` (a value of layout 1, `until|reason`, still reads), per-model rests in `mrest:{fp}` hashes;
3: a gate's window size (`size`; a gate of layout 2 has none, and reads as a count without one). The requests out
(`out:`, `sent:`) and their sizes (`size:`) are new keys beside layout 3's, not a change of its values: a process
that keeps none shares the store with one that does (its requests read as none out, their sizes as 0: unknown), so
the layout stays 3."""


def bounded(until: float, now: float) -> tuple[float, int]:
    """`until` within the store's bounds, with the matching TTL in milliseconds (plus a second)."""
    until = bounded_until(until, now)
    return until, math.ceil((until - now) * 1000) + 1000


def until_of(raw: str | None, now: float | None = None) -> float:
    """The end of a cooldown or pause value (`until|reason[|rest]`), no further than its own length from `now`."""
    if not raw:
        return 0.0
    head, _, rest = [*raw.split("|"), ""][:3]
    until = float(head)
    return min(until, now + float(rest)) if now is not None and rest else until


def key_record(fields: dict[str, str], cool: str | None) -> KeyRecord:
    """A key's record from its `key:{fp}` hash and its `cool:{fp}` value (of either layout)."""
    until, reason, rest = 0.0, None, 0.0
    if cool:
        head, why, length = [*cool.split("|"), ""][:3]
        until, reason, rest = float(head), why, float(length or 0)
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


def hour_row(fields: dict[str, str]) -> HourOfKey:
    """One key's hour from its `hist:{hour}:{fp}` hash; a field never counted reads as 0."""
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
