"""The table of finished transactions expires its records in batches on
one timer, never before their time (unit tests on a Clock)."""
from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sipproxy.ua.lingering import GRAIN, LingerTable


class LingerTableTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.table = LingerTable(self.clock)

    def active(self) -> list[float]:
        return [call.getTime() for call in self.clock.getDelayedCalls() if call.active()]

    def test_records_due_in_one_grain_go_on_one_timer_not_before_their_time(self) -> None:
        for n, when in enumerate((0.1, 0.2, 0.3)):
            self.clock.advance(when - self.clock.seconds())
            self.table.add(("k", n), f"r{n}", 32.0)
        self.assertEqual(self.active(), [32.5])
        self.clock.advance(32.49 - self.clock.seconds())
        self.assertEqual([self.table.get(("k", n)) for n in range(3)], ["r0", "r1", "r2"])
        self.clock.advance(0.01)
        self.assertEqual((len(self.table), self.active()), (0, []))

    def test_a_shorter_delay_added_later_rearms_the_timer_earlier(self) -> None:
        self.table.add("long", 1, 32.0)
        self.clock.advance(1.0)
        self.table.add("short", 2, 5.0)
        self.assertEqual(self.active(), [6.0])
        self.clock.advance(5.0)
        self.assertEqual((self.table.get("short"), self.table.get("long")), (None, 1))
        self.assertEqual(self.active(), [32.0])
        self.clock.advance(26.0)
        self.assertEqual(len(self.table), 0)

    def test_a_key_added_again_lives_its_new_time(self) -> None:
        self.table.add("k", "old", 5.0)
        self.clock.advance(4.0)
        self.table.add("k", "new", 5.0)
        self.clock.advance(1.0 + GRAIN)  # the first entry's time has passed
        self.assertEqual(self.table.get("k"), "new")
        self.clock.advance(4.0)
        self.assertIsNone(self.table.get("k"))

    def test_update_keeps_the_time_and_needs_the_key(self) -> None:
        self.table.add("k", "old", 5.0)
        self.clock.advance(4.0)
        self.table.update("k", "new")
        self.table.update("gone", "x")  # no record: nothing is added
        self.assertEqual((self.table.get("k"), self.table.get("gone"), len(self.table)), ("new", None, 1))
        self.clock.advance(1.0 + GRAIN)  # the first add's time
        self.assertIsNone(self.table.get("k"))

    def test_pop_and_clear(self) -> None:
        self.table.add("a", 1, 5.0)
        self.table.add("b", 2, 5.0)
        self.assertEqual((self.table.pop("a"), self.table.pop("a")), (1, None))
        self.table.clear()
        self.assertEqual((len(self.table), self.active()), (0, []))
        self.clock.advance(10.0)  # nothing left to fire
