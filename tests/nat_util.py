"""Test helpers for the NAT helper: a fake UDP reactor (Twisted's
C{MemoryReactor} has no C{listenUDP}), SDP and RTP builders, and
socket counting. General subprocess and waiting helpers live in
L{tests.util}."""
from __future__ import annotations

import errno
import os
import socket
import struct
from typing import Any, Optional, Sequence

from twisted.internet import error
from twisted.internet.task import Clock
from zope.interface import implementer

from sipproxy.interfaces import IRelaySockets

CRLF = "\r\n"


class FakeSocket:
    """Stands in for a UDP socket: records C{sendto}."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple]] = []
        self.closed = False

    def sendto(self, data: bytes, addr: Any) -> int:
        if self.closed:
            raise OSError(errno.EBADF, "closed")
        if not isinstance(addr, tuple):
            raise TypeError("address must be a tuple")
        self.sent.append((data, addr))
        return len(data)


class FakeUDPPort:
    def __init__(self, reactor: "FakeUDPReactor", number: int, protocol: Any, interface: str) -> None:
        self.reactor = reactor
        self.number = number
        self.protocol = protocol
        self.interface = interface
        self.socket = FakeSocket()
        self.listening = True

    def write(self, data: bytes, addr: Any = None) -> None:
        self.socket.sendto(data, addr)

    def stopListening(self) -> None:
        if self.listening:
            self.listening = False
            self.socket.closed = True
            del self.reactor.bound[(self.interface, self.number)]
            self.protocol.doStop()

    def getHost(self) -> Any:
        return (self.interface, self.number)

    # the handle an IRelaySockets hands out
    @property
    def port(self) -> int:
        return self.number

    def sendto(self, data: bytes, addr: Any) -> int:
        return self.socket.sendto(data, addr)

    def close(self) -> None:
        if self.listening:
            self.listening = False
            self.socket.closed = True
            del self.reactor.bound[(self.interface, self.number)]


@implementer(IRelaySockets)
class FakeUDPReactor(Clock):
    """A C{Clock} with C{listenUDP}, and the relay's L{IRelaySockets}
    (C{open_udp}): ports are remembered in C{bound}; C{busy} port numbers
    (or (interface, port) pairs) refuse to bind, and C{foreign} interfaces
    refuse with EADDRNOTAVAIL."""

    def __init__(self, busy: Sequence[Any] = (), foreign: Sequence[str] = ()) -> None:
        super().__init__()
        self.bound: dict[tuple[str, int], FakeUDPPort] = {}
        self.busy = set(busy)
        self.foreign = set(foreign)
        self.attempts = 0
        self._ephemeral = 50000
        #: at most this many bound ports, then EMFILE as a raw OSError (the
        #: process is out of file descriptors); None: no limit
        self.fd_limit: Optional[int] = None

    def listenUDP(self, port: int, protocol: Any, interface: str = "", maxPacketSize: int = 8192) -> FakeUDPPort:
        self.attempts += 1
        if self.fd_limit is not None and len(self.bound) >= self.fd_limit:
            raise OSError(errno.EMFILE, "Too many open files")
        if interface in self.foreign:
            raise error.CannotListenError(interface, port, OSError(errno.EADDRNOTAVAIL, "not local"))
        if port == 0:
            self._ephemeral += 1
            port = self._ephemeral
        if (interface, port) in self.bound or port in self.busy or (interface, port) in self.busy:
            raise error.CannotListenError(interface, port, OSError(errno.EADDRINUSE, "in use"))
        listening = FakeUDPPort(self, port, protocol, interface)
        self.bound[(interface, port)] = listening
        protocol.makeConnection(listening)
        return listening

    def open_udp(self, address: str, port: int, receiver: Any) -> FakeUDPPort:
        """IRelaySockets: the checks of C{listenUDP}, as a raw C{OSError}."""
        self.attempts += 1
        if self.fd_limit is not None and len(self.bound) >= self.fd_limit:
            raise OSError(errno.EMFILE, "Too many open files")
        if address in self.foreign:
            raise OSError(errno.EADDRNOTAVAIL, "not local")
        if (address, port) in self.bound or port in self.busy or (address, port) in self.busy:
            raise OSError(errno.EADDRINUSE, "in use")
        listening = FakeUDPPort(self, port, receiver, address)
        self.bound[(address, port)] = listening
        return listening

    def close(self) -> None:
        """IRelaySockets: nothing to stop reading."""

    def deliver(self, interface: str, port: int, data: bytes, source: tuple) -> None:
        """A datagram from C{source} arrives at C{interface:port}."""
        self.bound[(interface, port)].protocol.datagramReceived(data, source)

    def sent_from(self, interface: str, port: int) -> list[tuple[bytes, tuple]]:
        return self.bound[(interface, port)].socket.sent


def sdp(address: str = "192.0.2.10", port: int = 49170, *more: str, media: Optional[list[str]] = None,
        version: int = 1, session_c: bool = True) -> str:
    """An SDP text: one audio stream (or C{media}, whole m= sections)."""
    family = "IP6" if ":" in address else "IP4"
    lines = ["v=0", f"o=user 100 {version} IN {family} {address}", "s=-"]
    if session_c:
        lines.append(f"c=IN {family} {address}")
    lines.append("t=0 0")
    if media is None:
        lines += [f"m=audio {port} RTP/AVP 0", "a=rtpmap:0 PCMU/8000"]
    else:
        lines += media
    lines += list(more)
    return CRLF.join(lines) + CRLF


def media_lines(text: str) -> list[str]:
    """The c=, m= and a=rtcp lines of an SDP text, for assertions."""
    return [line for line in text.replace("\r\n", "\n").split("\n")
            if line.startswith(("c=", "m=", "a=rtcp:", "o="))]


def rtp(seq: int, payload: bytes = b"\xff" * 160, ssrc: int = 0x1234, pt: int = 0) -> bytes:
    """An RTP v2 packet."""
    return struct.pack("!BBHII", 0x80, pt, seq & 0xFFFF, seq * 160 & 0xFFFFFFFF, ssrc) + payload


def open_udp_sockets() -> int:
    """How many UDP sockets this process has open (from /proc)."""
    inodes = set()
    for name in ("udp", "udp6"):
        try:
            with open(f"/proc/net/{name}") as f:
                next(f)
                for line in f:
                    inodes.add(line.split()[9])
        except OSError:
            pass
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            count += 1
    return count


def process_udp_sockets(pid: int) -> list[tuple[str, int]]:
    """(local address as /proc writes it, port) of every UDP socket
    process C{pid} holds open."""
    inodes: dict[str, tuple[str, int]] = {}
    for name in ("udp", "udp6"):
        try:
            with open(f"/proc/{pid}/net/{name}") as f:
                next(f)
                for line in f:
                    fields = line.split()
                    address, port = fields[1].rsplit(":", 1)
                    inodes[fields[9]] = (address, int(port, 16))
        except OSError:
            pass
    sockets = []
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return sockets
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            sockets.append(inodes[target[8:-1]])
    return sockets


def process_udp_ports(pid: int) -> set[int]:
    """Local UDP port numbers of the sockets process C{pid} holds open."""
    return {port for _, port in process_udp_sockets(pid)}


def _worker_index() -> Optional[int]:
    """Which parallel worker this is: C{trial -j} runs worker n in
    C{_trial_temp/<n>}, C{pytest -n} (xdist) names it gw<n> in
    C{PYTEST_XDIST_WORKER}; None outside both."""
    xdist = os.environ.get("PYTEST_XDIST_WORKER", "")
    if xdist.startswith("gw") and xdist[2:].isdigit():
        return int(xdist[2:])
    cwd = os.getcwd()
    name = os.path.basename(cwd)
    if name.isdigit() and os.path.basename(os.path.dirname(cwd)).startswith("_trial_temp"):
        return int(name)
    return None


def _worker_share(low: int, high: int, count: int) -> tuple[int, int]:
    """This worker's own slice of [low, high): parallel workers that all
    took the first free block would hand one worker's ports to the next
    while the first still has packets in flight to them."""
    index = _worker_index()
    if index is None:
        return low, high
    shares = 4
    while shares > 1 and (high - low) // shares < 2 * count:
        shares //= 2
    size = (high - low) // shares
    start = low + (index % shares) * size
    return start, start + size


def free_udp_block(host: str, count: int, low: int = 20000, high: int = 30000, also: Sequence[str] = ()) -> int:
    """The first even port P in [low, high) with P..P+count-1 free on
    C{host} and every address in C{also} (port ranges for relays under
    test; another process may still take one, which a relay survives)."""
    hosts = (host, *also)
    low, high = _worker_share(low, high, count)
    for start in range(low, high - count, 2):
        socks = []
        try:
            for h in hosts:
                family = socket.AF_INET6 if ":" in h else socket.AF_INET
                for port in range(start, start + count):
                    s = socket.socket(family, socket.SOCK_DGRAM)
                    socks.append(s)
                    s.bind((h, port))
            return start
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no {count} free UDP ports on {hosts}")
