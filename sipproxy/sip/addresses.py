"""Addresses in one place: the default port of a transport or scheme, "is
this host an IP literal", and the address-of-record a URI is filed under.

Each was written out in several modules before (six port tables, four IP
tests, three address-of-record forms); a change to one of them now
changes them all. Pure: no I/O.
"""
from __future__ import annotations

import ipaddress
from typing import Callable, Optional
from urllib.parse import unquote

from sipproxy.sip.bounded import BoundedCache

__all__ = ["DEFAULT_PORTS", "default_port", "is_ip_literal", "is_bare_ip_literal", "address_of_record"]

#: The port a transport (or a URI scheme) implies when none is written
#: (RFC 3261 19.1.2, 18).
#: WebSocket transports (RFC 7118) default to the ports of HTTP and HTTPS.
DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061, "sip": 5060, "sips": 5061, "ws": 80, "wss": 443}


def default_port(proto_or_scheme: str, transport: Optional[str] = None) -> int:
    """5061 for C{tls} and C{sips} (or a URI with C{transport=tls}), else
    5060."""
    if transport is not None and transport.lower() == "tls":
        return 5061
    return DEFAULT_PORTS.get(proto_or_scheme.lower(), 5060)


#: host text -> is it an IP literal; nothing longer than 64 is an address
_IP_LITERALS = BoundedCache("is an IP literal", 10000, max_key=64)
_known_literal = _IP_LITERALS.get


def is_ip_literal(host: str) -> bool:
    """True for an IPv4 or IPv6 literal, bracketed or not. Remembered per
    text (a bounded table): the same few peers come back all the time, and
    C{ipaddress} is slow beside a dict lookup."""
    known = _known_literal(host)
    if known is None:
        text = host[1:-1] if host[:1] == "[" and host[-1:] == "]" else host
        try:
            ipaddress.ip_address(text)
            known = True
        except ValueError:
            known = False
        _IP_LITERALS.store(host, known)  # longer than 64: not kept (junk must not fill the table)
    return known


def is_bare_ip_literal(host: Optional[str]) -> bool:
    """True for an IPv4 or IPv6 literal written bare, as SDP, the ng
    protocol and a socket take it (C{::1}, never C{[::1]})."""
    return bool(host) and host[:1] != "[" and is_ip_literal(host)  # type: ignore[arg-type,index]


def address_of_record(scheme: str, user: Optional[str], host: str, port: Optional[int],
                      port_is_ours: Optional[Callable[[str, int], bool]] = None,
                      drop_default_port: bool = True) -> str:
    """C{scheme:user@host[:port]}, the key a registrar files bindings under
    (RFC 3261 10.3 step 5): the user part unescaped and compared as written
    (it is case-sensitive, RFC 3261 19.1.4), the host in lower case, and a
    port unless it is the scheme's default (with C{drop_default_port}) or,
    by C{port_is_ours}, one of the proxy's own addresses (a phone that
    writes the proxy's port means the same domain)."""
    scheme = scheme.lower()
    host = host.lower()
    if port is not None and ((drop_default_port and port == DEFAULT_PORTS.get(scheme, 5060))
                             or (port_is_ours is not None and port_is_ours(host, port))):
        port = None
    user_part = f"{unquote(user)}@" if user else ""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{scheme}:{user_part}{host}" + (f":{port}" if port is not None else "")
