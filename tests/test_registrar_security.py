"""The registrar on the open internet (issue 12): addresses-of-record
compare case-sensitively in the user part, an authenticated user binds only
its own, an address-of-record holds a bounded number of contacts, and the
200 fits in a UDP datagram."""
from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from sipproxy.access.digest_auth import Users
from tests.registrar_harness import FrontDoorHarness, credentials


def contacts(response: Any) -> list[str]:
    return response.get_all("contact")


class UserPartTests(FrontDoorHarness, SynchronousTestCase):
    def setUp(self) -> None:
        self.make(registrar=True, domains=["example.com"], users=Users({"bob": "b0b", "alice": "secret"}))

    def register_as(self, auth_user: str, password: str, aor_user: str, **kw: Any) -> Any:
        challenge = self.answer(self.register(user=aor_user, call_id=f"{auth_user}-{aor_user}", **kw))
        self.assertEqual(challenge.code, 401)
        auth = credentials(challenge.get("www-authenticate"), auth_user, password, "REGISTER", "sip:example.com")
        return self.answer(self.register(user=aor_user, call_id=f"{auth_user}-{aor_user}", cseq=2,
                                         headers=[("Authorization", auth)], **kw))

    def test_bob_cannot_bind_Bob(self) -> None:
        response = self.register_as("bob", "b0b", "Bob", contact="<sip:mallory@203.0.113.5>")
        self.assertEqual(response.code, 403)
        self.assertEqual(self.bindings("sip:Bob@example.com"), [])

    def test_bob_binds_bob(self) -> None:
        self.assertEqual(self.register_as("bob", "b0b", "bob").code, 200)

    def test_an_option_lets_a_user_bind_other_addresses(self) -> None:
        self.make(registrar=True, domains=["example.com"], users=Users({"pbx": "pw"}), register_any_aor=True)
        self.assertEqual(self.register_as("pbx", "pw", "alice").code, 200)
        self.assertEqual(self.register_as("pbx", "pw", "Bob").code, 200)

    def bindings(self, aor: str) -> list:
        found: list = []
        self.door.parts["registrar"].lookup(aor).addCallback(found.extend)
        return [b.contact for b in found]


class CaseTests(FrontDoorHarness, SynchronousTestCase):
    def setUp(self) -> None:
        self.make(registrar=True, domains=["example.com"])

    def test_user_parts_differing_in_case_are_different_addresses(self) -> None:
        self.answer(self.register(user="bob", contact="<sip:bob@192.0.2.10>", call_id="a"))
        response = self.answer(self.register(user="Bob", contact="<sip:Bob@192.0.2.11>", call_id="b"))
        self.assertEqual(contacts(response), ["<sip:Bob@192.0.2.11>;expires=3600"])
        request_, addr = self.forwarded(self.invite(uri="sip:bob@example.com"))
        self.assertEqual(addr, ("192.0.2.10", 5060))


class MaxContactsTests(FrontDoorHarness, SynchronousTestCase):
    def setUp(self) -> None:
        self.make(registrar=True, domains=["example.com"])

    def test_the_eleventh_contact_gets_403_by_default(self) -> None:
        for n in range(10):
            response = self.answer(self.register(contact=f"<sip:alice@192.0.2.{10 + n}>", call_id=f"c{n}"))
            self.assertEqual(response.code, 200)
        response = self.answer(self.register(contact="<sip:alice@192.0.2.99>", call_id="c10"))
        self.assertEqual(response.code, 403)
        # a refresh of a contact already bound is not a new one
        response = self.answer(self.register(contact="<sip:alice@192.0.2.10>", call_id="c0", cseq=2))
        self.assertEqual(response.code, 200)

    def test_the_limit_is_an_option(self) -> None:
        self.make(registrar=True, domains=["example.com"], max_contacts=2)
        self.assertEqual(self.answer(self.register(contact="<sip:alice@192.0.2.10>", call_id="a")).code, 200)
        self.assertEqual(self.answer(self.register(contact="<sip:alice@192.0.2.11>", call_id="b")).code, 200)
        self.assertEqual(self.answer(self.register(contact="<sip:alice@192.0.2.12>", call_id="c")).code, 403)
        self.assertEqual(self.answer(self.register(contact="<sip:alice@192.0.2.10>", call_id="a", cseq=2,
                                                   headers=[("Expires", "0")])).code, 200)
        self.assertEqual(self.answer(self.register(contact="<sip:alice@192.0.2.12>", call_id="c", cseq=2)).code, 200)


class AnswerSizeTests(FrontDoorHarness, SynchronousTestCase):
    def setUp(self) -> None:
        self.make(registrar=True, domains=["example.com"])

    def test_the_200_over_udp_stays_under_1300_bytes(self) -> None:
        long_user = "a" * 150
        for n in range(10):
            self.assertEqual(self.answer(self.register(contact=f"<sip:{long_user}@192.0.2.{10 + n}>",
                                                       call_id=f"c{n}")).code, 200)
        sent = self.send(self.register(contact=f"<sip:{long_user}@192.0.2.10>", call_id="c0", cseq=2))
        [(response, _)] = sent
        self.assertEqual(response.code, 200)
        self.assertLessEqual(len(bytes(response)), 1300)
        # the contact of this REGISTER is always listed, with its expiry
        self.assertIn(f"<sip:{long_user}@192.0.2.10>;expires=3600", contacts(response))
        self.assertLess(len(contacts(response)), 10)
