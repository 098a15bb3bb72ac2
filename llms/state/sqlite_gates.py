"""The SQLite store's gates on requests in flight: leases in the `leases` table, each gate's state in `gates`.

Apart from the key state because it is one rule applied to rows, the same rule every store applies
(`llms.state.base.Gate`): read the gate, let the rule decide, write back only what changed. Every function runs in
the caller's transaction; gates and leases are kept under `StateStore.gate`'s names.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from llms.state.base import Finish, Gate, Lease, SentOut


def load(db: sqlite3.Connection, name: str) -> Gate:
    """The gate kept under `name` (without its leases); an open gate when none is kept."""
    row = db.execute(
        "SELECT remaining, window_ends, probing, window_began, size FROM gates WHERE fp = ?", (name,)
    ).fetchone()
    return Gate({}, row[0], row[1], bool(row[2]), row[3], row[4]) if row else Gate({})


def take(db: sqlite3.Connection, name: str, lease: Lease, now: float) -> bool | None:
    """Take `lease` if the gate allows one more request in flight: True when it was taken, False when the gate is
    full, None when the gate counts nothing now (no lease is kept)."""
    gate = load(db, name)
    if not gate.tracks(now):
        return None
    db.execute("DELETE FROM leases WHERE fp = ? AND until <= ?", (name, now))
    live = db.execute("SELECT count(*) FROM leases WHERE fp = ? AND counted", (name,)).fetchone()[0]
    if live >= gate.allowed(now):
        return False
    db.execute("INSERT INTO leases (token, fp, until) VALUES (?, ?, ?)", (lease.token, name, lease.until))
    return True


def note_sent(db: sqlite3.Connection, name: str, lease: Lease, names: Sequence[str], now: float) -> list[SentOut]:
    """`StateStore.note_sent`: the lease's row gets its send (a row the gate does not count, where it took none: a
    count read later already counts the requests sent before it); the rows before it are those of lower id (a new
    row's id is above every live one's). Rows a dead process left go here: a gate that counts nothing never
    sweeps them."""
    marks = ", ".join("?" * len(names))
    db.execute(f"DELETE FROM leases WHERE fp IN ({marks}) AND until <= ? AND NOT counted", (*names, now))
    db.execute(
        "INSERT INTO leases (token, fp, until, sent, counted, tokens) VALUES (?, ?, ?, ?, 0, ?)"
        " ON CONFLICT (token) DO UPDATE SET sent = excluded.sent, tokens = excluded.tokens",
        (lease.token, name, lease.until, lease.sent, lease.tokens),
    )
    (order,) = db.execute("SELECT rowid FROM leases WHERE token = ?", (lease.token,)).fetchone()
    query = f"SELECT sent, tokens FROM leases WHERE fp IN ({marks}) AND until > ? AND sent IS NOT NULL AND rowid < ?"
    return sorted(db.execute(query, (*names, now, order)))


def sends_out(db: sqlite3.Connection, names: Sequence[str], now: float) -> list[float]:
    """When the requests whose leases on the gates `names` are live now were sent (where it was noted)."""
    marks = ", ".join("?" * len(names))
    query = f"SELECT sent FROM leases WHERE fp IN ({marks}) AND until > ? AND sent IS NOT NULL ORDER BY sent"
    return [sent for (sent,) in db.execute(query, (*names, now))]


def learn(db: sqlite3.Connection, name: str, finish: Finish | None, now: float, *, succeeded: bool) -> None:
    """Clear probing on a success and learn the quota an answer reported, writing the gate only if it changed."""
    gate = load(db, name)
    before = (gate.remaining, gate.window_ends, gate.probing, gate.window_began, gate.size)
    if succeeded:
        gate.probing = False
    if finish is not None:
        gate.learn(finish, now)
    if (gate.remaining, gate.window_ends, gate.probing, gate.window_began, gate.size) != before:
        db.execute(
            "INSERT OR REPLACE INTO gates (fp, remaining, window_ends, probing, window_began, size)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (name, gate.remaining, gate.window_ends, int(gate.probing), gate.window_began, gate.size),
        )


def held_until(db: sqlite3.Connection, name: str, now: float) -> float | None:
    """When the gate's first lease ends, if every slot it allows is held now (None: a slot is free)."""
    gate = load(db, name)
    gate.leases = dict(
        db.execute("SELECT token, until FROM leases WHERE fp = ? AND until > ? AND counted", (name, now))
    )
    return gate.held_until(now)


def probe(db: sqlite3.Connection, name: str) -> None:
    """The gate takes one request at a time until one succeeds (after a hint-less rest)."""
    db.execute("INSERT INTO gates (fp, probing) VALUES (?, 1) ON CONFLICT (fp) DO UPDATE SET probing = 1", (name,))
