"""Flows: reaching a phone behind NAT the way its own packets came in.

A phone behind NAT writes its private address into Contact. Requests sent
there never arrive; what does arrive is what comes back over the flow the
phone opened: the NAT's mapping (its public address and port) over UDP,
the phone's own connection over TCP and TLS (RFC 5626's flow, Kamailio's
C{fix_nated_register} + C{lookup}, Asterisk's C{force_rport,comedia}).

A L{FlowTokens} token names such a flow: the leg it lives on, its
transport, the address the phone's packets came from, the phone's original
Contact and an expiry, sealed with AES-SIV under a key derived from the
proxy secret (so every worker and node sharing the secret can open it, and
nobody else can forge one: a token is a capability to send to that phone,
not to any address). Tokens appear in two places:

- the registrar files a REGISTER that came over NAT with a Route naming
  this proxy and the flow's token, as if an edge proxy had added a Path
  (RFC 3327): requests routed to the binding, by this node or by another
  sharing the store, come back here and leave over the flow;
- the proxy replaces the Contact of a request or response that came over
  NAT with a token URI naming its outgoing leg, so in-dialog requests
  come back here too and leave over the flow, with the phone's own
  Contact restored as their Request-URI.

Pure: no I/O, no clock (the caller passes the time).
"""
from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import struct
from typing import NamedTuple, Optional, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from sipproxy.interfaces import ILeg
from sipproxy.sip.keys import derive
from sipproxy.sip.uri import URI

__all__ = ["Flow", "FlowTokens", "came_over_nat", "names_private_address", "TOKEN_PREFIX"]

#: What starts a flow token (contact tokens start with "b").
TOKEN_PREFIX = "f"
_TOKEN_RE = re.compile(r"f[a-z2-7]{30,}\Z")
_PROTOS = ("udp", "tcp", "tls", "ws", "wss")
# leg index, transport, port, expiry (seconds since the epoch), address length
_HEADER = struct.Struct("!BBHIB")


class Flow(NamedTuple):
    """Where a phone's packets come from, as seen on one of our legs."""

    leg_index: int
    proto: str
    host: str
    port: int
    contact: str  # the phone's Contact URI, as it wrote it

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port


def came_over_nat(contact: URI, proto: str, source: tuple[str, int]) -> bool:
    """Whether a packet whose Contact is C{contact} came from somewhere
    else than that Contact: a NAT changed its address or port on the way,
    or it came over a connection (whose far end is an ephemeral port that
    only that connection reaches). Contacts naming a host, not an address,
    count as reachable as they stand."""
    if proto != "udp":
        return True
    host = contact.host
    if host.startswith("["):
        host = host[1:-1]
    port = contact.port or (5061 if contact.scheme == "sips" else 5060)
    if port != source[1]:
        return True
    if host == source[0]:
        return False
    try:
        return ipaddress.ip_address(host) != ipaddress.ip_address(source[0])
    except ValueError:
        return False


#: Addresses only a NAT puts behind itself (Kamailio's nat_uac_test looks
#: for the same: RFC 1918, shared address space RFC 6598, link-local, ULA).
_PRIVATE_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16", "fc00::/7", "fe80::/10"))


def names_private_address(contact: URI) -> bool:
    """Whether a Contact names an address that is reachable only from
    behind a NAT: the proxy rewrites such Contacts when their packet came
    from elsewhere, and leaves public ones alone (a PBX or a carrier may
    well send from another address than its Contact, and mean it)."""
    host = contact.host.strip("[]")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in network for network in _PRIVATE_NETWORKS if network.version == address.version)


class FlowTokens:
    """Seals flows into tokens (URI user parts) and opens them.

    @param secret: the proxy secret.
    @param legs: the dispatcher's leg list; a token is bound to it, as a
        Contact token is.
    """

    def __init__(self, secret: bytes, legs: Sequence[ILeg]) -> None:
        self._cipher = AESSIV(derive(secret, "nat-flow", 64))
        self._legs = legs

    def _bound_to(self) -> bytes:
        return "|".join(leg.key for leg in self._legs).encode()

    def seal(self, flow: Flow, expires_at: float) -> str:
        """A token for C{flow}, valid until C{expires_at} (seconds since
        the epoch, by the caller's clock)."""
        packed = ipaddress.ip_address(flow.host).packed
        plain = (_HEADER.pack(flow.leg_index, _PROTOS.index(flow.proto), flow.port, int(expires_at), len(packed))
                 + packed + flow.contact.encode("utf-8", "surrogateescape"))
        sealed = self._cipher.encrypt(plain, [self._bound_to()])
        return TOKEN_PREFIX + base64.b32encode(sealed).decode("ascii").rstrip("=").lower()

    def open(self, token: str, now: float) -> Optional[Flow]:
        """The flow behind C{token}, or None when it is not one of ours, was
        tampered with, names a leg we no longer have, or has expired."""
        if not _TOKEN_RE.match(token):
            return None
        body = token[1:].upper()
        try:
            plain = self._cipher.decrypt(base64.b32decode(body + "=" * (-len(body) % 8)), [self._bound_to()])
            leg_index, proto, port, expires_at, size = _HEADER.unpack_from(plain)
            host = str(ipaddress.ip_address(plain[_HEADER.size:_HEADER.size + size]))
            contact = plain[_HEADER.size + size:].decode("utf-8", "surrogateescape")
        except (InvalidTag, binascii.Error, ValueError, struct.error):
            return None
        if expires_at < now or leg_index >= len(self._legs) or proto >= len(_PROTOS):
            return None
        return Flow(leg_index, _PROTOS[proto], host, port, contact)

    def uri(self, flow: Flow, expires_at: float, via_leg: ILeg) -> str:
        """A SIP URI naming C{via_leg} whose user part is the flow's token:
        what a Route or a rewritten Contact carries."""
        token = self.seal(flow, expires_at)
        scheme, _, rest = via_leg.contact.partition(":")
        return f"{scheme}:{token}@{rest}"
