"""LocalRelay without sockets: allocation, keys, forwarding, latching and
expiry, on a fake UDP reactor driven by a Clock."""
from __future__ import annotations

import random

from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from sipproxy.interfaces import INATHelper
from sipproxy.nat import relay as relay_module
from sipproxy.nat.relay import LocalRelay, parse_port_range
from sipproxy.nat.sessions import SessionKey
from sipproxy.sip.sdp import MediaTarget, parse_sdp
from tests.nat_util import FakeUDPReactor, rtp, sdp

CALLER = "192.0.2.10"
CALLEE = "198.51.100.20"
LEG_A = "192.0.2.1"  # faces the caller
LEG_B = "198.51.100.1"  # faces the callee


def key(cseq=1, to_tag="bob1", call_id="call-1", from_tag="alice1") -> SessionKey:
    return SessionKey(call_id, cseq, f"sip tag={from_tag} udp:{LEG_A}:5060",
                      f"sip tag={to_tag} udp:{LEG_B}:5060" if to_tag else f"sip aor=sip:bob@b udp:{LEG_B}:5060",
                      "sip:alice@a", "sip:bob@b", from_tag, to_tag, LEG_A, LEG_B)


class RelayTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = FakeUDPReactor()
        self.relay = self.make_relay()
        self.events: list[dict] = []
        self.patch(relay_module, "log", Logger(observer=self.events.append))

    def make_relay(self, **options) -> LocalRelay:
        options.setdefault("port_range", (30000, 30099))
        options.setdefault("rng", random.Random(7))
        options.setdefault("sockets", self.reactor)
        return LocalRelay(self.reactor, **options)

    def offer(self, k=None, text=None, local=LEG_B):
        return self.relay.allocate_sockets(k or key(), 0, local, parse_sdp(text or sdp(CALLER, 49170)))

    def answer(self, k=None, text=None, local=LEG_A):
        return self.relay.allocate_sockets(k or key(), 1, local, parse_sdp(text or sdp(CALLEE, 6000)))

    def call(self, k=None):
        """Offer, answer, activate: (target advertised to callee, target advertised to caller)."""
        k = k or key()
        to_callee = self.offer(k)[0]
        to_caller = self.answer(k)[0]
        self.assertEqual(self.relay.activate_session(k), 1)
        return to_callee, to_caller

    def ended(self) -> list[dict]:
        return [e for e in self.events if e.get("reason") is not None and "packets_from" in e]


class AllocationTests(RelayTestCase):
    def test_provides_the_interface(self) -> None:
        self.assertTrue(INATHelper.providedBy(self.relay))

    def test_rtp_and_rtcp_on_an_even_odd_pair_in_range_on_the_leg_address(self) -> None:
        (target,) = self.offer()
        self.assertEqual(target.address, LEG_B)
        self.assertEqual(target.port % 2, 0)
        self.assertEqual(target.rtcp_port, target.port + 1)
        self.assertTrue(30000 <= target.port < target.port + 1 <= 30099)
        self.assertEqual(set(self.reactor.bound), {(LEG_B, target.port), (LEG_B, target.port + 1)})
        self.assertEqual(self.relay.socket_count, 2)

    def test_each_media_line_gets_its_own_block(self) -> None:
        text = sdp(CALLER, media=["m=audio 49170 RTP/AVP 0", "m=video 51372/2 RTP/AVP 31", "m=image 49180 udptl t38"])
        audio, video, image = self.offer(text=text)
        self.assertEqual(video.port % 2, 0)
        self.assertEqual(self.relay.socket_count, 2 + 4 + 1)
        self.assertEqual({p for (_, p) in self.reactor.bound},
                         {audio.port, audio.port + 1, video.port, video.port + 1, video.port + 2, video.port + 3,
                          image.port})

    def test_retransmission_gets_the_same_ports(self) -> None:
        first = self.offer()
        second = self.offer()
        self.assertEqual(first, second)
        self.assertEqual(self.relay.socket_count, 2)

    def test_older_cseq_is_refused(self) -> None:
        self.offer(key(cseq=5))
        self.assertIsNone(self.offer(key(cseq=4)))
        self.assertIsNotNone(self.offer(key(cseq=6)))

    def test_one_group_per_answering_dialog(self) -> None:
        self.offer()
        fork_a = self.answer(key(to_tag="a"))
        fork_b = self.answer(key(to_tag="b"))
        self.assertNotEqual(fork_a, fork_b)
        self.assertEqual(self.relay.socket_count, 6)
        self.assertEqual(self.relay.activate_session(key(to_tag="a")), 1)
        self.assertEqual(self.relay.activate_session(key(to_tag="b")), 1)
        self.assertEqual(len(self.relay.sessions()), 2)

    def test_rejected_held_and_tcp_streams_get_no_sockets(self) -> None:
        text = sdp(CALLER, media=["m=audio 0 RTP/AVP 0", "m=audio 49170 RTP/AVP 0", "c=IN IP4 0.0.0.0",
                                  "m=message 9 TCP/MSRP *", "m=audio 49180 RTP/AVP 0"])
        targets = self.offer(text=text)
        self.assertEqual([t is None for t in targets], [True, True, True, False])
        self.assertEqual(self.relay.socket_count, 2)

    def test_ports_in_use_are_skipped(self) -> None:
        self.reactor.busy.update(range(30000, 30090))
        (target,) = self.offer()
        self.assertTrue(target.port >= 30090)

    def test_a_full_range_fails_and_leaks_nothing(self) -> None:
        relay = self.make_relay(port_range=(30000, 30005))
        k = key()
        self.assertIsNotNone(relay.allocate_sockets(k, 0, LEG_B, parse_sdp(sdp(CALLER))))
        text = sdp(CALLEE, media=["m=audio 6000 RTP/AVP 0", "m=video 6002 RTP/AVP 0", "m=video 6004 RTP/AVP 0"])
        self.assertIsNone(relay.allocate_sockets(k, 1, LEG_B, parse_sdp(text)))
        self.assertEqual(relay.socket_count, 2)
        self.assertEqual(len(self.reactor.bound), 2)

    def test_an_address_that_is_not_local_fails_at_once(self) -> None:
        self.reactor.foreign.add(LEG_B)
        self.assertIsNone(self.offer())
        self.assertEqual(self.reactor.attempts, 1)
        self.assertEqual(self.relay.calls, {})

    def test_rtp_address_overrides_the_leg(self) -> None:
        self.relay.address = "203.0.113.5"
        (target,) = self.offer()
        self.assertEqual(target.address, "203.0.113.5")

    def test_ipv6(self) -> None:
        (target,) = self.offer(text=sdp("2001:db8::10", 49170), local="2001:db8::1")
        self.assertEqual(target, MediaTarget("2001:db8::1", target.port, target.port + 1))
        self.assertIn(("2001:db8::1", target.port), self.reactor.bound)

    def test_total_limit(self) -> None:
        relay = self.make_relay(max_sockets=3)
        self.assertIsNotNone(relay.allocate_sockets(key(), 0, LEG_B, parse_sdp(sdp(CALLER))))
        self.assertIsNone(relay.allocate_sockets(key(), 1, LEG_A, parse_sdp(sdp(CALLEE))))
        self.assertEqual(relay.socket_count, 2)

    def test_per_call_limit(self) -> None:
        relay = self.make_relay(max_sockets_per_call=4)
        self.assertIsNotNone(relay.allocate_sockets(key(), 0, LEG_B, parse_sdp(sdp(CALLER))))
        self.assertIsNotNone(relay.allocate_sockets(key(), 1, LEG_A, parse_sdp(sdp(CALLEE))))
        self.assertIsNone(relay.allocate_sockets(key(to_tag="fork2"), 1, LEG_A, parse_sdp(sdp(CALLEE))))
        other = key(call_id="call-2")
        self.assertIsNotNone(relay.allocate_sockets(other, 0, LEG_B, parse_sdp(sdp(CALLER))))

    def test_port_range_parsing(self) -> None:
        self.assertEqual(parse_port_range("2000-12000"), (2000, 12000))
        for bad in ("2000", "a-b", "0-10", "10-70000", "3-3", "5-4"):
            self.assertRaises(ValueError, parse_port_range, bad)


class ForwardingTests(RelayTestCase):
    def test_both_ways_from_the_advertised_ports(self) -> None:
        to_callee, to_caller = self.call()
        # the caller sends to what it got in the 200; it reaches the callee
        # from the port the callee got in the INVITE (symmetric RTP)
        self.reactor.deliver(LEG_A, to_caller.port, rtp(1), (CALLER, 49170))
        self.assertEqual(self.reactor.sent_from(LEG_B, to_callee.port), [(rtp(1), (CALLEE, 6000))])
        self.reactor.deliver(LEG_B, to_callee.port, rtp(2), (CALLEE, 6000))
        self.assertEqual(self.reactor.sent_from(LEG_A, to_caller.port), [(rtp(2), (CALLER, 49170))])
        # RTCP on the odd ports, to port + 1
        self.reactor.deliver(LEG_A, to_caller.port + 1, b"rtcp", (CALLER, 49171))
        self.assertEqual(self.reactor.sent_from(LEG_B, to_callee.port + 1), [(b"rtcp", (CALLEE, 6001))])

    def test_nothing_is_forwarded_before_activation(self) -> None:
        (to_callee,) = self.offer()
        self.reactor.deliver(LEG_B, to_callee.port, rtp(1), (CALLEE, 6000))
        self.assertEqual(self.reactor.sent_from(LEG_B, to_callee.port), [])
        self.assertEqual(self.relay.activate_session(key()), None)

    def test_latching_sends_back_to_the_real_source(self) -> None:
        to_callee, to_caller = self.call()
        nat = ("203.0.113.7", 40123)  # the caller behind NAT: not what its SDP says
        self.reactor.deliver(LEG_A, to_caller.port, rtp(1), nat)
        self.assertEqual(self.reactor.sent_from(LEG_B, to_callee.port)[-1][1], (CALLEE, 6000))
        self.reactor.deliver(LEG_B, to_callee.port, rtp(2), (CALLEE, 6000))
        self.assertEqual(self.reactor.sent_from(LEG_A, to_caller.port), [(rtp(2), nat)])

    def test_a_later_source_does_not_move_the_latch(self) -> None:
        to_callee, to_caller = self.call()
        self.reactor.deliver(LEG_A, to_caller.port, rtp(1), (CALLER, 49170))
        self.reactor.deliver(LEG_A, to_caller.port, rtp(2), ("203.0.113.66", 999))
        self.reactor.deliver(LEG_B, to_callee.port, rtp(3), (CALLEE, 6000))
        self.assertEqual(self.reactor.sent_from(LEG_A, to_caller.port), [(rtp(3), (CALLER, 49170))])
        port = self.relay.calls["call-1"].by_from[key().idfrom][1].groups_to[key().idto].media[0].ports[0]
        # issue 12: a source other than the learned one is dropped and counted, no longer forwarded
        self.assertEqual((port.packets, port.foreign), (1, 1))

    def test_a_rtcp_attribute_names_where_rtcp_goes(self) -> None:
        k = key()
        self.offer(k, text=sdp(CALLER, 49170, "a=rtcp:53020 IN IP4 192.0.2.99"))
        (to_caller,) = self.answer(k)
        self.relay.activate_session(k)
        self.reactor.deliver(LEG_B, self.offer(k)[0].port + 1, b"rtcp", (CALLEE, 6001))
        self.assertEqual(self.reactor.sent_from(LEG_A, to_caller.port + 1), [(b"rtcp", ("192.0.2.99", 53020))])

    def test_a_host_name_is_learned_by_latching(self) -> None:
        k = key()
        (to_callee,) = self.offer(k, text=sdp("pc.example.com", 49170).replace("IN IP4 pc", "IN IP4 pc"))
        (to_caller,) = self.answer(k)
        self.relay.activate_session(k)
        self.reactor.deliver(LEG_B, to_callee.port, rtp(1), (CALLEE, 6000))  # nowhere to go yet
        self.assertEqual(self.reactor.sent_from(LEG_A, to_caller.port), [])
        self.reactor.deliver(LEG_A, to_caller.port, rtp(2), ("192.0.2.77", 4000))
        self.reactor.deliver(LEG_B, to_callee.port, rtp(3), (CALLEE, 6000))
        self.assertEqual(self.reactor.sent_from(LEG_A, to_caller.port), [(rtp(3), ("192.0.2.77", 4000))])

    def test_activation_twice_is_a_duplicate(self) -> None:
        self.call()
        self.assertEqual(self.relay.activate_session(key()), -1)
        self.assertIsNone(self.relay.activate_session(key(call_id="nope")))

    def test_media_line_count_must_match(self) -> None:
        k = key()
        self.offer(k)
        self.answer(k, text=sdp(CALLEE, media=["m=audio 6000 RTP/AVP 0", "m=video 6002 RTP/AVP 31"]))
        self.assertIsNone(self.relay.activate_session(k))


class ExpiryTests(RelayTestCase):
    def test_bye_ends_the_session_and_frees_the_ports_after_the_close_delay(self) -> None:
        to_callee, to_caller = self.call()
        for seq in range(3):
            self.reactor.deliver(LEG_A, to_caller.port, rtp(seq), (CALLER, 49170))
        self.reactor.deliver(LEG_B, to_callee.port, rtp(9, b"x" * 20), (CALLEE, 6000))
        self.reactor.advance(5)
        self.assertEqual(self.relay.close_session(key(cseq=None), reason="bye"), 1)
        self.assertEqual(self.relay.sessions(), [])
        # issue 12: forwarding stops at once (Net::SIP); the sockets stay for the close delay
        self.reactor.deliver(LEG_A, to_caller.port, rtp(4), (CALLER, 49170))
        self.assertEqual(len(self.reactor.sent_from(LEG_B, to_callee.port)), 3)
        self.relay.expire(self.reactor.seconds() + 0.5)
        self.assertEqual(self.relay.socket_count, 4)
        self.relay.expire(self.reactor.seconds() + 1.0)
        self.assertEqual((self.relay.socket_count, self.reactor.bound, self.relay.calls), (0, {}, {}))
        (event,) = self.ended()
        self.assertEqual((event["reason"], event["packets_from"], event["bytes_from"], event["packets_to"],
                          event["bytes_to"], event["start"], event["end"]), ("bye", 3, 3 * 172, 1, 32, 0.0, 5.0))

    def test_bye_from_the_callee_closes_too(self) -> None:
        self.call()
        reverse = SessionKey("call-1", None, key().idto, key().idfrom, "sip:bob@b", "sip:alice@a")
        self.assertEqual(self.relay.close_session(reverse, reason="bye"), 1)

    def test_cancel_releases_an_unanswered_offer(self) -> None:
        self.offer()
        self.assertEqual(self.relay.close_session(key(to_tag=None), reason="cancel"), 0)
        self.relay.expire(self.reactor.seconds() + 1.0)
        self.assertEqual((self.relay.socket_count, self.relay.calls), (0, {}))

    def test_an_active_session_idle_for_30_seconds_expires(self) -> None:
        to_callee, to_caller = self.call()
        self.relay.startService()
        for _ in range(40):  # media flows for 40 s: alive
            self.reactor.deliver(LEG_A, to_caller.port, rtp(1), (CALLER, 49170))
            self.reactor.advance(1)
        self.assertEqual(len(self.relay.sessions()), 1)
        self.reactor.advance(29)
        self.assertEqual(len(self.relay.sessions()), 1)
        self.reactor.advance(2)
        self.assertEqual(self.relay.sessions(), [])
        self.assertEqual([e["reason"] for e in self.ended()], ["expired"])
        self.reactor.advance(2)
        self.assertEqual(self.relay.socket_count, 0)

    def test_an_unused_offer_is_released_after_180_seconds(self) -> None:
        # issue 12 releases unanswered offers after 60 s by default (tests/test_nat_hardening.py);
        # this is the 180 s bound on its own
        self.relay = self.make_relay(unanswered_timeout=None)
        self.offer()
        self.relay.startService()
        self.reactor.advance(179)
        self.assertEqual(self.relay.socket_count, 2)
        self.reactor.advance(2)
        self.assertEqual((self.relay.socket_count, self.relay.calls), (0, {}))

    def test_timeouts_are_configurable(self) -> None:
        relay = self.make_relay(idle_timeout=5, unused_timeout=10, close_delay=0.25, expire_interval=0.25)
        relay.allocate_sockets(key(call_id="unused"), 0, LEG_B, parse_sdp(sdp(CALLER)))
        k = key()
        relay.allocate_sockets(k, 0, LEG_B, parse_sdp(sdp(CALLER)))
        relay.allocate_sockets(k, 1, LEG_A, parse_sdp(sdp(CALLEE)))
        relay.activate_session(k)
        relay.startService()
        self.reactor.pump([0.25] * 18)  # 4.5 s
        self.assertEqual(len(relay.sessions()), 1)
        self.reactor.pump([0.25] * 6)  # idle for 5 s, plus the close delay
        self.assertEqual(relay.sessions(), [])
        self.assertEqual(set(relay.calls), {"unused"})
        self.reactor.pump([0.25] * 18)
        self.assertEqual((relay.socket_count, relay.calls), (0, {}))

    def test_a_reinvite_replaces_the_old_session(self) -> None:
        self.call()
        new = key(cseq=2)
        self.offer(new, text=sdp(CALLER, 49180, version=2))
        self.answer(new, text=sdp(CALLEE, 6010, version=2))
        self.assertEqual(self.relay.activate_session(new), 1)
        (live,) = self.relay.sessions()
        self.assertEqual(live["cseq"], 2)
        self.assertEqual([e["reason"] for e in self.ended()], ["replaced"])
        self.relay.expire(self.reactor.seconds() + 1)
        self.assertEqual(self.relay.socket_count, 4)

    def test_a_reinvite_from_the_callee_replaces_too(self) -> None:
        self.call()
        reverse = SessionKey("call-1", 1, key().idto, key().idfrom, "sip:bob@b", "sip:alice@a")
        self.relay.allocate_sockets(reverse, 0, LEG_A, parse_sdp(sdp(CALLEE, 6010)))
        self.relay.allocate_sockets(reverse, 1, LEG_B, parse_sdp(sdp(CALLER, 49180)))
        self.assertEqual(self.relay.activate_session(reverse), 1)
        self.assertEqual([e["reason"] for e in self.ended()], ["replaced"])

    def test_the_forked_session_left_takes_the_shared_sockets_back(self) -> None:
        k = key()
        (to_callees,) = self.offer(k)
        (fork_a,) = self.answer(key(to_tag="a"))
        (fork_b,) = self.answer(key(to_tag="b"))
        self.relay.activate_session(key(to_tag="a"))
        self.relay.activate_session(key(to_tag="b"))
        self.relay.close_session(key(to_tag="b"), reason="final 486")
        self.reactor.deliver(LEG_B, to_callees.port, rtp(1), (CALLEE, 6000))
        self.assertEqual(self.reactor.sent_from(LEG_A, fork_a.port), [(rtp(1), (CALLER, 49170))])

    def test_stopping_the_service_closes_everything(self) -> None:
        self.call()
        self.offer(key(call_id="call-2"))
        self.relay.startService()
        self.relay.stopService()
        self.assertEqual((self.relay.socket_count, self.reactor.bound, self.relay.calls), (0, {}, {}))
        self.assertEqual([e["reason"] for e in self.ended()], ["shutdown"])
        self.assertEqual(self.reactor.getDelayedCalls(), [])
