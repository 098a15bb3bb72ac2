"""The SQLite store's file layout: its tables, its layout version, and the steps that migrate an older file in
place (data kept). Upgrades read `PRAGMA user_version`; a file from a newer version is refused, never rewritten.
"""

from __future__ import annotations

import sqlite3

from llms.state.base import LATENCY_BOUNDS

_BUCKETS = "\n".join(f"    b{i} INTEGER NOT NULL DEFAULT 0," for i in range(len(LATENCY_BOUNDS) + 1))
"""The history's latency buckets, one column per bound and one for everything slower (`latency_bucket`): a change
of `LATENCY_BOUNDS` is a change of layout, so it needs a `SCHEMA_VERSION` step that adds the columns."""

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS keys (
    fp TEXT PRIMARY KEY,
    pool TEXT NOT NULL,
    position INTEGER NOT NULL,
    cooldown_until REAL NOT NULL DEFAULT 0,
    reason TEXT,
    consecutive INTEGER NOT NULL DEFAULT 0,
    successes INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    last_used REAL,
    disabled INTEGER NOT NULL DEFAULT 0,
    rest REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS keys_by_pool ON keys (pool, position);
CREATE TABLE IF NOT EXISTS pools (
    pool TEXT PRIMARY KEY,
    cursor INTEGER NOT NULL DEFAULT -1,
    paused_until REAL NOT NULL DEFAULT 0,
    pause_reason TEXT,
    pause_rest REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    key TEXT NOT NULL,
    key_id TEXT NOT NULL,
    outcome TEXT NOT NULL,
    status INTEGER,
    latency REAL NOT NULL,
    tokens_in INTEGER NOT NULL,
    tokens_out INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS history (
    hour REAL NOT NULL,
    key TEXT NOT NULL,
    provider TEXT NOT NULL,
    key_id TEXT NOT NULL,
    requests INTEGER NOT NULL DEFAULT 0,
    successes INTEGER NOT NULL DEFAULT 0,
    rate_limits INTEGER NOT NULL DEFAULT 0,
    errors INTEGER NOT NULL DEFAULT 0,
    tokens_in INTEGER NOT NULL DEFAULT 0,
    tokens_out INTEGER NOT NULL DEFAULT 0,
    latency_total REAL NOT NULL DEFAULT 0,
{_BUCKETS}
    PRIMARY KEY (hour, key)
);
CREATE TABLE IF NOT EXISTS gates (
    fp TEXT PRIMARY KEY,
    remaining INTEGER,
    window_ends REAL NOT NULL DEFAULT 0,
    probing INTEGER NOT NULL DEFAULT 0,
    window_began REAL NOT NULL DEFAULT 0,
    size INTEGER
);
CREATE TABLE IF NOT EXISTS leases (
    token TEXT PRIMARY KEY,
    fp TEXT NOT NULL,
    until REAL NOT NULL,
    sent REAL,
    counted INTEGER NOT NULL DEFAULT 1,
    tokens INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS leases_by_key ON leases (fp, until);
CREATE TABLE IF NOT EXISTS limit_usage (
    fp TEXT PRIMARY KEY,
    recent TEXT NOT NULL,
    day_ends_at REAL NOT NULL,
    day_used INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS model_rests (
    fp TEXT NOT NULL,
    model TEXT NOT NULL,
    until REAL NOT NULL,
    reason TEXT NOT NULL,
    rest REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (fp, model)
);
CREATE TABLE IF NOT EXISTS documents (
    name TEXT PRIMARY KEY,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    key_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL
);
"""


SCHEMA_VERSION = 6
"""`PRAGMA user_version` of a file this code wrote. 1: the first layout (no version was written); 2: a rest's own
length beside its end (`keys.rest`, `pools.pause_rest`) and a quota window's start (`gates.window_began`), so that
neither outlasts its own length whatever the clock does; 3: rests of a key for one model (`model_rests`), and
pauses of one model of a pool as rows of `pools` named `pool/model`; 4: a quota window's whole size beside its count
(`gates.size`), where the provider said it; 5: when each request in flight was sent (`leases.sent`), kept also for
keys whose gate counts nothing yet (`leases.counted` 0: a count that comes later counts them not), so a 429 in one
process reads the requests the others have out."""

_MIGRATIONS: dict[int, tuple[str, ...]] = {
    2: (
        "ALTER TABLE keys ADD COLUMN rest REAL NOT NULL DEFAULT 0",
        "ALTER TABLE pools ADD COLUMN pause_rest REAL NOT NULL DEFAULT 0",
        "ALTER TABLE gates ADD COLUMN window_began REAL NOT NULL DEFAULT 0",
    ),
    3: (),  # a new table only: made by the schema itself
    4: ("ALTER TABLE gates ADD COLUMN size INTEGER",),
    5: ("ALTER TABLE leases ADD COLUMN sent REAL", "ALTER TABLE leases ADD COLUMN counted INTEGER NOT NULL DEFAULT 1"),
    6: ("ALTER TABLE leases ADD COLUMN tokens INTEGER NOT NULL DEFAULT 0",),
}
"""What takes a file from the version before to this one, in place; data is kept (a rest of 0: length unknown; a
window's size none: what was left stays the count until an answer reports again; a lease's send none: read as
none out)."""


TABLES = (
    "model_rests",
    "keys",
    "pools",
    "events",
    "requests",
    "history",
    "limit_usage",
    "gates",
    "leases",
    "documents",
)
"""Every table, in the order a reset clears them."""


def migrate(db: sqlite3.Connection) -> None:
    """Bring the file to `SCHEMA_VERSION` in one transaction (another process may be doing the same: the write
    lock makes one of them do it, and the other find it done)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'keys'").fetchone():  # not a new file
            for step in range(max(version, 1) + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[step]:
                    db.execute(statement)
        for statement in _SCHEMA.split(";"):  # tables and indexes added since, if any (executescript would commit)
            if statement.strip():
                db.execute(statement)
        if version != SCHEMA_VERSION:
            if version > SCHEMA_VERSION:
                raise sqlite3.DatabaseError(
                    f"the file was written by a newer version (layout {version}; this one knows {SCHEMA_VERSION})"
                )
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
