"""Digest authentication under attack (issue 12): a retransmission must be
the same request byte for byte, every failed authentication is one log line
in a stable format (the one contrib/fail2ban reads), and a source IP that
keeps failing is shut out for a while."""
from __future__ import annotations

from typing import Any

from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from sipproxy.access.digest_auth import Users
from tests.registrar_harness import PHONE, FrontDoorHarness, credentials


class CapturedLog:
    """The formatted text of every event logged while a test runs."""

    def __init__(self, testcase: Any) -> None:
        self.lines: list[str] = []
        globalLogPublisher.addObserver(self.observe)
        testcase.addCleanup(globalLogPublisher.removeObserver, self.observe)

    def observe(self, event: dict) -> None:
        self.lines.append(formatEvent(event))

    def matching(self, text: str) -> list[str]:
        return [line for line in self.lines if text in line]


class RetransmissionTests(FrontDoorHarness, SynchronousTestCase):
    def setUp(self) -> None:
        self.make(registrar=True, domains=["example.com"], users=Users({"alice": "secret"}))
        self.challenge = self.answer(self.register()).get("www-authenticate")
        self.auth = credentials(self.challenge, "alice", "secret", "REGISTER", "sip:example.com")

    def bindings(self) -> list[str]:
        found: list = []
        self.door.parts["registrar"].lookup("sip:alice@example.com").addCallback(found.extend)
        return sorted(b.contact for b in found)

    def test_a_byte_identical_retransmission_is_accepted(self) -> None:
        first = self.register(cseq=2, headers=[("Authorization", self.auth)])
        self.assertEqual(self.answer(first).code, 200)
        self.assertEqual(self.answer(first).code, 200)

    def test_a_changed_contact_under_the_same_authorization_is_refused(self) -> None:
        self.assertEqual(self.answer(self.register(cseq=2, headers=[("Authorization", self.auth)])).code, 200)
        hijack = self.register(cseq=2, contact="<sip:alice@203.0.113.66>", headers=[("Authorization", self.auth)])
        self.assertEqual(self.answer(hijack).code, 401)
        self.assertEqual(self.bindings(), ["sip:alice@192.0.2.10:5060"])

    def test_a_changed_expires_under_the_same_authorization_is_refused(self) -> None:
        self.assertEqual(self.answer(self.register(cseq=2, headers=[("Authorization", self.auth)])).code, 200)
        unregister = self.register(cseq=2, headers=[("Authorization", self.auth), ("Expires", "0")])
        self.assertEqual(self.answer(unregister).code, 401)
        self.assertEqual(self.bindings(), ["sip:alice@192.0.2.10:5060"])


class FailureLogTests(FrontDoorHarness, SynchronousTestCase):
    def setUp(self) -> None:
        self.make(registrar=True, domains=["example.com"], users=Users({"alice": "secret"}))
        self.log = CapturedLog(self)

    def test_each_failure_is_one_line_with_user_realm_and_ip(self) -> None:
        challenge = self.answer(self.register()).get("www-authenticate")
        self.assertEqual(self.log.matching("auth failed"), [])  # a first challenge is no failure
        auth = credentials(challenge, "alice", "guess", "REGISTER", "sip:example.com")
        self.assertEqual(self.answer(self.register(cseq=2, headers=[("Authorization", auth)])).code, 401)
        self.assertEqual(self.log.matching("auth failed"), [
            'auth failed: user="alice" realm="example.com" ip=192.0.2.10 port=5060 method=REGISTER '
            'reason=bad-credentials'])

    def test_a_hostile_user_name_cannot_forge_the_line(self) -> None:
        challenge = self.answer(self.register()).get("www-authenticate")
        auth = credentials(challenge, 'x\\" ip=198.51.100.7', "guess", "REGISTER", "sip:example.com")
        self.answer(self.register(cseq=2, headers=[("Authorization", auth)]))
        [line] = self.log.matching("auth failed")
        self.assertIn("ip=192.0.2.10 ", line)
        self.assertEqual(line.count("ip="), 1)
        self.assertNotIn("\n", line)


class FailureLimitTests(FrontDoorHarness, SynchronousTestCase):
    def setUp(self) -> None:
        self.make(registrar=True, domains=["example.com"], users=Users({"alice": "secret"}),
                  auth_failure_limit=(3, 60.0, 600.0))

    def fail_once(self, cseq: int, port: int = 5060) -> list:
        source = (PHONE[0], port)
        challenge = self.send(self.register(call_id=f"f{cseq}", cseq=cseq), source)
        if not challenge:
            return []
        auth = credentials(challenge[0][0].get("www-authenticate"), "alice", "guess", "REGISTER", "sip:example.com")
        return self.send(self.register(call_id=f"f{cseq}", cseq=cseq + 1, headers=[("Authorization", auth)]),
                         source)

    def test_an_ip_that_keeps_failing_is_dropped_for_a_while_whatever_its_port(self) -> None:
        for n in range(3):
            self.assertEqual([m.code for m, _ in self.fail_once(10 * n, port=5060 + n)], [401])
        # the right password from the same address, another port: dropped
        self.assertEqual(self.send(self.register(call_id="ok", cseq=1), (PHONE[0], 6000)), [])
        # another address is not affected
        self.assertEqual([m.code for m, _ in self.send(self.register(call_id="x"), ("192.0.2.11", 5060))], [401])
        self.clock.advance(601)
        self.assertEqual([m.code for m, _ in self.send(self.register(call_id="ok", cseq=1), PHONE)], [401])
