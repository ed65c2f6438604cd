"""Prometheus metrics: C{twistd sipproxy --metrics HOST:PORT}.

The SIP modules keep plain integer counters on their own objects (see
L{sipproxy.observe.counters}); nothing here runs per packet. When Prometheus
scrapes C{http://HOST:PORT/metrics}, L{SipproxyCollector} reads those
counters and yields metric families, served by prometheus-client's own
Twisted resource (C{prometheus_client.twisted.MetricsResource}).

That resource renders in the reactor's thread pool, while the counters
belong to the reactor thread: the collector reads them in the reactor
thread (C{blockingCallFromThread}) so a dictionary never changes under it.

With C{--workers N} one scrape shows every process: each extra worker
writes a snapshot of its metrics, one JSON line, to a pipe its parent
opened for it (file descriptor 3, see L{sipproxy.app.workers}) every
L{SNAPSHOT_INTERVAL} seconds; the first process serves its own metrics
and the latest snapshot of each worker, every sample labelled with
C{worker}. Not prometheus-client's multiprocess mode: that keeps every
value in a memory-mapped file written on each increment (a lock and an
mmap store per packet on the proxy's hot path), and it does not aggregate
custom collectors, which is how these counters are read.
"""
from __future__ import annotations

import errno
import json
import os
import socket
import stat
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Optional

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry
from twisted.application.service import IServiceCollection, MultiService, Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from sipproxy.observe.counters import METHODS, OTHER, STATUS_CLASSES
from sipproxy.observe.logsafe import SafeLogger

__all__ = ["METRICS_PARAMETERS", "metrics_address", "Sources", "SipproxyCollector", "WorkersCollector",
           "WorkerSnapshots", "SnapshotWriter", "MetricsService", "add_metrics", "metrics_bind_problem",
           "snapshot_line", "parse_snapshot", "METRIC_NAMES", "SNAPSHOT_FD_ENV"]

if TYPE_CHECKING:
    from sipproxy.access.digest_auth import Authorize
    from sipproxy.access.filters import Dropper
    from sipproxy.access.front_chain import FrontDoor
    from sipproxy.app.workers import WorkerPool
    from sipproxy.nat.ng import NgClient, NgServer
    from sipproxy.nat.table import RelayTable
    from sipproxy.proxy.stateless import StatelessProxy
    from sipproxy.stores.timing import TimedStore
    from sipproxy.transport.dispatcher import Dispatcher
    from sipproxy.transport.stream_guard import ConnectionGuard

log = SafeLogger()

#: Seconds between two snapshots a worker sends its parent.
SNAPSHOT_INTERVAL = 1.0
#: The environment variable naming the snapshot pipe's descriptor in a worker.
SNAPSHOT_FD_ENV = "SIPPROXY_METRICS_FD"
#: A worker's snapshot line longer than this is refused (a runaway, not metrics).
MAX_SNAPSHOT = 4 << 20


def metrics_address(value: str) -> tuple[str, int]:
    """C{HOST:PORT} (IPv6 as C{[::1]:PORT}) for C{--metrics}; ValueError
    naming the option otherwise."""
    text = value.strip()
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        sep = ""
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--metrics wants HOST:PORT (IPv6 as [::1]:PORT), not {value!r}")
    try:
        socket.getaddrinfo(host, None, 0, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST)
    except socket.gaierror:
        raise ValueError(f"--metrics wants an IP address as HOST, not {host!r}") from None
    return host, int(port)


METRICS_PARAMETERS = [
    ["metrics", None, None, "Serve Prometheus metrics at http://HOST:PORT/metrics (e.g. 127.0.0.1:9090; IPv6 as "
     "[::1]:9090). With --workers the first process serves every worker's, labelled worker=N.", metrics_address],
]


def metrics_bind_problem(address: tuple[str, int]) -> Optional[str]:
    """Why the metrics endpoint cannot listen on C{address}, or None
    (checked before twistd starts: one line, no traceback)."""
    host, port = address
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as e:
            reason = {errno.EADDRINUSE: "address already in use", errno.EADDRNOTAVAIL: "not an address of this host",
                      errno.EACCES: "permission denied"}.get(e.errno or 0, e.strerror)
            return f"cannot serve metrics on tcp:{host}:{port}: {reason}"
    return None


# -- what is read ------------------------------------------------------------------------
@dataclass
class Sources:
    """The objects whose counters are read (each None when not running).

    @ivar door_parts: returns the running
        L{sipproxy.access.front_chain.FrontDoor}'s C{parts} (a reload
        builds a new door: read through the reloader, not kept).
    @ivar store: a L{sipproxy.stores.timing.TimedStore}.
    @ivar relay_tables: the L{sipproxy.nat.table.RelayTable} of a local relay.
    @ivar location: the location store's counts (only in the first process:
        a store shared by workers would be counted once per worker).
    """

    dispatcher: Optional["Dispatcher"] = None
    proxy: Optional["StatelessProxy"] = None
    door_parts: Callable[[], Mapping[str, Any]] = lambda: {}
    store: Optional["TimedStore"] = None
    guard: Optional["ConnectionGuard"] = None
    relay_tables: list["RelayTable"] = field(default_factory=list)
    ng_clients: list["NgClient"] = field(default_factory=list)
    ng_servers: list["NgServer"] = field(default_factory=list)
    location: Optional["LocationCounts"] = None


def find_sources(service: IServiceCollection, door: Optional["FrontDoor"] = None,
                 store: Optional["TimedStore"] = None) -> Sources:
    """The counters under a service tree: the proxy service's dispatcher,
    proxy and connection guard, local relays, ng clients and servers; the
    front door's parts through the reloader when there is one."""
    from sipproxy.nat.ng import NgClient, NgServer
    from sipproxy.nat.relay import LocalRelay

    reloader = getattr(service, "namedServices", {}).get("reload")

    def door_parts() -> Mapping[str, Any]:
        current = getattr(reloader, "door", None) or door
        return current.parts if current is not None else {}

    sources = Sources(door_parts=door_parts, store=store)
    seen: set[int] = set()

    def visit(item: Any) -> None:
        if id(item) in seen:
            return
        seen.add(id(item))
        if hasattr(item, "dispatcher") and hasattr(item, "proxy") and hasattr(item, "stream_guard"):
            sources.dispatcher, sources.proxy, sources.guard = item.dispatcher, item.proxy, item.stream_guard
            nathelper = getattr(item.proxy, "nathelper", None)
            if nathelper is not None:
                visit(nathelper)
        if isinstance(item, LocalRelay):
            sources.relay_tables.append(item.table)
        elif isinstance(item, NgClient):
            sources.ng_clients.append(item)
        elif isinstance(item, NgServer):
            sources.ng_servers.append(item)
            visit(item.relay)
        if IServiceCollection.providedBy(item):
            for child in list(item):
                visit(child)

    visit(service)
    return sources


def _auth_counts(auth: "Authorize") -> dict[str, Any]:
    return {"challenges": auth.challenges, "shut_out": auth.shut_out, "failed": dict(auth.failed)}


def _dropper_counts(dropper: "Dropper") -> dict[str, Any]:
    return {"dropped": dropper.dropped, "dropped_responses": getattr(dropper, "dropped_responses", 0)}


def _add(into: dict[str, Any], counts: Mapping[str, Any]) -> dict[str, Any]:
    """C{into} plus C{counts}, key by key (nested dicts too), as a new dict."""
    out = dict(into)
    for key, value in counts.items():
        if isinstance(value, dict):
            out[key] = _add(out.get(key, {}), value)
        else:
            out[key] = out.get(key, 0) + value
    return out


class _Rebuilt:
    """Counters of the parts a reload builds anew (the authorizers, the
    dropper): when a scrape finds a new object under a name, the old one's
    counts, final now that it is out of the chain, are carried over, so
    the series never go down. (Two reloads between two scrapes lose the
    middle object's counts.)"""

    READERS: Mapping[str, Callable[[Any], dict[str, Any]]] = {
        "registrar_auth": _auth_counts, "proxy_auth": _auth_counts, "dropper": _dropper_counts}

    def __init__(self) -> None:
        self._current: dict[str, Any] = {}
        self._carried: dict[str, dict[str, Any]] = {}

    def counts(self, parts: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        out = {}
        for name, read in self.READERS.items():
            part, known = parts.get(name), self._current.get(name)
            if known is not None and part is not known:
                self._carried[name] = _add(self._carried.get(name, {}), read(known))
            if part is not None:
                self._current[name] = part
            else:
                self._current.pop(name, None)
            if part is not None or name in self._carried:
                out[name] = _add(self._carried.get(name, {}), read(part) if part is not None else {})
        return out


class LocationCounts:
    """The location store's (addresses-of-record, bindings) counts for the
    gauges. Counting is a query for SQLite and Redis (a Deferred): a scrape
    from the endpoint waits for a fresh count, at most C{timeout} seconds,
    and otherwise shows the last one it got.

    @param store: an L{ILocationListing}, or a wrapper with it as C{inner}.
    """

    def __init__(self, store: Any, clock: Any, timeout: float = 2.0) -> None:
        from sipproxy.interfaces import ILocationListing

        while store is not None and not ILocationListing.providedBy(store):
            store = store.__dict__.get("inner")
        self.store = store
        self.clock = clock
        self.timeout = timeout
        self.latest: Optional[tuple[int, int]] = None
        self._asking: Optional[Deferred] = None
        self._failing = False

    def refresh(self) -> Deferred:
        """Ask the store (one count at a time); fires with the latest
        counts, or None, and never fails."""
        if self.store is None:
            return succeed(None)
        waiter: Deferred = Deferred()
        if self._asking is not None:  # a count is on its way: wait for that one

            def also(result: Any) -> Any:
                waiter.callback(self.latest)
                return result

            self._asking.addBoth(also)
            return waiter
        asking = self.store.count()
        if self.clock is not None:
            asking.addTimeout(self.timeout, self.clock)
        asking.addCallbacks(self._counted, self._failed)
        if asking.called:  # the memory store counts at once
            return succeed(self.latest)

        def finished(_: Any) -> None:
            self._asking = None
            waiter.callback(self.latest)

        self._asking = asking
        asking.addBoth(finished)
        return waiter

    def _counted(self, counts: tuple[int, int]) -> None:
        self.latest = (int(counts[0]), int(counts[1]))
        self._failing = False

    def _failed(self, failure: Failure) -> None:
        if not self._failing:  # one line per failing stretch, not one per scrape
            log.warn("metrics: cannot count the location store's bindings ({error})",
                     error=failure.getErrorMessage())
        self._failing = True


# -- the families --------------------------------------------------------------------------
#: Every metric family name (the text format adds _total, _bucket, ... to samples).
METRIC_NAMES = (
    "sipproxy_requests_received", "sipproxy_responses_received", "sipproxy_requests_forwarded",
    "sipproxy_responses_forwarded", "sipproxy_requests_answered", "sipproxy_messages_dropped",
    "sipproxy_parse_errors", "sipproxy_registrations", "sipproxy_binding_changes", "sipproxy_location_aors",
    "sipproxy_location_bindings",
    "sipproxy_auth_challenges", "sipproxy_auth_failures", "sipproxy_relay_sessions_started",
    "sipproxy_relay_sessions", "sipproxy_relay_sockets", "sipproxy_relay_sockets_opened",
    "sipproxy_relay_packets", "sipproxy_relay_bytes", "sipproxy_relay_send_errors",
    "sipproxy_relay_packets_dropped", "sipproxy_ng_requests", "sipproxy_ng_timeouts", "sipproxy_ng_errors",
    "sipproxy_ng_requests_handled", "sipproxy_store_operation_duration_seconds", "sipproxy_store_errors",
    "sipproxy_tcp_connections", "sipproxy_tcp_connections_opened", "sipproxy_tcp_connections_refused",
)


def _counter(name: str, doc: str, labels: Iterable[str] = ()) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, labels=list(labels))


def _by_method(family: CounterMetricFamily, counts: Mapping[str, int]) -> None:
    for method in (*METHODS, OTHER):
        value = counts.get(method, 0)
        if value:
            family.add_metric([method], value)


def _by_class(family: CounterMetricFamily, counts: list[int]) -> None:
    for index, value in enumerate(counts):
        if value:
            family.add_metric([STATUS_CLASSES[index]], value)


def sipproxy_families(sources: Sources, rebuilt: Optional[_Rebuilt] = None) -> list[Metric]:
    """The metric families of one process, read now (call it in the
    reactor thread: it walks dictionaries the reactor changes).

    @param rebuilt: what carries the counts of parts a reload replaced."""
    out: list[Metric] = []
    dispatcher, proxy, parts = sources.dispatcher, sources.proxy, sources.door_parts()
    counted = (rebuilt or _Rebuilt()).counts(parts)
    if dispatcher is not None:
        family = _counter("sipproxy_requests_received", "SIP requests received and parsed, by method.", ["method"])
        _by_method(family, dispatcher.requests_received)
        out.append(family)
        family = _counter("sipproxy_responses_received", "SIP responses received and parsed, by status class.",
                          ["status_class"])
        _by_class(family, dispatcher.responses_received)
        out.append(family)
    if proxy is not None:
        family = _counter("sipproxy_requests_forwarded", "SIP requests the proxy forwarded, by method.", ["method"])
        _by_method(family, proxy.requests_forwarded)
        out.append(family)
        family = _counter("sipproxy_responses_forwarded", "SIP responses the proxy forwarded, by status class.",
                          ["status_class"])
        _by_class(family, proxy.responses_forwarded)
        out.append(family)
    if dispatcher is not None:
        family = _counter("sipproxy_requests_answered", "SIP requests answered here (statelessly) instead of "
                          "forwarded, by method and status code: errors, challenges, REGISTER answers, 400 to "
                          "malformed requests.", ["method", "code"])
        for (method, code), value in sorted(dict(dispatcher.answered).items()):
            family.add_metric([method, str(code)], value)
        out.append(family)
        dropped: dict[tuple[str, str], int] = {}
        for counts in (dispatcher.dropped, proxy.dropped if proxy is not None else {}):
            for key, value in dict(counts).items():
                dropped[key] = dropped.get(key, 0) + value
        parse = dict(dispatcher.parse_errors)
        if parse["dropped"]:
            dropped[("message", "malformed")] = parse["dropped"]
        dropper = counted.get("dropper")
        if dropper is not None:
            responses = dropper.get("dropped_responses", 0)
            if dropper.get("dropped", 0) - responses:
                dropped[("request", "filter")] = dropper["dropped"] - responses
            if responses:
                dropped[("response", "filter")] = responses
        shut_out = sum(counted[name].get("shut_out", 0) for name in ("registrar_auth", "proxy_auth")
                       if name in counted)
        if shut_out:
            dropped[("request", "auth_blocked")] = shut_out
        family = _counter("sipproxy_messages_dropped", "SIP messages dropped without an answer, by kind "
                          "(request, response; message when unparsable) and reason.", ["kind", "reason"])
        for (kind, reason), value in sorted(dropped.items()):
            family.add_metric([kind, reason], value)
        out.append(family)
        family = _counter("sipproxy_parse_errors", "Malformed SIP messages, by what was done: answered (400, "
                          "505) or dropped.", ["action"])
        for action in ("answered", "dropped"):
            family.add_metric([action], parse[action])
        out.append(family)
    registrar = parts.get("registrar")
    if registrar is not None:
        family = _counter("sipproxy_registrations", "REGISTER requests the registrar answered, by status class.",
                          ["status_class"])
        _by_class(family, registrar.registrations)
        out.append(family)
        family = _counter("sipproxy_binding_changes", "Contact bindings stored: set (added or refreshed), "
                          "removed, removed_all (Contact: *).", ["action"])
        for action, value in dict(registrar.binding_changes).items():
            family.add_metric([action], value)
        out.append(family)
    location = sources.location.latest if sources.location is not None else None
    if location is not None:
        out.append(GaugeMetricFamily("sipproxy_location_aors", "Addresses-of-record with unexpired bindings in "
                                     "the location store.", value=location[0]))
        out.append(GaugeMetricFamily("sipproxy_location_bindings", "Unexpired bindings (contacts) in the "
                                     "location store.", value=location[1]))
    auths = [(code, counted[name]) for name, code in (("registrar_auth", "401"), ("proxy_auth", "407"))
             if name in counted]
    if auths:
        family = _counter("sipproxy_auth_challenges", "Digest challenges sent, by code (401, 407).", ["code"])
        for code, auth in auths:
            family.add_metric([code], auth.get("challenges", 0))
        out.append(family)
        family = _counter("sipproxy_auth_failures", "Failed digest authentications, by code and reason.",
                          ["code", "reason"])
        for code, auth in auths:
            for reason, value in sorted(auth.get("failed", {}).items()):
                family.add_metric([code, reason], value)
        out.append(family)
    out.extend(_relay_families(sources.relay_tables))
    out.extend(_ng_families(sources.ng_clients, sources.ng_servers))
    if sources.store is not None and hasattr(sources.store, "timings"):
        out.extend(_store_families(sources.store))
    guard = sources.guard
    if guard is not None:
        out.append(GaugeMetricFamily("sipproxy_tcp_connections", "TCP and TLS connections open.",
                                     value=guard.total))
        family = _counter("sipproxy_tcp_connections_opened", "TCP and TLS connections opened, by direction.",
                          ["direction"])
        family.add_metric(["inbound"], guard.accepted)
        family.add_metric(["outbound"], guard.connected)
        out.append(family)
        out.append(CounterMetricFamily("sipproxy_tcp_connections_refused", "Inbound TCP and TLS connections "
                                       "refused by --tcp-max-connections or --tcp-accept-iplimit.",
                                       value=guard.refused))
    return out


def _relay_families(tables: list["RelayTable"]) -> list[Metric]:
    if not tables:
        return []
    totals: dict[str, int] = {}
    started = sockets = opened = 0
    for table in tables:
        for key, value in table.traffic().items():
            totals[key] = totals.get(key, 0) + value
        started += table.sessions_started
        sockets += table.socket_count
        opened += table.sockets_opened
    dropped = _counter("sipproxy_relay_packets_dropped", "RTP/RTCP packets the relay dropped: from a source "
                       "other than the accepted one (foreign_source), or on a port in no session (no_session).",
                       ["reason"])
    dropped.add_metric(["foreign_source"], totals["foreign"])
    dropped.add_metric(["no_session"], totals["dropped"])
    return [
        CounterMetricFamily("sipproxy_relay_sessions_started", "Media relay sessions started.", value=started),
        GaugeMetricFamily("sipproxy_relay_sessions", "Media relay sessions active.", value=totals["sessions"]),
        GaugeMetricFamily("sipproxy_relay_sockets", "Media relay sockets open.", value=sockets),
        CounterMetricFamily("sipproxy_relay_sockets_opened", "Media relay sockets opened.", value=opened),
        CounterMetricFamily("sipproxy_relay_packets", "RTP/RTCP packets relayed.", value=totals["packets"]),
        CounterMetricFamily("sipproxy_relay_bytes", "RTP/RTCP payload bytes relayed.", value=totals["bytes"]),
        CounterMetricFamily("sipproxy_relay_send_errors", "RTP/RTCP packets the relay failed to send.",
                            value=totals["errors"]),
        dropped,
    ]


def _ng_families(clients: list["NgClient"], servers: list["NgServer"]) -> list[Metric]:
    out: list[Metric] = []
    if clients:
        for name, attribute, doc in (
                ("sipproxy_ng_requests", "requests", "ng requests sent to the media relay, by command."),
                ("sipproxy_ng_timeouts", "timeouts", "ng requests the media relay did not answer in time."),
                ("sipproxy_ng_errors", "errors", "ng requests the media relay answered with an error.")):
            family = _counter(name, doc, ["command"])
            merged: dict[str, int] = {}
            for client in clients:
                for command, value in dict(getattr(client, attribute)).items():
                    merged[command] = merged.get(command, 0) + value
            for command, value in sorted(merged.items()):
                family.add_metric([command], value)
            out.append(family)
    if servers:
        family = _counter("sipproxy_ng_requests_handled", "ng requests this relay answered, by command and "
                          "result.", ["command", "result"])
        handled: dict[tuple[str, str], int] = {}
        for server in servers:
            for key, value in dict(server.handled).items():
                handled[key] = handled.get(key, 0) + value
        for (command, result), value in sorted(handled.items()):
            family.add_metric([command, result], value)
        out.append(family)
    return out


def _store_families(store: "TimedStore") -> list[Metric]:
    from sipproxy.stores.timing import LATENCY_BUCKETS

    latency = HistogramMetricFamily("sipproxy_store_operation_duration_seconds", "Location store operations, "
                                    "by how long they took.", labels=["operation"])
    errors = _counter("sipproxy_store_errors", "Location store operations that failed: unavailable (answered "
                      "503) or failed (500).", ["operation", "error"])
    for operation, timing in store.timings.items():
        buckets, cumulative = [], 0
        for bound, count in zip((*LATENCY_BUCKETS, float("inf")), list(timing.buckets)):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        latency.add_metric([operation], buckets, timing.sum)
        errors.add_metric([operation, "unavailable"], timing.unavailable)
        errors.add_metric([operation, "failed"], timing.failed)
    return [latency, errors]


class SipproxyCollector(Collector):
    """A prometheus-client collector over one process's counters.

    @param reactor: the counters are read in its thread; None to read in
        the caller's (tests without a running reactor).
    """

    def __init__(self, sources: Sources, reactor: Any = None) -> None:
        self.sources = sources
        self.reactor = reactor
        self._rebuilt = _Rebuilt()

    def collect(self) -> Iterator[Metric]:
        from twisted.python import threadable

        location = self.sources.location
        if self.reactor is None or threadable.ioThread is None or threadable.isInIOThread():
            # a worker's snapshot, a test: what is known now; fresher counts next time
            if location is not None:
                location.refresh()
            return iter(sipproxy_families(self.sources, self._rebuilt))
        from twisted.internet.threads import blockingCallFromThread

        def read() -> Deferred:  # in the reactor thread; the scrape's thread waits
            fresh = location.refresh() if location is not None else succeed(None)
            return fresh.addCallback(lambda _: sipproxy_families(self.sources, self._rebuilt))

        return iter(blockingCallFromThread(self.reactor, read))


# -- workers ---------------------------------------------------------------------------------
def snapshot_line(registry: CollectorRegistry) -> bytes:
    """Every family of C{registry}, as one JSON line (what a worker sends)."""
    data = [[m.name, m.type, m.documentation, m.unit, [[s.name, s.labels, s.value] for s in m.samples]]
            for m in registry.collect()]
    return json.dumps(data, separators=(",", ":")).encode() + b"\n"


def parse_snapshot(line: bytes, extra: Mapping[str, str]) -> list[Metric]:
    """The families of a snapshot line, every sample with C{extra} labels
    added; ValueError when it is not one."""
    out = []
    try:
        data = json.loads(line)
        if not isinstance(data, list):
            raise TypeError("want a list of families")
        for name, typ, doc, unit, samples in data:
            metric = Metric(str(name), str(doc), str(typ), str(unit))
            for sample_name, labels, value in samples:
                metric.add_sample(str(sample_name), {**{str(k): str(v) for k, v in labels.items()}, **extra},
                                  float(value))
            out.append(metric)
    except (TypeError, AttributeError, json.JSONDecodeError) as e:
        raise ValueError(f"not a metrics snapshot: {e}") from None
    return out


class WorkerSnapshots:
    """The latest snapshot line of each worker, fed by the worker pool
    with what arrives on each worker's pipe."""

    def __init__(self) -> None:
        self.latest: dict[int, bytes] = {}
        self._partial: dict[int, bytes] = {}

    def received(self, index: int, data: bytes) -> None:
        buffered = self._partial.get(index, b"") + data
        *lines, rest = buffered.split(b"\n")
        if len(rest) > MAX_SNAPSHOT:
            log.warn("worker {index}: metrics snapshot over {limit} bytes dropped", index=index, limit=MAX_SNAPSHOT)
            rest = b""
        self._partial[index] = rest
        if lines:
            self.latest[index] = lines[-1]

    def ended(self, index: int) -> None:
        """A worker is gone: its counters start again with its successor."""
        self.latest.pop(index, None)
        self._partial.pop(index, None)


class WorkersCollector(Collector):
    """This process's families labelled C{worker="0"}, merged with each
    worker's latest snapshot labelled with its index: one family per name
    (the text format allows no second TYPE line for a name)."""

    def __init__(self, local: CollectorRegistry, snapshots: WorkerSnapshots) -> None:
        self.local = local
        self.snapshots = snapshots

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        order: list[str] = []

        def add(metrics: Iterable[Metric], worker: str) -> None:
            for metric in metrics:
                target = merged.get(metric.name)
                if target is None:
                    target = merged[metric.name] = Metric(metric.name, metric.documentation, metric.type,
                                                          metric.unit)
                    order.append(metric.name)
                for sample in metric.samples:
                    target.add_sample(sample.name, {**sample.labels, "worker": worker}, sample.value)

        add(self.local.collect(), "0")
        for index, line in sorted(dict(self.snapshots.latest).items()):
            try:
                add(parse_snapshot(line, {}), str(index))
            except ValueError as e:
                log.warn("worker {index}: unreadable metrics snapshot ({error})", index=index, error=e)
        return iter([merged[name] for name in order])


class SnapshotWriter(Service):
    """In a worker: writes a snapshot line to the parent's pipe every
    C{interval} seconds. The pipe is non-blocking: a parent that does not
    read costs the worker nothing (the line waits, newer ones are skipped
    until it is out)."""

    name = "metrics-snapshots"

    def __init__(self, registry: CollectorRegistry, fd: int, clock: Any, interval: float = SNAPSHOT_INTERVAL) -> None:
        self.registry = registry
        self.fd = fd
        self.clock = clock
        self.interval = interval
        self._pending = b""
        self._loop: Optional[LoopingCall] = None

    def startService(self) -> None:
        super().startService()
        os.set_blocking(self.fd, False)
        self._loop = LoopingCall(self.write)
        self._loop.clock = self.clock
        self._loop.start(self.interval, now=True)

    def stopService(self) -> Any:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self.write()  # the last counts, if the pipe takes them
        return None

    def write(self) -> None:
        if not self._pending:
            self._pending = snapshot_line(self.registry)
        try:
            written = os.write(self.fd, self._pending)
        except BlockingIOError:
            return
        except OSError as e:  # the parent is gone: nothing more to tell it
            log.warn("metrics snapshots: the pipe to the parent failed ({error})", error=e)
            if self._loop is not None and self._loop.running:
                self._loop.stop()
            return
        self._pending = self._pending[written:]


def snapshot_fd() -> Optional[int]:
    """The pipe to the parent (set by L{sipproxy.app.workers}), or None."""
    text = os.environ.pop(SNAPSHOT_FD_ENV, "")
    if not text.isdigit():
        return None
    fd = int(text)
    try:
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return None
    except OSError:
        return None
    return fd


# -- the endpoint ---------------------------------------------------------------------------
#: Seconds a scrape connection may stay silent, and how many may be open at
#: once: Prometheus needs one, a peer holding many must not hold sockets
#: (Twisted's own idle timeout is 12 hours, with no cap).
SCRAPE_TIMEOUT = 30.0
MAX_SCRAPERS = 8


def _quiet_site(root: Any, timeout: float, reactor: Any) -> Any:
    from twisted.web.server import Site

    class QuietSite(Site):
        """No access-log line per scrape (Prometheus scrapes every few seconds)."""

        noisy = False

        def log(self, request: Any) -> None:
            pass

    return QuietSite(root, timeout=timeout, reactor=reactor)


def _capped(factory: Any, limit: int) -> Any:
    """C{factory} refusing connections beyond C{limit} open at once."""
    from twisted.protocols.policies import WrappingFactory

    class Capped(WrappingFactory):
        noisy = False

        def buildProtocol(self, addr: Any) -> Any:
            if len(self.protocols) >= limit:
                return None  # Twisted closes the connection
            return super().buildProtocol(addr)

    return Capped(factory)


class MetricsService(MultiService):
    """The HTTP endpoint: prometheus-client's Twisted resource at
    C{/metrics} on C{address}, bound at privileged start (before twistd
    drops privileges)."""

    name = "metrics"

    def __init__(self, registry: CollectorRegistry, address: tuple[str, int], reactor: Any,
                 timeout: float = SCRAPE_TIMEOUT, max_clients: int = MAX_SCRAPERS) -> None:
        from prometheus_client.twisted import MetricsResource
        from twisted.application.internet import TCPServer
        from twisted.web.resource import Resource

        super().__init__()
        self.registry = registry
        self.address = address
        root = Resource()
        root.putChild(b"metrics", MetricsResource(registry=registry))
        self.site = _quiet_site(root, timeout, reactor)
        #: the site behind a cap on connections open at once
        self.factory = _capped(self.site, max_clients)
        self.server = TCPServer(address[1], self.factory, interface=address[0], reactor=reactor)
        self.server.setServiceParent(self)

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        port = self.server._port.getHost().port if getattr(self.server, "_port", None) is not None else None
        host = self.address[0]
        log.info("serving metrics on http://{hostport}/metrics",
                 hostport=f"[{host}]:{port}" if ":" in host else f"{host}:{port}")

    @property
    def port(self) -> int:
        """The bound port (after start)."""
        return self.server._port.getHost().port


def add_metrics(service: MultiService, options: Mapping[str, Any], reactor: Any, door: Optional["FrontDoor"] = None,
                store: Optional["TimedStore"] = None,
                pool: Optional["WorkerPool"] = None) -> Optional[CollectorRegistry]:
    """Wire C{--metrics} into a built service: the endpoint in the first
    process, the snapshot pipe in a worker. Returns the registry served
    (None when metrics are off)."""
    address = options.get("metrics")
    if not address:
        return None
    from prometheus_client import ProcessCollector

    local = CollectorRegistry()
    sources = find_sources(service, door, store)
    if store is not None and not options.get("worker-index"):
        sources.location = LocationCounts(store, reactor)
    local.register(SipproxyCollector(sources, reactor))
    ProcessCollector(registry=local)
    if options.get("worker-index"):
        fd = snapshot_fd()
        if fd is None:
            log.warn("metrics: worker {index} has no pipe to its parent; its counters are not served",
                     index=options["worker-index"])
        else:
            SnapshotWriter(local, fd, reactor).setServiceParent(service)
        return local
    served = local
    if pool is not None:
        snapshots = WorkerSnapshots()
        pool.snapshot_sink = snapshots
        served = CollectorRegistry()
        served.register(WorkersCollector(local, snapshots))
    MetricsService(served, address, reactor).setServiceParent(service)
    return served
