"""HEP v3 capture: the encoder against the HEP3 chunk layout, the sender's
bounds, the dispatcher hook, and the --hep options."""
from __future__ import annotations

import socket
import struct

from twisted.internet import task
from twisted.internet.error import MessageLengthError
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from sipproxy.app.hep_options import HEPService, check_hep_options, make_hep_service
from sipproxy.app.tap import Options
from sipproxy.proxy.stateless import StatelessProxy
from sipproxy.testing import MemoryLeg, memory_dispatcher
from sipproxy.transport.hep import HEPError, HEPSender, call_id_of, decode, encode, parse_hep_target
from tests.util import child_environment, run_process, twistd_command, wait_until

REQUEST = (b"OPTIONS sip:bob@192.0.2.20:5070 SIP/2.0\r\n"
           b"Via: SIP/2.0/UDP 192.0.2.10:5061;branch=z9hG4bK-1;rport\r\n"
           b"Max-Forwards: 70\r\nFrom: <sip:alice@example.org>;tag=a1\r\nTo: <sip:bob@example.org>\r\n"
           b"Call-ID: c0ffee@192.0.2.10\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")


def chunk(kind: int, value: bytes) -> bytes:
    """A generic chunk as the HEP3 specification draws it: vendor 0x0000,
    type, length (6 octets of chunk header included), value."""
    return struct.pack("!HHH", 0, kind, 6 + len(value)) + value


class EncoderLayoutTests(SynchronousTestCase):
    """Byte for byte against the HEP3 specification's chunk table."""

    def test_ipv4_udp_every_chunk(self) -> None:
        packet = encode(REQUEST, ("192.0.2.10", 5061), ("192.0.2.1", 5060), 17, 1700000000.123456,
                        agent_id=2001, password=b"secret", correlation=b"c0ffee@192.0.2.10")
        chunks = (
            chunk(0x0001, b"\x02")                        # IP family: AF_INET
            + chunk(0x0002, b"\x11")                      # IP protocol: UDP (17)
            + chunk(0x0003, bytes([192, 0, 2, 10]))       # IPv4 source
            + chunk(0x0004, bytes([192, 0, 2, 1]))        # IPv4 destination
            + chunk(0x0007, struct.pack("!H", 5061))      # source port
            + chunk(0x0008, struct.pack("!H", 5060))      # destination port
            + chunk(0x0009, struct.pack("!I", 1700000000))  # seconds
            + chunk(0x000a, struct.pack("!I", 123456))    # microseconds
            + chunk(0x000b, b"\x01")                      # protocol type: SIP
            + chunk(0x000c, struct.pack("!I", 2001))      # capture agent id
            + chunk(0x000e, b"secret")                    # authentication key
            + chunk(0x0011, b"c0ffee@192.0.2.10")         # correlation id
            + chunk(0x000f, REQUEST)                      # payload, last
        )
        self.assertEqual(packet, b"HEP3" + struct.pack("!H", 6 + len(chunks)) + chunks)

    def test_ipv6_tcp(self) -> None:
        packet = encode(b"SIP/2.0 200 OK\r\n\r\n", ("2001:db8::1", 5061), ("2001:db8::2", 40000), 6, 7.5)
        self.assertEqual(packet[:4], b"HEP3")
        self.assertEqual(struct.unpack("!H", packet[4:6])[0], len(packet))
        self.assertIn(chunk(0x0001, b"\x0a"), packet)  # AF_INET6 (10)
        self.assertIn(chunk(0x0002, b"\x06"), packet)  # TCP
        self.assertIn(chunk(0x0005, socket.inet_pton(socket.AF_INET6, "2001:db8::1")), packet)
        self.assertIn(chunk(0x0006, socket.inet_pton(socket.AF_INET6, "2001:db8::2")), packet)
        kinds = [kind for _, kind in decode(packet).chunks]
        self.assertEqual(kinds, [1, 2, 5, 6, 7, 8, 9, 10, 11, 12, 15])  # no IPv4 address chunks
        self.assertIn(chunk(0x000a, struct.pack("!I", 500000)), packet)
        self.assertTrue(packet.endswith(chunk(0x000f, b"SIP/2.0 200 OK\r\n\r\n")))
        self.assertNotIn(struct.pack("!HH", 0, 0x0011), packet)  # no correlation id asked for

    def test_mixed_families_become_mapped_ipv6(self) -> None:
        decoded = decode(encode(b"x" * 20, ("::", 5060), ("192.0.2.7", 5060), 17, 0.0))
        self.assertEqual(decoded.family, 10)
        self.assertEqual(decoded.dst, ("::ffff:192.0.2.7", 5060))

    def test_unencodable_is_none_not_an_exception(self) -> None:
        self.assertIsNone(encode(b"x", ("host.example", 5060), ("192.0.2.1", 5060), 17, 0.0))
        self.assertIsNone(encode(b"x", ("192.0.2.1", 70000), ("192.0.2.1", 5060), 17, 0.0))
        self.assertIsNone(encode(b"x" * 65500, ("192.0.2.1", 5060), ("192.0.2.2", 5060), 6, 0.0))
        self.assertIsNotNone(encode(b"x" * 65000, ("192.0.2.1", 5060), ("192.0.2.2", 5060), 6, 0.0))

    def test_round_trip(self) -> None:
        packet = encode(REQUEST, ("192.0.2.10", 5061), ("192.0.2.1", 5060), 6, 1700000000.999999, 9,
                        correlation=b"c0ffee@192.0.2.10")
        decoded = decode(packet)
        self.assertEqual((decoded.src, decoded.dst, decoded.proto, decoded.family, decoded.agent_id),
                         (("192.0.2.10", 5061), ("192.0.2.1", 5060), 6, 2, 9))
        self.assertEqual(decoded.payload, REQUEST)
        self.assertEqual(decoded.correlation, b"c0ffee@192.0.2.10")
        self.assertAlmostEqual(decoded.timestamp, 1700000000.999999, places=5)

    def test_decode_refuses_garbage(self) -> None:
        packet = encode(REQUEST, ("192.0.2.10", 5061), ("192.0.2.1", 5060), 17, 0.0)
        for bad in (b"", b"HEP2" + packet[4:], packet[:-1], packet[:6] + b"\x00\x00\x00\x01\x00\x02" + packet[12:]):
            self.assertRaises(HEPError, decode, bad)


class CallIdTests(SynchronousTestCase):
    def test_long_and_compact_forms(self) -> None:
        self.assertEqual(call_id_of(REQUEST), b"c0ffee@192.0.2.10")
        self.assertEqual(call_id_of(b"BYE sip:x SIP/2.0\r\ni:  abc \r\nl: 0\r\n\r\n"), b"abc")

    def test_not_in_the_body_and_absent(self) -> None:
        self.assertIsNone(call_id_of(b"MESSAGE sip:x SIP/2.0\r\nl: 20\r\n\r\nCall-ID: not-a-header\r\n"))
        self.assertIsNone(call_id_of(b"\xff\xfe garbage"))
        self.assertIsNone(call_id_of(b""))


class TargetTests(SynchronousTestCase):
    def test_forms(self) -> None:
        self.assertEqual(parse_hep_target("127.0.0.1:9061"), ("127.0.0.1", 9061))
        self.assertEqual(parse_hep_target("udp:127.0.0.1"), ("127.0.0.1", 9060))
        self.assertEqual(parse_hep_target("[::1]:9062"), ("::1", 9062))
        self.assertEqual(parse_hep_target("::1"), ("::1", 9060))
        self.assertEqual(parse_hep_target("localhost:9063")[1], 9063)

    def test_mistakes_name_the_problem(self) -> None:
        for text, words in (("127.0.0.1:port", "not a number"), ("127.0.0.1:0", "1-65535"),
                            ("tcp:127.0.0.1:9060", "UDP only"), ("[::1", "want HOST:PORT"), (":9060", "no host"),
                            ("no-such-host.invalid:9060", "cannot resolve")):
            with self.assertRaises(ValueError) as raised:
                parse_hep_target(text)
            self.assertIn(words, str(raised.exception), text)


class _FakePort:
    def __init__(self, sendto) -> None:
        self.socket = type("Sock", (), {"sendto": staticmethod(sendto)})()
        self.stopped = False

    def stopListening(self) -> None:
        self.stopped = True


class _FakeUDPReactor(task.Clock):
    """A clock that hands out fake UDP ports whose sendto is given."""

    def __init__(self, sendto) -> None:
        super().__init__()
        self.sendto = sendto
        self.ports: list[tuple[int, str]] = []

    def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):
        self.ports.append((port, interface))
        return _FakePort(self.sendto)


class SenderTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.events: list[dict] = []
        from twisted.logger import globalLogPublisher

        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def test_addresses_of_received_and_sent(self) -> None:
        out: list[tuple[bytes, tuple]] = []
        reactor = _FakeUDPReactor(lambda data, addr: out.append((data, addr)))
        reactor.advance(1700000000.25)
        sender = HEPSender(reactor, [("127.0.0.1", 9060), ("::1", 9061)], agent_id=5, password="pw")
        sender.start()
        self.assertEqual(reactor.ports, [(0, "0.0.0.0"), (0, "::")])
        leg = MemoryLeg("192.0.2.1", 5060, proto="tls")
        sender.received(REQUEST, leg, ("192.0.2.10", 40000))
        sender.sent(REQUEST, leg, ("192.0.2.20", 5061))
        self.assertEqual([addr for _, addr in out], [("127.0.0.1", 9060), ("::1", 9061)] * 2)
        received, sent = decode(out[0][0]), decode(out[2][0])
        self.assertEqual((received.src, received.dst, received.proto), (("192.0.2.10", 40000), ("192.0.2.1", 5060), 6))
        self.assertEqual((sent.src, sent.dst), (("192.0.2.1", 5060), ("192.0.2.20", 5061)))
        self.assertEqual((sent.agent_id, sent.password, sent.correlation, sent.timestamp),
                         (5, b"pw", b"c0ffee@192.0.2.10", 1700000000.25))
        self.assertEqual(sender.sent_count, 4)

    def test_failures_drop_and_log_once_per_interval(self) -> None:
        def refuse(data, addr):
            raise BlockingIOError(11, "Resource temporarily unavailable")

        reactor = _FakeUDPReactor(refuse)
        sender = HEPSender(reactor, [("127.0.0.1", 9060)], log_interval=10.0)
        sender.start()
        leg = MemoryLeg("192.0.2.1")
        for _ in range(50):
            sender.received(REQUEST, leg, ("192.0.2.10", 5060))
        self.assertEqual((sender.failed_count, sender.sent_count), (50, 0))
        lines = [e for e in self.events if "HEP: sending" in e.get("log_format", "")]
        self.assertEqual(len(lines), 1)
        reactor.advance(11)
        sender.received(REQUEST, leg, ("192.0.2.10", 5060))
        lines = [e for e in self.events if "HEP: sending" in e.get("log_format", "")]
        self.assertEqual(len(lines), 2)
        self.assertTrue(any("suppressed" in e.get("log_format", "") and e.get("count") == 49 for e in self.events))

    def test_message_too_long_for_the_socket(self) -> None:
        def refuse(data, addr):
            raise MessageLengthError("message too long")

        sender = HEPSender(_FakeUDPReactor(refuse), [("127.0.0.1", 9060)])
        sender.start()
        sender.sent(REQUEST, MemoryLeg(), ("192.0.2.10", 5060))
        self.assertEqual(sender.failed_count, 1)

    def test_unencodable_is_counted(self) -> None:
        out: list = []
        sender = HEPSender(_FakeUDPReactor(lambda d, a: out.append(d)), [("127.0.0.1", 9060)])
        sender.start()
        sender.received(b"x" * 66000, MemoryLeg(proto="tcp"), ("192.0.2.10", 5060))
        self.assertEqual((sender.skipped_count, out), (1, []))

    def test_nothing_before_start_or_after_stop(self) -> None:
        out: list = []
        reactor = _FakeUDPReactor(lambda d, a: out.append(d))
        sender = HEPSender(reactor, [("127.0.0.1", 9060)])
        sender.received(REQUEST, MemoryLeg(), ("192.0.2.10", 5060))
        sender.start()
        sender.stop()
        sender.received(REQUEST, MemoryLeg(), ("192.0.2.10", 5060))
        self.assertEqual(out, [])


class _Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.seen: list[tuple[str, bytes, tuple]] = []
        self.fail = fail

    def received(self, data, leg, addr) -> None:
        self.seen.append(("in", data, addr))
        if self.fail:
            raise RuntimeError("broken capture")

    def sent(self, data, leg, addr) -> None:
        self.seen.append(("out", data, addr))
        if self.fail:
            raise RuntimeError("broken capture")


class DispatcherHookTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.a, self.b = MemoryLeg("192.0.2.1"), MemoryLeg("198.51.100.1")
        self.dispatcher = memory_dispatcher([self.a, self.b])
        self.dispatcher.set_receiver(StatelessProxy(self.dispatcher, secret=b"0" * 32))

    def test_off_by_default(self) -> None:
        self.assertIsNone(self.dispatcher.capture)

    def test_forwarded_request_and_refusal_are_copied(self) -> None:
        recorder = _Recorder()
        self.dispatcher.capture = recorder
        request = REQUEST.replace(b"192.0.2.20:5070", b"198.51.100.20:5070")
        self.a.receive(request, ("192.0.2.10", 5061))
        self.assertEqual([(d, addr) for d, _, addr in recorder.seen],
                         [("in", ("192.0.2.10", 5061)), ("out", ("198.51.100.20", 5070))])
        self.assertEqual(recorder.seen[0][1], request)
        self.assertEqual(recorder.seen[1][1], self.b.sent[-1][0])  # exactly what went on the wire
        recorder.seen.clear()
        self.a.receive(b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5061;branch=z9hG4bK-2\r\n"
                       b"CSeq: nonsense\r\n\r\n", ("192.0.2.10", 5061))
        self.assertEqual([d for d, _, _ in recorder.seen], ["in", "out"])
        self.assertTrue(recorder.seen[1][1].startswith(b"SIP/2.0 400"))

    def test_a_broken_capture_does_not_break_forwarding(self) -> None:
        self.dispatcher.capture = _Recorder(fail=True)
        request = REQUEST.replace(b"192.0.2.20:5070", b"198.51.100.20:5070")
        self.a.receive(request, ("192.0.2.10", 5061))
        self.assertEqual(len(self.b.sent), 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)


    def test_nat_keepalive_pings_are_copied(self) -> None:
        from sipproxy.registrar.flow_keeper import FlowKeeper
        from sipproxy.registrar.location import Binding
        from sipproxy.registrar.memory_store import MemoryStore

        recorder = _Recorder()
        self.dispatcher.capture = recorder
        clock = task.Clock()
        keeper = FlowKeeper(clock, MemoryStore(clock), interval=30)
        keeper.watch("sip:phone@example.org", Binding("sip:phone@10.0.0.2:5060", expires=3600), self.a,
                     ("203.0.113.7", 40000))
        clock.advance(30)
        keeper.stop()
        self.assertEqual(len(self.a.sent), 1)
        self.assertEqual(recorder.seen, [("out", self.a.sent[0][0], ("203.0.113.7", 40000))])
        self.assertTrue(recorder.seen[0][1].startswith(b"OPTIONS sip:phone@10.0.0.2:5060 SIP/2.0"))


class OptionTests(SynchronousTestCase):
    def parse(self, *args: str) -> Options:
        options = Options()
        options.parseOptions(list(args))
        return options

    def test_targets_and_defaults(self) -> None:
        options = self.parse("--hep", "127.0.0.1:9061,[::1]:9062", "--hep", "127.0.0.2")
        self.assertEqual(options["hep"], [("127.0.0.1", 9061), ("::1", 9062), ("127.0.0.2", 9060)])
        self.assertEqual((options["hep-id"], options["hep-password"]), (1, None))
        self.assertEqual(self.parse()["hep"], [])

    def test_service_hooks_and_unhooks(self) -> None:
        options = self.parse("--hep", "127.0.0.1:9061", "--hep-id", "77")
        dispatcher = memory_dispatcher([MemoryLeg()])
        reactor = _FakeUDPReactor(lambda d, a: None)
        service = make_hep_service(reactor, options, dispatcher)
        self.assertIsInstance(service, HEPService)
        self.assertEqual(service.sender.agent_id, 77)
        service.startService()
        self.assertIs(dispatcher.capture, service.sender)
        service.stopService()
        self.assertIsNone(dispatcher.capture)
        self.assertIsNone(make_hep_service(reactor, self.parse(), dispatcher))

    def test_check_without_hep(self) -> None:
        for name, value in (("hep-id", 3), ("hep-password", "x")):
            options = {"hep": [], name: value}
            with self.assertRaises(usage.UsageError) as raised:
                check_hep_options(options)  # type: ignore[arg-type]
            self.assertIn(f"--{name} needs --hep", str(raised.exception))

    def test_bad_values_are_one_line_and_exit_2(self) -> None:
        for args, words in ((["--hep", "127.0.0.1:x"], "not a number"),
                            (["--hep", "127.0.0.1", "--hep-id", "4294967296"], "--hep-id must be"),
                            (["--hep", "127.0.0.1", "--hep-id", "many"], "--hep-id wants an integer"),
                            (["--hep-password", "pw"], "--hep-password needs --hep"),
                            (["--hep", "127.0.0.1", "--relay-only", "--ng", "udp:127.0.0.1:22222"], "--relay-only")):
            result = run_process([*twistd_command(), "-n", "--pidfile=", "sipproxy", *args], timeout=30,
                                 env=child_environment())
            self.assertEqual(result.returncode, 2, result)
            self.assertEqual(len(result.stderr.strip().splitlines()), 1, result)
            self.assertIn(words, result.stderr, result)
            self.assertNotIn("Traceback", result.stderr + result.stdout)


class LoopbackSenderTests(TestCase):
    """The sender on a real UDP socket, to a real loopback collector."""

    def test_copies_arrive(self):
        from twisted.internet import protocol, reactor

        got: list[bytes] = []

        class Collector(protocol.DatagramProtocol):
            def datagramReceived(self, data, addr):
                got.append(data)

        port = reactor.listenUDP(0, Collector(), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        sender = HEPSender(reactor, [("127.0.0.1", port.getHost().port)], agent_id=3)
        sender.start()
        self.addCleanup(sender.stop)
        sender.received(REQUEST, MemoryLeg("127.0.0.1", 5060), ("127.0.0.5", 5099))
        d = wait_until(lambda: got, timeout=10, what="a HEP datagram on the collector")

        def check(_):
            packet = decode(got[0])
            self.assertEqual((packet.src, packet.dst, packet.agent_id, packet.payload),
                             (("127.0.0.5", 5099), ("127.0.0.1", 5060), 3, REQUEST))
            self.assertEqual(sender.sent_count, 1)

        return d.addCallback(check)



class ReadmeExampleTests(SynchronousTestCase):
    """The README's "Capture (HEP)" examples run."""

    def setUp(self) -> None:
        import os

        with open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.rst")) as f:
            readme = f.read()
        import re

        start = readme.index("Capture (HEP)\n-------------\n") + 28
        end = re.compile(r"\n[^\n]+\n---+\n").search(readme, start)
        self.section = readme[start:end.start() if end else len(readme)]

    def test_command_line(self) -> None:
        line = next(line.strip() for line in self.section.splitlines() if "twistd -n sipproxy" in line)
        args = line.split()[3:]  # after twistd -n sipproxy
        options = Options()
        options.parseOptions(args)
        self.assertEqual((options["hep"], options["hep-id"]), ([("192.0.2.50", 9060)], 2001))

    def test_embedding(self) -> None:
        import textwrap

        code = textwrap.dedent(self.section.split(".. code-block:: python\n", 1)[1].split("\n\n``", 1)[0])
        out: list = []
        reactor = _FakeUDPReactor(lambda data, addr: out.append((data, addr)))
        leg = MemoryLeg("192.0.2.1")
        proxy = type("Proxy", (), {"dispatcher": memory_dispatcher([leg])})()
        exec(compile(code, "README.rst", "exec"), {"reactor": reactor, "proxy": proxy})
        leg.receive(REQUEST, ("192.0.2.10", 5061))
        self.assertEqual(out[0][1], ("127.0.0.1", 9060))
        self.assertEqual(decode(out[0][0]).agent_id, 2001)


class ConfigFileTests(SynchronousTestCase):
    """--hep, --hep-id and --hep-password as keys of the --config file."""

    def test_keys(self) -> None:
        import os

        from tests.util import temp_dir

        path = os.path.join(temp_dir(self), "sipproxy.toml")
        with open(path, "w") as f:
            f.write('hep = ["127.0.0.1:9061", "[::1]:9062"]\nhep-id = 7\nhep-password = "pw"\n')
        options = Options()
        options.parseOptions(["--config", path])
        self.assertEqual((options["hep"], options["hep-id"], options["hep-password"]),
                         ([("127.0.0.1", 9061), ("::1", 9062)], 7, "pw"))
