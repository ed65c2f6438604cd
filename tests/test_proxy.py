"""StatelessProxy behaviour, driven through in-memory legs (no sockets)."""
from __future__ import annotations

import hashlib

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from sipproxy.sip.message import Request, Response, parse
from sipproxy.proxy.stateless import NATError, StatelessProxy
from sipproxy.proxy.routing import parse_proxy
from sipproxy.testing import MemoryLeg, memory_dispatcher
from tests.sip import request

SECRET = b"s" * 32
UAC = ("192.0.2.10", 5060)
UAS = ("198.51.100.20", 5060)


class ProxyTestCase(SynchronousTestCase):
    """Two legs: A on 192.0.2.1 (the UAC's side), B on 198.51.100.1."""

    def setUp(self) -> None:
        self.a = MemoryLeg("192.0.2.1")
        self.b = MemoryLeg("198.51.100.1")
        self.make_proxy([self.a, self.b])

    def make_proxy(self, legs, hosts=None, **options) -> None:
        proxy_options = {k: options.pop(k) for k in ("force_rewrite", "rewrite_contact", "nathelper") if k in options}
        self.dispatcher = memory_dispatcher(legs, hosts=hosts or {}, **options)
        self.proxy = StatelessProxy(self.dispatcher, secret=SECRET, **proxy_options)
        self.dispatcher.set_receiver(self.proxy)

    def only(self, leg: MemoryLeg):
        sent = leg.take()
        self.assertEqual(len(sent), 1, f"expected one message on {leg.key}, got {sent!r}")
        return sent[0]

    def forward_invite(self, **kw):
        self.a.receive(request(**kw), UAC)
        return self.only(self.b)

    def answer(self, forwarded: Request, code: int = 200, contact: str = "<sip:bob@198.51.100.20>") -> Response:
        return forwarded.create_response(code, to_tag="bob1", headers=[("Contact", contact)], record_route=True)


class RequestForwardingTests(ProxyTestCase):
    def test_forwarded_between_legs_with_via_and_record_route(self) -> None:
        message, addr = self.forward_invite()
        self.assertEqual(addr, UAS)
        vias = message.get_all("via")
        self.assertEqual(len(vias), 2)
        self.assertTrue(vias[0].startswith("SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bK"))
        self.assertEqual(vias[1], "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKuac1")
        self.assertEqual(message.get_all("record-route"),
                         ["<sip:198.51.100.1:5060;lr>", "<sip:192.0.2.1:5060;lr>"])
        self.assertEqual(message.get("max-forwards"), "69")
        self.assertEqual(self.a.sent, [])

    def test_one_leg_adds_one_record_route(self) -> None:
        leg = MemoryLeg("192.0.2.1")
        self.make_proxy([leg])
        leg.receive(request(uri="sip:bob@192.0.2.20"), UAC)
        message, addr = self.only(leg)
        self.assertEqual(addr, ("192.0.2.20", 5060))
        self.assertEqual(message.get_all("record-route"), ["<sip:192.0.2.1:5060;lr>"])
        self.assertEqual(message.get("contact"), "<sip:alice@192.0.2.10:5060>")

    def test_unchanged_headers_are_forwarded_byte_for_byte(self) -> None:
        raw = request(headers=[("X-Odd", "  spaced ,  value "), ("Subject", "hi")])
        message, _ = self.forward_invite(headers=[("X-Odd", "  spaced ,  value "), ("Subject", "hi")])
        out = bytes(message)
        self.assertIn(b"\r\nX-Odd:   spaced ,  value \r\n", out)
        self.assertIn(b"\r\nFrom: <sip:alice@atlanta.example.com>;tag=alice1\r\n", out)
        self.assertIn(b"Subject: hi", raw)

    def test_no_record_route_on_register_or_in_dialog(self) -> None:
        self.a.receive(request("REGISTER", uri="sip:198.51.100.20", contact="<sip:alice@192.0.2.10>"), UAC)
        message, _ = self.only(self.b)
        self.assertEqual(message.get_all("record-route"), [])
        self.a.receive(request("BYE", to="<sip:bob@biloxi.example.com>;tag=b1", cseq=2), UAC)
        message, _ = self.only(self.b)
        self.assertEqual(message.get_all("record-route"), [])

    def test_missing_max_forwards_is_added(self) -> None:
        message, _ = self.forward_invite(max_forwards=None)
        self.assertEqual(message.get("max-forwards"), "70")

    def test_max_forwards_zero_gets_483(self) -> None:
        self.a.receive(request(max_forwards=0), UAC)
        self.assertEqual(self.b.sent, [])
        response, addr = self.only(self.a)
        self.assertEqual(response.code, 483)
        self.assertEqual(addr, UAC)
        self.assertTrue(response.to_tag)

    def test_max_forwards_one_is_forwarded_with_zero(self) -> None:
        message, _ = self.forward_invite(max_forwards=1)
        self.assertEqual(message.get("max-forwards"), "0")

    def test_ack_of_our_own_error_response_is_absorbed(self) -> None:
        self.a.receive(request(max_forwards=0), UAC)
        response, _ = self.only(self.a)
        self.a.receive(request("ACK", to=response.get("to"), contact=None), UAC)
        self.assertEqual((self.a.sent, self.b.sent), ([], []))
        # an ACK for someone else's answer still goes through
        self.a.receive(request("ACK", to="<sip:bob@biloxi.example.com>;tag=bob1", contact=None), UAC)
        self.assertEqual(len(self.b.sent), 1)

    def test_proxy_require_gets_420(self) -> None:
        self.a.receive(request(headers=[("Proxy-Require", "noodles, nuts")]), UAC)
        response, _ = self.only(self.a)
        self.assertEqual(response.code, 420)
        self.assertEqual(response.get_all("unsupported"), ["noodles", "nuts"])
        self.assertEqual(self.b.sent, [])

    def test_unknown_scheme_gets_416(self) -> None:
        self.a.receive(request(uri="nobodyknowsthisscheme:totallyopaquecontent"), UAC)
        response, _ = self.only(self.a)
        self.assertEqual(response.code, 416)

    def test_tel_uri_without_gateway_gets_404(self) -> None:
        self.a.receive(request(uri="tel:+1-201-555-0123"), UAC)
        self.assertEqual(self.only(self.a)[0].code, 404)

    def test_tel_uri_goes_to_outgoing_proxy(self) -> None:
        self.make_proxy([self.a, self.b], outgoing_proxy=parse_proxy("198.51.100.99:5070"))
        self.a.receive(request(uri="tel:+1-201-555-0123"), UAC)
        _, addr = self.only(self.b)
        self.assertEqual(addr, ("198.51.100.99", 5070))

    def test_maddr_and_transport_are_honoured(self) -> None:
        tcp = MemoryLeg("198.51.100.1", 5060, "tcp")
        self.make_proxy([self.a, self.b, tcp])
        self.a.receive(request(uri="sip:bob@example.com;maddr=198.51.100.30;transport=tcp"), UAC)
        message, addr = self.only(tcp)
        self.assertEqual(addr, ("198.51.100.30", 5060))
        self.assertTrue(message.get("via").startswith("SIP/2.0/TCP 198.51.100.1:5060;"))
        self.assertIn("<sip:198.51.100.1:5060;transport=tcp;lr>", message.get_all("record-route"))

    def test_tcp_only_proxy_forwards_sip_uri_over_tcp(self) -> None:
        tcp = MemoryLeg("192.0.2.1", 5060, "tcp")
        self.make_proxy([tcp])
        tcp.receive(request(uri="sip:bob@192.0.2.20", via="SIP/2.0/TCP 192.0.2.10:5060;branch=z9hG4bKt"), UAC)
        message, addr = self.only(tcp)
        self.assertEqual(addr, ("192.0.2.20", 5060))
        self.assertEqual(message.method, "INVITE")

    def test_leg_bound_to_destination_ip_wins(self) -> None:
        one, two = MemoryLeg("127.0.0.1"), MemoryLeg("127.0.0.2")
        self.make_proxy([one, two], local_address=lambda ip: "127.0.0.1")
        one.receive(request(uri="sip:service@127.0.0.2:5090"), ("127.0.0.1", 5091))
        _, addr = self.only(two)
        self.assertEqual(addr, ("127.0.0.2", 5090))

    def test_kernel_source_address_picks_the_leg(self) -> None:
        self.make_proxy([self.a, self.b], local_address=lambda ip: "198.51.100.1")
        self.a.receive(request(uri="sip:bob@203.0.113.5"), UAC)
        _, addr = self.only(self.b)
        self.assertEqual(addr, ("203.0.113.5", 5060))

    def test_first_leg_when_nothing_else_decides(self) -> None:
        self.make_proxy([self.a, self.b], local_address=lambda ip: None)
        self.b.receive(request(uri="sip:bob@203.0.113.5"), UAS)
        _, addr = self.only(self.a)
        self.assertEqual(addr, ("203.0.113.5", 5060))

    def test_name_resolved_through_the_resolver(self) -> None:
        self.make_proxy([self.a, self.b], hosts={"biloxi.example.com": ["198.51.100.20"]})
        self.a.receive(request(uri="sip:bob@biloxi.example.com"), UAC)
        _, addr = self.only(self.b)
        self.assertEqual(addr, UAS)

    def test_unresolvable_name_gets_404(self) -> None:
        self.a.receive(request(uri="sip:bob@nowhere.invalid"), UAC)
        response, _ = self.only(self.a)
        self.assertEqual(response.code, 404)
        self.assertEqual(self.b.sent, [])

    def test_no_leg_for_the_family_gets_503(self) -> None:
        self.a.receive(request(uri="sip:bob@[2001:db8::1]"), UAC)
        response, _ = self.only(self.a)
        self.assertEqual(response.code, 503)

    def test_slow_resolver_forwards_later(self) -> None:
        pending: Deferred = Deferred()

        class SlowResolver:
            def resolve_host(self, name):
                return pending

        self.dispatcher.resolver = SlowResolver()
        self.a.receive(request(uri="sip:bob@biloxi.example.com"), UAC)
        self.assertEqual(self.b.sent, [])
        pending.callback(["198.51.100.20"])
        _, addr = self.only(self.b)
        self.assertEqual(addr, UAS)


class Domain2ProxyTests(ProxyTestCase):
    def setUp(self) -> None:
        super().setUp()
        table = {
            "example.com": parse_proxy("198.51.100.31"),
            "*.example.com": parse_proxy("sip:198.51.100.32:5070"),
            "*": parse_proxy("198.51.100.33"),
        }
        self.make_proxy([self.a, self.b], domain2proxy=table)

    def target(self, uri: str):
        self.a.receive(request(uri=uri), UAC)
        return self.only(self.b)[1]

    def test_exact_domain(self) -> None:
        self.assertEqual(self.target("sip:bob@example.com"), ("198.51.100.31", 5060))

    def test_parent_domain(self) -> None:
        self.assertEqual(self.target("sip:bob@a.b.example.com"), ("198.51.100.32", 5070))

    def test_catch_all(self) -> None:
        self.assertEqual(self.target("sip:bob@example.org"), ("198.51.100.33", 5060))

    def test_request_uri_is_kept(self) -> None:
        self.a.receive(request(uri="sip:bob@example.com"), UAC)
        self.assertEqual(self.only(self.b)[0].uri, "sip:bob@example.com")


class RouteTests(ProxyTestCase):
    def test_own_routes_are_removed_and_pick_the_leg(self) -> None:
        routes = "<sip:192.0.2.1:5060;lr>, <sip:198.51.100.1:5060;lr>"
        self.a.receive(request("BYE", to="<sip:bob@b>;tag=1", cseq=2, headers=[("Route", routes)]), UAC)
        message, addr = self.only(self.b)
        self.assertEqual(message.get_all("route"), [])
        self.assertEqual(addr, UAS)

    def test_next_route_is_the_target(self) -> None:
        routes = "<sip:192.0.2.1:5060;lr>, <sip:198.51.100.50:5080;lr>"
        self.a.receive(request("BYE", to="<sip:bob@b>;tag=1", headers=[("Route", routes)]), UAC)
        message, addr = self.only(self.b)
        self.assertEqual(addr, ("198.51.100.50", 5080))
        self.assertEqual(message.get_all("route"), ["<sip:198.51.100.50:5080;lr>"])
        self.assertEqual(message.uri, "sip:bob@198.51.100.20")

    def test_strict_router_before_us_is_undone(self) -> None:
        # A strict router put our Record-Route URI into the Request-URI and
        # the remote target into the last Route (RFC 3261 16.4).
        routes = "<sip:198.51.100.50:5080;lr>, <sip:bob@198.51.100.20>"
        self.a.receive(request("BYE", uri="sip:192.0.2.1:5060;lr", to="<sip:bob@b>;tag=1",
                               headers=[("Route", routes)]), UAC)
        message, addr = self.only(self.b)
        self.assertEqual(message.uri, "sip:bob@198.51.100.20")
        self.assertEqual(message.get_all("route"), ["<sip:198.51.100.50:5080;lr>"])
        self.assertEqual(addr, ("198.51.100.50", 5080))

    def test_options_for_the_proxy_itself_gets_200(self) -> None:
        self.a.receive(request("OPTIONS", uri="sip:192.0.2.1:5060"), UAC)
        response, _ = self.only(self.a)
        self.assertEqual(response.code, 200)
        self.assertEqual(self.b.sent, [])

    def test_unknown_user_at_the_proxy_gets_404(self) -> None:
        self.a.receive(request("INVITE", uri="sip:carol@192.0.2.1"), UAC)
        self.assertEqual(self.only(self.a)[0].code, 404)


class LoopTests(ProxyTestCase):
    def test_request_that_comes_back_unchanged_gets_482(self) -> None:
        leg = MemoryLeg("192.0.2.1")
        # domain2proxy points the domain at the proxy itself: a real loop
        self.make_proxy([leg], domain2proxy={"loop.example": parse_proxy("192.0.2.1")})
        leg.receive(request(uri="sip:bob@loop.example"), UAC)
        looped, addr = self.only(leg)
        self.assertEqual(addr, ("192.0.2.1", 5060))
        leg.receive(looped, addr)
        response, dst = self.only(leg)
        self.assertEqual(response.code, 482)
        self.assertEqual(dst, ("192.0.2.1", 5060))
        # the 482 travels back to us, loses our Via and reaches the UAC
        leg.receive(response, dst)
        final, dst = self.only(leg)
        self.assertEqual((final.code, dst), (482, UAC))

    def test_spiral_with_changed_request_uri_is_forwarded(self) -> None:
        ours = self.proxy.branches.branch(parse(request(uri="sip:bob@example.com")), 0)
        via = f"SIP/2.0/UDP 192.0.2.1:5060;branch={ours}"
        self.a.receive(request(uri="sip:bob@198.51.100.20", via=via,
                               extra_vias=["SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKx"]), ("192.0.2.1", 5060))
        message, _ = self.only(self.b)
        self.assertEqual(len(message.get_all("via")), 3)


class BranchTests(ProxyTestCase):
    def branch_of(self, raw: bytes) -> str:
        self.a.receive(raw, UAC)
        return self.only(self.b)[0].top_via().branch

    def test_retransmission_gets_the_same_branch(self) -> None:
        self.assertEqual(self.branch_of(request()), self.branch_of(request()))

    def test_cancel_and_non_2xx_ack_share_the_invite_branch(self) -> None:
        invite = self.branch_of(request())
        cancel = self.branch_of(request("CANCEL", contact=None))
        ack = self.branch_of(request("ACK", to="<sip:bob@biloxi.example.com>;tag=b7", contact=None))
        self.assertEqual(invite, cancel)
        self.assertEqual(invite, ack)

    def test_new_transaction_new_branch(self) -> None:
        first = self.branch_of(request())
        second = self.branch_of(request(via="SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKuac2", cseq=2))
        self.assertNotEqual(first, second)

    def test_rfc2543_client_gets_stable_distinct_branches(self) -> None:
        old = "SIP/2.0/UDP 192.0.2.10:5060"
        first = self.branch_of(request(via=old))
        again = self.branch_of(request(via=old))
        other = self.branch_of(request(via=old, cseq=5))
        self.assertEqual(first, again)
        self.assertNotEqual(first, other)
        self.assertTrue(first.startswith("z9hG4bK"))

    def test_branch_digest_is_plain_md5(self) -> None:
        """Workers and nodes sharing a secret must agree on branches, with or
        without CPython's built-in MD5 (OpenSSL's is the fallback)."""
        from sipproxy.proxy.branch import _md5

        self.assertEqual(_md5("z9hG4bKuac", "192.0.2.10:5060"),
                         hashlib.md5(b"z9hG4bKuac\x00192.0.2.10:5060").hexdigest())


class ResponseTests(ProxyTestCase):
    def test_response_returns_through_the_incoming_leg(self) -> None:
        forwarded, _ = self.forward_invite()
        self.b.receive(self.answer(forwarded), UAS)
        response, addr = self.only(self.a)
        self.assertEqual(addr, UAC)
        self.assertEqual(response.get_all("via"), ["SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKuac1"])
        self.assertEqual(self.b.sent, [])

    def test_received_and_rport_are_honoured(self) -> None:
        forwarded, _ = self.forward_invite(via="SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKnat;rport")
        self.assertEqual(forwarded.get_all("via")[1],
                         "SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKnat;rport=5060;received=192.0.2.10")
        self.b.receive(self.answer(forwarded), UAS)
        _, addr = self.only(self.a)
        self.assertEqual(addr, UAC)

    def test_received_without_rport_uses_sent_by_port(self) -> None:
        self.a.receive(request(via="SIP/2.0/UDP 10.0.0.5:5070;branch=z9hG4bKnat"), ("192.0.2.10", 40000))
        forwarded, _ = self.only(self.b)
        self.b.receive(self.answer(forwarded), UAS)
        _, addr = self.only(self.a)
        self.assertEqual(addr, ("192.0.2.10", 5070))

    def test_response_with_a_foreign_via_is_dropped(self) -> None:
        raw = (b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.198;branch=z9hG4bK1324923\r\n"
               b"Via: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\n"
               b"To: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")
        self.b.receive(raw, UAS)
        self.assertEqual((self.a.sent, self.b.sent), ([], []))

    def test_broadcast_via_is_not_answered(self) -> None:
        # RFC 4475 3.3.10: never send to a broadcast address
        forwarded, _ = self.forward_invite()
        response = self.answer(forwarded)
        response.set_all("via", [forwarded.get("via"), "SIP/2.0/UDP 255.255.255.255;branch=z9hG4bK1saber23"])
        self.b.receive(response, UAS)
        self.assertEqual(self.a.sent, [])

    def test_maddr_in_via_wins(self) -> None:
        forwarded, _ = self.forward_invite(via="SIP/2.0/UDP 192.0.2.10;maddr=192.0.2.77;branch=z9hG4bKm")
        self.b.receive(self.answer(forwarded), UAS)
        _, addr = self.only(self.a)
        self.assertEqual(addr, ("192.0.2.77", 5060))


class ContactRewriteTests(ProxyTestCase):
    def test_contact_is_tokenised_and_the_token_routes_back(self) -> None:
        forwarded, _ = self.forward_invite()
        contact = forwarded.name_addr("contact")
        self.assertEqual(contact.uri.host, "198.51.100.1")
        self.assertTrue(contact.uri.user.startswith("b"))
        self.assertNotIn("192.0.2.10", str(contact))
        # the callee sends BYE to the caller's (tokenised) contact
        bye = request("BYE", uri=str(contact.uri), via="SIP/2.0/UDP 198.51.100.20;branch=z9hG4bKbye",
                      from_="<sip:bob@b>;tag=bob1", to="<sip:alice@a>;tag=alice1", contact=None)
        self.b.receive(bye, UAS)
        message, addr = self.only(self.a)
        self.assertEqual(message.uri, "sip:alice@192.0.2.10:5060")
        self.assertEqual(addr, UAC)

    def test_contact_in_response_is_tokenised(self) -> None:
        forwarded, _ = self.forward_invite()
        self.b.receive(self.answer(forwarded), UAS)
        response, _ = self.only(self.a)
        uri = response.name_addr("contact").uri
        self.assertEqual((uri.host, uri.port), ("192.0.2.1", 5060))
        self.assertNotEqual(uri.user, "bob")

    def test_header_params_are_kept(self) -> None:
        forwarded, _ = self.forward_invite(contact="<sip:alice@192.0.2.10;ob>;expires=60;+sip.instance=\"<urn:x>\"")
        contact = forwarded.name_addr("contact")
        self.assertEqual(contact.param("expires"), "60")
        self.assertEqual(contact.param("+sip.instance"), '"<urn:x>"')
        self.assertIsNone(contact.uri.param("ob"))  # sealed inside the token

    def test_token_is_deterministic(self) -> None:
        first = self.forward_invite()[0].get("contact")
        second = self.forward_invite()[0].get("contact")
        self.assertEqual(first, second)

    def test_tampered_token_fails_closed(self) -> None:
        contact = self.forward_invite()[0].name_addr("contact")
        user = contact.uri.user
        bad = user[:-3] + ("A" if user[-3] != "A" else "B") + user[-2:]
        self.b.receive(request("BYE", uri=f"sip:{bad}@198.51.100.1", contact=None,
                               via="SIP/2.0/UDP 198.51.100.20;branch=z9hG4bKt"), UAS)
        response, _ = self.only(self.b)
        self.assertEqual(response.code, 404)
        self.assertEqual(self.a.sent, [])

    def test_token_only_works_on_the_leg_it_was_handed_out_on(self) -> None:
        contact = self.forward_invite()[0].name_addr("contact")
        self.a.receive(request("BYE", uri=f"sip:{contact.uri.user}@192.0.2.1", contact=None), UAC)
        self.assertEqual(self.only(self.a)[0].code, 404)

    def test_token_from_another_secret_is_refused(self) -> None:
        contact = self.forward_invite()[0].name_addr("contact")
        self.proxy = StatelessProxy(self.dispatcher, secret=b"t" * 32)
        self.dispatcher.set_receiver(self.proxy)
        self.b.receive(request("BYE", uri=str(contact.uri), contact=None,
                               via="SIP/2.0/UDP 198.51.100.20;branch=z9hG4bKt"), UAS)
        self.assertEqual(self.only(self.b)[0].code, 404)

    def test_same_leg_leaves_contact_alone_unless_forced(self) -> None:
        leg = MemoryLeg("192.0.2.1")
        self.make_proxy([leg], force_rewrite=True)
        leg.receive(request(uri="sip:bob@192.0.2.20"), UAC)
        message, _ = self.only(leg)
        self.assertEqual(message.name_addr("contact").uri.host, "192.0.2.1")

    def test_user_rewrite_function(self) -> None:
        calls = []

        def rewrite(contact, incoming, outgoing, force):
            calls.append((contact, incoming.key, outgoing.key if outgoing else None))
            return "hidden@" + outgoing.sent_by if outgoing is not None else None

        self.make_proxy([self.a, self.b], rewrite_contact=rewrite)
        message, _ = self.forward_invite()
        self.assertEqual(message.get("contact"), "<sip:hidden@198.51.100.1:5060>")
        self.assertEqual(calls[0], ("alice@192.0.2.10:5060", "udp:192.0.2.1:5060", "udp:198.51.100.1:5060"))

    def test_star_contact_untouched(self) -> None:
        message, _ = self.forward_invite(method="REGISTER", uri="sip:198.51.100.20", contact="*",
                                         headers=[("Expires", "0")])
        self.assertEqual(message.get("contact"), "*")


class MalformedTests(ProxyTestCase):
    def test_malformed_request_gets_400_with_reason_and_is_not_forwarded(self) -> None:
        raw = request().replace(b"CSeq: 1 INVITE", b"CSeq: 1 OPTIONS")
        self.a.receive(raw, UAC)
        response, addr = self.only(self.a)
        self.assertEqual(response.code, 400)
        self.assertIn("CSeq", response.reason)
        self.assertEqual(addr, UAC)
        self.assertEqual(self.b.sent, [])

    def test_missing_headers(self) -> None:
        for header in (b"From", b"To", b"Call-ID", b"CSeq"):
            raw = b"\r\n".join(line for line in request().split(b"\r\n") if not line.startswith(header + b":"))
            self.a.receive(raw, UAC)
            self.assertEqual(len(self.a.sent), 1, header)
            self.assertTrue(self.a.sent.pop()[0].startswith(b"SIP/2.0 400 missing " + header), header)
        self.assertEqual(self.b.sent, [])

    def test_missing_via_is_dropped(self) -> None:
        raw = b"\r\n".join(line for line in request().split(b"\r\n") if not line.startswith(b"Via:"))
        self.a.receive(raw, UAC)
        self.assertEqual((self.a.sent, self.b.sent), ([], []))

    def test_content_length_too_large_or_negative(self) -> None:
        for value in (b"999", b"-1"):
            raw = request(body="v=0\r\n").replace(b"Content-Length: 5", b"Content-Length: " + value)
            self.a.receive(raw, UAC)
            self.assertEqual(self.only(self.a)[0].code, 400)
        self.assertEqual(self.b.sent, [])

    def test_cseq_out_of_range(self) -> None:
        self.a.receive(request(cseq=2**31), UAC)
        self.assertEqual(len(self.a.sent), 1)
        self.assertTrue(self.a.sent[0][0].startswith(b"SIP/2.0 400 CSeq number out of range\r\n"))
        self.assertEqual(self.b.sent, [])

    def test_unknown_version_gets_505(self) -> None:
        self.a.receive(request().replace(b"SIP/2.0\r\n", b"SIP/7.0\r\n", 1), UAC)
        self.assertEqual(self.only(self.a)[0].code, 505)

    def test_binary_junk_and_keepalives_are_dropped(self) -> None:
        for junk in (b"\x00\xff" * 40, b"\r\n\r\n", b"hello", bytes(range(256))):
            self.a.receive(junk, UAC)
        self.assertEqual((self.a.sent, self.b.sent), ([], []))

    def test_malformed_ack_is_never_answered(self) -> None:
        self.a.receive(request("ACK", cseq_method="INVITE"), UAC)
        self.assertEqual(self.a.sent, [])

    def test_receiver_exception_does_not_escape(self) -> None:
        class Broken:
            def receive(self, packet, leg, addr):
                raise RuntimeError("boom")

        self.dispatcher.set_receiver(Broken())
        self.a.receive(request(), UAC)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class NATHookTests(ProxyTestCase):
    """do_nat is the hook between forwarding and sending (as in Net::SIP);
    these tests replace it to see how the proxy uses its result."""

    def hook(self, do_nat) -> None:
        self.proxy.do_nat = do_nat  # type: ignore[method-assign]

    def test_do_nat_error_answers_the_request(self) -> None:
        def refuse(packet, incoming, outgoing):
            raise NATError(503, "No relay ports", retry_after=5)

        self.hook(refuse)
        self.a.receive(request(), UAC)
        response, addr = self.only(self.a)
        self.assertEqual((response.code, response.get("retry-after")), (503, "5"))
        self.assertEqual(response.get_all("via"), ["SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKuac1"])
        self.assertEqual(self.b.sent, [])

    def test_do_nat_deferred_delays_sending(self) -> None:
        pending: Deferred = Deferred()
        self.hook(lambda packet, incoming, outgoing: pending)
        self.a.receive(request(), UAC)
        self.assertEqual(self.b.sent, [])
        pending.callback(None)
        self.assertEqual(len(self.b.sent), 1)

    def test_do_nat_failure_drops_a_response(self) -> None:
        forwarded, _ = self.forward_invite()
        self.hook(lambda packet, incoming, outgoing: (_ for _ in ()).throw(NATError(503, "relay gone")))
        self.b.receive(self.answer(forwarded), UAS)
        self.assertEqual(self.a.sent, [])

    def test_without_nathelper_nothing_is_done(self) -> None:
        self.assertIsNone(self.proxy.do_nat(parse(request()), self.a, self.b))
