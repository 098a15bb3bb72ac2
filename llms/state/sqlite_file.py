"""The SQLite store's file: one connection per thread, one transaction per operation, and the file watched.

Apart from the store's queries because this is what makes one file safe to share between every process of a
machine, whatever the operations are: WAL mode and the schema on open (`llms.state.sqlite_schema`), a busy
timeout and one writer per process so that concurrent writers wait their turn instead of failing, a file deleted
or replaced under a running process noticed and reopened, closing only once no operation runs, and SQLite's
errors in an operator's words.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from llms.state.sqlite_schema import migrate
from llms.state.store import StateError

T = TypeVar("T")
log = logging.getLogger("llms.state")


class SQLiteFile:
    """The file at `path`, opened on first use (a broken one fails that call, not the constructor).
    `on_reopen` is called with the first connection to a file found deleted or replaced and opened anew, so the
    store can declare its pools in it again."""

    def __init__(
        self, path: Path, busy_timeout: float, on_reopen: Callable[[sqlite3.Connection], None] | None = None
    ) -> None:
        self.path = path
        self.reopened: str | None = None
        """When the file was last found deleted or replaced and reopened ("HH:MM:SS"), for the status page."""
        self._busy_timeout = busy_timeout
        self._on_reopen = on_reopen
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._writer = threading.Lock()
        self._lock = threading.Lock()
        self._in_use = threading.Condition()  # operations running now, so `close` waits for them
        self._users = 0
        self._closed = False
        self._generation = 0  # moves on when the file at `path` is no longer the one the connections have open
        self._identity: tuple[int, int] | None = None  # (device, inode) of the file the connections have open
        self._next_look = 0.0

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
            if generation and self._on_reopen is not None:  # a file made anew (or another's) must know the pools
                self._on_reopen(db)
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
                self.reopened = time.strftime("%H:%M:%S")
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

    def run(self, operation: Callable[[sqlite3.Connection], T], *, write: bool = True) -> T:
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


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


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
