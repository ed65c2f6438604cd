"""The RFC 3263 resolver's edge: cache (TTLs, negative answers, failures),
queries in flight (shared, bounded), the hosts file, and the dispatcher's
use of it (blocklist order). A scripted DNS client and a Clock: no sockets
here (tests/test_dns_interop.py asks a real server)."""
from __future__ import annotations

import os
import tempfile
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.names import dns, error as dns_error
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from sipproxy.proxy.routing import Hop, RoutingError
from sipproxy.testing import MemoryLeg
from sipproxy.transport.dispatcher import Dispatcher
from sipproxy.transport.resolver import (DNSResolver, DestinationBlocklist, HostsFile, ResolutionFailed,
                                         parse_server, servers_of_resolv_conf)
from sipproxy.transport.rfc3263 import Destination


def rr(name: str, payload: Any, ttl: int) -> dns.RRHeader:
    return dns.RRHeader(name, payload.TYPE, dns.IN, ttl, payload)


class ScriptedClient:
    """An IResolver whose answers the test gives: C{pending[(name, kind)]}
    is the Deferred of each question asked."""

    def __init__(self) -> None:
        self.pending: dict[tuple[str, str], Deferred] = {}
        self.asked: list[tuple[str, str]] = []

    def _ask(self, name: str, kind: str) -> Deferred:
        self.asked.append((name, kind))
        d: Deferred = Deferred()
        self.pending[(name, kind)] = d
        return d

    def lookupNamingAuthorityPointer(self, name: str, timeout: Any = None) -> Deferred:
        return self._ask(name, "NAPTR")

    def lookupService(self, name: str, timeout: Any = None) -> Deferred:
        return self._ask(name, "SRV")

    def lookupAddress(self, name: str, timeout: Any = None) -> Deferred:
        return self._ask(name, "A")

    def lookupIPV6Address(self, name: str, timeout: Any = None) -> Deferred:
        return self._ask(name, "AAAA")

    def answer(self, name: str, kind: str, records: list, authority: list = ()) -> None:
        self.pending.pop((name, kind)).callback((records, list(authority), []))

    def nxdomain(self, name: str, kind: str, authority: list = ()) -> None:
        message = dns.Message(rCode=dns.ENAME)
        message.authority = list(authority)
        self.pending.pop((name, kind)).errback(dns_error.DNSNameError(message))

    def time_out(self, name: str, kind: str) -> None:
        from twisted.internet.defer import TimeoutError

        self.pending.pop((name, kind)).errback(TimeoutError(name))


SRV_TCP = "_sip._tcp.example.com"


class ResolverTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.client = ScriptedClient()
        self.hosts = os.path.join(tempfile.mkdtemp(), "hosts")
        with open(self.hosts, "w") as f:
            f.write("127.0.0.1 localhost  # loopback\n::1 localhost ip6-localhost\n192.0.2.50 pbx.lan pbx\n")
        self.resolver = DNSResolver(self.clock, hosts_file=self.hosts, client=self.client, max_pending=4)

    def resolve(self, host: str, proto=None, port=None, key=None) -> Any:
        return self.resolver.resolve_hop(host, proto, port, ["udp", "tcp"], (4,), key)

    def result_of(self, d: Deferred) -> Any:
        self.assertIsInstance(d, Deferred)
        return self.successResultOf(d)


class HostsTests(ResolverTestCase):
    def test_hosts_names_are_answered_at_once(self) -> None:
        self.assertEqual(self.resolve("localhost", port=5080), [Destination("udp", "127.0.0.1", 5080)])
        self.assertEqual(self.resolver.resolve_hop("LocalHost.", "tcp", None, ["tcp"], (4, 6)),
                         [Destination("tcp", "127.0.0.1", 5060), Destination("tcp", "::1", 5060)])
        self.assertEqual(self.resolve("pbx"), [Destination("udp", "192.0.2.50", 5060)])
        self.assertEqual(self.client.asked, [])

    def test_hosts_file_read_again_when_changed(self) -> None:
        hosts = HostsFile(self.hosts, self.clock.seconds)
        self.assertEqual(hosts.addresses("pbx.lan"), ["192.0.2.50"])
        with open(self.hosts, "w") as f:
            f.write("192.0.2.51 pbx.lan\n")
        os.utime(self.hosts, (1, 1))
        self.assertEqual(hosts.addresses("pbx.lan"), ["192.0.2.50"])  # not looked at again yet
        self.clock.advance(5)
        self.assertEqual(hosts.addresses("pbx.lan"), ["192.0.2.51"])

    def test_missing_hosts_file_is_no_names(self) -> None:
        self.assertIsNone(HostsFile("/nonexistent/hosts").addresses("localhost"))


class CacheTests(ResolverTestCase):
    def full_answer(self) -> None:
        c = self.client
        c.answer("example.com", "NAPTR", [rr("example.com", dns.Record_NAPTR(10, 10, b"s", b"SIP+D2T", b"",
                                                                             SRV_TCP), 300)])
        c.answer(SRV_TCP, "SRV", [rr(SRV_TCP, dns.Record_SRV(10, 1, 5070, "pbx1.example.com"), 120)])
        c.answer("pbx1.example.com", "A", [rr("pbx1.example.com", dns.Record_A("192.0.2.1"), 60)])

    def test_naptr_srv_a_then_cached_until_the_ttl(self) -> None:
        d = self.resolve("example.com")
        self.assertNoResult(d)
        self.full_answer()
        self.assertEqual(self.result_of(d), [Destination("tcp", "192.0.2.1", 5070)])
        asked = len(self.client.asked)
        self.assertEqual(self.resolve("example.com"), [Destination("tcp", "192.0.2.1", 5070)])  # at once
        self.assertEqual(len(self.client.asked), asked)
        self.clock.advance(61)  # the A record's TTL has passed, not the others'
        d = self.resolve("example.com")
        self.assertEqual(self.client.asked[asked:], [("pbx1.example.com", "A")])
        self.client.answer("pbx1.example.com", "A", [rr("pbx1.example.com", dns.Record_A("192.0.2.2"), 60)])
        self.assertEqual(self.result_of(d), [Destination("tcp", "192.0.2.2", 5070)])

    def test_zero_ttl_is_not_kept(self) -> None:
        d = self.resolve("example.com", port=5060)
        self.client.answer("example.com", "A", [rr("example.com", dns.Record_A("192.0.2.1"), 0)])
        self.result_of(d)
        self.assertIsInstance(self.resolve("example.com", port=5060), Deferred)

    def test_nxdomain_kept_for_the_soa_minimum(self) -> None:
        soa = rr("example.com", dns.Record_SOA(minimum=20), 900)
        d = self.resolve("nowhere.example.com", port=5060)
        self.client.nxdomain("nowhere.example.com", "A", [soa])
        self.assertEqual(self.result_of(d), [])
        self.assertEqual(self.resolve("nowhere.example.com", port=5060), [])  # remembered, at once
        self.clock.advance(21)
        self.assertIsInstance(self.resolve("nowhere.example.com", port=5060), Deferred)

    def test_no_records_without_soa_kept_for_the_default(self) -> None:
        d = self.resolve("empty.example.com", port=5060)
        self.client.answer("empty.example.com", "A", [])
        self.assertEqual(self.result_of(d), [])
        self.clock.advance(self.resolver.negative_ttl - 1)
        self.assertEqual(self.resolve("empty.example.com", port=5060), [])

    def test_failure_is_a_temporary_error_remembered_briefly(self) -> None:
        d = self.resolve("dead.example.com", port=5060)
        self.client.time_out("dead.example.com", "A")
        self.failureResultOf(d, ResolutionFailed)
        self.assertRaises(ResolutionFailed, self.resolve, "dead.example.com", port=5060)  # no new query
        self.assertEqual(self.client.asked, [("dead.example.com", "A")])
        self.clock.advance(self.resolver.failure_ttl)
        self.assertIsInstance(self.resolve("dead.example.com", port=5060), Deferred)

    def test_cache_is_bounded(self) -> None:
        resolver = DNSResolver(self.clock, hosts_file=None, client=self.client, max_entries=10)
        for i in range(50):
            d = resolver.resolve_hop(f"h{i}.example.com", "udp", 5060, ["udp"], (4,))
            self.client.answer(f"h{i}.example.com", "A", [rr(f"h{i}.example.com", dns.Record_A("192.0.2.1"), 600)])
            self.result_of(d)
            self.assertLessEqual(len(resolver.cache), 10)


class InFlightTests(ResolverTestCase):
    def test_same_question_shares_one_query(self) -> None:
        first = self.resolve("example.com", port=5060)
        second = self.resolve("example.com", port=5060)
        self.assertEqual(self.client.asked, [("example.com", "A")])
        self.client.answer("example.com", "A", [rr("example.com", dns.Record_A("192.0.2.1"), 0)])
        self.assertEqual(self.result_of(first), self.result_of(second))

    def test_queries_in_flight_are_bounded_and_the_rest_fail_at_once(self) -> None:
        waiting = [self.resolve(f"h{i}.example.com", port=5060) for i in range(4)]
        over = self.resolve("h4.example.com", port=5060)
        self.failureResultOf(over, ResolutionFailed)
        self.assertEqual(len(self.client.asked), 4)
        self.assertEqual(self.resolver.refused_busy, 1)
        # a hosts name, a cached name: still at once
        self.assertEqual(self.resolve("localhost", port=5060), [Destination("udp", "127.0.0.1", 5060)])
        for d in waiting:
            self.assertNoResult(d)
        for i in range(4):
            self.client.time_out(f"h{i}.example.com", "A")
        for d in waiting:
            self.failureResultOf(d, ResolutionFailed)
        self.assertIsInstance(self.resolve("h5.example.com", port=5060), Deferred)  # room again

    def test_a_client_that_raises_is_a_failure_not_a_traceback(self) -> None:
        class Raising(ScriptedClient):
            def lookupAddress(self, name: str, timeout: Any = None) -> Deferred:
                raise ValueError("label too long")

        resolver = DNSResolver(self.clock, hosts_file=None, client=Raising())
        self.failureResultOf(resolver.resolve_hop("x.example", "udp", 5060, ["udp"], (4,)), ResolutionFailed)
        self.assertEqual(resolver._pending, {})


class KeyTests(ResolverTestCase):
    def test_same_call_id_same_choice(self) -> None:
        srv = [rr(SRV_TCP, dns.Record_SRV(10, w, 5060 + w, f"h{w}.example.com"), 600) for w in (1, 1, 1, 1)]
        srv = [rr(SRV_TCP, dns.Record_SRV(10, 1, 5060 + i, f"h{i}.example.com"), 600) for i in range(4)]
        d = self.resolve("example.com", "tcp", key="call-1")
        self.client.answer(SRV_TCP, "SRV", srv)
        for i in range(4):
            self.client.answer(f"h{i}.example.com", "A", [rr(f"h{i}.example.com", dns.Record_A(f"192.0.2.{i}"), 600)])
        first = self.result_of(d)
        self.assertEqual(len(first), 4)
        for _ in range(5):
            self.assertEqual(self.resolve("example.com", "tcp", key="call-1"), first)
        others = {tuple(self.resolve("example.com", "tcp", key=f"call-{i}")) for i in range(40)}
        self.assertGreater(len(others), 1)


class ServerOptionTests(SynchronousTestCase):
    def test_server_forms(self) -> None:
        self.assertEqual(parse_server("192.0.2.53"), ("192.0.2.53", 53))
        self.assertEqual(parse_server("127.0.0.1:5353"), ("127.0.0.1", 5353))
        self.assertEqual(parse_server("[::1]:5353"), ("::1", 5353))
        self.assertEqual(parse_server("::1"), ("::1", 53))

    def test_bad_servers_name_the_problem(self) -> None:
        for text, words in [("dns.example:53", "not an IP address"), ("127.0.0.1:0", "not 1-65535"),
                            ("127.0.0.1:x", "not 1-65535"), ("[::1", "want HOST:PORT"), ("", "not an IP"),
                            ("127.0.0.1:99999", "not 1-65535"), ("\x00\xff", "not an IP")]:
            with self.assertRaises(ValueError) as caught:
                parse_server(text)
            self.assertIn(words, str(caught.exception))

    def test_resolv_conf(self) -> None:
        path = os.path.join(tempfile.mkdtemp(), "resolv.conf")
        with open(path, "w") as f:
            f.write("search example.com\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\nnameserver junk\n")
        self.assertEqual(servers_of_resolv_conf(path), [("192.0.2.53", 53), ("fe80::1", 53)])
        self.assertEqual(servers_of_resolv_conf("/nonexistent"), [("127.0.0.1", 53)])


class DispatcherTests(ResolverTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.udp = MemoryLeg("192.0.2.10", 5060, "udp")
        self.tcp = MemoryLeg("192.0.2.10", 5060, "tcp")
        self.dispatcher = Dispatcher(self.clock, legs=[self.udp, self.tcp], resolver=self.resolver)

    def test_blocked_destinations_go_last(self) -> None:
        self.dispatcher.blocklist.add("tcp", "192.0.2.1", 5070)
        d = self.dispatcher.targets_for_hop(Hop("tcp", "example.com", None))
        self.client.answer(SRV_TCP, "SRV", [rr(SRV_TCP, dns.Record_SRV(10, 1, 5070, "pbx1.example.com"), 60),
                                            rr(SRV_TCP, dns.Record_SRV(20, 1, 5071, "pbx2.example.com"), 60)])
        self.client.answer("pbx1.example.com", "A", [rr("pbx1.example.com", dns.Record_A("192.0.2.1"), 60)])
        self.client.answer("pbx2.example.com", "A", [rr("pbx2.example.com", dns.Record_A("192.0.2.2"), 60)])
        self.assertEqual(self.successResultOf(d), [(self.tcp, ("192.0.2.2", 5071)), (self.tcp, ("192.0.2.1", 5070))])
        self.clock.advance(60)  # the blocklist forgets
        d = self.dispatcher.targets_for_hop(Hop("tcp", "example.com", 5070))
        self.client.answer("example.com", "A", [rr("example.com", dns.Record_A("192.0.2.1"), 60)])
        self.assertEqual(self.successResultOf(d), [(self.tcp, ("192.0.2.1", 5070))])

    def test_failed_send_blocklists_the_destination(self) -> None:
        from sipproxy.sip.message import parse

        message = parse(b"OPTIONS sip:x@192.0.2.9 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.8;branch=z9hG4bK1\r\n"
                        b"From: <sip:a@b>;tag=1\r\nTo: <sip:x@192.0.2.9>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n"
                        b"Content-Length: 0\r\n\r\n")
        reasons: list[str] = []
        self.tcp.send = lambda data, addr, on_error=None: on_error("connection refused")  # type: ignore
        self.dispatcher.send(message, self.tcp, ("192.0.2.9", 5060), reasons.append)
        self.assertEqual(reasons, ["connection refused"])
        self.assertIn(("tcp", "192.0.2.9", 5060), self.dispatcher.blocklist)

    def test_dns_failure_is_503_nxdomain_404(self) -> None:
        d = self.dispatcher.targets_for_hop(Hop("udp", "dead.example.com", 5060))
        self.client.time_out("dead.example.com", "A")
        self.assertEqual(self.failureResultOf(d, RoutingError).value.code, 503)
        d = self.dispatcher.targets_for_hop(Hop("udp", "dead.example.com", 5060))  # remembered: at once
        self.assertEqual(self.failureResultOf(d, RoutingError).value.code, 503)
        d = self.dispatcher.targets_for_hop(Hop("udp", "nowhere.example.com", 5060))
        self.client.nxdomain("nowhere.example.com", "A")
        self.assertEqual(self.failureResultOf(d, RoutingError).value.code, 404)

    def test_blocklist_is_bounded_and_expires(self) -> None:
        blocklist = DestinationBlocklist(self.clock, expire=10, max_entries=5)
        for i in range(20):
            blocklist.add("udp", f"192.0.2.{i}", 5060)
            self.assertLessEqual(len(blocklist), 5)
        self.assertIn(("udp", "192.0.2.19", 5060), blocklist)
        self.clock.advance(10)
        self.assertNotIn(("udp", "192.0.2.19", 5060), blocklist)


del fail, Failure  # imported for readers of the scripted client's contract


class ReadmeExampleTests(SynchronousTestCase):
    """The README's DNS command line means what the README says."""

    def test_readme_dns_command_line(self) -> None:
        import shlex

        from sipproxy.app.dns_options import make_resolver
        from sipproxy.app.tap import Options

        with open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.rst")) as f:
            readme = f.read()
        section = readme[readme.index("\nDNS\n---\n"):]
        block = section[section.index("or those given::") + len("or those given::"):].split("\n\n")[1]
        argv = shlex.split(block.replace("\\\n", " "))
        self.assertEqual(argv[:3], ["twistd", "-n", "sipproxy"])
        options = Options()
        options.parseOptions(argv[3:])
        self.assertEqual(options["dns_servers"], [("192.0.2.53", 53), ("2001:db8::53", 53)])
        self.assertEqual(options["dns-timeout"], 1.5)
        self.assertEqual(options["dns-blocklist-expire"], 30)
        resolver = make_resolver(Clock(), options)
        self.assertEqual((resolver.servers, resolver.timeout, resolver.max_pending),
                         ([("192.0.2.53", 53), ("2001:db8::53", 53)], 1.5, 64))


class BusyLogTests(ResolverTestCase):
    def test_refusals_log_one_line_per_interval(self) -> None:
        from twisted.logger import globalLogPublisher

        seen: list[dict] = []
        globalLogPublisher.addObserver(seen.append)
        self.addCleanup(globalLogPublisher.removeObserver, seen.append)
        waiting = [self.resolve(f"h{i}.example.com", port=5060) for i in range(4)]
        for i in range(100):
            self.failureResultOf(self.resolve(f"x{i}.example.com", port=5060), ResolutionFailed)
        lines = [e for e in seen if "queries in flight" in e.get("log_format", "")]
        self.assertEqual(len(lines), 1)
        self.assertEqual((lines[0]["count"], lines[0]["refused"]), (4, 1))
        self.clock.advance(10)
        self.failureResultOf(self.resolve("y.example.com", port=5060), ResolutionFailed)
        lines = [e for e in seen if "queries in flight" in e.get("log_format", "")]
        self.assertEqual([e["refused"] for e in lines], [1, 101])
        for i in range(4):
            self.client.time_out(f"h{i}.example.com", "A")
            self.failureResultOf(waiting[i], ResolutionFailed)
