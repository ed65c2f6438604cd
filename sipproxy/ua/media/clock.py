"""The send deadlines of every RTP stream on one reactor, kept on one
reactor timer, and a way for the receive path to send what fell due.

Why one clock for all streams: Twisted handles every readable socket of
a poll before it runs the timers that fell due meanwhile. With many calls
the far ends' packets arrive together, and reading a burst of them takes
milliseconds, so a stream whose send deadline falls inside the burst
used to wait for its end: at 62 calls that was most of the lateness on
the wire. Streams read by the reactor call L{MediaClock.run_due} before
each datagram, which sends whatever fell due first; a packet then waits
for one datagram's work at most, not for a burst's. Keeping all deadlines
in one heap also replaces a reactor C{DelayedCall} per packet with one
per wake-up.

Entries due within L{EPSILON} of now count as due, as in
L{sipproxy.ua.media.pacing.Pacer.due}: float time near the epoch's 1.7e9
seconds has a resolution of a quarter microsecond.
"""
from __future__ import annotations

import heapq
import itertools
import weakref
from typing import Callable, Optional

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from sipproxy.observe.logsafe import SafeLogger

__all__ = ["MediaClock", "Due", "clock_for", "EPSILON"]

log = SafeLogger()

#: a deadline this close counts as reached (the Pacer's tolerance)
EPSILON = 1e-6

_clocks: "weakref.WeakKeyDictionary[IReactorTime, MediaClock]" = weakref.WeakKeyDictionary()


class Due:
    """One scheduled call, cancellable, shaped like the part of
    C{IDelayedCall} the streams use (C{active}, C{cancel})."""

    __slots__ = ("function", "clock")

    def __init__(self, clock: "MediaClock", function: Callable[[], object]) -> None:
        self.clock = clock
        self.function: Optional[Callable[[], object]] = function

    def active(self) -> bool:
        return self.function is not None

    def cancel(self) -> None:
        if self.function is not None:
            self.function = None
            self.clock._forget()


class MediaClock:
    """Calls at absolute times of C{reactor.seconds()}, on one reactor
    timer armed for the earliest of them."""

    def __init__(self, reactor: IReactorTime) -> None:
        self.reactor = reactor
        self._heap: list[tuple[float, int, Due]] = []
        self._order = itertools.count()
        self._timer: Optional[IDelayedCall] = None
        self._timer_at = float("inf")
        self._firing = False  # the timer's own run re-arms once, at its end
        self._live = 0  # entries neither run nor cancelled

    def __len__(self) -> int:
        """Scheduled entries, cancelled ones included until they are dropped."""
        return len(self._heap)

    def call_at(self, when: float, function: Callable[[], object]) -> Due:
        """Call C{function} once C{reactor.seconds()} reaches C{when}."""
        due = Due(self, function)
        heapq.heappush(self._heap, (when, next(self._order), due))
        self._live += 1
        if not self._firing:
            timer = self._timer
            if timer is None or when < self._timer_at or not timer.active():
                self._arm(self._heap[0][0])  # the earliest: the timer may have been cancelled from outside
        return due

    def _forget(self) -> None:
        """An entry was cancelled: with none left, the reactor timer goes
        too (a stopped call leaves no timer behind)."""
        self._live -= 1
        if not self._live:
            self._heap.clear()
            self._disarm()

    def run_due(self) -> None:
        """Run every call that is due, in the order of their times (for the
        same time, in the order they were scheduled)."""
        heap = self._heap
        if not heap:
            return
        now = self.reactor.seconds() + EPSILON
        while heap and heap[0][0] <= now:
            due = heapq.heappop(heap)[2]
            function = due.function
            if function is not None:
                due.function = None
                self._live -= 1
                try:
                    function()
                except Exception:  # one stream's fault must not hold the others' packets
                    log.failure("media clock: a scheduled call failed")

    def _fired(self) -> None:
        self._timer = None
        self._timer_at = float("inf")
        self._firing = True
        try:
            self.run_due()
        finally:
            self._firing = False
            heap = self._heap
            while heap and heap[0][2].function is None:  # cancelled: nothing to wake up for
                heapq.heappop(heap)
            if heap:
                self._arm(heap[0][0])

    def _disarm(self) -> None:
        timer, self._timer = self._timer, None
        self._timer_at = float("inf")
        if timer is not None and timer.active():
            timer.cancel()

    def _arm(self, when: float) -> None:
        self._disarm()
        # half the tolerance early, as Pacer.delay: a clock that adds up
        # float steps (task.Clock) still reaches the entry
        delay = max(0.0, when - self.reactor.seconds() - EPSILON / 2)
        self._timer = self.reactor.callLater(delay, self._fired)
        self._timer_at = when


def clock_for(reactor: IReactorTime) -> MediaClock:
    """The media clock of C{reactor}, made on first use (one per reactor,
    so every stream on it shares the timer and the run before reads)."""
    clock = _clocks.get(reactor)
    if clock is None:
        clock = _clocks[reactor] = MediaClock(reactor)
    return clock
