"""NATSessions (do_nat) through the stateless proxy on in-memory legs:
session keys, SDP rewriting of offers and answers, activation, closing,
and NATError answers. The relay is a real LocalRelay on a fake reactor,
or a recording fake helper."""
from __future__ import annotations

import random
from typing import Any, Optional

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from sipproxy.interfaces import INATHelper
from sipproxy.sip.message import Request, Response, parse
from sipproxy.nat.relay import LocalRelay
from sipproxy.nat.sessions import NATSessions, SessionKey, sdp_body
from sipproxy.proxy.stateless import NATError, StatelessProxy
from sipproxy.sip.sdp import MediaTarget, parse_sdp
from sipproxy.testing import MemoryLeg, memory_dispatcher
from tests.nat_util import FakeUDPReactor, media_lines, sdp
from tests.sip import request

SECRET = b"s" * 32
UAC = ("192.0.2.10", 5060)
UAS = ("198.51.100.20", 5060)
SDP_TYPE = ("Content-Type", "application/sdp")
TO_TAGGED = "<sip:bob@biloxi.example.com>;tag=bob1"


@implementer(INATHelper)
class RecordingHelper:
    """Records calls; answers with fixed targets, or Deferreds."""

    def __init__(self, targets: Any = "auto", activate: Any = 1, deferred: bool = False) -> None:
        self.calls: list[tuple] = []
        self.targets = targets
        self.activate = activate
        self.deferred = deferred
        self.pending: list[Deferred] = []

    def _answer(self, value: Any) -> Any:
        if not self.deferred:
            return value
        d: Deferred = Deferred()
        self.pending.append(d)
        d.value_to_fire = value  # type: ignore[attr-defined]
        return d

    def fire(self) -> None:
        while self.pending:
            d = self.pending.pop(0)
            d.callback(d.value_to_fire)  # type: ignore[attr-defined]

    def allocate_sockets(self, session, side, local_ip, sdp):
        self.calls.append(("allocate", session, side, local_ip))
        targets = self.targets
        if targets == "auto":
            targets = [MediaTarget(local_ip, 40000 + 2 * i) for i in range(len(sdp.media))]
        return self._answer(targets)

    def activate_session(self, session, param=None):
        self.calls.append(("activate", session))
        return self._answer(self.activate)

    def close_session(self, session, reason=None):
        self.calls.append(("close", session, reason))
        return 1

    def expire(self, now=None):
        return []

    def named(self, what: str) -> list[tuple]:
        return [c for c in self.calls if c[0] == what]


class NATProxyTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.a = MemoryLeg("192.0.2.1")
        self.b = MemoryLeg("198.51.100.1")
        self.reactor = FakeUDPReactor()
        self.relay = LocalRelay(self.reactor, port_range=(30000, 30999), rng=random.Random(3), sockets=self.reactor)
        self.make_proxy(self.relay)

    def make_proxy(self, nathelper: Any, legs: Optional[list] = None) -> None:
        legs = legs or [self.a, self.b]
        self.dispatcher = memory_dispatcher(legs)
        self.proxy = StatelessProxy(self.dispatcher, secret=SECRET, nathelper=nathelper)
        self.dispatcher.set_receiver(self.proxy)

    def only(self, leg: MemoryLeg):
        sent = leg.take()
        self.assertEqual(len(sent), 1, f"expected one message on {leg.key}, got {sent!r}")
        return sent[0][0]

    def invite(self, body: Optional[str] = None, **kw) -> Request:
        if body is None:
            body = sdp("192.0.2.10", 49170)
        headers = [SDP_TYPE] if body else []
        self.a.receive(request(body=body, headers=headers, **kw), UAC)
        return self.only(self.b)

    def reply(self, invite: Request, code: int = 200, body: Optional[str] = None, to_tag: str = "bob1",
              leg: Optional[MemoryLeg] = None) -> Optional[Response]:
        if body is None:
            body = sdp("198.51.100.20", 6000) if code < 300 else ""
        response = invite.create_response(code, to_tag=to_tag, headers=[("Contact", "<sip:bob@198.51.100.20>")],
                                          record_route=True)
        if body:
            response.set_body(body.encode(), "application/sdp")
        self.b.receive(response, UAS)
        sent = (leg or self.a).take()
        return sent[0][0] if sent else None

    def ack(self, body: str = "", cseq: int = 1, to: str = TO_TAGGED) -> list:
        headers = [SDP_TYPE] if body else []
        self.a.receive(request("ACK", to=to, cseq=cseq, body=body, headers=headers), UAC)
        return self.b.take()


class KeyTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.a = MemoryLeg("192.0.2.1")
        self.b = MemoryLeg("198.51.100.1")
        self.sessions = NATSessions(RecordingHelper())

    def test_a_request_and_its_response_share_the_ids(self) -> None:
        invite = parse(request(to=TO_TAGGED))
        response = invite.create_response(200)
        k1 = self.sessions.session_key(invite, self.a, self.b)
        k2 = self.sessions.session_key(response, self.b, self.a)
        self.assertEqual(k1, k2)
        self.assertEqual(k1, SessionKey(
            "call-1@192.0.2.10", 1, "sip tag=alice1 udp:192.0.2.1:5060", "sip tag=bob1 udp:198.51.100.1:5060",
            "sip:alice@atlanta.example.com", "sip:bob@biloxi.example.com", "alice1", "bob1",
            "192.0.2.1", "198.51.100.1"))
        self.assertEqual(k1.transaction, ("call-1@192.0.2.10", 1, "sip tag=alice1 udp:192.0.2.1:5060"))

    def test_a_request_from_the_callee_names_the_callee_from(self) -> None:
        bye = parse(request("BYE", from_="<sip:bob@biloxi.example.com>;tag=bob1",
                            to="<sip:alice@atlanta.example.com>;tag=alice1", cseq=7))
        k = self.sessions.session_key(bye, self.b, self.a)
        self.assertEqual((k.idfrom, k.idto, k.cseq), ("sip tag=bob1 udp:198.51.100.1:5060",
                                                      "sip tag=alice1 udp:192.0.2.1:5060", 7))

    def test_without_a_tag_the_address_of_record_names_the_party(self) -> None:
        k = self.sessions.session_key(parse(request()), self.a, self.b)
        self.assertEqual(k.idto, "sip aor=sip:bob@biloxi.example.com udp:198.51.100.1:5060")
        self.assertIsNone(k.to_tag)

    def test_sdp_body_needs_an_sdp_content_type(self) -> None:
        self.assertEqual(sdp_body(parse(request(body="v=0\r\n"))), b"v=0\r\n")
        self.assertEqual(sdp_body(parse(request(body="v=0\r\n", headers=[("Content-Type", "Application/SDP; x=1")]))),
                         b"v=0\r\n")
        self.assertIsNone(sdp_body(parse(request(body="hi", headers=[("Content-Type", "text/plain")]))))
        self.assertIsNone(sdp_body(parse(request())))


class RewriteTests(NATProxyTestCase):
    def test_offer_and_answer_point_at_the_relay(self) -> None:
        invite = self.invite()
        self.assertEqual(media_lines(invite.body.decode())[:2],
                         ["o=user 100 2 IN IP4 192.0.2.10", "c=IN IP4 198.51.100.1"])
        to_callee = parse_sdp(invite.body).media[0].port
        self.assertEqual(int(invite.get("content-length")), len(invite.body))
        ok = self.reply(invite)
        self.assertEqual(media_lines(ok.body.decode())[:2], ["o=user 100 2 IN IP4 198.51.100.20", "c=IN IP4 192.0.2.1"])
        to_caller = parse_sdp(ok.body).media[0].port
        self.assertEqual({(h, p) for (h, p) in self.reactor.bound},
                         {("198.51.100.1", to_callee), ("198.51.100.1", to_callee + 1),
                          ("192.0.2.1", to_caller), ("192.0.2.1", to_caller + 1)})
        (session,) = self.relay.sessions()  # the 200 activates it already
        self.assertEqual(session["to"], "198.51.100.20:6000/2")
        self.assertEqual(len(self.ack()), 1)
        self.assertEqual(len(self.relay.sessions()), 1)

    def test_ipv6_legs(self) -> None:
        a, b = MemoryLeg("2001:db8:a::1"), MemoryLeg("2001:db8:b::1")
        self.a, self.b = a, b
        self.make_proxy(self.relay, [a, b])
        self.a.receive(request(uri="sip:bob@[2001:db8:b::20]", via="SIP/2.0/UDP [2001:db8:a::10]:5060;branch=z9hG4bK6",
                               body=sdp("2001:db8:a::10", 49170), headers=[SDP_TYPE]), ("2001:db8:a::10", 5060))
        invite = self.only(self.b)
        self.assertIn("c=IN IP6 2001:db8:b::1", media_lines(invite.body.decode()))
        ok = self.reply(invite, body=sdp("2001:db8:b::20", 6000))
        self.assertIn("c=IN IP6 2001:db8:a::1", media_lines(ok.body.decode()))

    def test_rtcp_attribute_is_rewritten(self) -> None:
        invite = self.invite(sdp("192.0.2.10", 49170, "a=rtcp:49999 IN IP4 192.0.2.10"))
        port = parse_sdp(invite.body).media[0].port
        self.assertIn(f"a=rtcp:{port + 1} IN IP4 198.51.100.1", media_lines(invite.body.decode()))

    def test_held_stream_stays_held(self) -> None:
        held = sdp("0.0.0.0", 49170, "a=sendonly")
        invite = self.invite(held)
        self.assertIn("c=IN IP4 0.0.0.0", media_lines(invite.body.decode()))
        self.assertIn("m=audio 49170 RTP/AVP 0", media_lines(invite.body.decode()))
        self.assertEqual(self.relay.socket_count, 0)

    def test_inactive_stream_keeps_its_direction(self) -> None:
        invite = self.invite(sdp("192.0.2.10", 49170, "a=inactive"))
        self.assertIn(b"a=inactive", invite.body)
        self.assertIn("c=IN IP4 198.51.100.1", media_lines(invite.body.decode()))

    def test_update_with_sdp_is_left_alone(self) -> None:
        body = sdp("192.0.2.10", 49170)
        self.a.receive(request("UPDATE", to=TO_TAGGED, cseq=2, body=body, headers=[SDP_TYPE]), UAC)
        self.assertEqual(self.only(self.b).body, body.encode())
        self.assertEqual(self.relay.socket_count, 0)

    def test_other_content_types_are_left_alone(self) -> None:
        self.a.receive(request(body="hello", headers=[("Content-Type", "text/plain")]), UAC)
        self.assertEqual(self.only(self.b).body, b"hello")

    def test_malformed_sdp_gets_400(self) -> None:
        self.a.receive(request(body="v=0\r\nm=audio\r\n", headers=[SDP_TYPE]), UAC)
        self.assertEqual(self.b.sent, [])
        self.assertEqual(self.only(self.a).code, 400)

    def test_no_relay_ports_gets_503_with_retry_after(self) -> None:
        self.reactor.busy.update(range(30000, 31000))
        self.a.receive(request(body=sdp("192.0.2.10", 49170), headers=[SDP_TYPE]), UAC)
        self.assertEqual(self.b.sent, [])
        response = self.only(self.a)
        self.assertEqual((response.code, response.get("retry-after")), (503, "5"))
        self.assertEqual(response.get("via"), "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKuac1")

    def test_a_response_the_relay_cannot_take_is_dropped(self) -> None:
        invite = self.invite()
        self.reactor.busy.update(range(30000, 31000))
        self.assertIsNone(self.reply(invite))

    def test_late_offer_is_activated_by_the_ack(self) -> None:
        invite = self.invite(body="")
        ok = self.reply(invite)
        self.assertIn("c=IN IP4 192.0.2.1", media_lines(ok.body.decode()))
        self.assertEqual(self.relay.sessions(), [])
        (ack,) = self.ack(sdp("192.0.2.10", 49170))
        self.assertIn("c=IN IP4 198.51.100.1", media_lines(ack[0].body.decode()))
        self.assertEqual(len(self.relay.sessions()), 1)

    def test_early_media_is_activated_by_183(self) -> None:
        invite = self.invite()
        progress = self.reply(invite, 183)
        self.assertIn("c=IN IP4 192.0.2.1", media_lines(progress.body.decode()))
        self.assertEqual(len(self.relay.sessions()), 1)
        self.reply(invite, 200)
        self.assertEqual(len(self.relay.sessions()), 1)

    def test_forked_answers_get_sessions_each(self) -> None:
        invite = self.invite()
        one = self.reply(invite, 183, to_tag="fork1")
        two = self.reply(invite, 183, body=sdp("198.51.100.30", 7000), to_tag="fork2")
        self.assertNotEqual(parse_sdp(one.body).media[0].port, parse_sdp(two.body).media[0].port)
        self.assertEqual(len(self.relay.sessions()), 2)


class ClosingTests(NATProxyTestCase):
    def test_bye_closes_the_session(self) -> None:
        self.reply(self.invite())
        self.ack()
        self.a.receive(request("BYE", to=TO_TAGGED, cseq=2), UAC)
        self.assertEqual(len(self.b.take()), 1)
        self.assertEqual(self.relay.sessions(), [])
        self.relay.expire(self.reactor.seconds() + 1)
        self.assertEqual(self.relay.socket_count, 0)

    def test_bye_from_the_callee_closes_the_session(self) -> None:
        self.reply(self.invite())
        self.ack()
        bye = request("BYE", uri="sip:alice@192.0.2.10", via="SIP/2.0/UDP 198.51.100.20:5060;branch=z9hG4bKb",
                      from_="<sip:bob@biloxi.example.com>;tag=bob1", to="<sip:alice@atlanta.example.com>;tag=alice1",
                      cseq=1, contact=None)
        self.b.receive(bye, UAS)
        self.assertEqual(len(self.a.take()), 1)
        self.assertEqual(self.relay.sessions(), [])

    def test_cancel_releases_the_offer(self) -> None:
        self.invite()
        self.a.receive(request("CANCEL"), UAC)
        self.assertEqual(len(self.b.take()), 1)
        self.relay.expire(self.reactor.seconds() + 1)
        self.assertEqual((self.relay.socket_count, self.relay.calls), (0, {}))

    def test_an_error_final_closes_and_its_ack_passes(self) -> None:
        invite = self.invite()
        self.reply(invite, 183)
        self.assertEqual(len(self.relay.sessions()), 1)
        busy = self.reply(invite, 486)
        self.assertEqual(busy.code, 486)
        self.assertEqual(self.relay.sessions(), [])
        self.assertEqual(len(self.ack()), 1)
        self.relay.expire(self.reactor.seconds() + 1)
        self.assertEqual(self.relay.socket_count, 0)

    def test_an_ack_for_an_incomplete_session_is_dropped(self) -> None:
        invite = self.invite()
        ok = self.reply(invite, body="")  # a broken answer: no SDP to an offer
        self.assertEqual(ok.code, 200)
        self.assertEqual(self.ack(), [])

    def test_an_ack_without_any_media_passes(self) -> None:
        invite = self.invite(body="")
        self.reply(invite, body="")
        self.assertEqual(len(self.ack()), 1)


class HelperContractTests(NATProxyTestCase):
    def test_what_the_helper_is_asked(self) -> None:
        helper = RecordingHelper()
        self.make_proxy(helper)
        invite = self.invite()
        self.reply(invite)
        self.ack()
        self.a.receive(request("BYE", to=TO_TAGGED, cseq=2), UAC)
        steps = [(c[0], c[2] if c[0] == "allocate" else None) for c in helper.calls]
        self.assertEqual(steps, [("allocate", 0), ("activate", None), ("allocate", 1), ("activate", None),
                                 ("activate", None), ("close", None)])
        offer = helper.named("allocate")[0]
        self.assertEqual(offer[3], "198.51.100.1")  # the outgoing leg
        self.assertEqual(helper.named("allocate")[1][3], "192.0.2.1")
        close = helper.named("close")[0]
        self.assertEqual((close[1].cseq, close[2]), (None, "bye"))

    def test_deferred_answers_hold_the_packet(self) -> None:
        helper = RecordingHelper(deferred=True)
        self.make_proxy(helper)
        self.a.receive(request(body=sdp("192.0.2.10", 49170), headers=[SDP_TYPE]), UAC)
        self.assertEqual(self.b.sent, [])
        helper.fire()
        invite = self.only(self.b)
        self.assertIn("m=audio 40000 RTP/AVP 0", media_lines(invite.body.decode()))

    def test_a_failed_deferred_allocation_gets_503(self) -> None:
        helper = RecordingHelper(deferred=True, targets=None)
        self.make_proxy(helper)
        self.a.receive(request(body=sdp("192.0.2.10", 49170), headers=[SDP_TYPE]), UAC)
        helper.fire()
        self.assertEqual(self.b.sent, [])
        self.assertEqual(self.only(self.a).code, 503)

    def test_a_helper_raising_gets_503_not_a_crash(self) -> None:
        class Broken(RecordingHelper):
            def allocate_sockets(self, *args):
                raise RuntimeError("boom")

        self.make_proxy(Broken())
        self.a.receive(request(body=sdp("192.0.2.10", 49170), headers=[SDP_TYPE]), UAC)
        self.assertEqual(self.only(self.a).code, 503)
        self.flushLoggedErrors(RuntimeError)

    def test_too_few_targets_is_a_500(self) -> None:
        self.make_proxy(RecordingHelper(targets=[]))
        self.a.receive(request(body=sdp("192.0.2.10", 49170), headers=[SDP_TYPE]), UAC)
        self.assertEqual(self.only(self.a).code, 500)

    def test_do_nat_raises_nat_error_directly(self) -> None:
        sessions = NATSessions(RecordingHelper(targets=None), retry_after=9)
        packet = parse(request(body=sdp("192.0.2.10", 49170)))
        error = self.assertRaises(NATError, sessions.do_nat, packet, self.a, self.b)
        self.assertEqual((error.code, error.retry_after), (503, 9))

    def test_same_leg_is_not_natted(self) -> None:
        helper = RecordingHelper()
        self.make_proxy(helper)
        self.assertIsNone(self.proxy.do_nat(parse(request(body=sdp())), self.a, self.a))
        self.assertEqual(helper.calls, [])
