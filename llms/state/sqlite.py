"""`sqlite://PATH`: key state in one SQLite file, shared safely by every process on one machine (the default).

Why SQLite: it is in the standard library, survives restarts, and its write lock makes each operation atomic
across processes — the same guarantee the Redis store gets from Lua. WAL mode lets readers (the status page)
run beside writers; `synchronous=NORMAL` skips the fsync per commit (a power cut may lose the last moments of
cooldowns, never corrupt the file); a busy timeout makes concurrent writers wait their turn instead of failing.
One connection per thread. The file is created readable by its owner only (0600); it holds fingerprints of
keys, never keys.

`sqlite://` is followed by the file's path: `sqlite:///var/lib/llm/state.db` (absolute), `sqlite://state.db`
(relative to the working directory); `?timeout=SECONDS` sets the busy timeout (default 5 s).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from llms.state.base import (
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
    LimitUsage,
    RequestLimits,
    RequestRecord,
    StateError,
    StateStore,
    StoreHealth,
    bounded_until,
    hour_of,
    latency_bucket,
    model_pool,
    outcome_columns,
)
from llms.state.sqlite_schema import TABLES, migrate

T = TypeVar("T")
log = logging.getLogger("llms.state")


class SQLiteStore(StateStore):
    SCHEMES = ("sqlite",)
    SHARED = True  # other processes share the file, and a file can fail (locked, full, read-only)

    def __init__(self, path: str | os.PathLike[str], max_events: int = 500, busy_timeout: float = 5.0) -> None:
        self.path = Path(path).expanduser()
        self._max_events = max_events
        self._busy_timeout = busy_timeout
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._pruned_hour = -1.0
        self._tokens: set[str] = set()
        self._writer = threading.Lock()  # leases this process took, so ending one costs nothing when none was
        self._lock = threading.Lock()  # the file is opened on first use: a broken one fails that call, not this one
        self._in_use = threading.Condition()  # operations running now, so `close` waits for them
        self._users = 0
        self._closed = False
        self._pools: dict[str, list[str]] = {}  # registered here, to register again in a file made anew
        self._generation = 0  # moves on when the file at `path` is no longer the one the connections have open
        self._identity: tuple[int, int] | None = None  # (device, inode) of the file the connections have open
        self._next_look = 0.0
        self._next_clamp = 0.0
        self._reopened: str | None = None

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

    # --- connections -------------------------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is not None and self._local.generation != self._generation:
            db = None  # closed when the file was found deleted or replaced: it was a connection to the old one
        if db is None:
            generation = self._generation
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not self.path.exists():
                for leftover in (f"{self.path}-wal", f"{self.path}-shm"):  # a journal without its file is garbage,
                    with contextlib.suppress(FileNotFoundError):  # and would be replayed into the new one
                        os.unlink(leftover)
                os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
            db = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False)
            db.execute(f"PRAGMA busy_timeout={int(self._busy_timeout * 1000)}")
            self._set_up(db)
            if generation:  # a file made anew (or another process's) must know this store's pools
                for pool, ids in list(self._pools.items()):
                    _register(db, pool, ids)
            self._local.db, self._local.generation = db, generation
            with self._lock:
                self._connections.append(db)
                if self._identity is None:
                    self._identity = _identity(self.path)
        return db

    def _look_at_file(self) -> None:
        """Once a second: is the file at `path` still the one the connections have open? A file deleted (or
        replaced) under a running process is still readable through its open handles, so without this look the
        process would stay "healthy" on a file no other process sees, while a new process starts a new one. When
        it is not, every connection is closed once no operation runs, and the next operation opens the file at
        `path` (made anew, with this store's pools, if nobody has yet)."""
        now = time.monotonic()
        if now < self._next_look:
            return
        self._next_look = now + 1.0
        seen = _identity(self.path)
        if self._identity is None or seen == self._identity:
            return
        with self._in_use:
            self._in_use.wait_for(lambda: self._users == 0, timeout=self._busy_timeout + 5)
            with self._lock:
                if self._identity is None or seen == self._identity:
                    return  # another thread reopened it meanwhile
                stale, self._connections = self._connections, []
                self._identity = None
                self._generation += 1
                self._reopened = time.strftime("%H:%M:%S")
            for db in stale:  # SQLite neither checkpoints into nor deletes the journal of a file that moved
                with contextlib.suppress(sqlite3.Error):
                    db.close()
        what = "deleted" if seen is None else "replaced"
        log.warning(
            "key state file %s was %s under this process; reopening it (what only the old file held is lost)",
            self.path,
            what,
        )

    def _set_up(self, db: sqlite3.Connection) -> None:
        """WAL mode and the schema. Switching the journal mode can answer "locked" at once, without waiting for
        the busy timeout, when several processes open a new file together: so it is retried within that timeout."""
        deadline = time.monotonic() + self._busy_timeout
        while True:
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                migrate(db)
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def _run(self, operation: Callable[[sqlite3.Connection], T], *, write: bool = True) -> T:
        """One operation in one transaction (`BEGIN IMMEDIATE` takes the write lock up front, so two processes
        never interleave a read-modify-write).

        A process's threads write one at a time: SQLite's busy handler is not a fair queue, and with a hundred
        threads polling for the lock one of them can lose for longer than the busy timeout. With this lock only
        one thread per process contends, and SQLite arbitrates between processes."""
        self._look_at_file()
        with self._in_use:
            if self._closed:
                raise StateError(f"sqlite at {self.path}: the store was closed", "closed")
            self._users += 1
        try:
            db = self._connection()
            if not write:
                return operation(db)
            with self._writer:
                db.execute("BEGIN IMMEDIATE")
                try:
                    result = operation(db)
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
                return result
        except (sqlite3.Error, OSError) as exc:
            raise StateError(f"sqlite at {self.path}: {describe(exc)}", describe(exc)) from exc
        finally:
            with self._in_use:
                self._users -= 1
                self._in_use.notify_all()

    def health(self) -> StoreHealth:
        try:
            self._run(lambda db: db.execute("SELECT 1 FROM keys LIMIT 1").fetchone(), write=False)
        except StateError as exc:
            return StoreHealth("sqlite", str(self.path), False, exc.reason)
        note = f"the file was deleted or replaced under this process and reopened at {self._reopened}"
        return StoreHealth("sqlite", str(self.path), True, note if self._reopened else "")

    def close(self) -> None:
        """Close every connection once no operation is using one (another thread may be mid-call: closing a
        connection under a running statement crashes the interpreter); later calls fail as a closed store."""
        with self._in_use:
            self._closed = True
            self._in_use.wait_for(lambda: self._users == 0, timeout=self._busy_timeout + 5)
        with self._lock:
            connections, self._connections = self._connections, []
        for db in connections:
            with contextlib.suppress(sqlite3.Error):
                db.close()
        self._local = threading.local()

    # --- the contract ------------------------------------------------------------------------------------------

    def register(self, pool: str, key_ids: Sequence[str], gates: Mapping[str, str] | None = None) -> None:
        self._pools[pool] = list(key_ids)
        self._share_gates(key_ids, gates)
        self._run(lambda db: _register(db, pool, key_ids))

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
                "SELECT fp, position FROM keys WHERE pool = ? AND cooldown_until <= ? AND disabled = 0 "
                "AND position {} ? "
                + (
                    "AND NOT EXISTS (SELECT 1 FROM model_rests m WHERE m.fp = keys.fp AND m.model = ? AND m.until > ?) "
                    if model is not None
                    else ""
                )
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

        return self._run(apply)

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

        return self._run(read, write=False)

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

        return self._run(apply)

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

        return self._run(apply)

    def _remember(self, db: sqlite3.Connection, request: RequestRecord | None) -> None:
        """The request log and the hour's history, in the transaction that records the outcome."""
        if request is None:
            return
        r = request
        cursor = db.execute(
            "INSERT INTO requests (at, provider, model, key, key_id, outcome, status, latency, tokens_in, tokens_out) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (r.at, r.provider, r.model, r.key, r.key_id, r.outcome, r.status, r.latency, r.tokens_in, r.tokens_out),
        )
        if (cursor.lastrowid or 0) % 100 == 0:  # trim in batches: one indexed delete per hundred requests
            db.execute("DELETE FROM requests WHERE id <= ?", ((cursor.lastrowid or 0) - self.log_size,))
        ok, limited, failed = outcome_columns(r)
        bucket = f"b{latency_bucket(r.latency)}"
        hour = hour_of(r.at)
        db.execute(
            "INSERT INTO history (hour, key, provider, key_id, requests, successes, rate_limits, errors, tokens_in, "
            f"tokens_out, latency_total, {bucket}) VALUES (?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?, 1) "
            "ON CONFLICT (hour, key) DO UPDATE SET key_id = excluded.key_id, requests = requests + 1, "
            "successes = successes + excluded.successes, rate_limits = rate_limits + excluded.rate_limits, "
            "errors = errors + excluded.errors, tokens_in = tokens_in + excluded.tokens_in, "
            "tokens_out = tokens_out + excluded.tokens_out, latency_total = latency_total + excluded.latency_total, "
            f"{bucket} = {bucket} + 1",
            (hour, r.key, r.provider, r.key_id, ok, limited, failed, r.tokens_in, r.tokens_out, r.latency),
        )
        if hour != self._pruned_hour:
            db.execute("DELETE FROM history WHERE hour < ?", (hour_of(r.at - self.history_days * 86400),))
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

        return self._run(apply)

    def log_request(self, request: RequestRecord, finish: Finish | None = None) -> None:
        def apply(db: sqlite3.Connection) -> None:
            self._end(db, request.key, finish, request.at, succeeded=False)
            self._remember(db, request)

        self._run(apply)

    def end_lease(self, key_id: str, finish: Finish, now: float) -> None:
        self._run(lambda db: self._end(db, key_id, finish, now, succeeded=False))

    def renew_leases(self, leases: Mapping[str, Mapping[str, float]], now: float) -> None:
        rows = [(until, token) for ends in leases.values() for token, until in ends.items()]
        if rows:
            self._run(lambda db: db.executemany("UPDATE leases SET until = ? WHERE token = ?", rows))

    def busy_until(self, pool: str, now: float, part: str = "") -> tuple[str, float] | None:
        def read(db: sqlite3.Connection) -> tuple[str, float] | None:
            leased = {name for (name,) in db.execute("SELECT DISTINCT fp FROM leases WHERE until > ?", (now,))}
            free = db.execute(
                "SELECT fp FROM keys WHERE pool = ? AND cooldown_until <= ? AND disabled = 0", (pool, now)
            ).fetchall()
            best: tuple[str, float] | None = None
            for (fp,) in free:
                if (name := self.gate(fp, part)) not in leased:  # (leases are kept under gate names)
                    continue
                gate = _gate(db, name)
                gate.leases = dict(
                    db.execute("SELECT token, until FROM leases WHERE fp = ? AND until > ?", (name, now))
                )
                end = gate.held_until(now)
                if end is not None and (best is None or end < best[1]):
                    best = (fp, end)
            return best

        return self._run(read, write=False)

    def probe_next(self, key_id: str, part: str = "") -> None:
        name = self.gate(key_id, part)
        self._run(
            lambda db: db.execute(
                "INSERT INTO gates (fp, probing) VALUES (?, 1) ON CONFLICT (fp) DO UPDATE SET probing = 1", (name,)
            )
        )

    def _lease(self, db: sqlite3.Connection, fp: str, lease: Lease, now: float) -> bool:
        """Take a lease on `fp` if its gate (for the lease's part) allows one more request in flight (in the
        caller's transaction). Gates and leases are kept under `StateStore.gate`."""
        name = self.gate(fp, lease.part)
        gate = _gate(db, name)
        if not gate.tracks(now):
            return True
        db.execute("DELETE FROM leases WHERE fp = ? AND until <= ?", (name, now))
        live = db.execute("SELECT count(*) FROM leases WHERE fp = ?", (name,)).fetchone()[0]
        if live >= gate.allowed(now):
            return False
        db.execute("INSERT INTO leases (token, fp, until) VALUES (?, ?, ?)", (lease.token, name, lease.until))
        with self._lock:
            self._tokens.add(lease.token)
        return True

    def _end(self, db: sqlite3.Connection, fp: str, finish: Finish | None, now: float, *, succeeded: bool) -> None:
        """End a lease (and clear probing on a success, learn a reported quota) in the caller's transaction."""
        if finish is not None:
            with self._lock:
                held = finish.token in self._tokens
                self._tokens.discard(finish.token)
            if held:
                db.execute("DELETE FROM leases WHERE token = ?", (finish.token,))
        if not succeeded and (finish is None or finish.remaining is None):
            return
        fp = self.gate(fp, finish.part if finish is not None else "")
        gate = _gate(db, fp)
        before = (gate.remaining, gate.window_ends, gate.probing, gate.window_began)
        if succeeded:
            gate.probing = False
        if finish is not None:
            gate.learn(finish, now)
        if (gate.remaining, gate.window_ends, gate.probing, gate.window_began) != before:
            db.execute(
                "INSERT OR REPLACE INTO gates (fp, remaining, window_ends, probing, window_began) "
                "VALUES (?, ?, ?, ?, ?)",
                (fp, gate.remaining, gate.window_ends, int(gate.probing), gate.window_began),
            )

    def request_log(self, limit: int = 100) -> list[RequestRecord]:
        rows = self._run(
            lambda db: db.execute(
                "SELECT at, provider, model, key, key_id, outcome, status, latency, tokens_in, tokens_out "
                "FROM requests ORDER BY id DESC LIMIT ?",
                (min(limit, self.log_size),),
            ).fetchall(),
            write=False,
        )
        return [RequestRecord(*row) for row in rows]

    def history(self, since: float) -> list[HourOfKey]:
        buckets = ", ".join(f"b{i}" for i in range(len(LATENCY_BOUNDS) + 1))
        rows = self._run(
            lambda db: db.execute(
                "SELECT hour, key, provider, key_id, requests, successes, rate_limits, errors, tokens_in, tokens_out, "
                f"latency_total, {buckets} FROM history WHERE hour >= ? ORDER BY hour",
                (hour_of(since),),
            ).fetchall(),
            write=False,
        )
        return [HourOfKey(*row[:11], latency_buckets=tuple(row[11:])) for row in rows]

    def cool(self, key_id: str, until: float, reason: CooldownReason, now: float) -> None:
        until = bounded_until(until, now)
        self._run(
            lambda db: db.execute(
                "UPDATE keys SET cooldown_until = ?, reason = ?, rest = ? WHERE fp = ?",
                (until, reason.value, until - now, key_id),
            )
        )

    def pause(self, pool: str, until: float, reason: CooldownReason, now: float) -> None:
        if until <= now:
            self._run(
                lambda db: db.execute(
                    "UPDATE pools SET paused_until = 0, pause_reason = ? WHERE pool = ? OR (pool >= ? AND pool < ?)",
                    (reason.value, pool, f"{pool}/", f"{pool}0"),  # its models' rows (`pool/model`, '0' > '/')
                )
            )
            return
        until = bounded_until(until, now)
        self._run(
            lambda db: db.execute(
                "INSERT INTO pools (pool, paused_until, pause_reason, pause_rest) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (pool) DO UPDATE SET paused_until = excluded.paused_until, "
                "pause_reason = excluded.pause_reason, pause_rest = excluded.pause_rest",
                (pool, until, reason.value, max(0.0, until - now)),
            )
        )

    def paused(self, pool: str, now: float) -> tuple[float, CooldownReason] | None:
        row = self._run(
            lambda db: db.execute(
                "SELECT paused_until, pause_reason, pause_rest FROM pools WHERE pool = ?", (pool,)
            ).fetchone(),
            write=False,
        )
        until = min(row[0], now + row[2]) if row and row[2] > 0 else row[0] if row else 0.0
        if not row or until <= now:
            return None
        return float(until), CooldownReason(row[1])

    def reset(self, key_ids: Iterable[str]) -> None:
        ids = [(fp,) for fp in key_ids]

        def apply(db: sqlite3.Connection) -> None:
            db.executemany("UPDATE keys SET cooldown_until = 0, reason = NULL, consecutive = 0 WHERE fp = ?", ids)
            db.executemany("DELETE FROM model_rests WHERE fp = ?", ids)

        self._run(apply)

    def cool_model(self, key_id: str, model: str, until: float, reason: CooldownReason, now: float) -> None:
        until = bounded_until(until, now)
        self._run(
            lambda db: db.execute(
                "INSERT OR REPLACE INTO model_rests (fp, model, until, reason, rest) VALUES (?, ?, ?, ?, ?)",
                (key_id, model, until, reason.value, until - now),
            )
        )

    def model_rests(self, key_ids: Sequence[str], now: float) -> list[dict[str, tuple[float, CooldownReason]]]:
        def read(db: sqlite3.Connection) -> list[dict[str, tuple[float, CooldownReason]]]:
            found: dict[str, dict[str, tuple[float, CooldownReason]]] = {}
            for start in range(0, len(key_ids), 500):
                chunk = key_ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for fp, model, until, reason, rest in db.execute(
                    f"SELECT fp, model, until, reason, rest FROM model_rests WHERE fp IN ({marks}) AND until > ?",
                    (*chunk, now),
                ):
                    until = min(until, now + rest) if rest > 0 else until  # never longer than its own length
                    found.setdefault(fp, {})[model] = (until, CooldownReason(reason))
            return [found.get(fp, {}) for fp in key_ids]

        return self._run(read, write=False)

    def set_disabled(self, key_ids: Iterable[str], disabled: bool) -> None:
        ids = [(int(disabled), fp) for fp in key_ids]
        self._run(lambda db: db.executemany("UPDATE keys SET disabled = ? WHERE fp = ?", ids))

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
                        reason=CooldownReason(row[2]) if row[2] else None,
                        consecutive_failures=row[3],
                        successes=row[4],
                        failures=row[5],
                        last_error=row[6],
                        last_used=row[7],
                        disabled=bool(row[8]),
                        rest=row[9],
                    )
            return [found.get(fp, KeyRecord()) for fp in key_ids]

        return self._run(read, write=False)

    def change(self, name: str, change: Callable[[Document], Document]) -> Document:
        def apply(db: sqlite3.Connection) -> Document:
            row = db.execute("SELECT body FROM documents WHERE name = ?", (name,)).fetchone()
            document = change(json.loads(row[0]) if row else {})
            db.execute("INSERT OR REPLACE INTO documents (name, body) VALUES (?, ?)", (name, json.dumps(document)))
            return document

        return self._run(apply)

    def documents(self, names: Sequence[str]) -> list[Document]:
        def read(db: sqlite3.Connection) -> list[Document]:
            found: dict[str, Document] = {}
            for start in range(0, len(names), 500):
                chunk = names[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for name, body in db.execute(f"SELECT name, body FROM documents WHERE name IN ({marks})", chunk):
                    found[name] = json.loads(body)
            return [found.get(name, {}) for name in names]

        return self._run(read, write=False)

    def add_event(self, event: KeyEvent) -> None:
        def apply(db: sqlite3.Connection) -> None:
            cursor = db.execute(
                "INSERT INTO events (at, key_id, kind, detail) VALUES (?, ?, ?, ?)",
                (event.at, event.key_id, event.kind.value, event.detail),
            )
            db.execute("DELETE FROM events WHERE id <= ?", ((cursor.lastrowid or 0) - self._max_events,))

        self._run(apply)

    def events(self, limit: int = 100) -> list[KeyEvent]:
        rows = self._run(
            lambda db: db.execute(
                "SELECT at, key_id, kind, detail FROM events ORDER BY id DESC LIMIT ?", (limit,)
            ).fetchall(),
            write=False,
        )
        return [KeyEvent(at, key_id, EventKind(kind), detail) for at, key_id, kind, detail in rows]

    def clear(self) -> None:
        def apply(db: sqlite3.Connection) -> None:
            for table in TABLES:
                db.execute(f"DELETE FROM {table}")

        self._run(apply)


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


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def _gate(db: sqlite3.Connection, fp: str) -> Gate:
    row = db.execute("SELECT remaining, window_ends, probing, window_began FROM gates WHERE fp = ?", (fp,)).fetchone()
    return Gate({}, row[0], row[1], bool(row[2]), row[3]) if row else Gate({})


def describe(exc: BaseException) -> str:
    """What an operator should read on the status page for a SQLite error."""
    text = str(exc)
    if "locked" in text or "busy" in text:
        return f"locked by another process for longer than the busy timeout ({text})"
    if "disk is full" in text or "database or disk is full" in text:
        return "disk full"
    if "readonly" in text or "read-only" in text or isinstance(exc, PermissionError):
        return f"read-only ({text})"
    if "malformed" in text or "not a database" in text:
        return f"corrupt file ({text})"
    return f"{type(exc).__name__}: {text[:200]}"
