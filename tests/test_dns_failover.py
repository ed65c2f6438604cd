"""Failover on UDP: what an unconnected UDP leg can see of a dead
destination. Linux reports ICMP errors to such a socket only with
IP_RECVERR, in its error queue, with the destination that caused them;
the leg reads them and tells whoever sent there (the proxy's failover).
Real sockets on loopback: a closed port answers with ICMP port
unreachable."""
from __future__ import annotations

import socket
import sys
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from zope.interface import implementer

from sipproxy.app.service import ProxyService
from sipproxy.interfaces import IHopResolver
from sipproxy.proxy.stateless import StatelessProxy
from sipproxy.sip.message import parse
from sipproxy.testing import MemoryLeg
from sipproxy.transport.dispatcher import Dispatcher
from sipproxy.transport.legs import UDPLeg
from sipproxy.transport.resolver import DNSResolver
from sipproxy.transport.rfc3263 import Destination
from tests.sip import request
from tests.test_dns_interop import DNSInteropTestCase, start_dnsmasq
from tests.util import wait_until


def closed_udp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Recorder:
    """A dispatcher stand-in for a bare leg: records what arrives."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, Any]] = []

    def message_received(self, data: bytes, leg: Any, addr: Any, stream: bool = False) -> None:
        self.received.append((data, addr))


class UDPErrorTests(TestCase):
    timeout = 20
    host = "127.0.0.1"

    def setUp(self) -> None:
        if not sys.platform.startswith("linux"):
            raise SkipTest("ICMP errors on unconnected UDP sockets are read the Linux way (IP_RECVERR)")
        self.leg = UDPLeg(self.host, 0)
        self.leg.dispatcher = Recorder()  # type: ignore[assignment]
        self.leg.listen(reactor)
        self.addCleanup(self.leg.stop)

    @defer.inlineCallbacks
    def test_port_unreachable_reaches_the_sender(self) -> None:
        self.assertTrue(self.leg._port.errors_received)
        dead = (self.host, closed_udp_port(self.host))
        reasons: list[str] = []
        self.leg.send(b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\n\r\n", dead, reasons.append)
        yield wait_until(lambda: reasons, timeout=5, what="the ICMP error reported")
        self.assertEqual(reasons, [f"ICMP ECONNREFUSED from {dead[0]}:{dead[1]}"])

    @defer.inlineCallbacks
    def test_leg_keeps_receiving_after_errors_nobody_waits_for(self) -> None:
        dead = (self.host, closed_udp_port(self.host))
        for _ in range(300):  # more than one drain's worth (burst 128)
            self.leg.send(b"x" * 20, dead)
        with socket.socket(self.leg._family, socket.SOCK_DGRAM) as peer:
            peer.bind((self.host, 0))
            for i in range(3):
                peer.sendto(b"PING %d padding padding" % i, (self.leg.host, self.leg.port))
                yield wait_until(lambda: len(self.leg.dispatcher.received) > i, timeout=5,  # type: ignore
                                 what="a datagram after the ICMP errors")
                self.leg.send(b"y" * 20, dead)
        self.assertEqual(len(self.leg.dispatcher.received), 3)  # type: ignore[attr-defined]
        self.assertTrue(self.leg._port.connected)

    @defer.inlineCallbacks
    def test_late_error_is_not_anyones(self) -> None:
        dead = (self.host, closed_udp_port(self.host))
        reasons: list[str] = []
        clock = Clock()
        self.leg._clock = clock  # the window is judged by this clock
        self.leg.send(b"z" * 20, dead, reasons.append)
        clock.advance(5)  # past ICMP_WINDOW
        # the next send reports the pending error (and sends nothing) unless the
        # leg hands the error to its owner and sends again: this one must arrive
        self.leg.send(b"z" * 20, (self.host, self.leg.port))
        yield wait_until(lambda: self.leg.dispatcher.received, timeout=5, what="our own datagram")  # type: ignore
        self.assertEqual(reasons, [])


class UDPErrorTestsIPv6(UDPErrorTests):
    host = "::1"

    def setUp(self) -> None:
        try:
            closed_udp_port("::1")
        except OSError:
            raise SkipTest("no IPv6 loopback here") from None
        super().setUp()


class UDPFailoverTests(DNSInteropTestCase):
    @defer.inlineCallbacks
    def test_dead_udp_target_fails_over_on_icmp(self) -> None:
        if not sys.platform.startswith("linux"):
            raise SkipTest("ICMP errors on unconnected UDP sockets are read the Linux way (IP_RECVERR)")
        live, live_port = self.udp_endpoint()
        dead_port = closed_udp_port()
        server = yield start_dnsmasq(self, [
            f"--srv-host=_sip._udp.u.test,dead.u.test,{dead_port},10,100",
            f"--srv-host=_sip._udp.u.test,live.u.test,{live_port},20,100",
            "--host-record=dead.u.test,127.0.0.1", "--host-record=live.u.test,127.0.0.1"])
        resolver = DNSResolver(reactor, servers=[server], hosts_file=None, timeout=5.0)
        service: ProxyService = self.start_proxy(["udp:127.0.0.1:0"], resolver)
        leg = service.legs[0]
        uac, uac_port = self.udp_endpoint()
        uac.send(request(uri="sip:bob@u.test", call_id="udp-failover@127.0.0.1",
                         via=f"SIP/2.0/UDP 127.0.0.1:{uac_port};branch=z9hG4bKu1"), (leg.host, leg.port))
        got, _ = yield live.next()
        print(f"\nUDP failover: INVITE for u.test reached the second SRV target (port {live_port}) after "
              f"ICMP port unreachable from the first (port {dead_port})")
        self.assertEqual(got.call_id, "udp-failover@127.0.0.1")
        self.assertEqual(len(got.get_all("via")), 2)
        self.assertIn(("udp", "127.0.0.1", dead_port), service.dispatcher.blocklist)
        self.assertEqual(uac.queue, [])


class ProxyFailoverUnitTests(SynchronousTestCase):
    """The proxy's side of failover, with legs that fail on demand: the
    request as it came in goes to the next destination, over the leg that
    one needs; none left: 503; literal addresses are not failed over."""

    def setUp(self) -> None:
        self.udp = FailingLeg("192.0.2.10", 5060, "udp")
        self.tcp = FailingLeg("192.0.2.10", 5060, "tcp")
        self.resolver = FixedHops([Destination("tcp", "198.51.100.1", 5070), Destination("udp", "198.51.100.2", 5080),
                                   Destination("udp", "198.51.100.3", 5090)])
        self.dispatcher = Dispatcher(Clock(), legs=[self.udp, self.tcp], resolver=self.resolver,
                                     local_address=lambda ip: "192.0.2.10")
        self.proxy = StatelessProxy(self.dispatcher, secret=b"F" * 32)
        self.dispatcher.set_receiver(self.proxy)

    def invite(self, uri: str = "sip:bob@example.com") -> None:
        self.udp.receive(request(uri=uri, via="SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bKfo1"), ("192.0.2.20", 5060))

    def test_next_destination_over_its_own_leg(self) -> None:
        self.tcp.failing.add(("198.51.100.1", 5070))
        self.invite()
        self.assertEqual([addr for _, addr in self.tcp.sent], [("198.51.100.1", 5070)])
        (data, addr), = self.udp.sent
        self.assertEqual(addr, ("198.51.100.2", 5080))
        forwarded = parse(data)
        vias = forwarded.get_all("via")
        self.assertEqual(len(vias), 2)
        self.assertTrue(vias[0].startswith("SIP/2.0/UDP 192.0.2.10:5060;"))  # written for the UDP leg
        self.assertEqual(forwarded.get("max-forwards"), "69")  # lowered once
        self.assertEqual(len(forwarded.get_all("record-route")), 1)  # UDP in, UDP out: one
        self.assertIn(("tcp", "198.51.100.1", 5070), self.dispatcher.blocklist)

    def test_every_destination_failing_answers_503(self) -> None:
        self.tcp.failing.add(("198.51.100.1", 5070))
        self.udp.failing.update({("198.51.100.2", 5080), ("198.51.100.3", 5090)})
        self.invite()
        answers = [parse(data) for data, addr in self.udp.sent if addr == ("192.0.2.20", 5060)]
        self.assertEqual([a.code for a in answers], [503])
        self.assertEqual(len(self.dispatcher.blocklist), 3)

    def test_blocked_destination_is_tried_last_next_time(self) -> None:
        self.dispatcher.blocklist.add("tcp", "198.51.100.1", 5070)
        self.invite()
        self.assertEqual(self.tcp.sent, [])
        self.assertEqual([addr for _, addr in self.udp.sent], [("198.51.100.2", 5080)])

    def test_literal_address_is_sent_without_failover(self) -> None:
        self.udp.failing.add(("198.51.100.9", 5060))
        self.invite("sip:bob@198.51.100.9")
        self.assertEqual([addr for _, addr in self.udp.sent], [("198.51.100.9", 5060)])
        self.assertEqual(self.udp.asked_to_report, [False])  # no one listens for its failure: as before
        self.assertEqual(self.resolver.asked, [])


class FailingLeg(MemoryLeg):
    """A memory leg that reports a failure for the addresses in C{failing}."""

    def __init__(self, host: str, port: int, proto: str) -> None:
        super().__init__(host, port, proto)
        self.failing: set[tuple[str, int]] = set()
        self.asked_to_report: list[bool] = []

    def send(self, data: bytes, addr: tuple[str, int], on_error: Any = None) -> None:
        super().send(data, addr, on_error)
        self.asked_to_report.append(on_error is not None)
        if addr in self.failing and on_error is not None:
            on_error("connection refused")


@implementer(IHopResolver)
class FixedHops:
    def __init__(self, destinations: list[Destination]) -> None:
        self.destinations = destinations
        self.asked: list[str] = []

    def resolve_hop(self, host: str, proto: Any, port: Any, transports: Any, families: Any, key: Any = None) -> list:
        self.asked.append(host)
        return list(self.destinations)
