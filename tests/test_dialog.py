"""Dialogs (RFC 3261 12): creation on both sides, route sets (loose,
strict), CSeq rules, target refresh, and matching."""
from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from sipproxy.sip.dialog import Dialog, DialogId, dialog_id_of_request, dialog_id_of_response, needs_481
from sipproxy.sip.message import Request, parse
from sipproxy.sip.uac import new_request


def invite(route_set=()) -> Request:
    return new_request("INVITE", "sip:bob@biloxi.example.com", "Alice <sip:alice@atlanta.example.com>",
                       "Bob <sip:bob@biloxi.example.com>", sent_by="192.0.2.1", call_id="call-1",
                       from_tag="atag", cseq=10, contact="<sip:alice@192.0.2.1>", route_set=route_set)


def ok(request: Request, *record_route: str, code: int = 200, contact: str = "<sip:bob@192.0.2.4>"):
    headers = [("Record-Route", rr) for rr in record_route] + [("Contact", contact)]
    return request.create_response(code, to_tag="btag", headers=headers)


class UacDialogTests(SynchronousTestCase):
    def test_fields_from_request_and_2xx(self) -> None:
        request = invite()
        dialog = Dialog.from_uac(request, ok(request, "<sip:p2;lr>", "<sip:p1;lr>"))
        self.assertEqual(dialog.id, DialogId("call-1", "atag", "btag"))
        self.assertEqual(dialog.local_uri, "Alice <sip:alice@atlanta.example.com>")
        self.assertEqual(dialog.remote_uri, "Bob <sip:bob@biloxi.example.com>")
        self.assertEqual((dialog.local_cseq, dialog.remote_cseq), (10, None))
        self.assertEqual(dialog.remote_target, "sip:bob@192.0.2.4")
        self.assertEqual(dialog.route_set, ["<sip:p1;lr>", "<sip:p2;lr>"])
        self.assertFalse(dialog.secure)
        self.assertFalse(dialog.early)
        self.assertEqual(dialog_id_of_response(ok(request)), dialog.id)

    def test_loose_route_set_keeps_target_as_request_uri(self) -> None:
        request = invite()
        dialog = Dialog.from_uac(request, ok(request, "<sip:p2;lr>", "<sip:p1;lr>"))
        bye = parse(bytes(dialog.new_request("BYE", sent_by="192.0.2.1")))
        self.assertEqual(bye.uri, "sip:bob@192.0.2.4")
        self.assertEqual(bye.get_all("route"), ["<sip:p1;lr>", "<sip:p2;lr>"])
        self.assertEqual(bye.cseq, (11, "BYE"))
        self.assertEqual(bye.from_tag, "atag")
        self.assertEqual(bye.to_tag, "btag")
        self.assertEqual(bye.get("from"), "Alice <sip:alice@atlanta.example.com>;tag=atag")
        self.assertEqual(bye.call_id, "call-1")
        self.assertTrue(bye.top_via().rfc3261_branch)
        self.assertIsNone(bye.get("contact"))
        self.assertEqual(dialog.local_cseq, 11)

    def test_strict_router_first(self) -> None:
        request = invite()
        dialog = Dialog.from_uac(request, ok(request, "<sip:p2;lr>", "<sip:p1>"))
        info = dialog.new_request("INFO", body=b"x", content_type="text/plain")
        self.assertEqual(info.uri, "sip:p1")
        self.assertEqual(info.get_all("route"), ["<sip:p2;lr>", "<sip:bob@192.0.2.4>"])
        self.assertEqual(info.body, b"x")

    def test_ack_reuses_the_invite_cseq_and_reinvite_carries_contact(self) -> None:
        request = invite()
        dialog = Dialog.from_uac(request, ok(request))
        ack = dialog.new_request("ACK", cseq=10)
        self.assertEqual(ack.cseq, (10, "ACK"))
        self.assertEqual(dialog.local_cseq, 10)
        self.assertRaises(ValueError, dialog.new_request, "ACK")
        self.assertRaises(ValueError, dialog.new_request, "CANCEL")
        reinvite = dialog.new_request("INVITE")
        self.assertEqual(reinvite.cseq, (11, "INVITE"))
        self.assertEqual(reinvite.get("contact"), "<sip:alice@192.0.2.1>")

    def test_early_dialog_confirmed_by_2xx_takes_its_route_and_target(self) -> None:
        request = invite()
        ringing = ok(request, "<sip:p1;lr>", code=180, contact="<sip:bob@early>")
        dialog = Dialog.from_uac(request, ringing)
        self.assertTrue(dialog.early)
        self.assertEqual(dialog.remote_target, "sip:bob@early")
        dialog.receive_response(ok(request, "<sip:p2;lr>", "<sip:p1;lr>"))
        self.assertFalse(dialog.early)
        self.assertEqual(dialog.route_set, ["<sip:p1;lr>", "<sip:p2;lr>"])
        self.assertEqual(dialog.remote_target, "sip:bob@192.0.2.4")

    def test_2xx_to_reinvite_refreshes_target_but_not_route_set(self) -> None:
        request = invite()
        dialog = Dialog.from_uac(request, ok(request, "<sip:p1;lr>"))
        reinvite = dialog.new_request("INVITE", sent_by="192.0.2.1")
        dialog.receive_response(ok(reinvite, "<sip:other;lr>", contact="<sip:bob@new>"))
        self.assertEqual(dialog.remote_target, "sip:bob@new")
        self.assertEqual(dialog.route_set, ["<sip:p1;lr>"])
        dialog.receive_response(reinvite.create_response(491))
        self.assertEqual(dialog.remote_target, "sip:bob@new")

    def test_no_dialog_from_failure_or_untagged_provisional(self) -> None:
        request = invite()
        self.assertRaises(ValueError, Dialog.from_uac, request, request.create_response(486, to_tag="x"))
        self.assertRaises(ValueError, Dialog.from_uac, request, request.create_response(180))

    def test_sips_request_uri_makes_a_secure_dialog(self) -> None:
        request = new_request("INVITE", "sips:bob@b", "sips:a@a", "sips:bob@b", sent_by="a")
        self.assertTrue(Dialog.from_uac(request, ok(request)).secure)


class UasDialogTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.request = invite()
        self.request.add("Record-Route", "<sip:p2;lr>")
        self.request.add("Record-Route", "<sip:p1;lr>")
        self.dialog = Dialog.from_uas(self.request, "btag", local_contact="<sip:bob@192.0.2.4>")

    def test_fields(self) -> None:
        dialog = self.dialog
        self.assertEqual(dialog.id, DialogId("call-1", "btag", "atag"))
        self.assertEqual(dialog_id_of_request(self.with_to_tag()), dialog.id)
        self.assertEqual(dialog.route_set, ["<sip:p2;lr>", "<sip:p1;lr>"])
        self.assertEqual(dialog.remote_target, "sip:alice@192.0.2.1")
        self.assertEqual((dialog.local_cseq, dialog.remote_cseq), (None, 10))
        self.assertEqual(dialog.local_uri, "Bob <sip:bob@biloxi.example.com>")

    def with_to_tag(self) -> Request:
        bye = self.request.copy()
        bye.set("to", "Bob <sip:bob@biloxi.example.com>;tag=btag")
        return bye

    def test_our_first_request_starts_local_cseq(self) -> None:
        bye = self.dialog.new_request("BYE")
        self.assertEqual(bye.cseq, (1, "BYE"))
        self.assertEqual(bye.uri, "sip:alice@192.0.2.1")
        self.assertEqual(bye.get_all("route"), ["<sip:p2;lr>", "<sip:p1;lr>"])
        self.assertEqual(bye.get("to"), "Alice <sip:alice@atlanta.example.com>;tag=atag")

    def test_lower_cseq_gets_500_and_target_refresh_moves_target(self) -> None:
        peer = Dialog.from_uac(self.request, self.request.create_response(
            200, to_tag="btag", headers=[("Contact", "<sip:bob@192.0.2.4>")]))
        info = peer.new_request("INFO")
        self.assertEqual(info.cseq[0], 11)
        self.assertIsNone(self.dialog.receive_request(info))
        self.assertEqual(self.dialog.remote_cseq, 11)
        old = info.copy()
        old.set("cseq", "9 INFO")
        self.assertEqual(self.dialog.receive_request(old), 500)
        self.assertEqual(self.dialog.remote_cseq, 11)
        ack = peer.new_request("ACK", cseq=10)
        self.assertIsNone(self.dialog.receive_request(ack))
        peer.local_contact = "<sip:alice@moved>"
        self.assertIsNone(self.dialog.receive_request(peer.new_request("UPDATE")))
        self.assertEqual(self.dialog.remote_target, "sip:alice@moved")
        self.assertEqual(self.dialog.remote_cseq, 12)


class MatchingTests(SynchronousTestCase):
    def test_481_only_for_tagged_non_ack(self) -> None:
        request = invite()
        self.assertFalse(needs_481(request))
        tagged = request.copy()
        tagged.set("to", "<sip:bob@b>;tag=gone")
        self.assertTrue(needs_481(tagged))
        tagged.method = "ACK"
        self.assertFalse(needs_481(tagged))
        tagged.method = "BYE"
        self.assertTrue(needs_481(tagged))


class BuiltRequestLayoutTests(SynchronousTestCase):
    """Requests built with a body (out of a dialog and in one) carry the
    lines a request whose body is set after it was built carries, in the
    same order: Content-Length, then Content-Type, a given one of either
    replaced in place."""

    def test_same_as_set_body(self) -> None:
        request = invite()
        dialog = Dialog.from_uac(request, ok(request))
        sdp = b"v=0\r\n"
        cases = [
            ((), b"", [("Contact", "<sip:alice@192.0.2.1>"), ("Content-Length", "0")]),
            ((), sdp, [("Content-Length", "5"), ("Content-Type", "application/sdp")]),
            ([("Content-Type", "text/plain"), ("Subject", "s")], b"",
             [("Content-Type", "text/plain"), ("Subject", "s"), ("Content-Length", "0")]),
            ([("Content-Type", "text/plain"), ("Subject", "s")], sdp,
             [("Content-Type", "application/sdp"), ("Subject", "s"), ("Content-Length", "5")]),
            ([("Content-Length", "99")], b"", [("Contact", "<sip:alice@192.0.2.1>"), ("Content-Length", "0")]),
            ([("Content-Length", "99")], sdp, [("Content-Length", "5"), ("Content-Type", "application/sdp")]),
        ]
        for headers, body, tail in cases:
            content_type = "application/sdp" if body else None
            built = [
                new_request("INVITE", "sip:bob@biloxi.example.com", "<sip:alice@a.example.com>",
                            "<sip:bob@biloxi.example.com>", call_id="c", from_tag="f",
                            contact="<sip:alice@192.0.2.1>", headers=headers, body=body, content_type=content_type),
                dialog.new_request("INVITE", body=body, content_type=content_type, headers=headers),
            ]
            for request in built:
                lines = [line.split(": ", 1) for _, line in request.header_lines()]
                self.assertEqual([tuple(line) for line in lines[-len(tail):]], tail, (headers, body))
                self.assertEqual(request.body, body)
                self.assertTrue(bytes(request).endswith(b"\r\n\r\n" + body))
