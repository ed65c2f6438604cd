"""A location store that times its inner store (an edge module).

Wrapped around whatever L{sipproxy.stores.open_store} made when metrics
are on, so every store (memory, SQLite, Redis) reports the same things the
same way: how long each operation took, in histogram buckets, and how many
failed (unavailable: the 503 case; other). The counts are plain ints read
by L{sipproxy.app.metrics} at scrape time.
"""
from __future__ import annotations

import bisect
import time
from typing import Any, Callable, Iterable, Optional

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from zope.interface import implementer

from sipproxy.interfaces import ILocationStore
from sipproxy.registrar.location import Binding, OutOfOrder, StoreUnavailable

__all__ = ["TimedStore", "LATENCY_BUCKETS", "OPERATIONS"]

#: Upper bounds (seconds) of the latency buckets: a memory store answers
#: in microseconds, SQLite in a thread in about a millisecond, Redis over
#: a network in a few; a store near its 503 in seconds.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
OPERATIONS = ("lookup", "update", "has_contact")


class _Timing:
    """Counts of one operation: per bucket (the last is +Inf), sum, errors."""

    __slots__ = ("buckets", "sum", "unavailable", "failed")

    def __init__(self) -> None:
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.sum = 0.0
        self.unavailable = 0
        self.failed = 0


@implementer(ILocationStore)
class TimedStore:
    """An L{ILocationStore} passing every call to C{inner} and timing it.

    @param timer: seconds, monotonic (replaceable in tests).
    @ivar timings: operation name to its counts.
    """

    def __init__(self, inner: ILocationStore, timer: Callable[[], float] = time.monotonic) -> None:
        self.inner = inner
        self.timer = timer
        self.timings = {name: _Timing() for name in OPERATIONS}

    def __getattr__(self, name: str) -> Any:
        # what the inner store has beyond the interface (retry_after, ...)
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def _timed(self, name: str, d: Deferred) -> Deferred:
        timing = self.timings[name]
        started = self.timer()

        def done(result: Any) -> Any:
            elapsed = self.timer() - started
            timing.buckets[bisect.bisect_left(LATENCY_BUCKETS, elapsed)] += 1
            timing.sum += elapsed
            if isinstance(result, Failure):
                if result.check(StoreUnavailable):
                    timing.unavailable += 1
                elif not result.check(OutOfOrder):  # an old REGISTER: the store did its job
                    timing.failed += 1
            return result

        return d.addBoth(done)

    def lookup(self, aor: str) -> Deferred:
        return self._timed("lookup", self.inner.lookup(aor))

    def update(self, aor: str, call_id: str, cseq: int, changes: Iterable[tuple[str, Optional[Binding], float]],
               remove_all: bool = False) -> Deferred:
        return self._timed("update", self.inner.update(aor, call_id, cseq, changes, remove_all=remove_all))

    def has_contact(self, contact_key: str) -> Deferred:
        return self._timed("has_contact", self.inner.has_contact(contact_key))

    def close(self) -> Any:
        return self.inner.close()
