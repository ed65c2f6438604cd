"""The local RTP relay: Net::SIP's NATHelper on reactor UDP sockets.

L{LocalRelay} implements L{sipproxy.interfaces.INATHelper} and is a
Twisted C{Service} (its expiry timer runs while it is started). Sessions
are kept exactly as Net::SIP keys them (netsip.md 3.2):

    call (Call-ID) -> idfrom -> CSeq -> group_from, groups_to[idto], sessions[idto]

  - Side 0 (the request's SDP) gets one socket group per (idfrom, CSeq);
    side 1 (a response's SDP) one per answering dialog (idto), so a forked
    INVITE gets a group per fork. A retransmission gets the same group (and
    the same ports) back. A CSeq lower than one already seen for the same
    idfrom is refused (an old retransmission).
  - A session pairs the from-group with one to-group when it is activated.
    Activating a newer session between the same two parties ends the older
    ones as "replaced".
  - Sockets are opened with C{reactor.listenUDP} on the outgoing leg's
    address (or the configured C{address}), in blocks of consecutive ports
    starting at an even port: RTP on even, RTCP on odd (RFC 3550 11).

Forwarding: what the To party sends to socket i of the from-group is sent
from socket i of the to-group to the From party's SDP address, and the
other way round, so each peer sees media from the port it sends to
(symmetric RTP). The first packet arriving on a socket fixes where the
other direction goes when it does not come from the SDP address
(latching: a phone behind NAT gets its media back at its public address).
Later packets from another source are still forwarded (as Net::SIP) and
counted as C{foreign}.

Expiry (every C{expire_interval} seconds while the service runs, times
after Net::SIP): an active session idle for C{idle_timeout} (30 s) ends
as "expired"; a group never used in a session is released after
C{unused_timeout} (180 s); the sockets of an ended session (BYE, CANCEL,
error, replaced, expired) are released C{close_delay} (1 s) after it
ended -- forwarding goes on until then.

Departures from Net::SIP, each for a reason:
  - C{a=rtcp} (RFC 3605) is understood: RTCP goes to the port and address
    it names, not blindly to port + 1.
  - Rejected (port 0) and held (C{0.0.0.0}/C{::}) streams and TCP media get
    no sockets at all (Net::SIP opens sockets it never uses); sockets of
    the two sides are paired per media line, and a session needs the same
    number of media lines on both sides (not the same number of sockets).
  - A media address that is a host name is not resolved (that would block
    the reactor): that direction waits for latching to learn the peer.
  - Limits are per call (C{max_sockets_per_call}) and in total
    (C{max_sockets}); Net::SIP limits per SDP and in total.

The per-packet path does one comparison, one C{sendto} on the paired
socket and two counter updates: no allocation beyond Twisted's, no clock
read (activity is sampled by the expiry timer from the counters), no
logging. Every ended session is logged once, as one structured line.
"""
from __future__ import annotations

import errno
import ipaddress
import random
import select
import socket
from typing import Any, Iterator, Optional, Sequence

from twisted.application.service import Service
from twisted.internet import error as ierror
from twisted.internet import udp
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.base import BasePort
from twisted.internet.posixbase import PosixReactorBase
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from sipproxy.interfaces import INATHelper
from sipproxy.transport.legs import _size_buffers
from sipproxy.sip.sdp import Media, MediaTarget, SessionDescription

__all__ = ["LocalRelay", "RelayPort", "DEFAULT_PORT_RANGE", "DEFAULT_RELAY_BUFFER", "parse_port_range"]

#: Receive/send buffer of relay sockets: a few milliseconds of a busy
#: stream must fit while the process is not scheduled (the kernel default,
#: about 208 KiB, overflowed in the benchmark).
DEFAULT_RELAY_BUFFER = 1024 * 1024

log = Logger()

#: Below Linux's ephemeral range (32768-60999), so relay ports do not race
#: outgoing connections for numbers.
DEFAULT_PORT_RANGE = (16384, 32767)


def parse_port_range(text: str) -> tuple[int, int]:
    """C{"LOW-HIGH"} -> (low, high); at least one even/odd pair inside.

    @raise ValueError: with a one-line reason.
    """
    low_text, sep, high_text = text.strip().partition("-")
    if not sep or not low_text.strip().isdigit() or not high_text.strip().isdigit():
        raise ValueError(f"{text!r} is not LOW-HIGH (two port numbers)")
    low, high = int(low_text), int(high_text)
    if not 1 <= low <= 65535 or not 1 <= high <= 65535:
        raise ValueError(f"{text!r}: ports must be 1-65535")
    if low + (low % 2) + 1 > high:
        raise ValueError(f"{text!r} holds no even/odd port pair")
    return low, high


def _unspecified(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_unspecified
    except ValueError:
        return False


def _is_ip(address: Optional[str]) -> bool:
    if not address:
        return False
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


class _QuietPort(udp.Port):
    """A UDP port that does not log its opening and closing: Twisted logs
    both for every port, and the relay opens and closes four per call."""

    def _bindSocket(self) -> None:
        try:
            sock = self.createInternetSocket()
            sock.bind((self.interface, self.port))
        except OSError as e:
            raise ierror.CannotListenError(self.interface, self.port, e)
        self._realPortNumber = sock.getsockname()[1]
        self.connected = 1
        self.socket = sock
        self.fileno = sock.fileno

    def connectionLost(self, reason: Any = None) -> None:
        self._realPortNumber = None
        self.maxThroughput = -1
        BasePort.connectionLost(self, reason)
        self.protocol.doStop()
        self.socket.close()
        del self.socket
        del self.fileno


class _EpollReader:
    """Every relay socket in one epoll set, which the reactor watches as a
    single reader: one wake-up forwards what waits on all ready sockets.

    Twisted would dispatch each socket's readiness separately (through its
    logging context) and read each datagram with a second C{recvfrom} that
    fails with EAGAIN; with many streams that framing costs more than the
    forwarding. Here a round reads up to C{burst} datagrams from every
    ready socket; rounds repeat while sockets are ready, until C{budget}
    datagrams were handled in this wake-up, so SIP on the same reactor
    still gets its turn within a millisecond or so. Linux only (the relay
    falls back to one Twisted port per socket).
    """

    burst = 8
    budget = 256

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.epoll = select.epoll()
        self.ports: dict[int, "RelayPort"] = {}

    # the reactor watches the set only while it holds sockets

    # IReadDescriptor ----------------------------------------------------------
    def fileno(self) -> int:
        return self.epoll.fileno()

    def logPrefix(self) -> str:
        return "relay"

    def doRead(self) -> None:
        poll = self.epoll.poll
        ports = self.ports
        burst = self.burst
        left = self.budget
        while left > 0:
            ready = poll(0)
            if not ready:
                return
            for fd, _event in ready:
                port = ports.get(fd)
                if port is None:
                    continue
                receive = port.receive_from
                handle = port.datagramReceived
                for _ in range(burst):
                    try:
                        data, addr = receive(65535)
                    except BlockingIOError:
                        break
                    except OSError:  # e.g. an ICMP error reported on the socket
                        break
                    handle(data, addr)
                    left -= 1

    def connectionLost(self, reason: Any) -> None:
        self.close()

    # sockets ------------------------------------------------------------------
    def listen(self, port: int, protocol: "RelayPort", interface: str, buffer_size: int) -> "_EpollPort":
        family = socket.AF_INET6 if ":" in interface else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind((interface, port))
        except OSError as e:
            sock.close()
            raise ierror.CannotListenError(interface, port, e)
        sock.setblocking(False)
        if buffer_size:
            _size_buffers(sock, buffer_size, f"relay {interface}:{port}")
        listening = _EpollPort(self, sock, protocol)
        if not self.ports:
            self.reactor.addReader(self)
        self.ports[sock.fileno()] = protocol
        self.epoll.register(sock.fileno(), select.EPOLLIN)
        protocol.receive_from = sock.recvfrom
        return listening

    def forget(self, fd: int) -> None:
        if self.ports.pop(fd, None) is not None and not self.ports:
            self.reactor.removeReader(self)
        try:
            self.epoll.unregister(fd)
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        if self.epoll.closed:
            return
        if self.ports:
            self.reactor.removeReader(self)
            self.ports.clear()
        self.epoll.close()


class _EpollPort:
    """One relay socket read through L{_EpollReader}: the little of a
    Twisted port the relay uses (C{socket}, C{getHost}, C{stopListening})."""

    def __init__(self, reader: _EpollReader, sock: socket.socket, protocol: "RelayPort") -> None:
        self.reader = reader
        self.socket = sock
        self.protocol = protocol

    def getHost(self) -> Any:
        host, port = self.socket.getsockname()[:2]
        return (IPv6Address if ":" in host else IPv4Address)("UDP", host, port)

    def stopListening(self) -> None:
        if self.socket.fileno() >= 0:
            self.reader.forget(self.socket.fileno())
            self.socket.close()


def _listen_udp(reactor: Any, port: int, protocol: DatagramProtocol, interface: str) -> Any:
    """C{reactor.listenUDP} without the two log lines per port, on a real
    reactor; a fake reactor (tests) gets the plain call."""
    if isinstance(reactor, PosixReactorBase):
        listening = _QuietPort(port, protocol, interface, reactor=reactor)
        listening.startListening()
        return listening
    return reactor.listenUDP(port, protocol, interface=interface)


class RelayPort(DatagramProtocol):
    """One relay socket. What arrives is sent out through the paired socket
    (C{sendto}, bound to the partner's socket) to C{dst}.

    @ivar number: the local port number.
    @ivar dst: where packets arriving here are sent, or None.
    @ivar expect: where the peer said (in SDP) it sends from.
    @ivar source: the first source seen since wiring (the latched peer).
    @ivar packets: packets forwarded; C{bytes}: their payload bytes.
    @ivar errors: packets that could not be sent; C{dropped}: packets that
        arrived while the socket belonged to no session; C{foreign}:
        packets forwarded from a source other than the latched one.
    """

    noisy = False

    def __init__(self, address: str, number: int) -> None:
        self.address = address
        self.number = number
        self.listening: Any = None
        self.receive_from: Any = None
        self.sendto: Any = None
        self.dst: Optional[tuple] = None
        self.expect: Optional[tuple] = None
        self.source: Optional[tuple] = None
        self.partner: Optional[RelayPort] = None
        self.owner: Any = None
        self.base_packets = self.base_bytes = 0
        self.packets = self.bytes = self.errors = self.dropped = self.foreign = 0

    # the hot path ---------------------------------------------------------
    def datagramReceived(self, data: bytes, addr: Any) -> None:
        if addr == self.source:
            try:
                self.sendto(data, self.dst)
            except (OSError, TypeError):
                self.errors += 1
            else:
                self.packets += 1
                self.bytes += len(data)
        else:
            self._other_source(data, addr)

    def _other_source(self, data: bytes, addr: Any) -> None:
        if self.sendto is None:
            self.dropped += 1
            return
        if self.source is None:
            self.source = addr
            if addr != self.expect and self.partner is not None:
                self.partner.dst = addr  # latch: the peer's media goes back where it comes from
        else:
            self.foreign += 1
        try:
            self.sendto(data, self.dst)
        except (OSError, TypeError):
            self.errors += 1
        else:
            self.packets += 1
            self.bytes += len(data)

    # wiring ---------------------------------------------------------------
    def wire(self, partner: "RelayPort", dst: Optional[tuple], expect: Optional[tuple], owner: Any) -> None:
        self.unwire()
        self.partner = partner
        self.sendto = partner.listening.socket.sendto
        self.dst = dst
        self.expect = expect
        self.source = None
        self.owner = owner
        self.base_packets, self.base_bytes = self.packets, self.bytes

    def unwire(self) -> None:
        """Detach from the current session, crediting it what went through."""
        owner = self.owner
        if owner is not None:
            owner._credit(self)
        self.owner = None
        self.sendto = self.partner = self.dst = self.expect = self.source = None


class _Media:
    """The sockets of one media line on one side, with the SDP targets."""

    __slots__ = ("ports", "targets", "address", "base")

    def __init__(self, ports: list, targets: list, address: str) -> None:
        self.ports = ports
        self.targets = targets
        self.address = address
        self.base = ports[0].number if ports else 0


class _Group:
    """The sockets allocated for one SDP (Net::SIP's SocketGroup)."""

    __slots__ = ("id", "side", "created", "lastmod", "seen", "media", "orig", "users", "used", "release_at",
                 "released")

    def __init__(self, ident: str, side: int, created: float, media: list, orig: list) -> None:
        self.id = ident
        self.side = side
        self.created = created
        self.lastmod = 0.0
        self.seen = 0
        self.media = media
        self.orig = orig  # "addr:port/range" of the original SDP, per media
        self.users: set = set()  # live sessions using this group
        self.used = False  # ever part of a session
        self.release_at: Optional[float] = None
        self.released = False

    @property
    def ports(self) -> Iterator[RelayPort]:
        for media in self.media:
            yield from media.ports

    @property
    def socket_count(self) -> int:
        return sum(len(media.ports) for media in self.media)

    def sample(self, now: float) -> None:
        """Update C{lastmod} when packets went through since the last sample."""
        total = 0
        for media in self.media:
            for port in media.ports:
                total += port.packets
        if total != self.seen:
            self.seen = total
            self.lastmod = now


class _Transaction:
    __slots__ = ("group_from", "groups_to", "sessions")

    def __init__(self) -> None:
        self.group_from: Optional[_Group] = None
        self.groups_to: dict[str, _Group] = {}
        self.sessions: dict[str, _Session] = {}

    def groups(self) -> list[_Group]:
        groups = list(self.groups_to.values())
        if self.group_from is not None:
            groups.append(self.group_from)
        return groups


class _Call:
    __slots__ = ("call_id", "by_from", "socket_count")

    def __init__(self, call_id: str) -> None:
        self.call_id = call_id
        self.by_from: dict[str, dict[int, _Transaction]] = {}
        self.socket_count = 0


class _Session:
    """A from-group and a to-group forwarding to each other."""

    __slots__ = ("id", "key", "cseq", "sfrom", "sto", "created", "ended", "reason", "param",
                 "packets_from", "bytes_from", "packets_to", "bytes_to")

    def __init__(self, ident: int, key: Any, sfrom: _Group, sto: _Group, created: float, param: Any) -> None:
        self.id = ident
        self.key = key
        self.cseq = key.cseq
        self.sfrom = sfrom
        self.sto = sto
        self.created = created
        self.ended: Optional[float] = None
        self.reason: Optional[str] = None
        self.param = param
        self.packets_from = self.bytes_from = self.packets_to = self.bytes_to = 0

    def _credit(self, port: RelayPort) -> None:
        packets = port.packets - port.base_packets
        octets = port.bytes - port.base_bytes
        port.base_packets, port.base_bytes = port.packets, port.bytes
        if port in self._to_ports():
            self.packets_from += packets  # to-group sockets receive from the From party
            self.bytes_from += octets
        else:
            self.packets_to += packets
            self.bytes_to += octets

    def _to_ports(self) -> set:
        return set(self.sto.ports)

    def counters(self) -> dict[str, int]:
        """Packets and bytes each way so far ("from": sent by the From party)."""
        counts = {"packets_from": self.packets_from, "bytes_from": self.bytes_from,
                  "packets_to": self.packets_to, "bytes_to": self.bytes_to}
        for port in self.sto.ports:
            if port.owner is self:
                counts["packets_from"] += port.packets - port.base_packets
                counts["bytes_from"] += port.bytes - port.base_bytes
        for port in self.sfrom.ports:
            if port.owner is self:
                counts["packets_to"] += port.packets - port.base_packets
                counts["bytes_to"] += port.bytes - port.base_bytes
        return counts

    def lastmod(self) -> float:
        return max(self.sfrom.lastmod, self.sto.lastmod, self.created)

    def info(self, call_id: str) -> dict[str, Any]:
        info = {
            "call_id": call_id, "cseq": self.cseq, "session": self.id,
            "idfrom": self.key.idfrom, "idto": self.key.idto,
            "uri_from": self.key.uri_from, "uri_to": self.key.uri_to,
            "from": ",".join(self.sfrom.orig), "to": ",".join(self.sto.orig),
            "start": self.created, "end": self.ended, "reason": self.reason,
        }
        info.update(self.counters())
        return info


@implementer(INATHelper)
class LocalRelay(Service):
    """An RTP relay in this process (see the module docstring).

    @param reactor: provides C{listenUDP} (and the clock if C{clock} is None).
    @param port_range: (low, high), inclusive.
    @param address: bind and advertise this address instead of the
        outgoing leg's (C{--rtp-address}).
    @param idle_timeout: end an active session after this many idle seconds.
    @param unused_timeout: release a group never used in a session after
        this many seconds.
    @param close_delay: release the sockets of an ended session this many
        seconds after it ended.
    @param max_sockets: at most this many relay sockets in total (None: no
        limit but the port range).
    @param max_sockets_per_call: at most this many per Call-ID.
    @param expire_interval: how often the expiry runs while started.
    @param clock: an C{IReactorTime}; default the reactor.
    @param rng: a C{random.Random} for port choice (tests seed it).
    @ivar socket_count: the number of open relay sockets.
    """

    name = "nat-relay"

    def __init__(
        self,
        reactor: Any,
        port_range: Sequence[int] = DEFAULT_PORT_RANGE,
        address: Optional[str] = None,
        idle_timeout: float = 30.0,
        unused_timeout: float = 180.0,
        close_delay: float = 1.0,
        max_sockets: Optional[int] = None,
        max_sockets_per_call: Optional[int] = None,
        expire_interval: float = 1.0,
        clock: Any = None,
        rng: Optional[random.Random] = None,
        max_attempts: int = 1000,
        buffer_size: int = DEFAULT_RELAY_BUFFER,
    ) -> None:
        low, high = port_range
        if low > high:
            raise ValueError(f"empty port range {low}-{high}")
        self.reactor = reactor
        self.clock = clock if clock is not None else reactor
        self.port_range = (int(low), int(high))
        self.address = address
        self.idle_timeout = idle_timeout
        self.unused_timeout = unused_timeout
        self.close_delay = close_delay
        self.max_sockets = max_sockets or None
        self.max_sockets_per_call = max_sockets_per_call or None
        self.expire_interval = expire_interval
        self.max_attempts = max_attempts
        self.rng = rng or random.Random()
        self.calls: dict[str, _Call] = {}
        self.socket_count = 0
        self._bound: dict[str, set[int]] = {}
        self._session_ids = 0
        self._loop: Optional[LoopingCall] = None
        self._warned: set[str] = set()
        self.buffer_size = buffer_size
        self._reader: Optional[_EpollReader] = None

    # -- service --------------------------------------------------------------
    def startService(self) -> None:
        super().startService()
        self._loop = LoopingCall(self._tick)
        self._loop.clock = self.clock
        self._loop.start(self.expire_interval, now=False).addErrback(
            lambda f: log.failure("relay expiry stopped", f))

    def _tick(self) -> None:
        try:
            self.expire()
        except Exception:  # keep expiring: a stopped timer would leak every socket
            log.failure("relay expiry failed")

    def stopService(self) -> Any:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        self.close_all("shutdown")
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        return super().stopService()

    # -- INATHelper -------------------------------------------------------------
    def allocate_sockets(self, session: Any, side: int, local_ip: str,
                         sdp: SessionDescription) -> Optional[list[Optional[MediaTarget]]]:
        """Sockets for the media of one side; the targets to write into the
        SDP (None for a stream to leave alone), or None on failure."""
        call = self.calls.get(session.call_id)
        if call is None:
            call = self.calls[session.call_id] = _Call(session.call_id)
        by_cseq = call.by_from.setdefault(session.idfrom, {})
        tx = by_cseq.get(session.cseq)
        if tx is None:
            if any(cseq > session.cseq for cseq in by_cseq):
                log.info("relay: refused old CSeq {cseq} in {call_id}", cseq=session.cseq,
                         call_id=session.call_id)
                self._drop_empty(call)
                return None
            tx = by_cseq[session.cseq] = _Transaction()
        if side == 0:
            group = tx.group_from
        else:
            group = tx.groups_to.get(session.idto)
        if group is None:
            group = self._new_group(call, session.idfrom if side == 0 else session.idto, side, local_ip, sdp)
            if group is None:
                self._drop_empty(call)
                return None
            if side == 0:
                tx.group_from = group
            else:
                tx.groups_to[session.idto] = group
        return self._targets(group, sdp)

    def activate_session(self, session: Any, param: Any = None) -> Optional[int]:
        """Pair the groups of C{session}: 1 when new, -1 when already
        active, None when incomplete or unknown."""
        call = self.calls.get(session.call_id)
        tx = call.by_from.get(session.idfrom, {}).get(session.cseq) if call else None
        if tx is None:
            return None
        if session.idto in tx.sessions:
            return -1
        gfrom, gto = tx.group_from, tx.groups_to.get(session.idto)
        if gfrom is None or gto is None or gfrom.released or gto.released:
            return None
        if len(gfrom.media) != len(gto.media):
            log.info("relay: {call_id}: {a} media lines offered, {b} answered; not relaying",
                     call_id=session.call_id, a=len(gfrom.media), b=len(gto.media))
            return None
        self._session_ids += 1
        sess = _Session(self._session_ids, session, gfrom, gto, self.clock.seconds(), param)
        tx.sessions[session.idto] = sess
        for group in (gfrom, gto):
            group.users.add(sess)
            group.used = True
            group.release_at = None
        self._wire(sess)
        self._replace_older(call, sess)
        return 1

    def close_session(self, session: Any, reason: Optional[str] = None) -> int:
        """End sessions; their sockets go C{close_delay} seconds later.

        With a CSeq (CANCEL, error final): the session to C{idto} in that
        transaction, and the transaction's groups once no session is left.
        With C{cseq} None (BYE): every session between idfrom and idto in
        either direction. C{idto} None: every session of idfrom;
        C{idfrom} None too: the whole call.

        @return: the number of sessions ended.
        """
        call = self.calls.get(session.call_id)
        if call is None:
            return 0
        now = self.clock.seconds()
        reason = reason or "closed"
        ended = 0
        if session.cseq is not None and session.idfrom is not None:
            tx = call.by_from.get(session.idfrom, {}).get(session.cseq)
            if tx is None:
                return 0
            sess = tx.sessions.get(session.idto)
            if sess is not None:
                self._end(call, tx, sess, reason, now)
                ended += 1
            if not tx.sessions:
                self._close_groups(tx, now)
            return ended
        pairs = []
        if session.idfrom is None:
            pairs = [(idfrom, None) for idfrom in list(call.by_from)]
        else:
            pairs = [(session.idfrom, session.idto), (session.idto, session.idfrom)]
        for idfrom, idto in pairs:
            if idfrom is None:
                continue
            for tx in list(call.by_from.get(idfrom, {}).values()):
                for sess_idto, sess in list(tx.sessions.items()):
                    if idto is None or sess_idto == idto:
                        self._end(call, tx, sess, reason, now)
                        ended += 1
                if not tx.sessions:
                    self._close_groups(tx, now)
        if session.idfrom is not None and session.idto is None:
            # sessions towards idfrom from others
            for other, by_cseq in call.by_from.items():
                for tx in by_cseq.values():
                    sess = tx.sessions.get(session.idfrom)
                    if sess is not None:
                        self._end(call, tx, sess, reason, now)
                        ended += 1
                    if not tx.sessions and session.idfrom in tx.groups_to:
                        self._close_groups(tx, now)
        return ended

    def expire(self, now: Optional[float] = None) -> list[dict[str, Any]]:
        """Run the expiry once; the infos of the sessions ended by it."""
        if now is None:
            now = self.clock.seconds()
        ended: list[dict[str, Any]] = []
        for call in list(self.calls.values()):
            for by_cseq in list(call.by_from.values()):
                for cseq in sorted(by_cseq, reverse=True):
                    tx = by_cseq[cseq]
                    groups = tx.groups()
                    for group in groups:
                        group.sample(now)
                    for sess in list(tx.sessions.values()):
                        if sess.lastmod() < now - self.idle_timeout:
                            ended.append(self._end(call, tx, sess, "expired", now))
                    for group in groups:
                        if group.users or group.released:
                            continue
                        if group.release_at is not None:
                            due = now >= group.release_at
                        elif group.used:
                            due = group.lastmod < now - self.close_delay
                        else:
                            due = group.created < now - self.unused_timeout
                        if due:
                            self._release(call, tx, group)
            self._drop_empty(call)
        return ended

    # -- looking ------------------------------------------------------------------
    def sessions(self, call_id: Optional[str] = None) -> list[dict[str, Any]]:
        """Infos of the live sessions (of one call, or all)."""
        calls = [self.calls[call_id]] if call_id is not None and call_id in self.calls else (
            [] if call_id is not None else list(self.calls.values()))
        out = []
        for call in calls:
            for by_cseq in call.by_from.values():
                for tx in by_cseq.values():
                    out.extend(sess.info(call.call_id) for sess in tx.sessions.values())
        return out

    def describe(self, call_id: str) -> Optional[dict[str, Any]]:
        """Groups, ports and counters of one call (for ng C{query}), or None."""
        call = self.calls.get(call_id)
        if call is None:
            return None
        groups = []
        for idfrom, by_cseq in call.by_from.items():
            for cseq, tx in sorted(by_cseq.items()):
                for group in tx.groups():
                    groups.append({
                        "id": group.id, "side": group.side, "cseq": cseq, "idfrom": idfrom,
                        "created": group.created, "lastmod": group.lastmod, "released": group.released,
                        "media": [
                            {"address": media.address, "ports": [
                                {"port": p.number, "target": p.dst, "source": p.source, "packets": p.packets,
                                 "bytes": p.bytes, "errors": p.errors, "dropped": p.dropped}
                                for p in media.ports]}
                            for media in group.media],
                    })
        return {"call_id": call_id, "groups": groups, "sessions": self.sessions(call_id),
                "sockets": call.socket_count}

    def close_all(self, reason: str = "shutdown") -> None:
        """End every session and release every socket now."""
        now = self.clock.seconds()
        for call in list(self.calls.values()):
            for by_cseq in list(call.by_from.values()):
                for tx in list(by_cseq.values()):
                    for sess in list(tx.sessions.values()):
                        self._end(call, tx, sess, reason, now)
                    for group in tx.groups():
                        self._release(call, tx, group)
            self._drop_empty(call)

    # -- allocation -----------------------------------------------------------
    def _new_group(self, call: _Call, ident: str, side: int, local_ip: str,
                   sdp: SessionDescription) -> Optional[_Group]:
        address = self.address or local_ip
        if not address or _unspecified(address):
            if "unspecified" not in self._warned:
                self._warned.add("unspecified")
                log.error("relay: no address to bind RTP sockets on (leg address {address!r}); "
                          "give --rtp-address", address=local_ip)
            return None
        plan = [self._plan(media) for media in sdp.media]
        need = sum(count for count, _ in plan)
        if self.max_sockets is not None and self.socket_count + need > self.max_sockets:
            log.warn("relay: {need} sockets for {call_id} would pass the limit of {limit} in total",
                     need=need, call_id=call.call_id, limit=self.max_sockets)
            return None
        if self.max_sockets_per_call is not None and call.socket_count + need > self.max_sockets_per_call:
            log.warn("relay: {need} more sockets for {call_id} would pass the limit of {limit} per call",
                     need=need, call_id=call.call_id, limit=self.max_sockets_per_call)
            return None
        media_list: list[_Media] = []
        for count, targets in plan:
            ports = self._open_block(address, count) if count else []
            if ports is None:
                for media in media_list:
                    self._close_ports(media.ports)
                log.warn("relay: no free block of {count} ports on {address} in {low}-{high} for {call_id}",
                         count=count, address=address, low=self.port_range[0], high=self.port_range[1],
                         call_id=call.call_id)
                return None
            media_list.append(_Media(ports, targets, address))
        orig = [f"{m.address}:{m.port}/{m.port_range}" for m in sdp.media]
        group = _Group(ident, side, self.clock.seconds(), media_list, orig)
        self.socket_count += need
        call.socket_count += need
        return group

    @staticmethod
    def _plan(media: Media) -> tuple[int, list]:
        """(sockets needed, target per socket) for one media line."""
        address = media.address
        if media.port == 0 or address is None or _unspecified(address) or "TCP" in media.proto.upper():
            return 0, []
        count = media.port_range
        host = address if _is_ip(address) else None
        targets: list[Optional[tuple]] = [
            (host, media.port + i) if host is not None and media.port + i <= 65535 else None
            for i in range(count)]
        rtcp = media.rtcp
        if rtcp is not None and media.is_rtp and media.port_count == 1:
            rtcp_port, rtcp_address = rtcp
            rtcp_host = rtcp_address if rtcp_address is not None else address
            targets[1] = (rtcp_host, rtcp_port) if _is_ip(rtcp_host) else None
        return count, targets

    def _open_block(self, address: str, count: int) -> Optional[list[RelayPort]]:
        low, high = self.port_range
        first = low + (low % 2)
        last = high - count + 1
        if last < first:
            return None
        starts = (last - first) // 2 + 1
        bound = self._bound.setdefault(address, set())
        offset = self.rng.randrange(starts)
        for attempt in range(min(starts, self.max_attempts)):
            start = first + 2 * ((offset + attempt) % starts)
            numbers = range(start, start + count)
            if any(n in bound for n in numbers):
                continue
            ports: list[RelayPort] = []
            try:
                for number in numbers:
                    proto = RelayPort(address, number)
                    proto.listening = self._listen(number, proto, address)
                    ports.append(proto)
            except ierror.CannotListenError as e:
                self._close_ports(ports)
                code = getattr(e.socketError, "errno", None)
                if code in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT, errno.EINVAL):
                    log.error("relay: cannot bind on {address}: {error}", address=address, error=e.socketError)
                    return None
                continue
            bound.update(numbers)
            return ports
        return None

    def _listen(self, number: int, proto: RelayPort, address: str) -> Any:
        """A relay socket: in the shared epoll set on a real Linux reactor,
        else a Twisted port (other platforms, fake reactors in tests)."""
        if hasattr(select, "epoll") and isinstance(self.reactor, PosixReactorBase):
            if self._reader is None:
                self._reader = _EpollReader(self.reactor)
            return self._reader.listen(number, proto, address, self.buffer_size)
        return _listen_udp(self.reactor, number, proto, address)

    def _close_ports(self, ports: list[RelayPort]) -> None:
        for port in ports:
            port.unwire()
            listening, port.listening = port.listening, None
            if listening is not None:
                self._bound.get(port.address, set()).discard(port.number)
                listening.stopListening()

    @staticmethod
    def _targets(group: _Group, sdp: SessionDescription) -> Optional[list[Optional[MediaTarget]]]:
        if len(group.media) != len(sdp.media):
            log.info("relay: a retransmission with {n} media lines for a group of {m}",
                     n=len(sdp.media), m=len(group.media))
            return None
        targets: list[Optional[MediaTarget]] = []
        for media, sdp_media in zip(group.media, sdp.media):
            if not media.ports:
                targets.append(None)
            elif sdp_media.is_rtp and len(media.ports) > 1:
                targets.append(MediaTarget(media.address, media.base, media.base + 1))
            else:
                targets.append(MediaTarget(media.address, media.base))
        return targets

    # -- sessions -------------------------------------------------------------
    def _wire(self, sess: _Session) -> None:
        for fm, tm in zip(sess.sfrom.media, sess.sto.media):
            if not fm.ports or len(fm.ports) != len(tm.ports):
                continue
            for pf, pt, from_target, to_target in zip(fm.ports, tm.ports, fm.targets, tm.targets):
                # pf is advertised to the To party: what it sends goes to the From party's address
                pf.wire(pt, from_target, to_target, sess)
                pt.wire(pf, to_target, from_target, sess)

    def _replace_older(self, call: _Call, new: _Session) -> None:
        pair = {new.key.idfrom, new.key.idto}
        now = self.clock.seconds()
        for idfrom, by_cseq in call.by_from.items():
            for tx in by_cseq.values():
                for idto, sess in list(tx.sessions.items()):
                    if sess is not new and sess.id < new.id and {idfrom, idto} == pair:
                        self._end(call, tx, sess, "replaced", now)

    def _end(self, call: _Call, tx: _Transaction, sess: _Session, reason: str, now: float) -> dict[str, Any]:
        if tx.sessions.get(sess.key.idto) is sess:
            del tx.sessions[sess.key.idto]
        for group in (sess.sfrom, sess.sto):
            for port in group.ports:
                if port.owner is sess:
                    port.owner = None
                    sess._credit(port)
            group.users.discard(sess)
            if not group.users:
                group.release_at = now + self.close_delay
        sess.ended = now
        sess.reason = reason
        # a group shared with a live session (a forked INVITE) goes back to it
        for group in (sess.sfrom, sess.sto):
            for other in sorted(group.users, key=lambda s: s.id)[-1:]:
                self._wire(other)
        info = sess.info(call.call_id)
        log.info(
            "relay session ended: call {call_id} cseq {cseq} reason {reason}; "
            "from {uri_from} {packets_from} packets {bytes_from} bytes, "
            "to {uri_to} {packets_to} packets {bytes_to} bytes; start {start:.3f} end {end:.3f}",
            log_category="relay_session", **info)
        return info

    def _close_groups(self, tx: _Transaction, now: float) -> None:
        for group in tx.groups():
            if not group.users and group.release_at is None:
                group.release_at = now + self.close_delay

    def _release(self, call: _Call, tx: _Transaction, group: _Group) -> None:
        if group.released:
            return
        group.released = True
        count = group.socket_count
        for media in group.media:
            self._close_ports(media.ports)
        self.socket_count -= count
        call.socket_count -= count
        if tx.group_from is group:
            tx.group_from = None
        for idto, other in list(tx.groups_to.items()):
            if other is group:
                del tx.groups_to[idto]

    def _drop_empty(self, call: _Call) -> None:
        for idfrom, by_cseq in list(call.by_from.items()):
            for cseq, tx in list(by_cseq.items()):
                if tx.group_from is None and not tx.groups_to and not tx.sessions:
                    del by_cseq[cseq]
            if not by_cseq:
                del call.by_from[idfrom]
        if not call.by_from and self.calls.get(call.call_id) is call:
            del self.calls[call.call_id]
