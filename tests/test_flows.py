"""Flows for phones behind NAT: tokens, NAT detection, the registrar's
route, the proxy's use of it, and the keep-alive pings (in memory, with a
Clock; tests/test_nat_phones.py runs the same through a real NAT)."""
from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sipproxy.access.chain import ReceiveChain
from sipproxy.proxy.flows import Flow, FlowTokens, came_over_nat
from sipproxy.proxy.stateless import StatelessProxy
from sipproxy.registrar.flow_keeper import FlowKeeper
from sipproxy.registrar.location import Binding
from sipproxy.registrar.memory_store import MemoryStore
from sipproxy.registrar.registrar import Registrar
from sipproxy.sip.message import parse
from sipproxy.sip.uri import parse_uri
from sipproxy.testing import MemoryLeg, memory_dispatcher

SECRET = b"s" * 32
PHONE_PUBLIC = ("203.0.113.7", 40123)  # where the NAT maps the phone's packets


def register(contact: str = "sip:phone@10.0.0.2:5060", expires: int = 300, cseq: int = 1) -> bytes:
    return (f"REGISTER sip:example.test SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bKreg{cseq};rport\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:phone@example.test>;tag=r1\r\nTo: <sip:phone@example.test>\r\n"
            f"Call-ID: reg-1\r\nCSeq: {cseq} REGISTER\r\nContact: <{contact}>\r\nExpires: {expires}\r\n"
            "Content-Length: 0\r\n\r\n").encode()


def invite(uri: str = "sip:phone@example.test", branch: str = "z9hG4bKinv1") -> bytes:
    return (f"INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.9:5060;branch={branch}\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:caller@example.test>;tag=c1\r\nTo: <sip:phone@example.test>\r\n"
            "Call-ID: call-1\r\nCSeq: 1 INVITE\r\nContact: <sip:caller@198.51.100.9:5060>\r\n"
            "Content-Length: 0\r\n\r\n").encode()


class FlowTokenTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.legs = [MemoryLeg("192.0.2.1"), MemoryLeg("192.0.2.1", proto="tcp")]
        for i, leg in enumerate(self.legs):
            leg.index = i
        self.tokens = FlowTokens(SECRET, self.legs)

    def test_a_token_opens_to_its_flow_until_it_expires(self) -> None:
        flow = Flow(1, "tcp", "203.0.113.7", 40123, "sip:phone@10.0.0.2:5060;transport=tcp")
        token = self.tokens.seal(flow, expires_at=1000)
        self.assertTrue(token.startswith("f"))
        self.assertEqual(self.tokens.open(token, now=999), flow)
        self.assertIsNone(self.tokens.open(token, now=1001))

    def test_a_forged_or_foreign_token_does_not_open(self) -> None:
        flow = Flow(0, "udp", "2001:db8::7", 5060, "sip:phone@[fd00::2]")
        token = self.tokens.seal(flow, expires_at=1000)
        self.assertEqual(self.tokens.open(token, now=0), flow)
        tampered = token[:-3] + ("aaa" if not token.endswith("aaa") else "bbb")
        self.assertIsNone(self.tokens.open(tampered, now=0))
        self.assertIsNone(FlowTokens(b"t" * 32, self.legs).open(token, now=0))
        self.assertIsNone(self.tokens.open("f" + "a" * 40, now=0))
        self.assertIsNone(self.tokens.open("bnotaflow", now=0))

    def test_uri_names_the_leg_with_its_transport(self) -> None:
        uri = self.tokens.uri(Flow(1, "tcp", "203.0.113.7", 1, "sip:x@10.0.0.2"), 10, self.legs[1])
        parsed = parse_uri(uri)
        self.assertEqual((parsed.host, parsed.port, parsed.transport), ("192.0.2.1", 5060, "tcp"))
        self.assertTrue(parsed.user.startswith("f"))


class NatDetectionTests(SynchronousTestCase):
    def test_udp_from_where_the_contact_says_is_not_nat(self) -> None:
        self.assertFalse(came_over_nat(parse_uri("sip:a@192.0.2.5:5070"), "udp", ("192.0.2.5", 5070)))
        self.assertFalse(came_over_nat(parse_uri("sip:a@192.0.2.5"), "udp", ("192.0.2.5", 5060)))
        self.assertFalse(came_over_nat(parse_uri("sip:a@[2001:db8::1]"), "udp", ("2001:db8:0::1", 5060)))

    def test_another_address_or_port_or_a_connection_is_nat(self) -> None:
        self.assertTrue(came_over_nat(parse_uri("sip:a@10.0.0.2:5060"), "udp", PHONE_PUBLIC))
        self.assertTrue(came_over_nat(parse_uri("sip:a@192.0.2.5:5060"), "udp", ("192.0.2.5", 5061)))
        self.assertTrue(came_over_nat(parse_uri("sip:a@192.0.2.5:5060"), "tcp", ("192.0.2.5", 5060)))

    def test_a_host_name_contact_is_taken_as_it_stands(self) -> None:
        self.assertFalse(came_over_nat(parse_uri("sip:a@pbx.example.test"), "udp", ("192.0.2.5", 5060)))


class RegistrarAndProxyTests(SynchronousTestCase):
    """The registrar files a NATed REGISTER with a route over its flow; the
    proxy follows it, and turns the phone's Contact into a flow URI."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.leg = MemoryLeg("192.0.2.1")
        self.dispatcher = memory_dispatcher([self.leg])
        self.store = MemoryStore(self.clock)
        self.keeper = FlowKeeper(self.clock, self.store, interval=30, failures=2)
        self.registrar = Registrar(self.dispatcher, self.store, self.clock, flows=FlowTokens(SECRET, [self.leg]),
                                   keeper=self.keeper)
        self.proxy = StatelessProxy(self.dispatcher, secret=SECRET, clock=self.clock)
        self.dispatcher.set_receiver(ReceiveChain([self.keeper, self.registrar, self.proxy]))
        self.addCleanup(self.keeper.stop)

    def sent(self) -> list[tuple[Any, tuple[str, int]]]:
        return [(parse(data), addr) for data, addr in self.leg.sent]

    def test_a_call_to_a_phone_behind_nat_goes_to_its_flow(self) -> None:
        self.leg.receive(register(), PHONE_PUBLIC)
        ok, to = self.sent()[-1]
        self.assertEqual((ok.code, to), (200, PHONE_PUBLIC))
        self.assertIn("<sip:phone@10.0.0.2:5060>", ok.get("contact"))  # the phone sees its own Contact
        self.leg.receive(invite(), ("198.51.100.9", 5060))
        forwarded, to = self.sent()[-1]
        self.assertEqual(forwarded.method, "INVITE")
        self.assertEqual(to, PHONE_PUBLIC)
        self.assertEqual(forwarded.uri, "sip:phone@10.0.0.2:5060")  # the Request-URI is the Contact
        self.assertIsNone(forwarded.get("route"))  # our flow route was ours to consume

    def test_a_phone_reachable_as_it_says_gets_no_flow(self) -> None:
        self.leg.receive(register("sip:phone@198.51.100.20:5060"), ("198.51.100.20", 5060))
        self.assertEqual(len(self.keeper), 0)
        self.leg.receive(invite(), ("198.51.100.9", 5060))
        forwarded, to = self.sent()[-1]
        self.assertEqual(to, ("198.51.100.20", 5060))

    def test_the_phones_answer_carries_a_flow_contact_and_the_bye_follows_it(self) -> None:
        self.leg.receive(register(), PHONE_PUBLIC)
        self.leg.receive(invite(), ("198.51.100.9", 5060))
        forwarded, _ = self.sent()[-1]
        vias = forwarded.get_all("via")
        answer = ("SIP/2.0 200 OK\r\n" + "".join(f"Via: {v}\r\n" for v in vias)
                  + "".join(f"Record-Route: {r}\r\n" for r in forwarded.get_all("record-route"))
                  + "From: <sip:caller@example.test>;tag=c1\r\nTo: <sip:phone@example.test>;tag=p1\r\n"
                  "Call-ID: call-1\r\nCSeq: 1 INVITE\r\nContact: <sip:phone@10.0.0.2:5060>\r\n"
                  "Content-Length: 0\r\n\r\n").encode()
        self.leg.receive(answer, PHONE_PUBLIC)
        relayed, to = self.sent()[-1]
        self.assertEqual((relayed.code, to), (200, ("198.51.100.9", 5060)))
        contact = parse_uri(relayed.get("contact").strip("<>"))
        self.assertEqual((contact.host, contact.port), ("192.0.2.1", 5060))
        self.assertTrue(contact.user.startswith("f"))
        bye = (f"BYE {contact} SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.9:5060;branch=z9hG4bKbye1\r\n"
               f"Route: {relayed.get('record-route')}\r\nMax-Forwards: 70\r\n"
               "From: <sip:caller@example.test>;tag=c1\r\nTo: <sip:phone@example.test>;tag=p1\r\n"
               "Call-ID: call-1\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n").encode()
        self.leg.receive(bye, ("198.51.100.9", 5060))
        forwarded_bye, to = self.sent()[-1]
        self.assertEqual((forwarded_bye.method, to), ("BYE", PHONE_PUBLIC))
        self.assertEqual(forwarded_bye.uri, "sip:phone@10.0.0.2:5060")

    def test_a_flow_uri_starts_no_new_dialog(self) -> None:
        flow_uri = self.proxy.flows.uri(Flow(0, "udp", *PHONE_PUBLIC, "sip:phone@10.0.0.2:5060"),
                                        self.clock.seconds() + 60, self.leg)
        self.leg.receive(invite(flow_uri, "z9hG4bKinv3"), ("198.51.100.9", 5060))
        answer, to = self.sent()[-1]
        self.assertEqual((answer.code, to), (403, ("198.51.100.9", 5060)))

    def test_an_expired_flow_token_gets_430(self) -> None:
        self.leg.receive(register(), PHONE_PUBLIC)
        self.leg.receive(invite(), ("198.51.100.9", 5060))
        flow_uri = self.proxy.flows.uri(Flow(0, "udp", *PHONE_PUBLIC, "sip:phone@10.0.0.2:5060"),
                                        self.clock.seconds() + 5, self.leg)
        self.clock.advance(10)
        bye = invite(flow_uri, "z9hG4bKinv2").replace(b"INVITE", b"BYE").replace(
            b"To: <sip:phone@example.test>", b"To: <sip:phone@example.test>;tag=p1")
        self.leg.receive(bye, ("198.51.100.9", 5060))
        answer, to = self.sent()[-1]
        self.assertEqual((answer.code, to), (430, ("198.51.100.9", 5060)))

    def test_turned_off_the_proxy_sends_to_the_private_contact(self) -> None:
        proxy = StatelessProxy(self.dispatcher, secret=SECRET, clock=self.clock, nat_flows=False)
        registrar = Registrar(self.dispatcher, self.store, self.clock)
        self.dispatcher.set_receiver(ReceiveChain([registrar, proxy]))
        self.leg.receive(register(), PHONE_PUBLIC)
        self.leg.receive(invite(), ("198.51.100.9", 5060))
        forwarded, to = self.sent()[-1]
        self.assertEqual(to, ("10.0.0.2", 5060))


class FlowKeeperTests(RegistrarAndProxyTests):
    def test_pings_go_over_the_flow_and_answers_keep_the_binding(self) -> None:
        self.leg.receive(register(), PHONE_PUBLIC)
        self.assertEqual(len(self.keeper), 1)
        for _ in range(4):
            self.clock.advance(30)
            ping, to = self.sent()[-1]
            self.assertEqual((ping.method, to), ("OPTIONS", PHONE_PUBLIC))
            pong = ("SIP/2.0 200 OK\r\n" + "".join(f"Via: {v}\r\n" for v in ping.get_all("via"))
                    + f"From: {ping.get('from')}\r\nTo: {ping.get('to')};tag=x\r\nCall-ID: {ping.call_id}\r\n"
                    "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()
            before = len(self.leg.sent)
            self.leg.receive(pong, PHONE_PUBLIC)
            self.assertEqual(len(self.leg.sent), before)  # consumed, not forwarded
        bindings = self.successResultOf(self.store.lookup("sip:phone@example.test"))
        self.assertEqual(len(bindings), 1)

    def test_a_silent_flow_loses_its_binding(self) -> None:
        self.leg.receive(register(), PHONE_PUBLIC)
        for _ in range(3):
            self.clock.advance(30)
        self.assertEqual(self.keeper.dropped, 1)
        self.assertEqual(self.successResultOf(self.store.lookup("sip:phone@example.test")), [])
        self.assertEqual(len(self.keeper), 0)

    def test_unregistering_stops_the_pings(self) -> None:
        self.leg.receive(register(), PHONE_PUBLIC)
        self.leg.receive(register(expires=0, cseq=2), PHONE_PUBLIC)
        self.assertEqual(len(self.keeper), 0)
        sent = len(self.leg.sent)
        self.clock.advance(90)
        self.assertEqual(len(self.leg.sent), sent)

    def test_a_closed_connection_drops_a_stream_binding(self) -> None:
        tcp = MemoryLeg("192.0.2.1", proto="tcp")
        tcp.connections = {PHONE_PUBLIC: object()}
        binding = Binding(contact="sip:phone@10.0.0.2:5060;transport=tcp", expires=300, call_id="c", cseq=1)
        self.successResultOf(self.store.update("sip:phone@example.test", "c", 1, [(binding.key, binding, 300)]))
        self.keeper.watch("sip:phone@example.test", binding, tcp, PHONE_PUBLIC)
        self.clock.advance(30)
        self.assertEqual(tcp.sent[-1], (b"\r\n\r\n", PHONE_PUBLIC))
        del tcp.connections[PHONE_PUBLIC]
        self.clock.advance(30)
        self.assertEqual(self.keeper.dropped, 1)
        self.assertEqual(self.successResultOf(self.store.lookup("sip:phone@example.test")), [])



