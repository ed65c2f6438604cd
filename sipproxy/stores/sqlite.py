"""The SQLite location store: one node whose bindings survive a restart.

SQLite calls block, so they run in one worker thread of a
C{twisted.enterprise.adbapi} connection pool (one connection: SQLite has
one writer anyway, and one thread keeps the operations in order); the
reactor only waits on Deferreds. Expiry times are absolute wall-clock
times, so a restart keeps the remaining lifetime of every binding.
"""
from __future__ import annotations

import sqlite3
from typing import Any, Iterable, Optional

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred, succeed

from twisted.python.failure import Failure
from zope.interface import implementer

from sipproxy.observe.logsafe import SafeLogger
from sipproxy.interfaces import ILocationListing, ILocationStore
from sipproxy.registrar.location import Binding, LocationError, StoreUnavailable, check_order

__all__ = ["SQLiteStore"]

log = SafeLogger()

SWEEP_INTERVAL = 60.0

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS bindings (
        aor TEXT NOT NULL,
        bkey TEXT NOT NULL,
        ckey TEXT NOT NULL,
        data TEXT NOT NULL,
        expires_at REAL NOT NULL,
        PRIMARY KEY (aor, bkey))""",
    "CREATE INDEX IF NOT EXISTS bindings_ckey ON bindings (ckey)",
    "CREATE INDEX IF NOT EXISTS bindings_expires ON bindings (expires_at)",
)


def _open(connection: Any) -> None:
    """Set up a new connection. Each PRAGMA's cursor is closed at once:
    SQLite refuses to commit while a statement is unfinished, and PyPy
    frees a dropped cursor only at its next collection."""
    for pragma in ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL", "PRAGMA busy_timeout=2000"):
        connection.execute(pragma).close()


@implementer(ILocationStore, ILocationListing)
class SQLiteStore:
    """Bindings in an SQLite file (created if missing).

    @param reactor: runs the worker thread's results back in.
    @param clock: C{seconds()} for expiry times (the reactor by default).
    """

    def __init__(self, path: str, reactor: Any = None, clock: Optional[Any] = None, retry_after: int = 5) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.path = path
        self.clock = clock if clock is not None else reactor
        self.retry_after = retry_after
        self._next_sweep = 0.0
        self._pool = adbapi.ConnectionPool(
            "sqlite3", path, check_same_thread=False, cp_min=1, cp_max=1, cp_openfun=_open,
            cp_reactor=reactor, cp_noisy=False,
        )
        self._ready = self._pool.runInteraction(self._create)
        self._ready.addErrback(lambda f: log.warn("cannot set up sqlite store {path}: {error}", path=path,
                                                  error=f.getErrorMessage()))

    @staticmethod
    def _create(txn: Any) -> None:
        for statement in _SCHEMA:
            txn.execute(statement)

    def _run(self, function: Any, *args: Any) -> Deferred:
        d = self._pool.runInteraction(function, *args)
        d.addErrback(self._failed)
        return d

    def _failed(self, failure: Failure) -> Failure:
        if failure.check(LocationError):
            return failure
        if failure.check(sqlite3.Error):
            raise StoreUnavailable(f"sqlite {self.path}: {failure.getErrorMessage()}", self.retry_after)
        return failure

    # reading ----------------------------------------------------------------
    @staticmethod
    def _rows(txn: Any, aor: str, now: float) -> dict[str, Binding]:
        txn.execute("SELECT bkey, data, expires_at FROM bindings WHERE aor = ? AND expires_at > ?", (aor, now))
        return {bkey: Binding.from_json(data, at - now) for bkey, data, at in txn.fetchall()}

    def lookup(self, aor: str) -> Deferred:
        now = self.clock.seconds()
        return self._run(lambda txn: list(self._rows(txn, aor, now).values()))

    def has_contact(self, contact_key: str) -> Deferred:
        now = self.clock.seconds()

        def query(txn: Any) -> bool:
            txn.execute("SELECT 1 FROM bindings WHERE ckey = ? AND expires_at > ? LIMIT 1", (contact_key, now))
            return txn.fetchone() is not None

        return self._run(query)

    def dump(self, limit: int) -> Deferred:
        now = self.clock.seconds()

        def query(txn: Any) -> list[tuple[str, list[Binding]]]:
            txn.execute("SELECT aor FROM bindings WHERE expires_at > ? GROUP BY aor ORDER BY aor LIMIT ?",
                        (now, limit))
            return [(aor, list(self._rows(txn, aor, now).values())) for (aor,) in txn.fetchall()]

        return self._run(query)

    def count(self) -> Deferred:
        now = self.clock.seconds()

        def query(txn: Any) -> tuple[int, int]:
            txn.execute("SELECT COUNT(DISTINCT aor), COUNT(*) FROM bindings WHERE expires_at > ?", (now,))
            aors, bindings = txn.fetchone()
            return int(aors), int(bindings)

        return self._run(query)

    # writing -----------------------------------------------------------------
    def update(self, aor: str, call_id: str, cseq: int, changes: Iterable[tuple[str, Optional[Binding], float]],
               remove_all: bool = False) -> Deferred:
        now = self.clock.seconds()
        changes = list(changes)
        sweep = now >= self._next_sweep
        if sweep:
            self._next_sweep = now + SWEEP_INTERVAL

        def apply(txn: Any) -> list[Binding]:
            # adbapi commits when this returns and rolls back when it raises
            current = self._rows(txn, aor, now)
            check_order(current, list(current) if remove_all else [k for k, _, _ in changes], call_id, cseq)
            if sweep:
                txn.execute("DELETE FROM bindings WHERE expires_at <= ?", (now,))
            else:
                txn.execute("DELETE FROM bindings WHERE aor = ? AND expires_at <= ?", (aor, now))
            if remove_all:
                txn.execute("DELETE FROM bindings WHERE aor = ?", (aor,))
                current.clear()
            for key, binding, ttl in changes:
                if ttl <= 0 or binding is None:
                    txn.execute("DELETE FROM bindings WHERE aor = ? AND bkey = ?", (aor, key))
                    current.pop(key, None)
                    continue
                txn.execute(
                    "INSERT OR REPLACE INTO bindings (aor, bkey, ckey, data, expires_at) VALUES (?, ?, ?, ?, ?)",
                    (aor, key, binding.contact_key, binding.to_json(), now + ttl),
                )
                current[key] = binding.with_expires(ttl)
            return list(current.values())

        return self._run(apply)

    def close(self) -> Deferred:
        self._pool.close()
        return succeed(None)
