"""Loopback tests of the legs: real UDP and TCP sockets on 127.0.0.1 and
::1 (port 0), our own code on both ends, the real L{Dispatcher} handing
what the legs receive to a recording receiver."""
from __future__ import annotations

import os
import socket
from typing import Any, Callable, Optional

from twisted.internet import endpoints, protocol, reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial import unittest
from zope.interface import implementer

from sipproxy.transport.dispatcher import Dispatcher
from sipproxy.interfaces import IReceiver
from sipproxy.transport.legs import MAX_BODY, MAX_HEADER, StreamLeg, UDPLeg
from sipproxy.sip.message import Request
from tests.util import has_ipv6, sip_options, wait_until

NO_IPV6 = None if has_ipv6() else "this host cannot bind ::1 (no IPv6)"
WAIT = 5.0  # seconds any single event may take


class Collector:
    """A list that test code can wait on."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._waiters: list[tuple[Callable[[list], bool], Deferred]] = []

    def add(self, item: Any) -> None:
        self.items.append(item)
        self._check()

    def wait_for(self, predicate: Callable[[list], bool], timeout: float = WAIT) -> Deferred:
        d: Deferred = Deferred()
        self._waiters.append((predicate, d))
        self._check()
        return d.addTimeout(timeout, reactor)

    def wait(self, count: int = 1, timeout: float = WAIT) -> Deferred:
        """Fires with the items once there are at least C{count}."""
        return self.wait_for(lambda items: len(items) >= count, timeout)

    def _check(self) -> None:
        for predicate, d in list(self._waiters):
            if d.called:
                self._waiters.remove((predicate, d))
            elif predicate(self.items):
                self._waiters.remove((predicate, d))
                d.callback(list(self.items))


@implementer(IReceiver)
class Recorder(Collector):
    """The dispatcher's receiver: records (packet, leg, addr)."""

    def receive(self, packet: Any, leg: Any, addr: tuple[str, int]) -> bool:
        self.add((packet, leg, addr))
        return True


class RecordingDispatcher(Dispatcher):
    """The real dispatcher, also recording the raw data legs hand it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.raw: list[bytes] = []
        super().__init__(*args, **kwargs)

    def message_received(self, data: bytes, leg: Any, addr: tuple[str, int], stream: bool = False) -> None:
        self.raw.append(data)
        super().message_received(data, leg, addr, stream=stream)


class UDPPeer(protocol.DatagramProtocol):
    """The other end of a UDP leg."""

    def __init__(self) -> None:
        self.datagrams = Collector()

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.datagrams.add((data, (addr[0], addr[1])))

    @property
    def address(self) -> tuple[str, int]:
        host = self.transport.getHost()
        return host.host, host.port


class TCPPeer(protocol.Protocol):
    """The other end of a stream leg: collects bytes, reports the close."""

    def __init__(self) -> None:
        self.data = b""
        self.closed = False
        self._waiters: list[tuple[Callable[[bytes], bool], Deferred]] = []
        self._lost_waiters: list[Deferred] = []
        self.address: tuple[str, int] = ("", 0)

    def connectionMade(self) -> None:
        host = self.transport.getHost()
        self.address = (host.host, host.port)

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        for predicate, d in list(self._waiters):
            if d.called:
                self._waiters.remove((predicate, d))
            elif predicate(self.data):
                self._waiters.remove((predicate, d))
                d.callback(self.data)

    def connectionLost(self, reason: Any = None) -> None:
        self.closed = True
        waiters, self._lost_waiters = self._lost_waiters, []
        for d in waiters:
            if not d.called:
                d.callback(None)

    def wait_data(self, predicate: Callable[[bytes], bool], timeout: float = WAIT) -> Deferred:
        """Fires with all bytes received once C{predicate} holds for them."""
        d: Deferred = Deferred()
        if predicate(self.data):
            d.callback(self.data)
            return d
        self._waiters.append((predicate, d))
        return d.addTimeout(timeout, reactor)

    def wait_lost(self, timeout: float = WAIT) -> Deferred:
        """Fires once the connection is closed."""
        d: Deferred = Deferred()
        if self.closed:
            d.callback(None)
            return d
        self._lost_waiters.append(d)
        return d.addTimeout(timeout, reactor)

    def close(self) -> Deferred:
        if not self.closed:
            self.transport.loseConnection()
        return self.wait_lost()


class LogCapture(Collector):
    """Log events of the C{sipproxy} namespaces, as formatted text."""

    def __init__(self, testcase: unittest.TestCase) -> None:
        super().__init__()
        globalLogPublisher.addObserver(self)
        testcase.addCleanup(globalLogPublisher.removeObserver, self)

    def __call__(self, event: dict) -> None:
        if str(event.get("log_namespace", "")).startswith("sipproxy"):
            self.add(formatEvent(event))


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def request_bytes(host: str, local_port: int, call_id: str, body: bytes = b"", proto: str = "TCP",
                  via_port: Optional[int] = None, extra: str = "") -> bytes:
    """A MESSAGE request with a body, framed for a stream."""
    h = _bracket(host)
    head = (
        f"MESSAGE sip:someone@{h} SIP/2.0\r\n"
        f"Via: SIP/2.0/{proto} {h}:{via_port or local_port};branch=z9hG4bK-{call_id}\r\n"
        f"Max-Forwards: 70\r\n"
        f"From: <sip:tester@{h}>;tag=t-{call_id}\r\n"
        f"To: <sip:someone@{h}>\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: 1 MESSAGE\r\n"
        f"{extra}"
        f"Content-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _rmem_max() -> Optional[int]:
    try:
        with open("/proc/sys/net/core/rmem_max") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------
class UDPLegTestsMixin:
    host = "127.0.0.1"
    timeout = 10

    def make_leg(self, buffer_size: int = 1024 * 1024) -> tuple[UDPLeg, RecordingDispatcher, Recorder]:
        leg = UDPLeg(self.host, 0, buffer_size=buffer_size)
        recorder = Recorder()
        dispatcher = RecordingDispatcher(reactor, legs=[leg], receiver=recorder)
        leg.listen(reactor)
        dispatcher.reindex()
        self.addCleanup(leg.stop)
        return leg, dispatcher, recorder

    def make_peer(self) -> UDPPeer:
        peer = UDPPeer()
        port = reactor.listenUDP(0, peer, interface=self.host)
        self.addCleanup(port.stopListening)
        return peer

    def send(self, peer: UDPPeer, leg: UDPLeg, data: bytes) -> None:
        peer.transport.write(data, (leg.host, leg.port))

    def test_bound_port_is_read_back(self) -> None:
        leg, dispatcher, _ = self.make_leg()
        self.assertNotEqual(leg.port, 0)
        self.assertEqual(leg.transport.getHost().port, leg.port)
        self.assertEqual(leg.sent_by, f"{_bracket(self.host)}:{leg.port}")
        self.assertEqual(dispatcher.legs_at(self.host, leg.port), [leg])

    @inlineCallbacks
    def test_receives_request(self) -> Any:
        leg, _, recorder = self.make_leg()
        peer = self.make_peer()
        self.send(peer, leg, sip_options(self.host, leg.port, peer.address[1], call_id="rx-1"))
        ((packet, got_leg, addr),) = yield recorder.wait(1)
        self.assertIsInstance(packet, Request)
        self.assertEqual(packet.method, "OPTIONS")
        self.assertEqual(packet.call_id, "rx-1")
        self.assertIs(got_leg, leg)
        self.assertEqual(addr, peer.address)
        # RFC 3581: the dispatcher filled in rport with the source port
        self.assertEqual(packet.top_via().param("rport"), str(peer.address[1]))

    @inlineCallbacks
    def test_short_datagrams_ignored(self) -> Any:
        leg, dispatcher, recorder = self.make_leg()
        peer = self.make_peer()
        for short in (b"\r\n\r\n", b"\x00", b"OPTIONS sip:", b"x" * 12):
            self.send(peer, leg, short)
        good = sip_options(self.host, leg.port, peer.address[1], call_id="after-short")
        self.send(peer, leg, good)
        yield recorder.wait(1)
        self.assertEqual(dispatcher.raw, [good])
        self.assertEqual(peer.datagrams.items, [])

    @inlineCallbacks
    def test_thirteen_octets_reach_the_parser(self) -> Any:
        leg, dispatcher, recorder = self.make_leg()
        peer = self.make_peer()
        self.send(peer, leg, b"x" * 13)
        raw = yield wait_until(lambda: dispatcher.raw, WAIT, what="13 octets at the dispatcher")
        self.assertEqual(raw, [b"x" * 13])
        self.assertEqual(recorder.items, [])  # garbage: dropped by the parser

    @inlineCallbacks
    def test_malformed_request_answered_400(self) -> Any:
        leg, _, recorder = self.make_leg()
        peer = self.make_peer()
        bad = sip_options(self.host, leg.port, peer.address[1], call_id="bad").replace(b"Call-ID: bad\r\n", b"")
        self.send(peer, leg, bad)
        ((answer, source),) = yield peer.datagrams.wait(1)
        self.assertTrue(answer.startswith(b"SIP/2.0 400 missing Call-ID header\r\n"), answer[:80])
        self.assertEqual(source, (leg.host, leg.port))
        self.assertEqual(recorder.items, [])
        # and the leg keeps serving
        self.send(peer, leg, sip_options(self.host, leg.port, peer.address[1], call_id="good"))
        ((packet, _, _),) = yield recorder.wait(1)
        self.assertEqual(packet.call_id, "good")

    @inlineCallbacks
    def test_send(self) -> Any:
        leg, _, _ = self.make_leg()
        peer = self.make_peer()
        data = b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"
        leg.send(data, peer.address)
        ((got, source),) = yield peer.datagrams.wait(1)
        self.assertEqual(got, data)
        self.assertEqual(source, (leg.host, leg.port))

    @inlineCallbacks
    def test_datagram_over_8k_arrives_whole(self) -> Any:
        # SIP over UDP may fill a datagram (Twisted's default port cuts at 8192)
        leg, dispatcher, recorder = self.make_leg()
        peer = self.make_peer()
        body = b"x" * 20000
        big = request_bytes(self.host, peer.address[1], "big-1", body=body, proto="UDP")
        self.send(peer, leg, big)
        ((packet, _, _),) = yield recorder.wait(1)
        self.assertEqual(dispatcher.raw, [big])
        self.assertEqual(packet.body, body)

    @inlineCallbacks
    def test_burst_of_datagrams_all_handled(self) -> Any:
        # more than one wake-up's worth of reads: the rest come on the next
        leg, _, recorder = self.make_leg()
        peer = self.make_peer()
        count = 300
        for n in range(count):
            self.send(peer, leg, sip_options(self.host, leg.port, peer.address[1], call_id=f"burst-{n}"))
        items = yield recorder.wait(count)
        self.assertEqual([packet.call_id for packet, _, _ in items], [f"burst-{n}" for n in range(count)])

    @inlineCallbacks
    def test_send_to_host_name_refused_with_log(self) -> Any:
        # the socket is used directly: a name would mean a blocking DNS lookup
        leg, _, _ = self.make_leg()
        peer = self.make_peer()
        logs = LogCapture(self)
        leg.send(b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n", ("localhost", peer.address[1]))
        other_family = "127.0.0.1" if ":" in self.host else "::1"
        leg.send(b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n", (other_family, peer.address[1]))
        self.assertEqual(len(logs.items), 2, logs.items)
        self.assertIn("not an address of its family", logs.items[0])
        leg.send(b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n", peer.address)  # still sends
        ((got, _),) = yield peer.datagrams.wait(1)
        self.assertTrue(got.startswith(b"SIP/2.0 200 OK"))

    def test_send_after_stop_logged(self) -> Any:
        leg, _, _ = self.make_leg()
        logs = LogCapture(self)
        d = leg.stop()
        leg.send(b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n", (self.host, 9))
        self.assertEqual(len(logs.items), 1)
        self.assertIn("is closed", logs.items[0])
        return d

    def test_socket_buffers_enlarged(self) -> None:
        size = 2 * 1024 * 1024
        leg, _, _ = self.make_leg(buffer_size=size)
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as fresh:
            default_rcv = fresh.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            default_snd = fresh.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        sock = leg.transport.getHandle()
        rcv = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        snd = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        self.assertGreater(rcv, default_rcv)
        self.assertGreater(snd, default_snd)
        limit = _rmem_max()
        if os.geteuid() == 0 or limit is None or limit >= size:
            self.assertGreaterEqual(rcv, size)  # as root, SO_RCVBUFFORCE passes rmem_max
        else:
            self.assertGreaterEqual(rcv, limit)

    def test_buffer_size_zero_keeps_default(self) -> None:
        leg, _, _ = self.make_leg(buffer_size=0)
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as fresh:
            default_rcv = fresh.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        self.assertEqual(leg.transport.getHandle().getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF), default_rcv)


class UDPLegIPv4Tests(UDPLegTestsMixin, unittest.TestCase):
    host = "127.0.0.1"


class UDPLegIPv6Tests(UDPLegTestsMixin, unittest.TestCase):
    host = "::1"
    skip = NO_IPV6


# ---------------------------------------------------------------------------------------------
class StreamLegTestsMixin:
    host = "127.0.0.1"
    #: a second local address, for a leg whose source must differ from the
    #: kernel's default choice
    other_host = "127.0.0.2"
    timeout = 10

    def make_leg(self, host: Optional[str] = None, idle_timeout: float = 120.0
                 ) -> tuple[StreamLeg, RecordingDispatcher, Recorder]:
        leg = StreamLeg(host or self.host, 0, idle_timeout=idle_timeout)
        recorder = Recorder()
        dispatcher = RecordingDispatcher(reactor, legs=[leg], receiver=recorder)
        leg.listen(reactor)
        dispatcher.reindex()
        self.addCleanup(self._stop_leg, leg)
        return leg, dispatcher, recorder

    def _stop_leg(self, leg: StreamLeg) -> Deferred:
        d = leg.stop()
        closed = wait_until(lambda: not leg.connections, WAIT, what=f"{leg!r} to close its connections")
        return closed.addCallback(lambda _: d)

    def _endpoint(self, host: str, port: int) -> Any:
        kind = endpoints.TCP6ClientEndpoint if ":" in host else endpoints.TCP4ClientEndpoint
        return kind(reactor, host, port, timeout=WAIT)

    @inlineCallbacks
    def connect(self, leg: StreamLeg) -> Any:
        """A connected TCPPeer, once the leg has accepted it too."""
        peer = yield endpoints.connectProtocol(self._endpoint(leg.host, leg.port), TCPPeer())
        self.addCleanup(peer.close)
        yield wait_until(lambda: peer.address in leg.connections, WAIT, what="the leg to accept")
        return peer

    @inlineCallbacks
    def assert_still_serving(self, leg: StreamLeg, recorder: Recorder) -> Any:
        before = len(recorder.items)
        peer = yield self.connect(leg)
        peer.transport.write(request_bytes(self.host, peer.address[1], "still-serving"))
        items = yield recorder.wait(before + 1)
        self.assertEqual(items[-1][0].call_id, "still-serving")

    # framing -------------------------------------------------------------------------
    @inlineCallbacks
    def test_message_split_over_several_writes(self) -> Any:
        leg, _, recorder = self.make_leg()
        peer = yield self.connect(leg)
        data = request_bytes(self.host, peer.address[1], "split", body=b"0123456789" * 30)
        conn = leg.connections[peer.address]
        cuts = [0, 7, 60, data.index(b"\r\n\r\n") + 2, data.index(b"\r\n\r\n") + 50, len(data)]
        for start, end in zip(cuts[:-2], cuts[1:-1]):
            peer.transport.write(data[start:end])
            # the leg has buffered exactly what arrived so far, and parsed nothing
            yield wait_until(lambda: conn._buffer == data[:end], WAIT, what=f"{end} octets buffered")
            self.assertEqual(recorder.items, [])
        peer.transport.write(data[cuts[-2]:])
        ((packet, got_leg, addr),) = yield recorder.wait(1)
        self.assertEqual(packet.call_id, "split")
        self.assertEqual(packet.body, b"0123456789" * 30)
        self.assertIs(got_leg, leg)
        self.assertEqual(addr, peer.address)

    @inlineCallbacks
    def test_several_messages_in_one_write(self) -> Any:
        leg, _, recorder = self.make_leg()
        peer = yield self.connect(leg)
        local = peer.address[1]
        messages = [request_bytes(self.host, local, f"m{i}", body=b"b" * i) for i in range(3)]
        # plus the head of a fourth one, completed by the next write
        fourth = request_bytes(self.host, local, "m3", body=b"tail")
        peer.transport.write(b"".join(messages) + fourth[:30])
        items = yield recorder.wait(3)
        self.assertEqual([p.call_id for p, _, _ in items], ["m0", "m1", "m2"])
        self.assertEqual([p.body for p, _, _ in items], [b"", b"b", b"bb"])
        peer.transport.write(fourth[30:])
        items = yield recorder.wait(4)
        self.assertEqual(items[3][0].call_id, "m3")
        self.assertEqual(items[3][0].body, b"tail")

    @inlineCallbacks
    def test_body_arrives_later(self) -> Any:
        leg, _, recorder = self.make_leg()
        peer = yield self.connect(leg)
        data = request_bytes(self.host, peer.address[1], "late-body", body=b"hello world")
        head = data[:-len(b"hello world")]
        peer.transport.write(head)
        conn = leg.connections[peer.address]
        yield wait_until(lambda: conn._buffer == head, WAIT, what="the header to be buffered")
        self.assertEqual(recorder.items, [])
        peer.transport.write(b"hello ")
        yield wait_until(lambda: conn._buffer == head + b"hello ", WAIT, what="half the body")
        self.assertEqual(recorder.items, [])
        peer.transport.write(b"world")
        ((packet, _, _),) = yield recorder.wait(1)
        self.assertEqual(packet.body, b"hello world")

    @inlineCallbacks
    def test_crlf_ping_answered(self) -> Any:
        leg, _, recorder = self.make_leg()
        peer = yield self.connect(leg)
        peer.transport.write(b"\r\n\r\n")
        data = yield peer.wait_data(lambda d: len(d) >= 2)
        self.assertEqual(data, b"\r\n")
        # a ping and a message in one write
        peer.transport.write(b"\r\n\r\n" + request_bytes(self.host, peer.address[1], "after-ping"))
        data = yield peer.wait_data(lambda d: len(d) >= 4)
        self.assertEqual(data, b"\r\n\r\n")
        ((packet, _, _),) = yield recorder.wait(1)
        self.assertEqual(packet.call_id, "after-ping")

    @inlineCallbacks
    def test_crlf_ping_split_over_writes(self) -> Any:
        leg, _, _ = self.make_leg()
        peer = yield self.connect(leg)
        conn = leg.connections[peer.address]
        pongs = 0
        for cut in (1, 2, 3):
            peer.transport.write(b"\r\n\r\n"[:cut])
            yield wait_until(lambda: conn._buffer == b"\r\n\r\n"[:cut], WAIT, what=f"{cut} octets of a ping")
            peer.transport.write(b"\r\n\r\n"[cut:])
            pongs += 1
            data = yield peer.wait_data(lambda d: len(d) >= 2 * pongs)
            self.assertEqual(data, b"\r\n" * pongs)

    # limits ----------------------------------------------------------------------------
    @inlineCallbacks
    def _assert_closed_by(self, data: bytes) -> Any:
        leg, _, recorder = self.make_leg()
        peer = yield self.connect(leg)
        peer.transport.write(data)
        yield peer.wait_lost()
        yield wait_until(lambda: peer.address not in leg.connections, WAIT, what="the leg to forget it")
        self.assertEqual(recorder.items, [])
        yield self.assert_still_serving(leg, recorder)

    def test_unterminated_header_over_limit_closes(self) -> Any:
        padding = b"X-Pad: " + b"a" * 100 + b"\r\n"
        data = b"MESSAGE sip:x@127.0.0.1 SIP/2.0\r\n" + padding * (MAX_HEADER // len(padding) + 2)
        self.assertGreater(len(data), MAX_HEADER)
        return self._assert_closed_by(data)

    def test_complete_header_over_limit_closes(self) -> Any:
        padding = "X-Pad: " + "a" * 100 + "\r\n"
        extra = padding * (MAX_HEADER // len(padding) + 2)
        data = request_bytes(self.host, 5060, "big-header", extra=extra)
        self.assertGreater(data.index(b"\r\n\r\n"), MAX_HEADER)
        return self._assert_closed_by(data)

    def test_body_over_limit_closes(self) -> Any:
        data = request_bytes(self.host, 5060, "big-body", body=b"z" * (MAX_BODY + 1))
        return self._assert_closed_by(data)

    def test_missing_content_length_closes(self) -> Any:
        data = request_bytes(self.host, 5060, "no-length").replace(b"Content-Length: 0\r\n", b"")
        self.assertNotIn(b"Content-Length", data)
        return self._assert_closed_by(data)

    # connection reuse ------------------------------------------------------------------
    @inlineCallbacks
    def test_response_goes_over_inbound_connection(self) -> Any:
        leg, dispatcher, recorder = self.make_leg()
        peer = yield self.connect(leg)
        peer.transport.write(request_bytes(self.host, peer.address[1], "answer-me"))
        ((packet, got_leg, addr),) = yield recorder.wait(1)
        dispatcher.respond(packet, 200, "OK", got_leg, addr)
        data = yield peer.wait_data(lambda d: b"\r\n\r\n" in d)
        self.assertTrue(data.startswith(b"SIP/2.0 200 OK\r\n"), data[:40])
        self.assertIn(b"Call-ID: answer-me\r\n", data)
        self.assertEqual(list(leg.connections), [peer.address])

    @inlineCallbacks
    def test_request_to_new_address_opens_outbound_connection(self) -> Any:
        leg, _, recorder = self.make_leg(host=self.other_host)
        accepted: list[TCPPeer] = []

        class Server(protocol.Factory):
            def buildProtocol(self, addr: Any) -> TCPPeer:
                peer = TCPPeer()
                accepted.append(peer)
                return peer

        server = reactor.listenTCP(0, Server(), interface=self.host)
        self.addCleanup(server.stopListening)
        self.addCleanup(lambda: gatherResults([p.close() for p in accepted]))
        target = (self.host, server.getHost().port)
        first = request_bytes(leg.host, leg.port, "out-1")
        second = request_bytes(leg.host, leg.port, "out-2")
        leg.send(first, target)
        leg.send(second, target)  # queued on the connection being opened
        yield wait_until(lambda: accepted, WAIT, what="the outbound connection")
        peer = accepted[0]
        yield peer.wait_data(lambda d: d == first + second)
        self.assertEqual(peer.transport.getPeer().host, leg.host)
        third = request_bytes(leg.host, leg.port, "out-3")
        leg.send(third, target)  # on the established connection
        yield peer.wait_data(lambda d: d == first + second + third)
        self.assertEqual(len(accepted), 1)
        self.assertEqual(list(leg.connections), [target])
        # the peer can use the connection the other way, too
        peer.transport.write(request_bytes(self.host, target[1], "from-server"))
        ((packet, _, addr),) = yield recorder.wait(1)
        self.assertEqual(packet.call_id, "from-server")
        self.assertEqual(addr, target)

    @inlineCallbacks
    def test_inbound_connection_reused_for_via_alias(self) -> Any:
        leg, _, recorder = self.make_leg()
        # the alias port: bound, not listening, so a connect to it would be refused
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        blocker = socket.socket(family, socket.SOCK_STREAM)
        self.addCleanup(blocker.close)
        blocker.bind((self.host, 0))
        alias_port = blocker.getsockname()[1]
        peer = yield self.connect(leg)
        self.assertNotEqual(peer.address[1], alias_port)
        peer.transport.write(request_bytes(self.host, peer.address[1], "aliased", via_port=alias_port))
        yield recorder.wait(1)
        data = request_bytes(self.host, leg.port, "to-alias")
        leg.send(data, (self.host, alias_port))
        got = yield peer.wait_data(lambda d: len(d) >= len(data))
        self.assertEqual(got, data)
        self.assertEqual(list(leg.connections), [peer.address])

    @inlineCallbacks
    def test_idle_connection_closed(self) -> Any:
        leg, _, recorder = self.make_leg(idle_timeout=0.5)
        started = reactor.seconds()
        peer = yield self.connect(leg)
        peer.transport.write(request_bytes(self.host, peer.address[1], "then-idle"))
        yield recorder.wait(1)
        yield peer.wait_lost(timeout=WAIT)
        self.assertGreaterEqual(reactor.seconds() - started, 0.5)
        yield wait_until(lambda: not leg.connections, WAIT, what="the leg to forget the connection")

    @inlineCallbacks
    def test_refused_connect_logged_not_raised(self) -> Any:
        leg, _, recorder = self.make_leg()
        logs = LogCapture(self)
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        closed = socket.socket(family, socket.SOCK_STREAM)
        self.addCleanup(closed.close)
        closed.bind((self.host, 0))  # bound, never listening: connects are refused
        target = (self.host, closed.getsockname()[1])
        leg.send(request_bytes(leg.host, leg.port, "refused"), target)  # must not raise
        lines = yield logs.wait_for(lambda items: any("cannot connect" in line for line in items))
        line = [line for line in lines if "cannot connect" in line][0]
        self.assertIn(str(target[1]), line)
        self.assertIn("1 message(s) dropped", line)
        self.assertNotIn(target, leg.connections)
        yield self.assert_still_serving(leg, recorder)


class StreamLegIPv4Tests(StreamLegTestsMixin, unittest.TestCase):
    host = "127.0.0.1"
    other_host = "127.0.0.2"


class StreamLegIPv6Tests(StreamLegTestsMixin, unittest.TestCase):
    host = "::1"
    other_host = "::1"  # the only IPv6 loopback address
    skip = NO_IPV6
