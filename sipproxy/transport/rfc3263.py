"""RFC 3263 target selection, without I/O: which DNS questions to ask for
a next hop, and how to order what comes back (NAPTR by order and
preference, SRV by priority and RFC 2782 weighted random choice).

The resolution is a generator: it yields a batch of L{Query}s and is sent
back a mapping from each query to its records; it returns the ordered
L{Destination}s. The edge (L{sipproxy.transport.resolver}) runs the
queries through C{twisted.names} and a cache; tests run it with plain
dictionaries. Nothing here touches the reactor or the network, and the
random choice is injected, so the ordering can be checked exactly.

What RFC 3263 4.1/4.2 skips, this skips: a numeric IP needs no DNS; an
explicit port asks for A/AAAA only; a transport (C{;transport=}, or TLS
for a C{sips:} URI) asks for SRV of that transport, then A/AAAA.
"""
from __future__ import annotations

import random as _random
from typing import Callable, Generator, Iterable, Mapping, NamedTuple, Optional, Sequence

from sipproxy.sip.addresses import DEFAULT_PORTS, is_ip_literal

__all__ = ["Naptr", "Srv", "Query", "Destination", "NAPTR_SERVICES", "SRV_PREFIXES", "MAX_DESTINATIONS",
           "order_naptr", "order_srv", "weighted_order", "resolution", "Answers"]

#: NAPTR services (RFC 3263 4.1, RFC 7118 for WebSocket) to our transports
NAPTR_SERVICES = {"SIPS+D2T": "tls", "SIP+D2T": "tcp", "SIP+D2U": "udp", "SIP+D2W": "ws", "SIPS+D2W": "wss"}
#: SRV owner name prefixes per transport (RFC 3263 4.1, RFC 7118 7)
SRV_PREFIXES = {"udp": "_sip._udp.", "tcp": "_sip._tcp.", "tls": "_sips._tcp.", "ws": "_sip._ws.",
                "wss": "_sips._ws."}
#: the transports tried by SRV when a name has no usable NAPTR, in our
#: order of preference (RFC 3263 4.1 lets the client choose; a sip: URI
#: asks only the _sip services)
SRV_FALLBACK = ("udp", "tcp")
#: at most this many destinations come out of one resolution: each is a
#: failover attempt, and DNS data is input from the network
MAX_DESTINATIONS = 16
#: at most this many SRV targets are looked up (A/AAAA) per resolution
MAX_SRV_TARGETS = 8


class Naptr(NamedTuple):
    order: int
    preference: int
    flags: str
    service: str
    replacement: str


class Srv(NamedTuple):
    priority: int
    weight: int
    port: int
    target: str


class Query(NamedTuple):
    """One DNS question: C{kind} is C{NAPTR}, C{SRV}, C{A} or C{AAAA}."""

    name: str
    kind: str


class Destination(NamedTuple):
    """Where to send: a transport, an IP address, a port."""

    proto: str
    host: str
    port: int


#: what the caller sends back into a resolution: records per query (NAPTR
#: and SRV as the tuples above, A and AAAA as address strings); a query
#: missing from the mapping counts as answered with nothing
Answers = Mapping[Query, Sequence]

RandInt = Callable[[int, int], int]


def order_naptr(records: Iterable[Naptr], transports: Iterable[str], secure: bool = False) -> list[tuple[str, str]]:
    """(transport, SRV name) in NAPTR order and preference, keeping only
    terminal "s" records of SIP services we have a transport for (RFC 3263
    4.1; a C{sips:} target keeps only the secure services)."""
    usable = set(transports)
    chosen = []
    for record in sorted(records, key=lambda r: (r.order, r.preference)):
        proto = NAPTR_SERVICES.get(record.service.upper())
        if proto is None or proto not in usable or record.flags.lower() != "s":
            continue
        if secure and proto not in ("tls", "wss"):
            continue
        replacement = record.replacement.rstrip(".")
        if replacement and (proto, replacement) not in chosen:
            chosen.append((proto, replacement))
    return chosen


def weighted_order(records: Sequence[Srv], randint: RandInt) -> list[Srv]:
    """One priority group in RFC 2782's order: zero weights first in the
    list, then repeatedly pick a random number in [0, sum of weights] and
    take the first record whose running sum reaches it."""
    left = [r for r in records if r.weight == 0] + [r for r in records if r.weight > 0]
    ordered = []
    while len(left) > 1:
        total = sum(r.weight for r in left)
        pick = randint(0, total)
        running = 0
        for i, record in enumerate(left):
            running += record.weight
            if running >= pick:
                ordered.append(left.pop(i))
                break
    return ordered + left  # the last one needs no choice


def order_srv(records: Iterable[Srv], randint: RandInt = _random.randint) -> list[Srv]:
    """SRV records in the order to try them: lowest priority first, within
    a priority by weighted random choice (RFC 2782). A single record whose
    target is "." says the service is not offered: nothing."""
    records = [r for r in records if 0 <= r.weight <= 65535]
    if len(records) == 1 and records[0].target.rstrip(".") == "":
        return []
    groups: dict[int, list[Srv]] = {}
    for record in records:
        if record.target.rstrip("."):
            groups.setdefault(record.priority, []).append(record)
    ordered: list[Srv] = []
    for priority in sorted(groups):
        ordered.extend(weighted_order(groups[priority], randint))
    return ordered


def _address_queries(name: str, families: Iterable[int]) -> list[Query]:
    return [Query(name, "A" if family == 4 else "AAAA") for family in sorted(families)]


def _addresses(answers: Answers, name: str, families: Iterable[int]) -> list[str]:
    found: list[str] = []
    for query in _address_queries(name, families):
        for address in answers.get(query, ()):
            if address not in found:
                found.append(address)
    return found


def _default_proto(transports: Sequence[str]) -> Optional[str]:
    """UDP when we have it, else TCP, else TLS (RFC 3263 4.1: UDP for a
    sip: URI; a client without UDP may use what it has)."""
    for proto in ("udp", "tcp", "tls"):
        if proto in transports:
            return proto
    return None


def resolution(host: str, proto: Optional[str], port: Optional[int], transports: Sequence[str],
               families: Iterable[int] = (4, 6), randint: RandInt = _random.randint,
               ) -> Generator[list[Query], Answers, list[Destination]]:
    """The RFC 3263 client procedure for one next hop.

    @param host: the target host (a name or an IP literal).
    @param proto: the transport the URI asked for (None: any we have).
    @param port: the explicit port (None: none written).
    @param transports: the transports we have legs for, in any order.
    @param families: the address families we have legs for (4, 6).
    @param randint: C{randint(a, b)} for the SRV weighted choice.
    @return: (as the generator's value) the destinations in the order to
        try them; empty when the name leads nowhere we can go.
    """
    families = sorted(set(families))
    transports = list(transports)
    host = host[1:-1] if host[:1] == "[" and host[-1:] == "]" else host
    if is_ip_literal(host):
        chosen = proto or _default_proto(transports)
        if chosen is None:
            return []
        return [Destination(chosen, host, port or DEFAULT_PORTS.get(chosen, 5060))]
    name = host.rstrip(".").lower()
    if port is not None:  # RFC 3263 4.2: an explicit port: A/AAAA only
        chosen = proto or _default_proto(transports)
        if chosen is None:
            return []
        answers = yield _address_queries(name, families)
        return _limited(Destination(chosen, a, port) for a in _addresses(answers, name, families))
    if proto is not None:  # a transport was asked for: SRV of it (4.2)
        services = [(proto, SRV_PREFIXES.get(proto, "_sip._" + proto + ".") + name)]
    else:
        answers = yield [Query(name, "NAPTR")]
        services = order_naptr(answers.get(Query(name, "NAPTR"), ()), transports)
        if not services:  # no NAPTR we can use: SRV for what we have (4.1)
            services = [(p, SRV_PREFIXES[p] + name) for p in SRV_FALLBACK if p in transports]
    srv_answers = (yield [Query(srv_name, "SRV") for _, srv_name in services]) if services else {}
    targets: list[tuple[str, Srv]] = []
    for service_proto, srv_name in services:
        for record in order_srv(srv_answers.get(Query(srv_name, "SRV"), ()), randint):
            targets.append((service_proto, record))
    targets = targets[:MAX_SRV_TARGETS]
    if not targets:  # no SRV: the host's addresses, the transport's default port (4.2)
        chosen = proto or _default_proto(transports)
        if chosen is None:
            return []
        answers = yield _address_queries(name, families)
        return _limited(Destination(chosen, a, DEFAULT_PORTS.get(chosen, 5060))
                        for a in _addresses(answers, name, families))
    queries: list[Query] = []
    for _, record in targets:
        target = record.target.rstrip(".").lower()
        if not is_ip_literal(target):
            queries.extend(q for q in _address_queries(target, families) if q not in queries)
    answers = (yield queries) if queries else {}
    destinations = []
    for service_proto, record in targets:
        target = record.target.rstrip(".").lower()
        addresses = [target] if is_ip_literal(target) else _addresses(answers, target, families)
        destinations.extend(Destination(service_proto, a, record.port) for a in addresses)
    return _limited(destinations)


def _limited(destinations: Iterable[Destination]) -> list[Destination]:
    """Without repeats, at most L{MAX_DESTINATIONS}."""
    seen: list[Destination] = []
    for destination in destinations:
        if destination not in seen:
            seen.append(destination)
            if len(seen) == MAX_DESTINATIONS:
                break
    return seen


def run(steps: Generator[list[Query], Answers, list[Destination]],
        lookup: Callable[[Query], Sequence]) -> list[Destination]:
    """Drive a resolution synchronously with C{lookup(query) -> records}
    (for tests and for answers already cached)."""
    try:
        queries = next(steps)
        while True:
            queries = steps.send({q: lookup(q) for q in queries})
    except StopIteration as done:
        return done.value
