"""The SQLite store's logs of what happened: the request log, the hourly history and the key events.

Apart from the key state because they answer other questions (the status page's log and events, the history
page's hours) and grow with time rather than with keys: each is written in the transaction that records what
happened, trimmed as it goes (the logs in batches or by count, the history by the hour), and read without the
write lock. A request is logged as who answered and how, never what was asked. Their tables are in
`llms.state.sqlite_schema`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection

from llms.state.base import (
    LATENCY_BOUNDS,
    EventKind,
    HourOfKey,
    KeyEvent,
    RequestRecord,
    hour_of,
    latency_bucket,
    outcome_columns,
)


def remember(db: sqlite3.Connection, request: RequestRecord, log_size: int, prune_before: float | None) -> None:
    """Log the request and count it in its hour (in the caller's transaction); with `prune_before`, drop the hours
    before it (once an hour is enough: the caller says when)."""
    r = request
    cursor = db.execute(
        "INSERT INTO requests (at, provider, model, key, key_id, outcome, status, latency, tokens_in, tokens_out) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (r.at, r.provider, r.model, r.key, r.key_id, r.outcome, r.status, r.latency, r.tokens_in, r.tokens_out),
    )
    if (cursor.lastrowid or 0) % 100 == 0:  # trim in batches: one indexed delete per hundred requests
        db.execute("DELETE FROM requests WHERE id <= ?", ((cursor.lastrowid or 0) - log_size,))
    ok, limited, failed = outcome_columns(r)
    bucket = f"b{latency_bucket(r.latency)}"
    db.execute(
        "INSERT INTO history (hour, key, provider, key_id, requests, successes, rate_limits, errors, tokens_in, "
        f"tokens_out, latency_total, {bucket}) VALUES (?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?, 1) "
        "ON CONFLICT (hour, key) DO UPDATE SET key_id = excluded.key_id, requests = requests + 1, "
        "successes = successes + excluded.successes, rate_limits = rate_limits + excluded.rate_limits, "
        "errors = errors + excluded.errors, tokens_in = tokens_in + excluded.tokens_in, "
        "tokens_out = tokens_out + excluded.tokens_out, latency_total = latency_total + excluded.latency_total, "
        f"{bucket} = {bucket} + 1",
        (hour_of(r.at), r.key, r.provider, r.key_id, ok, limited, failed, r.tokens_in, r.tokens_out, r.latency),
    )
    if prune_before is not None:
        db.execute("DELETE FROM history WHERE hour < ?", (prune_before,))


def request_log(db: sqlite3.Connection, limit: int) -> list[RequestRecord]:
    """The `limit` most recent requests, newest first."""
    rows = db.execute(
        "SELECT at, provider, model, key, key_id, outcome, status, latency, tokens_in, tokens_out "
        "FROM requests ORDER BY id DESC LIMIT ?",
        (limit,),
    ).fetchall()
    return [RequestRecord(*row) for row in rows]


def sent_times(db: sqlite3.Connection, keys: Collection[str], model: str | None, limit: int) -> list[float]:
    """`StateStore.sent_times` over the `limit` most recent requests, in SQL: no record is built for the others."""
    if not keys:
        return []
    marks = ", ".join("?" * len(keys))
    rows = db.execute(
        f"SELECT at - latency FROM (SELECT at, latency, key, outcome, model FROM requests ORDER BY id DESC LIMIT ?) "
        f"WHERE key IN ({marks}) AND outcome = 'ok' AND (? IS NULL OR model = ?) ORDER BY 1",
        (limit, *keys, model, model),
    ).fetchall()
    return [row[0] for row in rows]


def history(db: sqlite3.Connection, since: float) -> list[HourOfKey]:
    """Every key's hours from the one containing `since` on, oldest first."""
    buckets = ", ".join(f"b{i}" for i in range(len(LATENCY_BOUNDS) + 1))
    rows = db.execute(
        "SELECT hour, key, provider, key_id, requests, successes, rate_limits, errors, tokens_in, tokens_out, "
        f"latency_total, {buckets} FROM history WHERE hour >= ? ORDER BY hour",
        (hour_of(since),),
    ).fetchall()
    return [HourOfKey(*row[:11], latency_buckets=tuple(row[11:])) for row in rows]


def add_event(db: sqlite3.Connection, event: KeyEvent, keep: int) -> None:
    """Log the event, keeping the `keep` most recent."""
    cursor = db.execute(
        "INSERT INTO events (at, key_id, kind, detail) VALUES (?, ?, ?, ?)",
        (event.at, event.key_id, event.kind.value, event.detail),
    )
    db.execute("DELETE FROM events WHERE id <= ?", ((cursor.lastrowid or 0) - keep,))


def events(db: sqlite3.Connection, limit: int) -> list[KeyEvent]:
    """The `limit` most recent events, newest first."""
    rows = db.execute("SELECT at, key_id, kind, detail FROM events ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
    return [KeyEvent(at, key_id, EventKind(kind), detail) for at, key_id, kind, detail in rows]
