"""The relay's sockets: UDP sockets read through one epoll set that the
reactor watches as a single reader. The edge under
L{sipproxy.nat.relay.LocalRelay}: it binds, reads and closes, and hands
every datagram to a receiver's C{datagramReceived(data, addr)} (a
L{sipproxy.nat.forward.RelayPort}); it decides nothing.

Why not one Twisted port per socket: Twisted dispatches each socket's
readiness separately (through its logging context) and reads each
datagram with a second C{recvfrom} that fails with EAGAIN; with many
streams that framing costs more than the forwarding. Here a round reads
up to C{burst} datagrams from every ready socket; rounds repeat while
sockets are ready, until C{budget} datagrams were handled in this
wake-up, so SIP on the same reactor still gets its turn within a
millisecond or so. It also spares the two log lines Twisted writes per
port opened and closed (four ports per call).

Where C{select.epoll} is missing (not Linux), L{ReaderSockets} registers
each socket with the reactor as its own reader instead; both implement
L{sipproxy.interfaces.IRelaySockets}, and tests inject a fake.

Errors are values at this edge: C{open_udp} raises C{OSError} (the
relay tries another port on EADDRINUSE and gives up on anything else,
closing what it opened); a read error on one socket ends that socket's
round, never the reactor's.
"""
from __future__ import annotations

import select
import socket
from typing import Any, Callable

from twisted.internet.interfaces import IReactorFDSet
from zope.interface import implementer

from sipproxy.interfaces import IRelaySockets
from sipproxy.transport.legs import _size_buffers

__all__ = ["EpollSockets", "ReaderSockets", "RelaySocket", "default_sockets"]


def _bind(address: str, port: int, buffer_size: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.bind((address, port))
        sock.setblocking(False)
        if buffer_size:
            _size_buffers(sock, buffer_size, f"relay {address}:{port}")
    except BaseException:
        sock.close()
        raise
    return sock


class RelaySocket:
    """One open relay socket: C{sendto}, C{port}, C{close()}."""

    __slots__ = ("socket", "sendto", "port", "_forget")

    def __init__(self, sock: socket.socket, forget: Callable[[int], None]) -> None:
        self.socket = sock
        self.sendto = sock.sendto
        self.port = sock.getsockname()[1]
        self._forget = forget

    def close(self) -> None:
        if self.socket.fileno() >= 0:
            self._forget(self.socket.fileno())
            self.socket.close()


@implementer(IRelaySockets)
class EpollSockets:
    """Every relay socket in one epoll set (see the module docstring).

    @param reactor: an C{IReactorFDSet}; it watches the set while the set
        holds sockets.
    @param buffer_size: receive and send buffer of each socket (0: the
        kernel's default).
    """

    burst = 8
    budget = 256

    def __init__(self, reactor: IReactorFDSet, buffer_size: int = 0) -> None:
        self.reactor = reactor
        self.buffer_size = buffer_size
        self.epoll = select.epoll()
        #: fd -> (recvfrom of the socket, datagramReceived of its receiver)
        self.ports: dict[int, tuple[Callable, Callable]] = {}

    # IRelaySockets ------------------------------------------------------------
    def open_udp(self, address: str, port: int, receiver: Any) -> RelaySocket:
        sock = _bind(address, port, self.buffer_size)
        fd = sock.fileno()
        try:
            self.epoll.register(fd, select.EPOLLIN)
        except BaseException:
            sock.close()
            raise
        if not self.ports:
            self.reactor.addReader(self)
        self.ports[fd] = (sock.recvfrom, receiver.datagramReceived)
        return RelaySocket(sock, self._forget)

    def close(self) -> None:
        if self.epoll.closed:
            return
        if self.ports:
            self.reactor.removeReader(self)
            self.ports.clear()
        self.epoll.close()

    def _forget(self, fd: int) -> None:
        if self.ports.pop(fd, None) is not None and not self.ports:
            self.reactor.removeReader(self)
        try:
            self.epoll.unregister(fd)
        except (OSError, ValueError):
            pass

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
                entry = ports.get(fd)
                if entry is None:
                    continue
                receive, handle = entry
                for _ in range(burst):
                    try:
                        data, addr = receive(65535)
                    except OSError:  # EAGAIN, or an ICMP error reported on the socket
                        break
                    handle(data, addr)
                    left -= 1

    def connectionLost(self, reason: Any) -> None:
        self.close()


class _OneReader:
    """One relay socket as its own reactor reader (no epoll)."""

    def __init__(self, sock: socket.socket, receiver: Any) -> None:
        self.sock = sock
        self.receive = sock.recvfrom
        self.handle = receiver.datagramReceived

    def fileno(self) -> int:
        return self.sock.fileno()

    def logPrefix(self) -> str:
        return "relay"

    def doRead(self) -> None:
        for _ in range(EpollSockets.burst):
            try:
                data, addr = self.receive(65535)
            except OSError:
                return
            self.handle(data, addr)

    def connectionLost(self, reason: Any) -> None:
        pass


@implementer(IRelaySockets)
class ReaderSockets:
    """Relay sockets each watched by the reactor (where epoll is missing)."""

    def __init__(self, reactor: IReactorFDSet, buffer_size: int = 0) -> None:
        self.reactor = reactor
        self.buffer_size = buffer_size
        self.readers: dict[int, _OneReader] = {}

    def open_udp(self, address: str, port: int, receiver: Any) -> RelaySocket:
        sock = _bind(address, port, self.buffer_size)
        reader = _OneReader(sock, receiver)
        self.readers[sock.fileno()] = reader
        self.reactor.addReader(reader)
        return RelaySocket(sock, self._forget)

    def _forget(self, fd: int) -> None:
        reader = self.readers.pop(fd, None)
        if reader is not None:
            self.reactor.removeReader(reader)

    def close(self) -> None:
        for reader in list(self.readers.values()):
            self.reactor.removeReader(reader)
        self.readers.clear()


def default_sockets(reactor: IReactorFDSet, buffer_size: int = 0) -> Any:
    """The relay's sockets on C{reactor}: one epoll set where Linux has it."""
    if hasattr(select, "epoll"):
        return EpollSockets(reactor, buffer_size)
    return ReaderSockets(reactor, buffer_size)
