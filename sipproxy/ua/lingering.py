"""Finished transactions, kept only to absorb retransmissions.

A transaction that has sent or received its final answer lives on for a
while (RFC 3261 17: Timers J and K; RFC 6026: Timer L) only to answer a
retransmitted request with the same response, or to swallow a repeated
one. Keeping the whole transaction object for those 32 s keeps its
messages, machine, timers and the call they belong to: some seventy
objects per call that the garbage collector walks again in every full
collection, and at several hundred calls per second such a collection
stops the reactor for longer than T1, so peers retransmit.

A L{LingerTable} keeps what is needed instead: a key and a small record
of plain values (the response as bytes), and expires them in batches on
one reactor timer, rounded up to L{GRAIN} seconds as a timer wheel would.
Keys and records that are tuples of strings, bytes and numbers cost
full collections nothing: CPython's collector stops tracking such a
tuple, and then the table's own entry holding it, within a collection
or two.
"""
from __future__ import annotations

import math
from collections import deque
from typing import Hashable, Optional

from twisted.internet.interfaces import IDelayedCall, IReactorTime

#: Expiry times are rounded up to a multiple of this many seconds: the
#: records falling due in the same half second go on one wake-up. A
#: record lives a little longer than its timer, which only absorbs more.
GRAIN = 0.5


class LingerTable:
    """Records by key, each dropped C{delay} seconds after it was added.

    @param clock: the reactor (C{IReactorTime}) the one expiry timer runs on.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self._records: dict[Hashable, tuple[float, object]] = {}
        #: one queue per delay: each in the order its records were added,
        #: so their deadlines come in order too
        self._queues: dict[float, deque[tuple[float, Hashable]]] = {}
        self._timer: Optional[IDelayedCall] = None
        self._timer_at = math.inf

    def __len__(self) -> int:
        return len(self._records)

    def get(self, key: Hashable) -> Optional[object]:
        entry = self._records.get(key)
        return None if entry is None else entry[1]

    def add(self, key: Hashable, record: object, delay: float) -> None:
        """Keep C{record} under C{key} for C{delay} seconds (replacing
        any record the key had)."""
        deadline = self.clock.seconds() + delay
        self._records[key] = (deadline, record)
        queue = self._queues.get(delay)
        if queue is None:
            queue = self._queues[delay] = deque()
        queue.append((deadline, key))
        if deadline < self._timer_at:
            self._arm(deadline)

    def update(self, key: Hashable, record: object) -> None:
        """Give C{key} a new record for the rest of its time; nothing when
        it has none (any more)."""
        entry = self._records.get(key)
        if entry is not None:
            self._records[key] = (entry[0], record)

    def pop(self, key: Hashable) -> Optional[object]:
        """Drop C{key}'s record now (its queue entry is skipped later)."""
        entry = self._records.pop(key, None)
        return None if entry is None else entry[1]

    def clear(self) -> None:
        """Drop every record and stop the timer (the user agent closes)."""
        self._records.clear()
        self._queues.clear()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._timer_at = math.inf

    def _arm(self, deadline: float) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        at = math.ceil(deadline / GRAIN) * GRAIN
        self._timer_at = at
        self._timer = self.clock.callLater(max(0.0, at - self.clock.seconds()), self._expire)

    def _expire(self) -> None:
        self._timer = None
        self._timer_at = math.inf
        now = self.clock.seconds()
        records = self._records
        earliest = math.inf
        for delay, queue in list(self._queues.items()):
            while queue and queue[0][0] <= now:
                deadline, key = queue.popleft()
                entry = records.get(key)
                if entry is not None and entry[0] == deadline:  # not replaced by a later add
                    del records[key]
            if queue:
                earliest = min(earliest, queue[0][0])
            else:
                del self._queues[delay]
        if earliest < math.inf:
            self._arm(earliest)
