"""Simple and Call on a memory network with a Clock: calls up and down,
ring timeouts, refusals, redirects, registration refresh and back-off."""
from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from sipproxy.ua.call import Call, CallEnd, RingTimeout
from sipproxy.ua.endpoint import SIPError
from sipproxy.ua.registration import RefreshPolicy

from tests.ua_util import MemoryNetwork


def _retag(data: bytes, tag: str) -> bytes:
    """A copy of a response whose To carries another tag (another fork)."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    for i, line in enumerate(lines):
        if line.lower().startswith(b"to:"):
            lines[i] = line.split(b";tag=")[0] + b";tag=" + tag.encode()
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class CallTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.net = MemoryNetwork()
        self.alice = self.net.simple("192.0.2.1", from_="alice")
        self.bob = self.net.simple("192.0.2.2", from_="bob")
        self.events: list[Any] = []

    def listen(self, **options: Any) -> None:
        self.bob.listen(on_create=lambda call, request: self.events.append(("create", call)) or True,
                        on_established=lambda call: self.events.append(("established", call)),
                        on_cleanup=lambda call: self.events.append(("cleanup", call.end)), sdp=None, **options)

    def test_call_up_and_hung_up_by_the_caller(self) -> None:
        self.listen()
        d = self.alice.invite("sip:bob@192.0.2.2", sdp=None)
        self.net.run()
        call = self.successResultOf(d)
        self.assertIsInstance(call, Call)
        self.assertEqual(call.state, "established")
        self.assertEqual([e[0] for e in self.events], ["create", "established"])
        bobs = self.events[0][1]
        bye_seen: list[Any] = []
        bobs.on("bye", bye_seen.append)
        ended = call.bye()
        self.net.run()
        self.assertEqual(self.successResultOf(ended), CallEnd("local", 200, "OK"))
        self.assertEqual(bobs.end.by, "remote")
        self.assertEqual(len(bye_seen), 1)
        self.assertEqual(self.events[-1], ("cleanup", CallEnd("remote", 200, "BYE")))
        self.assertEqual(self.net.methods(),
                         ["INVITE", "100 INVITE", "200 INVITE", "ACK", "BYE", "200 BYE"])
        self.assertEqual(self.alice.calls, [])
        self.assertEqual(self.bob.calls, [])

    def test_a_send_that_fails_fails_the_call_not_its_caller(self) -> None:
        """With the target known at once the INVITE and the BYE are sent
        without a Deferred in between; an exception while sending still
        reaches the call's Deferreds, never the code that called."""
        self.listen()
        sending = self.alice.endpoint.send_request

        def broken(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("leg is gone")

        self.alice.endpoint.send_request = broken  # type: ignore[method-assign]
        d = self.alice.invite("sip:bob@192.0.2.2", sdp=None)
        self.assertEqual(str(self.failureResultOf(d, RuntimeError).value), "leg is gone")
        self.assertEqual(self.alice.calls, [])
        self.alice.endpoint.send_request = sending  # type: ignore[method-assign]
        d = self.alice.invite("sip:bob@192.0.2.2", sdp=None)
        self.net.run()
        call = self.successResultOf(d)
        self.alice.endpoint.send_request = broken  # type: ignore[method-assign]
        end = self.successResultOf(call.bye())
        self.assertEqual((end.by, end.code), ("local", None))
        self.assertIn("leg is gone", end.reason)

    def test_an_unroutable_target_fails_the_deferred(self) -> None:
        """No route at once (a malformed or overlong URI): invite() still
        returns its Deferred, failed (it once returned None)."""
        for target in ("sip:bob@192.0.2.2:99999", "sip:bob@" + "x" * 100_000):
            d = self.alice.invite(target, sdp=None)
            self.assertIsNotNone(d, target[:30])
            error = self.failureResultOf(d, SIPError).value
            self.assertTrue(error.reason.startswith("No route to "), error.reason[:60])
        self.assertEqual(self.alice.calls, [])

    def test_an_ended_call_is_freed_without_the_garbage_collector(self) -> None:
        # once its transactions have ended (32 s of Timer M/L/J), nothing
        # holds a call in a reference cycle: a full collection would
        # otherwise walk every ended call of the last minutes
        import gc
        import platform
        import weakref

        if platform.python_implementation() != "CPython":
            raise self.skipTest("objects are freed at once by CPython's reference counting only")
        callee: list[Any] = []
        self.bob.listen(on_create=lambda call, request: callee.append(weakref.ref(call)) or True,
                        sdp=True)
        enabled = gc.isenabled()
        gc.disable()
        self.addCleanup(lambda: gc.enable() if enabled else None)
        d = self.alice.invite("sip:bob@192.0.2.2")
        self.net.run()
        call = self.successResultOf(d)
        self.successResultOf(self._ended(call.bye()))
        caller = weakref.ref(call)
        del call, d
        self.net.advance(70)
        self.assertEqual(self.alice.calls + self.bob.calls, [])
        self.assertIsNone(caller())
        self.assertEqual(len(callee), 1)
        self.assertIsNone(callee[0]())

    def _ended(self, d: Any) -> Any:
        self.net.run()
        return d

    def test_callee_hangs_up(self) -> None:
        self.listen()
        call = self.successResultOf(self._call())
        self.events[0][1].bye()
        self.net.run()
        self.assertEqual(self.successResultOf(call.ended), CallEnd("remote", 200, "BYE"))

    def _call(self, **options: Any) -> Any:
        d = self.alice.invite("sip:bob@192.0.2.2", sdp=None, **options)
        self.net.run()
        return d

    def test_2xx_is_retransmitted_until_the_ack(self) -> None:
        self.listen()
        lost = []

        def lose_first_ack(message: Any, addr: Any) -> bool:
            if getattr(message, "method", None) == "ACK" and not lost:
                lost.append(message)
                return True
            return False

        self.net.drop = lose_first_ack
        self.successResultOf(self._call())
        self.assertEqual([e[0] for e in self.events], ["create"])
        self.net.advance(1.0)
        self.assertEqual([e[0] for e in self.events], ["create", "established"])
        self.assertEqual(self.net.methods().count("200 INVITE"), 2)
        self.assertEqual(self.net.methods().count("ACK"), 2)

    def test_second_fork_answering_is_acked_and_ended(self) -> None:
        self.listen()
        forked: list[bool] = []

        def fork(message: Any, addr: Any) -> bool:
            if getattr(message, "code", None) == 200 and message.cseq_method == "INVITE" and not forked:
                forked.append(True)
                copy = _retag(bytes(message), "fork1")
                self.net.legs[("192.0.2.1", 5060)].receive(message, ("192.0.2.2", 5060))
                self.net.legs[("192.0.2.1", 5060)].receive(copy, ("192.0.2.2", 5060))
                return True
            return False

        self.net.drop = fork
        call = self.successResultOf(self._call())
        self.net.run()
        sent = [(m.method, m.to_tag) for frm, to, m in self.net.routes if frm == "192.0.2.1" and hasattr(m, "method")]
        self.assertIn(("ACK", "fork1"), sent)
        self.assertIn(("BYE", "fork1"), sent)
        self.assertEqual(call.state, "established")
        self.assertNotEqual(call.dialog.remote_tag, "fork1")

    def test_no_ack_ends_the_call_with_a_bye_as_a_408(self) -> None:
        self.listen()
        self.net.drop = lambda message, addr: getattr(message, "method", None) == "ACK"
        self.successResultOf(self._call())
        self.net.advance(33.0, step=1.0)
        self.assertEqual(self.events[-1], ("cleanup", CallEnd("local", 408,
                                                              "Request Timeout (no ACK for our 200; BYE sent)")))
        self.assertIn("BYE", self.net.methods())
        self.assertEqual([e[0] for e in self.events], ["create", "cleanup"])

    def test_ack_reusing_the_invite_branch_establishes_the_call(self) -> None:
        # Net::SIP (and RFC 2543 peers) send the ACK of a 2xx with the
        # INVITE's Via branch: it matches the INVITE server transaction,
        # and must still reach the call (RFC 6026 7.1: passed to the TU)
        self.listen()
        branches: dict[str, str] = {}

        def old_style_ack(message: Any, addr: Any) -> bool:
            method = getattr(message, "method", None)
            if method == "INVITE":
                branches["invite"] = message.get("via").split("branch=")[1].split(";")[0]
            if method != "ACK":
                return False
            ours = message.get("via").split("branch=")[1].split(";")[0]
            data = bytes(message).replace(ours.encode(), branches["invite"].encode())
            self.net.legs[("192.0.2.2", 5060)].receive(data, ("192.0.2.1", 5060))
            return True

        self.net.drop = old_style_ack
        call = self.successResultOf(self._call())
        self.assertEqual([e[0] for e in self.events], ["create", "established"])
        self.net.advance(2.0)
        self.assertEqual(self.net.methods().count("200 INVITE"), 1)  # the ACK stopped the retransmissions
        self.assertEqual(call.state, "established")

    def test_ring_timeout_cancels_and_fails_clearly(self) -> None:
        self.listen(answer_after=None)
        ringing: list[int] = []
        d = self._call(ring_time=10, on_call=lambda call: call.on("ringing", lambda r: ringing.append(r.code)))
        self.assertEqual(ringing, [180])
        self.assertNoResult(d)
        self.net.advance(10.0)
        failure = self.failureResultOf(d, RingTimeout)
        self.assertEqual(failure.value.code, 487)
        self.assertIn("10 s", failure.value.reason)
        self.assertIn("CANCEL", self.net.methods())
        self.assertIn("487 INVITE", self.net.methods())
        self.assertEqual(self.events[-1], ("cleanup", CallEnd("remote", 487, "cancelled by the caller")))

    def test_ring_timeout_without_any_answer_fails_on_time(self) -> None:
        self.net.drop = lambda message, addr: addr[0] == "192.0.2.2"  # bob is silent
        d = self._call(ring_time=5)
        self.net.advance(5.0)
        self.assertEqual(self.failureResultOf(d, RingTimeout).value.code, 487)
        self.assertNotIn("CANCEL", self.net.methods())  # RFC 3261 9.1: not before a 1xx
        self.net.advance(40.0, step=4.0)
        self.assertEqual(self.alice.calls, [])

    def test_refusal_fails_with_code_and_reason(self) -> None:
        self.bob.listen(on_create=lambda call, request: call.reject(486, "Busy Here") or True, sdp=None)
        failure = self.failureResultOf(self._call(), SIPError)
        self.assertEqual((failure.value.code, failure.value.reason), (486, "Busy Here"))

    def test_302_is_followed(self) -> None:
        carol = self.net.simple("192.0.2.3", from_="carol")
        carol.listen(sdp=None)
        self.bob.listen(on_create=lambda call, request: call._server.respond(
            302, "Moved", [("Contact", "<sip:carol@192.0.2.3>")]) or True, sdp=None)
        call = self.successResultOf(self._call())
        self.assertIn("carol", call.dialog.remote_target)
        self.assertEqual(len(carol.calls), 1)

    def test_305_sends_the_invite_again_through_the_proxy_named(self) -> None:
        proxy = self.net.simple("192.0.2.9", from_="operator")
        proxy.create_stateless_proxy()
        carol = self.net.simple("192.0.2.3", from_="carol")
        carol.listen(sdp=None)
        self.bob.listen(on_create=lambda call, request: call._server.respond(
            305, "Use Proxy", [("Contact", "<sip:192.0.2.9>")]) or True, sdp=None)
        d = self.alice.invite("sip:bob@192.0.2.2", sdp=None)
        self.net.run()
        # the proxy forwards to bob again, who says 305 again, until the bound on redirects
        self.assertEqual(self.failureResultOf(d, SIPError).value.code, 305)
        invites = [(frm, to) for frm, to, m in self.net.routes if getattr(m, "method", "") == "INVITE"
                   and frm == "192.0.2.1"]
        self.assertEqual(invites[0], ("192.0.2.1", "192.0.2.2"))
        self.assertEqual(set(invites[1:]), {("192.0.2.1", "192.0.2.9")})
        self.assertEqual(len(invites), 1 + 5)

    def test_cleanup_cancels_a_call_still_ringing(self) -> None:
        self.listen(answer_after=None)
        d = self._call()
        cleaned = self.alice.cleanup()
        self.net.run()
        self.successResultOf(cleaned)
        self.failureResultOf(d, SIPError)
        self.assertIn("CANCEL", self.net.methods())
        self.assertEqual(self.events[-1][1].code, 487)

    def test_other_3xx_is_reported(self) -> None:
        self.bob.listen(on_create=lambda call, request: call._server.respond(
            301, "Moved Permanently", [("Contact", "<sip:carol@192.0.2.3>")]) or True, sdp=None)
        failure = self.failureResultOf(self._call(), SIPError)
        self.assertEqual(failure.value.code, 301)
        self.assertEqual(failure.value.contacts, ["<sip:carol@192.0.2.3>"])

    def test_no_listener_gets_480_and_a_filtered_call_403(self) -> None:
        self.assertEqual(self.failureResultOf(self._call(), SIPError).value.code, 480)
        self.bob.listen(filter="carol", sdp=None)
        self.assertEqual(self.failureResultOf(self._call(), SIPError).value.code, 403)
        self.bob.listen(filter=lambda from_, request: "alice" in from_, sdp=None)
        self.successResultOf(self._call())

    def test_with_a_proxy_behind_unwanted_calls_go_down_the_chain(self) -> None:
        passed: list[str] = []

        class Behind:
            def receive(self, packet: Any, leg: Any, addr: Any) -> bool:
                passed.append(getattr(packet, "method", "response"))
                return True

        self.bob.create_chain([Behind()])
        self.bob.listen(filter="carol", sdp=None)
        self.assertNoResult(self._call())
        self.assertEqual(passed, ["INVITE"])

    def test_in_dialog_request_and_reinvite(self) -> None:
        self.listen()
        call = self.successResultOf(self._call())
        bobs = self.events[0][1]
        seen: list[str] = []
        bobs.on("request", lambda t: seen.append(t.request.method))
        bobs.on("reinvite", lambda r: seen.append("reinvite"))
        response = call.request("INFO", b"Signal=5\r\n", "application/dtmf-relay")
        self.net.run()
        self.assertEqual(self.successResultOf(response).code, 200)
        reinvited = call.reinvite()
        self.net.run()
        self.assertEqual(self.successResultOf(reinvited).code, 200)
        self.assertEqual(seen, ["INFO", "reinvite"])
        self.assertEqual(call.dialog.local_cseq, 3)

    def test_message_outside_a_dialog(self) -> None:
        got: list[bytes] = []

        def take(transaction: Any) -> bool:
            if transaction.request.method != "MESSAGE":
                return False
            got.append(transaction.request.body)
            transaction.respond(202, "Accepted")
            return True

        self.listen(on_request=take)
        d = self.alice.message("sip:bob@192.0.2.2", "hello")
        self.net.run()
        self.assertEqual(self.successResultOf(d).code, 202)
        self.assertEqual(got, [b"hello"])
        refused = self.alice.request("SUBSCRIBE", "sip:bob@192.0.2.2")  # the handler leaves it: 405
        self.net.run()
        self.assertEqual(self.failureResultOf(refused, SIPError).value.code, 405)

    def test_addresses_are_completed_to_uris(self) -> None:
        """A bare user gets the domain, user@host gets sip:, and anything
        naming its scheme (any case) or in angle brackets stays."""
        cases = [
            ("carol", "sip:carol@192.0.2.9"),
            ("  carol  ", "sip:carol@192.0.2.9"),
            ("carol@example.com", "sip:carol@example.com"),
            ("sip:carol@example.com", "sip:carol@example.com"),
            ("SIPS:carol@example.com", "SIPS:carol@example.com"),
            ("Sip:carol@example.com", "Sip:carol@example.com"),
            ("tel:+15551234", "tel:+15551234"),
            ("TEL:+15551234", "TEL:+15551234"),
            ("Carol <sip:carol@example.com>", "Carol <sip:carol@example.com>"),
            ("sipx:carol@example.com", "sip:sipx:carol@example.com"),   # not a scheme of ours
            ("telephone@example.com", "sip:telephone@example.com"),     # "tel" without its colon
            ("bob.tel:x@example.com", "sip:bob.tel:x@example.com"),     # a scheme counts only at the start
        ]
        for port, (given, expected) in enumerate(cases, 5070):
            ua = self.net.simple("192.0.2.9", port=port, from_=given)
            self.assertEqual(ua.from_, expected, given)
        # what does not make a URI once completed is refused, not carried
        with self.assertRaises(ValueError):
            self.net.simple("192.0.2.9", port=5099, from_="x sip:carol@example.com")
        v6 = self.net.simple("2001:db8::9", from_="carol")
        self.assertEqual(v6.from_, "sip:carol@[2001:db8::9]")

    def test_cleanup_hangs_up_and_stops(self) -> None:
        self.listen()
        call = self.successResultOf(self._call())
        d = self.alice.cleanup()
        self.net.run()
        self.successResultOf(d)
        self.assertEqual(call.end.by, "local")
        self.assertEqual(self.events[-1][0], "cleanup")


class RegisterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.net = MemoryNetwork()
        self.server = self.net.simple("192.0.2.9")
        self.server.create_registrar(min_expires=10, max_expires=600)
        self.server.create_stateless_proxy()
        self.alice = self.net.simple("192.0.2.1", from_="sip:alice@192.0.2.9", registrar="sip:192.0.2.9",
                                     refresh=RefreshPolicy(backoff=30, backoff_cap=120))
        self.events: list[tuple[str, dict]] = []
        for name in ("registered", "register_failed", "unregistered"):
            self.alice.on(name, lambda name, fields: self.events.append((name, fields)))

    def registers(self) -> int:
        return self.net.methods().count("REGISTER")

    def test_granted_expiry_and_refresh_before_it_ends(self) -> None:
        d = self.alice.register(expires=3600)
        self.net.run()
        self.assertEqual(self.successResultOf(d), 600)  # the registrar's cap
        self.net.advance(479, step=10)
        self.assertEqual(self.registers(), 1)
        self.net.advance(2, step=1)  # refresh at min(600 * 0.8, 600 - 5) = 480 s
        self.assertEqual(self.registers(), 2)
        self.assertEqual([e[0] for e in self.events], ["registered", "registered"])

    def test_failed_refresh_backs_off_and_reports(self) -> None:
        self.successResultOf(self._register(100))
        self.net.drop = lambda message, addr: True  # the registrar is gone
        self.net.advance(80 + 32 + 1, step=1)  # refresh at 80 s, F timer after 32 s
        self.assertEqual(self.events[-1][0], "register_failed")
        self.assertEqual(self.events[-1][1]["code"], 408)
        self.assertEqual(self.events[-1][1]["retry_in"], 30)
        self.net.advance(30 + 32 + 1, step=1)
        self.assertEqual(self.events[-1][1]["retry_in"], 60)
        self.net.drop = None  # back
        self.net.advance(61, step=1)
        self.assertEqual(self.events[-1], ("registered", {"expires": 100}))

    def _register(self, expires: int) -> Any:
        d = self.alice.register(expires=expires)
        self.net.run()
        return d

    def test_calls_reach_a_registered_user_through_the_proxy(self) -> None:
        self.successResultOf(self._register(300))
        taken: list[Any] = []
        self.alice.listen(on_create=lambda call, request: taken.append(call) or True, sdp=None)
        bob = self.net.simple("192.0.2.2", from_="bob", outgoing_proxy="192.0.2.9")
        d = bob.invite("sip:alice@192.0.2.9", sdp=None)
        self.net.run()
        call = self.successResultOf(d)
        self.assertEqual(len(taken), 1)
        bye = call.bye()
        self.net.run()
        self.assertEqual(self.successResultOf(bye).code, 200)

    def test_ack_and_bye_follow_the_proxy_that_record_routed(self) -> None:
        self.successResultOf(self._register(300))
        self.alice.listen(sdp=None)
        bob = self.net.simple("192.0.2.2", from_="bob")
        d = bob.invite("sip:alice@192.0.2.9", sdp=None)
        self.net.run()
        call = self.successResultOf(d)
        # alice's 200 copied the proxy's Record-Route (RFC 3261 12.1.1)
        self.assertEqual(call.dialog.route_set, ["<sip:192.0.2.9:5060;lr>"])
        bye = call.bye()
        self.net.run()
        self.successResultOf(bye)
        sent_by_bob = [(to, m.method) for frm, to, m in self.net.routes
                       if frm == "192.0.2.2" and hasattr(m, "method")]
        self.assertEqual(sent_by_bob, [("192.0.2.9", "INVITE"), ("192.0.2.9", "ACK"), ("192.0.2.9", "BYE")])

    def test_ack_and_bye_go_to_the_callee_when_the_proxy_did_not_record_route(self) -> None:
        self.successResultOf(self._register(300))
        self.alice.listen(sdp=None)
        bob = self.net.simple("192.0.2.2", from_="bob")

        def without_record_route(message: Any, addr: Any) -> bool:
            # sipproxy's proxy always record-routes: play one that stays off the path
            if getattr(message, "method", None) != "INVITE" or addr[0] != "192.0.2.1" or "record-route" not in message:
                return False
            message.remove("record-route")
            self.net.legs[("192.0.2.1", 5060)].receive(bytes(message), ("192.0.2.9", 5060))
            return True

        self.net.drop = without_record_route
        d = bob.invite("sip:alice@192.0.2.9", sdp=None)  # to the registrar's domain, no outgoing proxy
        self.net.run()
        call = self.successResultOf(d)
        self.assertEqual(call.dialog.route_set, [])
        bye = call.bye()
        self.net.run()
        self.successResultOf(bye)
        sent_by_bob = [(to, m.method) for frm, to, m in self.net.routes
                       if frm == "192.0.2.2" and hasattr(m, "method")]
        self.assertEqual(sent_by_bob, [("192.0.2.9", "INVITE"), ("192.0.2.1", "ACK"), ("192.0.2.1", "BYE")])

    def test_preloaded_route_and_domain2proxy_pick_the_first_hop(self) -> None:
        self.successResultOf(self._register(300))
        self.alice.listen(sdp=None)
        carol = self.net.simple("192.0.2.3", from_="carol", route=["sip:192.0.2.9"])
        d = carol.invite("sip:alice@192.0.2.9", sdp=None)
        self.net.run()
        self.successResultOf(d)
        invite = [m for frm, to, m in self.net.routes if frm == "192.0.2.3" and getattr(m, "method", "") == "INVITE"][0]
        self.assertEqual(invite.get_all("route"), ["<sip:192.0.2.9;lr>"])
        dave = self.net.simple("192.0.2.4", from_="dave", domain2proxy={"example.org": "192.0.2.9"})
        d = dave.invite("sip:alice@example.org", sdp=None)
        self.net.run()
        # the proxy got it: nobody is alice@example.org there, and example.org does not resolve
        self.assertEqual(self.failureResultOf(d, SIPError).value.code, 404)
        sent = [to for frm, to, m in self.net.routes if frm == "192.0.2.4" and getattr(m, "method", "") == "INVITE"]
        self.assertEqual(sent, ["192.0.2.9"])

    def test_unregister(self) -> None:
        self.successResultOf(self._register(300))
        d = self.alice.unregister()
        self.net.run()
        self.assertEqual(self.successResultOf(d), 0)
        self.assertEqual(self.events[-1][0], "unregistered")
        self.net.advance(300, step=30)
        self.assertEqual(self.registers(), 2)

    def test_refused_registration_fails_the_deferred(self) -> None:
        self.server.create_registrar  # the registrar serves 192.0.2.9 only through its domains
        d = self.alice.register(expires=5)  # below min_expires: 423
        self.net.run()
        failure = self.failureResultOf(d, SIPError)
        self.assertEqual(failure.value.code, 423)


class SDPTests(SynchronousTestCase):
    """The offer/answer of calls (no RTP: the media seam is empty)."""

    def setUp(self) -> None:
        self.net = MemoryNetwork()
        self.alice = self.net.simple("192.0.2.1", from_="alice")
        self.bob = self.net.simple("192.0.2.2", from_="bob")
        self.bobs: list[Call] = []
        self.bob.listen(on_create=lambda call, request: self.bobs.append(call) or True)

    def call(self, **options: Any) -> Any:
        d = self.alice.invite("sip:bob@192.0.2.2", **options)
        self.net.run()
        return d

    def test_offer_and_answer_are_agreed(self) -> None:
        call = self.successResultOf(self.call())
        self.assertIn(b"m=audio 9 RTP/AVP 0 8 101", call.local_sdp)
        self.assertEqual(call.negotiated.codec, "PCMU")
        self.assertEqual(call.negotiated.telephone_event, 101)
        self.assertEqual(self.bobs[0].negotiated.codec, "PCMU")
        self.assertEqual(self.bobs[0].remote_sdp, call.local_sdp)

    def test_no_common_codec_is_refused_with_488(self) -> None:
        offer = (b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
                 b"m=audio 4000 RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n")
        failure = self.failureResultOf(self.call(sdp=offer), SIPError)
        self.assertEqual(failure.value.code, 488)

    def test_hold_and_resume_reoffer_sendonly_then_sendrecv(self) -> None:
        call = self.successResultOf(self.call())
        held = call.hold()
        self.net.run()
        self.successResultOf(held)
        self.assertTrue(call.on_hold)
        self.assertIn(b"a=sendonly", call.local_sdp)
        self.assertTrue(self.bobs[0].held_by_peer)
        self.assertIn(b"a=recvonly", self.bobs[0].local_sdp)
        resumed = call.resume()
        self.net.run()
        self.successResultOf(resumed)
        self.assertFalse(call.on_hold)
        self.assertFalse(self.bobs[0].held_by_peer)
        self.assertIn(b"a=sendrecv", self.bobs[0].local_sdp)

    def test_reinvite_glare_gets_491_on_both_sides(self) -> None:
        call = self.successResultOf(self.call())
        ours = call.hold()
        theirs = self.bobs[0].hold()  # both offer before either is answered
        self.net.run()
        self.assertEqual(self.failureResultOf(ours, SIPError).value.code, 491)
        self.assertEqual(self.failureResultOf(theirs, SIPError).value.code, 491)
        self.assertFalse(call.on_hold)
        self.assertIn(b"a=sendrecv", call.local_sdp)  # the refused offer is forgotten
        again = call.hold()  # RFC 3261 14.1: try again later
        self.net.run()
        self.successResultOf(again)

    def test_invite_without_offer_gets_the_offer_in_the_200_and_answers_in_the_ack(self) -> None:
        call = self.successResultOf(self.call(sdp=None))
        self.assertIsNotNone(call.remote_sdp)  # bob offered in his 200
        self.assertIsNotNone(self.bobs[0].negotiated)  # from alice's answer in the ACK


class AuthTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.net = MemoryNetwork()

    def test_invite_through_a_proxy_asking_407_is_answered_once(self) -> None:
        proxy = self.net.simple("192.0.2.9", from_="operator")
        proxy.create_registrar()
        proxy.create_stateless_proxy(auth_users={"alice": "pw"})
        bob = self.net.simple("192.0.2.2", from_="bob")
        bob.listen(sdp=None)
        alice = self.net.simple("192.0.2.1", from_="alice", outgoing_proxy="192.0.2.9", auth=("alice", "pw"))
        d = alice.invite("sip:bob@192.0.2.2", sdp=None)
        self.net.run()
        call = self.successResultOf(d)
        self.assertEqual(self.net.methods()[:4], ["INVITE", "407 INVITE", "ACK", "INVITE"])
        bye = call.bye()  # in the dialog, with the CSeq after the retried INVITE
        self.net.run()
        self.assertEqual(self.successResultOf(bye).code, 200)

    def test_wrong_password_fails_with_the_407(self) -> None:
        proxy = self.net.simple("192.0.2.9", from_="operator")
        proxy.create_stateless_proxy(auth_users={"alice": "pw"})
        alice = self.net.simple("192.0.2.1", from_="alice", outgoing_proxy="192.0.2.9", auth=("alice", "nope"))
        d = alice.invite("sip:bob@192.0.2.2", sdp=None)
        self.net.run()
        self.assertEqual(self.failureResultOf(d, SIPError).value.code, 407)
        self.assertEqual(self.net.methods().count("INVITE"), 2)

    def test_listen_with_auth_users_challenges_callers(self) -> None:
        bob = self.net.simple("192.0.2.2", from_="bob")
        bob.listen(auth_users={"alice": "pw"}, sdp=None)
        stranger = self.net.simple("192.0.2.3", from_="mallory")
        d = stranger.invite("sip:bob@192.0.2.2", sdp=None)
        self.net.run()
        self.assertEqual(self.failureResultOf(d, SIPError).value.code, 401)
        alice = self.net.simple("192.0.2.1", from_="alice", auth=("alice", "pw"))
        d = alice.invite("sip:bob@192.0.2.2", sdp=None)
        self.net.run()
        self.successResultOf(d)
