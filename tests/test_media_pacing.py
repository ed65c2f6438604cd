"""The deadline schedule: on time, a little late (catch up), very late
(skip), and no drift."""
from __future__ import annotations

import random

from twisted.trial.unittest import SynchronousTestCase

from sipproxy.ua.media.pacing import Pacer


class PacerTests(SynchronousTestCase):
    def test_on_time(self) -> None:
        pacer = Pacer(100.0)
        self.assertEqual(pacer.due(100.0), (1, 0))
        self.assertEqual(pacer.due(100.001), (0, 0))
        self.assertAlmostEqual(pacer.delay(100.001), 0.019, places=5)
        self.assertEqual(pacer.due(100.02), (1, 0))
        self.assertAlmostEqual(pacer.next_deadline, 100.04)

    def test_a_hair_early_counts_as_due(self) -> None:
        # a clock adding 0.02 three times lands just under start + 3 * 0.02
        now = 0.0
        pacer = Pacer(now)
        sent = 0
        for _ in range(50):
            sent += pacer.due(now)[0]
            now += 0.02
        self.assertEqual(sent, 50)

    def test_a_little_late_catches_up(self) -> None:
        pacer = Pacer(0.0)
        pacer.due(0.0)
        self.assertEqual(pacer.due(0.065), (3, 0))  # deadlines 0.02, 0.04, 0.06 passed
        self.assertAlmostEqual(pacer.next_deadline, 0.08)
        self.assertEqual(pacer.skipped, 0)

    def test_very_late_skips(self) -> None:
        pacer = Pacer(0.0, max_catch_up=3)
        pacer.due(0.0)
        self.assertEqual(pacer.due(1.0), (1, 49))  # 50 deadlines passed: send the current one only
        self.assertAlmostEqual(pacer.next_deadline, 1.02)
        self.assertEqual(pacer.skipped, 49)
        self.assertEqual(pacer.index, 51)

    def test_no_drift_under_timer_jitter(self) -> None:
        """Timers firing 0-8 ms late, each scheduled with delay(): after
        3000 packets every send is still within 8 ms of its deadline and
        every slot was sent, none skipped."""
        rng = random.Random(1)
        pacer = Pacer(5.0)
        now = 5.0
        sent_at = []
        for _ in range(3000):
            send, skip = pacer.due(now)
            self.assertEqual(skip, 0)
            sent_at += [now] * send
            now += pacer.delay(now) + rng.uniform(0, 0.008)
        for n, t in enumerate(sent_at):
            self.assertLessEqual(t - (5.0 + n * 0.02), 0.008 + 1e-9)
        self.assertGreaterEqual(len(sent_at), 2999)

    def test_refuses_nonsense(self) -> None:
        self.assertRaises(ValueError, Pacer, 0.0, 0.0)
        self.assertRaises(ValueError, Pacer, 0.0, 0.02, 0)
