"""TCP legs under hostile peers (issue 12): peers that never read, send one
byte at a time, open too many connections or send garbage; and the proxy
at its file-descriptor limit. Loopback only; every loop is bounded in count
and time; waiting is on Deferreds and polls with deadlines."""
from __future__ import annotations

import os
import resource
import socket
import sys
from typing import Any

from twisted.internet import endpoints, protocol, reactor, task
from twisted.internet.defer import inlineCallbacks
from twisted.logger import Logger
from twisted.trial import unittest

from sipproxy.app.tap import Options
from sipproxy.transport.legs import StreamLeg
from sipproxy.transport.source_log import OTHER_SOURCES, SourceLog
from sipproxy.transport.stream_guard import ConnectionGuard, StreamLimits, fd_budget
from tests.test_legs_loopback import NO_IPV6, WAIT, LogCapture, Recorder, RecordingDispatcher, TCPPeer, request_bytes
from tests.util import (UDPProbe, child_environment, reserve_port, sip_options, start_process, temp_dir,
                        twistd_command, wait_until)

CHUNK = b"x" * 65536


class Events(list):
    """A log observer that keeps events."""

    def __call__(self, event: dict) -> None:
        self.append(event)


# -- the rate-limited log ---------------------------------------------------------------------
class SourceLogTests(unittest.SynchronousTestCase):
    def make(self, **kwargs: Any) -> tuple[SourceLog, task.Clock, Events]:
        events = Events()
        clock = task.Clock()
        return SourceLog(Logger(observer=events), clock, **kwargs), clock, events

    def test_one_line_per_source_per_interval_then_a_summary(self) -> None:
        slog, clock, events = self.make(interval=10)
        written = [slog.warn("192.0.2.1", "garbage from {peer}", peer=("192.0.2.1", n)) for n in range(100)]
        self.assertEqual(written, [True] + [False] * 99)
        self.assertEqual(len(events), 1)
        self.assertEqual(events[0]["peer"], ("192.0.2.1", 0))
        clock.advance(9.9)
        slog.flush()
        self.assertEqual(len(events), 1)  # the interval is not over
        clock.advance(0.1)
        slog.flush()
        self.assertEqual(len(events), 2)
        self.assertEqual((events[1]["suppressed"], events[1]["source"]), (99, "192.0.2.1"))
        self.assertEqual(len(slog), 0)  # a quiet source is forgotten

    def test_next_line_after_the_interval_summarises_the_last(self) -> None:
        slog, clock, events = self.make(interval=5)
        slog.warn("192.0.2.1", "a")
        slog.warn("192.0.2.1", "b")
        clock.advance(5)
        self.assertTrue(slog.warn("192.0.2.1", "c"))
        self.assertEqual([e["log_format"] for e in events][0::2], ["a", "c"])
        self.assertEqual(events[1]["suppressed"], 1)

    def test_sources_are_separate(self) -> None:
        slog, _, events = self.make()
        for ip in ("192.0.2.1", "192.0.2.2", "192.0.2.1", "2001:db8::1"):
            slog.warn(ip, "line")
        self.assertEqual([e["source"] for e in events], ["192.0.2.1", "192.0.2.2", "2001:db8::1"])

    def test_table_is_bounded(self) -> None:
        slog, clock, events = self.make(max_sources=10)
        for n in range(1000):
            slog.warn(f"10.0.{n // 256}.{n % 256}", "line")
        self.assertEqual(len(slog), 11)  # ten sources and the shared entry
        self.assertEqual(len(events), 11)
        clock.advance(10)
        slog.flush()
        summary = [e for e in events if e.get("source") == OTHER_SOURCES and "suppressed" in e]
        self.assertEqual(summary[0]["suppressed"], 989)


# -- the guard ----------------------------------------------------------------------------------
class ConnectionGuardTests(unittest.SynchronousTestCase):
    def test_refuses_beyond_the_total_and_per_address(self) -> None:
        guard = ConnectionGuard(StreamLimits(max_connections=3, max_per_ip=2), task.Clock(), budget=100)
        guard.opened("192.0.2.1", True)
        guard.opened("192.0.2.1", True)
        self.assertIn("tcp-accept-iplimit", guard.refusal("192.0.2.1"))
        self.assertIsNone(guard.refusal("192.0.2.2"))
        guard.opened("192.0.2.9", False)  # outbound: counts in the total only
        self.assertEqual(guard.per_ip, {"192.0.2.1": 2})
        self.assertIn("tcp-max-connections", guard.refusal("192.0.2.2"))
        guard.closed("192.0.2.1", True)
        self.assertIsNone(guard.refusal("192.0.2.1"))
        guard.closed("192.0.2.1", True)
        guard.closed("192.0.2.9", False)
        self.assertEqual((guard.total, guard.per_ip), (0, {}))

    def test_file_descriptor_budget_lowers_the_total(self) -> None:
        guard = ConnectionGuard(StreamLimits(max_connections=2048), task.Clock(), budget=100)
        self.assertEqual(guard.max_connections, 100)
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        budget = fd_budget()
        if soft != resource.RLIM_INFINITY:
            self.assertLess(budget, soft)
            self.assertGreaterEqual(soft - budget, 32)


class OptionTests(unittest.SynchronousTestCase):
    def parse(self, *args: str) -> Options:
        options = Options()
        options.parseOptions(list(args))
        return options

    def test_defaults(self) -> None:
        self.assertEqual(self.parse()["tcp_limits"], StreamLimits())
        self.assertEqual(StreamLimits(), StreamLimits(2048, 64, 128 * 1024, 10.0, 20.0, 180.0, 10.0))

    def test_values(self) -> None:
        limits = self.parse("--tcp-max-connections", "10", "--tcp-accept-iplimit", "3", "--tcp-conn-wq-max", "4096",
                            "--tcp-send-timeout", "2", "--tcp-msg-read-timeout", "3", "--tcp-idle", "40",
                            "--tcp-log-interval", "60")["tcp_limits"]
        self.assertEqual(limits, StreamLimits(10, 3, 4096, 2.0, 3.0, 40.0, 60.0))

    def test_bad_values_are_one_line(self) -> None:
        for args, name in ((["--tcp-accept-iplimit", "0"], "--tcp-accept-iplimit"),
                           (["--tcp-msg-read-timeout", "-1"], "--tcp-msg-read-timeout"),
                           (["--tcp-conn-wq-max", "lots"], "--tcp-conn-wq-max"),
                           (["--tcp-send-timeout", "inf"], "--tcp-send-timeout")):
            from io import StringIO

            err = StringIO()
            old, sys.stderr = sys.stderr, err
            try:
                with self.assertRaises(SystemExit):
                    self.parse(*args)
            finally:
                sys.stderr = old
            self.assertIn(name, err.getvalue())
            self.assertEqual(len(err.getvalue().strip().splitlines()), 1, err.getvalue())


# -- loopback ------------------------------------------------------------------------------------
class _Collecting(protocol.Factory):
    """A server that keeps the TCPPeer of every connection it accepts."""

    def __init__(self, accepted: list) -> None:
        self.accepted = accepted

    def buildProtocol(self, addr: Any) -> TCPPeer:
        peer = TCPPeer()
        self.accepted.append(peer)
        return peer


class StreamLimitTestsMixin:
    host = "127.0.0.1"
    timeout = 20

    def make_leg(self, **limits: Any) -> tuple[StreamLeg, Recorder]:
        leg = StreamLeg(self.host, 0)
        leg.limits = StreamLimits(**limits)
        recorder = Recorder()
        dispatcher = RecordingDispatcher(reactor, legs=[leg], receiver=recorder)
        leg.listen(reactor)
        dispatcher.reindex()
        self.addCleanup(self._stop_leg, leg)
        return leg, recorder

    def _stop_leg(self, leg: StreamLeg) -> Any:
        d = leg.stop()
        return wait_until(lambda: not leg.connections, WAIT, what="the leg to close").addCallback(lambda _: d)

    @inlineCallbacks
    def connect(self, leg: StreamLeg, wait_accepted: bool = True, receive_buffer: int = 0) -> Any:
        peer = TCPPeer()
        kind = endpoints.TCP6ClientEndpoint if ":" in leg.host else endpoints.TCP4ClientEndpoint
        peer = yield endpoints.connectProtocol(kind(reactor, leg.host, leg.port, timeout=WAIT), peer)
        if receive_buffer:
            peer.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.addCleanup(peer.close)
        if wait_accepted:
            yield wait_until(lambda: peer.address in leg.connections or peer.closed, WAIT,
                             what="the leg to accept")
        return peer

    @inlineCallbacks
    def assert_still_serving(self, leg: StreamLeg, recorder: Recorder) -> Any:
        before = len(recorder.items)
        peer = yield self.connect(leg)
        peer.transport.write(request_bytes(self.host, peer.address[1], "still-serving"))
        items = yield recorder.wait(before + 1)
        self.assertEqual(items[-1][0].call_id, "still-serving")

    # a peer that never reads ---------------------------------------------------------------
    @inlineCallbacks
    def test_peer_that_never_reads_is_aborted(self) -> Any:
        """Default limits: the proxy sends 64 KiB at a time to a peer that
        reads nothing; the connection is aborted long before 16 MiB are
        queued, and the leg keeps serving others."""
        leg, recorder = self.make_leg()
        peer = yield self.connect(leg, receive_buffer=4096)
        peer.transport.pauseProducing()  # never read
        queued = 0
        for _ in range(256):  # at most 16 MiB
            if peer.address not in leg.connections:
                break
            leg.send(CHUNK, peer.address)
            queued += len(CHUNK)
            yield task.deferLater(reactor, 0, lambda: None)  # the reactor's turn: it sends, we may be cut
        self.assertNotIn(peer.address, leg.connections,
                         f"still open with {queued} octets sent to a peer that does not read")
        # the kernel takes a few MiB (net.ipv4.tcp_wmem), the leg 64 KiB + 128 KiB more
        self.assertLessEqual(queued, 12 * 1024 * 1024)
        peer.transport.resumeProducing()
        yield peer.wait_lost()
        yield self.assert_still_serving(leg, recorder)

    @inlineCallbacks
    def test_send_blocked_past_the_send_timeout_is_aborted(self) -> Any:
        """A queue under the limit that the peer never takes: aborted after
        the send timeout."""
        leg, _ = self.make_leg(send_timeout=0.5, write_queue_max=64 * 1024 * 1024)
        peer = yield self.connect(leg, receive_buffer=4096)
        peer.transport.pauseProducing()
        started = reactor.seconds()
        for _ in range(128):  # 8 MiB: more than the kernel's socket buffers take
            leg.send(CHUNK, peer.address)
        yield wait_until(lambda: peer.address not in leg.connections, WAIT, what="the send timeout")
        self.assertGreaterEqual(reactor.seconds() - started, 0.5)

    @inlineCallbacks
    def test_queue_for_a_connection_being_opened_is_bounded(self) -> Any:
        """Messages sent while an outbound connection is still being opened
        wait in memory: at most C{write_queue_max} octets of them."""
        leg, _ = self.make_leg(write_queue_max=100 * 1024)
        logs = LogCapture(self)
        accepted: list[TCPPeer] = []
        server = reactor.listenTCP(0, _Collecting(accepted), interface=self.host)
        self.addCleanup(server.stopListening)
        self.addCleanup(lambda: [p.close() for p in accepted])
        target = (self.host, server.getHost().port)
        for n in range(4):  # in one reactor turn: the connect has not completed
            leg.send(bytes([65 + n]) * 65536, target)
        yield wait_until(lambda: accepted, WAIT, what="the outbound connection")
        yield accepted[0].wait_data(lambda d: len(d) >= 65536)
        yield task.deferLater(reactor, 0.2, lambda: None)  # anything more would have come by now
        self.assertEqual(accepted[0].data, b"A" * 65536)
        self.assertTrue(any("still being opened" in line for line in logs.items), logs.items)

    # slow senders ------------------------------------------------------------------------
    @inlineCallbacks
    def test_one_byte_at_a_time_is_cut_at_the_read_timeout(self) -> Any:
        """Slowloris: a byte every 50 ms keeps the connection busy (never
        idle), but no message is ever complete."""
        leg, recorder = self.make_leg(read_timeout=0.5)
        started = reactor.seconds()  # (the timer may start at the connect: no message yet)
        peer = yield self.connect(leg)
        data = request_bytes(self.host, peer.address[1], "slow", extra="X-Pad: " + "a" * 4000 + "\r\n")
        position = [0]

        def drip() -> None:
            if not peer.closed and position[0] < 200:  # 200 bytes at most: 10 s
                peer.transport.write(data[position[0]:position[0] + 1])
                position[0] += 1

        trickle = task.LoopingCall(drip)
        trickle.start(0.05)
        self.addCleanup(lambda: trickle.running and trickle.stop())
        yield peer.wait_lost(timeout=WAIT)
        self.assertGreaterEqual(reactor.seconds() - started, 0.5)
        self.assertEqual(recorder.items, [])
        yield self.assert_still_serving(leg, recorder)

    @inlineCallbacks
    def test_silent_connection_is_cut_at_the_read_timeout(self) -> Any:
        leg, _ = self.make_leg(read_timeout=0.5)
        peer = yield self.connect(leg)
        yield peer.wait_lost(timeout=WAIT)

    @inlineCallbacks
    def test_whole_messages_keep_the_connection(self) -> Any:
        """A message every 0.2 s, each split in two writes, for 1.6 s: the
        read timeout (1 s) runs per message, so nothing is cut."""
        leg, recorder = self.make_leg(read_timeout=1.0)
        peer = yield self.connect(leg)
        for n in range(8):
            data = request_bytes(self.host, peer.address[1], f"steady-{n}")
            peer.transport.write(data[:40])
            yield task.deferLater(reactor, 0.1, peer.transport.write, data[40:])
            yield recorder.wait(n + 1)
            yield task.deferLater(reactor, 0.1, lambda: None)
        self.assertFalse(peer.closed)
        self.assertIn(peer.address, leg.connections)

    # how many ------------------------------------------------------------------------------
    @inlineCallbacks
    def test_connections_per_address_are_capped(self) -> Any:
        leg, recorder = self.make_leg(max_per_ip=3)
        kept = []
        for _ in range(3):
            kept.append((yield self.connect(leg)))
        extra = yield self.connect(leg, wait_accepted=False)
        yield extra.wait_lost()
        self.assertEqual(len(leg.connections), 3)
        self.assertEqual(leg.refused, 1)
        yield kept[0].close()
        yield wait_until(lambda: len(leg.connections) == 2, WAIT, what="the leg to forget one")
        yield self.assert_still_serving(leg, recorder)

    @inlineCallbacks
    def test_garbage_connections_log_once_per_interval(self) -> Any:
        """Thirty connections from one address, each closed for garbage:
        one line about the address, not thirty."""
        leg, _ = self.make_leg()
        logs = LogCapture(self)
        for n in range(30):
            peer = yield self.connect(leg)
            peer.transport.write(b"\x16\x03\x01 junk \xff\r\n\r\n")
            yield peer.wait_lost()
        lines = [line for line in logs.items if self.host in line]
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("Content-Length", lines[0])


class StreamLimitIPv4Tests(StreamLimitTestsMixin, unittest.TestCase):
    @inlineCallbacks
    def test_total_connections_are_capped(self) -> Any:
        """Two sources, a total of 2: a third connection is refused
        whatever its address."""
        leg, recorder = self.make_leg(max_connections=2)
        yield self.connect(leg)
        endpoint = endpoints.TCP4ClientEndpoint(reactor, leg.host, leg.port, timeout=WAIT,
                                                bindAddress=("127.0.0.2", 0))
        other = yield endpoints.connectProtocol(endpoint, TCPPeer())
        self.addCleanup(other.close)
        yield wait_until(lambda: len(leg.connections) == 2, WAIT, what="two connections")
        third = yield endpoints.connectProtocol(
            endpoints.TCP4ClientEndpoint(reactor, leg.host, leg.port, timeout=WAIT, bindAddress=("127.0.0.3", 0)),
            TCPPeer())
        yield third.wait_lost()
        self.assertEqual(leg.refused, 1)
        yield other.close()
        yield wait_until(lambda: len(leg.connections) == 1, WAIT, what="the leg to forget one")
        yield self.assert_still_serving(leg, recorder)


class StreamLimitIPv6Tests(StreamLimitTestsMixin, unittest.TestCase):
    host = "::1"
    skip = NO_IPV6


# -- the file-descriptor limit -------------------------------------------------------------
def _limited_twistd(limit: int, legs: str, cwd: str) -> list[str]:
    """twistd under a soft and hard RLIMIT_NOFILE of C{limit} (set in the
    child before it starts twistd)."""
    code = ("import os, resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, ({0}, {0})); "
            "os.execv(sys.argv[1], sys.argv[1:])").format(limit)
    return [sys.executable, "-c", code, *twistd_command(), "-n", "--pidfile=", "sipproxy", "--legs", legs,
            "--secret-file", os.path.join(cwd, "secret")]


class FileDescriptorLimitTests(unittest.TestCase):
    timeout = 60

    @inlineCallbacks
    def test_udp_answers_when_tcp_connections_are_refused(self) -> Any:
        """twistd with 64 file descriptors: TCP connections are accepted
        until refused (bounded at 200 tries), the UDP leg still answers
        OPTIONS, and TCP serves again once connections close."""
        cwd = temp_dir(self)
        port = reserve_port("127.0.0.1")
        legs = f"udp:127.0.0.1:{port},tcp:127.0.0.1:{port}"
        proc = start_process(self, _limited_twistd(64, legs, cwd), cwd, "twistd", env=child_environment())
        log_path = os.path.join(cwd, "twistd.out")

        def log() -> str:
            with open(log_path, errors="replace") as f:
                return f.read()

        yield wait_until(lambda: proc.poll() is not None or f"listening on tcp:127.0.0.1:{port}" in log(), 15,
                         what="twistd to listen")
        self.assertIsNone(proc.poll(), log())
        socks: list[socket.socket] = []
        self.addCleanup(lambda: [s.close() for s in socks])
        refused = None
        for n in range(200):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            socks.append(sock)
            sock.sendall(sip_options("127.0.0.1", port, sock.getsockname()[1], proto="TCP", call_id=f"fd-{n}"))
            sock.settimeout(5)
            try:
                answer = sock.recv(65535)
            except OSError:
                answer = b""
            if not answer.startswith(b"SIP/2.0 200"):
                refused = n
                break
        self.assertIsNotNone(refused, "200 connections accepted under a limit of 64 descriptors")
        self.assertGreater(refused, 10)
        probe = UDPProbe("127.0.0.1", port, lambda local: sip_options("127.0.0.1", port, local), testcase=self)
        answer = yield wait_until(probe, 10, interval=0.2, what="the UDP leg to answer")
        self.assertTrue(answer.startswith(b"SIP/2.0 200"), answer[:40])
        for sock in socks:
            sock.close()
        socks.clear()
        answer = b""
        for n in range(50):  # until the proxy has seen the closes: at most 50 tries, 5 s
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(sip_options("127.0.0.1", port, sock.getsockname()[1], proto="TCP", call_id=f"again-{n}"))
                try:
                    answer = sock.recv(65535)
                except OSError:
                    answer = b""
            if answer:
                break
            yield task.deferLater(reactor, 0.1, lambda: None)
        self.assertTrue(answer.startswith(b"SIP/2.0 200"), answer[:40])
        self.assertIsNone(proc.poll())
        self.assertIn("refused a connection from", log())
        self.assertNotIn("Traceback", log())
