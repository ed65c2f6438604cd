"""The endpoint answers every method as it should, retries challenges once,
and leaves what is not its own to the rest of the receive chain (unit
tests: memory legs, a Clock)."""
from __future__ import annotations

from typing import Any, Callable
from unittest import SkipTest

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sipproxy.access.chain import ReceiveChain
from sipproxy.proxy.routing import RoutingError
from sipproxy.sip.message import Request, Response, parse
from sipproxy.sip.uac import create_ack, new_request
from sipproxy.sip.uri import parse_uri
from sipproxy.testing import MemoryLeg, memory_dispatcher
from sipproxy.ua.endpoint import Endpoint, ServerTransaction, SIPError, TransactionTimeout, TransportFailure

from tests.sip import request

PEER = ("192.0.2.10", 5060)
US = "sip:bob@192.0.2.1"


def response_to(sent: Request, code: int, headers: tuple = (), to_tag: str = "") -> bytes:
    """A peer's answer to a request we sent."""
    lines = [f"SIP/2.0 {code} Whatever"]
    lines += [f"Via: {v}" for v in sent.get_all("via")]
    to = sent.get("to") or ""
    if to_tag and ";tag=" not in to:
        to += f";tag={to_tag}"
    lines += [f"From: {sent.get('from')}", f"To: {to}", f"Call-ID: {sent.call_id}", f"CSeq: {sent.get('cseq')}"]
    lines += [f"{n}: {v}" for n, v in headers]
    lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Recorder:
    """A receiver after the endpoint: what the chain passed on."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    def receive(self, packet: Any, leg: Any, addr: Any) -> bool:
        self.seen.append(packet)
        return True


class EndpointCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.leg = MemoryLeg("192.0.2.1", 5060)
        self.dispatcher = memory_dispatcher([self.leg])
        self.endpoint = Endpoint(self.clock, self.dispatcher)
        self.after = Recorder()
        self.dispatcher.set_receiver(ReceiveChain([self.endpoint, self.after]))

    def inject(self, data: bytes, addr: tuple = PEER) -> list[tuple[Any, Any]]:
        self.leg.receive(data, addr)
        return self.leg.take()

    def codes(self, sent: list) -> list[int]:
        return [m.code for m, _ in sent if isinstance(m, Response)]

    def invite_answered(self, code: int) -> list[ServerTransaction]:
        """An INVITE taken and answered C{code}: the transactions taken,
        and what the answer sent in C{self.answers}."""
        taken: list[ServerTransaction] = []
        self.endpoint.on_invite = lambda t: taken.append(t) or True
        self.inject(request("INVITE", US))
        taken[0].respond(code)
        self.answers = self.leg.take()
        return taken


class AnswersTests(EndpointCase):
    def test_options_gets_200_with_allow_accept_supported(self) -> None:
        sent = self.inject(request("OPTIONS", US, to="<sip:bob@192.0.2.1>"))
        (answer, address), = sent
        self.assertEqual(answer.code, 200)
        self.assertIn("INVITE", answer.get_all("allow"))
        self.assertIn("OPTIONS", answer.get_all("allow"))
        self.assertEqual(answer.get("accept"), "application/sdp")
        self.assertIn("supported", answer)
        self.assertIsNotNone(answer.to_tag)
        self.assertEqual(address, PEER)

    def test_answers_go_back_along_the_requests_via(self) -> None:
        """Every answer of a transaction (100, 200, the 200 repeated until
        the ACK) and the 200 to a BYE go where the request's top Via says:
        rport and received from the packet (a phone behind NAT), else the
        sent-by port; the destination is read once per transaction."""
        taken: list[ServerTransaction] = []
        self.endpoint.on_invite = lambda t: taken.append(t) or True
        natted = "SIP/2.0/UDP 10.0.0.5:5999;branch=z9hG4bKnat1;rport"
        sent = self.inject(request("INVITE", US, via=natted), addr=("192.0.2.77", 40001))
        self.assertEqual([(m.code, a) for m, a in sent], [(100, ("192.0.2.77", 40001))])
        taken[0].respond(200)
        self.clock.advance(0.5)  # Timer G: the 200 again
        self.assertEqual([(m.code, a) for m, a in self.leg.take()], [(200, ("192.0.2.77", 40001))] * 2)
        other_port = "SIP/2.0/UDP 192.0.2.78:5080;branch=z9hG4bKbye1"
        sent = self.inject(request("BYE", US, via=other_port, call_id="c2@h", to="<sip:bob@h>;tag=x"),
                           addr=("192.0.2.78", 5070))
        self.assertEqual([(m.code, a) for m, a in sent], [(481, ("192.0.2.78", 5080))])

    def test_options_answer_takes_extra_headers(self) -> None:
        self.endpoint.options_headers = [("Accept", "application/sdp, text/plain"), ("Allow-Events", "talk")]
        (answer, _), = self.inject(request("OPTIONS", US))
        self.assertEqual(answer.get_all("accept"), ["application/sdp", "text/plain"])
        self.assertEqual(answer.get("allow-events"), "talk")

    def test_unsupported_extension_gets_420_and_other_bodies_415(self) -> None:
        """Refused at once: no 100 Trying first, and the listener never sees them."""
        self.endpoint.on_invite = lambda t: self.fail("an unacceptable INVITE reached the listener")
        (answer, _), = self.inject(request("INVITE", US, headers=[("Require", "100rel, timer")]))
        self.assertEqual(answer.code, 420)
        self.assertEqual(answer.get_all("unsupported"), ["100rel", "timer"])
        (answer, _), = self.inject(request("INVITE", US, via="SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKtext",
                                           headers=[("Content-Type", "text/plain")], body="hello"))
        self.assertEqual((answer.code, answer.get("accept")), (415, "application/sdp"))

    def test_unknown_method_gets_501_and_known_one_405(self) -> None:
        self.assertEqual(self.codes(self.inject(request("FROBNICATE", US))), [501])
        sent = self.inject(request("SUBSCRIBE", US, via="SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKsub"))
        self.assertEqual(self.codes(sent), [405])
        self.assertIn("INVITE", sent[0][0].get_all("allow"))

    def test_in_dialog_request_without_dialog_gets_481(self) -> None:
        sent = self.inject(request("BYE", US, to="<sip:bob@192.0.2.1>;tag=gone"))
        self.assertEqual(self.codes(sent), [481])

    def test_ack_matching_nothing_goes_down_the_chain_unanswered(self) -> None:
        sent = self.inject(request("ACK", US, to="<sip:bob@192.0.2.1>;tag=gone"))
        self.assertEqual(sent, [])
        self.assertEqual([p.method for p in self.after.seen], ["ACK"])

    def test_invite_without_listener_goes_down_the_chain(self) -> None:
        self.assertEqual(self.inject(request("INVITE", US)), [])
        self.assertEqual([p.method for p in self.after.seen], ["INVITE"])

    def test_invite_gets_100_then_the_listener_decides(self) -> None:
        taken: list[ServerTransaction] = []
        self.endpoint.on_invite = lambda t: taken.append(t) or True
        delays: list[float] = []
        call_later = self.clock.callLater
        self.clock.callLater = lambda delay, *rest, **kw: delays.append(delay) or call_later(delay, *rest, **kw)
        sent = self.inject(request("INVITE", US))
        self.assertEqual(self.codes(sent), [100])
        self.assertEqual(len(taken), 1)
        # sent as the transaction started: no 200 ms "trying" timer was started (and cancelled at once)
        self.assertNotIn(0.2, delays)
        taken[0].respond(180)
        taken[0].respond(486, "Busy Here")
        self.assertEqual(self.codes(self.leg.take()), [180, 486])

    def test_dialog_creating_answers_copy_record_route(self) -> None:
        taken: list[ServerTransaction] = []
        self.endpoint.on_invite = lambda t: taken.append(t) or True
        routes = ("<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>")
        self.inject(request("INVITE", US, headers=[("Record-Route", r) for r in routes]))
        taken[0].respond(180)
        taken[0].respond(200)
        answers = [m for m, _ in self.leg.take() if isinstance(m, Response)]
        self.assertEqual([(m.code, m.get_all("record-route")) for m in answers],
                         [(180, list(routes)), (200, list(routes))])

    def test_retransmitted_invite_gets_the_last_answer_again(self) -> None:
        taken = self.invite_answered(180)
        self.assertEqual(self.codes(self.inject(request("INVITE", US))), [180])
        self.assertEqual(len(taken), 1)

    def test_cancel_gets_200_and_the_invite_487(self) -> None:
        taken: list[ServerTransaction] = []
        cancelled: list[bool] = []

        def take(transaction: ServerTransaction) -> bool:
            transaction.on_cancel = lambda: cancelled.append(True)
            taken.append(transaction)
            return True

        self.endpoint.on_invite = take
        self.inject(request("INVITE", US))
        sent = self.inject(request("CANCEL", US, cseq_method="CANCEL"))
        self.assertEqual(sorted((m.code, m.cseq_method) for m, _ in sent), [(200, "CANCEL"), (487, "INVITE")])
        self.assertEqual(cancelled, [True])
        # the caller's ACK for the 487 ends the INVITE transaction quietly
        self.assertEqual(self.inject(request("ACK", US, cseq_method="ACK", to=sent[0][0].get("to"))), [])

    def test_cancel_for_no_transaction_gets_481(self) -> None:
        self.assertEqual(self.codes(self.inject(request("CANCEL", US))), [481])

    def test_answered_request_is_answered_again_from_a_record(self) -> None:
        taken: list[ServerTransaction] = []
        self.endpoint.on_request = lambda t: taken.append(t) or t.respond(202, "Accepted") or True
        message = request("MESSAGE", US, body="hi", headers=[("Content-Type", "text/plain")])
        (first, _), = self.inject(message)
        self.assertEqual((self.endpoint._servers, len(self.endpoint._finished_servers)), ({}, 1))
        self.clock.advance(20)
        (again, address), = self.inject(message)
        self.assertEqual((bytes(again), address), (bytes(first), PEER))
        self.assertEqual(len(taken), 1)  # the application saw it once
        self.clock.advance(12.5)  # Timer J (64*T1) has run out: the record is gone
        self.assertEqual(len(self.endpoint._finished_servers), 0)
        (fresh, _), = self.inject(message)
        self.assertEqual(len(taken), 2)
        self.assertNotEqual(fresh.to_tag, first.to_tag)

    def test_a_kept_answer_that_does_not_parse_is_a_warning_not_a_traceback(self) -> None:
        self.endpoint.on_request = lambda t: t.respond(200) or True
        message = request("MESSAGE", US)
        self.inject(message)
        (key, (deadline, record)), = self.endpoint._finished_servers._records.items()
        # as if the application had added a header our parser refuses
        method, _, leg_index, addr = record
        self.endpoint._finished_servers.update(key, (method, b"SIP/2.0 200\r\n\r\n", leg_index, addr))
        self.assertEqual(self.inject(message), [])
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_the_answered_record_is_untracked_by_the_collector(self) -> None:
        # at 1900 calls/s tens of thousands of records linger: as tuples of
        # plain values, full collections stop walking them
        untracked = _untracked_after_a_collection(self)
        self.endpoint.on_request = lambda t: t.respond(200) or True
        self.endpoint.on_invite = lambda t: t.respond(200) or True
        self.inject(request("MESSAGE", US, via="SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKmessage"))
        self.inject(request("INVITE", US))
        records = sorted(record for _, record in self.endpoint._finished_servers._records.values())
        self.assertEqual([(method, data is None) for method, data, _, _ in records],
                         [("INVITE", True), ("MESSAGE", False)])
        self.assertTrue(untracked(list(self.endpoint._finished_servers._records.items())))

    def test_an_answered_transaction_is_not_kept_alive(self) -> None:
        import gc
        import weakref

        refs: list[Any] = []
        self.endpoint.on_request = lambda t: refs.append(weakref.ref(t)) or t.respond(200) or True
        self.inject(request("MESSAGE", US))
        gc.collect()  # PyPy frees only in a collection
        self.assertIsNone(refs[0]())

    def test_retransmitted_invite_after_2xx_is_absorbed_until_the_ack(self) -> None:
        taken = self.invite_answered(200)
        (ok, _), = self.answers
        self.assertEqual(self.endpoint._servers, {})
        self.assertEqual(self.inject(request("INVITE", US)), [])  # absorbed: the UA core repeats the 2xx itself
        self.clock.advance(0.5)
        self.assertEqual(self.codes(self.leg.take()), [200])
        # an ACK with the INVITE's branch (RFC 2543 peers, Net::SIP) ends the repeats
        self.assertEqual(self.inject(request("ACK", US, cseq_method="ACK", to=ok.get("to"))), [])
        self.successResultOf(taken[0].acked)
        self.clock.advance(4)
        self.assertEqual(self.leg.take(), [])
        self.assertEqual(len(taken), 1)

    def test_failure_answer_repeated_until_its_ack(self) -> None:
        """A 486 over UDP: Timer G repeats it (the transaction's timers are
        made when the first one starts) until the ACK."""
        self.invite_answered(486)
        (busy, _), = self.answers
        self.assertEqual(busy.code, 486)
        for wait in (0.5, 1.0):
            self.clock.advance(wait)
            self.assertEqual(self.codes(self.leg.take()), [486])
        self.assertEqual(self.inject(request("ACK", US, cseq_method="ACK", to=busy.get("to"))), [])
        self.clock.advance(4)
        self.assertEqual(self.leg.take(), [])

    def test_failure_answer_without_ack_ends_at_timer_h(self) -> None:
        self.invite_answered(486)
        self.clock.pump([0.1] * 319)  # 31.9 s
        self.assertEqual(len(self.endpoint._servers), 1)
        self.assertEqual(self.codes(self.leg.take()), [486] * 10)  # at 0.5, 1.5, 3.5, 7.5, then every 4 s
        self.clock.pump([0.1] * 2)
        self.assertEqual(self.endpoint._servers, {})

    def test_cancel_after_the_final_answer_gets_200_and_nothing_else(self) -> None:
        taken = self.invite_answered(200)
        sent = self.inject(request("CANCEL", US, cseq_method="CANCEL"))
        self.assertEqual([(m.code, m.cseq_method) for m, _ in sent], [(200, "CANCEL")])
        self.assertFalse(taken[0].cancelled)

    def test_requests_not_ours_go_down_the_chain(self) -> None:
        self.endpoint.owns = lambda req: req.parsed_uri().user == "bob"
        self.assertEqual(self.inject(request("OPTIONS", "sip:carol@192.0.2.1")), [])
        self.assertEqual(self.inject(request("BYE", "sip:carol@192.0.2.1", to="<sip:c@x>;tag=1")), [])
        self.assertEqual(len(self.after.seen), 2)
        self.assertEqual(self.codes(self.inject(request("OPTIONS", US))), [200])


class DialogRequestTests(EndpointCase):
    """In-dialog requests reach the dialog's owner."""

    def setUp(self) -> None:
        super().setUp()
        from sipproxy.sip.dialog import Dialog

        invite = parse(request("INVITE", US, cseq=1))
        self.dialog = Dialog.from_uas(invite, "bobtag", "<sip:bob@192.0.2.1>")
        self.got: list[Any] = []
        owner = self

        class Owner:
            def dialog_request(self, transaction: ServerTransaction) -> bool:
                owner.got.append(transaction.request.method)
                return transaction.request.method == "BYE"

            def dialog_ack(self, ack: Request) -> None:
                owner.got.append("ACK")

        self.endpoint.add_dialog(self.dialog, Owner())

    def indialog(self, method: str, cseq: int = 2, **kw: Any) -> bytes:
        return request(method, "sip:bob@192.0.2.1", to="<sip:bob@biloxi.example.com>;tag=bobtag", cseq=cseq,
                       via=f"SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK{method}{cseq}", **kw)

    def test_notify_and_info_get_200_after_the_owner_saw_them(self) -> None:
        self.assertEqual(self.codes(self.inject(self.indialog("NOTIFY", 2))), [200])
        self.assertEqual(self.codes(self.inject(self.indialog("INFO", 3))), [200])
        self.assertEqual(self.got, ["NOTIFY", "INFO"])

    def test_options_in_dialog_gets_200(self) -> None:
        self.assertEqual(self.codes(self.inject(self.indialog("OPTIONS", 2))), [200])

    def test_old_cseq_gets_500(self) -> None:
        self.inject(self.indialog("INFO", 5))
        self.assertEqual(self.codes(self.inject(self.indialog("INFO", 4))), [500])

    def test_method_the_owner_does_not_take_gets_405(self) -> None:
        self.assertEqual(self.codes(self.inject(self.indialog("REFER", 2))), [405])

    def test_owner_failing_gets_500_not_silence(self) -> None:
        def broken(transaction: ServerTransaction) -> bool:
            raise RuntimeError("bug in the application")

        self.endpoint._dialogs[self.dialog.id][1].dialog_request = broken
        self.assertEqual(self.codes(self.inject(self.indialog("INFO", 2))), [500])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_ack_reaches_the_owner(self) -> None:
        self.assertEqual(self.inject(self.indialog("ACK", 1)), [])
        self.assertEqual(self.got, ["ACK"])


class ClientTests(EndpointCase):
    def send(self, method: str = "REGISTER", credentials: Any = "default", target: tuple = PEER) -> Any:
        req = new_request(method, "sip:192.0.2.10", "<sip:alice@192.0.2.1>", "<sip:alice@192.0.2.1>",
                          sent_by=self.leg.sent_by)
        return self.endpoint.send_request(req, (self.leg, target), credentials=credentials)

    def test_response_of_no_transaction_of_ours_goes_down_the_chain(self) -> None:
        self.inject(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKother\r\n"
                    b"From: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 REGISTER\r\n"
                    b"Content-Length: 0\r\n\r\n")
        self.assertEqual(len(self.after.seen), 1)

    def test_final_response_fires_the_deferred(self) -> None:
        transaction = self.send()
        (sent, address), = self.leg.take()
        self.assertEqual(address, PEER)
        self.inject(response_to(sent, 200, to_tag="r1"))
        self.assertEqual(self.successResultOf(transaction.deferred).code, 200)
        self.assertEqual(self.after.seen, [])

    def test_udp_request_is_retransmitted_then_times_out(self) -> None:
        transaction = self.send()
        self.leg.take()
        self.clock.advance(0.5)
        self.assertEqual(len(self.leg.take()), 1)
        self.clock.advance(1.0)
        self.assertEqual(len(self.leg.take()), 1)
        self.clock.pump([4.0] * 10)
        self.failureResultOf(transaction.deferred, TransactionTimeout)
        self.assertEqual(self.endpoint._clients, {})

    def test_answered_requests_linger_as_records_expiring_on_one_wake_up(self) -> None:
        # Timer K (T4, 5 s) of requests answered at 0.1, 0.2 and 0.3 s: the
        # transactions are gone at once, their keys kept in one table on one
        # timer rounded up to 5.5 s, and none is forgotten before its own 5 s
        sent_requests = []
        for n, when in enumerate((0.1, 0.2, 0.3)):
            self.clock.advance(when - self.clock.seconds())
            self.send()
            (sent, _), = self.leg.take()
            sent_requests.append(sent)
            self.inject(response_to(sent, 200, to_tag=f"r{n}"))
        self.assertEqual(self.endpoint._clients, {})
        pending = [call for call in self.clock.getDelayedCalls() if call.active()]
        self.assertEqual([call.getTime() for call in pending], [5.5])
        self.clock.advance(5.49 - self.clock.seconds())
        self.assertEqual(len(self.endpoint._finished_clients), 3)
        # a repeated final answer is still ours: absorbed, not passed down the chain
        self.assertEqual(self.inject(response_to(sent_requests[0], 200, to_tag="r0")), [])
        self.assertEqual(self.after.seen, [])
        self.clock.advance(0.01)
        self.assertEqual(len(self.endpoint._finished_clients), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        # after that it is a stray response, for whoever follows in the chain
        self.inject(response_to(sent_requests[0], 200, to_tag="r0"))
        self.assertEqual(len(self.after.seen), 1)

    def test_invite_answered_2xx_lingers_as_a_record_that_acks_and_ends_forks(self) -> None:
        transaction = self.send("INVITE")
        (invite, _), = self.leg.take()
        contact = [("Contact", "<sip:bob@192.0.2.10>")]
        ok = response_to(invite, 200, contact, to_tag="first")
        self.inject(ok)
        self.assertEqual(self.successResultOf(transaction.deferred).to_tag, "first")
        self.assertEqual(self.endpoint._clients, {})  # the transaction is gone, a record stays
        transaction.ack(create_ack(invite, parse(ok)))
        self.assertEqual([m.method for m, _ in self.leg.take()], ["ACK"])
        # our ACK was lost: the repeated 2xx gets it again
        self.assertEqual([(m.method, m.to_tag) for m, _ in self.inject(ok)], [("ACK", "first")])
        # another fork answered too: ACKed and ended at once, once
        other = response_to(invite, 200, contact, to_tag="fork")
        sent = [(m.method, m.to_tag) for m, _ in self.inject(other)]
        self.assertEqual(sent, [("ACK", "fork"), ("BYE", "fork")])
        self.assertEqual([m.method for m, _ in self.inject(other)], [])
        # a 2xx without a To tag makes no dialog: ignored, nothing sent
        self.assertEqual(self.inject(response_to(invite, 200, contact)), [])
        self.assertEqual(self.after.seen, [])
        self.clock.advance(32.5)  # Timer M: the record is gone, a late 2xx is not ours
        self.inject(ok)
        self.assertEqual(len(self.after.seen), 1)

    def test_the_accepted_invite_record_stays_untracked_as_it_changes(self) -> None:
        untracked = _untracked_after_a_collection(self)
        transaction = self.send("INVITE")
        (invite, _), = self.leg.take()
        ok = response_to(invite, 200, [("Contact", "<sip:bob@192.0.2.10>")], to_tag="first")
        self.inject(ok)
        transaction.ack(create_ack(invite, parse(ok)))
        self.inject(response_to(invite, 200, [("Contact", "<sip:bob@192.0.2.10>")], to_tag="fork"))
        (key, (deadline, record)), = self.endpoint._finished_clients._records.items()
        self.assertEqual((record[1], record[3], record[4], record[5]), ("first", self.leg.index, PEER, ("fork",)))
        self.assertTrue(untracked(list(self.endpoint._finished_clients._records.items())))

    def test_a_broken_fork_answer_is_ignored_without_a_traceback(self) -> None:
        self.send("INVITE")
        (invite, _), = self.leg.take()
        self.inject(response_to(invite, 200, [("Contact", "<sip:bob@192.0.2.10>")], to_tag="first"))
        # another fork's 2xx whose Record-Route is no name-addr: its dialog
        # cannot be reached; one warning, no traceback, nothing sent
        broken = response_to(invite, 200, [("Contact", "<sip:bob@192.0.2.10>"), ("Record-Route", "<<sip:")],
                             to_tag="bad")
        self.assertEqual(self.inject(broken), [])
        self.assertEqual(self.inject(broken), [])
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual(self.after.seen, [])

    def test_only_linger_timers_are_rounded(self) -> None:
        # retransmission (E) and timeout (F) timers keep their exact times
        self.clock.advance(0.1)
        self.send()
        self.leg.take()
        times = sorted(call.getTime() for call in self.clock.getDelayedCalls())
        self.assertEqual([round(t, 6) for t in times], [0.6, 32.1])

    def test_send_failure_ends_the_transaction_at_once(self) -> None:
        transaction = self.send(target=("224.0.0.1", 5060))
        failure = self.failureResultOf(transaction.deferred, TransportFailure)
        self.assertEqual(failure.value.code, 503)

    def test_401_is_answered_once_with_credentials(self) -> None:
        self.endpoint.credentials = ("alice", "secret")
        transaction = self.send()
        (first, _), = self.leg.take()
        challenge = ('Digest realm="example", nonce="n1", qop="auth", algorithm=MD5',)
        (second, _), = self.inject(response_to(first, 401, [("WWW-Authenticate", challenge[0])], to_tag="r1"))
        self.assertEqual(second.cseq[0], first.cseq[0] + 1)
        self.assertNotEqual(second.top_via().branch, first.top_via().branch)
        self.assertIn('username="alice"', second.get("authorization"))
        self.assertNoResult(transaction.deferred)
        # the same realm again without stale: the password was refused
        self.assertEqual(self.inject(response_to(second, 401, [("WWW-Authenticate", challenge[0])], to_tag="r2")),
                         [])
        self.assertEqual(self.successResultOf(transaction.deferred).code, 401)

    def test_407_on_invite_is_answered_with_proxy_authorization(self) -> None:
        self.endpoint.credentials = {"proxyrealm": ("alice", "pw")}
        transaction = self.send("INVITE")
        (first, _), = self.leg.take()
        sent = self.inject(response_to(first, 407, [("Proxy-Authenticate", 'Digest realm="proxyrealm", nonce="x"')],
                                       to_tag="p1"))
        methods = [m.method for m, _ in sent]
        self.assertEqual(sorted(methods), ["ACK", "INVITE"])  # the 407 is ACKed, the INVITE sent again
        retry = [m for m, _ in sent if m.method == "INVITE"][0]
        self.assertIn('username="alice"', retry.get("proxy-authorization"))
        self.inject(response_to(retry, 200, [("Contact", "<sip:bob@192.0.2.10>")], to_tag="b1"))
        self.assertEqual(self.successResultOf(transaction.deferred).code, 200)

    def test_no_credentials_hands_the_401_up(self) -> None:
        transaction = self.send()
        (first, _), = self.leg.take()
        self.assertEqual(self.inject(response_to(first, 401, [("WWW-Authenticate", 'Digest realm="r", nonce="n"')])),
                         [])
        self.assertEqual(self.successResultOf(transaction.deferred).code, 401)

    def test_cancel_waits_for_a_provisional_answer(self) -> None:
        transaction = self.send("INVITE")
        (invite, _), = self.leg.take()
        transaction.cancel()
        self.assertEqual(self.leg.take(), [])  # RFC 3261 9.1: not before a 1xx
        (cancel, _), = self.inject(response_to(invite, 180, to_tag="b1"))
        self.assertEqual(cancel.method, "CANCEL")
        self.assertEqual(cancel.top_via().branch, invite.top_via().branch)
        self.inject(response_to(cancel, 200))
        (ack, _), = self.inject(response_to(invite, 487, to_tag="b1"))
        self.assertEqual(ack.method, "ACK")
        self.assertEqual(self.successResultOf(transaction.deferred).code, 487)


class RoutingCase(EndpointCase):
    """What the tests of C{resolve} and C{route} share."""

    def _pending_lookup(self) -> Deferred:
        pending: Deferred = Deferred()
        self.dispatcher.targets_for_hop = lambda hop, leg_hint=None, request=None: pending  # type: ignore
        return pending

    def assert_short_no_route(self, d: Deferred, uri: str) -> None:
        error = self.failureResultOf(d, SIPError).value
        self.assertIn(error.code, (400, 404, 503), uri[:40])
        self.assertTrue(error.reason.startswith("No route to "), uri[:40])
        self.assertLessEqual(len(error.reason), 303, uri[:40])


class ResolveTests(RoutingCase):
    """C{Endpoint.resolve}: the first target, whether the dispatcher has it
    at once (an IP address) or later (a lookup), and L{SIPError} without
    one, also for the URIs a hostile peer may put in its Contact."""

    def test_an_ip_address_resolves_at_once_to_the_first_target(self) -> None:
        target = self.successResultOf(self.endpoint.resolve("sip:carol@192.0.2.10:5070"))
        self.assertEqual(target, (self.leg, ("192.0.2.10", 5070)))

    def test_the_next_hop_is_the_dispatchers(self) -> None:
        """An outgoing proxy takes the request, whatever its URI."""
        self.dispatcher.outgoing_proxy = parse_uri("sip:192.0.2.99:5080")
        target = self.successResultOf(self.endpoint.resolve("sip:carol@192.0.2.10:5070"))
        self.assertEqual(target, (self.leg, ("192.0.2.99", 5080)))

    def test_a_pending_lookup_fires_with_its_first_target(self) -> None:
        pending = self._pending_lookup()
        d = self.endpoint.resolve("sip:carol@example.test")
        self.assertNoResult(d)
        pending.callback([(self.leg, ("192.0.2.20", 5060)), (self.leg, ("192.0.2.21", 5060))])
        self.assertEqual(self.successResultOf(d), (self.leg, ("192.0.2.20", 5060)))

    def test_no_route_fails_with_a_sip_error(self) -> None:
        for ready in (True, False):
            pending = self._pending_lookup()
            if ready:
                pending.errback(RoutingError(404, "cannot resolve example.test"))
            d = self.endpoint.resolve("sip:carol@example.test")
            if not ready:
                pending.errback(RoutingError(404, "cannot resolve example.test"))
            error = self.failureResultOf(d, SIPError).value
            self.assertEqual(error.code, 404)
            self.assertIn("No route to sip:carol@example.test", str(error))

    def test_hostile_uris_fail_with_a_short_sip_error(self) -> None:
        """A peer's Contact becomes the URI of our ACK and BYE: malformed,
        out of range or megabytes long, it is a failed Deferred with a
        bounded message, never an exception."""
        for uri in HOSTILE_URIS:
            self.assert_short_no_route(self.endpoint.resolve(uri), uri)


#: what a peer may put in the Contact our ACK and BYE go to
HOSTILE_URIS = ["", "sip:", "garbage", "sip:a@[::1", "sip:a@192.0.2.10:99999",
                "sip:a@" + "x" * 100_000, "sip:a@192.0.2.10;transport=sctp", "sips:a@192.0.2.10",
                "sip:a@192.0.2.10\r\nVia: x", "sip:a@\udcff.example"]


class RouteTests(RoutingCase):
    """C{Endpoint.route}: the target itself for an IP address (no
    Deferred: a caller routes three times a call), a Deferred as from
    C{resolve} for a lookup and for no route."""

    def test_an_ip_address_is_routed_without_a_deferred(self) -> None:
        self.assertEqual(self.endpoint.route("sip:carol@192.0.2.10:5070"), (self.leg, ("192.0.2.10", 5070)))
        self.dispatcher.outgoing_proxy = parse_uri("sip:192.0.2.99:5080")
        self.assertEqual(self.endpoint.route("sip:carol@192.0.2.10:5070"), (self.leg, ("192.0.2.99", 5080)))

    def test_a_lookup_is_a_deferred(self) -> None:
        pending = self._pending_lookup()
        d = self.endpoint.route("sip:carol@example.test")
        self.assertIsInstance(d, Deferred)
        self.assertNoResult(d)
        pending.callback([(self.leg, ("192.0.2.20", 5060))])
        self.assertEqual(self.successResultOf(d), (self.leg, ("192.0.2.20", 5060)))

    def test_hostile_uris_fail_with_a_short_sip_error(self) -> None:
        """No route is a failed Deferred here too, never an exception."""
        for uri in HOSTILE_URIS:
            routed = self.endpoint.route(uri)
            self.assertIsInstance(routed, Deferred, uri[:40])
            self.assert_short_no_route(routed, uri)


class ActionsFirstTests(SynchronousTestCase):
    """A machine's actions run before its events (user code), also when
    an event is listed before an action; an already ordered list is used
    as it is."""

    def test_order(self) -> None:
        from sipproxy.sip import transaction as tx
        from sipproxy.ua.endpoint import _actions_first

        send, start, cancel, done = tx.Send(None), tx.StartTimer("K", 5.0), tx.CancelTimer("E"), tx.Terminated()
        final, timeout = tx.Final(None), tx.Timeout()
        ordered = [send, cancel, final, timeout]
        self.assertIs(_actions_first(ordered), ordered)
        self.assertEqual(_actions_first([final, cancel, start, done, timeout]), [cancel, start, done, final, timeout])
        self.assertEqual(_actions_first([timeout, send]), [send, timeout])
        self.assertEqual(_actions_first(iter([final, send])), [send, final])
        self.assertEqual(_actions_first([]), [])


def _untracked_after_a_collection(case: Any) -> Callable[[Any], bool]:
    """A check that, after a few collections, the collector tracks none
    of the objects given nor what they hold (a collection may look at a
    tuple before the tuple it holds, which leaves the outer one for the
    next: one collection per level of nesting at worst). For CPython: PyPy
    has no C{gc.is_tracked}, and its collector works otherwise."""
    import gc

    if not hasattr(gc, "is_tracked"):
        raise SkipTest("no gc.is_tracked on this runtime (PyPy)")

    def untracked(objects: Any) -> bool:
        for _ in range(4):  # entry, deadline and record, record, address
            gc.collect()
        tracked = []
        pending = list(objects)
        while pending:
            item = pending.pop()
            if gc.is_tracked(item):
                tracked.append(item)
            if isinstance(item, tuple):
                pending.extend(item)
        if tracked:
            case.fail(f"tracked by the collector: {min(tracked, key=lambda item: len(repr(item)))!r}")
        return True

    return untracked
