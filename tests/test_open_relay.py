"""Toll fraud: the proxy is not an open relay (issue 12).

Each attack from the issue, as an attacker on the internet would try it
against C{--registrar --domain example.com} (and with C{--users}): a
preloaded Route through the proxy (strict and loose), a Route to a third
party on a call to a registered user, a Contact token minted by a call and
then used to start new ones, requests to the proxy itself, and forged
in-dialog INVITEs. The legitimate uses next to each must keep working.
"""
from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sipproxy.access.chain import ReceiveChain
from sipproxy.access.digest_auth import Users
from sipproxy.access.front_chain import FrontDoor
from sipproxy.proxy.stateless import StatelessProxy
from sipproxy.registrar.memory_store import MemoryStore
from sipproxy.testing import MemoryLeg, memory_dispatcher
from tests.registrar_harness import OUTSIDE, PHONE, START, FrontDoorHarness, credentials
from tests.sip import request

VICTIM = ("198.51.100.66", 5060)  # a third party: a PSTN gateway the attacker wants to use for free


class PreloadedRouteTests(FrontDoorHarness, SynchronousTestCase):
    """A Request-URI naming the proxy, or a registered user, plus a Route
    to the victim."""

    def setUp(self) -> None:
        self.make(registrar=True, domains=["example.com"])
        self.answer(self.register())

    def assertNotRelayed(self, data: bytes, source: tuple[str, int] = OUTSIDE) -> None:
        sent = self.send(data, source)
        self.assertEqual([addr for message, addr in sent if hasattr(message, "uri")], [],
                         "the request was relayed to a third party")
        self.assertEqual([m.code for m, _ in sent], [403])

    def test_strict_route_through_the_proxy_is_refused(self) -> None:
        self.assertNotRelayed(self.invite(uri="sip:192.0.2.1", to="<sip:victim@198.51.100.66>",
                                          headers=[("Route", "<sip:victim@198.51.100.66>")]))

    def test_loose_route_through_the_proxy_is_refused(self) -> None:
        self.assertNotRelayed(self.invite(uri="sip:192.0.2.1", to="<sip:victim@198.51.100.66>",
                                          headers=[("Route", "<sip:198.51.100.66;lr>")]))
        self.assertNotRelayed(self.invite(uri="sip:192.0.2.1", to="<sip:victim@198.51.100.66>", branch="z9hG4bKb",
                                          headers=[("Route", "<sip:192.0.2.1;lr>"),
                                                   ("Route", "<sip:198.51.100.66;lr>")]))

    def test_route_to_a_third_party_on_a_call_to_a_registered_user_is_refused(self) -> None:
        self.assertNotRelayed(self.invite(headers=[("Route", "<sip:198.51.100.66;lr>")]))

    def test_route_naming_only_us_is_honoured(self) -> None:
        request_, addr = self.forwarded(self.invite(headers=[("Route", "<sip:192.0.2.1;lr>")]), OUTSIDE)
        self.assertEqual((request_.uri, addr), ("sip:alice@192.0.2.10:5060", PHONE))

    def test_route_from_a_served_domain_is_honoured_without_users(self) -> None:
        request_, addr = self.forwarded(self.invite(uri="sip:carol@203.0.113.9", from_="<sip:alice@example.com>;tag=a",
                                                    headers=[("Route", "<sip:198.51.100.66;lr>")]), PHONE)
        self.assertEqual(addr, VICTIM)


class PreloadedRouteWithUsersTests(FrontDoorHarness, SynchronousTestCase):
    def setUp(self) -> None:
        self.make(registrar=True, domains=["example.com"], users=Users({"alice": "secret"}))

    def test_foreign_route_from_outside_is_refused(self) -> None:
        response = self.answer(self.invite(uri="sip:192.0.2.1", headers=[("Route", "<sip:198.51.100.66;lr>")]),
                               OUTSIDE)
        self.assertEqual(response.code, 403)

    def test_route_of_an_authenticated_user_is_honoured(self) -> None:
        def invite(**kw: Any) -> bytes:
            return self.invite(uri="sip:carol@203.0.113.9", from_="<sip:alice@example.com>;tag=a",
                               headers=[("Route", "<sip:198.51.100.66;lr>"), *kw.pop("headers", [])], **kw)

        challenge = self.answer(invite(), PHONE)
        self.assertEqual(challenge.code, 407)
        auth = credentials(challenge.get("proxy-authenticate"), "alice", "secret", "INVITE", "sip:carol@203.0.113.9")
        request_, addr = self.forwarded(invite(cseq=2, branch="z9hG4bKinv2",
                                               headers=[("Proxy-Authorization", auth)]), PHONE)
        self.assertEqual(addr, VICTIM)

    def test_requests_to_the_proxy_itself_are_challenged(self) -> None:
        response = self.answer(self.invite(uri="sip:192.0.2.1", from_="<sip:alice@example.com>;tag=a",
                                           method="MESSAGE"), PHONE)
        self.assertEqual(response.code, 407)
        # a keep-alive OPTIONS (no Route, no user) is answered as Kamailio's REQINIT does
        response = self.answer(self.invite(uri="sip:192.0.2.1", from_="<sip:alice@example.com>;tag=a",
                                           method="OPTIONS"), PHONE)
        self.assertEqual(response.code, 200)

    def test_forged_in_dialog_invite_from_a_served_user_is_challenged(self) -> None:
        forged = self.invite(uri="sip:victim@198.51.100.66", from_="<sip:alice@example.com>;tag=a",
                             to="<sip:victim@198.51.100.66>;tag=forged", headers=[("Route", "<sip:192.0.2.1;lr>")])
        self.assertEqual(self.answer(forged, PHONE).code, 407)

    def test_forged_in_dialog_invite_between_strangers_is_refused(self) -> None:
        forged = self.invite(uri="sip:victim@198.51.100.66", to="<sip:victim@198.51.100.66>;tag=forged",
                             headers=[("Route", "<sip:192.0.2.1;lr>")])
        self.assertEqual(self.answer(forged, OUTSIDE).code, 403)

    def test_in_dialog_bye_with_our_route_is_forwarded_as_loose_route_does(self) -> None:
        bye = self.invite(uri="sip:someone@198.51.100.66", method="BYE", to="<sip:someone@else.org>;tag=t",
                          headers=[("Route", "<sip:192.0.2.1:5060;lr>")])
        request_, addr = self.forwarded(bye, OUTSIDE)
        self.assertEqual(addr, VICTIM)


class ContactTokenTests(SynchronousTestCase):
    """Two legs: phones on 192.0.2.1, the internet on 203.0.113.1. The
    attacker registers a phone (no --users) and calls it with
    C{Contact: <victim>}: the INVITE the phone gets carries a token for the
    victim on the proxy's phone leg."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.inside, self.outside = MemoryLeg("192.0.2.1"), MemoryLeg("203.0.113.1")
        self.dispatcher = memory_dispatcher([self.inside, self.outside])
        door = FrontDoor(self.clock, MemoryStore(self.clock), registrar=True, domains=["example.com"],
                         secret=b"k" * 32)
        self.proxy = StatelessProxy(self.dispatcher, secret=b"p" * 32, clock=self.clock)
        self.dispatcher.set_receiver(ReceiveChain([*door(self.dispatcher), self.proxy]))
        self.inside.receive(request("REGISTER", uri="sip:example.com", from_="<sip:mallory@example.com>;tag=r",
                                    to="<sip:mallory@example.com>", contact="<sip:mallory@192.0.2.10>",
                                    via="SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKreg"), PHONE)
        self.assertEqual([m.code for m, _ in self.inside.take()], [200])
        self.outside.receive(request("INVITE", uri="sip:mallory@example.com", from_="<sip:x@example.org>;tag=x",
                                     to="<sip:mallory@example.com>", contact="<sip:victim@198.51.100.66>",
                                     via="SIP/2.0/UDP 203.0.113.5;branch=z9hG4bKmint"), OUTSIDE)
        [(invite, addr)] = self.inside.take()
        self.assertEqual(addr, ("192.0.2.10", 5060))
        self.token_uri = invite.name_addr("contact").uri
        self.assertTrue(self.token_uri.user.startswith("b"), self.token_uri)

    def new_call_to_token(self, branch: str, **kw: Any) -> list:
        self.inside.receive(request("INVITE", uri=str(self.token_uri), from_="<sip:y@example.org>;tag=y",
                                    to="<sip:victim@198.51.100.66>", via=f"SIP/2.0/UDP 192.0.2.10;branch={branch}",
                                    call_id=f"fraud-{branch}", **kw), PHONE)
        return self.inside.take() + self.outside.take()

    def test_a_dialog_token_does_not_start_new_calls(self) -> None:
        sent = self.new_call_to_token("z9hG4bKf1")
        self.assertEqual([addr for m, addr in sent if hasattr(m, "uri")], [], "a new call reached the victim")

    def test_a_dialog_token_expires(self) -> None:
        to_tag = "<sip:victim@198.51.100.66>;tag=v"
        self.inside.receive(request("BYE", uri=str(self.token_uri), to=to_tag, from_="<sip:y@example.org>;tag=y",
                                    via="SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKbye1",
                                    headers=[("Route", "<sip:192.0.2.1;lr>")]), PHONE)
        self.assertEqual([addr for _, addr in self.outside.take()], [VICTIM])  # within the dialog: honoured
        self.clock.advance(2 * 86400)
        self.inside.receive(request("BYE", uri=str(self.token_uri), to=to_tag, from_="<sip:y@example.org>;tag=y",
                                    via="SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKbye2", cseq=2,
                                    headers=[("Route", "<sip:192.0.2.1;lr>")]), PHONE)
        self.assertEqual(self.outside.take(), [], "an expired token was honoured")


class RegistrationTokenTests(SynchronousTestCase):
    """A REGISTER the proxy forwards to another registrar: the token in its
    Contact may start calls (the registrar's INVITEs), until the
    registration expires."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.inside, self.outside = MemoryLeg("192.0.2.1"), MemoryLeg("203.0.113.1")
        self.dispatcher = memory_dispatcher([self.inside, self.outside])
        self.proxy = StatelessProxy(self.dispatcher, secret=b"p" * 32, clock=self.clock)
        self.dispatcher.set_receiver(self.proxy)
        self.inside.receive(request("REGISTER", uri="sip:203.0.113.50", from_="<sip:al@203.0.113.50>;tag=r",
                                    to="<sip:al@203.0.113.50>", contact="<sip:al@192.0.2.10>;expires=600",
                                    via="SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKreg"), PHONE)
        [(register, addr)] = self.outside.take()
        self.assertEqual(addr, ("203.0.113.50", 5060))
        self.token_uri = register.name_addr("contact").uri

    def call_token(self, branch: str) -> list:
        self.outside.receive(request("INVITE", uri=str(self.token_uri), to=f"<{self.token_uri}>",
                                     via=f"SIP/2.0/UDP 203.0.113.50;branch={branch}"), ("203.0.113.50", 5060))
        return [addr for message, addr in self.inside.take() if hasattr(message, "uri")]

    def test_the_registrar_can_call_the_phone_until_the_registration_expires(self) -> None:
        self.assertEqual(self.call_token("z9hG4bKc1"), [PHONE])
        self.clock.advance(600 + 2 * 300)
        self.assertEqual(self.call_token("z9hG4bKc2"), [])
