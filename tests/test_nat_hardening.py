"""The relay under attack (issue 12), without sockets: injected and
hijacked RTP, a port range taken by one INVITE or a flood of unanswered
ones, allocation at the file-descriptor limit, forwarding after BYE."""
from __future__ import annotations

from tests.nat_util import rtp, sdp
from tests.test_nat_relay import CALLEE, CALLER, LEG_A, LEG_B, RelayTestCase, key

ATTACKER = ("203.0.113.66", 4444)
NAT = ("203.0.113.7", 40123)  # the caller behind NAT: not what its SDP says


class InjectionTests(RelayTestCase):
    def port_stats(self, port: int) -> dict:
        info = self.relay.describe("call-1")
        for group in info["groups"]:
            for media in group["media"]:
                for stats in media["ports"]:
                    if stats["port"] == port:
                        return stats
        raise AssertionError(f"no relay port {port}")

    def test_after_latching_packets_from_another_source_are_dropped_and_counted(self) -> None:
        to_callee, to_caller = self.call()
        self.reactor.deliver(LEG_A, to_caller.port, rtp(1), (CALLER, 49170))
        for seq in range(20):
            self.reactor.deliver(LEG_A, to_caller.port, rtp(100 + seq), ATTACKER)
        self.assertEqual(self.reactor.sent_from(LEG_B, to_callee.port), [(rtp(1), (CALLEE, 6000))])
        stats = self.port_stats(to_caller.port)
        self.assertEqual((stats["packets"], stats["foreign"]), (1, 20))

    def test_a_packet_before_the_phones_first_does_not_steal_the_stream(self) -> None:
        to_callee, to_caller = self.call()
        # a blind spray reaches both relay ports before either phone sends
        self.reactor.deliver(LEG_A, to_caller.port, rtp(66), ATTACKER)
        self.reactor.deliver(LEG_B, to_callee.port, rtp(67), ATTACKER)
        self.reactor.deliver(LEG_A, to_caller.port, rtp(1), (CALLER, 49170))
        self.reactor.deliver(LEG_B, to_callee.port, rtp(2), (CALLEE, 6000))
        for seq in range(5):
            self.reactor.deliver(LEG_A, to_caller.port, rtp(70 + seq), ATTACKER)
            self.reactor.deliver(LEG_B, to_callee.port, rtp(80 + seq), ATTACKER)
        self.reactor.deliver(LEG_A, to_caller.port, rtp(3), (CALLER, 49170))
        self.reactor.deliver(LEG_B, to_callee.port, rtp(4), (CALLEE, 6000))
        # once both phones sent, their media goes to each other, never to the
        # attacker, and nothing the attacker sends passes any more
        to_callee_side = self.reactor.sent_from(LEG_B, to_callee.port)
        to_caller_side = self.reactor.sent_from(LEG_A, to_caller.port)
        self.assertEqual(to_callee_side[-1], (rtp(3), (CALLEE, 6000)))
        self.assertEqual(to_caller_side[-2:], [(rtp(2), (CALLER, 49170)), (rtp(4), (CALLER, 49170))])
        forwarded = [data for data, _ in to_callee_side + to_caller_side]
        for seq in range(5):
            self.assertNotIn(rtp(70 + seq), forwarded)
            self.assertNotIn(rtp(80 + seq), forwarded)
        # what learning leaves open (sipproxy/nat/forward.py): the spray's first
        # packet on each port passed, and the caller's first packet went where the
        # callee's side had learned (the attacker), until the callee's own first packet
        self.assertEqual(to_callee_side[:2], [(rtp(66), (CALLEE, 6000)), (rtp(1), ATTACKER)])
        self.assertEqual(to_caller_side[0], (rtp(67), ATTACKER))  # the spray back to itself

    def test_within_the_learning_window_the_sdp_address_takes_over(self) -> None:
        to_callee, to_caller = self.call()
        self.relay.startService()
        self.reactor.deliver(LEG_A, to_caller.port, rtp(1), NAT)  # first: any source is taken
        self.reactor.advance(1)
        self.reactor.deliver(LEG_A, to_caller.port, rtp(2), (CALLER, 49170))  # the SDP's address and port: better
        self.reactor.deliver(LEG_A, to_caller.port, rtp(3), NAT)  # no longer accepted
        self.reactor.deliver(LEG_B, to_callee.port, rtp(4), (CALLEE, 6000))
        self.assertEqual([d for d, _ in self.reactor.sent_from(LEG_B, to_callee.port)], [rtp(1), rtp(2)])
        self.assertEqual(self.reactor.sent_from(LEG_A, to_caller.port), [(rtp(4), (CALLER, 49170))])

    def test_a_phone_behind_nat_keeps_its_stream_after_the_learning_window(self) -> None:
        to_callee, to_caller = self.call()
        self.relay.startService()
        self.reactor.deliver(LEG_A, to_caller.port, rtp(1), NAT)
        self.reactor.pump([1] * 5)  # the learning window (3 s) is over
        self.reactor.deliver(LEG_A, to_caller.port, rtp(2), (CALLER, 49171))  # even the SDP address is late now
        self.reactor.deliver(LEG_A, to_caller.port, rtp(3), ATTACKER)
        self.reactor.deliver(LEG_A, to_caller.port, rtp(4), NAT)
        self.reactor.deliver(LEG_B, to_callee.port, rtp(5), (CALLEE, 6000))
        self.assertEqual([d for d, _ in self.reactor.sent_from(LEG_B, to_callee.port)], [rtp(1), rtp(4)])
        self.assertEqual(self.reactor.sent_from(LEG_A, to_caller.port), [(rtp(5), NAT)])
        self.assertEqual(self.port_stats(to_caller.port)["foreign"], 2)

    def test_a_spray_that_outlasts_the_learning_window_does_not_lock_the_phone_out(self) -> None:
        to_callee, to_caller = self.call()
        self.relay.startService()
        self.reactor.deliver(LEG_A, to_caller.port, rtp(66), ATTACKER)
        self.reactor.deliver(LEG_B, to_callee.port, rtp(67), ATTACKER)
        self.reactor.pump([1] * 10)  # early media: the phones start only when answered
        self.reactor.deliver(LEG_A, to_caller.port, rtp(1), (CALLER, 49170))
        self.reactor.deliver(LEG_B, to_callee.port, rtp(2), (CALLEE, 6000))
        self.reactor.deliver(LEG_A, to_caller.port, rtp(68), ATTACKER)
        self.reactor.deliver(LEG_A, to_caller.port, rtp(3), (CALLER, 49170))
        self.assertEqual(self.reactor.sent_from(LEG_A, to_caller.port)[-1], (rtp(2), (CALLER, 49170)))
        self.assertEqual(self.reactor.sent_from(LEG_B, to_callee.port)[-1], (rtp(3), (CALLEE, 6000)))
        self.assertNotIn(rtp(68), [d for d, _ in self.reactor.sent_from(LEG_B, to_callee.port)])

    def test_a_phone_that_starts_late_is_still_learned(self) -> None:
        to_callee, to_caller = self.call()
        self.relay.startService()
        self.reactor.advance(20)  # ringing, hold: the window starts with the first packet
        self.reactor.deliver(LEG_A, to_caller.port, rtp(1), NAT)
        self.reactor.deliver(LEG_B, to_callee.port, rtp(2), (CALLEE, 6000))
        self.assertEqual(self.reactor.sent_from(LEG_A, to_caller.port), [(rtp(2), NAT)])

    def test_strict_source_forwards_only_from_the_sdp_address_and_port(self) -> None:
        self.relay = self.make_relay(strict_source=True)
        to_callee, to_caller = self.call()
        self.reactor.deliver(LEG_A, to_caller.port, rtp(1), NAT)
        self.reactor.deliver(LEG_A, to_caller.port, rtp(2), (CALLER, 49171))
        self.reactor.deliver(LEG_A, to_caller.port, rtp(3), (CALLER, 49170))
        self.reactor.deliver(LEG_B, to_callee.port, rtp(4), (CALLEE, 6000))
        self.assertEqual([d for d, _ in self.reactor.sent_from(LEG_B, to_callee.port)], [rtp(3)])
        self.assertEqual(self.reactor.sent_from(LEG_A, to_caller.port), [(rtp(4), (CALLER, 49170))])
        self.assertEqual(self.port_stats(to_caller.port)["foreign"], 2)


class AfterByeTests(RelayTestCase):
    def test_nothing_is_forwarded_after_bye_but_the_sockets_stay_for_the_close_delay(self) -> None:
        to_callee, to_caller = self.call()
        self.reactor.deliver(LEG_A, to_caller.port, rtp(1), (CALLER, 49170))
        self.reactor.deliver(LEG_B, to_callee.port, rtp(2), (CALLEE, 6000))
        self.assertEqual(self.relay.close_session(key(cseq=None), reason="bye"), 1)
        self.reactor.deliver(LEG_A, to_caller.port, rtp(3), (CALLER, 49170))
        self.reactor.deliver(LEG_B, to_callee.port, rtp(4), (CALLEE, 6000))
        self.assertEqual(self.reactor.sent_from(LEG_B, to_callee.port), [(rtp(1), (CALLEE, 6000))])
        self.assertEqual(self.reactor.sent_from(LEG_A, to_caller.port), [(rtp(2), (CALLER, 49170))])
        self.assertEqual(self.relay.socket_count, 4)  # the ports stay ours for the close delay
        self.relay.expire(self.reactor.seconds() + 1.0)
        self.assertEqual((self.relay.socket_count, self.reactor.bound), (0, {}))

    def test_nothing_is_forwarded_after_cancel_or_an_error_final(self) -> None:
        to_callee, to_caller = self.call()
        self.relay.close_session(key(), reason="final 486")
        self.reactor.deliver(LEG_A, to_caller.port, rtp(1), (CALLER, 49170))
        self.assertEqual(self.reactor.sent_from(LEG_B, to_callee.port), [])


class ExhaustionTests(RelayTestCase):
    def test_one_offer_cannot_take_the_port_range(self) -> None:
        self.relay = self.make_relay(port_range=(30000, 30999))
        self.assertIsNone(self.offer(text=sdp(CALLER, media=["m=audio 40000/400 RTP/AVP 0"])))
        self.assertEqual((self.relay.socket_count, self.reactor.bound, self.relay.calls), (0, {}, {}))

    def test_eight_streams_in_one_offer_are_allowed_nine_are_not(self) -> None:
        eight = [f"m=audio {40000 + 2 * n} RTP/AVP 0" for n in range(8)]
        self.assertEqual(len(self.offer(text=sdp(CALLER, media=eight))), 8)
        self.assertEqual(self.relay.socket_count, 16)
        nine = [f"m=audio {40000 + 2 * n} RTP/AVP 0" for n in range(9)]
        self.assertIsNone(self.offer(key(call_id="call-2"), text=sdp(CALLER, media=nine)))
        self.assertIsNone(self.offer(key(call_id="call-3"), text=sdp(CALLER, media=["m=audio 40000/9 RTP/AVP 0"])))
        self.assertEqual(self.relay.socket_count, 16)

    def test_an_unanswered_offer_is_released_after_60_seconds(self) -> None:
        self.offer()
        self.relay.startService()
        self.reactor.advance(59)
        self.assertEqual(self.relay.socket_count, 2)
        self.reactor.advance(2)
        self.assertEqual((self.relay.socket_count, self.reactor.bound, self.relay.calls), (0, {}, {}))

    def test_an_answered_offer_is_not_released_at_60_seconds(self) -> None:
        self.offer()
        self.answer()
        self.relay.startService()
        self.reactor.advance(61)
        self.assertEqual(self.relay.socket_count, 4)
        self.assertEqual(self.relay.activate_session(key()), 1)

    def test_the_unanswered_timeout_is_configurable(self) -> None:
        self.relay = self.make_relay(unanswered_timeout=5)
        self.offer()
        self.relay.startService()
        self.reactor.advance(4)
        self.assertEqual(self.relay.socket_count, 2)
        self.reactor.advance(2)
        self.assertEqual(self.relay.socket_count, 0)

    def test_a_flood_of_unanswered_invites_cannot_starve_the_range(self) -> None:
        self.relay = self.make_relay(port_range=(30000, 30019))  # ten RTP/RTCP pairs
        for n in range(10):
            self.assertIsNotNone(self.offer(key(call_id=f"flood-{n}")))
        self.assertIsNone(self.offer(key(call_id="victim")))
        self.relay.startService()
        self.reactor.advance(61)
        self.assertIsNotNone(self.offer(key(call_id="victim")))
        self.assertEqual(self.relay.socket_count, 2)

    def test_a_failed_allocation_releases_every_socket_it_opened(self) -> None:
        self.reactor.fd_limit = 3  # the fourth socket fails with EMFILE
        text = sdp(CALLER, media=["m=audio 49170 RTP/AVP 0", "m=video 49180 RTP/AVP 31"])
        self.assertIsNone(self.offer(text=text))
        self.assertEqual((self.relay.socket_count, self.reactor.bound, self.relay.calls), (0, {}, {}))
        self.reactor.fd_limit = None
        self.assertEqual(len(self.offer(text=text)), 2)
        self.assertEqual(self.relay.socket_count, 4)

    def test_a_failed_answer_keeps_the_offer(self) -> None:
        self.offer()
        self.reactor.fd_limit = 3
        self.assertIsNone(self.answer())
        self.assertEqual((self.relay.socket_count, len(self.reactor.bound)), (2, 2))
        self.reactor.fd_limit = None
        self.assertIsNotNone(self.answer())
        self.assertEqual(self.relay.activate_session(key()), 1)

    def test_allocation_still_works_with_the_per_call_limit_lifted(self) -> None:
        self.relay = self.make_relay(max_streams=0, max_sockets_per_call=0)
        (target,) = self.offer(text=sdp(CALLER, media=["m=audio 40000/20 RTP/AVP 0"]))
        self.assertEqual(self.relay.socket_count, 40)
        self.assertEqual(target.port % 2, 0)
