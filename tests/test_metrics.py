"""Metrics without sockets: the counters the modules keep, the collector
that reads them, the workers' snapshots and the timed location store.

The endpoint itself, with real traffic from sipp, is tested in
L{tests.test_metrics_loopback}.
"""
from __future__ import annotations

import os
from typing import Any

from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sipproxy.app.metrics import (METRIC_NAMES, LocationCounts, SipproxyCollector, SnapshotWriter, Sources,
                                  WorkerSnapshots, WorkersCollector, metrics_address, parse_snapshot, snapshot_line)
from sipproxy.observe.counters import method_label
from sipproxy.proxy.stateless import StatelessProxy
from sipproxy.registrar.location import Binding, OutOfOrder, StoreUnavailable
from sipproxy.registrar.memory_store import MemoryStore
from sipproxy.stores.timing import TimedStore
from sipproxy.testing import MemoryLeg, memory_dispatcher
from tests.nat_util import rtp
from tests.test_nat_relay import CALLEE, CALLER, LEG_A, LEG_B, RelayTestCase, key

UAC = ("127.0.0.1", 5091)
UAS = ("127.0.0.2", 5090)


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, parsed back from the text format, keyed
    by (sample name, sorted labels)."""
    text = generate_latest(registry).decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def request(method: str, uri: str, branch: str, extra: str = "") -> bytes:
    return (f"{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5091;branch=z9hG4bK{branch}\r\n"
            f"From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:b@127.0.0.2>\r\nCall-ID: {branch}@x\r\n"
            f"CSeq: 1 {method}\r\nMax-Forwards: 70\r\n{extra}Content-Length: 0\r\n\r\n").encode()


class CollectorTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.leg = MemoryLeg("127.0.0.1", 5060)
        self.dispatcher = memory_dispatcher([self.leg], local_address=lambda ip: None)
        self.proxy = StatelessProxy(self.dispatcher, secret=b"s" * 32)
        self.dispatcher.set_receiver(self.proxy)
        self.registry = CollectorRegistry()
        self.registry.register(SipproxyCollector(Sources(dispatcher=self.dispatcher, proxy=self.proxy)))

    def test_counts_what_passed(self) -> None:
        """Forwarded, answered, dropped and malformed messages each land in
        their own series, with the values sent."""
        for n in range(3):
            self.leg.receive(request("INVITE", "sip:b@127.0.0.2:5090", f"inv{n}"), UAC)
        forwarded = [m for m, _ in self.leg.take()]
        self.assertEqual(len(forwarded), 3)
        for invite in forwarded:  # the UAS answers 180 through the proxy
            self.leg.receive(bytes(invite.create_response(180, to_tag="t")), UAS)
        self.leg.receive(request("OPTIONS", "sip:127.0.0.1:5060", "opt"), UAC)  # for the proxy: 200
        self.leg.receive(request("FOOBAR", "sip:127.0.0.1:5060", "foo"), UAC)  # other method: 404
        # a response whose Via is not the proxy's: dropped
        self.leg.receive(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.0.0.9;branch=z9hG4bKx\r\nFrom: <sip:a@x>;tag=1\r\n"
                         b"To: <sip:b@x>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n", UAS)
        self.leg.receive(b"\x00\x01 not sip at all", UAC)  # malformed, dropped
        self.leg.receive(request("OPTIONS", "sip:127.0.0.1:5060", "bad", "CSeq: x OPTIONS\r\n"), UAC)  # 400
        got = samples(self.registry)
        self.assertEqual(got[("sipproxy_requests_received_total", (("method", "INVITE"),))], 3)
        self.assertEqual(got[("sipproxy_requests_received_total", (("method", "OPTIONS"),))], 1)
        self.assertEqual(got[("sipproxy_requests_received_total", (("method", "other"),))], 1)
        self.assertEqual(got[("sipproxy_requests_forwarded_total", (("method", "INVITE"),))], 3)
        self.assertEqual(got[("sipproxy_responses_received_total", (("status_class", "1xx"),))], 3)
        self.assertEqual(got[("sipproxy_responses_received_total", (("status_class", "2xx"),))], 1)
        self.assertEqual(got[("sipproxy_responses_forwarded_total", (("status_class", "1xx"),))], 3)
        self.assertNotIn(("sipproxy_responses_forwarded_total", (("status_class", "2xx"),)), got)
        self.assertEqual(got[("sipproxy_requests_answered_total", (("code", "200"), ("method", "OPTIONS")))], 1)
        self.assertEqual(got[("sipproxy_requests_answered_total", (("code", "404"), ("method", "other")))], 1)
        self.assertEqual(got[("sipproxy_requests_answered_total", (("code", "400"), ("method", "OPTIONS")))], 1)
        self.assertEqual(got[("sipproxy_messages_dropped_total", (("kind", "response"), ("reason", "via_not_ours")))],
                         1)
        self.assertEqual(got[("sipproxy_messages_dropped_total", (("kind", "message"), ("reason", "malformed")))], 1)
        self.assertEqual(got[("sipproxy_parse_errors_total", (("action", "answered"),))], 1)
        self.assertEqual(got[("sipproxy_parse_errors_total", (("action", "dropped"),))], 1)

    def test_invented_methods_share_one_series(self) -> None:
        """A peer inventing methods cannot grow the number of series."""
        for n in range(50):
            self.leg.receive(request(f"X{n}Y", "sip:127.0.0.1:5060", f"m{n}"), UAC)
        got = samples(self.registry)
        received = {k: v for k, v in got.items() if k[0] == "sipproxy_requests_received_total"}
        self.assertEqual(received, {("sipproxy_requests_received_total", (("method", "other"),)): 50})
        self.assertEqual(method_label("X1Y"), "other")
        self.assertEqual(method_label("INVITE"), "INVITE")

    def test_names_follow_the_conventions(self) -> None:
        """Counters end in _total, durations are in seconds; every family
        the collector yields is listed in METRIC_NAMES (which README lists)."""
        families = list(self.registry.collect())
        self.assertTrue(families)
        for family in families:
            self.assertIn(family.name, METRIC_NAMES)
            self.assertTrue(family.name.startswith("sipproxy_"), family.name)
            if family.type == "counter":
                self.assertTrue(all(s.name.endswith("_total") for s in family.samples), family.name)
        self.assertTrue(all(n.endswith("_seconds") for n in METRIC_NAMES if "duration" in n))


class AddressTests(SynchronousTestCase):
    def test_good(self) -> None:
        self.assertEqual(metrics_address("127.0.0.1:9090"), ("127.0.0.1", 9090))
        self.assertEqual(metrics_address("[::1]:9090"), ("::1", 9090))
        self.assertEqual(metrics_address("0.0.0.0:0"), ("0.0.0.0", 0))

    def test_bad_names_the_option(self) -> None:
        for value in ("9090", "127.0.0.1", "127.0.0.1:http", "127.0.0.1:70000", "::1:9090", "localhost:9090",
                      ":9090", "[::1]9090"):
            with self.assertRaises(ValueError) as caught:
                metrics_address(value)
            self.assertIn("--metrics", str(caught.exception), value)


class WorkerSnapshotTests(SynchronousTestCase):
    def _registry(self, invites: int) -> CollectorRegistry:
        leg = MemoryLeg("127.0.0.1", 5060)
        dispatcher = memory_dispatcher([leg], local_address=lambda ip: None)
        proxy = StatelessProxy(dispatcher, secret=b"s" * 32)
        dispatcher.set_receiver(proxy)
        for n in range(invites):
            leg.receive(request("INVITE", "sip:b@127.0.0.2:5090", f"w{n}"), UAC)
        registry = CollectorRegistry()
        registry.register(SipproxyCollector(Sources(dispatcher=dispatcher, proxy=proxy)))
        return registry

    def test_round_trip(self) -> None:
        line = snapshot_line(self._registry(2))
        self.assertTrue(line.endswith(b"\n"))
        families = parse_snapshot(line, {"worker": "3"})
        invites = [s for f in families for s in f.samples
                   if s.name == "sipproxy_requests_received_total" and s.labels.get("method") == "INVITE"]
        self.assertEqual([(s.labels, s.value) for s in invites], [({"method": "INVITE", "worker": "3"}, 2.0)])
        for bad in (b"not json", b"{}", b"[[1]]", b'[["a","counter","d","",[["a_total",[],1]]]]'):
            with self.assertRaises(ValueError):
                parse_snapshot(bad, {})

    def test_one_family_per_name_with_a_worker_label(self) -> None:
        """The parent's scrape: its own counts as worker 0, each worker's
        latest snapshot under its index, each name once."""
        snapshots = WorkerSnapshots()
        line = snapshot_line(self._registry(5))
        snapshots.received(1, line[:10])  # a snapshot arrives in pieces
        snapshots.received(1, line[10:] + snapshot_line(self._registry(7))[:20])
        snapshots.received(2, b"garbage\n")  # logged, skipped
        registry = CollectorRegistry()
        registry.register(WorkersCollector(self._registry(1), snapshots))
        text = generate_latest(registry).decode()
        self.assertEqual(text.count("# TYPE sipproxy_requests_received_total counter"), 1)
        got = samples(registry)
        self.assertEqual(got[("sipproxy_requests_received_total", (("method", "INVITE"), ("worker", "0")))], 1)
        self.assertEqual(got[("sipproxy_requests_received_total", (("method", "INVITE"), ("worker", "1")))], 5)
        snapshots.ended(1)
        got = samples(registry)
        self.assertNotIn(("sipproxy_requests_received_total", (("method", "INVITE"), ("worker", "1"))), got)

    def test_writer_never_blocks(self) -> None:
        """A parent that stops reading leaves the worker running: the line
        waits in the writer, and no partial line ever reaches the pipe."""
        read_fd, write_fd = os.pipe()
        self.addCleanup(os.close, read_fd)
        self.addCleanup(os.close, write_fd)
        clock = Clock()
        registry = self._registry(4)
        writer = SnapshotWriter(registry, write_fd, clock, interval=1.0)
        writer.startService()
        self.addCleanup(lambda: writer.running and writer.stopService())
        first = os.read(read_fd, 1 << 20)
        self.assertEqual(first, snapshot_line(registry))
        for _ in range(200):  # far more than a pipe holds, nobody reading
            clock.advance(1.0)
        os.set_blocking(read_fd, False)
        data = b""
        while True:
            try:
                chunk = os.read(read_fd, 1 << 20)
            except BlockingIOError:
                break
            data += chunk
        *lines, rest = data.split(b"\n")
        self.assertGreater(len(lines), 1)
        for line in lines:
            parse_snapshot(line, {})
        clock.advance(1.0)  # the rest of the waiting line comes next
        tail = os.read(read_fd, 1 << 20)
        parse_snapshot(rest + tail.split(b"\n")[0], {})


class _FailingStore:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def lookup(self, aor: str) -> Any:
        return fail(self.error)

    def update(self, *args: Any, **kwargs: Any) -> Any:
        return fail(self.error)

    def has_contact(self, key: str) -> Any:
        return succeed(False)

    def close(self) -> Any:
        return succeed(None)


class TimedStoreTests(SynchronousTestCase):
    def test_latency_buckets(self) -> None:
        ticks = iter([0.0, 0.0003, 1.0, 1.02])
        store = TimedStore(MemoryStore(Clock()), timer=lambda: next(ticks))
        binding = Binding(contact="sip:a@10.0.0.1", params="", expires=60, call_id="c", cseq=1, registered=0.0)
        results: list = []
        store.update("sip:a@x", "c", 1, [(binding.key, binding, 60)]).addCallback(results.append)
        store.lookup("sip:a@x").addCallback(results.append)
        self.assertEqual(len(results[1]), 1)
        update, lookup = store.timings["update"], store.timings["lookup"]
        self.assertEqual((update.buckets[0], sum(update.buckets)), (1, 1))  # 0.3 ms
        self.assertEqual((lookup.buckets[5], sum(lookup.buckets)), (1, 1))  # 20 ms: the 25 ms bucket
        self.assertAlmostEqual(update.sum + lookup.sum, 0.0203)

    def test_errors_by_kind(self) -> None:
        for error, field in ((StoreUnavailable("down", 5), "unavailable"), (RuntimeError("bug"), "failed")):
            store = TimedStore(_FailingStore(error))
            failures: list = []
            store.lookup("sip:a@x").addErrback(failures.append)
            self.assertEqual(len(failures), 1)  # passed on to the registrar, which answers 503 or 500
            self.assertEqual(getattr(store.timings["lookup"], field), 1)
        store = TimedStore(_FailingStore(OutOfOrder("c", 2, 1)))
        store.update("sip:a@x", "c", 1, []).addErrback(lambda f: None)
        self.assertEqual((store.timings["update"].failed, store.timings["update"].unavailable), (0, 0))


class ReadmeTests(SynchronousTestCase):
    def setUp(self) -> None:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        with open(os.path.join(root, "README.rst"), encoding="utf-8") as f:
            text = f.read()
        start = text.index("Metrics\n-------\n")
        self.section = text[start:text.index("\n---", start + 20)]

    def test_every_metric_is_listed(self) -> None:
        """The README's table names each family the collector can yield (as
        the text format spells it), and nothing else."""
        import re

        from prometheus_client.core import CounterMetricFamily

        listed = set(re.findall(r"``(sipproxy_[a-z_]+)``", self.section))
        counters = {n for n in METRIC_NAMES if n not in ("sipproxy_location_bindings", "sipproxy_location_aors",
                                                         "sipproxy_relay_sessions",
                                                         "sipproxy_relay_sockets", "sipproxy_tcp_connections",
                                                         "sipproxy_store_operation_duration_seconds")}
        spelled = {n + "_total" if n in counters else n for n in METRIC_NAMES}
        self.assertEqual(listed, spelled)
        self.assertEqual(CounterMetricFamily("sipproxy_x_total", "").name, "sipproxy_x")  # what _total means

    def test_example_options_parse(self) -> None:
        from sipproxy.app.tap import Options

        line = next(line.strip() for line in self.section.splitlines() if line.strip().startswith("twistd"))
        args = line.split()[line.split().index("sipproxy") + 1:]
        options = Options()
        options.parseOptions(args)
        self.assertEqual(options["metrics"], ("127.0.0.1", 9090))


class ReloadTests(SynchronousTestCase):
    def test_counts_survive_a_new_authorizer(self) -> None:
        """A reload builds new authorizers (their counters start at 0): the
        scrape carries the old one's counts over, so no series goes down."""
        from sipproxy.access.digest_auth import Authorize

        leg = MemoryLeg("127.0.0.1", 5060)
        dispatcher = memory_dispatcher([leg], local_address=lambda ip: None)
        parts: dict[str, Any] = {"proxy_auth": Authorize(dispatcher, {"alice": "pw"}, i_am_proxy=True)}
        registry = CollectorRegistry()
        registry.register(SipproxyCollector(Sources(dispatcher=dispatcher, door_parts=lambda: parts)))

        def challenge(n: int) -> None:
            for i in range(n):
                parts["proxy_auth"].receive(dispatcher_parse(request("INVITE", "sip:b@127.0.0.2", f"r{n}{i}")),
                                            leg, UAC)

        def challenges() -> float:
            return samples(registry)[("sipproxy_auth_challenges_total", (("code", "407"),))]

        challenge(2)
        self.assertEqual(challenges(), 2)
        parts["proxy_auth"] = Authorize(dispatcher, {"alice": "new"}, i_am_proxy=True)  # the reload
        challenge(3)
        self.assertEqual(challenges(), 5)
        self.assertEqual(challenges(), 5)  # carried once, not at every scrape
        parts["proxy_auth"] = Authorize(dispatcher, {"alice": "newer"}, i_am_proxy=True)
        self.assertEqual(challenges(), 5)


def dispatcher_parse(data: bytes) -> Any:
    from sipproxy.sip.message import parse

    return parse(data)


class RelayMetricsTests(RelayTestCase):
    def scrape(self) -> dict:
        registry = CollectorRegistry()
        registry.register(SipproxyCollector(Sources(relay_tables=[self.relay.table])))
        return {name: value for (name, labels), value in samples(registry).items()
                if not labels} | {f"{name}{{{dict(labels)['reason']}}}": value
                                  for (name, labels), value in samples(registry).items() if labels}

    def test_sessions_sockets_packets_and_foreign_drops(self) -> None:
        """The relay's counts while a call runs, and after its ports are
        released (the totals keep what the released ports relayed)."""
        to_callee, to_caller = self.call()
        for seq in range(3):
            self.reactor.deliver(LEG_A, to_caller.port, rtp(seq), (CALLER, 49170))
        self.reactor.deliver(LEG_B, to_callee.port, rtp(9, b"x" * 20), (CALLEE, 6000))
        self.reactor.deliver(LEG_A, to_caller.port, rtp(5), ("203.0.113.66", 999))  # not the latched source
        during = self.scrape()
        relayed_bytes = 3 * len(rtp(0)) + len(rtp(9, b"x" * 20))
        self.assertEqual(
            {k: during[k] for k in ("sipproxy_relay_sessions_started_total", "sipproxy_relay_sessions",
                                    "sipproxy_relay_sockets", "sipproxy_relay_sockets_opened_total",
                                    "sipproxy_relay_packets_total", "sipproxy_relay_bytes_total",
                                    "sipproxy_relay_packets_dropped_total{foreign_source}")},
            {"sipproxy_relay_sessions_started_total": 1, "sipproxy_relay_sessions": 1, "sipproxy_relay_sockets": 4,
             "sipproxy_relay_sockets_opened_total": 4, "sipproxy_relay_packets_total": 4,
             "sipproxy_relay_bytes_total": relayed_bytes, "sipproxy_relay_packets_dropped_total{foreign_source}": 1})
        self.relay.close_session(key(cseq=None), reason="bye")
        self.relay.expire(self.reactor.seconds() + 2.0)
        after = self.scrape()
        self.assertEqual((after["sipproxy_relay_sessions"], after["sipproxy_relay_sockets"]), (0, 0))
        self.assertEqual((after["sipproxy_relay_packets_total"], after["sipproxy_relay_bytes_total"],
                          after["sipproxy_relay_packets_dropped_total{foreign_source}"]), (4, relayed_bytes, 1))


class TCPMetricsTests(SynchronousTestCase):
    def test_connections_open_opened_and_refused(self) -> None:
        from sipproxy.transport.stream_guard import ConnectionGuard, StreamLimits

        guard = ConnectionGuard(StreamLimits(max_connections=10, max_per_ip=1), Clock(), budget=100)
        guard.opened("192.0.2.1", True)
        guard.opened("192.0.2.9", False)
        self.assertIsNotNone(guard.refusal("192.0.2.1"))  # a second from the same IP
        guard.closed("192.0.2.9", False)
        registry = CollectorRegistry()
        registry.register(SipproxyCollector(Sources(guard=guard)))
        got = samples(registry)
        self.assertEqual(got[("sipproxy_tcp_connections", ())], 1)
        self.assertEqual(got[("sipproxy_tcp_connections_opened_total", (("direction", "inbound"),))], 1)
        self.assertEqual(got[("sipproxy_tcp_connections_opened_total", (("direction", "outbound"),))], 1)
        self.assertEqual(got[("sipproxy_tcp_connections_refused_total", ())], 1)


class _SlowListing:
    """A location store whose count answers when the test says."""

    def __init__(self) -> None:
        self.asked: list[Deferred] = []

    def count(self) -> Deferred:
        self.asked.append(Deferred())
        return self.asked[-1]

    def dump(self, limit: int) -> Deferred:
        return succeed([])


class LocationCountTests(SynchronousTestCase):
    def test_memory_store_counts_at_once(self) -> None:
        store = MemoryStore(Clock())
        binding = Binding(contact="sip:a@10.0.0.1", params="", expires=60, call_id="c", cseq=1, registered=0.0)
        other = Binding(contact="sip:a@10.0.0.2", params="", expires=60, call_id="c", cseq=1, registered=0.0)
        store.update("sip:a@x", "c", 1, [(binding.key, binding, 60), (other.key, other, 60)])
        counts = LocationCounts(TimedStore(store), Clock())  # through the metrics' wrapper
        got: list = []
        counts.refresh().addCallback(got.append)
        self.assertEqual(got, [(1, 2)])
        registry = CollectorRegistry()
        registry.register(SipproxyCollector(Sources(location=counts)))
        scraped = samples(registry)
        self.assertEqual((scraped[("sipproxy_location_aors", ())], scraped[("sipproxy_location_bindings", ())]),
                         (1, 2))

    def test_one_query_at_a_time_and_a_timeout(self) -> None:
        from zope.interface import directlyProvides

        from sipproxy.interfaces import ILocationListing

        store, clock = _SlowListing(), Clock()
        directlyProvides(store, ILocationListing)
        counts = LocationCounts(store, clock, timeout=2.0)
        first, second = [], []
        counts.refresh().addCallback(first.append)
        counts.refresh().addCallback(second.append)
        self.assertEqual(len(store.asked), 1)  # the second scrape waits for the same query
        store.asked[0].callback((3, 5))
        self.assertEqual((first, second), ([(3, 5)], [(3, 5)]))
        late: list = []
        counts.refresh().addCallback(late.append)
        clock.advance(2.0)  # the store does not answer: the last counts stand
        self.assertEqual(late, [(3, 5)])
        self.assertEqual(len(self.flushLoggedErrors()), 0)
