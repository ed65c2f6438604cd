"""The ng protocol without sockets: bencode, the server in front of a
LocalRelay, the client's retransmission and timeout, and the client
driving the server through the proxy (all on a fake reactor)."""
from __future__ import annotations

import random
from typing import Any, Optional

from twisted.trial.unittest import SynchronousTestCase

from sipproxy.interfaces import INATHelper
from sipproxy.nat import bencode
from sipproxy.nat.ng import NgClient, NgError, NgServer, NgTimeout, decode_message, encode_message, parse_ng_address
from sipproxy.nat.relay import LocalRelay
from sipproxy.proxy.stateless import StatelessProxy
from sipproxy.sip.sdp import parse_sdp
from sipproxy.testing import MemoryLeg, memory_dispatcher
from tests.nat_util import FakeUDPReactor, media_lines, sdp
from tests.sip import request

NG = ("127.0.0.1", 2223)
SDP_TYPE = ("Content-Type", "application/sdp")
UAC = ("192.0.2.10", 5060)
UAS = ("198.51.100.20", 5060)
TO_TAGGED = "<sip:bob@biloxi.example.com>;tag=bob1"


class BencodeTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        value = {"command": "offer", "flags": ["trust-address"], "n": -12, "sdp": b"v=0\r\n", "d": {"x": []}}
        data = bencode.encode(value)
        self.assertEqual(data, b"d7:command5:offer1:dd1:xlee5:flagsl13:trust-addresse1:ni-12e3:sdp5:v=0\r\ne")
        self.assertEqual(bencode.decode(data), {"command": b"offer", "flags": [b"trust-address"], "n": -12,
                                                "sdp": b"v=0\r\n", "d": {"x": []}})

    def test_unsorted_keys_are_accepted(self) -> None:
        self.assertEqual(bencode.decode(b"d7:command4:ping4:abcdi1ee"), {"command": b"ping", "abcd": 1})

    def test_malformed_input_is_refused(self) -> None:
        for data in (b"", b"i12", b"i012e", b"i-0e", b"4:abc", b"d3:abce", b"l", b"x", b"i1ei2e", b"03:abc",
                     b"di1ei2ee", b"l" * 100 + b"e" * 100):
            self.assertRaises(bencode.BencodeError, bencode.decode, data)

    def test_encoding_refuses_what_it_cannot_say(self) -> None:
        for value in (True, 1.5, None, {1: 2}):
            self.assertRaises(TypeError, bencode.encode, value)

    def test_message_framing(self) -> None:
        data = encode_message(b"5323_1", {"command": "ping"})
        self.assertEqual(data, b"5323_1 d7:command4:pinge")
        self.assertEqual(decode_message(data), (b"5323_1", {"command": b"ping"}))
        self.assertRaises(ValueError, decode_message, b"nocookie")
        self.assertRaises(ValueError, decode_message, b"c1 li1ee")


class AddressTests(SynchronousTestCase):
    def test_parse(self) -> None:
        self.assertEqual(parse_ng_address("udp:127.0.0.1:2223"), ("127.0.0.1", 2223))
        self.assertEqual(parse_ng_address("127.0.0.1:22222"), ("127.0.0.1", 22222))
        self.assertEqual(parse_ng_address("udp:[::1]:2223"), ("::1", 2223))
        for bad in ("udp:localhost:2223", "udp:127.0.0.1", "tcp:127.0.0.1:2223", "udp:::1:2223",
                    "udp:127.0.0.1:0", "udp:127.0.0.1:x"):
            self.assertRaises(ValueError, parse_ng_address, bad)


class ServerTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = FakeUDPReactor()
        self.relay = LocalRelay(self.reactor, port_range=(30000, 30999), rng=random.Random(5), sockets=self.reactor)
        self.server = NgServer(self.relay, self.reactor, NG)
        self.cookie = 0

    def ask(self, **message: Any) -> dict:
        self.cookie += 1
        cookie = f"t{self.cookie}".encode()
        reply = self.server.handle(encode_message(cookie, message))
        got, decoded = decode_message(reply)
        self.assertEqual(got, cookie)
        return decoded


class ServerTests(ServerTestCase):
    def test_ping(self) -> None:
        self.assertEqual(self.ask(command="ping"), {"result": b"pong"})

    def test_offer_answer_query_delete(self) -> None:
        offer = self.ask(command="offer", **{"call-id": "c1", "from-tag": "F"}, sdp=sdp("127.0.0.1", 40000),
                         direction=["127.0.0.1", "127.0.0.2"], flags=["trust-address"], ICE="remove")
        self.assertEqual(offer["result"], b"ok")
        offered = parse_sdp(offer["sdp"])
        self.assertEqual(offered.media[0].address, "127.0.0.2")  # out on direction[1]
        answer = self.ask(command="answer", **{"call-id": "c1", "from-tag": "F", "to-tag": "T"},
                          sdp=sdp("127.0.0.2", 40010), direction=["127.0.0.2", "127.0.0.1"])
        answered = parse_sdp(answer["sdp"])
        self.assertEqual(answered.media[0].address, "127.0.0.1")
        self.assertEqual(len(self.relay.sessions("c1")), 1)
        self.reactor.deliver("127.0.0.1", answered.media[0].port, b"rtp", ("127.0.0.1", 40000))
        query = self.ask(command="query", **{"call-id": "c1"})
        self.assertEqual(query["totals"]["RTP"]["packets"], 1)
        self.assertEqual(set(query["tags"]), {"F", "T"})
        self.assertEqual(self.relay.socket_count, 4)
        self.assertEqual(self.ask(command="delete", **{"call-id": "c1", "from-tag": "F"}), {"result": b"ok"})
        self.assertEqual(self.relay.sessions("c1"), [])
        self.relay.expire(self.reactor.seconds() + 1)
        self.assertEqual(self.relay.socket_count, 0)
        self.assertIn("warning", self.ask(command="delete", **{"call-id": "c1"}))

    def test_answer_without_direction_binds_where_the_offer_came_from(self) -> None:
        self.ask(command="offer", **{"call-id": "c1", "from-tag": "F"}, sdp=sdp("127.0.0.1", 40000),
                 direction=["127.0.0.1", "127.0.0.2"])
        answer = self.ask(command="answer", **{"call-id": "c1", "from-tag": "F", "to-tag": "T"},
                          sdp=sdp("127.0.0.2", 40010))
        self.assertEqual(parse_sdp(answer["sdp"]).media[0].address, "127.0.0.1")

    def test_a_repeated_offer_gets_the_same_ports_a_changed_one_new(self) -> None:
        args = {"command": "offer", "call-id": "c1", "from-tag": "F", "sdp": sdp("127.0.0.1", 40000)}
        first = self.ask(**args)
        self.assertEqual(self.ask(**args)["sdp"], first["sdp"])
        self.assertEqual(self.relay.socket_count, 2)
        args["sdp"] = sdp("127.0.0.1", 40000, version=2)
        self.assertNotEqual(parse_sdp(self.ask(**args)["sdp"]).media[0].port,
                            parse_sdp(first["sdp"]).media[0].port)

    def test_a_retransmitted_request_gets_the_same_reply(self) -> None:
        data = encode_message(b"same", {"command": "offer", "call-id": "c1", "from-tag": "F",
                                        "sdp": sdp("127.0.0.1", 40000)})
        self.assertEqual(self.server.handle(data), self.server.handle(data))
        self.assertEqual(self.reactor.attempts, 2)

    def test_errors(self) -> None:
        self.assertEqual(self.ask(command="frobnicate")["result"], b"error")
        self.assertIn(b"call-id", self.ask(command="offer", sdp="v=0")["error-reason"])
        self.assertEqual(self.ask(command="answer", **{"call-id": "x", "from-tag": "F", "to-tag": "T"},
                                  sdp=sdp())["error-reason"], b"Unknown call-id")
        self.assertIn(b"SDP", self.ask(command="offer", **{"call-id": "c", "from-tag": "F"}, sdp="v=1")["error-reason"])
        self.assertIsNone(self.server.handle(b"garbage"))
        self.assertIn(b"error", self.server.handle(b"c9 d7:command"))

    def test_no_ports_is_an_error(self) -> None:
        self.reactor.busy.update(range(30000, 31000))
        reply = self.ask(command="offer", **{"call-id": "c1", "from-tag": "F"}, sdp=sdp("127.0.0.1", 40000))
        self.assertEqual((reply["result"], reply["error-reason"]), (b"error", b"Ran out of ports"))


class LinkedReactor(FakeUDPReactor):
    """A fake reactor where datagrams to the ng server's address reach it
    (unless C{drop}), and its replies come back to the client."""

    def __init__(self) -> None:
        super().__init__()
        self.server: Optional[NgServer] = None
        self.drop = False
        self.requests: list[dict] = []

    def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):
        listening = super().listenUDP(port, protocol, interface, maxPacketSize)
        if port == 0:
            reactor = self

            class Socket(type(listening.socket)):
                def sendto(self, data, addr):
                    super().sendto(data, addr)
                    reactor.requests.append(decode_message(data)[1])
                    if addr == NG and not reactor.drop and reactor.server is not None:
                        reply = reactor.server.handle(data)
                        protocol.datagramReceived(reply, NG)
                    return len(data)

            listening.socket = Socket()
        return listening


class ClientTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = LinkedReactor()
        self.relay = LocalRelay(self.reactor, port_range=(30000, 30999), rng=random.Random(9), sockets=self.reactor)
        self.reactor.server = NgServer(self.relay, self.reactor, NG)
        self.client = NgClient(self.reactor, NG)
        self.client.startService()
        self.addCleanup(self.client.stopService)
        self.a = MemoryLeg("127.0.0.1")
        self.b = MemoryLeg("127.0.0.2")
        self.dispatcher = memory_dispatcher([self.a, self.b], local_address=lambda ip: ip if ip.startswith("127.0.0.2") else "127.0.0.1")
        self.proxy = StatelessProxy(self.dispatcher, secret=b"s" * 32, nathelper=self.client)
        self.dispatcher.set_receiver(self.proxy)

    def commands(self) -> list[tuple]:
        return [(r["command"], r.get("from-tag"), r.get("to-tag"), r.get("direction")) for r in self.reactor.requests]

    def take(self, leg: MemoryLeg):
        sent = leg.take()
        self.assertEqual(len(sent), 1, repr(sent))
        return sent[0][0]


class ClientTests(ClientTestCase):
    def test_provides_the_interface(self) -> None:
        self.assertTrue(INATHelper.providedBy(self.client))

    def test_retransmits_then_times_out(self) -> None:
        self.reactor.drop = True
        d = self.client.ping()
        failures = []
        d.addErrback(failures.append)
        self.reactor.pump([0.25] * 13)
        self.assertEqual(len(self.reactor.requests), 3)  # at 0, 0.5, 1.5
        self.assertEqual(len(failures), 1)
        self.assertIsInstance(failures[0].value, NgTimeout)
        self.assertEqual(self.client._pending, {})
        self.assertEqual(self.reactor.getDelayedCalls()[1:], [])  # only the expiry loop is left

    def test_an_answer_ends_the_retransmissions(self) -> None:
        results = []
        self.client.ping().addCallback(results.append)
        self.assertEqual(results, [{"result": b"pong"}])
        self.reactor.advance(5)
        self.assertEqual(len(self.reactor.requests), 1)

    def test_an_error_result_fails(self) -> None:
        failures = []
        self.client.command({"command": "frobnicate"}).addErrback(failures.append)
        self.assertIsInstance(failures[0].value, NgError)
        self.assertIn("Unrecognized command", failures[0].getErrorMessage())

    def test_a_silent_relay_gets_the_call_a_503(self) -> None:
        self.reactor.drop = True
        self.a.receive(request(uri="sip:bob@127.0.0.2:5090", body=sdp("127.0.0.1", 40000), headers=[SDP_TYPE]),
                       ("127.0.0.1", 5080))
        self.assertEqual((self.a.sent, self.b.sent), ([], []))
        self.reactor.pump([0.5] * 7)
        response = self.take(self.a)
        self.assertEqual((response.code, response.get("retry-after")), (503, "5"))
        self.assertEqual(self.b.sent, [])


class ClientThroughProxyTests(ClientTestCase):
    def invite(self, body: str = "") -> Any:
        headers = [SDP_TYPE] if body else []
        self.a.receive(request(uri="sip:bob@127.0.0.2:5090", body=body, headers=headers,
                               via="SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKuac1"), ("127.0.0.1", 5080))
        return self.take(self.b)

    def reply(self, invite: Any, code: int = 200, body: str = "") -> Any:
        response = invite.create_response(code, to_tag="bob1", headers=[("Contact", "<sip:bob@127.0.0.2:5090>")],
                                          record_route=True)
        if body:
            response.set_body(body.encode(), "application/sdp")
        self.b.receive(response, ("127.0.0.2", 5090))
        return self.take(self.a)

    def ack(self, body: str = "", cseq: int = 1) -> Any:
        headers = [SDP_TYPE] if body else []
        self.a.receive(request("ACK", uri="sip:bob@127.0.0.2:5090", to=TO_TAGGED, cseq=cseq, body=body,
                               headers=headers, via="SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKack"),
                       ("127.0.0.1", 5080))
        return self.take(self.b)

    def test_a_call_through_our_own_relay_over_ng(self) -> None:
        invite = self.invite(sdp("127.0.0.1", 40000))
        self.assertIn("c=IN IP4 127.0.0.2", media_lines(invite.body.decode()))
        ok = self.reply(invite, body=sdp("127.0.0.2", 40010))
        self.assertIn("c=IN IP4 127.0.0.1", media_lines(ok.body.decode()))
        self.ack()
        self.assertEqual(len(self.relay.sessions()), 1)
        self.a.receive(request("BYE", uri="sip:bob@127.0.0.2:5090", to=TO_TAGGED, cseq=2,
                               via="SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKbye"), ("127.0.0.1", 5080))
        self.take(self.b)
        self.assertEqual(self.commands(), [
            (b"offer", b"alice1", None, [b"127.0.0.1", b"127.0.0.2"]),
            (b"answer", b"alice1", b"bob1", [b"127.0.0.2", b"127.0.0.1"]),
            (b"delete", b"alice1", b"bob1", None),
        ])
        self.assertEqual(self.relay.sessions(), [])
        self.assertEqual(self.client.calls, {})

    def test_late_offer_swaps_the_tags(self) -> None:
        invite = self.invite()
        ok = self.reply(invite, body=sdp("127.0.0.2", 40010))
        self.assertIn("c=IN IP4 127.0.0.1", media_lines(ok.body.decode()))
        ack = self.ack(sdp("127.0.0.1", 40000))
        self.assertIn("c=IN IP4 127.0.0.2", media_lines(ack.body.decode()))
        self.assertEqual(self.commands(), [
            (b"offer", b"bob1", b"alice1", [b"127.0.0.2", b"127.0.0.1"]),
            (b"answer", b"bob1", b"alice1", [b"127.0.0.1", b"127.0.0.2"]),
        ])
        self.assertEqual(len(self.relay.sessions()), 1)

    def test_cancel_before_an_answer_deletes_the_call(self) -> None:
        self.invite(sdp("127.0.0.1", 40000))
        self.a.receive(request("CANCEL", uri="sip:bob@127.0.0.2:5090",
                               via="SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKuac1"), ("127.0.0.1", 5080))
        self.take(self.b)
        self.assertEqual(self.commands()[-1], (b"delete", b"alice1", None, None))

    def test_cancel_after_early_media_deletes_the_call(self) -> None:
        self.reply(self.invite(sdp("127.0.0.1", 40000)), 183, body=sdp("127.0.0.2", 40010))
        self.assertEqual(len(self.relay.sessions()), 1)
        self.a.receive(request("CANCEL", uri="sip:bob@127.0.0.2:5090",
                               via="SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKuac1"), ("127.0.0.1", 5080))
        self.take(self.b)
        self.assertEqual(self.commands()[-1], (b"delete", b"alice1", None, None))
        self.assertEqual(self.relay.sessions(), [])

    def test_a_failed_reinvite_does_not_delete_the_call(self) -> None:
        self.reply(self.invite(sdp("127.0.0.1", 40000)), body=sdp("127.0.0.2", 40010))
        self.ack()
        self.a.receive(request(uri="sip:bob@127.0.0.2:5090", to=TO_TAGGED, cseq=2, body=sdp("127.0.0.1", 40000, version=2),
                               headers=[SDP_TYPE], via="SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKre"),
                       ("127.0.0.1", 5080))
        reinvite = self.take(self.b)
        self.reply(reinvite, 488)
        self.assertEqual([c[0] for c in self.commands()], [b"offer", b"answer", b"offer"])
        self.assertEqual(len(self.relay.sessions()), 1)
