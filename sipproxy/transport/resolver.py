"""Name resolution for the dispatcher (an edge module): RFC 3263 over
C{twisted.names}, with no threads.

L{DNSResolver} runs the pure procedure of L{sipproxy.transport.rfc3263}
(NAPTR, then SRV, then A/AAAA) against the servers given
(C{--dns-server}) or those of C{/etc/resolv.conf}. Names in the hosts
file are answered from it at once, without DNS. Answers are kept in a
cache that honours TTLs and negative answers (RFC 2308), bounded like the
project's other caches; each query has a timeout; at most C{max_pending}
queries are in flight (the same question asked twice waits for the one
query). So a dead or slow server delays only the requests that need an
answer from it: literal addresses never reach this module, and cached or
hosts-file names are answered without a Deferred having to wait.

L{DestinationBlocklist} remembers destinations a send to which failed,
for a while, so the next requests try the others first (Kamailio's
C{dst_blocklist}).
"""
from __future__ import annotations

import os
import random
import socket
import time
from typing import Any, Callable, Iterable, Optional, Sequence, Union

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from zope.interface import implementer

from sipproxy.interfaces import IHopResolver, IHostResolver
from sipproxy.observe.logsafe import SafeLogger
from sipproxy.sip.bounded import BoundedCache
from sipproxy.transport.rfc3263 import Answers, Destination, Naptr, Query, Srv, resolution

__all__ = ["DNSResolver", "ResolutionFailed", "DestinationBlocklist", "HostsFile", "StaticResolver",
           "parse_server", "servers_of_resolv_conf", "DEFAULT_TIMEOUT", "DEFAULT_MAX_PENDING"]

log = SafeLogger()

DEFAULT_TIMEOUT = 2.0
DEFAULT_MAX_PENDING = 64
#: how long an answer without SOA (NXDOMAIN, no records) is remembered
DEFAULT_NEGATIVE_TTL = 30.0
#: how long a query that failed (timeout, SERVFAIL, REFUSED) is remembered
#: as failed (RFC 2308 7 allows up to five minutes): retransmissions of a
#: request do not ask a dead server again
DEFAULT_FAILURE_TTL = 5.0
#: no answer is kept longer than this, whatever its TTL says
DEFAULT_MAX_TTL = 3600.0
#: the hosts file is looked at again (its mtime) at most this often
HOSTS_RECHECK = 5.0
#: at most one log line per this many seconds about lookups refused for
#: too many queries in flight
BUSY_LOG_INTERVAL = 10.0


class ResolutionFailed(Exception):
    """DNS could not say (timeout, server failure, too many queries in
    flight): a temporary failure (503), unlike a name that does not exist."""


def parse_server(text: str) -> tuple[str, int]:
    """C{HOST[:PORT]} (IPv6 as C{[::1]:53}) of a DNS server; raises
    ValueError naming the problem."""
    text = text.strip()
    host, port = text, 53
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"bad DNS server {text!r}: want HOST:PORT or [IPv6]:PORT")
        port_text = rest[1:] if rest else "53"
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        port_text = "53"
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    except (OSError, ValueError):
        raise ValueError(f"bad DNS server {text!r}: {host!r} is not an IP address") from None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad DNS server {text!r}: port {port_text!r} is not 1-65535")
    return host, int(port_text)


def servers_of_resolv_conf(path: str = "/etc/resolv.conf") -> list[tuple[str, int]]:
    """The C{nameserver} lines of a resolv.conf (port 53), as the C
    library reads them; 127.0.0.1 when there are none (as glibc)."""
    servers = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver":
                    try:
                        servers.append(parse_server(parts[1].split("%")[0]))
                    except ValueError:
                        continue
    except OSError as e:
        log.warn("cannot read {path}: {error}; asking 127.0.0.1", path=path, error=e)
    return servers or [("127.0.0.1", 53)]


class HostsFile:
    """Names to addresses from a hosts(5) file, read again when it
    changes (checked at most every L{HOSTS_RECHECK} seconds)."""

    def __init__(self, path: str = "/etc/hosts", clock: Optional[Callable[[], float]] = None) -> None:
        self.path = path
        self._clock = clock or time.monotonic
        self._table: dict[str, list[str]] = {}
        self._mtime: Optional[float] = None
        self._checked = float("-inf")

    def addresses(self, name: str) -> Optional[list[str]]:
        """The addresses of C{name} (lower case, no trailing dot), or None."""
        now = self._clock()
        if now - self._checked >= HOSTS_RECHECK:
            self._checked = now
            self._reload()
        return self._table.get(name)

    def _reload(self) -> None:
        try:
            mtime = os.stat(self.path).st_mtime
        except OSError:
            self._table, self._mtime = {}, None
            return
        if mtime == self._mtime:
            return
        table: dict[str, list[str]] = {}
        try:
            with open(self.path, encoding="utf-8", errors="replace") as f:
                for line in f:
                    parts = line.split("#", 1)[0].split()
                    if len(parts) < 2:
                        continue
                    address = parts[0].split("%")[0]
                    try:
                        socket.inet_pton(socket.AF_INET6 if ":" in address else socket.AF_INET, address)
                    except (OSError, ValueError):
                        continue
                    for name in parts[1:]:
                        found = table.setdefault(name.lower().rstrip("."), [])
                        if address not in found:
                            found.append(address)
        except OSError as e:
            log.warn("cannot read {path}: {error}", path=self.path, error=e)
            return
        self._table, self._mtime = table, mtime


class _Entry:
    """A cached answer: records, or a failure, until C{expires}."""

    __slots__ = ("records", "failed", "expires")

    def __init__(self, records: list, failed: bool, expires: float) -> None:
        self.records = records
        self.failed = failed
        self.expires = expires


@implementer(IHopResolver)
class DNSResolver:
    """RFC 3263 resolution through C{twisted.names}.

    @param reactor: for the queries' sockets and timers (and the clock of
        the cache); the DNS client is made at the first query.
    @param servers: (host, port) of DNS servers; None: /etc/resolv.conf's.
    @param timeout: seconds one query waits for each server.
    @param max_pending: queries in flight at most; a lookup needing one
        more fails at once (503) instead of waiting.
    @param randint: C{randint(a, b)} for the SRV weighted choice when the
        caller gives no key (see L{resolve_hop}).
    @param client: an C{IResolver} to ask instead of the one made from
        C{servers} (tests).
    """

    def __init__(self, reactor: Any, servers: Optional[Sequence[tuple[str, int]]] = None,
                 resolv_conf: str = "/etc/resolv.conf", hosts_file: Optional[str] = "/etc/hosts",
                 timeout: float = DEFAULT_TIMEOUT, max_pending: int = DEFAULT_MAX_PENDING,
                 max_entries: int = 4096, max_bytes: int = 1 << 20, negative_ttl: float = DEFAULT_NEGATIVE_TTL,
                 failure_ttl: float = DEFAULT_FAILURE_TTL, max_ttl: float = DEFAULT_MAX_TTL,
                 randint: Callable[[int, int], int] = random.randint, client: Any = None) -> None:
        self.reactor = reactor
        self.servers = list(servers) if servers else None
        self.resolv_conf = resolv_conf
        self.timeout = timeout
        self.max_pending = max_pending
        self.negative_ttl = negative_ttl
        self.failure_ttl = failure_ttl
        self.max_ttl = max_ttl
        self.randint = randint
        self._client = client
        self._now: Callable[[], float] = getattr(reactor, "seconds", None) or time.monotonic
        self.hosts = HostsFile(hosts_file, self._now) if hosts_file else None
        #: answers by (name, kind): bounded in entries and characters of names
        self.cache = BoundedCache("DNS answers", max_entries, max_key=255, max_bytes=max_bytes)
        self._pending: dict[Query, list[Deferred]] = {}
        #: counts, for tests and reports
        self.queries_sent = 0
        self.refused_busy = 0
        self._busy_logged = float("-inf")

    # IHopResolver --------------------------------------------------------------------
    def resolve_hop(self, host: str, proto: Optional[str], port: Optional[int], transports: Sequence[str],
                    families: Iterable[int], key: Optional[str] = None,
                    ) -> Union[list[Destination], Deferred]:
        """Destinations for a next hop, in the order to try them: a list
        at once when the hosts file or the cache can answer everything,
        else a Deferred. An empty list: the name leads nowhere. Fails
        (raises or errbacks) with L{ResolutionFailed} when DNS could not
        say.

        @param key: makes the SRV weighted choice a function of it (the
            Call-ID): retransmissions, CANCEL and ACK of a request reach
            the server the request reached (RFC 3263 4.4 asks a stateless
            proxy for the same outcome each time).
        """
        name = host.rstrip(".").lower()
        families = tuple(families)
        if self.hosts is not None and not name.startswith("["):
            known = self.hosts.addresses(name)
            if known is not None:
                return _from_hosts(known, proto, port, transports, families)
        randint = random.Random(key).randint if key is not None else self.randint
        steps = resolution(name, proto, port, transports, families, randint)
        return self._advance(steps, None, set())

    # the procedure -----------------------------------------------------------------------
    def _advance(self, steps: Any, answers: Optional[Answers], failed: set) -> Union[list[Destination], Deferred]:
        """Run the procedure while the cache answers; a Deferred from the
        first step that must wait for the network."""
        try:
            if answers is None:
                queries = next(steps)
            else:
                queries = steps.send(_checked(answers, failed))
            while True:
                found, missing = self._from_cache(queries, failed)
                if missing:
                    return self._wait(steps, queries, found, missing, failed)
                queries = steps.send(_checked(found, failed))
        except StopIteration as done:
            destinations = done.value
            if not destinations and failed:
                raise ResolutionFailed("DNS failed for " + ", ".join(sorted(f"{q.name} {q.kind}" for q in failed)))
            return destinations

    def _from_cache(self, queries: Sequence[Query], failed: set) -> tuple[dict, list[Query]]:
        found: dict[Query, list] = {}
        missing = []
        now = self._now()
        for query in queries:
            entry = self.cache.get(query)
            if entry is None or entry.expires <= now:
                missing.append(query)
            else:
                found[query] = entry.records
                if entry.failed:
                    failed.add(query)
        return found, missing

    def _wait(self, steps: Any, queries: Sequence[Query], found: dict, missing: list[Query],
              failed: set) -> Deferred:
        result: Deferred = Deferred()
        waiting = [self._ask(query) for query in missing]
        answers = dict(found)
        left = [len(waiting)]

        def one(outcome: tuple[list, bool], query: Query) -> None:
            records, bad = outcome
            answers[query] = records
            if bad:
                failed.add(query)
            left[0] -= 1
            if left[0] == 0:
                try:
                    nxt = self._advance(steps, answers, failed)
                except ResolutionFailed as e:
                    result.errback(e)
                    return
                except Exception as e:  # a bug must still end the request's wait
                    log.failure("RFC 3263 resolution failed")
                    result.errback(ResolutionFailed(f"resolution failed: {e}"))
                    return
                if isinstance(nxt, Deferred):
                    nxt.chainDeferred(result)
                else:
                    result.callback(nxt)

        for query, d in zip(missing, waiting):
            d.addCallback(one, query)
        return result

    def _ask(self, query: Query) -> Deferred:
        """A Deferred firing with (records, failed) for one question, never
        failing: the one query in flight for it, a new one, or (too many
        in flight) a failure at once."""
        d: Deferred = Deferred()
        waiters = self._pending.get(query)
        if waiters is not None:
            waiters.append(d)
            return d
        if len(self._pending) >= self.max_pending:
            self.refused_busy += 1
            now = self._now()
            if now - self._busy_logged >= BUSY_LOG_INTERVAL:  # one line per interval, however many
                self._busy_logged = now
                log.warn("DNS: {count} queries in flight (--dns-max-queries); lookups needing more fail at "
                         "once ({refused} so far), e.g. {name} {kind}", count=len(self._pending),
                         refused=self.refused_busy, name=query.name, kind=query.kind)
            d.callback(([], True))
            return d
        self._pending[query] = [d]
        self.queries_sent += 1
        try:
            lookup = self._lookup(query)
        except Exception as e:  # a name twisted.names refuses to encode, say
            lookup = Failure(e)
        if isinstance(lookup, Failure):
            self._answered(lookup, query)
        else:
            lookup.addBoth(self._answered, query)
        return d

    def _lookup(self, query: Query) -> Union[Deferred, Failure]:
        if len(query.name) > 253 or not query.name:
            return Failure(ResolutionFailed(f"bad name {query.name!r}"))
        client = self._dns_client()
        method = {"NAPTR": client.lookupNamingAuthorityPointer, "SRV": client.lookupService,
                  "A": client.lookupAddress, "AAAA": client.lookupIPV6Address}[query.kind]
        return method(query.name, timeout=(self.timeout,))

    def _dns_client(self) -> Any:
        if self._client is None:
            from twisted.names import client

            servers = self.servers or servers_of_resolv_conf(self.resolv_conf)
            self._client = client.Resolver(servers=servers, reactor=self.reactor, timeout=(self.timeout,))
        return self._client

    def _answered(self, outcome: Any, query: Query) -> None:
        records, failed, ttl = self._read(outcome, query)
        if ttl > 0:
            self.cache.store(query, _Entry(records, failed, self._now() + min(ttl, self.max_ttl)), len(query.name))
        for d in self._pending.pop(query, []):
            d.callback((records, failed))

    def _read(self, outcome: Any, query: Query) -> tuple[list, bool, float]:
        """(records, failed, seconds to remember) from a twisted.names
        answer or failure."""
        from twisted.names import error as dns_error

        if isinstance(outcome, Failure):
            if outcome.check(dns_error.DNSNameError):
                return [], False, self._negative_ttl(outcome.value.args[0] if outcome.value.args else None)
            log.info("DNS: {name} {kind} failed: {reason}", name=query.name, kind=query.kind,
                     reason=type(outcome.value).__name__)
            return [], True, self.failure_ttl
        try:
            answers, authority, _ = outcome
            records, ttl = _records(answers, query.kind)
        except Exception as e:  # what a server sent that we cannot read
            log.info("DNS: {name} {kind}: unreadable answer: {error}", name=query.name, kind=query.kind, error=e)
            return [], True, self.failure_ttl
        if not records:
            return [], False, self._negative_ttl_of(authority)
        return records, False, ttl

    def _negative_ttl(self, message: Any) -> float:
        return self._negative_ttl_of(getattr(message, "authority", None) or [])

    def _negative_ttl_of(self, authority: Sequence) -> float:
        """RFC 2308 5: the SOA's TTL, at most its minimum field."""
        from twisted.names import dns

        for rr in authority:
            if rr.type == dns.SOA:
                return float(min(rr.ttl, rr.payload.minimum))
        return self.negative_ttl


def _checked(answers: Answers, failed: set) -> Answers:
    """The answers to one step, unless the step failed: some query failed
    and none brought records. Then the resolution stops (a dead server
    would otherwise be asked the next step's questions too, each waiting
    out its timeout)."""
    if any(query in failed for query in answers) and not any(answers.values()):
        raise ResolutionFailed("DNS failed for " + ", ".join(sorted(f"{q.name} {q.kind}" for q in answers
                                                                     if q in failed)))
    return answers


def _records(answers: Sequence, kind: str) -> tuple[list, float]:
    """Our records of C{kind} in an answer section, and the smallest TTL
    of the answer (a CNAME on the way counts)."""
    from twisted.names import dns

    wanted = {"NAPTR": dns.NAPTR, "SRV": dns.SRV, "A": dns.A, "AAAA": dns.AAAA}[kind]
    records: list = []
    ttl: Optional[float] = None
    for rr in answers:
        if rr.type not in (wanted, dns.CNAME):
            continue
        ttl = rr.ttl if ttl is None else min(ttl, rr.ttl)
        if rr.type != wanted:
            continue
        p = rr.payload
        if kind == "A":
            records.append(p.dottedQuad())
        elif kind == "AAAA":
            records.append(socket.inet_ntop(socket.AF_INET6, p.address))
        elif kind == "SRV":
            records.append(Srv(p.priority, p.weight, p.port, _text(p.target.name)))
        else:
            records.append(Naptr(p.order, p.preference, _text(p.flags.string), _text(p.service.string),
                                 _text(p.replacement.name)))
    return records, float(ttl or 0)


def _text(data: bytes) -> str:
    return data.decode("ascii", "replace").lower()


def _from_hosts(addresses: Sequence[str], proto: Optional[str], port: Optional[int], transports: Sequence[str],
                families: Sequence[int]) -> list[Destination]:
    """A hosts-file name: its addresses of the families we have, the
    transport asked for (else UDP, else what we have), the port given (else
    the transport's default). The hosts file holds no NAPTR or SRV."""
    from sipproxy.sip.addresses import DEFAULT_PORTS

    chosen = proto or next((p for p in ("udp", "tcp", "tls") if p in transports), None)
    if chosen is None:
        return []
    return [Destination(chosen, a, port or DEFAULT_PORTS.get(chosen, 5060)) for a in addresses
            if (6 if ":" in a else 4) in families]


class DestinationBlocklist:
    """Destinations a send to which failed, remembered for C{expire}
    seconds (Kamailio's C{dst_blocklist} with C{dst_blocklist_expire}):
    the dispatcher orders them after the others. Bounded like every cache."""

    def __init__(self, clock: Optional[IReactorTime] = None, expire: float = 60.0, max_entries: int = 4096) -> None:
        self._now: Callable[[], float] = getattr(clock, "seconds", None) or time.monotonic
        self.expire = expire
        self._table = BoundedCache("failed destinations", max_entries, max_key=64)

    def add(self, proto: str, host: str, port: int) -> None:
        if self.expire > 0:
            self._table.store((proto, host, port), self._now() + self.expire, len(host))

    def __contains__(self, destination: tuple[str, str, int]) -> bool:
        until = self._table.get(destination)
        return until is not None and until > self._now()

    def __len__(self) -> int:
        return len(self._table)


@implementer(IHostResolver)
class StaticResolver:
    """A fixed table of names to addresses; unknown names resolve to
    nothing (like NXDOMAIN). A records only: for tests of routing that
    need no RFC 3263."""

    def __init__(self, table: dict) -> None:
        self.table = {name.lower(): list(addrs) for name, addrs in table.items()}
        self.queries: list[str] = []

    def resolve_host(self, name: str) -> Deferred:
        self.queries.append(name)
        return succeed(list(self.table.get(name.lower(), [])))
