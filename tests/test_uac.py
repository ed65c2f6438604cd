"""Requests a user agent client builds: new requests (RFC 3261 8.1.1),
routing (12.2.1.1), ACK (17.1.1.3, 13.2.2.4), CANCEL (9.1), and the random
identifiers they carry."""
from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from sipproxy.sip.ids import new_branch, new_call_id, new_cnonce, new_tag
from sipproxy.sip.message import ParseError, Request, parse, parse_via
from sipproxy.sip.uac import add_via, apply_route_set, create_ack, create_cancel, new_request, outbound_route

ALICE = "Alice <sip:alice@atlanta.example.com>"
BOB = "<sip:bob@biloxi.example.com>"


def invite(**kw) -> Request:
    kw.setdefault("sent_by", "192.0.2.1:5062")
    return new_request("INVITE", "sip:bob@biloxi.example.com", ALICE, BOB, **kw)


class IdsTests(SynchronousTestCase):
    def test_branch_has_cookie_and_96_random_bits(self) -> None:
        branches = {new_branch() for _ in range(200)}
        self.assertEqual(len(branches), 200)
        for branch in branches:
            self.assertTrue(branch.startswith("z9hG4bK"))
            self.assertEqual(len(branch) - 7, 24)
            int(branch[7:], 16)

    def test_tags_and_call_ids_are_unique(self) -> None:
        self.assertEqual(len({new_tag() for _ in range(200)}), 200)
        self.assertEqual(len({new_cnonce() for _ in range(200)}), 200)
        call_id = new_call_id("example.com")
        self.assertTrue(call_id.endswith("@example.com"))
        self.assertGreaterEqual(len(call_id.partition("@")[0]), 32)
        self.assertNotIn("@", new_call_id())


class NewRequestTests(SynchronousTestCase):
    def test_invite_has_every_mandatory_header(self) -> None:
        request = invite(body=b"v=0\r\n", content_type="application/sdp")
        again = parse(bytes(request))
        self.assertEqual((again.method, again.uri), ("INVITE", "sip:bob@biloxi.example.com"))
        via = again.top_via()
        self.assertEqual((via.transport, via.sent_by), ("UDP", "192.0.2.1:5062"))
        self.assertTrue(via.rfc3261_branch)
        self.assertEqual(via.param("rport"), "")
        self.assertEqual(again.get("max-forwards"), "70")
        self.assertIsNotNone(again.from_tag)
        self.assertIsNone(again.to_tag)
        self.assertTrue(again.call_id.endswith("@192.0.2.1"))
        self.assertEqual(again.cseq, (1, "INVITE"))
        self.assertEqual(again.get("contact"), "<sip:alice@192.0.2.1:5062>")
        self.assertEqual(again.get("content-type"), "application/sdp")
        self.assertEqual(again.get("content-length"), "5")
        self.assertEqual(again.body, b"v=0\r\n")
        self.assertNotIn("route", again)

    def test_given_values_are_used(self) -> None:
        request = invite(call_id="c1@x", from_tag="ft", cseq=7, branch="z9hG4bKabc", transport="tcp",
                         headers=[("Subject", "hi")])
        self.assertEqual(request.call_id, "c1@x")
        self.assertEqual(request.from_tag, "ft")
        self.assertEqual(request.cseq, (7, "INVITE"))
        self.assertEqual(str(request.top_via()), "SIP/2.0/TCP 192.0.2.1:5062;branch=z9hG4bKabc;rport")
        self.assertEqual(request.get("contact"), "<sip:alice@192.0.2.1:5062;transport=tcp>")
        self.assertEqual(request.get("subject"), "hi")

    def test_from_bare_uri_gets_brackets_so_tag_is_a_header_param(self) -> None:
        request = new_request("OPTIONS", "sip:b@h", "sip:a@h;transport=tcp", "sip:b@h", sent_by="h", from_tag="t")
        # RFC 3261 20.10: without <>, ;transport belongs to the header, not the URI
        self.assertEqual(request.get("from"), "<sip:a@h>;transport=tcp;tag=t")
        self.assertNotIn("contact", request)

    def test_no_via_without_sent_by(self) -> None:
        request = new_request("MESSAGE", "sip:b@h", "sip:a@h", "sip:b@h", body=b"hi", content_type="text/plain")
        self.assertIsNone(request.top_via())
        branch = add_via(request, "[2001:db8::1]:5070", "TLS")
        self.assertEqual(request.top_via().branch, branch)
        self.assertEqual(request.top_via().transport, "TLS")

    def test_our_via_reads_as_the_line_we_wrote(self) -> None:
        """add_via hands the message its Via already parsed; every field
        must be what parsing the written line gives, and a sent-by that
        does not parse must still fail when the Via is read, as before."""
        sent_bys = ["192.0.2.1:5062", "h", "[2001:db8::1]:5070", "Host.Example.COM:65535", "h:5060;maddr=x",
                    "h:99999", "h..x", "[::1", "", "h, x:1", "h\r\nX: y", "h;branch=z9hG4bKfake"]
        for sent_by in sent_bys:
            for transport, rport in (("UDP", True), ("tcp", False)):
                request = Request("OPTIONS", "sip:b@h")
                branch = add_via(request, sent_by, transport, rport=rport)
                line = request.get("via")
                try:
                    expected = parse_via(line)  # what reading the line gives
                except ParseError:
                    self.assertRaises(ParseError, request.top_via)
                    continue
                via = request.top_via()
                self.assertEqual((via.protocol, via.transport, via.host, via.port, via.params, str(via)),
                                 (expected.protocol, expected.transport, expected.host, expected.port,
                                  expected.params, str(expected)), sent_by)
                self.assertEqual(via.branch, expected.branch)
                self.assertEqual(via.branch, branch if ";" not in sent_by else expected.branch)

    def test_ack_and_cancel_are_refused(self) -> None:
        self.assertRaises(ValueError, new_request, "ACK", "sip:b@h", "sip:a@h", "sip:b@h")
        self.assertRaises(ValueError, new_request, "cancel", "sip:b@h", "sip:a@h", "sip:b@h")

    def test_body_needs_type(self) -> None:
        self.assertRaises(ValueError, invite, body=b"x")

    def test_outbound_proxy_is_a_loose_route(self) -> None:
        route = outbound_route("sip:proxy.example.com:5070")
        self.assertEqual(route, "<sip:proxy.example.com:5070;lr>")
        self.assertEqual(outbound_route("<sip:p;lr>"), "<sip:p;lr>")
        request = invite(route_set=[route])
        self.assertEqual(request.uri, "sip:bob@biloxi.example.com")
        self.assertEqual(request.get_all("route"), [route])


class RouteSetTests(SynchronousTestCase):
    def test_empty(self) -> None:
        self.assertEqual(apply_route_set("sip:b@h", []), ("sip:b@h", []))

    def test_loose(self) -> None:
        routes = ["<sip:p1;lr>", "<sip:p2;lr>"]
        self.assertEqual(apply_route_set("sip:b@h", routes), ("sip:b@h", routes))

    def test_strict_first_route_becomes_request_uri_and_target_goes_last(self) -> None:
        uri, routes = apply_route_set("sip:b@h:5070", ["<sip:p1;method=INVITE?x=y>", "<sip:p2;lr>"])
        self.assertEqual(uri, "sip:p1")
        self.assertEqual(routes, ["<sip:p2;lr>", "<sip:b@h:5070>"])


class AckTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.invite = invite(route_set=["<sip:p1;lr>", "<sip:p2;lr>"])
        self.invite.add("Via", "SIP/2.0/UDP other;branch=z9hG4bKlower")

    def test_ack_for_failure_shares_the_branch(self) -> None:
        response = self.invite.create_response(486, to_tag="bobtag")
        ack = parse(bytes(create_ack(self.invite, response)))
        self.assertEqual((ack.method, ack.uri), ("ACK", self.invite.uri))
        self.assertEqual(ack.get_all("via"), [self.invite.get("via")])
        self.assertEqual(ack.get_all("route"), ["<sip:p1;lr>", "<sip:p2;lr>"])
        self.assertEqual(ack.get("from"), self.invite.get("from"))
        self.assertEqual(ack.to_tag, "bobtag")
        self.assertEqual(ack.call_id, self.invite.call_id)
        self.assertEqual(ack.cseq, (1, "ACK"))
        self.assertEqual(ack.body, b"")

    def test_ack_for_2xx_is_a_dialog_request_with_a_new_branch(self) -> None:
        response = self.invite.create_response(200, to_tag="bobtag", headers=[
            ("Contact", "<sip:bob@192.0.2.4:5080>"),
            ("Record-Route", "<sip:p2;lr>"), ("Record-Route", "<sip:p1;lr>")])
        ack = create_ack(self.invite, response)
        self.assertEqual(ack.uri, "sip:bob@192.0.2.4:5080")
        self.assertEqual(ack.get_all("route"), ["<sip:p1;lr>", "<sip:p2;lr>"])
        self.assertEqual(ack.cseq, (1, "ACK"))
        self.assertEqual(ack.to_tag, "bobtag")
        self.assertEqual(ack.from_tag, self.invite.from_tag)
        self.assertEqual(len(ack.get_all("via")), 1)
        self.assertNotEqual(ack.top_via().branch, self.invite.top_via().branch)
        self.assertEqual(ack.top_via().sent_by, "192.0.2.1:5062")

    def test_ack_for_2xx_repeats_credentials(self) -> None:
        self.invite.add("Proxy-Authorization", 'Digest username="a"')
        response = self.invite.create_response(200, to_tag="t", headers=[("Contact", "<sip:bob@h>")])
        self.assertEqual(create_ack(self.invite, response).get("proxy-authorization"), 'Digest username="a"')

    def test_no_ack_for_provisional(self) -> None:
        self.assertRaises(ValueError, create_ack, self.invite, self.invite.create_response(180))


class CancelTests(SynchronousTestCase):
    def test_cancel_copies_what_matches_the_invite(self) -> None:
        request = invite(route_set=["<sip:p1;lr>"], body=b"v=0\r\n", content_type="application/sdp")
        cancel = parse(bytes(create_cancel(request)))
        self.assertEqual((cancel.method, cancel.uri), ("CANCEL", request.uri))
        self.assertEqual(cancel.get_all("via"), request.get_all("via"))
        self.assertEqual(cancel.get_all("route"), ["<sip:p1;lr>"])
        for name in ("from", "to", "call-id"):
            self.assertEqual(cancel.get(name), request.get(name))
        self.assertEqual(cancel.cseq, (1, "CANCEL"))
        self.assertEqual(cancel.body, b"")
        self.assertIsNone(cancel.get("contact"))

    def test_only_invites(self) -> None:
        options = new_request("OPTIONS", "sip:b@h", "sip:a@h", "sip:b@h", sent_by="h")
        self.assertRaises(ValueError, create_cancel, options)
