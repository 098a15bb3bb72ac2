"""`sqlite://PATH`: key state in one SQLite file, shared safely by every process on one machine (the default).

Why SQLite: it is in the standard library, survives restarts, and its write lock makes each operation atomic
across processes — the same guarantee the Redis store gets from Lua. Each operation here is one transaction on
the file (`llms.state.sqlite_file`: connections, WAL, the busy timeout); the request log, hourly history and
events are `llms.state.sqlite_history`, leases and gates `llms.state.sqlite_gates`, the tables and their
migrations `llms.state.sqlite_schema`. The file is created readable by its owner only (0600); it holds
fingerprints of keys, never keys.

`sqlite://` is followed by the file's path: `sqlite:///var/lib/llm/state.db` (absolute), `sqlite://state.db`
(relative to the working directory); `?timeout=SECONDS` sets the busy timeout (default 5 s).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path

from llms.state import sqlite_gates, sqlite_history
from llms.state.base import (
    Document,
    Finish,
    HourOfKey,
    KeyEvent,
    KeyRecord,
    Lease,
    LimitUsage,
    RequestLimits,
    RequestRecord,
    SentOut,
    bounded_until,
    hour_of,
    model_pool,
)
from llms.state.sqlite_file import SQLiteFile
from llms.state.sqlite_schema import TABLES
from llms.state.store import StateError, StateStore, StoreHealth

_FREE = "pool = ? AND cooldown_until <= ? AND disabled = 0"
"""A key of the pool (bound first) neither cooling nor disabled now (bound second)."""
_NOT_RESTING_FOR_MODEL = "NOT EXISTS (SELECT 1 FROM model_rests m WHERE m.fp = keys.fp AND m.model = ? AND m.until > ?)"
"""The key rests for no model of that name (bound first; "" names none) now (bound second)."""


class SQLiteStore(StateStore):
    SCHEMES = ("sqlite",)
    SHARED = True  # other processes share the file, and a file can fail (locked, full, read-only)

    def __init__(self, path: str | os.PathLike[str], max_events: int = 500, busy_timeout: float = 5.0) -> None:
        self.path = Path(path).expanduser()
        self._file = SQLiteFile(self.path, busy_timeout, on_reopen=self._register_again)
        self._max_events = max_events
        self._pruned_hour = -1.0
        self._tokens: set[str] = set()  # leases this process took, so ending one costs nothing when none was
        self._tokens_lock = threading.Lock()
        self._pools: dict[str, list[str]] = {}  # registered here, to register again in a file made anew
        self._next_clamp = 0.0

    @classmethod
    def check_url(cls, url: str) -> str:
        """`sqlite://PATH[?timeout=SECONDS]`."""
        if not url.split("://", 1)[1].strip():
            raise ValueError("must name a file after sqlite:// (sqlite:///var/lib/llm/state.db)")
        return url

    @staticmethod
    def describe(health: StoreHealth) -> str:
        return f"in the SQLite file `{health.location}` (kept across restarts, shared by this machine's processes)"

    @classmethod
    def from_url(cls, url: str, prefix: str) -> SQLiteStore:
        """`sqlite://PATH[?timeout=SECONDS]`: the busy timeout is how long a writer waits for another's lock."""
        path, _, query = url.split("://", 1)[1].partition("?")
        options = dict(part.partition("=")[::2] for part in query.split("&") if part)
        timeout = float(options.get("timeout") or 5.0)
        return cls(path, busy_timeout=timeout if 0 < timeout <= 60 else 5.0)

    def health(self) -> StoreHealth:
        try:
            self._file.run(lambda db: db.execute("SELECT 1 FROM keys LIMIT 1").fetchone(), write=False)
        except StateError as exc:
            return StoreHealth("sqlite", str(self.path), False, exc.reason)
        note = f"the file was deleted or replaced under this process and reopened at {self._file.reopened}"
        return StoreHealth("sqlite", str(self.path), True, note if self._file.reopened else "")

    def close(self) -> None:
        """Close the file's connections once no operation is using one; later calls fail as a closed store."""
        self._file.close()

    def _register_again(self, db: sqlite3.Connection) -> None:
        """A file made anew (or another process's) must know this store's pools."""
        for pool, ids in list(self._pools.items()):
            _register(db, pool, ids)

    def register(self, pool: str, key_ids: Sequence[str], gates: Mapping[str, str] | None = None) -> None:
        self._pools[pool] = list(key_ids)
        self._share_gates(key_ids, gates)
        self._file.run(lambda db: _register(db, pool, key_ids))

    def acquire(
        self,
        pool: str,
        now: float,
        exclude: Collection[str] = (),
        lease: Lease | None = None,
        model: str | None = None,
    ) -> str | None:
        skip = set(exclude)

        clamp = time.monotonic() >= self._next_clamp
        if clamp:
            self._next_clamp = time.monotonic() + 1.0

        def apply(db: sqlite3.Connection) -> str | None:
            if clamp:
                _clamp_rests(db, pool, now)
            row = db.execute("SELECT cursor, paused_until FROM pools WHERE pool = ?", (pool,)).fetchone()
            if row is None or row[1] > now or (model is not None and _paused_until(db, model_pool(pool, model)) > now):
                return None
            cursor = row[0]
            query = (
                f"SELECT fp, position FROM keys WHERE {_FREE} AND position {{}} ? "
                + (f"AND {_NOT_RESTING_FOR_MODEL} " if model is not None else "")
                + "ORDER BY position"
            )
            extra = (model, now) if model is not None else ()
            for sql, bound in ((query.format(">"), cursor), (query.format("<="), cursor)):
                for fp, position in db.execute(sql, (pool, now, bound, *extra)):
                    if fp in skip:
                        continue
                    if lease is not None and not self._lease(db, fp, lease, now):
                        continue
                    db.execute("UPDATE pools SET cursor = ? WHERE pool = ?", (position, pool))
                    db.execute("UPDATE keys SET last_used = ? WHERE fp = ?", (now, fp))
                    return fp
            return None

        return self._file.run(apply)

    def next_free(self, pool: str, now: float, model: str | None = None) -> tuple[str, float] | None:
        def read(db: sqlite3.Connection) -> tuple[str, float] | None:
            resumes = max(_paused_until(db, pool), _paused_until(db, model_pool(pool, model)) if model else 0.0)
            resumes = resumes if resumes > now else 0.0
            if (
                model is not None
                and db.execute(
                    "SELECT 1 FROM model_rests m JOIN keys k ON k.fp = m.fp WHERE k.pool = ? AND m.model = ? "
                    "AND m.until > ? LIMIT 1",
                    (pool, model, now),
                ).fetchone()
            ):
                soonest = db.execute(
                    "SELECT k.fp, max(k.cooldown_until, coalesce(m.until, 0), ?) AS free FROM keys k "
                    "LEFT JOIN model_rests m ON m.fp = k.fp AND m.model = ? "
                    "WHERE k.pool = ? AND k.disabled = 0 AND free > ? ORDER BY free LIMIT 1",
                    (resumes, model, pool, now),
                ).fetchone()
                return (soonest[0], soonest[1]) if soonest else None
            if resumes:
                free = db.execute(
                    "SELECT fp FROM keys WHERE pool = ? AND cooldown_until <= ? AND disabled = 0 "
                    "ORDER BY position LIMIT 1",
                    (pool, resumes),
                ).fetchone()
                if free:
                    return free[0], resumes
            soonest = db.execute(
                "SELECT fp, cooldown_until FROM keys WHERE pool = ? AND cooldown_until > ? AND disabled = 0 "
                "ORDER BY cooldown_until LIMIT 1",
                (pool, now),
            ).fetchone()
            return (soonest[0], max(soonest[1], resumes)) if soonest else None

        return self._file.run(read, write=False)

    def record_success(
        self, key_id: str, now: float, request: RequestRecord | None = None, finish: Finish | None = None
    ) -> int:
        def apply(db: sqlite3.Connection) -> int:
            self._end(db, key_id, finish, now, succeeded=True)
            row = db.execute("SELECT consecutive FROM keys WHERE fp = ?", (key_id,)).fetchone()
            db.execute(
                "UPDATE keys SET successes = successes + 1, consecutive = 0, last_used = ? WHERE fp = ?", (now, key_id)
            )
            self._remember(db, request)
            return int(row[0]) if row else 0

        return self._file.run(apply)

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
        def apply(db: sqlite3.Connection) -> int:
            self._end(db, key_id, finish, now, succeeded=False)
            db.execute(
                "UPDATE keys SET failures = failures + 1, consecutive = consecutive + ?, last_error = ?, last_used = ? "
                "WHERE fp = ?",
                (1 if streak else 0, error[:300], now, key_id),
            )
            self._remember(db, request)
            row = db.execute("SELECT consecutive FROM keys WHERE fp = ?", (key_id,)).fetchone()
            return int(row[0]) if row else 0

        return self._file.run(apply)

    def _remember(self, db: sqlite3.Connection, request: RequestRecord | None) -> None:
        """The request log and the hour's history, in the transaction that records the outcome."""
        if request is None:
            return
        hour = hour_of(request.at)
        prune = hour_of(request.at - self.history_days * 86400) if hour != self._pruned_hour else None
        sqlite_history.remember(db, request, self.log_size, prune)
        self._pruned_hour = hour

    def spend(self, key_id: str, now: float, limits: RequestLimits) -> tuple[bool, float | None]:
        def apply(db: sqlite3.Connection) -> tuple[bool, float | None]:
            row = db.execute("SELECT recent, day_ends_at, day_used FROM limit_usage WHERE fp = ?", (key_id,)).fetchone()
            usage = LimitUsage(json.loads(row[0]), row[1], row[2]) if row else LimitUsage([])
            verdict = usage.spend(now, limits)
            db.execute(
                "INSERT OR REPLACE INTO limit_usage (fp, recent, day_ends_at, day_used) VALUES (?, ?, ?, ?)",
                (key_id, json.dumps(usage.recent), usage.day_ends_at, usage.day_used),
            )
            return verdict

        return self._file.run(apply)

    def log_request(self, request: RequestRecord, finish: Finish | None = None) -> None:
        def apply(db: sqlite3.Connection) -> None:
            self._end(db, request.key, finish, request.at, succeeded=False)
            self._remember(db, request)

        self._file.run(apply)

    def end_lease(self, key_id: str, finish: Finish, now: float) -> None:
        self._file.run(lambda db: self._end(db, key_id, finish, now, succeeded=False))

    def renew_leases(self, leases: Mapping[str, Mapping[str, float]], now: float) -> None:
        rows = [(until, token) for ends in leases.values() for token, until in ends.items()]
        if rows:
            self._file.run(lambda db: db.executemany("UPDATE leases SET until = ? WHERE token = ?", rows))

    def busy_until(self, pool: str, now: float, part: str = "") -> tuple[str, float] | None:
        def read(db: sqlite3.Connection) -> tuple[str, float] | None:
            leased = {
                name for (name,) in db.execute("SELECT DISTINCT fp FROM leases WHERE until > ? AND counted", (now,))
            }
            leased |= {  # full by their counts, with no lease (`Gate.held_until`)
                name for (name,) in db.execute("SELECT fp FROM gates WHERE remaining = 0 AND window_ends > ?", (now,))
            }
            free = db.execute(
                f"SELECT fp FROM keys WHERE {_FREE} AND {_NOT_RESTING_FOR_MODEL}",
                (pool, now, part, now),  # (a key resting for the model is resting, not busy; "" names none)
            ).fetchall()
            best: tuple[str, float] | None = None
            for (fp,) in free:
                if (name := self.gate(fp, part)) not in leased:  # (leases are kept under gate names)
                    continue
                end = sqlite_gates.held_until(db, name, now)
                if end is not None and (best is None or end < best[1]):
                    best = (fp, end)
            return best

        return self._file.run(read, write=False)

    def probe_next(self, key_id: str, part: str = "") -> None:
        self._file.run(lambda db: sqlite_gates.probe(db, self.gate(key_id, part)))

    def _lease(self, db: sqlite3.Connection, fp: str, lease: Lease, now: float) -> bool:
        """Take a lease on `fp` if its gate (for the lease's part) allows one more request in flight (in the
        caller's transaction), remembering the ones this process took."""
        taken = sqlite_gates.take(db, self.gate(fp, lease.part), lease, now)
        if taken:
            with self._tokens_lock:
                self._tokens.add(lease.token)
        return taken is not False

    def _end(self, db: sqlite3.Connection, fp: str, finish: Finish | None, now: float, *, succeeded: bool) -> None:
        """End a lease (and clear probing on a success, learn a reported quota) in the caller's transaction."""
        if finish is not None:
            with self._tokens_lock:
                held = finish.token in self._tokens
                self._tokens.discard(finish.token)
            if held:
                db.execute("DELETE FROM leases WHERE token = ?", (finish.token,))
        if not succeeded and (finish is None or finish.remaining is None):
            return
        name = self.gate(fp, finish.part if finish is not None else "")
        sqlite_gates.learn(db, name, finish, now, succeeded=succeeded)

    def request_log(self, limit: int = 100) -> list[RequestRecord]:
        return self._file.run(lambda db: sqlite_history.request_log(db, min(limit, self.log_size)), write=False)

    def sent_times(self, keys: Collection[str], model: str | None = None) -> list[float]:
        return self._file.run(lambda db: sqlite_history.sent_times(db, keys, model, self.log_size), write=False)

    def note_sent(self, key_id: str, lease: Lease, keys: Collection[str], now: float) -> list[SentOut]:
        name, names = self.gate(key_id, lease.part), sorted({self.gate(fp, lease.part) for fp in keys})
        with self._tokens_lock:
            self._tokens.add(lease.token)  # (its row is ended with the lease)
        return self._file.run(lambda db: sqlite_gates.note_sent(db, name, lease, names, now))

    def sends_out(self, keys: Collection[str], part: str, now: float) -> list[float]:
        names = sorted({self.gate(fp, part) for fp in keys})
        return self._file.run(lambda db: sqlite_gates.sends_out(db, names, now), write=False)

    def history(self, since: float) -> list[HourOfKey]:
        return self._file.run(lambda db: sqlite_history.history(db, since), write=False)

    def cool(self, key_id: str, until: float, reason: str, now: float) -> None:
        until = bounded_until(until, now)
        self._file.run(
            lambda db: db.execute(
                "UPDATE keys SET cooldown_until = ?, reason = ?, rest = ? WHERE fp = ?",
                (until, str(reason), until - now, key_id),
            )
        )

    def pause(self, pool: str, until: float, reason: str, now: float) -> None:
        if until <= now:
            self._file.run(
                lambda db: db.execute(
                    "UPDATE pools SET paused_until = 0, pause_reason = ? WHERE pool = ? OR (pool >= ? AND pool < ?)",
                    (str(reason), pool, f"{pool}/", f"{pool}0"),  # its models' rows (`pool/model`, '0' > '/')
                )
            )
            return
        until = bounded_until(until, now)
        self._file.run(
            lambda db: db.execute(
                "INSERT INTO pools (pool, paused_until, pause_reason, pause_rest) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (pool) DO UPDATE SET paused_until = excluded.paused_until, "
                "pause_reason = excluded.pause_reason, pause_rest = excluded.pause_rest",
                (pool, until, str(reason), max(0.0, until - now)),
            )
        )

    def paused(self, pool: str, now: float) -> tuple[float, str] | None:
        row = self._file.run(
            lambda db: db.execute(
                "SELECT paused_until, pause_reason, pause_rest FROM pools WHERE pool = ?", (pool,)
            ).fetchone(),
            write=False,
        )
        until = min(row[0], now + row[2]) if row and row[2] > 0 else row[0] if row else 0.0
        if not row or until <= now:
            return None
        return float(until), row[1]

    def reset(self, key_ids: Iterable[str]) -> None:
        ids = [(fp,) for fp in key_ids]

        def apply(db: sqlite3.Connection) -> None:
            db.executemany("UPDATE keys SET cooldown_until = 0, reason = NULL, consecutive = 0 WHERE fp = ?", ids)
            db.executemany("DELETE FROM model_rests WHERE fp = ?", ids)

        self._file.run(apply)

    def cool_model(self, key_id: str, model: str, until: float, reason: str, now: float) -> None:
        until = bounded_until(until, now)
        self._file.run(
            lambda db: db.execute(
                "INSERT OR REPLACE INTO model_rests (fp, model, until, reason, rest) VALUES (?, ?, ?, ?, ?)",
                (key_id, model, until, str(reason), until - now),
            )
        )

    def model_rests(self, key_ids: Sequence[str], now: float) -> list[dict[str, tuple[float, str]]]:
        def read(db: sqlite3.Connection) -> list[dict[str, tuple[float, str]]]:
            found: dict[str, dict[str, tuple[float, str]]] = {}
            for start in range(0, len(key_ids), 500):
                chunk = key_ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for fp, model, until, reason, rest in db.execute(
                    f"SELECT fp, model, until, reason, rest FROM model_rests WHERE fp IN ({marks}) AND until > ?",
                    (*chunk, now),
                ):
                    until = min(until, now + rest) if rest > 0 else until  # never longer than its own length
                    found.setdefault(fp, {})[model] = (until, reason)
            return [found.get(fp, {}) for fp in key_ids]

        return self._file.run(read, write=False)

    def set_disabled(self, key_ids: Iterable[str], disabled: bool) -> None:
        ids = [(int(disabled), fp) for fp in key_ids]
        self._file.run(lambda db: db.executemany("UPDATE keys SET disabled = ? WHERE fp = ?", ids))

    def records(self, key_ids: Sequence[str]) -> list[KeyRecord]:
        def read(db: sqlite3.Connection) -> list[KeyRecord]:
            found: dict[str, KeyRecord] = {}
            for start in range(0, len(key_ids), 500):
                chunk = key_ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for row in db.execute(
                    "SELECT fp, cooldown_until, reason, consecutive, successes, failures, last_error, last_used, "
                    f"disabled, rest FROM keys WHERE fp IN ({marks})",
                    chunk,
                ):
                    found[row[0]] = KeyRecord(
                        cooldown_until=row[1],
                        reason=row[2] or None,
                        consecutive_failures=row[3],
                        successes=row[4],
                        failures=row[5],
                        last_error=row[6],
                        last_used=row[7],
                        disabled=bool(row[8]),
                        rest=row[9],
                    )
            return [found.get(fp, KeyRecord()) for fp in key_ids]

        return self._file.run(read, write=False)

    def change(self, name: str, change: Callable[[Document], Document]) -> Document:
        def apply(db: sqlite3.Connection) -> Document:
            row = db.execute("SELECT body FROM documents WHERE name = ?", (name,)).fetchone()
            document = change(json.loads(row[0]) if row else {})
            db.execute("INSERT OR REPLACE INTO documents (name, body) VALUES (?, ?)", (name, json.dumps(document)))
            return document

        return self._file.run(apply)

    def documents(self, names: Sequence[str]) -> list[Document]:
        def read(db: sqlite3.Connection) -> list[Document]:
            found: dict[str, Document] = {}
            for start in range(0, len(names), 500):
                chunk = names[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for name, body in db.execute(f"SELECT name, body FROM documents WHERE name IN ({marks})", chunk):
                    found[name] = json.loads(body)
            return [found.get(name, {}) for name in names]

        return self._file.run(read, write=False)

    def add_event(self, event: KeyEvent) -> None:
        self._file.run(lambda db: sqlite_history.add_event(db, event, self._max_events))

    def events(self, limit: int = 100) -> list[KeyEvent]:
        return self._file.run(lambda db: sqlite_history.events(db, limit), write=False)

    def clear(self) -> None:
        def apply(db: sqlite3.Connection) -> None:
            for table in TABLES:
                db.execute(f"DELETE FROM {table}")

        self._file.run(apply)


def _clamp_rests(db: sqlite3.Connection, pool: str, now: float) -> None:
    """No rest outlasts its own length from now: a rest ending further away than that was set by a clock ahead of
    this one (this machine's clock was stepped back since, or another process started on the other side of a
    step), and it ends `rest` seconds from now instead — never an hour later. A step forward ends rests early,
    at worst by their length."""
    db.execute(
        "UPDATE keys SET cooldown_until = ? + rest WHERE pool = ? AND rest > 0 AND cooldown_until > ? + rest",
        (now, pool, now),
    )
    db.execute(
        "UPDATE model_rests SET until = ? + rest WHERE rest > 0 AND until > ? + rest "
        "AND fp IN (SELECT fp FROM keys WHERE pool = ?)",
        (now, now, pool),
    )
    db.execute(
        "UPDATE pools SET paused_until = ? + pause_rest WHERE (pool = ? OR (pool >= ? AND pool < ?)) "
        "AND pause_rest > 0 AND paused_until > ? + pause_rest",
        (now, pool, f"{pool}/", f"{pool}0", now),  # the pool's own row and its models' (`pool/model`, '0' > '/')
    )


def _paused_until(db: sqlite3.Connection, pool: str) -> float:
    row = db.execute("SELECT paused_until FROM pools WHERE pool = ?", (pool,)).fetchone()
    return float(row[0]) if row else 0.0


def _register(db: sqlite3.Connection, pool: str, key_ids: Sequence[str]) -> None:
    db.execute("INSERT OR IGNORE INTO pools (pool) VALUES (?)", (pool,))
    start = db.execute("SELECT coalesce(max(position), -1) + 1 FROM keys WHERE pool = ?", (pool,)).fetchone()[0]
    known = {row[0] for row in db.execute("SELECT fp FROM keys WHERE pool = ?", (pool,))}
    fresh = [fp for fp in dict.fromkeys(key_ids) if fp not in known]
    db.executemany(
        "INSERT OR IGNORE INTO keys (fp, pool, position) VALUES (?, ?, ?)",
        [(fp, pool, start + i) for i, fp in enumerate(fresh)],
    )
