"""The refresh policy and the registration's timer, with a Clock and a
fake REGISTER sender."""
from __future__ import annotations

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sipproxy.ua.endpoint import SIPError
from sipproxy.ua.registration import RefreshPolicy, Registration


class PolicyTests(SynchronousTestCase):
    def test_refresh_at_eighty_percent_or_five_seconds_before(self) -> None:
        policy = RefreshPolicy()
        self.assertEqual(policy.refresh_after(3600), 2880)
        self.assertEqual(policy.refresh_after(20), 15)  # 20 - 5 is sooner than 16
        self.assertEqual(policy.refresh_after(6), 3)  # never before half the interval

    def test_backoff_doubles_to_the_cap(self) -> None:
        policy = RefreshPolicy(backoff=30, backoff_cap=200)
        self.assertEqual([policy.retry_after(n) for n in range(1, 6)], [30, 60, 120, 200, 200])

    def test_nonsense_is_refused(self) -> None:
        self.assertRaises(ValueError, RefreshPolicy, fraction=0)
        self.assertRaises(ValueError, RefreshPolicy, backoff=60, backoff_cap=30)


class RegistrationTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.sent: list[int] = []
        self.answers: list[Deferred] = []
        self.events: list[tuple[str, dict]] = []

    def send(self, expires: int) -> Deferred:
        self.sent.append(expires)
        d: Deferred = Deferred()
        self.answers.append(d)
        return d

    def registration(self, expires: int = 120) -> Registration:
        return Registration(self.clock, self.send, expires, RefreshPolicy(backoff=30, backoff_cap=100),
                            lambda name, fields: self.events.append((name, fields)))

    def test_refreshes_from_the_granted_expiry_not_the_asked_one(self) -> None:
        registration = self.registration(3600)
        d = registration.start()
        self.answers[-1].callback(60)
        self.assertEqual(self.successResultOf(d), 60)
        self.clock.advance(47)
        self.assertEqual(self.sent, [3600])
        self.clock.advance(1)  # 60 * 0.8
        self.assertEqual(self.sent, [3600, 3600])
        self.answers[-1].callback(60)
        self.assertEqual([e[0] for e in self.events], ["registered", "registered"])
        self.assertTrue(registration.active)

    def test_failures_are_reported_and_retried_with_backoff(self) -> None:
        registration = self.registration(100)
        registration.start()
        self.answers[-1].callback(100)
        self.clock.advance(80)
        self.answers[-1].errback(SIPError(503, "Service Unavailable"))
        self.assertEqual(self.events[-1], ("register_failed", {"code": 503, "reason": "Service Unavailable",
                                                               "retry_in": 30}))
        self.clock.advance(30)
        self.answers[-1].errback(SIPError(408, "Request Timeout"))
        self.assertEqual(self.events[-1][1]["retry_in"], 60)
        self.clock.advance(60)
        self.answers[-1].errback(SIPError(408, "Request Timeout"))
        self.assertEqual(self.events[-1][1]["retry_in"], 100)  # the cap
        self.clock.advance(100)
        self.answers[-1].callback(100)
        self.assertEqual(self.events[-1], ("registered", {"expires": 100}))
        self.assertEqual(registration.failures, 0)
        self.assertEqual(len(self.sent), 5)

    def test_first_failure_fails_the_deferred_and_stops(self) -> None:
        registration = Registration(self.clock, lambda e: fail(SIPError(403, "Forbidden")), 100)
        failure = self.failureResultOf(registration.start(), SIPError)
        self.assertEqual(failure.value.code, 403)
        self.assertFalse(registration.active)

    def test_unregister_stops_refreshing(self) -> None:
        sent: list[int] = []
        registration = Registration(self.clock, lambda e: sent.append(e) or succeed(e), 100)
        self.successResultOf(registration.start())
        self.assertEqual(self.successResultOf(registration.unregister()), 0)
        self.clock.advance(1000)
        self.assertEqual(sent, [100, 0])
        self.assertFalse(registration.active)
