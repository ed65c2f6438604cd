"""Capture: a copy of every SIP message as HEP v3 (an edge module with a
pure encoder).

HEP v3 (also called EEP) is what Homer, heplify-server, sngrep and
Kamailio's siptrace speak: one UDP datagram per captured message, the
octets C{HEP3}, the total length, then chunks of (vendor, type, length,
value), all in network byte order. The chunks we write, in this order:

  ==== ================================ =====================================
  type what                             value
  ==== ================================ =====================================
  1    IP family                        2 (IPv4) or 10 (IPv6), one octet
  2    IP protocol                      17 (UDP) or 6 (TCP; TLS too, whose
                                        plaintext is what we copy)
  3/4  IPv4 source / destination        4 octets each
  5/6  IPv6 source / destination        16 octets each (instead of 3/4)
  7/8  source / destination port        2 octets each
  9    timestamp, seconds               4 octets (Unix time)
  10   timestamp, microseconds          4 octets
  11   protocol type                    1 (SIP), one octet
  12   capture agent id                 4 octets
  14   authentication key               the --hep-password, if any
  17   correlation id                   the Call-ID, if one is found
  15   payload                          the SIP message, as sent or received
  ==== ================================ =====================================

The payload comes last: some decoders mistake what follows it for trailing
garbage. Our side of a message is the leg's bound address (source of what
we send, destination of what we receive); the other side is the peer's.

L{encode} and L{decode} are pure (no reactor, no sockets). L{HEPSender}
is the edge: one UDP socket per address family, opened through the
reactor, sending each copy at once or not at all. It never blocks (the
socket is non-blocking) and never queues (a full send buffer or an
unreachable collector drops the copy); failures cost one log line per
interval and a count.
"""
from __future__ import annotations

import re
import socket
import struct
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

from twisted.internet import error, protocol
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime, IReactorUDP
from zope.interface import implementer

from sipproxy.interfaces import ICapture, ILeg
from sipproxy.observe.logsafe import SafeLogger
from sipproxy.transport.source_log import SourceLog

__all__ = ["encode", "decode", "HEPPacket", "HEPError", "HEPSender", "call_id_of", "parse_hep_target",
           "MAX_HEP_DATAGRAM", "PROTO_UDP", "PROTO_TCP", "PROTO_TYPE_SIP", "DEFAULT_HEP_PORT"]

log = SafeLogger()

#: the port Homer's collectors listen on by default
DEFAULT_HEP_PORT = 9060
#: IP protocol numbers (chunk 2)
PROTO_UDP = 17
PROTO_TCP = 6
#: HEP protocol type of SIP (chunk 11)
PROTO_TYPE_SIP = 1
#: the largest UDP payload over IPv4; a copy that would not fit is not sent
MAX_HEP_DATAGRAM = 65507

# chunk types (HEP3 specification, "generic" vendor 0)
FAMILY, IP_PROTO, SRC_IP4, DST_IP4, SRC_IP6, DST_IP6, SRC_PORT, DST_PORT = 1, 2, 3, 4, 5, 6, 7, 8
TIME_SEC, TIME_USEC, PROTO_TYPE, AGENT_ID, KEEP_ALIVE, AUTH_KEY, PAYLOAD = 9, 10, 11, 12, 13, 14, 15
COMPRESSED_PAYLOAD, CORRELATION_ID = 16, 17

_AF = {4: (socket.AF_INET, 2, SRC_IP4, DST_IP4), 6: (socket.AF_INET6, 10, SRC_IP6, DST_IP6)}
_HEADER = struct.Struct("!4sH")
_CHUNK = struct.Struct("!HHH")
# the fixed chunks for IPv4 / IPv6: family, protocol, addresses, ports,
# seconds, microseconds, protocol type, agent id (packed in one call)
_FIXED = {
    4: struct.Struct("!HHHB HHHB HHH4s HHH4s HHHH HHHH HHHI HHHI HHHB HHHI".replace(" ", "")),
    6: struct.Struct("!HHHB HHHB HHH16s HHH16s HHHH HHHH HHHI HHHI HHHB HHHI".replace(" ", "")),
}
# the Call-ID header (or its compact form i) in a message's header part
_CALL_ID_RE = re.compile(rb"\r?\n(?:call-id|i)[ \t]*:[ \t]*([^\r\n]*?)[ \t]*\r?\n", re.I)


class HEPError(ValueError):
    """A datagram that is not well-formed HEP v3 (from L{decode})."""


def _packed_ip(host: str, version: int) -> Optional[bytes]:
    try:
        return socket.inet_pton(_AF[version][0], host)
    except (OSError, ValueError):
        return None


def _ip_pair(src: str, dst: str) -> Optional[tuple[int, bytes, bytes]]:
    """(family version, packed source, packed destination); an IPv4
    address beside an IPv6 one (a dual-stack socket) is written as an
    IPv4-mapped IPv6 address. None when either is not an IP address."""
    src, dst = src.strip("[]"), dst.strip("[]")
    v_src = 6 if ":" in src else 4
    v_dst = 6 if ":" in dst else 4
    if v_src != v_dst:
        if v_src == 4:
            src, v_src = "::ffff:" + src, 6
        else:
            dst, v_dst = "::ffff:" + dst, 6
    packed_src, packed_dst = _packed_ip(src, v_src), _packed_ip(dst, v_dst)
    if packed_src is None or packed_dst is None:
        return None
    return v_src, packed_src, packed_dst


def encode(payload: bytes, src: tuple[str, int], dst: tuple[str, int], proto: int, timestamp: float,
           agent_id: int = 0, password: Optional[bytes] = None, correlation: Optional[bytes] = None,
           proto_type: int = PROTO_TYPE_SIP) -> Optional[bytes]:
    """One HEP v3 datagram carrying C{payload}, or None when it cannot be
    written (an address that is not an IP, a port out of range, too big
    for one UDP datagram): capture must never raise into the SIP path.

    @param proto: L{PROTO_UDP} or L{PROTO_TCP}.
    @param timestamp: Unix time of the capture, in seconds.
    @param correlation: the correlation id (the Call-ID for SIP), or None.
    """
    pair = _ip_pair(src[0], dst[0])
    if pair is None or not (0 <= src[1] <= 0xFFFF and 0 <= dst[1] <= 0xFFFF):
        return None
    version, packed_src, packed_dst = pair
    _, family, src_type, dst_type = _AF[version]
    fixed = _FIXED[version]
    seconds = int(timestamp)
    micros = min(int((timestamp - seconds) * 1_000_000), 999_999)
    addr_len = len(packed_src) + 6
    body = fixed.pack(
        0, FAMILY, 7, family,
        0, IP_PROTO, 7, proto,
        0, src_type, addr_len, packed_src,
        0, dst_type, addr_len, packed_dst,
        0, SRC_PORT, 8, src[1],
        0, DST_PORT, 8, dst[1],
        0, TIME_SEC, 10, seconds & 0xFFFFFFFF,
        0, TIME_USEC, 10, micros,
        0, PROTO_TYPE, 7, proto_type,
        0, AGENT_ID, 10, agent_id & 0xFFFFFFFF,
    )
    parts = [b"", body]
    for kind, value in ((AUTH_KEY, password), (CORRELATION_ID, correlation), (PAYLOAD, payload)):
        if value is not None:
            parts.append(_CHUNK.pack(0, kind, len(value) + 6))
            parts.append(value)
    total = 6 + sum(map(len, parts))
    if total > MAX_HEP_DATAGRAM:
        return None
    parts[0] = _HEADER.pack(b"HEP3", total)
    return b"".join(parts)


def call_id_of(message: bytes) -> Optional[bytes]:
    """The Call-ID of a SIP message's header part, from its octets (the
    message may not parse: capture copies what arrived), or None."""
    end = message.find(b"\r\n\r\n")
    match = _CALL_ID_RE.search(message, 0, end + 2 if end >= 0 else min(len(message), 16384))
    if match is None or not match.group(1):
        return None
    return match.group(1)


@dataclass
class HEPPacket:
    """A decoded HEP v3 datagram (what L{decode} returns)."""

    family: int
    proto: int
    src: tuple[str, int]
    dst: tuple[str, int]
    timestamp: float
    proto_type: int
    agent_id: int
    payload: bytes
    password: Optional[bytes] = None
    correlation: Optional[bytes] = None
    #: (vendor, type) of every chunk, in order
    chunks: tuple[tuple[int, int], ...] = ()


def decode(data: bytes) -> HEPPacket:
    """Read a HEP v3 datagram (for tests and tools); raises L{HEPError}."""
    if len(data) < 6 or data[:4] != b"HEP3":
        raise HEPError("not HEP3")
    _, total = _HEADER.unpack_from(data)
    if total != len(data):
        raise HEPError(f"length field {total} but {len(data)} octets")
    values: dict[int, bytes] = {}
    order = []
    pos = 6
    while pos < total:
        if pos + 6 > total:
            raise HEPError("truncated chunk header")
        vendor, kind, length = _CHUNK.unpack_from(data, pos)
        if length < 6 or pos + length > total:
            raise HEPError(f"chunk {kind} has a bad length {length}")
        order.append((vendor, kind))
        if vendor == 0:
            values[kind] = data[pos + 6:pos + length]
        pos += length

    def number(kind: int, size: int) -> int:
        value = values.get(kind)
        if value is None or len(value) != size:
            raise HEPError(f"chunk {kind} missing or not {size} octets")
        return int.from_bytes(value, "big")

    family = number(FAMILY, 1)
    version = {2: 4, 10: 6}.get(family)
    if version is None:
        raise HEPError(f"unknown family {family}")
    af, _, src_type, dst_type = _AF[version]
    try:
        src_ip = socket.inet_ntop(af, values.get(src_type, b""))
        dst_ip = socket.inet_ntop(af, values.get(dst_type, b""))
    except (OSError, ValueError):
        raise HEPError("missing or malformed address chunk") from None
    if PAYLOAD not in values:
        raise HEPError("no payload chunk")
    return HEPPacket(
        family=family, proto=number(IP_PROTO, 1), src=(src_ip, number(SRC_PORT, 2)),
        dst=(dst_ip, number(DST_PORT, 2)), timestamp=number(TIME_SEC, 4) + number(TIME_USEC, 4) / 1e6,
        proto_type=number(PROTO_TYPE, 1), agent_id=number(AGENT_ID, 4), payload=values[PAYLOAD],
        password=values.get(AUTH_KEY), correlation=values.get(CORRELATION_ID), chunks=tuple(order))


def parse_hep_target(text: str) -> tuple[str, int]:
    """C{HOST:PORT}, C{HOST} (port 9060) or C{[IPv6]:PORT}, with an
    optional C{udp:} prefix; the host resolved to an IP address now (at
    start-up, where a blocking lookup harms nothing). Raises ValueError
    naming the problem."""
    value = text.strip()
    if value.lower().startswith("udp:"):
        value = value[4:]
    elif re.match(r"^(tcp|tls|sctp|wss?|https?):", value, re.I):
        raise ValueError(f"{text!r}: we send HEP over UDP only (udp:HOST:PORT)")
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r}: want HOST:PORT or [IPv6]:PORT")
        port_text = rest[1:] if rest else ""
    elif value.count(":") > 1:
        host, port_text = value, ""  # a bare IPv6 address
    else:
        host, _, port_text = value.partition(":")
    if not host:
        raise ValueError(f"{text!r}: no host")
    try:
        port = int(port_text) if port_text else DEFAULT_HEP_PORT
    except ValueError:
        raise ValueError(f"{text!r}: the port is not a number") from None
    if not 0 < port <= 0xFFFF:
        raise ValueError(f"{text!r}: the port must be 1-65535")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except (OSError, UnicodeError) as e:
        raise ValueError(f"{text!r}: cannot resolve {host} ({e})") from None
    return infos[0][4][0], port


class _Quiet(protocol.DatagramProtocol):
    """The collector's socket: we only send; what comes back is ignored."""

    noisy = False

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:
        pass


@implementer(ICapture)
class HEPSender:
    """Sends a HEP v3 copy of each message to every collector.

    @param reactor: opens the UDP sockets (L{IReactorUDP}) and tells the
        time of each capture (L{IReactorTime}).
    @param collectors: (IP, port) pairs (see L{parse_hep_target}).
    @param agent_id: the capture agent id (chunk 12), to tell nodes apart
        in Homer.
    @param password: the authentication key chunk, if the collector wants
        one.
    @param log_interval: seconds between log lines about failed sends.
    @ivar sent_count: copies handed to the kernel.
    @ivar failed_count: copies the kernel refused (full buffer, no route).
    @ivar skipped_count: messages that could not be encoded (too large for
        one datagram, an address that is not an IP).
    """

    def __init__(self, reactor: IReactorUDP, collectors: Sequence[tuple[str, int]], agent_id: int = 0,
                 password: Optional[str] = None, log_interval: float = 10.0,
                 clock: Optional[IReactorTime] = None) -> None:
        self.reactor = reactor
        self.clock: IReactorTime = clock if clock is not None else reactor  # type: ignore[assignment]
        self.collectors = [(host.strip("[]"), port) for host, port in collectors]
        self.agent_id = agent_id
        self.password = password.encode("utf-8") if password else None
        self.errors = SourceLog(log, self.clock, interval=log_interval)
        self.sent_count = self.failed_count = self.skipped_count = 0
        #: (send function, collector address) per collector, once started
        self._routes: list[tuple[Callable[[bytes, tuple[str, int]], Any], tuple[str, int]]] = []
        self._ports: list[Any] = []

    def start(self) -> None:
        """Open one socket per address family the collectors need."""
        if self._ports:
            return
        sockets: dict[bool, Callable[[bytes, tuple[str, int]], Any]] = {}
        for host, port in self.collectors:
            v6 = ":" in host
            if v6 not in sockets:
                listening = self.reactor.listenUDP(0, _Quiet(), interface="::" if v6 else "0.0.0.0")
                self._ports.append(listening)
                sock = getattr(listening, "socket", None)
                # the socket itself where there is one (non-blocking; Twisted's
                # write would check the address again for every copy)
                sockets[v6] = sock.sendto if sock is not None else listening.write
            self._routes.append((sockets[v6], (host, port)))
        log.info("HEP capture to {collectors} as agent {agent}", collectors=self.collectors, agent=self.agent_id)

    def stop(self) -> list[Optional[Deferred]]:
        """Close the sockets; what each C{stopListening} returned."""
        ports, self._ports, self._routes = self._ports, [], []
        self.errors.flush()
        return [port.stopListening() for port in ports]

    # ICapture ---------------------------------------------------------------------------
    def received(self, data: bytes, leg: ILeg, addr: tuple[str, int]) -> None:
        self._copy(data, addr, (leg.host, leg.port), leg.proto)

    def sent(self, data: bytes, leg: ILeg, addr: tuple[str, int]) -> None:
        self._copy(data, (leg.host, leg.port), addr, leg.proto)

    def _copy(self, data: bytes, src: tuple[str, int], dst: tuple[str, int], proto: str) -> None:
        if not self._routes:
            return
        try:
            packet = encode(data, src, dst, PROTO_UDP if proto == "udp" else PROTO_TCP, self.clock.seconds(),
                            self.agent_id, self.password, call_id_of(data))
        except Exception as e:  # what a hostile peer sent must never break the SIP path
            packet = None
            problem = f"{type(e).__name__}: {e}"
        else:
            problem = "too large for one datagram, or not an IP address"
        if packet is None:
            self.skipped_count += 1
            self.errors.warn("encode", "HEP: not copied {size} octets from {src} to {dst}: {problem}",
                             size=len(data), src=src, dst=dst, problem=problem)
            return
        for sendto, collector in self._routes:
            try:
                sendto(packet, collector)
            except (OSError, error.MessageLengthError) as e:  # a full buffer, no route: drop this copy, never wait
                self.failed_count += 1
                self.errors.warn(collector[0], "HEP: sending to {collector} failed: {error}",
                                 collector=collector, error=e)
            else:
                self.sent_count += 1
