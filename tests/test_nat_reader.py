"""The relay's shared epoll reader, on the real reactor and real sockets."""
from __future__ import annotations

import select
import socket

from twisted.internet import reactor
from twisted.trial.unittest import SkipTest, TestCase

from sipproxy.nat.forward import RelayPort
from sipproxy.nat.sockets import EpollSockets, ReaderSockets
from tests.util import wait_until


class EpollReaderTests(TestCase):
    timeout = 10

    def setUp(self) -> None:
        if not hasattr(select, "epoll"):
            raise SkipTest("epoll is Linux only; elsewhere the relay uses one Twisted port per socket")
        self.reader = EpollSockets(reactor, 256 * 1024)
        self.addCleanup(self.reader.close)

    def peer(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        self.addCleanup(sock.close)
        return sock

    def pair(self, a: socket.socket, b: socket.socket) -> tuple[RelayPort, RelayPort]:
        """Two relay sockets: what A sends to the first goes to B from the
        second, and back."""
        ports = []
        for _ in range(2):
            port = RelayPort("127.0.0.1", 0)
            port.handle = self.reader.open_udp("127.0.0.1", 0, port)
            port.send = port.handle.sendto
            port.number = port.handle.port
            ports.append(port)
        to_b, to_a = ports
        to_b.wire(to_a, b.getsockname(), a.getsockname(), None)
        to_a.wire(to_b, a.getsockname(), b.getsockname(), None)
        return to_b, to_a

    def test_many_streams_are_forwarded_and_counted(self):
        streams = []
        for _ in range(20):
            a, b = self.peer(), self.peer()
            streams.append((a, b, *self.pair(a, b)))
        self.assertIn(self.reader, reactor.getReaders())
        for a, b, to_b, _ in streams:
            for n in range(5):
                a.sendto(b"rtp %d" % n, ("127.0.0.1", to_b.number))

        def all_arrived():
            return all(port.packets == 5 for _, _, port, _ in streams)

        d = wait_until(all_arrived, timeout=5, what="100 packets through 20 streams")

        def check(_):
            for a, b, to_b, to_a in streams:
                got = []
                while True:
                    try:
                        data, addr = b.recvfrom(100)
                    except BlockingIOError:
                        break
                    got.append(data)
                    self.assertEqual(addr[1], to_a.number)  # symmetric: sent from the partner socket
                self.assertEqual(got, [b"rtp %d" % n for n in range(5)])
                self.assertEqual(to_b.source, a.getsockname())
        return d.addCallback(check)

    def test_the_reactor_stops_watching_when_the_last_socket_closes(self):
        a, b = self.peer(), self.peer()
        to_b, to_a = self.pair(a, b)
        self.assertIn(self.reader, reactor.getReaders())
        to_b.handle.close()
        self.assertIn(self.reader, reactor.getReaders())
        to_a.handle.close()
        self.assertNotIn(self.reader, reactor.getReaders())
        self.assertEqual(self.reader.ports, {})

    def test_buffers_are_enlarged(self):
        self.reader.buffer_size = 1024 * 1024
        port = RelayPort("127.0.0.1", 0)
        port.handle = self.reader.open_udp("127.0.0.1", 0, port)
        self.addCleanup(port.handle.close)
        size = port.handle.socket.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        self.assertGreaterEqual(size, 1024 * 1024)  # Linux doubles what was asked


class ReaderSocketsTests(TestCase):
    """The fallback where epoll is missing: each socket its own reader."""

    timeout = 10

    def test_a_stream_is_forwarded_and_the_readers_go_with_the_sockets(self):
        sockets = ReaderSockets(reactor)
        self.addCleanup(sockets.close)
        a, b = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2))
        for sock in (a, b):
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
            self.addCleanup(sock.close)
        to_b, to_a = RelayPort("127.0.0.1", 0), RelayPort("127.0.0.1", 0)
        for port in (to_b, to_a):
            port.handle = sockets.open_udp("127.0.0.1", 0, port)
            port.send = port.handle.sendto
            port.number = port.handle.port
        to_b.wire(to_a, b.getsockname(), a.getsockname(), None)
        to_a.wire(to_b, a.getsockname(), b.getsockname(), None)
        self.assertEqual(len(sockets.readers), 2)
        a.sendto(b"rtp", ("127.0.0.1", to_b.number))

        def arrived():
            try:
                return b.recvfrom(100)
            except BlockingIOError:
                return None

        def check(got):
            self.assertEqual(got, (b"rtp", ("127.0.0.1", to_a.number)))  # symmetric: from the partner socket
            readers = list(sockets.readers.values())
            self.assertEqual(len(set(readers) & set(reactor.getReaders())), 2)
            to_b.handle.close()
            to_a.handle.close()
            self.assertEqual(sockets.readers, {})
            self.assertEqual(set(readers) & set(reactor.getReaders()), set())

        return wait_until(arrived, timeout=5, what="the packet through the relay").addCallback(check)
