"""Where a message goes next: pure routing decisions (no I/O).

For requests, L{request_hop} turns the next-hop URI into a transport, a
host and a port, honouring C{domain2proxy}, an outgoing proxy, C{maddr}
and C{transport=} (RFC 3263 4.1-4.2 without DNS). For responses,
L{response_hop} reads the Via a response travels back along (RFC 3261
18.2.2, RFC 3581). Host names are resolved by the dispatcher afterwards.
"""
from __future__ import annotations

import ipaddress
from typing import Mapping, NamedTuple, Optional, Union

from sipproxy.sip.addresses import is_ip_literal
from sipproxy.sip.bounded import BoundedCache, CacheSet
from sipproxy.sip.message import Via, parse_via
from sipproxy.sip.uri import URI, URIError, parse_uri, split_host_port

__all__ = [
    "Hop",
    "RoutingError",
    "request_hop",
    "response_hop",
    "response_hop_of",
    "parse_proxy",
    "lookup_domain2proxy",
    "is_unicast",
]

_TRANSPORTS = ("udp", "tcp", "tls", "ws", "wss")


class RoutingError(Exception):
    """No route: C{code} and C{reason} are what a proxy answers with."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason


class Hop(NamedTuple):
    """The next hop before DNS: C{proto} None means "any transport a leg
    has", C{port} None means the default for the transport."""

    proto: Optional[str]
    host: str
    port: Optional[int]

    @property
    def is_ip(self) -> bool:
        return is_ip_literal(self.host)


#: What routing remembers per text (the same few peers and Vias come
#: back all the time); bounded like every cache (L{BoundedCache}).
CACHES = CacheSet()


_UNICAST_CACHE = CACHES.add(BoundedCache("is unicast", 10000, max_key=256))


def is_unicast(host: str) -> bool:
    """False for broadcast, multicast and unspecified addresses, where a
    proxy must never send (RFC 4475 3.3.10). Remembered per address: the
    same few peers come back all the time."""
    known = _known_unicast(host)
    if known is not None:
        return known
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        answer = True
    else:
        answer = not (address.is_multicast or address.is_unspecified
                      or address == ipaddress.IPv4Address("255.255.255.255"))
    return _UNICAST_CACHE.store(host, answer)


def parse_proxy(text: str) -> URI:
    """An outgoing proxy or domain2proxy value: C{host[:port]} or a
    C{sip:}/C{sips:} URI (C{;transport=} picks the transport)."""
    text = text.strip()
    try:
        if text.lower().startswith(("sip:", "sips:")):
            uri = parse_uri(text)
        else:
            host, port = split_host_port(text)
            if not host:
                raise URIError(f"no host in {text!r}")
            uri = URI("sip", host=host, port=port)
            parse_uri(str(uri))  # validates the host
    except URIError as e:
        raise ValueError(f"bad proxy address {text!r}: {e}") from None
    return uri


def lookup_domain2proxy(domain: str, table: Mapping[str, URI]) -> Optional[URI]:
    """The proxy for C{domain}: an exact entry, else C{*.parent} for the
    nearest parent domain, else C{*} (as Net::SIP's domain2proxy)."""
    if not table:
        return None
    domain = domain.lower().rstrip(".")
    proxy = table.get(domain)
    if proxy is not None:
        return proxy
    labels = domain.split(".")
    for i in range(1, len(labels)):
        proxy = table.get("*." + ".".join(labels[i:]))
        if proxy is not None:
            return proxy
    return table.get("*")


def request_hop(
    uri: Union[URI, str],
    domain2proxy: Optional[Mapping[str, URI]] = None,
    outgoing_proxy: Optional[URI] = None,
) -> Hop:
    """Transport, host and port for sending a request to C{uri} (the top
    Route or the Request-URI).

    Precedence: domain2proxy, then the outgoing proxy, then C{maddr}, then
    the URI's own host.

    @raise RoutingError: 416 for a scheme a proxy cannot route, 404 for a
        tel: URI with no gateway configured, 400 for a malformed URI, 503
        for an unknown transport.
    """
    if isinstance(uri, str):
        try:
            uri = parse_uri(uri)
        except URIError as e:
            raise RoutingError(400, f"malformed URI ({e})") from None
    proxy = None
    if uri.is_sip:
        proxy = lookup_domain2proxy(uri.host, domain2proxy or {})
    elif uri.scheme == "tel":
        proxy = (domain2proxy or {}).get("*")
    else:
        raise RoutingError(416, f"cannot route {uri.scheme}: URIs")
    if proxy is None:
        proxy = outgoing_proxy
    if proxy is None and not uri.is_sip:
        raise RoutingError(404, "no gateway for tel: URIs")
    target = proxy if proxy is not None else uri
    proto = _transport(target) or (_transport(uri) if proxy is None else None)
    host = target.host
    if proxy is None and uri.maddr:
        host = uri.maddr.strip("[]")
    return Hop(proto, host, target.port)


def _transport(uri: URI) -> Optional[str]:
    if uri.scheme == "sips":
        return "tls"
    transport = uri.transport
    if transport is None:
        return None
    if transport not in _TRANSPORTS:
        raise RoutingError(503, f"transport {transport} is not supported")
    return transport


def response_hop(via: Via) -> Hop:
    """Where a response goes: the Via's C{maddr}, else C{received}, else its
    sent-by host; C{rport} with a value, else the sent-by port, else the
    default port (RFC 3261 18.2.2, RFC 3581 4)."""
    proto = _PROTO_OF.get(via.transport)
    if proto is None:
        proto = via.transport.lower()
        if proto not in _TRANSPORTS:
            raise RoutingError(503, f"transport {via.transport} is not supported")
    maddr, received, rport = via.hop_params()
    host = maddr or received or via.host
    if host[:1] == "[":
        host = host.strip("[]")
    port = via.port
    if rport and not maddr:
        if not rport.isdigit() or int(rport) > 65535:
            raise RoutingError(400, f"bad rport {rport!r}")
        port = int(rport)
    return Hop(proto, host, port)


def response_hop_of(text: str) -> Hop:
    """L{response_hop} of a Via value given as text, remembered per text:
    the Via a response goes back along is the same in each response of a
    transaction.

    @raise ParseError: for a malformed Via.
    @raise RoutingError: as L{response_hop}.
    """
    hop = _known_hop(text)
    if hop is None:
        hop = _HOPS_BY_VIA.store(text, response_hop(parse_via(text)))
    return hop


_HOPS_BY_VIA = CACHES.add(BoundedCache("response hops by Via", 8192, max_key=512))
# the lookups, bound once (see L{sipproxy.sip.bounded})
_known_unicast = _UNICAST_CACHE.get
_known_hop = _HOPS_BY_VIA.get
_PROTO_OF = {"UDP": "udp", "TCP": "tcp", "TLS": "tls", "WS": "ws", "WSS": "wss"}
