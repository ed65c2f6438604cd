"""Deadline pacing for a packet stream: when is the next packet due, and
what to do when the timer fired late.

Packet n is due at C{start + n * interval}, computed from the start each
time rather than by adding intervals, so timer lateness and float
rounding never accumulate: a timer that fires 3 ms late makes one packet
3 ms late, and the next one is on time again. That is the difference from
sleep-paced senders (sleep 20 ms after each packet), which drift by every
sleep's overshoot and sound choppy (the users' complaint, ua-anchors.md).

When the timer fires so late that several deadlines passed (the process
was busy, swapped, or stopped in a debugger):
  - up to C{max_catch_up} overdue packets are sent at once: a receiver's
    jitter buffer (typically 40-100 ms) absorbs a short burst, and no audio
    is lost;
  - beyond that, the overdue slots are skipped (the caller advances the
    RTP timestamp over them) and only the current one is sent. Bursting a
    long backlog would overflow the receiver's jitter buffer, which drops
    it anyway, and would keep the stream behind real time for good; with
    the timestamp advanced, the receiver plays the gap as silence and the
    audio after it is on time.

Pure: the caller passes the clock's time in and schedules the timer with
L{Pacer.delay}.
"""
from __future__ import annotations

__all__ = ["Pacer"]

#: A deadline this close (1 µs) counts as reached: clocks that add up
#: float intervals land a hair before C{start + n * interval}.
_EPSILON = 1e-6


class Pacer:
    """The deadline schedule of one stream of equally spaced packets."""

    def __init__(self, start: float, interval: float = 0.020, max_catch_up: int = 3) -> None:
        if interval <= 0:
            raise ValueError("the interval must be positive")
        if max_catch_up < 1:
            raise ValueError("max_catch_up must be at least 1")
        self.start = start
        self.interval = interval
        self.max_catch_up = max_catch_up
        #: index of the next packet to send
        self.index = 0
        #: slots skipped so far (not sent, timestamp advanced)
        self.skipped = 0

    @property
    def next_deadline(self) -> float:
        return self.start + self.index * self.interval

    def due(self, now: float) -> tuple[int, int]:
        """(packets to send now, slots to skip first) at time C{now}; the
        schedule moves past both. (0, 0) when the next deadline is still
        ahead."""
        lateness = now - self.next_deadline
        if lateness < -_EPSILON:
            return 0, 0
        overdue = int(max(lateness, 0.0) / self.interval) + 1
        if overdue <= self.max_catch_up:
            self.index += overdue
            return overdue, 0
        skip = overdue - 1
        self.index += overdue
        self.skipped += skip
        return 1, skip

    def delay(self, now: float) -> float:
        """Seconds from C{now} to the next deadline (0 when it passed), less
        half the tolerance of L{due}: a clock that adds up float steps
        (C{task.Clock}) then still reaches the timer, and L{due} counts
        the wake-up as on time."""
        return max(0.0, self.next_deadline - now - _EPSILON / 2)
