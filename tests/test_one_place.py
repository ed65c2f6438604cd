"""One thing, one place: default ports, IP literals, addresses-of-record,
the stateless answer and the ACK to it, the answer to a failed location
store. Each is checked once here, and a source scan keeps copies from
coming back."""
from __future__ import annotations

import os
import re

from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

import sipproxy
from sipproxy.interfaces import IDispatcher, ILeg
from sipproxy.registrar.location import StoreUnavailable
from sipproxy.registrar.registrar import answer_store_failure
from sipproxy.sip.addresses import DEFAULT_PORTS, address_of_record, default_port, is_bare_ip_literal, is_ip_literal
from sipproxy.sip.message import parse
from sipproxy.sip.stateless import is_ack_to_own_answer, stateless_answer, stateless_tag
from sipproxy.testing import MemoryLeg, memory_dispatcher
from tests.sip import request

PACKAGE = os.path.dirname(os.path.abspath(sipproxy.__file__))


class AddressesTests(SynchronousTestCase):
    def test_default_ports(self) -> None:
        self.assertEqual([default_port(p) for p in ("udp", "tcp", "tls", "sip", "sips", "SIPS")],
                         [5060, 5060, 5061, 5060, 5061, 5061])
        self.assertEqual(default_port("sip", "tls"), 5061)
        self.assertEqual(DEFAULT_PORTS["tls"], 5061)

    def test_ip_literals(self) -> None:
        for text in ("192.0.2.1", "::1", "[2001:db8::1]"):
            self.assertTrue(is_ip_literal(text), text)
        for text in ("example.com", "[example.com]", "", "1.2.3", "x" * 300):
            self.assertFalse(is_ip_literal(text), text)

    def test_bare_ip_literals(self) -> None:
        """What SDP, the ng protocol and a socket take: no brackets, no
        host names, nothing empty or absent."""
        for text in ("192.0.2.1", "::1", "2001:db8::1"):
            self.assertTrue(is_bare_ip_literal(text), text)
        for text in ("[2001:db8::1]", "[::1", "example.com", "", None, "1.2.3", "999.1.1.1", "192.0.2.1 ",
                     "1" * 300, "::g", "192.0.2.1\x00"):
            self.assertFalse(is_bare_ip_literal(text), text)

    def test_address_of_record_user_is_case_sensitive_host_is_not(self) -> None:
        self.assertEqual(address_of_record("sip", "Bob", "Example.COM", 5060), "sip:Bob@example.com")
        self.assertNotEqual(address_of_record("sip", "Bob", "h", None), address_of_record("sip", "bob", "h", None))
        self.assertEqual(address_of_record("sip", "%62ob", "h", None), "sip:bob@h")
        self.assertEqual(address_of_record("sips", "a", "h", 5061), "sips:a@h")
        self.assertEqual(address_of_record("sip", "a", "h", 5061), "sip:a@h:5061")
        self.assertEqual(address_of_record("sip", "a", "h", 5060, drop_default_port=False), "sip:a@h:5060")
        self.assertEqual(address_of_record("sip", "a", "h", 5080, lambda host, port: port == 5080), "sip:a@h")
        self.assertEqual(address_of_record("sip", "a", "2001:DB8::1", None), "sip:a@[2001:db8::1]")


class StatelessAnswerTests(SynchronousTestCase):
    def test_answer_carries_the_tag_and_its_ack_is_recognised(self) -> None:
        invite = parse(request("INVITE", to="<sip:bob@example.com>"))
        answer = stateless_answer(invite, 404, "Not Found")
        self.assertEqual(answer.to_tag, stateless_tag(invite))
        ack = parse(request("ACK", to=answer.get("to")))
        self.assertTrue(is_ack_to_own_answer(ack))

    def test_other_acks_are_not_ours(self) -> None:
        self.assertFalse(is_ack_to_own_answer(parse(request("ACK", to="<sip:bob@example.com>;tag=sp12345"))))
        self.assertFalse(is_ack_to_own_answer(parse(request("ACK", to="<sip:bob@example.com>;tag=abc"))))
        invite = parse(request("INVITE"))
        tagged = parse(request("INVITE", to=f"<sip:bob@example.com>;tag={stateless_tag(invite)}"))
        self.assertFalse(is_ack_to_own_answer(tagged))  # not an ACK

    def test_retransmissions_get_the_same_tag(self) -> None:
        a = parse(request("INVITE", via="SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK1"))
        b = parse(request("INVITE", via="SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK1"))
        self.assertEqual(stateless_tag(a), stateless_tag(b))


class StoreFailureAnswerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.leg = MemoryLeg("192.0.2.1")
        self.dispatcher = memory_dispatcher([self.leg])

    def test_unavailable_is_503_with_retry_after(self) -> None:
        invite = parse(request("INVITE"))
        self.assertTrue(answer_store_failure(self.dispatcher, Failure(StoreUnavailable("down", 9)), invite,
                                             self.leg, ("192.0.2.10", 5060)))
        [(response, _)] = self.leg.take()
        self.assertEqual((response.code, response.get("retry-after")), (503, "9"))

    def test_other_failures_are_500_and_acks_get_nothing(self) -> None:
        answer_store_failure(self.dispatcher, Failure(RuntimeError("bug")), parse(request("INVITE")), self.leg,
                             ("192.0.2.10", 5060))
        [(response, _)] = self.leg.take()
        self.assertEqual(response.code, 500)
        self.flushLoggedErrors(RuntimeError)
        answer_store_failure(self.dispatcher, Failure(StoreUnavailable("down")), parse(request("ACK")), self.leg,
                             ("192.0.2.10", 5060))
        self.assertEqual(self.leg.take(), [])


class InterfacesTests(SynchronousTestCase):
    def test_dispatcher_and_legs_provide_what_the_logic_calls(self) -> None:
        leg = MemoryLeg("192.0.2.1")
        dispatcher = memory_dispatcher([leg])
        verifyObject(IDispatcher, dispatcher)
        verifyObject(ILeg, leg)

    def test_the_proxy_keeps_no_state_on_legs(self) -> None:
        from sipproxy.proxy.stateless import StatelessProxy

        a, b = MemoryLeg("192.0.2.1"), MemoryLeg("198.51.100.1")
        dispatcher = memory_dispatcher([a, b])
        dispatcher.set_receiver(StatelessProxy(dispatcher, secret=b"s" * 32))
        before = (dict(vars(a)), dict(vars(b)))
        a.receive(request("INVITE", uri="sip:bob@198.51.100.20"), ("192.0.2.10", 5060))
        self.assertEqual(len(b.take()), 1)
        a.sent.clear()
        self.assertEqual((set(vars(a)), set(vars(b))), (set(before[0]), set(before[1])))


class NoCopiesTests(SynchronousTestCase):
    """The copies the review counted do not come back."""

    def sources(self):
        for folder, dirs, files in os.walk(PACKAGE):
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    with open(path, encoding="utf-8") as f:
                        yield os.path.relpath(path, PACKAGE), f.read()

    def test_one_port_table_one_tag_format(self) -> None:
        for path, text in self.sources():
            if path == os.path.join("sip", "addresses.py"):
                continue
            self.assertIsNone(re.search(r"[\"']tls[\"']\s*:\s*5061", text), f"a port table in {path}")
            if path != os.path.join("sip", "stateless.py"):
                self.assertNotIn("tag=sp", text, f"the stateless tag format in {path}")
                self.assertNotIn("hashlib.md5(key)", text, f"a stateless tag in {path}")

    def test_one_ip_literal_check(self) -> None:
        """Whether a text is an IP address is asked of sip.addresses; a
        module of its own that tries C{ipaddress} on it and returns a bool
        is a copy (three had grown: two in nat/, one in ua/media/)."""
        copy = re.compile(r"^def _?is_\w*ip\w*\(", re.M)
        for path, text in self.sources():
            if path in (os.path.join("sip", "addresses.py"), os.path.join("sip", "uri.py")):
                continue
            self.assertIsNone(copy.search(text), f"an IP literal check in {path}")
