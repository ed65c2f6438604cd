"""Blocker, Redirect, Dropper and the relay guard ("not an open relay")."""
from __future__ import annotations

import json
import os
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sipproxy.access.chain import ReceiveChain
from sipproxy.sip.message import parse
from sipproxy.access.domains import Domains
from sipproxy.stores.blockfile import JSONFile
from sipproxy.access.filters import Blocker, ByField, ByIPPort, Dropper, parse_block
from sipproxy.testing import MemoryLeg, memory_dispatcher
from tests.registrar_harness import OUTSIDE, PHONE, FrontDoorHarness
from tests.sip import request
from tests.util import temp_dir


class BlockerTests(FrontDoorHarness, SynchronousTestCase):
    def setUp(self) -> None:
        self.make(block={"INVITE": "603 Decline", "message": 405})

    def test_blocked_method_gets_its_code(self) -> None:
        response = self.answer(self.invite(), OUTSIDE)
        self.assertEqual((response.code, response.reason), (603, "Decline"))
        response = self.answer(self.invite(method="MESSAGE"), OUTSIDE)
        self.assertEqual((response.code, response.reason), (405, "Method Not Allowed"))

    def test_ack_for_blocked_invite_is_swallowed(self) -> None:
        response = self.answer(self.invite(), OUTSIDE)
        self.assertEqual(self.send(self.invite(method="ACK", to=response.get("to")), OUTSIDE), [])

    def test_other_methods_pass(self) -> None:
        request_, _ = self.forwarded(self.invite(uri="sip:bob@192.0.2.20", method="OPTIONS"), OUTSIDE)
        self.assertEqual(request_.method, "OPTIONS")

    def test_bad_codes_are_refused(self) -> None:
        for code in ("200", "99", "abc", "700"):
            self.assertRaises(ValueError, parse_block, code)
        self.assertEqual(parse_block("486 Busy Here Now"), (486, "Busy Here Now"))


class RedirectTests(FrontDoorHarness, SynchronousTestCase):
    def setUp(self) -> None:
        self.make(redirect=True, domains=["example.com"])

    def test_registered_user_gets_302_with_contacts(self) -> None:
        self.answer(self.register(contact="<sip:alice@192.0.2.10>;q=0.4", call_id="a"))
        self.answer(self.register(contact="<sip:alice@192.0.2.11>;q=0.8", call_id="b"))
        response = self.answer(self.invite(), OUTSIDE)
        self.assertEqual(response.code, 302)
        self.assertEqual(response.get_all("contact"), ["<sip:alice@192.0.2.11>;q=0.8;expires=3600",
                                                       "<sip:alice@192.0.2.10>;q=0.4;expires=3600"])

    def test_unknown_user_gets_404(self) -> None:
        self.assertEqual(self.answer(self.invite(uri="sip:nobody@example.com"), OUTSIDE).code, 404)

    def test_cancel_gets_200_and_ack_to_the_302_is_swallowed(self) -> None:
        self.assertEqual(self.answer(self.invite(method="CANCEL"), OUTSIDE).code, 200)
        self.answer(self.register())
        response = self.answer(self.invite(), OUTSIDE)
        self.assertEqual(response.code, 302)
        self.assertEqual(self.send(self.invite(method="ACK", to=response.get("to")), OUTSIDE), [])

    def test_register_still_registers(self) -> None:
        self.assertEqual(self.answer(self.register()).code, 200)

    def test_other_domains_go_on(self) -> None:
        request_, _ = self.forwarded(self.invite(uri="sip:bob@192.0.2.20", from_="<sip:alice@example.com>;tag=1"))
        self.assertEqual(request_.uri, "sip:bob@192.0.2.20")


class DropperTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)

    def packet(self, method: str = "REGISTER", ua: str = "Phone/1.0") -> Any:
        return parse(request(method, headers=[("User-Agent", ua)]))

    def test_by_ip_port_drops_after_attempts_within_interval(self) -> None:
        check = ByIPPort(interval=10, attempts=3, clock=self.clock)
        dropper = Dropper([check])
        results = [dropper.receive(self.packet(), None, ("192.0.2.9", 5060)) for _ in range(4)]
        self.assertEqual(results, [False, False, True, True])
        self.assertFalse(dropper.receive(self.packet(), None, ("192.0.2.9", 5061)))  # another port
        self.clock.advance(11)
        self.assertFalse(dropper.receive(self.packet(), None, ("192.0.2.9", 5060)))
        self.assertEqual(dropper.dropped, 2)

    def test_methods_filter_and_responses(self) -> None:
        check = ByIPPort(interval=10, attempts=1, methods=["INVITE", ""], clock=self.clock)
        self.assertFalse(check.run(self.packet("REGISTER"), None, ("192.0.2.9", 1)))
        self.assertTrue(check.run(self.packet("INVITE"), None, ("192.0.2.9", 2)))
        response = parse(request("INVITE")).create_response(200)
        self.assertTrue(check.run(response, None, ("192.0.2.9", 3)))

    def test_block_whole_ip_and_persist(self) -> None:
        path = os.path.join(temp_dir(self), "drop.json")
        check = ByIPPort(interval=60, attempts=5, database=JSONFile(path), clock=self.clock)
        check.block("198.51.100.66", until=1000 + 3600)
        self.assertTrue(os.path.exists(path))
        again = ByIPPort(interval=60, attempts=5, database=JSONFile(path), clock=self.clock)
        self.assertTrue(again.run(self.packet(), None, ("198.51.100.66", 40000)))
        self.clock.advance(3000)
        self.assertTrue(again.run(self.packet(), None, ("198.51.100.66", 40001)))
        self.clock.advance(700)
        self.assertFalse(again.run(self.packet(), None, ("198.51.100.66", 40002)))
        with open(path) as f:
            self.assertIn("198.51.100.66", json.load(f))

    def test_by_field(self) -> None:
        check = ByField({"User-Agent": r"friendly-scanner|sipvicious"})
        self.assertTrue(check.run(self.packet(ua="friendly-scanner"), None, ("192.0.2.9", 1)))
        self.assertFalse(check.run(self.packet(ua="Phone/1.0"), None, ("192.0.2.9", 1)))
        only_invite = ByField({"User-Agent": lambda v: "Phone" in v}, methods=["INVITE"])
        self.assertFalse(only_invite.run(self.packet(), None, ("192.0.2.9", 1)))
        self.assertTrue(only_invite.run(self.packet("INVITE"), None, ("192.0.2.9", 1)))

    def test_drops_are_silent_in_a_proxy(self) -> None:
        harness = FrontDoorHarness()
        harness.assertEqual = self.assertEqual  # type: ignore[attr-defined]
        harness.make(rate_limit=(2, 10), drop_fields={"User-Agent": "scanner"})
        self.assertEqual(harness.send(request("OPTIONS", uri="sip:192.0.2.1", headers=[("User-Agent", "scanner")])),
                         [])
        self.assertEqual(len(harness.send(request("OPTIONS", uri="sip:192.0.2.1", cseq=2))), 0)  # 2nd packet
        leg = harness.leg
        leg.receive(request("OPTIONS", uri="sip:192.0.2.1", cseq=3), ("192.0.2.11", 5060))
        self.assertEqual([m.code for m, _ in leg.take()], [200])


class RelayGuardTests(FrontDoorHarness, SynchronousTestCase):
    def setUp(self) -> None:
        self.make(registrar=True, domains=["example.com"])

    def test_neither_to_nor_from_served_gets_403(self) -> None:
        response = self.answer(self.invite(uri="sip:victim@192.0.2.200"), OUTSIDE)
        self.assertEqual((response.code, response.reason), (403, "Forbidden (relaying denied)"))
        self.assertEqual(self.send(self.invite(uri="sip:x@192.0.2.200", method="ACK", to="<sip:x@y>;tag=q"),
                                   OUTSIDE), [])

    def test_tel_uri_from_outside_gets_403(self) -> None:
        self.assertEqual(self.answer(self.invite(uri="tel:+15551234"), OUTSIDE).code, 403)

    def test_to_a_served_domain_passes(self) -> None:
        self.answer(self.register())
        request_, addr = self.forwarded(self.invite(), OUTSIDE)
        self.assertEqual(addr, PHONE)

    def test_from_a_served_domain_passes(self) -> None:
        request_, addr = self.forwarded(self.invite(uri="sip:bob@192.0.2.20", from_="<sip:alice@example.com>;tag=1"))
        self.assertEqual(addr, ("192.0.2.20", 5060))

    def test_to_a_registered_contact_passes(self) -> None:
        self.answer(self.register(contact="<sip:alice@192.0.2.10:5070>"))
        request_, addr = self.forwarded(self.invite(uri="sip:alice@192.0.2.10:5070"), OUTSIDE)
        self.assertEqual(addr, ("192.0.2.10", 5070))

    def test_in_dialog_through_us_passes(self) -> None:
        bye = self.invite(uri="sip:someone@192.0.2.200", method="BYE", to="<sip:someone@else.org>;tag=t",
                          headers=[("Route", "<sip:192.0.2.1:5060;lr>")])
        request_, addr = self.forwarded(bye, OUTSIDE)
        self.assertEqual(addr, ("192.0.2.200", 5060))

    def test_fake_dialog_not_through_us_gets_403(self) -> None:
        bye = self.invite(uri="sip:someone@192.0.2.200", method="BYE", to="<sip:someone@else.org>;tag=t")
        self.assertEqual(self.answer(bye, OUTSIDE).code, 403)

    def test_without_domains_everything_is_forwarded(self) -> None:
        self.make(registrar=True)
        request_, addr = self.forwarded(self.invite(uri="sip:victim@192.0.2.200"), OUTSIDE)
        self.assertEqual(addr, ("192.0.2.200", 5060))


class DomainsTests(SynchronousTestCase):
    def test_matching(self) -> None:
        dispatcher = memory_dispatcher([MemoryLeg("192.0.2.1")])
        domains = Domains(["Example.COM.", "*.voip.example.net", "198.51.100.7"], dispatcher)
        self.assertTrue(domains.served("example.com"))
        self.assertTrue(domains.served("a.b.example.com"))
        self.assertFalse(domains.served("badexample.com"))
        self.assertFalse(domains.served("com"))
        self.assertTrue(domains.served("x.voip.example.net"))
        self.assertTrue(domains.served("voip.example.net"))
        self.assertTrue(domains.served("198.51.100.7"))
        self.assertFalse(domains.served("1.198.51.100.7"))
        self.assertTrue(domains.served("192.0.2.1"))  # our own leg
        self.assertTrue(domains.served("192.0.2.1", 5060))
        self.assertFalse(domains.served("192.0.2.1", 5070))
        self.assertFalse(domains.everything)
        self.assertTrue(Domains(None, dispatcher).everything)
        self.assertTrue(Domains(["*"], dispatcher).served("anything.org"))


class ChainOrderTests(FrontDoorHarness, SynchronousTestCase):
    def test_parts_in_order(self) -> None:
        from sipproxy.access.digest_auth import Users

        self.make(registrar=True, domains=["example.com"], users=Users({"a": "b"}), block={"MESSAGE": 405},
                  rate_limit=(50, 10))
        chain = self.dispatcher.receiver.receivers
        names = [type(r).__name__ for r in chain]
        self.assertEqual(names, ["Dropper", "OwnAcks", "Blocker", "RelayGuard", "ReceiveChain", "ReceiveChain",
                                 "FlowKeeper", "Registrar", "StatelessProxy"])
        self.assertIsInstance(chain[0], Dropper)
        self.assertIsInstance(chain[2], Blocker)
        self.assertIsInstance(chain[4], ReceiveChain)
