"""Legs: the sockets of sipproxy, as Twisted protocols (an edge module).

A UDP leg is a C{DatagramProtocol}. A TCP leg is a server C{Factory} whose
protocol frames messages by Content-Length; it keeps its connections,
inbound and outbound, so that a response goes back over the connection its
request came on and a request to a peer reuses a connection that peer
opened (RFC 3261 18). Legs only move bytes: they hand what they receive to
the dispatcher and send what it gives them. Stream legs also bound what a
peer can make them hold (see L{sipproxy.transport.stream_guard}).
"""
from __future__ import annotations

import errno
import re
import socket
import struct
import sys
from dataclasses import replace
from typing import Any, Callable, Optional, Protocol

from twisted.internet import error, protocol, udp
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import (IAddress, IOpenSSLClientConnectionCreator, IOpenSSLServerConnectionCreator,
                                         IPushProducer)
from twisted.internet.posixbase import PosixReactorBase

from twisted.python.failure import Failure
from zope.interface import implementer

from sipproxy.observe.logsafe import SafeLogger
from sipproxy.sip.bounded import remember
from sipproxy.interfaces import IDispatcher, ILeg
from sipproxy.transport.legspec import LegSpec
from sipproxy.transport.source_log import SourceLog
from sipproxy.transport.stream_guard import ConnectionGuard, StreamLimits
from sipproxy.sip.uri import format_host_port

__all__ = ["UDPLeg", "StreamLeg", "TLSLeg", "TLSOptions", "SIPStreamProtocol", "make_leg", "MAX_HEADER",
           "MAX_BODY"]

log = SafeLogger()

#: Stream framing limits (as Net::SIP's SocketPool): a bigger header or body
#: closes the connection.
MAX_HEADER = 16 * 1024
MAX_BODY = 64 * 1024
#: Default socket buffer size for UDP legs: bursts of several thousand
#: datagrams must not overflow the kernel queue while the reactor is busy.
DEFAULT_BUFFER = 4 * 1024 * 1024

#: The largest UDP payload: SIP over UDP may use all of it (RFC 3261 18.1.1
#: only asks senders to prefer TCP above the path MTU); Twisted's default
#: of 8192 would cut longer datagrams.
MAX_DATAGRAM = 65535
#: how long a stream leg's stop() waits for its connections to flush and close
STOP_GRACE = 2.0
#: how long after a send (with someone to tell) an ICMP error for its
#: destination still counts as that send's failure
ICMP_WINDOW = 2.0

_CONTENT_LENGTH_RE = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*([0-9]+)[ \t\r]*$", re.I | re.M)


def _address(addr: Any) -> tuple[str, int]:
    """(host, port) from a Twisted address object or tuple."""
    if isinstance(addr, tuple):
        return addr[0], addr[1]
    return addr.host, addr.port


class _LegIdentity:
    """What every leg writes about itself into SIP messages."""

    proto = "udp"
    dispatcher: Optional[IDispatcher] = None
    index = -1

    def _set_address(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.family = 6 if ":" in host else 4
        self.sent_by = format_host_port(host, port)
        if self.proto == "tls":  # sips: implies TLS (RFC 3261 19.1; transport=tls is deprecated)
            self.contact = f"sips:{self.sent_by}"
        else:
            transport = "" if self.proto == "udp" else f";transport={self.proto}"
            self.contact = f"sip:{self.sent_by}{transport}"
        self.key = f"{self.proto}:{self.sent_by}"
        self.via_prefix = f"SIP/2.0/{self.proto.upper()} {self.sent_by};branch="

    def can_reach(self, proto: str, family: int) -> bool:
        return proto == self.proto and family == self.family

    def has_flow(self, addr: tuple[str, int]) -> bool:
        """False when a flow to C{addr} (L{sipproxy.proxy.flows}) is known
        to be gone: only WebSocket legs know it (they cannot reconnect)."""
        return True

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.key}>"


@implementer(ILeg)
class UDPLeg(_LegIdentity, protocol.DatagramProtocol):
    """A UDP leg. Datagrams shorter than 13 octets are keep-alives and are
    dropped before parsing (as Net::SIP does)."""

    proto = "udp"
    noisy = False

    def __init__(self, host: str, port: int = 5060, buffer_size: int = DEFAULT_BUFFER,
                 reuse_port: bool = False) -> None:
        self._set_address(host, port)
        self.buffer_size = buffer_size
        self.reuse_port = reuse_port
        self._port: Any = None
        self._sendto: Any = None
        self._family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sendable: dict[str, bool] = {}

    def listen(self, reactor: Any) -> None:
        """Bind the socket (port 0 lets the kernel choose); with
        C{reuse_port}, worker processes share the address."""
        lean = isinstance(reactor, PosixReactorBase)
        if self.reuse_port:
            sock = _reusable_socket(self.host, self.port, socket.SOCK_DGRAM)
            if lean:
                self._port = _SIPDatagramPort._fromListeningDescriptor(
                    reactor, sock.fileno(), sock.family, self, maxPacketSize=MAX_DATAGRAM)
                self._port.startListening()
            else:
                self._port = reactor.adoptDatagramPort(sock.fileno(), sock.family, self, MAX_DATAGRAM)
            sock.close()  # the reactor holds its own duplicate
        elif lean:
            self._port = _SIPDatagramPort(self.port, self, self.host, MAX_DATAGRAM, reactor)
            self._port.startListening()
        else:
            self._port = reactor.listenUDP(self.port, self, interface=self.host, maxPacketSize=MAX_DATAGRAM)
        self._set_address(self.host, self._port.getHost().port)
        if self.buffer_size:
            _size_buffers(self._port.socket, self.buffer_size, self.key)
        self._family = self._port.socket.family
        self._sendto = self._port.socket.sendto if lean else None
        self._sendable = {}
        self._clock = reactor
        self._awaiting_icmp: dict[tuple[str, int], tuple[float, Callable[[str], Any]]] = {}
        if lean:
            self._port.receive_errors()

    def stop(self) -> Any:
        if self._port is not None:
            port, self._port = self._port, None
            return port.stopListening()
        return None

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        if len(data) < 13:
            return
        self.dispatcher.message_received(data, self, addr)

    def send(self, data: bytes, addr: tuple[str, int], on_error: Optional[Callable[[str], Any]] = None) -> None:
        sendto = self._sendto
        if self._port is None or self.transport is None:
            log.warn("leg {leg} is closed; dropped {size} octets to {dst}", leg=self.key, size=len(data), dst=addr)
            if on_error is not None:
                on_error(f"leg {self.key} is closed")
            return
        if sendto is None:
            self._send_through_transport(data, addr, on_error)
            return
        if addr[0] not in self._sendable and not self._can_send_to(addr[0]):
            log.warn("leg {leg}: not an address of its family, dropped {size} octets to {dst}",
                     leg=self.key, size=len(data), dst=addr)
            if on_error is not None:
                on_error(f"{addr[0]} is not an address leg {self.key} can reach")
            return
        try:
            sendto(data, addr)
        except OSError as e:  # a full send buffer, a message too long, an unreachable network
            if not (e.errno in _UNREACHABLE and self._port.errors_received and self._resend(data, addr)):
                log.warn("leg {leg}: send to {dst} failed: {error}", leg=self.key, dst=addr, error=e)
                if on_error is not None:
                    on_error(str(e))
                return
        if on_error is not None and self._port.errors_received:
            self._await_icmp(addr, on_error)

    def _resend(self, data: bytes, addr: tuple[str, int]) -> bool:
        """With the kernel's error queue on, a send reports the ICMP error
        an earlier datagram caused (and sends nothing): hand that error to
        its owner and send this datagram again. True when it went."""
        self._port.read_errors()
        try:
            self._sendto(data, addr)
        except OSError:
            return False
        return True

    def _await_icmp(self, addr: tuple[str, int], on_error: Callable[[str], Any]) -> None:
        """Remember who to tell if an ICMP unreachable comes back for
        C{addr} within L{ICMP_WINDOW} (bounded: a full table starts again)."""
        awaiting = self._awaiting_icmp
        if len(awaiting) >= 4096:
            awaiting.clear()
        awaiting[(addr[0], addr[1])] = (self._clock.seconds() + ICMP_WINDOW, on_error)

    def unreachable(self, addr: tuple[str, int], reason: str) -> None:
        """The kernel passed on an ICMP unreachable for a datagram we sent
        to C{addr} (see L{_SIPDatagramPort.receive_errors}): tell whoever
        sent there lately and asked to hear of failures."""
        waiting = self._awaiting_icmp.pop(addr, None)
        if waiting is None or waiting[0] < self._clock.seconds():
            log.debug("leg {leg}: {reason} from {dst}", leg=self.key, reason=reason, dst=addr)
            return
        log.info("leg {leg}: {dst} is unreachable ({reason})", leg=self.key, dst=addr, reason=reason)
        waiting[1](f"{reason} from {addr[0]}:{addr[1]}")

    def _can_send_to(self, host: str) -> bool:
        """True for an IP address of the socket's family: the socket is
        used directly, and a host name would block on a DNS lookup."""
        try:
            socket.inet_pton(self._family, host)
        except (OSError, ValueError):
            return False
        return remember(self._sendable, host, True, 4096)

    def _send_through_transport(self, data: bytes, addr: tuple[str, int],
                                on_error: Optional[Callable[[str], Any]] = None) -> None:
        """Sending on reactors that are not posix: Twisted's C{write}."""
        try:
            self.transport.write(data, addr)
        except (OSError, error.InvalidAddressError, error.MessageLengthError) as e:
            log.warn("leg {leg}: send to {dst} failed: {error}", leg=self.key, dst=addr, error=e)
            if on_error is not None:
                on_error(str(e))


class _SIPDatagramPort(udp.Port):
    """Twisted's UDP port with a shorter path per datagram, for SIP legs.

    It reads at most C{burst} datagrams per wake-up, so one busy leg leaves
    the reactor to the others, and catches only what a non-blocking read
    raises; the leg sends through the socket directly, having checked each
    destination address once (Twisted's C{write} re-checks it per
    datagram). Used on posix reactors; others get Twisted's own port."""

    burst = 128
    #: the kernel queues ICMP errors for us (IP_RECVERR; Linux)
    errors_received = False

    def receive_errors(self) -> None:
        """Ask the kernel (Linux) to queue the ICMP errors our datagrams
        cause, with their destination: an unconnected UDP socket hears of
        none otherwise. The queue is read in L{doRead}; a socket whose only
        news is an error is reported to the reactor as an error event,
        which Twisted takes for a lost connection: L{readConnectionLost}
        reads the queue and goes back to reading instead."""
        option = _RECVERR.get(self.addressFamily)
        if option is None:
            return
        try:
            self.socket.setsockopt(option[0], option[1], 1)
        except OSError:
            return
        self.errors_received = True
        _declare_half_closeable(self)

    def readConnectionLost(self, reason: Failure) -> None:
        """(Only with L{receive_errors}: see there.) An error event with
        nothing to read: read the error queue, keep listening."""
        self.read_errors()
        if self.connected and self.socket is not None:
            self.reactor.addReader(self)

    def writeConnectionLost(self, reason: Failure) -> None:
        """A UDP port writes through the socket directly: nothing to do."""

    def read_errors(self) -> None:
        """Drain the error queue; each ICMP unreachable goes to the leg
        with the destination of the datagram that caused it."""
        receive = self.socket.recvmsg
        for _ in range(self.burst):
            try:
                _, ancillary, _, addr = receive(1, 512, _MSG_ERRQUEUE)
            except OSError:  # empty (EAGAIN), or nothing we can read
                return
            for level, kind, data in ancillary:
                if (level, kind) not in _RECVERR_MESSAGES or len(data) < 8:
                    continue
                code, origin = struct.unpack_from("=IB", data)
                if origin in (_ORIGIN_ICMP, _ORIGIN_ICMP6) and code in _UNREACHABLE and addr:
                    try:
                        self.protocol.unreachable((addr[0], addr[1]), f"ICMP {errno.errorcode.get(code, code)}")
                    except Exception:
                        log.failure("leg {leg}: reporting an ICMP error failed", leg=self.protocol.key)

    def doRead(self) -> None:
        receive = self.socket.recvfrom
        size = self.maxPacketSize
        handle = self.protocol.datagramReceived
        v6 = self.addressFamily == socket.AF_INET6
        for i in range(self.burst):
            try:
                data, addr = receive(size)
            except BlockingIOError:
                if i == 0 and self.errors_received:  # woken with nothing to read: an error event
                    self.read_errors()
                return
            except OSError as e:  # ICMP errors of earlier sends surface here: not fatal
                if self.errors_received:
                    self.read_errors()
                    continue
                log.debug("leg {leg}: receive failed: {error}", leg=self.protocol.key, error=e)
                return
            if v6:
                addr = addr[:2]
            try:
                handle(data, addr)
            except Exception:
                log.failure("leg {leg}: handling a datagram from {source} failed", leg=self.protocol.key,
                            source=addr)


#: Linux's IP_RECVERR / IPV6_RECVERR (level, option) per family, the
#: control messages they bring, and what in them is an ICMP unreachable
_RECVERR = ({socket.AF_INET: (socket.IPPROTO_IP, 11), socket.AF_INET6: (socket.IPPROTO_IPV6, 25)}
            if sys.platform.startswith("linux") else {})
_RECVERR_MESSAGES = {(socket.IPPROTO_IP, 11), (socket.IPPROTO_IPV6, 25)}
_MSG_ERRQUEUE = 0x2000
_ORIGIN_ICMP, _ORIGIN_ICMP6 = 2, 3
_UNREACHABLE = {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH}


def _declare_half_closeable(port: Any) -> None:
    """Make the reactor call C{readConnectionLost} (not C{connectionLost})
    on an error event of this one port."""
    from twisted.internet.interfaces import IHalfCloseableDescriptor
    from zope.interface import alsoProvides

    alsoProvides(port, IHalfCloseableDescriptor)


#: Linux's SO_RCVBUFFORCE and SO_SNDBUFFORCE (not in the socket module):
#: as root they go beyond net.core.rmem_max / wmem_max.
_FORCE = {socket.SO_RCVBUF: 33, socket.SO_SNDBUF: 32} if sys.platform.startswith("linux") else {}


def _reusable_socket(host: str, port: int, kind: int) -> socket.socket:
    """A bound socket with SO_REUSEPORT (and listening, for TCP), for
    worker processes sharing one address."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        if kind == socket.SOCK_STREAM:
            sock.listen(100)
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        from twisted.internet.error import CannotListenError

        raise CannotListenError(host, port, e) from None
    return sock


def _size_buffers(sock: socket.socket, size: int, name: str) -> None:
    """Ask for large receive and send buffers (forced where allowed)."""
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        force = _FORCE.get(option)
        try:
            if force is None:
                raise OSError("no forcing here")
            sock.setsockopt(socket.SOL_SOCKET, force, size)
        except OSError:
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, size)
            except OSError as e:
                log.warn("leg {leg}: cannot size socket buffer: {error}", leg=name, error=e)


@implementer(IPushProducer)
class FlowControlled:
    """What a stream connection (TCP, TLS or WebSocket) shares: the
    transport's verdict on our writes (C{IPushProducer}) and the Deferreds
    of those waiting for it to end. Needs C{leg} (with its C{clock}),
    C{paused_since}, C{_queued} and C{_lost_waiters}."""

    leg: Any
    paused_since: Optional[float]
    _queued: int
    _lost_waiters: list[Deferred]

    def when_lost(self) -> Deferred:
        """A Deferred firing once the connection is gone (after a graceful
        close has sent what was queued)."""
        d: Deferred = Deferred()
        self._lost_waiters.append(d)
        return d

    def _fire_lost_waiters(self) -> None:
        waiters, self._lost_waiters = self._lost_waiters, []
        for d in waiters:
            d.callback(None)

    # IPushProducer: the transport's verdict on our writes
    def pauseProducing(self) -> None:
        if self.paused_since is None:
            self.paused_since = self.leg.clock.seconds()
            self._queued = 0

    def resumeProducing(self) -> None:
        self.paused_since = None
        self._queued = 0

    def stopProducing(self) -> None:
        self.paused_since = None


class SIPStreamProtocol(FlowControlled, protocol.Protocol):
    """One TCP connection carrying SIP: frames messages by Content-Length,
    answers RFC 5626 CRLF keep-alive pings, and keeps what a peer can make
    it hold bounded.

    It registers itself as the transport's producer: the transport calls
    C{pauseProducing} when its send buffer is full (the peer does not read)
    and C{resumeProducing} once it has drained. What is written while paused
    is counted against C{write_queue_max}, and the pause against
    C{send_timeout}; past either the connection is aborted, which frees
    the buffer at once (a graceful close would wait for a reader that
    never comes). The leg's sweep checks the timestamps kept here."""

    def __init__(self, leg: "StreamLeg", outbound: bool = False) -> None:
        self.leg = leg
        self.outbound = outbound
        self.peer: Optional[tuple[str, int]] = None
        self.last_active = 0.0
        #: when the message not yet complete began (None: nothing partial)
        self.partial_since: Optional[float] = None
        #: when the transport last said its buffer was full (None: it is not)
        self.paused_since: Optional[float] = None
        #: when a graceful close began (None: open)
        self.closing_since: Optional[float] = None
        self._queued = 0
        self._buffer = b""
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._counted = False
        self._aborted = False
        self._seen = False  # a message or ping has arrived
        #: who wants to hear that this (outbound) connection could not be opened
        self.connect_errors: list[Callable[[str], Any]] = []
        self._lost_waiters: list[Deferred] = []

    def connectionMade(self) -> None:
        self.peer = _address(self.transport.getPeer())
        now = self.last_active = self.leg.clock.seconds()
        if not self.outbound:
            self.partial_since = now  # the first message, too, must arrive within the read timeout
        self.transport.registerProducer(self, True)
        self._counted = True
        self.leg.connection_made(self)
        pending, self._pending, self._pending_size = self._pending, [], 0
        self.connect_errors = []
        for data in pending:
            self.write(data)

    def connectionLost(self, reason: Failure = None) -> None:
        self._buffer = b""
        if self._counted:
            self._counted = False
            self.leg.connection_lost(self)
        self._fire_lost_waiters()

    # writing -------------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if self._aborted:
            return
        limit = self.leg.limits.write_queue_max
        if self.transport is None or self.peer is None:  # still connecting
            self._pending_size += len(data)
            if self._pending_size > limit:
                self._pending_size -= len(data)
                self.leg.source_log.warn(self.leg.host, "leg {leg}: {size} octets wait for a connection "
                                         "still being opened; dropped {dropped} more", leg=self.leg.key,
                                         size=self._pending_size, dropped=len(data))
                return
            self._pending.append(data)
            return
        self.last_active = self.leg.clock.seconds()
        if self.paused_since is not None:
            self._queued += len(data)
            if self._queued > limit:
                self.abort(f"the peer does not read: more than {limit} octets queued "
                           "(--tcp-conn-wq-max)")
                return
        self.transport.write(data)

    # closing -------------------------------------------------------------------------------
    def close(self) -> None:
        """Close after sending what is queued (the sweep aborts it if the
        peer does not take it within the send timeout)."""
        if self.transport is None or self._aborted or self.closing_since is not None:
            return
        self.closing_since = self.leg.clock.seconds()
        self.transport.unregisterProducer()  # with a producer, loseConnection would wait for it
        self.transport.loseConnection()

    def abort(self, reason: str) -> None:
        """Drop the connection and everything queued on it, now."""
        if self._aborted:
            return
        self._aborted = True
        self._buffer = b""
        self.leg.source_log.warn(self.peer[0] if self.peer else "?", "leg {leg}: closing connection from "
                                 "{peer}: {reason}", leg=self.leg.key, peer=self.peer, reason=reason)
        if self.transport is not None:
            self.transport.abortConnection()

    @property
    def closed(self) -> bool:
        """True once the connection is closing or closed (not while it
        is still being opened)."""
        return self._aborted or self.closing_since is not None or (
            self.transport is not None and bool(self.transport.disconnecting))

    # reading -------------------------------------------------------------------------------
    def dataReceived(self, data: bytes) -> None:
        if self._aborted:
            return
        self.last_active = self.leg.clock.seconds()
        buffer = self._buffer + data if self._buffer else data
        progressed = False
        while buffer:
            if buffer[:1] in (b"\r", b"\n"):
                if buffer.startswith(b"\r\n\r\n"):  # RFC 5626 3.5.1 ping: answer pong
                    self.write(b"\r\n")
                    self._seen = progressed = True
                    buffer = buffer[4:]
                    continue
                if b"\r\n\r\n".startswith(buffer):
                    break  # maybe the start of a ping split across segments
                buffer = buffer.lstrip(b"\r\n")
                continue
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEADER:
                    self._refuse("header larger than {limit} octets".format(limit=MAX_HEADER))
                    return
                break
            if end > MAX_HEADER:
                self._refuse("header larger than {limit} octets".format(limit=MAX_HEADER))
                return
            head = buffer[:end]
            lengths = set(_CONTENT_LENGTH_RE.findall(head))
            if len(lengths) != 1:
                self._refuse("missing or conflicting Content-Length" if not lengths
                             else "conflicting Content-Length")
                return
            length = int(lengths.pop())
            if length > MAX_BODY:
                self._refuse(f"body of {length} octets exceeds {MAX_BODY}")
                return
            total = end + 4 + length
            if len(buffer) < total:
                break
            message, buffer = buffer[:total], buffer[total:]
            self._seen = progressed = True
            self.leg.dispatcher.message_received(message, self.leg, self.peer, stream=True)
            if self.closed:
                return
        self._buffer = buffer
        if buffer:
            if self.partial_since is None or progressed:
                self.partial_since = self.last_active  # a message begins: it must be whole in time
        elif self._seen:
            self.partial_since = None  # (an inbound connection's first one is timed from the connect)

    def _refuse(self, reason: str) -> None:
        """A framing error: close the connection (garbage, or a peer out
        of step with us: nothing later on it can be trusted)."""
        self._buffer = b""
        self.leg.source_log.warn(self.peer[0] if self.peer else "?", "leg {leg}: closing connection from "
                                 "{peer}: {reason}", leg=self.leg.key, peer=self.peer, reason=reason)
        self.close()


class _OutboundFactory(protocol.ClientFactory):
    noisy = False

    def __init__(self, leg: "StreamLeg", addr: tuple[str, int], proto: SIPStreamProtocol) -> None:
        self.leg = leg
        self.addr = addr
        self.proto = proto

    def buildProtocol(self, addr: IAddress) -> SIPStreamProtocol:
        return self.proto

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        self.leg.connect_failed(self.addr, self.proto, reason)


class _Admission(protocol.Factory):
    """In front of a stream leg's listening socket (and of TLS, so a
    refused peer costs no handshake): refuses connections beyond the
    guard's limits by building no protocol, which makes Twisted close the
    accepted socket at once."""

    noisy = False

    def __init__(self, leg: "StreamLeg", inner: protocol.Factory) -> None:
        self.leg = leg
        self.inner = inner

    def doStart(self) -> None:
        self.inner.doStart()

    def doStop(self) -> None:
        self.inner.doStop()

    def buildProtocol(self, addr: IAddress) -> Optional[protocol.Protocol]:
        host = getattr(addr, "host", "?")
        reason = self.leg.guard.refusal(host)
        if reason is not None:
            self.leg.refused += 1
            self.leg.source_log.warn(host, "leg {leg}: refused a connection from {peer}: {reason}",
                                     leg=self.leg.key, peer=(host, getattr(addr, "port", 0)), reason=reason)
            return None
        return self.inner.buildProtocol(addr)


@implementer(ILeg)
class StreamLeg(_LegIdentity, protocol.ServerFactory):
    """A TCP leg: listens, accepts, connects, and keeps connections by peer
    address and by alias (the sent-by a peer put in its Via).

    Its L{StreamLimits} bound what peers can make it hold (connections,
    queued octets, time to send and to read a message, idle time); the
    counts shared by all stream legs of a process live in the
    L{ConnectionGuard} (one is made at C{listen} when none is given)."""

    proto = "tcp"
    noisy = False
    protocol = SIPStreamProtocol  # type: ignore[assignment]
    connect_timeout = 10

    def __init__(self, host: str, port: int = 5060, idle_timeout: Optional[float] = None,
                 reuse_port: bool = False, limits: Optional[StreamLimits] = None,
                 guard: Optional[ConnectionGuard] = None) -> None:
        self._set_address(host, port)
        limits = limits or (guard.limits if guard is not None else StreamLimits())
        if idle_timeout is not None:
            limits = replace(limits, idle_timeout=idle_timeout)
        self.limits = limits
        self.guard = guard
        self.reuse_port = reuse_port
        self.connections: dict[tuple[str, int], SIPStreamProtocol] = {}
        self._aliases: dict[tuple[str, int], SIPStreamProtocol] = {}
        self._open: set[SIPStreamProtocol] = set()
        #: inbound connections refused by the limits, since start
        self.refused = 0
        self.clock: Any = None
        self._reactor: Any = None
        self._port: Any = None
        self._sweeper: Any = None
        self._connecting: dict[tuple[str, int], Any] = {}

    @property
    def idle_timeout(self) -> float:
        return self.limits.idle_timeout

    @property
    def source_log(self) -> SourceLog:
        """The rate-limited log for lines about peers (see L{SourceLog})."""
        return self.guard.log

    # lifecycle ----------------------------------------------------------
    def listen(self, reactor: Any) -> None:
        from twisted.internet.task import LoopingCall

        self._reactor = self.clock = reactor
        if self.guard is None:
            self.guard = ConnectionGuard(self.limits, reactor)
        factory = _Admission(self, self._server_factory())
        if self.reuse_port:
            sock = _reusable_socket(self.host, self.port, socket.SOCK_STREAM)
            self._port = reactor.adoptStreamPort(sock.fileno(), sock.family, factory)
            sock.close()
        else:
            self._port = reactor.listenTCP(self.port, factory, backlog=100, interface=self.host)
        self._set_address(self.host, self._port.getHost().port)
        self._sweeper = LoopingCall(self.sweep)
        self._sweeper.clock = reactor
        self._sweeper.start(self.limits.sweep_interval, now=False)

    def stop(self) -> Any:
        if self._sweeper is not None and self._sweeper.running:
            self._sweeper.stop()
        for connector in list(self._connecting.values()):
            try:
                connector.stopConnecting()
            except error.NotConnectingError:
                pass
        self._connecting.clear()
        # Wait (briefly) for the connections to send what is queued and go:
        # a program that stops its reactor right after stop() would drop the
        # last writes, e.g. the 200 to the BYE of the call it just ended.
        waits = []
        for conn in list(self._open):
            if conn.transport is not None and not conn._aborted:
                waits.append(conn.when_lost().addTimeout(STOP_GRACE, self.clock))
            conn.close()
        if self._port is not None:
            port, self._port = self._port, None
            waits.insert(0, port.stopListening())
        if not waits:
            return None
        return DeferredList(waits, consumeErrors=True)

    def buildProtocol(self, addr: IAddress) -> SIPStreamProtocol:
        proto = SIPStreamProtocol(self)
        proto.factory = self
        return proto

    # connection bookkeeping --------------------------------------------------
    def connection_made(self, conn: SIPStreamProtocol) -> None:
        assert conn.peer is not None
        self._connecting.pop(conn.peer, None)
        self.connections[conn.peer] = conn
        self._open.add(conn)
        self.guard.opened(conn.peer[0], not conn.outbound)

    def connection_lost(self, conn: SIPStreamProtocol) -> None:
        if conn in self._open:
            self._open.discard(conn)
            self.guard.closed(conn.peer[0], not conn.outbound)
        if conn.peer is not None and self.connections.get(conn.peer) is conn:
            del self.connections[conn.peer]
        for key in [k for k, c in self._aliases.items() if c is conn]:
            del self._aliases[key]

    def add_alias(self, peer: tuple[str, int], alias: tuple[str, int]) -> None:
        """Remember that the peer at C{peer} also answers to C{alias} (the
        host and port of its Via sent-by), so responses and new requests
        for that address reuse the connection (RFC 5923 in spirit)."""
        conn = self.connections.get(peer)
        if conn is not None and alias != peer:
            self._aliases[alias] = conn

    def sweep(self) -> None:
        """Enforce the timeouts: abort connections whose peer has not taken
        our data within C{send_timeout} or has not completed a message
        within C{read_timeout}; close those idle for C{idle_timeout}."""
        now = self.clock.seconds()
        limits = self.limits
        for conn in list(self._open):
            if conn._aborted:
                continue
            if conn.closing_since is not None:
                if now - conn.closing_since > limits.send_timeout:
                    conn.abort(f"not closed after {limits.send_timeout:g} s (the peer does not read)")
            elif conn.paused_since is not None and now - conn.paused_since > limits.send_timeout:
                conn.abort(f"the peer has not read for {limits.send_timeout:g} s (--tcp-send-timeout)")
            elif conn.partial_since is not None and now - conn.partial_since > limits.read_timeout:
                conn.abort(f"no whole message within {limits.read_timeout:g} s (--tcp-msg-read-timeout)")
            elif now - conn.last_active > limits.idle_timeout:
                self.source_log.info(conn.peer[0], "leg {leg}: closing idle connection {peer}", leg=self.key,
                                     peer=conn.peer)
                conn.close()
        self.source_log.flush()

    def expire_idle(self) -> None:
        """The timeouts, now (the name older callers know)."""
        self.sweep()

    # sending -------------------------------------------------------------------
    def send(self, data: bytes, addr: tuple[str, int], on_error: Optional[Callable[[str], Any]] = None) -> None:
        conn = self.connections.get(addr) or self._aliases.get(addr)
        if conn is None:
            conn = self._connect(addr)
        if on_error is not None and conn.peer is None:  # still connecting: a refusal is this message's failure
            conn.connect_errors.append(on_error)
        conn.write(data)

    def _connect(self, addr: tuple[str, int]) -> SIPStreamProtocol:
        conn = SIPStreamProtocol(self, outbound=True)
        self.connections[addr] = conn  # so messages sent meanwhile queue on it
        self._dial(addr, _OutboundFactory(self, addr, conn))
        return conn

    def _server_factory(self) -> protocol.Factory:
        """What the listening socket serves (TLS legs wrap it)."""
        return self

    def _client_factory(self, factory: protocol.ClientFactory) -> protocol.ClientFactory:
        """What an outbound connection runs (TLS legs wrap it)."""
        return factory

    def _dial(self, addr: tuple[str, int], factory: protocol.ClientFactory) -> None:
        self._connecting[addr] = self._reactor.connectTCP(
            addr[0], addr[1], self._client_factory(factory), timeout=self.connect_timeout,
            bindAddress=(self.host, 0))

    def connect_failed(self, addr: tuple[str, int], conn: SIPStreamProtocol, reason: Failure) -> None:
        self._connecting.pop(addr, None)
        if self.connections.get(addr) is conn:
            del self.connections[addr]
        log.warn("leg {leg}: cannot connect to {dst}: {reason}; {count} message(s) dropped",
                 leg=self.key, dst=addr, reason=reason.getErrorMessage(), count=len(conn._pending))
        reports, conn.connect_errors = conn.connect_errors, []
        for report in reports:
            report(f"cannot connect to {addr[0]}:{addr[1]}: {reason.getErrorMessage()}")


class TLSOptions:
    """Certificates for TLS legs: ours (presented as server and as client,
    as Net::SIP does) and, optionally, the CAs peers must be signed by.

    @param verify_peers: refuse peers whose certificate is not signed by
        C{ca_file} (servers we connect to always; clients that connect to
        us too). Without it nothing is verified (the usual SIP practice);
        the host name is never checked, the proxy connects to addresses.
    """

    def __init__(self, cert_file: str, key_file: Optional[str] = None, ca_file: Optional[str] = None,
                 verify_peers: bool = False) -> None:
        from twisted.internet import ssl

        with open(cert_file, "rb") as f:
            cert_pem = f.read()
        key_pem = cert_pem
        if key_file is not None:
            with open(key_file, "rb") as f:
                key_pem = f.read()
        ours = ssl.PrivateCertificate.loadPEM(cert_pem + b"\n" + key_pem)
        kwargs: dict[str, Any] = {"privateKey": ours.privateKey.original, "certificate": ours.original}
        if ca_file is not None:
            with open(ca_file, "rb") as f:
                ca = ssl.Certificate.loadPEM(f.read())
            kwargs["caCerts"] = [ca.original]
        self.verify_peers = verify_peers and ca_file is not None
        self.server = ssl.CertificateOptions(verify=self.verify_peers, requireCertificate=self.verify_peers,
                                             **kwargs)
        self.client = ssl.CertificateOptions(verify=self.verify_peers, **kwargs)


@implementer(ILeg)
class TLSLeg(StreamLeg):
    """A TLS leg: a TCP leg whose connections, inbound and outbound, run
    TLS (RFC 3261 26.2) with the certificates in L{TLSOptions}."""

    proto = "tls"

    def __init__(self, host: str, port: int = 5061, idle_timeout: Optional[float] = None,
                 reuse_port: bool = False, tls: Optional[TLSOptions] = None, limits: Optional[StreamLimits] = None,
                 guard: Optional[ConnectionGuard] = None) -> None:
        if tls is None:
            raise ValueError("a TLS leg needs TLSOptions (a certificate and key)")
        self.tls = tls
        super().__init__(host, port, idle_timeout, reuse_port, limits=limits, guard=guard)

    def _server_factory(self) -> protocol.Factory:
        from twisted.protocols.tls import TLSMemoryBIOFactory

        return TLSMemoryBIOFactory(CurrentTLS(self), False, self)

    def _client_factory(self, factory: protocol.ClientFactory) -> protocol.ClientFactory:
        from twisted.protocols.tls import TLSMemoryBIOFactory

        return TLSMemoryBIOFactory(CurrentTLS(self), True, factory)

    def set_tls(self, tls: TLSOptions) -> None:
        """New certificates (a reload): new connections, inbound and
        outbound, use them; open connections keep the ones they began with."""
        self.tls = tls


class _HasTLS(Protocol):
    tls: TLSOptions


@implementer(IOpenSSLServerConnectionCreator, IOpenSSLClientConnectionCreator)
class CurrentTLS:
    """Makes each new TLS connection from the leg's certificates of the
    moment (given a context factory, Twisted would keep that one), so a
    reload's C{set_tls} reaches new connections only."""

    def __init__(self, leg: _HasTLS) -> None:
        self.leg = leg

    def serverConnectionForTLS(self, tlsProtocol: Any) -> Any:
        from OpenSSL import SSL

        return SSL.Connection(self.leg.tls.server.getContext(), None)

    def clientConnectionForTLS(self, tlsProtocol: Any) -> Any:
        from OpenSSL import SSL

        return SSL.Connection(self.leg.tls.client.getContext(), None)


def make_leg(spec: LegSpec, **options: Any) -> Any:
    """The leg object for a specification (not yet listening). Stream legs
    take C{idle_timeout}, C{limits} (L{StreamLimits}) and C{guard} (a
    L{ConnectionGuard} to share with the process's other stream legs)."""
    reuse_port = options.get("reuse_port", False)
    if spec.proto == "udp":
        return UDPLeg(spec.host, spec.port, buffer_size=options.get("buffer_size", DEFAULT_BUFFER),
                      reuse_port=reuse_port)
    stream = {"idle_timeout": options.get("idle_timeout"), "reuse_port": reuse_port,
              "limits": options.get("limits"), "guard": options.get("guard")}
    if spec.proto == "tcp":
        return StreamLeg(spec.host, spec.port, **stream)
    if spec.proto == "tls":
        return TLSLeg(spec.host, spec.port, tls=options.get("tls"), **stream)
    if spec.proto in ("ws", "wss"):  # imported here: autobahn loads only for WebSocket legs
        from sipproxy.transport.websocket import make_websocket_leg

        return make_websocket_leg(spec.proto, spec.host, spec.port, tls=options.get("tls"), **stream)
    raise ValueError(f"transport {spec.proto} is not supported yet")
