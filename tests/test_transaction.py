"""Transaction state machines (RFC 3261 17, RFC 6026): each timer value
and retransmission schedule, ACK and CANCEL matching, RFC 2543 fallback,
misuse by the TU, and (hypothesis) a client paired with a server over a
lossy, reordering, duplicating in-memory link driven by a fake clock."""
from __future__ import annotations

import heapq
import itertools
from typing import Any, Callable, Optional

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from sipproxy.sip.message import Request, parse
from sipproxy.sip.transaction import (
    ACCEPTED,
    CALLING,
    COMPLETED,
    CONFIRMED,
    PROCEEDING,
    TERMINATED,
    TRYING,
    AckReceived,
    AckTimeout,
    CancelTimer,
    ClientInvite,
    ClientNonInvite,
    Extra2xx,
    Final,
    LocalProtocolError,
    Provisional,
    RequestReceived,
    Send,
    ServerInvite,
    ServerNonInvite,
    StartTimer,
    Terminated,
    Timeout,
    TimerConfig,
    TransportError,
    TwoXXRetransmitter,
    client_key,
    server_key,
)
from sipproxy.sip.uac import create_ack, create_cancel, new_request

TIMERS = TimerConfig()


def request(method: str = "INVITE", branch: Optional[str] = None) -> Request:
    built = new_request(method, "sip:bob@biloxi.example.com", "<sip:alice@atlanta.example.com>",
                        "<sip:bob@biloxi.example.com>", sent_by="192.0.2.1:5062", branch=branch,
                        route_set=["<sip:p1;lr>"])
    return parse(bytes(built))  # what the server side sees


def of(kind: type, out: list) -> list:
    return [x for x in out if isinstance(x, kind)]


def timers(out: list) -> list[tuple[str, float]]:
    return [(x.name, x.delay) for x in out if isinstance(x, StartTimer)]


def sent(out: list) -> list:
    return [x.message for x in out if isinstance(x, Send)]


def fire_schedule(txn: Any, name: str, first: float, count: int) -> list[float]:
    """Fire timer C{name} C{count} times; the delays it was restarted with."""
    delays = [first]
    for _ in range(count):
        out = txn.timer_fired(name)
        self_sent = sent(out)
        assert len(self_sent) == 1, out
        delays.append(dict(timers(out))[name])
    return delays


class TimerConfigTests(SynchronousTestCase):
    def test_defaults_are_rfc3261_table_4(self) -> None:
        self.assertEqual((TIMERS.t1, TIMERS.t2, TIMERS.t4, TIMERS.d, TIMERS.trying), (0.5, 4.0, 5.0, 32.0, 0.2))
        self.assertEqual(TIMERS.timeout, 32.0)
        self.assertEqual(TimerConfig(t1=1.0).timeout, 64.0)


class ClientNonInviteTests(SynchronousTestCase):
    def test_start_sends_and_starts_e_and_f(self) -> None:
        txn = ClientNonInvite(request("OPTIONS"))
        out = txn.start()
        self.assertEqual(sent(out), [txn.request])
        self.assertEqual(timers(out), [("E", 0.5), ("F", 32.0)])
        self.assertIs(txn.state, TRYING)
        self.assertRaises(LocalProtocolError, txn.start)

    def test_timer_e_doubles_up_to_t2_then_f_times_out(self) -> None:
        txn = ClientNonInvite(request("OPTIONS"))
        txn.start()
        self.assertEqual(fire_schedule(txn, "E", 0.5, 6), [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0])
        out = txn.timer_fired("F")
        self.assertEqual(of(Timeout, out), [Timeout()])
        self.assertEqual(of(CancelTimer, out), [CancelTimer("E")])
        self.assertEqual(out[-1], Terminated())
        self.assertIs(txn.state, TERMINATED)
        self.assertEqual(txn.timer_fired("E"), [])

    def test_provisional_puts_e_at_t2(self) -> None:
        req = request("OPTIONS")
        txn = ClientNonInvite(req)
        txn.start()
        out = txn.receive(req.create_response(100))
        self.assertEqual(out, [Provisional(out[0].response)])
        self.assertIs(txn.state, PROCEEDING)
        self.assertEqual(fire_schedule(txn, "E", 0.5, 2), [0.5, 4.0, 4.0])

    def test_final_starts_k_at_t4_and_absorbs_retransmissions(self) -> None:
        req = request("OPTIONS")
        txn = ClientNonInvite(req)
        txn.start()
        final = req.create_response(200, to_tag="x")
        out = txn.receive(final)
        self.assertEqual(of(Final, out), [Final(final)])
        self.assertEqual(of(CancelTimer, out), [CancelTimer("E"), CancelTimer("F")])
        self.assertEqual(timers(out), [("K", 5.0)])
        self.assertIs(txn.state, COMPLETED)
        self.assertEqual(txn.receive(final), [])
        self.assertEqual(txn.receive(req.create_response(500)), [])
        self.assertEqual(txn.timer_fired("K"), [Terminated()])

    def test_reliable_has_no_e_and_no_k(self) -> None:
        req = request("REGISTER")
        txn = ClientNonInvite(req, reliable=True)
        self.assertEqual(timers(txn.start()), [("F", 32.0)])
        out = txn.receive(req.create_response(200))
        self.assertEqual(out[-2:], [Final(out[-2].response), Terminated()])
        self.assertIs(txn.state, TERMINATED)

    def test_responses_of_other_transactions_are_ignored(self) -> None:
        req = request("OPTIONS")
        txn = ClientNonInvite(req)
        txn.start()
        other = request("OPTIONS").create_response(200)
        self.assertEqual(txn.receive(other), [])
        wrong_method = req.create_response(200)
        wrong_method.set("cseq", "1 INFO")
        self.assertEqual(txn.receive(wrong_method), [])
        self.assertIs(txn.state, TRYING)

    def test_transport_error(self) -> None:
        txn = ClientNonInvite(request("OPTIONS"))
        self.assertEqual(txn.transport_error(), [])  # not started
        txn.start()
        out = txn.transport_error()
        self.assertEqual(out[0], TransportError())
        self.assertEqual(out[-1], Terminated())
        self.assertEqual(txn.transport_error(), [])

    def test_refuses_invite_and_ack(self) -> None:
        self.assertRaises(ValueError, ClientNonInvite, request("INVITE"))
        self.assertRaises(ValueError, ClientInvite, request("OPTIONS"))


class ClientInviteTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.req = request("INVITE")
        self.txn = ClientInvite(self.req)
        self.start = self.txn.start()

    def test_timer_a_doubles_without_cap_and_b_times_out(self) -> None:
        self.assertEqual(timers(self.start), [("A", 0.5), ("B", 32.0)])
        self.assertIs(self.txn.state, CALLING)
        self.assertEqual(fire_schedule(self.txn, "A", 0.5, 6), [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0])
        out = self.txn.timer_fired("B")
        self.assertEqual(of(Timeout, out), [Timeout()])
        self.assertIs(self.txn.state, TERMINATED)

    def test_provisional_stops_a_and_b(self) -> None:
        out = self.txn.receive(self.req.create_response(180, to_tag="b"))
        self.assertEqual(of(CancelTimer, out), [CancelTimer("A"), CancelTimer("B")])
        self.assertEqual(len(of(Provisional, out)), 1)
        self.assertIs(self.txn.state, PROCEEDING)
        self.assertEqual(self.txn.timer_fired("B"), [])  # raced with the cancel: ignored
        progress = self.req.create_response(183, to_tag="b")
        self.assertEqual(self.txn.receive(progress), [Provisional(progress)])

    def test_failure_is_acked_inside_the_transaction(self) -> None:
        busy = parse(bytes(self.req.create_response(486, to_tag="bt")))
        out = self.txn.receive(busy)
        ack = self.txn.ack
        self.assertEqual(out[:2], [CancelTimer("A"), CancelTimer("B")])
        self.assertEqual(sent(out), [ack])
        self.assertEqual(of(Final, out), [Final(busy)])
        self.assertEqual(timers(out), [("D", 32.0)])
        self.assertIs(self.txn.state, COMPLETED)
        self.assertEqual((ack.method, ack.uri, ack.cseq), ("ACK", self.req.uri, (1, "ACK")))
        self.assertEqual(ack.top_via().branch, self.req.top_via().branch)
        self.assertEqual(ack.to_tag, "bt")
        self.assertEqual(ack.get_all("route"), ["<sip:p1;lr>"])
        self.assertEqual(server_key(ack), server_key(self.req))
        # the final again: the same ACK again, no second Final
        self.assertEqual(self.txn.receive(busy), [Send(ack)])
        self.assertEqual(self.txn.timer_fired("D"), [Terminated()])

    def test_reliable_failure_terminates_at_once(self) -> None:
        txn = ClientInvite(self.req, reliable=True)
        self.assertEqual(timers(txn.start()), [("B", 32.0)])
        out = txn.receive(self.req.create_response(404, to_tag="x"))
        self.assertEqual([type(x) for x in out], [CancelTimer, Send, Final, Terminated])

    def test_2xx_accepted_then_extra_2xx_then_m(self) -> None:
        ok = self.req.create_response(200, to_tag="one")
        out = self.txn.receive(ok)
        self.assertEqual(of(Final, out), [Final(ok)])
        self.assertEqual(sent(out), [])  # the ACK for a 2xx is the UAC core's
        self.assertEqual(timers(out), [("M", 32.0)])
        self.assertIs(self.txn.state, ACCEPTED)
        fork = self.req.create_response(200, to_tag="two")
        self.assertEqual(self.txn.receive(fork), [Extra2xx(fork)])
        self.assertEqual(self.txn.receive(self.req.create_response(486, to_tag="three")), [])
        self.assertEqual(self.txn.timer_fired("M"), [Terminated()])
        self.assertEqual(self.txn.receive(ok), [])

    def test_transport_error_while_calling(self) -> None:
        out = self.txn.transport_error()
        self.assertEqual(out[0], TransportError())
        self.assertEqual(out[-1], Terminated())

    def test_transport_error_after_final_only_terminates(self) -> None:
        self.txn.receive(self.req.create_response(486, to_tag="bt"))
        out = self.txn.transport_error()
        self.assertEqual(of(TransportError, out), [])
        self.assertEqual(out[-1], Terminated())


class ServerInviteTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.req = request("INVITE")
        self.txn = ServerInvite(self.req)
        self.start = self.txn.start()

    def test_trying_after_200ms_unless_the_tu_answers(self) -> None:
        self.assertEqual(self.start, [StartTimer("trying", 0.2), RequestReceived(self.req)])
        out = self.txn.timer_fired("trying")
        self.assertEqual([m.code for m in sent(out)], [100])
        self.assertEqual([m.code for m in sent(self.txn.receive(self.req))], [100])
        txn = ServerInvite(self.req)
        txn.start()
        out = txn.respond(self.req.create_response(180, to_tag="t"))
        self.assertEqual(out[0], CancelTimer("trying"))
        self.assertEqual(txn.timer_fired("trying"), [])

    def test_trying_at_once_or_retransmission_before_any_answer(self) -> None:
        txn = ServerInvite(self.req, TimerConfig(trying=0))
        out = txn.start()
        self.assertEqual([m.code for m in sent(out)], [100])
        quiet = ServerInvite(self.req)
        quiet.start()
        self.assertEqual(quiet.receive(self.req), [])
        now = ServerInvite(self.req, trying_now=True)  # one transaction, the timers as configured
        out = now.start()
        self.assertEqual([m.code for m in sent(out)], [100])
        self.assertFalse([o for o in out if isinstance(o, StartTimer)])
        self.assertEqual([m.code for m in sent(now.receive(self.req))], [100])
        self.assertNotIn(CancelTimer("trying"), now.respond(self.req.create_response(200, to_tag="t")))

    def test_failure_g_h_then_ack_confirms_and_i(self) -> None:
        self.txn.respond(self.req.create_response(180, to_tag="t"))
        self.assertEqual([m.code for m in sent(self.txn.receive(self.req))], [180])
        busy = self.req.create_response(486, to_tag="t")
        out = self.txn.respond(busy)
        self.assertEqual(sent(out), [busy])
        self.assertEqual(timers(out), [("G", 0.5), ("H", 32.0)])
        self.assertIs(self.txn.state, COMPLETED)
        self.assertEqual(fire_schedule(self.txn, "G", 0.5, 5), [0.5, 1.0, 2.0, 4.0, 4.0, 4.0])
        self.assertEqual(sent(self.txn.receive(self.req)), [busy])
        ack = parse(bytes(create_ack(self.req, busy)))
        out = self.txn.receive(ack)
        self.assertEqual(out, [CancelTimer("G"), CancelTimer("H"), StartTimer("I", 5.0)])  # absorbed: no event
        self.assertIs(self.txn.state, CONFIRMED)
        self.assertEqual(self.txn.receive(ack), [])
        self.assertEqual(self.txn.receive(self.req), [])
        self.assertEqual(self.txn.timer_fired("I"), [Terminated()])
        self.assertRaises(LocalProtocolError, self.txn.respond, self.req.create_response(500))

    def test_h_fires_without_ack(self) -> None:
        self.txn.respond(self.req.create_response(603, to_tag="t"))
        out = self.txn.timer_fired("H")
        self.assertEqual(out, [Timeout(), CancelTimer("G"), Terminated()])

    def test_2xx_accepted_absorbs_invites_passes_acks_and_2xx(self) -> None:
        ok = self.req.create_response(200, to_tag="t")
        out = self.txn.respond(ok)
        self.assertEqual(timers(out), [("L", 32.0)])
        self.assertIs(self.txn.state, ACCEPTED)
        self.assertEqual(self.txn.receive(self.req), [])
        same_branch_ack = parse(bytes(create_ack(self.req, self.req.create_response(486, to_tag="t"))))
        self.assertEqual(self.txn.receive(same_branch_ack), [AckReceived(same_branch_ack)])
        self.assertEqual(self.txn.respond(ok), [Send(ok)])
        self.assertRaises(LocalProtocolError, self.txn.respond, self.req.create_response(486))
        self.assertRaises(LocalProtocolError, self.txn.respond, self.req.create_response(180))
        self.assertEqual(self.txn.timer_fired("L"), [Terminated()])

    def test_reliable_no_g_and_ack_terminates(self) -> None:
        txn = ServerInvite(self.req, reliable=True)
        txn.start()
        busy = self.req.create_response(486, to_tag="t")
        self.assertEqual(timers(txn.respond(busy)), [("H", 32.0)])
        out = txn.receive(parse(bytes(create_ack(self.req, busy))))
        self.assertEqual(out, [CancelTimer("H"), Terminated()])

    def test_misuse(self) -> None:
        self.assertRaises(LocalProtocolError, self.txn.start)
        bye = request("BYE").create_response(200)
        self.assertRaises(LocalProtocolError, self.txn.respond, bye)
        self.assertRaises(LocalProtocolError, self.txn.respond, self.req)

    def test_other_requests_and_acks_are_ignored(self) -> None:
        self.txn.respond(self.req.create_response(486, to_tag="t"))
        other = request("INVITE")
        self.assertEqual(self.txn.receive(other), [])
        self.assertEqual(self.txn.receive(parse(bytes(create_ack(other, other.create_response(486))))), [])
        self.assertIs(self.txn.state, COMPLETED)

    def test_transport_error(self) -> None:
        out = self.txn.transport_error()
        self.assertEqual(out, [TransportError(), CancelTimer("trying"), Terminated()])


class ServerNonInviteTests(SynchronousTestCase):
    def test_trying_proceeding_completed_j(self) -> None:
        req = request("BYE")
        txn = ServerNonInvite(req)
        self.assertEqual(txn.start(), [RequestReceived(req)])
        self.assertEqual(txn.receive(req), [])  # nothing to repeat yet
        trying = req.create_response(100)
        self.assertEqual(txn.respond(trying), [Send(trying)])
        self.assertIs(txn.state, PROCEEDING)
        self.assertEqual(txn.receive(req), [Send(trying)])
        ok = req.create_response(200)
        self.assertEqual(txn.respond(ok), [Send(ok), StartTimer("J", 32.0)])
        self.assertEqual(txn.receive(req), [Send(ok)])
        self.assertRaises(LocalProtocolError, txn.respond, ok)
        self.assertEqual(txn.timer_fired("J"), [Terminated()])
        self.assertEqual(txn.receive(req), [])

    def test_reliable_final_terminates(self) -> None:
        req = request("OPTIONS")
        txn = ServerNonInvite(req, reliable=True)
        txn.start()
        ok = req.create_response(200)
        self.assertEqual(txn.respond(ok), [Send(ok), Terminated()])


class TwoXXRetransmitterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.ok = request("INVITE").create_response(200, to_tag="t")

    def test_doubles_to_t2_until_ack(self) -> None:
        machine = TwoXXRetransmitter(self.ok)
        self.assertEqual(timers(machine.start()), [("retransmit", 0.5)])  # one timer: it gives up too
        self.assertEqual(fire_schedule(machine, "retransmit", 0.5, 5), [0.5, 1.0, 2.0, 4.0, 4.0, 4.0])
        out = machine.ack_received()
        self.assertEqual(out, [AckReceived(None), CancelTimer("retransmit"), Terminated()])
        self.assertEqual(machine.ack_received(), [])

    def test_gives_up_after_64_t1(self) -> None:
        """Retransmitted at T1, 2*T1, ... T2, and the last timer is cut to
        end the wait at exactly 64*T1, whatever T1 is."""
        # copies at 0.5, 1.5, 3.5, 7.5, ... 31.5 s; at 0.1, 0.3, 0.7, 1.5, 3.1, 6.3 s; at 0.3, 0.9, then every 0.7 s
        for config, sends in ((TimerConfig(), 10), (TimerConfig(t1=0.1, t2=4.0), 6),
                              (TimerConfig(t1=0.3, t2=0.7), 28)):
            machine = TwoXXRetransmitter(self.ok, config)
            (_, delay), = timers(machine.start())
            waited, sent_copies, out = 0.0, 0, []
            while not of(AckTimeout, out):
                self.assertGreater(delay, 0)
                waited += delay
                out = machine.timer_fired("retransmit")
                sent_copies += len(sent(out))
                delay = dict(timers(out)).get("retransmit", 0.0)
            self.assertAlmostEqual(waited, config.timeout, places=9)
            self.assertEqual(sent_copies, sends, config)
            self.assertEqual(out, [AckTimeout(), Terminated()])
            self.assertEqual(machine.timer_fired("retransmit"), [])
        reliable = TwoXXRetransmitter(self.ok, reliable=True)
        reliable.start()
        out = reliable.timer_fired("give_up")
        self.assertEqual(of(AckTimeout, out), [AckTimeout()])
        self.assertEqual(out[-1], Terminated())

    def test_reliable_only_waits(self) -> None:
        machine = TwoXXRetransmitter(self.ok, reliable=True)
        self.assertEqual(timers(machine.start()), [("give_up", 32.0)])

    def test_only_2xx(self) -> None:
        self.assertRaises(ValueError, TwoXXRetransmitter, request("INVITE").create_response(486))


class OrderTests(SynchronousTestCase):
    """The machines list their actions before their events on the paths
    every call takes, so the endpoint runs them as they come (its
    reordering, for the rest, copies the list)."""

    def assert_actions_first(self, out: list) -> None:
        kinds = [isinstance(o, (Send, StartTimer, CancelTimer)) for o in out]
        self.assertEqual(kinds, sorted(kinds, reverse=True), out)
        self.assertTrue(any(kinds) and not all(kinds), out)  # both kinds there: the check checked something

    def test_usual_paths(self) -> None:
        invite = request("INVITE")
        server = ServerInvite(invite, trying_now=True)
        self.assert_actions_first(server.start())
        self.assert_actions_first(ServerInvite(request("INVITE")).start())  # Trying later: its timer
        client = ClientInvite(invite)
        client.start()
        self.assert_actions_first(client.receive(invite.create_response(180, to_tag="t")))
        self.assert_actions_first(client.receive(invite.create_response(200, to_tag="t")))
        bye = request("BYE")
        client = ClientNonInvite(bye)
        client.start()
        out = client.receive(bye.create_response(200))
        self.assert_actions_first(out)
        self.assertEqual((timers(out), of(Final, out)[0].response.code), ([("K", 5.0)], 200))
        reliable = ClientNonInvite(bye, reliable=True)
        reliable.start()
        self.assertEqual([type(o) for o in reliable.receive(bye.create_response(200))],
                         [CancelTimer, Final, Terminated])

    def test_refused_invite(self) -> None:
        """A 3xx-6xx to our INVITE: the ACK and Timer D, then Final; over
        TCP Final, then Terminated."""
        invite = request("INVITE")
        client = ClientInvite(invite)
        client.start()
        out = client.receive(invite.create_response(486, to_tag="t"))
        self.assert_actions_first(out)
        self.assertEqual([type(o) for o in out], [CancelTimer, CancelTimer, Send, StartTimer, Final])
        self.assertEqual((timers(out), sent(out)[0].method), ([("D", 32.0)], "ACK"))
        reliable = ClientInvite(invite, reliable=True)
        reliable.start()
        self.assertEqual([type(o) for o in reliable.receive(invite.create_response(486, to_tag="t"))],
                         [CancelTimer, Send, Final, Terminated])


class MatchingTests(SynchronousTestCase):
    def test_client_key_is_branch_and_method(self) -> None:
        req = request("INVITE")
        txn = ClientInvite(req)
        self.assertEqual(client_key(req.create_response(180)), txn.key)
        cancel = create_cancel(req)
        self.assertNotEqual(client_key(cancel.create_response(200)), txn.key)
        self.assertEqual(client_key(cancel.create_response(200))[0], txn.key[0])

    def test_a_given_key_is_the_one_matched(self) -> None:
        """receive(response, key): the caller's client_key stands for the
        response's; the same outputs as computing it, and another key
        (another transaction's) is ignored."""
        for kind, method in ((ClientInvite, "INVITE"), (ClientNonInvite, "OPTIONS")):
            req = request(method)
            plain, keyed = kind(req), kind(req)
            plain.start(), keyed.start()
            for code in (180, 200):
                response = parse(bytes(req.create_response(code, to_tag="t")))
                self.assertEqual(keyed.receive(response, ("z9hG4bKother", method)), [])
                self.assertEqual(keyed.receive(response, client_key(response)), plain.receive(response))
                self.assertIs(keyed.state, plain.state)

    def test_server_key_ack_cancel_and_sent_by(self) -> None:
        req = request("INVITE", branch="z9hG4bKone")
        self.assertEqual(server_key(req), server_key(parse(bytes(req))))
        ack = create_ack(req, req.create_response(486, to_tag="x"))
        self.assertEqual(server_key(ack), server_key(req))
        cancel = create_cancel(req)
        self.assertNotEqual(server_key(cancel), server_key(req))
        self.assertEqual(server_key(cancel, "INVITE"), server_key(req))
        moved = req.copy()
        moved.set("via", "SIP/2.0/UDP 192.0.2.99:5062;branch=z9hG4bKone")
        self.assertNotEqual(server_key(moved), server_key(req))
        upper = req.copy()
        upper.set("via", "SIP/2.0/UDP 192.0.2.1:5062;branch=z9hG4bKone;received=10.0.0.1")
        self.assertEqual(server_key(upper), server_key(req))

    def test_rfc2543_fallback(self) -> None:
        req = request("INVITE", branch="oldstyle1")
        self.assertEqual(server_key(req)[0], "2543")
        self.assertEqual(server_key(parse(bytes(req))), server_key(req))
        txn = ServerInvite(req)
        txn.start()
        self.assertIsNone(txn.ack_key)
        busy = req.create_response(486, to_tag="srv")
        txn.respond(busy)
        ack = parse(bytes(create_ack(req, busy)))
        self.assertNotEqual(server_key(ack), txn.key)
        self.assertEqual(server_key(ack), txn.ack_key)
        self.assertIs(txn.receive(ack)[-1].name == "I" and txn.state, CONFIRMED)
        other_call = req.copy()
        other_call.set("call-id", "different")
        self.assertNotEqual(server_key(other_call), server_key(req))
        cancel = create_cancel(req)
        self.assertEqual(server_key(cancel, "INVITE"), server_key(req))
        no_via = Request("OPTIONS", "sip:x", [("Call-ID", "c"), ("CSeq", "1 OPTIONS")])
        self.assertEqual(server_key(no_via)[0], "2543")


# -- a client and a server over a bad link --------------------------------------------------
class Loop:
    """A fake clock and event heap: the least a transaction needs."""

    def __init__(self) -> None:
        self.now = 0.0
        self.heap: list = []
        self.seq = itertools.count()

    def at(self, delay: float, fn: Callable, *args: Any) -> None:
        heapq.heappush(self.heap, (self.now + delay, next(self.seq), fn, args))

    def run(self, until: float) -> None:
        while self.heap and self.heap[0][0] <= until:
            when, _, fn, args = heapq.heappop(self.heap)
            self.now = when
            fn(*args)


class Link:
    """One direction of a datagram path: drops, duplicates, delays (and so
    reorders) by the given patterns; after the drop pattern everything
    arrives."""

    def __init__(self, loop: Loop, deliver: Callable[[bytes], None], drops: list, dups: list, delays: list,
                 reliable: bool) -> None:
        self.loop, self.deliver = loop, deliver
        self.drops, self.dups, self.delays = drops, dups, delays
        self.reliable = reliable
        self.count = 0

    def send(self, data: bytes) -> None:
        i = self.count
        self.count += 1
        if self.reliable:
            self.loop.at(0.01, self.deliver, data)  # in order, once
            return
        if i < len(self.drops) and self.drops[i]:
            return
        self.loop.at(self.delays[i % len(self.delays)], self.deliver, data)
        if i < len(self.dups) and self.dups[i]:
            self.loop.at(self.delays[(i + 1) % len(self.delays)], self.deliver, data)


class Timers:
    """StartTimer/CancelTimer on the loop, for one machine."""

    def __init__(self, loop: Loop, machine: Any, handle: Callable[[list], None]) -> None:
        self.loop, self.machine, self.handle = loop, machine, handle
        self.running: dict[str, int] = {}
        self.gen = itertools.count()

    def apply(self, item: Any) -> None:
        if isinstance(item, StartTimer):
            token = self.running[item.name] = next(self.gen)
            self.loop.at(item.delay, self.fire, item.name, token)
        elif isinstance(item, CancelTimer):
            self.running.pop(item.name, None)

    def fire(self, name: str, token: int) -> None:
        if self.running.get(name) == token:
            del self.running[name]
            self.handle(self.machine.timer_fired(name))


class Pair:
    """A UAC with one client transaction and a UAS whose TU answers after
    C{answer_delay} (a 180 first if C{provisional}) with C{final_code}."""

    def __init__(self, method: str, reliable: bool, final_code: int, provisional: bool, answer_delay: float,
                 up: dict, down: dict, rfc2543: bool = False) -> None:
        self.loop = Loop()
        self.reliable = reliable
        self.method = method
        self.final_code, self.provisional, self.answer_delay = final_code, provisional, answer_delay
        self.to_server = Link(self.loop, self.server_receive, reliable=reliable, **up)
        self.to_client = Link(self.loop, self.client_receive, reliable=reliable, **down)
        self.request = request(method)
        if rfc2543:  # a client without the magic cookie: matched by the RFC 2543 rules
            self.request.set("via", "SIP/2.0/UDP 192.0.2.1:5062")
        cls = ClientInvite if method == "INVITE" else ClientNonInvite
        self.client = cls(self.request, TIMERS, reliable)
        self.client_timers = Timers(self.loop, self.client, self.client_handle)
        self.client_events: list = []
        self.finals_delivered_alive = 0
        self.servers: dict = {}
        self.server_list: list = []
        self.server_events: list = []
        self.server_finals: list[tuple[int, Optional[str]]] = []
        self.retransmitters: list = []
        self.acks_2xx_delivered = 0
        #: 2xx ACKs that reached the server while a 2xx retransmitter still
        #: waited: a copy sent just before Timer L's 64*T1 can be ACKed
        #: after the retransmitter gave up, which is no disagreement
        self.acks_2xx_delivered_waited_for = 0
        self.acks_of_failures_delivered = 0
        self.client_handle(self.client.start())

    # client side
    def client_handle(self, out: list) -> None:
        for item in out:
            if isinstance(item, Send):
                self.to_server.send(bytes(item.message))
            elif isinstance(item, (StartTimer, CancelTimer)):
                self.client_timers.apply(item)
            else:
                self.client_events.append(item)
                if isinstance(item, (Final, Extra2xx)) and 200 <= item.response.code < 300:
                    # the UAC core ACKs every 2xx, outside the transaction
                    self.to_server.send(bytes(create_ack(self.request, item.response)))

    def client_receive(self, data: bytes) -> None:
        response = parse(data)
        if client_key(response) != self.client.key:
            return
        if response.code >= 200 and not self.client.terminated and self.client.final is None:
            self.finals_delivered_alive += 1
        self.client_handle(self.client.receive(response))

    # server side
    def server_receive(self, data: bytes) -> None:
        message = parse(data)
        if message.method == "ACK":
            for txn in self.server_list:
                if not txn.terminated and txn.ack_key == server_key(message):
                    self.acks_of_failures_delivered += 1
                    txn.handle(txn.machine.receive(message))
                    return
            self.acks_2xx_delivered += 1
            if any(not retransmitter.machine.terminated for retransmitter in self.retransmitters):
                self.acks_2xx_delivered_waited_for += 1
            for retransmitter in self.retransmitters:
                retransmitter.handle(retransmitter.machine.ack_received(message))
            return
        key = server_key(message)
        txn = self.servers.get(key)
        if txn is not None and not txn.terminated:
            txn.handle(txn.machine.receive(message))
            return
        cls = ServerInvite if message.method == "INVITE" else ServerNonInvite
        txn = self.servers[key] = ServerSide(self, cls(message, TIMERS, self.reliable))
        self.server_list.append(txn)
        txn.handle(txn.machine.start())


class ServerSide:
    def __init__(self, pair: Pair, machine: Any) -> None:
        self.pair, self.machine = pair, machine
        self.timers = Timers(pair.loop, machine, self.handle)
        self.tag = f"srv{len(pair.server_list)}"

    @property
    def terminated(self) -> bool:
        return self.machine.terminated

    @property
    def ack_key(self) -> Any:
        return getattr(self.machine, "ack_key", None)

    def handle(self, out: list) -> None:
        pair = self.pair
        for item in out:
            if isinstance(item, Send):
                pair.to_client.send(bytes(item.message))
            elif isinstance(item, (StartTimer, CancelTimer)):
                self.timers.apply(item)
            else:
                pair.server_events.append(item)
                if isinstance(item, RequestReceived):
                    if pair.provisional:
                        pair.loop.at(pair.answer_delay / 2, self.answer, 180)
                    pair.loop.at(pair.answer_delay, self.answer, pair.final_code)

    def answer(self, code: int) -> None:
        if self.machine.terminated:
            return
        response = self.machine.request.create_response(code, to_tag=self.tag)
        self.handle(self.machine.respond(response))
        if code >= 200:
            self.pair.server_finals.append((code, self.tag))
        if self.machine.request.method == "INVITE" and 200 <= code < 300:
            retransmitter = Retransmitter(self.pair, TwoXXRetransmitter(response, TIMERS, self.pair.reliable))
            self.pair.retransmitters.append(retransmitter)
            retransmitter.handle(retransmitter.machine.start())


class Retransmitter:
    def __init__(self, pair: Pair, machine: TwoXXRetransmitter) -> None:
        self.pair, self.machine = pair, machine
        self.timers = Timers(pair.loop, machine, self.handle)
        self.events: list = []
        self.acks_before_end = 0

    def handle(self, out: list) -> None:
        for item in out:
            if isinstance(item, Send):
                self.pair.to_client.send(bytes(item.message))
            elif isinstance(item, (StartTimer, CancelTimer)):
                self.timers.apply(item)
            else:
                self.events.append(item)


patterns = dict(
    drops=st.one_of(
        st.lists(st.booleans(), max_size=40),  # bursts
        st.lists(st.integers(0, 4), max_size=2).map(lambda lost: [i in lost for i in range(5)]),  # one or two
    ),
    dups=st.lists(st.booleans(), max_size=20),
    delays=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=12),
)
link = st.fixed_dictionaries(patterns)


class PairedMachinesTests(SynchronousTestCase):
    def check(self, pair: Pair) -> None:
        pair.loop.run(400.0)
        finals = of(Final, pair.client_events)
        timeouts = of(Timeout, pair.client_events)
        self.assertLessEqual(len(finals), 1, pair.client_events)
        self.assertLessEqual(len(finals) + len(timeouts), 1)
        if finals:
            response = finals[0].response
            self.assertIn((response.code, response.to_tag), pair.server_finals)
        if pair.finals_delivered_alive:
            self.assertEqual(len(finals), 1)
        if timeouts:
            self.assertEqual(pair.finals_delivered_alive, 0)
        # Extra2xx only after the Final, and only for a 2xx
        kinds = [type(e) for e in pair.client_events]
        if Extra2xx in kinds:
            self.assertLess(kinds.index(Final), kinds.index(Extra2xx))
        # everything ends, but a proceeding INVITE whose every final was lost
        if not pair.client.terminated:
            self.assertEqual((pair.method, pair.client.state, pair.finals_delivered_alive),
                             ("INVITE", PROCEEDING, 0))
        for txn in pair.server_list:
            self.assertTrue(txn.terminated, txn.machine)
        for retransmitter in pair.retransmitters:
            self.assertTrue(retransmitter.machine.terminated)
            if of(AckTimeout, retransmitter.events):
                self.assertEqual(pair.acks_2xx_delivered_waited_for, 0)
        self.assertEqual(len(of(RequestReceived, pair.server_events)), len(pair.server_list))
        if pair.reliable:
            self.assertEqual(len(finals), 1)
            self.assertEqual(len(pair.server_list), 1)
            self.assertEqual(timeouts, [])
            self.assertEqual(of(Timeout, pair.server_events), [])
            self.assertTrue(pair.client.terminated)
        if of(Timeout, pair.server_events):
            # timer H: the server gave up on its ACK, so none arrived
            self.assertEqual(pair.acks_of_failures_delivered, 0)
        if not pair.reliable and sum(pair.to_server.drops) <= 1 and sum(pair.to_client.drops) <= 1:
            # a link that loses at most one message each way delays, but
            # cannot defeat, the retransmissions: a final arrives, its ACK too
            self.assertEqual(len(finals), 1, pair.client_events)
            self.assertEqual(of(Timeout, pair.server_events), [])
            for retransmitter in pair.retransmitters:
                self.assertEqual(of(AckTimeout, retransmitter.events), [])
        self.assertEqual(of(AckReceived, pair.server_events), [])  # ACKs of failures are absorbed

    @settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(method=st.sampled_from(["INVITE", "OPTIONS", "BYE"]), reliable=st.booleans(),
           final_code=st.sampled_from([200, 202, 302, 404, 486, 503, 603]), provisional=st.booleans(),
           answer_delay=st.floats(0.0, 12.0), up=link, down=link, rfc2543=st.booleans())
    def test_both_sides_agree(self, method: str, reliable: bool, final_code: int, provisional: bool,
                              answer_delay: float, up: dict, down: dict, rfc2543: bool) -> None:
        pair = Pair(method, reliable, final_code, provisional, answer_delay, up, down, rfc2543)
        self.assertEqual(server_key(pair.request)[0], "2543" if rfc2543 else "3261")
        self.check(pair)

    def test_an_ack_after_the_2xx_retransmitter_gave_up_is_late_not_lost(self) -> None:
        # found by test_both_sides_agree in CI: the 2xx copy sent at 31.5 s
        # arrives, and its ACK takes 1 s, reaching the server after the
        # retransmitter's 32 s; it gave up (AckTimeout) with no ACK in time
        pair = Pair("INVITE", False, 200, False, 0.0,
                    dict(drops=[False, True, True, True, True], dups=[], delays=[0.0] * 5 + [1.0]),
                    dict(drops=[False] + [True] * 6, dups=[], delays=[0.0]))
        self.check(pair)
        self.assertEqual(len(of(AckTimeout, pair.retransmitters[0].events)), 1)
        self.assertEqual((pair.acks_2xx_delivered, pair.acks_2xx_delivered_waited_for), (1, 0))

    def test_lossless_invite_2xx(self) -> None:
        clean = dict(drops=[], dups=[], delays=[0.05])
        pair = Pair("INVITE", False, 200, True, 1.0, clean, clean)
        self.check(pair)
        self.assertEqual([type(e) for e in pair.client_events], [Provisional, Provisional, Final, Terminated])
        self.assertEqual([e.response.code for e in pair.client_events[:2]], [100, 180])
        self.assertEqual(pair.acks_2xx_delivered, 1)
        self.assertEqual(of(AckReceived, pair.retransmitters[0].events)[0].ack.method, "ACK")

    def test_lost_2xx_is_retransmitted_and_every_copy_acked(self) -> None:
        # server -> client: 100 arrives, the first 2xx is lost, the next copy arrives
        pair = Pair("INVITE", False, 200, False, 1.0, dict(drops=[], dups=[], delays=[0.05]),
                    dict(drops=[False, True], dups=[], delays=[0.05]))
        self.check(pair)
        self.assertEqual(len(of(Final, pair.client_events)), 1)
        self.assertEqual(pair.acks_2xx_delivered, 1)
        self.assertEqual(of(AckTimeout, pair.retransmitters[0].events), [])

    def test_failure_with_every_ack_lost_times_out_the_server(self) -> None:
        pair = Pair("INVITE", False, 486, False, 1.0, dict(drops=[False] + [True] * 40, dups=[], delays=[0.05]),
                    dict(drops=[], dups=[], delays=[0.05]))
        self.check(pair)
        self.assertEqual(of(Final, pair.client_events)[0].response.code, 486)
        self.assertEqual(len(of(Timeout, pair.server_events)), 1)
        acks = pair.to_server.count - 1
        self.assertGreater(acks, 5)  # one per retransmitted final (timer G)

    def test_rfc2543_failure_acked(self) -> None:
        clean = dict(drops=[], dups=[], delays=[0.05])
        pair = Pair("INVITE", False, 486, True, 1.0, clean, dict(drops=[False, False, True], dups=[], delays=[0.05]),
                    rfc2543=True)
        self.check(pair)
        self.assertEqual(of(Final, pair.client_events)[0].response.code, 486)
        self.assertEqual(pair.acks_of_failures_delivered, 1)
        self.assertIs(pair.server_list[0].machine.state, TERMINATED)
        self.assertEqual(of(Timeout, pair.server_events), [])

    def test_request_never_arrives(self) -> None:
        pair = Pair("OPTIONS", False, 200, False, 1.0, dict(drops=[True] * 40, dups=[], delays=[0.05]),
                    dict(drops=[], dups=[], delays=[0.05]))
        self.check(pair)
        self.assertEqual([type(e) for e in pair.client_events], [Timeout, Terminated])
        self.assertEqual(pair.to_server.count, 11)  # t=0 and E at 0.5 1.5 3.5 7.5 11.5 ... 31.5
        self.assertEqual(pair.server_list, [])
