"""sipproxy.ua.media.clock: every stream's send deadline on one reactor
timer, and run_due for the receive path."""
from __future__ import annotations

from typing import Callable

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sipproxy.ua.media.clock import EPSILON, MediaClock, clock_for


class MediaClockTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = Clock()
        self.reactor.advance(1000.0)
        self.clock = MediaClock(self.reactor)
        self.ran: list[tuple[str, float]] = []

    def record(self, name: str) -> Callable[[], None]:
        return lambda: self.ran.append((name, self.reactor.seconds()))

    def test_calls_run_at_their_times_on_one_reactor_timer(self) -> None:
        self.clock.call_at(1000.030, self.record("c"))
        self.clock.call_at(1000.010, self.record("a"))
        self.clock.call_at(1000.020, self.record("b"))
        calls = self.reactor.getDelayedCalls()
        self.assertEqual(len(calls), 1)
        self.assertAlmostEqual(calls[0].getTime(), 1000.010, places=5)
        for step in (0.010, 0.010, 0.010):
            self.reactor.advance(step)
        self.assertEqual([name for name, _ in self.ran], ["a", "b", "c"])
        for (_, when), expected in zip(self.ran, (1000.010, 1000.020, 1000.030)):
            self.assertAlmostEqual(when, expected, places=5)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_same_time_runs_in_the_order_scheduled(self) -> None:
        for name in "xyz":
            self.clock.call_at(1000.5, self.record(name))
        self.reactor.advance(0.5)
        self.assertEqual([name for name, _ in self.ran], ["x", "y", "z"])

    def test_a_call_scheduled_while_running_waits_for_its_own_time(self) -> None:
        # what a stream does: its tick schedules the next one, 20 ms on
        def tick() -> None:
            self.ran.append(("tick", self.reactor.seconds()))
            if len(self.ran) < 3:
                self.clock.call_at(self.reactor.seconds() + 0.020, tick)

        self.clock.call_at(1000.0, tick)
        self.reactor.advance(0)
        self.assertEqual(len(self.ran), 1)
        self.assertEqual(len(self.reactor.getDelayedCalls()), 1)
        self.reactor.advance(0.020)
        self.reactor.advance(0.020)
        self.assertEqual([round(when - 1000.0, 3) for _, when in self.ran], [0.0, 0.02, 0.04])
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_run_due_runs_only_what_is_due_and_the_timer_then_finds_nothing(self) -> None:
        self.clock.call_at(1000.010, self.record("due"))
        self.clock.call_at(1000.050, self.record("later"))
        self.reactor.rightNow = 1000.020  # time passed while the reactor read sockets
        self.clock.run_due()
        self.assertEqual([name for name, _ in self.ran], ["due"])
        self.reactor.advance(0)  # the reactor's timer, due since 1000.010, runs nothing twice
        self.assertEqual([name for name, _ in self.ran], ["due"])
        calls = self.reactor.getDelayedCalls()
        self.assertEqual(len(calls), 1)
        self.assertAlmostEqual(calls[0].getTime(), 1000.050, places=5)

    def test_within_epsilon_counts_as_due(self) -> None:
        self.clock.call_at(1000.020 + EPSILON / 2, self.record("hair"))
        self.reactor.rightNow = 1000.020
        self.clock.run_due()
        self.assertEqual(len(self.ran), 1)

    def test_an_earlier_call_rearms_the_timer(self) -> None:
        self.clock.call_at(1000.050, self.record("late"))
        self.clock.call_at(1000.010, self.record("early"))
        calls = self.reactor.getDelayedCalls()
        self.assertEqual(len(calls), 1)
        self.assertAlmostEqual(calls[0].getTime(), 1000.010, places=5)

    def test_cancelled_calls_never_run_and_the_last_one_takes_the_timer_along(self) -> None:
        first = self.clock.call_at(1000.010, self.record("first"))
        second = self.clock.call_at(1000.020, self.record("second"))
        first.cancel()
        self.assertFalse(first.active())
        self.assertTrue(second.active())
        self.assertEqual(len(self.reactor.getDelayedCalls()), 1)
        second.cancel()
        second.cancel()  # twice is harmless
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.assertEqual(len(self.clock), 0)
        self.reactor.advance(1)
        self.assertEqual(self.ran, [])

    def test_a_timer_cancelled_from_outside_does_not_stall_the_clock(self) -> None:
        # trial cancels what a test leaves pending; the clock must notice
        self.clock.call_at(1000.010, self.record("left"))
        for call in self.reactor.getDelayedCalls():
            call.cancel()
        self.clock.call_at(1000.500, self.record("next"))
        self.reactor.advance(0.010)  # re-armed for the earliest entry, not the newest
        self.assertEqual(self.ran, [("left", 1000.010)])
        self.reactor.advance(0.490)
        self.assertEqual([name for name, _ in self.ran], ["left", "next"])

    def test_a_failing_call_is_logged_and_the_others_still_run(self) -> None:
        def boom() -> None:
            raise RuntimeError("boom")

        self.clock.call_at(1000.010, boom)
        self.clock.call_at(1000.010, self.record("after"))
        self.clock.call_at(1000.030, self.record("later"))
        self.reactor.advance(0.010)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual([name for name, _ in self.ran], ["after"])
        self.reactor.advance(0.020)
        self.assertEqual([name for name, _ in self.ran], ["after", "later"])
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_one_clock_per_reactor(self) -> None:
        other = Clock()
        self.assertIs(clock_for(self.reactor), clock_for(self.reactor))
        self.assertIsNot(clock_for(self.reactor), clock_for(other))
