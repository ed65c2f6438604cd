"""The registrar: RFC 3261 10.3 rules, routing to bindings, RFC 4475's
registrar cases. In-memory legs, a task.Clock, the memory store."""
from __future__ import annotations

import os
from typing import Any

from twisted.internet.defer import fail
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from sipproxy.interfaces import ILocationStore
from sipproxy.registrar.location import StoreUnavailable
from sipproxy.registrar.registrar import Registrar
from sipproxy.testing import MemoryLeg, memory_dispatcher
from tests.registrar_harness import OUTSIDE, PHONE, FrontDoorHarness, credentials

RFC4475 = os.path.join(os.path.dirname(__file__), "rfc4475")


def contacts(response: Any) -> list[str]:
    return response.get_all("contact")


class RegisterTests(FrontDoorHarness, SynchronousTestCase):
    def setUp(self) -> None:
        self.make(registrar=True, domains=["example.com"], min_expires=60, max_expires=3600)

    def test_new_binding_gets_200_with_its_expiry_and_date(self) -> None:
        response = self.answer(self.register())
        self.assertEqual(response.code, 200)
        self.assertEqual(contacts(response), ["<sip:alice@192.0.2.10:5060>;expires=3600"])
        self.assertTrue(response.get("date").endswith("GMT"))
        self.assertTrue(response.to_tag)

    def test_bindings_are_merged_not_replaced(self) -> None:
        self.answer(self.register(contact="<sip:alice@192.0.2.10:5060>", call_id="phone-1"))
        response = self.answer(self.register(contact="<sip:alice@192.0.2.11:5060>", call_id="phone-2"))
        self.assertEqual(sorted(contacts(response)), ["<sip:alice@192.0.2.10:5060>;expires=3600",
                                                      "<sip:alice@192.0.2.11:5060>;expires=3600"])

    def test_several_contacts_in_one_register(self) -> None:
        response = self.answer(self.register(contact="<sip:alice@192.0.2.10>;expires=120, <sip:alice@192.0.2.12>"))
        self.assertEqual(sorted(contacts(response)), ["<sip:alice@192.0.2.10>;expires=120",
                                                      "<sip:alice@192.0.2.12>;expires=3600"])

    def test_older_cseq_of_same_call_id_fails(self) -> None:
        self.answer(self.register(cseq=5))
        response = self.answer(self.register(cseq=4, contact="<sip:alice@192.0.2.10:5060>;expires=0"))
        self.assertEqual(response.code, 500)
        self.assertIn("out of order", response.reason)
        self.assertEqual(len(contacts(self.answer(self.register(contact="", cseq=6)))), 1)

    def test_retransmission_with_same_cseq_is_answered_again(self) -> None:
        first = self.answer(self.register(cseq=5))
        again = self.answer(self.register(cseq=5))
        self.assertEqual((first.code, again.code), (200, 200))
        self.assertEqual(first.to_tag, again.to_tag)

    def test_newer_cseq_and_other_call_id_update(self) -> None:
        self.answer(self.register(cseq=5))
        self.assertEqual(self.answer(self.register(cseq=6, contact="<sip:alice@192.0.2.10:5060>;expires=0")).code,
                         200)
        self.answer(self.register(cseq=7, call_id="a"))
        response = self.answer(self.register(cseq=1, call_id="b", contact="<sip:alice@192.0.2.10:5060>;expires=0"))
        self.assertEqual((response.code, contacts(response)), (200, []))

    def test_star_with_expires_zero_removes_all(self) -> None:
        self.answer(self.register(call_id="phone-1"))
        self.answer(self.register(contact="<sip:alice@192.0.2.11>", call_id="phone-2"))
        response = self.answer(self.register(contact="*", call_id="phone-3", headers=[("Expires", "0")]))
        self.assertEqual((response.code, contacts(response)), (200, []))
        self.assertEqual(contacts(self.answer(self.register(contact="", cseq=2))), [])

    def test_star_needs_expires_zero_and_no_other_contact(self) -> None:
        self.answer(self.register())
        for contact, headers in (("*", []), ("*", [("Expires", "10")]), ("*, <sip:alice@192.0.2.10>",
                                                                       [("Expires", "0")])):
            response = self.answer(self.register(contact=contact, cseq=2, headers=headers))
            self.assertEqual(response.code, 400, contact)
        self.assertEqual(len(contacts(self.answer(self.register(contact="", cseq=3)))), 1)

    def test_register_without_contact_is_a_query(self) -> None:
        self.answer(self.register(contact="<sip:alice@192.0.2.10>;expires=600"))
        self.clock.advance(100)
        response = self.answer(self.register(contact="", cseq=2))
        self.assertEqual((response.code, contacts(response)), (200, ["<sip:alice@192.0.2.10>;expires=500"]))

    def test_200_lists_every_binding_with_remaining_time(self) -> None:
        self.answer(self.register(contact="<sip:alice@192.0.2.10>;expires=600", call_id="one"))
        self.clock.advance(250)
        response = self.answer(self.register(contact="<sip:alice@192.0.2.11>;expires=900", call_id="two"))
        self.assertEqual(sorted(contacts(response)), ["<sip:alice@192.0.2.10>;expires=350",
                                                      "<sip:alice@192.0.2.11>;expires=900"])

    def test_too_brief_gets_423_with_min_expires(self) -> None:
        response = self.answer(self.register(contact="<sip:alice@192.0.2.10>;expires=30"))
        self.assertEqual(response.code, 423)
        self.assertEqual(response.get("min-expires"), "60")
        self.assertEqual(contacts(self.answer(self.register(contact="", cseq=2))), [])

    def test_too_brief_header_gets_423(self) -> None:
        response = self.answer(self.register(headers=[("Expires", "59")]))
        self.assertEqual((response.code, response.get("min-expires")), (423, "60"))

    def test_expires_precedence_and_cap(self) -> None:
        cases = [
            ("<sip:alice@192.0.2.10>;expires=120", [("Expires", "600")], "expires=120"),  # param first
            ("<sip:alice@192.0.2.10>", [("Expires", "600")], "expires=600"),  # then the header
            ("<sip:alice@192.0.2.10>", [], "expires=3600"),  # then the default
            ("<sip:alice@192.0.2.10>;expires=86400", [], "expires=3600"),  # capped
            ("<sip:alice@192.0.2.10>", [("Expires", "99999")], "expires=3600"),
            ("<sip:alice@192.0.2.10>;expires=soon", [("Expires", "300")], "expires=300"),  # bad param ignored
        ]
        for cseq, (contact, headers, wanted) in enumerate(cases, 1):
            response = self.answer(self.register(contact=contact, headers=headers, cseq=cseq))
            self.assertEqual(contacts(response), [f"<sip:alice@192.0.2.10>;{wanted}"], contact)

    def test_instance_reg_id_and_other_params_are_kept(self) -> None:
        contact = '<sip:alice@192.0.2.10:5060;ob>;+sip.instance="<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>";reg-id=1;q=0.5'
        response = self.answer(self.register(contact=contact))
        self.assertEqual(contacts(response), [contact + ";expires=3600"])

    def test_same_instance_from_a_new_address_replaces_the_old_binding(self) -> None:
        instance = '+sip.instance="<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>";reg-id=1'
        self.answer(self.register(contact=f"<sip:alice@192.0.2.10:5060>;{instance}"))
        response = self.answer(self.register(contact=f"<sip:alice@198.51.100.9:41000>;{instance}", cseq=2))
        self.assertEqual(contacts(response), [f"<sip:alice@198.51.100.9:41000>;{instance};expires=3600"])

    def test_path_is_kept_echoed_when_supported_and_routed_through(self) -> None:
        headers = [("Path", "<sip:edge.example.net;lr>"), ("Supported", "path")]
        response = self.answer(self.register(headers=headers))
        self.assertEqual(response.get_all("path"), ["<sip:edge.example.net;lr>"])
        plain = self.answer(self.register(cseq=2, headers=[("Path", "<sip:edge.example.net;lr>")]))
        self.assertEqual(plain.get_all("path"), [])
        request, addr = self.forwarded(self.invite(), OUTSIDE)
        self.assertEqual(request.uri, "sip:alice@192.0.2.10:5060")
        self.assertEqual(addr, ("192.0.2.50", 5060))
        self.assertEqual(request.get_all("route"), ["<sip:edge.example.net;lr>"])

    def test_require_unknown_extension_gets_420(self) -> None:
        response = self.answer(self.register(headers=[("Require", "path, gruu")]))
        self.assertEqual((response.code, response.get("unsupported")), (420, "gruu"))

    def test_domains_match_exactly_or_as_true_subdomains(self) -> None:
        self.assertEqual(self.answer(self.register(domain="example.com")).code, 200)
        self.assertEqual(self.answer(self.register(domain="sales.EXAMPLE.com", call_id="s")).code, 200)
        # not by string suffix: badexample.com is not served, so the
        # REGISTER is not the registrar's, and the relay guard refuses it
        response = self.answer(self.register(domain="badexample.com", call_id="b"))
        self.assertEqual(response.code, 403)

    def test_register_for_other_domain_from_our_user_goes_on_to_the_proxy(self) -> None:
        data = self.register(uri="sip:192.0.2.99", domain="192.0.2.99").replace(
            b"From: <sip:alice@192.0.2.99>", b"From: <sip:alice@example.com>")
        request, addr = self.forwarded(data)
        self.assertEqual((request.method, addr), ("REGISTER", ("192.0.2.99", 5060)))

    def test_to_in_foreign_domain_gets_404(self) -> None:
        data = self.register().replace(b"To: <sip:alice@example.com>", b"To: <sip:alice@example.org>")
        self.assertEqual(self.answer(data).code, 404)

    def test_proxy_address_counts_as_served_domain(self) -> None:
        response = self.answer(self.register(uri="sip:192.0.2.1", domain="192.0.2.1"))
        self.assertEqual(response.code, 200)

    def test_unparseable_contact_gets_400_and_nothing_is_stored(self) -> None:
        self.assertEqual(self.answer(self.register(contact="<sip:alice@192.0.2.10>, <bad uri")).code, 400)
        self.assertEqual(contacts(self.answer(self.register(contact="", cseq=2))), [])


class RoutingTests(FrontDoorHarness, SynchronousTestCase):
    def setUp(self) -> None:
        self.make(registrar=True, domains=["example.com"])

    def test_invite_goes_to_the_binding(self) -> None:
        self.answer(self.register())
        request, addr = self.forwarded(self.invite(), OUTSIDE)
        self.assertEqual((request.uri, addr), ("sip:alice@192.0.2.10:5060", PHONE))
        self.assertEqual(request.get("to"), "<sip:alice@example.com>")

    def test_highest_q_then_most_recent(self) -> None:
        self.answer(self.register(contact="<sip:alice@192.0.2.10>;q=0.5", call_id="a"))
        self.clock.advance(10)
        self.answer(self.register(contact="<sip:alice@192.0.2.11>;q=0.9", call_id="b"))
        self.clock.advance(10)
        self.answer(self.register(contact="<sip:alice@192.0.2.12>;q=0.9", call_id="c"))
        request, _ = self.forwarded(self.invite(), OUTSIDE)
        self.assertEqual(request.uri, "sip:alice@192.0.2.12")
        self.clock.advance(10)
        self.answer(self.register(contact="<sip:alice@192.0.2.11>;q=0.9", call_id="b", cseq=2))
        request, _ = self.forwarded(self.invite(branch="z9hG4bKinv2"), OUTSIDE)
        self.assertEqual(request.uri, "sip:alice@192.0.2.11")

    def test_unknown_user_of_served_domain_gets_404_and_its_ack_is_dropped(self) -> None:
        response = self.answer(self.invite(uri="sip:nobody@example.com"), OUTSIDE)
        self.assertEqual(response.code, 404)
        ack = self.invite(uri="sip:nobody@example.com", method="ACK", to="<sip:nobody@example.com>")
        self.assertEqual(self.send(ack, OUTSIDE), [])

    def test_expired_binding_is_unknown(self) -> None:
        self.answer(self.register(contact="<sip:alice@192.0.2.10>;expires=60"))
        self.clock.advance(61)
        self.assertEqual(self.answer(self.invite(), OUTSIDE).code, 404)

    def test_port_of_own_leg_is_not_part_of_the_aor(self) -> None:
        self.answer(self.register(uri="sip:192.0.2.1", domain="192.0.2.1"))
        request, addr = self.forwarded(self.invite(uri="sip:alice@192.0.2.1:5060"), OUTSIDE)
        self.assertEqual((request.uri, addr), ("sip:alice@192.0.2.10:5060", PHONE))

    def test_unknown_user_at_proxy_address_is_left_to_the_proxy(self) -> None:
        response = self.answer(self.invite(uri="sip:nobody@192.0.2.1"), OUTSIDE)
        self.assertEqual(response.code, 404)
        self.assertEqual(response.reason, "Not Found (no such user here)")  # the proxy's answer

    def test_requests_in_a_dialog_are_not_retargeted(self) -> None:
        self.answer(self.register())
        bye = self.invite(method="BYE", to="<sip:alice@example.com>;tag=a1", cseq=2)
        request, addr = self.forwarded(bye, OUTSIDE)
        self.assertEqual(request.uri, "sip:alice@example.com")

    def test_cancel_follows_its_invite(self) -> None:
        self.answer(self.register())
        invite, _ = self.forwarded(self.invite(), OUTSIDE)
        cancel, addr = self.forwarded(self.invite(method="CANCEL"), OUTSIDE)
        self.assertEqual((cancel.uri, addr), (invite.uri, PHONE))
        self.assertEqual(cancel.top_via().branch, invite.top_via().branch)

    def test_without_domains_unknown_users_are_forwarded(self) -> None:
        self.make(registrar=True)
        request, addr = self.forwarded(self.invite(uri="sip:nobody@example.com"), OUTSIDE)
        self.assertEqual((request.uri, addr), ("sip:nobody@example.com", ("192.0.2.77", 5060)))


@implementer(ILocationStore)
class DownStore:
    """A store whose backend is unreachable."""

    def lookup(self, aor: str) -> Any:
        return fail(StoreUnavailable("redis down", retry_after=9))

    def update(self, *args: Any, **kw: Any) -> Any:
        return fail(StoreUnavailable("redis down", retry_after=9))

    def has_contact(self, key: str) -> Any:
        return fail(StoreUnavailable("redis down", retry_after=9))

    def close(self) -> Any:
        return None


class StoreOutageTests(FrontDoorHarness, SynchronousTestCase):
    def setUp(self) -> None:
        self.make(store=DownStore(), registrar=True, domains=["example.com"])

    def test_register_gets_503_with_retry_after(self) -> None:
        response = self.answer(self.register())
        self.assertEqual((response.code, response.get("retry-after")), (503, "9"))

    def test_call_gets_503_with_retry_after_and_ack_is_dropped(self) -> None:
        response = self.answer(self.invite(), OUTSIDE)
        self.assertEqual((response.code, response.get("retry-after")), (503, "9"))
        self.assertEqual(self.send(self.invite(method="ACK", to="<sip:alice@example.com>"), OUTSIDE), [])


class RegistrarArgumentsTests(SynchronousTestCase):
    def test_min_above_max_is_refused(self) -> None:
        dispatcher = memory_dispatcher([MemoryLeg()])
        self.assertRaises(ValueError, Registrar, dispatcher, min_expires=100, max_expires=50)

    def test_lookup_api(self) -> None:
        dispatcher = memory_dispatcher([MemoryLeg()])
        registrar = Registrar(dispatcher)
        result = []
        registrar.lookup("sip:alice@example.com").addCallback(result.append)
        self.assertEqual(result, [[]])


class RFC4475RegistrarTests(FrontDoorHarness, SynchronousTestCase):
    """RFC 4475 3.3.12-3.3.14, 3.1.2.13 and 3.3.7 as a registrar sees them."""

    def setUp(self) -> None:
        self.make(registrar=True, domains=["example.com"])

    def load(self, name: str) -> bytes:
        with open(os.path.join(RFC4475, name), "rb") as f:
            return f.read()

    def test_cparam01_unknownparam_is_a_contact_parameter(self) -> None:
        response = self.answer(self.load("cparam01.dat"), ("192.0.2.40", 5060))
        self.assertEqual(response.code, 200)
        self.assertEqual(contacts(response), ["<sip:+19725552222@gw1.example.net>;unknownparam;expires=3600"])
        request, _ = self.forwarded(self.invite(uri="sip:watson@example.com"), OUTSIDE)
        self.assertEqual(request.uri, "sip:+19725552222@gw1.example.net")  # not a URI parameter

    def test_cparam02_unknownparam_is_a_uri_parameter(self) -> None:
        response = self.answer(self.load("cparam02.dat"), ("192.0.2.40", 5060))
        self.assertEqual(response.code, 200)
        self.assertEqual(contacts(response), ["<sip:+19725552222@gw1.example.net;unknownparam>;expires=3600"])
        request, _ = self.forwarded(self.invite(uri="sip:watson@example.com"), OUTSIDE)
        self.assertEqual(request.uri, "sip:+19725552222@gw1.example.net;unknownparam")

    def test_regescrt_escaped_header_is_stored_but_route_not_honoured(self) -> None:
        response = self.answer(self.load("regescrt.dat"), ("192.0.2.40", 5060))
        self.assertEqual(response.code, 200)
        self.assertEqual(contacts(response), ["<sip:user@example.com?Route=%3Csip:sip.example.com%3E>;expires=3600"])
        request, _ = self.forwarded(self.invite(uri="sip:user@example.com").replace(b"Contact", b"X-C"), OUTSIDE)
        # the binding's own domain is served: it is looked up again and is
        # its own binding; what matters: no header in the Request-URI, no Route
        self.assertEqual(request.uri, "sip:user@example.com")
        self.assertEqual(request.get_all("route"), [])

    def test_regbadct_unbracketed_uri_with_header_is_refused(self) -> None:
        response = self.answer(self.load("regbadct.dat"), ("192.0.2.40", 5060))
        self.assertEqual(response.code, 400)
        self.assertIn("Contact", response.reason)
        query = self.register(user="user", contact="", call_id="q")
        self.assertEqual(contacts(self.answer(query)), [])

    def test_regaut01_unknown_authorization_scheme_gets_a_digest_challenge(self) -> None:
        self.make(registrar=True, domains=["example.com"], users={"j.user": "pw"}, realm="example.com")
        response = self.answer(self.load("regaut01.dat"), ("192.0.2.253", 5060))
        self.assertEqual(response.code, 401)
        self.assertTrue(all(v.startswith("Digest ") for v in response.get_all("www-authenticate")))
        query = self.register(user="j.user", contact="", call_id="q")
        challenge = self.answer(query).get_all("www-authenticate")[0]
        auth = credentials(challenge, "j.user", "pw", "REGISTER", "sip:example.com")
        answer = self.answer(self.register(user="j.user", contact="", call_id="q", cseq=2,
                                           headers=[("Authorization", auth)]))
        self.assertEqual((answer.code, contacts(answer)), (200, []))
