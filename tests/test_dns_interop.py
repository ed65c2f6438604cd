"""RFC 3263 against a real DNS server: dnsmasq, started by the test on
loopback with NAPTR, SRV and A records, and a proxy on real sockets.

- SRV weights spread calls as RFC 2782 says (measured over 300 INVITEs);
- a dead first SRV target (a closed TCP port) fails over to the next, and
  the dead one is then tried last (the blocklist);
- a resolver that never answers does not hold up requests for IP
  addresses or hosts-file names: they are forwarded while the lookups of
  200 random names are still waiting (the delay is logged, not asserted).
"""
from __future__ import annotations

import os
import pwd
import socket
import time
from collections import Counter
from typing import Any

from twisted.internet import defer, protocol, reactor
from twisted.logger import Logger
from twisted.names import dns
from twisted.trial.unittest import TestCase

from sipproxy.app.service import ProxyService
from sipproxy.sip.message import parse
from sipproxy.transport.resolver import DNSResolver
from tests.sip import request
from tests.test_proxy_loopback import StreamEndpoint, UDPEndpoint
from tests.util import UDPProbe, WaitTimeout, require_program, start_process, temp_dir, wait_until

log = Logger()


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def closed_tcp_port() -> int:
    """A port nothing listens on (bound, then closed: connects are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _query(name: str, kind: int) -> Any:
    def payload(_: int) -> bytes:
        message = dns.Message(id=4711, recDes=True)
        message.queries = [dns.Query(name, kind)]
        return message.toStr()

    return payload


@defer.inlineCallbacks
def start_dnsmasq(testcase: TestCase, records: list[str], ttl: int = 0) -> Any:
    """dnsmasq answering for *.test from C{records} (its own options) on a
    loopback port; returns (host, port)."""
    program = require_program("dnsmasq")
    port = free_udp_port()
    cwd = temp_dir(testcase)
    argv = [program, "--no-resolv", "--no-hosts", f"--port={port}", "--listen-address=127.0.0.1",
            "--bind-interfaces", "--keep-in-foreground", "--local=/test/", f"--local-ttl={ttl}",
            f"--pid-file={os.path.join(cwd, 'dnsmasq.pid')}", "--log-facility=-", "--conf-file=/dev/null",
            f"--user={pwd.getpwuid(os.getuid()).pw_name}", *records]
    start_process(testcase, argv, cwd, "dnsmasq")
    probe = UDPProbe("127.0.0.1", port, _query("probe.test", dns.A), testcase)
    yield wait_until(probe, timeout=10, what=f"dnsmasq answering on port {port}")
    return ("127.0.0.1", port)


class Dropper(protocol.DatagramProtocol):
    """A DNS server that never answers: reads and drops."""

    def __init__(self) -> None:
        self.received = 0

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.received += 1


class DNSInteropTestCase(TestCase):
    timeout = 60

    def start_proxy(self, legs: list[str], resolver: DNSResolver) -> ProxyService:
        service = ProxyService(reactor, legs, secret=b"D" * 32, resolver=resolver)
        service.startService()
        self.addCleanup(service.stopService)
        return service

    def udp_endpoint(self) -> tuple[UDPEndpoint, int]:
        endpoint = UDPEndpoint()
        port = reactor.listenUDP(0, endpoint, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return endpoint, port.getHost().port


class WeightTests(DNSInteropTestCase):
    @defer.inlineCallbacks
    def test_srv_weights_spread_calls(self) -> None:
        uas = [self.udp_endpoint() for _ in range(4)]
        ports = [port for _, port in uas]
        weights = [60, 30, 10]
        records = [f"--naptr-record=w.test,10,10,S,SIP+D2U,,_sip._udp.w.test"]
        records += [f"--srv-host=_sip._udp.w.test,h{i}.w.test,{ports[i]},10,{w}" for i, w in enumerate(weights)]
        records += [f"--srv-host=_sip._udp.w.test,h3.w.test,{ports[3]},20,100"]  # a backup: never first
        records += [f"--host-record=h{i}.w.test,127.0.0.1" for i in range(4)]
        server = yield start_dnsmasq(self, records, ttl=60)
        resolver = DNSResolver(reactor, servers=[server], hosts_file=None, timeout=5.0)
        service = self.start_proxy(["udp:127.0.0.1:0"], resolver)
        leg = service.legs[0]
        uac, uac_port = self.udp_endpoint()
        n = 300
        for i in range(n):
            uac.send(request(uri="sip:bob@w.test", call_id=f"weights-{i}@127.0.0.1",
                             via=f"SIP/2.0/UDP 127.0.0.1:{uac_port};branch=z9hG4bKw{i}"), (leg.host, leg.port))
        try:
            yield wait_until(lambda: sum(len(e.queue) for e, _ in uas) >= n, timeout=30, what=f"{n} INVITEs")
        except WaitTimeout:
            self.fail(f"not all {n} INVITEs forwarded: {[len(e.queue) for e, _ in uas]}; "
                      f"{len(uac.queue)} answers, e.g. {[d[:40] for d, _ in uac.queue[:2]]}")
        counts = [len(e.queue) for e, _ in uas]
        self.assertEqual(sum(counts), n)
        self.assertEqual(counts[3], 0)  # priority 20: only when the others fail
        # RFC 2782's pick is an integer in [0, sum]: weight w is first with
        # (w + 1 for the first in the list) / (sum + 1); here 61/101, 30/101, 10/101
        expected = [61 / 101 * n, 30 / 101 * n, 10 / 101 * n]
        chi2 = sum((c - e) ** 2 / e for c, e in zip(counts, expected))
        log.info("SRV weights 60/30/10 over {n} INVITEs: {counts} (expected {expected}); chi2 {chi2:.2f}",
                 n=n, counts=counts[:3], expected=[round(e, 1) for e in expected], chi2=chi2)
        print(f"\nSRV weights 60/30/10 over {n} INVITEs: measured {counts[:3]}, expected "
              f"{[round(e, 1) for e in expected]}, chi2 {chi2:.2f} (p=0.001 bound 13.8)")
        self.assertLess(chi2, 13.8)  # fails once in a thousand runs of a correct resolver
        # the same Call-ID goes where it went (retransmission, CANCEL, ACK)
        where = {i for i, (e, _) in enumerate(uas) for data, _ in e.queue if b"weights-7@" in data}
        uac.send(request(method="CANCEL", uri="sip:bob@w.test", call_id="weights-7@127.0.0.1",
                         via=f"SIP/2.0/UDP 127.0.0.1:{uac_port};branch=z9hG4bKw7"), (leg.host, leg.port))
        yield wait_until(lambda: any(b"CANCEL" in d for e, _ in uas for d, _ in e.queue), timeout=10,
                         what="the CANCEL forwarded")
        cancelled = {i for i, (e, _) in enumerate(uas) for data, _ in e.queue if data.startswith(b"CANCEL")}
        self.assertEqual(cancelled, where)
        self.assertEqual(resolver.queries_sent, 6)  # NAPTR, SRV, 4 A: the rest from the cache


class FailoverTests(DNSInteropTestCase):
    def tcp_server(self) -> tuple[list[StreamEndpoint], int]:
        connections: list[StreamEndpoint] = []

        class Factory(protocol.Factory):
            def buildProtocol(self, addr: Any) -> StreamEndpoint:
                endpoint = StreamEndpoint()
                connections.append(endpoint)
                return endpoint

        port = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return connections, port.getHost().port

    @defer.inlineCallbacks
    def test_dead_first_target_fails_over_to_the_next(self) -> None:
        live, live_port = self.tcp_server()
        dead_port = closed_tcp_port()
        server = yield start_dnsmasq(self, [
            "--naptr-record=f.test,10,10,S,SIP+D2T,,_sip._tcp.f.test",
            f"--srv-host=_sip._tcp.f.test,dead.f.test,{dead_port},10,100",
            f"--srv-host=_sip._tcp.f.test,live.f.test,{live_port},20,100",
            "--host-record=dead.f.test,127.0.0.1", "--host-record=live.f.test,127.0.0.1"])
        resolver = DNSResolver(reactor, servers=[server], hosts_file=None, timeout=5.0)
        service = self.start_proxy(["udp:127.0.0.1:0", "tcp:127.0.0.1:0"], resolver)
        udp = service.legs[0]
        uac, uac_port = self.udp_endpoint()
        started = time.monotonic()
        uac.send(request(uri="sip:bob@f.test", call_id="failover-1@127.0.0.1",
                         via=f"SIP/2.0/UDP 127.0.0.1:{uac_port};branch=z9hG4bKf1"), (udp.host, udp.port))
        yield wait_until(lambda: live, timeout=15, what="a connection to the live target")
        got, _ = yield live[0].next()
        elapsed = time.monotonic() - started
        print(f"\nfailover: INVITE for f.test reached the second SRV target (port {live_port}) "
              f"{elapsed * 1000:.1f} ms after it was sent; the first (port {dead_port}) refused the connection")
        self.assertEqual(got.method, "INVITE")
        self.assertEqual(got.call_id, "failover-1@127.0.0.1")
        self.assertEqual(len(got.get_all("via")), 2)  # ours once: the failed attempt left no trace
        self.assertIn(("tcp", "127.0.0.1", dead_port), service.dispatcher.blocklist)
        self.assertEqual(uac.queue, [])  # no answer to the caller: the request went on
        # the next request tries the live target first
        uac.send(request(uri="sip:bob@f.test", call_id="failover-2@127.0.0.1",
                         via=f"SIP/2.0/UDP 127.0.0.1:{uac_port};branch=z9hG4bKf2"), (udp.host, udp.port))
        got, _ = yield live[0].next()
        self.assertEqual(got.call_id, "failover-2@127.0.0.1")
        targets = yield service.dispatcher.resolve("sip:bob@f.test")
        self.assertEqual([addr for _, addr in targets], [("127.0.0.1", live_port), ("127.0.0.1", dead_port)])

    @defer.inlineCallbacks
    def test_every_target_dead_answers_503(self) -> None:
        server = yield start_dnsmasq(self, [
            f"--srv-host=_sip._tcp.g.test,d1.g.test,{closed_tcp_port()},10,1",
            f"--srv-host=_sip._tcp.g.test,d2.g.test,{closed_tcp_port()},20,1",
            "--host-record=d1.g.test,127.0.0.1", "--host-record=d2.g.test,127.0.0.1"])
        resolver = DNSResolver(reactor, servers=[server], hosts_file=None, timeout=5.0)
        service = self.start_proxy(["udp:127.0.0.1:0", "tcp:127.0.0.1:0"], resolver)
        udp = service.legs[0]
        uac, uac_port = self.udp_endpoint()
        uac.send(request(uri="sip:bob@g.test;transport=tcp", call_id="dead-1@127.0.0.1",
                         via=f"SIP/2.0/UDP 127.0.0.1:{uac_port};branch=z9hG4bKd1"), (udp.host, udp.port))
        answer, _ = yield uac.next()
        self.assertEqual(answer.code, 503)
        self.assertEqual(len(service.dispatcher.blocklist), 2)


class DeadResolverTests(DNSInteropTestCase):
    @defer.inlineCallbacks
    def test_dead_resolver_does_not_delay_literal_addresses(self) -> None:
        dropper = Dropper()
        dead = reactor.listenUDP(0, dropper, interface="127.0.0.1")
        self.addCleanup(dead.stopListening)
        # the timeout is long beside what forwarding takes even on a loaded machine, so the
        # lookups are still waiting when the literal requests go through
        resolver = DNSResolver(reactor, servers=[("127.0.0.1", dead.getHost().port)], timeout=4.0, max_pending=64)
        service = self.start_proxy(["udp:127.0.0.1:0"], resolver)
        leg = service.legs[0]
        uac, uac_port = self.udp_endpoint()
        uas, uas_port = self.udp_endpoint()
        names = 200
        for i in range(names):
            uac.send(request(uri=f"sip:bob@r{i}x{os.getpid()}.example.net", call_id=f"name-{i}@127.0.0.1",
                             via=f"SIP/2.0/UDP 127.0.0.1:{uac_port};branch=z9hG4bKn{i}"), (leg.host, leg.port))
        yield wait_until(lambda: dropper.received >= 64, timeout=10, what="64 queries at the dead server")
        delays = {}
        for label, uri in (("literal", f"sip:bob@127.0.0.1:{uas_port}"), ("hosts", f"sip:bob@localhost:{uas_port}")):
            started = time.monotonic()
            uac.send(request(uri=uri, call_id=f"{label}@127.0.0.1",
                             via=f"SIP/2.0/UDP 127.0.0.1:{uac_port};branch=z9hG4bK{label}"), (leg.host, leg.port))
            got, _ = yield uas.next()
            delays[label] = time.monotonic() - started
            self.assertEqual(got.call_id, f"{label}@127.0.0.1")
            self.assertTrue(resolver._pending, "the name lookups are still waiting for the dead server")
        log.info("dead resolver: literal {literal:.4f} s, hosts {hosts:.4f} s", **delays)
        print(f"\ndead resolver, {names} name lookups pending: request for 127.0.0.1 forwarded after "
              f"{delays['literal'] * 1000:.2f} ms, for localhost after {delays['hosts'] * 1000:.2f} ms")
        # the names: 503 at once beyond the 64 in flight, 503 after the timeout for those
        yield wait_until(lambda: sum(1 for d, _ in uac.queue if parse(d).code == 503) >= names, timeout=20,
                         what="503 for every name")
        # each name cost one query (the first step failed: no SRV or A asked
        # after it) or none (refused while 64 were in flight)
        self.assertEqual(resolver.queries_sent + resolver.refused_busy, names)
        self.assertEqual(dropper.received, resolver.queries_sent)
        self.assertGreaterEqual(resolver.refused_busy, 1)
