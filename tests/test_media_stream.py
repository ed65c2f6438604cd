"""The RTP stream edge: pacing, latching, receiving, DTMF, the no-RTP
watchdog, RTCP and stopping on a Clock with fake UDP ports; then two real
streams on 127.0.0.1 exchanging audio and DTMF."""
from __future__ import annotations

import errno
import math
import os
import random
import shutil
import socket
import tempfile
import time
from array import array
from typing import Any, Optional

from twisted.internet import defer, error, reactor, task
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from sipproxy.ua.media import g711
from sipproxy.ua.media.audiofile import PcmSource, RawPayloadSource, WavSink, WavSource, read_wav, write_wav
from sipproxy.ua.media.clock import clock_for
from sipproxy.ua.media.dtmf import DtmfDigit, EventPackets, decode_event, tone_frames
from sipproxy.ua.media.rtcp import ReceiverReport, ReportBlock, SenderReport, build_rr, middle32, parse_rtcp
from sipproxy.ua.media.rtp import RTPPacket, build_rtp, parse_rtp
from sipproxy.ua.media import stream as stream_module
from sipproxy.ua.media.stream import PortAllocationError, RTPStream
from tests.util import has_ipv6

LOCAL = "192.0.2.1"
PEER = ("198.51.100.7", 40000)
NAT = ("203.0.113.9", 61000)


class FakePort:
    def __init__(self, reactor: "FakeReactor", number: int, protocol: Any, interface: str) -> None:
        self.reactor, self.number, self.protocol, self.interface = reactor, number, protocol, interface
        self.sent: list[tuple[bytes, tuple, float]] = []
        self.listening = True
        self.fail_writes = False

    def write(self, data: bytes, addr: tuple) -> None:
        if self.fail_writes:
            raise OSError(errno.ENOBUFS, "no buffer space")
        self.sent.append((data, addr, self.reactor.seconds()))

    def getHost(self) -> IPv4Address:
        return IPv4Address("UDP", self.interface, self.number)

    def stopListening(self) -> defer.Deferred:
        self.listening = False
        del self.reactor.ports[self.number]
        return task.deferLater(self.reactor, 0, lambda: None)

    def packets(self) -> list[RTPPacket]:
        return [parse_rtp(d) for d, _, _ in self.sent]


class FakeReactor(Clock):
    """A Clock with listenUDP; ephemeral ports are handed out in order from
    C{next_port}; C{busy} ports refuse."""

    def __init__(self, next_port: int = 20000, busy=()) -> None:
        super().__init__()
        self.ports: dict[int, FakePort] = {}
        self.next_port = next_port
        self.busy = set(busy)

    def listenUDP(self, port: int, protocol: Any, interface: str = "", maxPacketSize: int = 8192) -> FakePort:
        if port == 0:
            port = self.next_port
            self.next_port += 1
        if port in self.ports or port in self.busy:
            raise error.CannotListenError(interface, port, OSError(errno.EADDRINUSE, "in use"))
        fake = FakePort(self, port, protocol, interface)
        self.ports[port] = fake
        protocol.makeConnection(fake)
        return fake

    def run(self, seconds: float, step: float = 0.02) -> None:
        """Advance in steps to exact multiples of C{step} from now (adding
        0.02 a thousand times would land a hair short of a deadline)."""
        base = self.seconds()
        for i in range(1, int(round(seconds / step)) + 1):
            self.advance(base + i * step - self.seconds())


def tone_pcm(seconds: float, freq: float = 440.0) -> bytes:
    return array("h", (int(8000 * math.sin(2 * math.pi * freq * n / 8000)) for n in range(int(8000 * seconds)))
                 ).tobytes()


class Recorder:
    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.closed = False

    def write(self, pcm: bytes) -> None:
        self.frames.append(pcm)

    def close(self) -> None:
        self.closed = True


class StreamTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = FakeReactor()
        self.reactor.advance(1000.0)

    def stream(self, **options) -> RTPStream:
        options.setdefault("rng", random.Random(5))
        stream = RTPStream(self.reactor, **options)
        stream.listen(LOCAL)
        return stream

    def port_of(self, stream: RTPStream) -> FakePort:
        return self.reactor.ports[stream.local_port]


class PacingTests(StreamTestCase):
    def test_one_packet_per_deadline(self) -> None:
        stream = self.stream(source=PcmSource(tone_pcm(1.0)))
        stream.set_remote(PEER)
        stream.start()
        self.reactor.run(0.5)
        sent = self.port_of(stream).sent
        self.assertEqual(len(sent), 26)  # t = 0, 20, ..., 500 ms
        self.assertEqual({addr for _, addr, _ in sent}, {PEER})
        for n, (_, _, when) in enumerate(sent):
            self.assertAlmostEqual(when, 1000.0 + 0.02 * n, places=6)
        packets = [parse_rtp(d) for d, _, _ in sent]
        self.assertEqual([p.marker for p in packets[:3]], [True, False, False])
        self.assertEqual({(b.sequence - a.sequence) & 0xFFFF for a, b in zip(packets, packets[1:])}, {1})
        self.assertEqual({(b.timestamp - a.timestamp) & 0xFFFFFFFF for a, b in zip(packets, packets[1:])}, {160})
        self.assertEqual({p.payload_type for p in packets}, {0})
        self.assertEqual(packets[0].payload, g711.pcm16_to_ulaw(tone_pcm(1.0)[:320]))
        self.assertEqual(stream.stats()["sent"], 26)

    def test_schedule_is_one_timer_to_the_next_deadline(self) -> None:
        stream = self.stream(source=PcmSource(tone_pcm(1.0)))
        stream.set_remote(PEER)
        stream.start()
        self.reactor.advance(0.005)
        # the reactor's media clock holds the deadline, on one reactor timer
        calls = [c for c in self.reactor.getDelayedCalls() if c.func == clock_for(self.reactor)._fired]
        self.assertEqual(len(calls), 1)
        self.assertAlmostEqual(calls[0].getTime(), 1000.02, places=5)

    def test_a_burst_of_arrivals_does_not_hold_a_packet_due_during_it(self) -> None:
        # The reactor handles every readable socket before its timers. A
        # stream read by the reactor first sends what fell due on the media
        # clock, so a packet due in the middle of a burst goes out then,
        # not after the burst.
        sender = self.stream(source=PcmSource(tone_pcm(1.0)))
        sender.set_remote(PEER)
        sender.start()  # packet 0 at 1000.000, packet 1 due at 1000.020
        seen: list[int] = []
        readers = []
        for _ in range(3):
            reader = self.stream(on_frame=lambda pcm, packet: seen.append(len(self.port_of(sender).sent)))
            reader.set_remote(PEER)
            readers.append(reader)
        frame = g711.pcm16_to_ulaw(tone_pcm(0.02))
        self.reactor.rightNow = 1000.019  # the burst starts just before the deadline
        readers[0].datagramReceived(build_rtp(0, 1, 160, 77, frame), PEER)
        self.reactor.rightNow = 1000.021  # and goes on past it
        readers[1].datagramReceived(build_rtp(0, 1, 160, 78, frame), PEER)
        readers[2].datagramReceived(build_rtp(0, 1, 160, 79, frame), PEER)
        self.assertEqual(seen, [1, 2, 2])
        self.assertAlmostEqual(self.port_of(sender).sent[1][2], 1000.021, places=6)
        self.reactor.advance(0)  # the timer of packet 1 finds it sent: nothing twice
        self.assertEqual(len(self.port_of(sender).sent), 2)
        self.reactor.advance(0.019)
        self.assertEqual(len(self.port_of(sender).sent), 3)  # packet 2 on the grid, at 1000.040
        self.assertAlmostEqual(self.port_of(sender).sent[2][2], 1000.040, places=6)

    def test_junk_arriving_across_a_deadline_still_lets_the_packet_out(self) -> None:
        # the send-first step runs for every datagram the reactor hands a
        # stream, whatever it holds: empty, one byte, a cut header, RTCP,
        # 8 KiB of noise, a stranger's packet
        sender = self.stream(source=PcmSource(tone_pcm(1.0)))
        sender.set_remote(PEER)
        sender.start()
        reader = self.stream()
        reader.set_remote(PEER)
        reader.datagramReceived(build_rtp(0, 1, 160, 77, b"\xff" * 160), PEER)  # latches PEER
        junk = [(b"", PEER), (b"\x80", PEER), (b"\x80\x00\x00", PEER), (b"\x81\xc9\x00\x01" + b"\x00" * 4, PEER),
                (bytes(range(256)) * 32, PEER), (build_rtp(0, 9, 1440, 5, b"\xff" * 160), ("198.51.100.99", 4000))]
        for n, (data, source) in enumerate(junk):
            self.reactor.rightNow = 1000.015 + 0.002 * n  # the deadline, 1000.020, falls among them
            reader.datagramReceived(data, source)
        sent = self.port_of(sender).sent
        self.assertEqual(len(sent), 2)
        self.assertAlmostEqual(sent[1][2], 1000.021, places=6)  # with the datagram after the deadline
        self.assertEqual(reader.malformed, 5)
        self.assertEqual(reader.foreign, 1)

    def test_late_timer_catches_up_then_skips(self) -> None:
        source = PcmSource(b"".join(array("h", [i] * 160).tobytes() for i in range(200)))
        stream = self.stream(source=source)
        stream.set_remote(PEER)
        stream.start()
        port = self.port_of(stream)
        self.reactor.advance(0.065)  # deadlines 20, 40, 60 ms passed: three sent at once
        self.assertEqual(len(port.sent), 4)
        self.assertEqual({when for _, _, when in port.sent[1:]}, {1000.065})
        self.reactor.advance(0.015)  # back on the grid at 80 ms
        self.assertEqual(len(port.sent), 5)
        self.reactor.advance(1.0)  # a 1 s stall: 50 deadlines passed
        self.assertEqual(len(port.sent), 6)
        packets = port.packets()
        jump = (packets[5].timestamp - packets[4].timestamp) & 0xFFFFFFFF
        self.assertEqual(jump, 50 * 160)
        self.assertTrue(packets[5].marker)
        # the source was not consumed over the gap: the next frame follows
        self.assertEqual(g711.ULAW_DECODE[packets[5].payload[0]], g711.ULAW_DECODE[g711.ulaw_encode([5])[0]])
        self.assertEqual(stream.stats()["skipped_slots"], 49)
        self.assertGreater(stream.stats()["late_max"], 0.04)

    def test_source_done_once(self) -> None:
        done = []
        stream = self.stream(source=PcmSource(tone_pcm(0.1)), on_source_done=done.append)
        stream.set_remote(PEER)
        stream.start()
        self.reactor.run(0.5)
        self.assertEqual(done, [stream])
        self.assertEqual(len(self.port_of(stream).sent), 5)

    def test_no_destination_sends_nothing_and_keeps_the_source(self) -> None:
        stream = self.stream(source=PcmSource(b"".join(array("h", [i] * 160).tobytes() for i in range(100))))
        stream.start()
        self.reactor.run(0.2)
        self.assertEqual(self.port_of(stream).sent, [])
        stream.set_remote(PEER)
        self.reactor.run(0.02)
        (packet,) = self.port_of(stream).packets()
        self.assertEqual(g711.ulaw_decode(packet.payload)[0], g711.ulaw_decode(g711.ulaw_encode([0]))[0])
        self.assertTrue(packet.marker)

    def test_raw_payload_source_passes_through_or_transcodes(self) -> None:
        folder = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, folder)
        path = os.path.join(folder, "x.raw")
        with open(path, "wb") as f:
            f.write(bytes(range(160)))
        same = self.stream(source=RawPayloadSource(path))
        same.set_remote(PEER)
        same.start()
        other = self.stream(codec="PCMA", source=RawPayloadSource(path))
        other.set_remote(PEER)
        other.start()
        self.assertEqual(self.port_of(same).packets()[0].payload, bytes(range(160)))
        (packet,) = self.port_of(other).packets()
        self.assertEqual((packet.payload_type, packet.payload), (8, g711.ulaw_to_alaw(bytes(range(160)))))

    def test_a_looped_source_is_encoded_once_per_distinct_frame(self) -> None:
        """A looped two-frame file: 26 packets, two encodings; the payloads
        are what encoding each frame would give, and a codec change
        (after the answer) encodes afresh."""
        frames = [array("h", [v] * 160).tobytes() for v in (1000, -2000)]
        stream = self.stream(source=PcmSource(b"".join(frames), repeat=0))
        encoded: list[bytes] = []

        def counting(codec: g711.Codec) -> g711.Codec:
            def encode(pcm: bytes) -> bytes:
                encoded.append(pcm)
                return codec.encode(pcm)
            return codec._replace(encode=encode)

        stream.codec = counting(stream.codec)
        stream.set_remote(PEER)
        stream.start()
        self.reactor.run(0.5)
        packets = self.port_of(stream).packets()
        self.assertEqual(len(packets), 26)
        self.assertEqual(encoded, frames)
        self.assertEqual([p.payload for p in packets[:4]], [g711.pcm16_to_ulaw(f) for f in frames * 2])
        stream.set_codec("PCMA")
        stream.codec = counting(stream.codec)
        self.reactor.run(0.1)
        self.assertEqual(len(encoded), 4)
        self.assertEqual(self.port_of(stream).packets()[-1].payload_type, 8)
        self.assertIn(self.port_of(stream).packets()[-1].payload, {g711.pcm16_to_alaw(f) for f in frames})

    def test_a_new_source_in_another_encoding_is_not_served_from_the_old_one(self) -> None:
        """The same 320 bytes are 40 ms of u-law (a raw file of 320-byte
        packets) or 20 ms of PCM16: the second source must not get the
        first one's encoding."""
        folder = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, folder)
        data = bytes(range(160)) * 2
        path = os.path.join(folder, "x.raw")
        with open(path, "wb") as f:
            f.write(data)
        stream = self.stream(codec="PCMA", source=RawPayloadSource(path, repeat=0, packet_size=320))
        stream.set_remote(PEER)
        stream.start()
        stream.source = PcmSource(data, repeat=0)
        self.reactor.run(0.02)
        self.assertEqual([p.payload for p in self.port_of(stream).packets()],
                         [g711.ulaw_to_alaw(data), g711.pcm16_to_alaw(data)])

    def test_a_host_name_for_the_peer_sends_nothing_until_its_packets_come(self) -> None:
        """RFC 4566 lets c= name a host; no lookup is made on the media
        path: the stream waits and answers to where the peer's packets
        come from. So does every other address it cannot send to."""
        hostile = [("media.example.com", 40000), ("", 40000), ("[2001:db8::1]", 40000), ("x" * 300, 40000),
                   ("999.1.1.1", 40000), ("198.51.100.7", 0), ("198.51.100.7", -1), ("198.51.100.7", 65536),
                   ("198.51.100.7", "40000")]
        for remote in hostile:
            stream = self.stream(source=PcmSource(tone_pcm(1.0)))
            stream.set_remote(remote, remote)
            self.assertEqual((stream.destination, stream.remote_rtcp), (None, None), remote)
            stream.start()
            self.reactor.run(0.2)
            self.assertEqual(self.port_of(stream).sent, [], remote)
            stream.datagramReceived(audio(1), NAT)
            self.reactor.run(0.04)
            self.assertEqual({addr for _, addr, _ in self.port_of(stream).sent}, {NAT}, remote)

    def test_send_errors_are_counted(self) -> None:
        stream = self.stream(source=PcmSource(tone_pcm(1.0)))
        stream.set_remote(PEER)
        self.port_of(stream).fail_writes = True
        stream.start()
        self.reactor.run(0.1)
        self.assertEqual(stream.stats()["send_errors"], 6)


def audio(seq: int, ts: Optional[int] = None, ssrc: int = 77, pt: int = 0, payload: bytes = None) -> bytes:
    if payload is None:
        payload = g711.pcm16_to_ulaw(array("h", [seq % 100] * 160).tobytes())
    return build_rtp(pt, seq, seq * 160 if ts is None else ts, ssrc, payload)


class ReceiveTests(StreamTestCase):
    def test_decoded_to_sink_and_callback_with_statistics(self) -> None:
        sink, seen = Recorder(), []
        stream = self.stream(sink=sink, on_frame=lambda pcm, packet: seen.append(packet.sequence))
        stream.set_remote(PEER)
        for seq in (1, 2, 3, 3, 5):
            stream.datagramReceived(audio(seq), PEER)
            self.reactor.advance(0.02)
        self.assertEqual(seen, [1, 2, 3, 5])  # the duplicate dropped
        self.assertEqual(sink.frames[1], g711.ulaw_to_pcm16(g711.pcm16_to_ulaw(array("h", [2] * 160).tobytes())))
        stats = stream.stats()
        self.assertEqual((stats["received"], stats["lost"], stats["duplicates"]), (4, 1, 1))

    def test_latching_to_the_real_source(self) -> None:
        stream = self.stream(source=PcmSource(tone_pcm(1.0)))
        stream.set_remote(PEER)  # what the SDP says
        stream.start()
        self.reactor.run(0.04)
        stream.datagramReceived(audio(1), NAT)  # where packets really come from
        self.reactor.run(0.04)
        stream.datagramReceived(audio(2), ("192.0.2.99", 5004))  # a stranger
        stream.datagramReceived(audio(3), PEER)  # not the latched address either
        self.reactor.run(0.04)
        addresses = [addr for _, addr, _ in self.port_of(stream).sent]
        self.assertEqual(addresses, [PEER, PEER, PEER, NAT, NAT, NAT, NAT])
        self.assertEqual(stream.stats()["foreign"], 2)
        self.assertEqual(stream.stats()["received"], 1)
        # a new SDP (re-INVITE) forgets the latch
        stream.set_remote(("198.51.100.8", 41000))
        self.reactor.run(0.02)
        self.assertEqual(self.port_of(stream).sent[-1][1], ("198.51.100.8", 41000))

    def test_invalid_packets_do_not_latch_or_crash(self) -> None:
        frames = []
        stream = self.stream(on_frame=lambda pcm, packet: frames.append(pcm))
        stream.set_remote(PEER)
        for junk in (b"", b"\x00" * 40, b"\x80", audio(1)[:11], bytes([0x81, 200, 0, 1, 0, 0, 0, 1]),
                     audio(1, pt=13)):
            stream.datagramReceived(junk, NAT)
        self.assertIsNone(stream.latched)
        self.assertEqual(frames, [])
        stats = stream.stats()
        self.assertEqual((stats["malformed"], stats["unknown_payload"]), (5, 1))

    def test_a_recording_that_fails_stops_with_one_line_and_the_call_goes_on(self) -> None:
        class FullDisk(Recorder):
            def write(self, pcm: bytes) -> None:
                raise OSError(errno.ENOSPC, "No space left on device")

        sink, seen, logged = FullDisk(), [], []
        stream = self.stream(sink=sink, on_frame=lambda pcm, packet: seen.append(packet.sequence))
        observer = logged.append
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        for seq in (1, 2, 3):
            stream.datagramReceived(audio(seq), PEER)
        self.assertEqual(seen, [1, 2, 3])
        self.assertTrue(sink.closed)
        self.assertIsNone(stream.sink)
        lines = [e for e in logged if "recording stopped" in e.get("log_format", "")]
        self.assertEqual(len(lines), 1)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_a_failing_callback_is_logged_not_raised(self) -> None:
        def boom(pcm: bytes, packet: RTPPacket) -> None:
            raise RuntimeError("application bug")

        stream = self.stream(on_frame=boom)
        stream.datagramReceived(audio(1), PEER)
        stream.datagramReceived(audio(2), PEER)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)
        self.assertEqual(stream.stats()["received"], 2)


class SocketPort:
    """A fake port over a real non-blocking UDP socket on 127.0.0.1: the
    stream's own reads and sends use the socket, the test's Clock drives
    the ticks. C{reading} is what the reactor would be told."""

    def __init__(self, protocol: Any) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.setblocking(False)
        self.socket.bind(("127.0.0.1", 0))
        self.protocol = protocol
        self.reading = True

    def stopReading(self) -> None:
        self.reading = False

    def getHost(self) -> IPv4Address:
        return IPv4Address("UDP", "127.0.0.1", self.socket.getsockname()[1])

    def stopListening(self) -> None:
        self.socket.close()


class SocketReactor(Clock):
    """A Clock at the wall clock's time (the kernel stamps arrivals with
    it) whose listenUDP gives a L{SocketPort}."""

    def __init__(self) -> None:
        super().__init__()
        self.rightNow = time.time()
        self.ports: list[SocketPort] = []

    def listenUDP(self, port: int, protocol: Any, interface: str = "", maxPacketSize: int = 8192) -> SocketPort:
        fake = SocketPort(protocol)
        self.ports.append(fake)
        protocol.makeConnection(fake)
        return fake


class TickReadTests(SynchronousTestCase):
    """A started stream reads its socket on its own tick, with the
    kernel's arrival times, at most 32 datagrams a tick; only the first
    CLOCKED_STREAMS streams do, the others are read by the reactor."""

    def setUp(self) -> None:
        if stream_module._stamped_reader(SocketPort(None)) is None:
            raise SkipTest("this platform does not stamp datagram arrivals (SO_TIMESTAMPNS)")
        self.reactor = SocketReactor()
        self.peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(self.peer.close)
        self.peer.bind(("127.0.0.1", 0))
        self.streams: list[RTPStream] = []
        self.addCleanup(lambda: [s.stop() for s in self.streams])

    def stream(self, **options: Any) -> RTPStream:
        stream = RTPStream(self.reactor, rng=random.Random(5), **options)
        stream.listen("127.0.0.1")
        stream.set_remote(self.peer.getsockname())
        self.streams.append(stream)
        return stream

    def send(self, stream: RTPStream, *packets: bytes) -> None:
        for data in packets:
            self.peer.sendto(data, ("127.0.0.1", stream.local_port))

    def test_read_on_the_tick_with_the_kernels_arrival_time(self) -> None:
        seen: list[int] = []
        stream = self.stream(on_frame=lambda pcm, packet: seen.append(packet.sequence))
        stream.start()  # the first tick: nothing queued yet
        self.assertFalse(self.reactor.ports[0].reading)
        sent_at = time.time()
        self.send(stream, audio(1))
        self.assertEqual(seen, [])  # the reactor does not read it: the next tick does
        self.reactor.advance(0.5)
        self.assertEqual(seen, [1])
        # the statistics have the kernel's time, not the tick's
        arrival = stream.rx.last_arrival
        self.assertLess(abs(arrival - sent_at), 0.1)
        self.assertGreater(self.reactor.seconds() - arrival, 0.2)
        self.assertEqual(stream.latched, self.peer.getsockname())

    def test_a_fresh_packet_ends_the_read_and_a_backlog_is_read_on(self) -> None:
        seen: list[int] = []
        stream = self.stream(on_frame=lambda pcm, packet: seen.append(packet.sequence))
        self.send(stream, audio(1), audio(2), audio(3))
        self.reactor.rightNow = time.time()  # the packets arrived a moment ago
        stream.start()
        # the first packet came within the last interval: the other two are behind it
        self.assertEqual(seen, [1])
        self.reactor.advance(0.020)
        # now they are older than an interval: read on until the queue is empty
        self.assertEqual(seen, [1, 2, 3])
        self.assertEqual(stream.stats()["received"], 3)

    def test_a_strangers_fresh_packets_do_not_hold_the_peers_back(self) -> None:
        seen: list[int] = []
        stream = self.stream(on_frame=lambda pcm, packet: seen.append(packet.sequence))
        stream.datagramReceived(audio(1), self.peer.getsockname())  # latched to the peer
        stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(stranger.close)
        stranger.bind(("127.0.0.1", 0))
        for n in range(3):
            stranger.sendto(audio(100 + n), ("127.0.0.1", stream.local_port))
        self.send(stream, audio(2))
        self.reactor.rightNow = time.time()  # all four arrived a moment ago
        stream.start()
        # the stranger's fresh packets did not end the read: the peer's came in this tick
        self.assertEqual(seen, [1, 2])
        self.assertEqual(stream.stats()["foreign"], 3)

    def test_a_flood_is_read_32_datagrams_a_tick(self) -> None:
        stream = self.stream()
        stream.start()
        self.reactor.rightNow += 5.0  # the reactor's clock is not the kernel's: no stamps, read on
        self.send(stream, *(audio(n) for n in range(1, 101)))
        counts = []
        for _ in range(4):
            self.reactor.advance(0.020)
            counts.append(stream.stats()["received"])
        self.assertEqual(counts, [32, 64, 96, 100])

    def test_an_oversized_datagram_is_malformed(self) -> None:
        stream = self.stream()
        stream.start()
        self.send(stream, audio(1, payload=b"\xff" * 9000), audio(2))
        self.reactor.advance(0.020)
        self.reactor.advance(0.020)
        stats = stream.stats()
        self.assertEqual((stats["malformed"], stats["received"]), (1, 1))

    def test_only_the_first_streams_read_on_their_tick(self) -> None:
        streams = [self.stream() for _ in range(stream_module.CLOCKED_STREAMS + 2)]
        for each in streams:
            each.start()
        readers = [port.reading for port in self.reactor.ports]
        self.assertEqual(readers, [False] * stream_module.CLOCKED_STREAMS + [True, True])
        # a stopped stream frees its place
        streams[0].stop()
        late = self.stream()
        late.start()
        self.assertFalse(self.reactor.ports[-1].reading)

    def test_a_stream_not_started_is_read_by_the_reactor_and_takes_no_place(self) -> None:
        idle = self.stream()
        started = [self.stream() for _ in range(stream_module.CLOCKED_STREAMS)]
        for each in started:
            each.start()
        self.assertTrue(self.reactor.ports[0].reading)
        self.assertEqual([port.reading for port in self.reactor.ports[1:]], [False] * len(started))
        self.assertIsNone(idle._read)

    def test_hostile_datagrams_on_the_tick_path(self) -> None:
        seen: list[int] = []

        def frame(pcm: bytes, packet: RTPPacket) -> None:
            seen.append(packet.sequence)
            if packet.sequence == 3:
                raise RuntimeError("application bug")

        stream = self.stream(on_frame=frame)
        stream.start()
        self.reactor.rightNow += 5.0  # no stamps: every tick reads until the queue is empty
        junk = [b"", b"\x00" * 40, b"\x80", audio(1)[:11], bytes([0x81, 200, 0, 1, 0, 0, 0, 1]), audio(1, pt=13)]
        self.send(stream, *junk, audio(1), audio(2), audio(3), audio(4))
        stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(stranger.close)
        stranger.bind(("127.0.0.1", 0))
        self.reactor.advance(0.020)
        stranger.sendto(audio(5), ("127.0.0.1", stream.local_port))  # after the latch: foreign
        self.send(stream, audio(6))
        self.reactor.advance(0.020)
        self.assertEqual(seen, [1, 2, 3, 4, 6])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        stats = stream.stats()
        self.assertEqual((stats["malformed"], stats["unknown_payload"], stats["foreign"], stats["received"]),
                         (5, 1, 1, 5))
        self.assertEqual(stream.latched, self.peer.getsockname())


class WatchdogTests(StreamTestCase):
    def test_no_rtp_after_timeout_once(self) -> None:
        fired = []
        stream = self.stream(on_no_rtp=fired.append, no_rtp_timeout=10.0)
        stream.start()
        self.reactor.run(9.9, step=0.1)
        self.assertEqual(fired, [])
        self.reactor.run(0.2, step=0.1)
        self.assertEqual(fired, [stream])
        self.reactor.run(30.0, step=1.0)
        self.assertEqual(fired, [stream])

    def test_steady_rtp_keeps_it_quiet_and_silence_after_it_fires(self) -> None:
        fired = []
        stream = self.stream(on_no_rtp=lambda s: fired.append(self.reactor.seconds()), no_rtp_timeout=10.0)
        stream.start()
        for seq in range(750):  # 15 s of RTP
            stream.datagramReceived(audio(seq), PEER)
            self.reactor.advance(0.02)
        self.assertEqual(fired, [])
        stop = self.reactor.seconds() - 0.02
        self.reactor.run(12.0, step=0.5)
        self.assertEqual(len(fired), 1)
        self.assertLessEqual(abs(fired[0] - (stop + 10.0)), 0.5)
        # RTP comes back, then stops again: reported again
        stream.datagramReceived(audio(800), PEER)
        self.reactor.run(10.5, step=0.5)
        self.assertEqual(len(fired), 2)

    def test_the_watchdog_is_not_rearmed_per_packet(self) -> None:
        stream = self.stream(no_rtp_timeout=10.0)
        stream.start()
        before = len(self.reactor.getDelayedCalls())
        for seq in range(100):
            stream.datagramReceived(audio(seq), PEER)
        self.assertEqual(len(self.reactor.getDelayedCalls()), before)


class DtmfSendTests(StreamTestCase):
    def test_rfc4733_keys_pause_the_audio(self) -> None:
        # frame i holds the value 1024 i: distinct after µ-law coding
        frames = [array("h", [1024 * i] * 160).tobytes() for i in range(1, 31)]
        stream = self.stream(source=PcmSource(b"".join(frames)), dtmf_payload_type=101)
        stream.set_remote(PEER)
        stream.start()
        self.reactor.run(0.04)  # audio frames 1, 2, 3
        done = stream.send_dtmf("12")
        fired = []
        done.addCallback(fired.append)
        self.reactor.run(0.5)
        packets = self.port_of(stream).packets()
        self.assertEqual(fired, [None])
        events = [p for p in packets if p.payload_type == 101]
        self.assertEqual(len(events), 14)
        first, second = events[:7], events[7:]
        for press, key in ((first, 1), (second, 2)):
            self.assertEqual({p.timestamp for p in press}, {press[0].timestamp})
            self.assertEqual([p.marker for p in press], [True] + [False] * 6)
            self.assertEqual([decode_event(p.payload).end for p in press], [False] * 4 + [True] * 3)
            self.assertEqual({decode_event(p.payload).event for p in press}, {key})
        # 100 ms press, 50 ms of silence, then the second press
        # (a 50 ms pause is three whole packet intervals, as in Net::SIP)
        self.assertEqual((second[0].timestamp - first[0].timestamp) & 0xFFFFFFFF, 800 + 480)
        self.assertEqual({p.ssrc for p in packets}, {packets[0].ssrc})
        self.assertEqual({(b.sequence - a.sequence) & 0xFFFF for a, b in zip(packets, packets[1:])}, {1})
        audio_values = [g711.ulaw_decode(p.payload)[0] for p in packets if p.payload_type == 0]
        expected = [g711.ulaw_decode(g711.ulaw_encode([1024 * i]))[0] for i in range(1, 20)]
        # frames 1-3, the silent gap (0s), then frames 4, 5, ... where they left off
        self.assertEqual([v for v in audio_values if v != 0][:10], expected[:10])
        audio_after = [p for p in packets if p.payload_type == 0 and packets.index(p) > packets.index(second[-1])]
        self.assertEqual((audio_after[0].timestamp - second[0].timestamp) & 0xFFFFFFFF, 800)

    def test_inband_keys_are_tones_in_the_audio_codec(self) -> None:
        stream = self.stream(codec="PCMA")
        stream.set_remote(PEER)
        stream.start()
        stream.send_dtmf("9", method="audio")
        self.reactor.run(0.3)
        packets = self.port_of(stream).packets()
        self.assertEqual({p.payload_type for p in packets}, {8})
        self.assertEqual([p.payload for p in packets[:5]], [g711.pcm16_to_alaw(f) for f in tone_frames("9", 100)])

    def test_method_choice_and_errors(self) -> None:
        stream = self.stream()
        self.assertRaises(ValueError, stream.send_dtmf, "1", method="rfc4733")
        self.assertRaises(ValueError, stream.send_dtmf, "1", method="sip-info")
        self.assertRaises(ValueError, stream.send_dtmf, "1", duration_ms=0)
        stream.set_remote(PEER)
        stream.start()
        stream.send_dtmf("1")  # no telephone-event offered: audio
        self.reactor.run(0.1)
        self.assertEqual({p.payload_type for p in self.port_of(stream).packets()}, {0})

    def test_stop_cancels_queued_keys(self) -> None:
        stream = self.stream(dtmf_payload_type=101)
        stream.set_remote(PEER)
        stream.start()
        d = stream.send_dtmf("123")
        self.reactor.advance(0.02)
        stream.stop()
        self.failureResultOf(d, defer.CancelledError)


class DtmfReceiveTests(StreamTestCase):
    def test_rfc4733_and_inband_reported(self) -> None:
        keys: list[DtmfDigit] = []
        stream = self.stream(dtmf_payload_type=101, detect_inband=True, on_dtmf=keys.append)
        seq = 0
        for tick in EventPackets("7", 100).ticks:
            for payload in tick:
                stream.datagramReceived(build_rtp(101, seq, 4000, 77, payload), PEER)
                seq += 1
            self.reactor.advance(0.02)
        for frame in [bytes(320)] * 3 + tone_frames("#", 120) + [bytes(320)] * 6:
            stream.datagramReceived(build_rtp(0, seq, 4800 + seq * 160, 77, g711.pcm16_to_ulaw(frame)), PEER)
            seq += 1
            self.reactor.advance(0.02)
        self.assertEqual(keys, [DtmfDigit("7", 100, "rfc4733"), DtmfDigit("#", 120, "audio")])

    def test_a_press_without_end_is_reported_when_audio_resumes_or_on_stop(self) -> None:
        keys: list[DtmfDigit] = []
        stream = self.stream(dtmf_payload_type=101, on_dtmf=keys.append)
        press = EventPackets("4", 100).ticks
        for seq, tick in enumerate(press[:3]):
            stream.datagramReceived(build_rtp(101, seq, 4000, 77, tick[0]), PEER)
            self.reactor.advance(0.02)
        self.reactor.advance(1.0)
        stream.datagramReceived(audio(10), PEER)
        self.assertEqual(keys, [DtmfDigit("4", 60, "rfc4733")])
        stream.datagramReceived(build_rtp(101, 11, 9000, 77, press[0][0]), PEER)
        stream.stop()
        self.assertEqual(keys[1:], [DtmfDigit("4", 20, "rfc4733")])


class RTCPTests(StreamTestCase):
    def test_even_port_and_the_next_one(self) -> None:
        stream = self.stream(rtcp=True)
        self.assertEqual(stream.local_port % 2, 0)
        self.assertTrue(16384 <= stream.local_port <= 32766)
        self.assertEqual(sorted(self.reactor.ports), [stream.local_port, stream.local_port + 1])
        fixed = self.stream(rtcp=True)
        self.assertNotEqual(fixed.local_port, stream.local_port)

    def test_busy_ports_are_skipped_and_giving_up(self) -> None:
        self.reactor.busy = {30001, 30002}  # 30000's RTCP and 30002's RTP are taken
        stream = RTPStream(self.reactor, rtcp=True, rng=random.Random(1), port_range=(30000, 30005))
        self.assertEqual(stream.listen(LOCAL), 30004)
        self.assertEqual(sorted(self.reactor.ports), [30004, 30005])
        reactor = FakeReactor(busy=range(40001, 40200, 2))
        stream = RTPStream(reactor, rtcp=True, port_range=(40000, 40199))
        self.assertRaises(PortAllocationError, stream.listen, LOCAL, 0, 5)
        self.assertEqual(reactor.ports, {})
        explicit = RTPStream(reactor, rtcp=True)
        self.assertEqual(explicit.listen(LOCAL, 50000), 50000)
        self.assertEqual(sorted(reactor.ports), [50000, 50001])

    def test_a_peer_on_port_65535_has_no_rtcp_port_after_it(self) -> None:
        """RTP on the last port: its RTCP would be port 65536, which a
        socket refuses with OverflowError, not OSError. The SDP gives no
        RTCP address then, and the peer's latched RTP address gives none
        either: the stream sends RTP, and no RTCP, for six seconds (past
        the first report at five)."""
        last = (PEER[0], 65535)
        stream = self.stream(rtcp=True, source=PcmSource(tone_pcm(1.0), repeat=0))
        stream.set_remote(last)
        self.assertIsNone(stream.remote_rtcp)
        stream.start()
        for seq in range(300):
            stream.datagramReceived(audio(seq), last)
            self.reactor.run(0.02)
        self.assertEqual(stream.latched, last)
        self.assertEqual(len(self.port_of(stream).sent), 301)
        self.assertEqual({addr for _, addr, _ in self.port_of(stream).sent}, {last})
        self.assertEqual(self.reactor.ports[stream.local_port + 1].sent, [])

    def test_reports_every_five_seconds_rtt_and_bye(self) -> None:
        stream = self.stream(rtcp=True, source=PcmSource(tone_pcm(1.0), repeat=0))
        stream.set_remote(PEER)
        stream.start()
        rtcp_port = self.reactor.ports[stream.local_port + 1]
        for seq in range(250):
            stream.datagramReceived(audio(seq), PEER)
            self.reactor.run(0.02)
        (report_sent, _, when), = rtcp_port.sent
        self.assertAlmostEqual(when, 1005.0, places=3)
        sr, = [p for p in parse_rtcp(report_sent) if isinstance(p, SenderReport)]
        self.assertEqual(sr.ssrc, stream.sender.ssrc)
        self.assertEqual(sr.blocks[0].ssrc, 77)
        self.assertEqual(sr.blocks[0].extended_max, 249)
        self.assertEqual(rtcp_port.sent[0][1], (PEER[0], PEER[1] + 1))
        # the peer's RR about us, 0.1 s after our SR, held 0.05 s: RTT 0.05
        self.reactor.advance(0.1)
        block = ReportBlock(stream.sender.ssrc, 0, 0, 100, 2, middle32(sr.ntp), int(0.05 * 65536))
        stream._rtcp_received(build_rr(77, [block]), (PEER[0], PEER[1] + 1))
        self.assertAlmostEqual(stream.stats()["round_trip"], 0.05, places=3)
        stream._rtcp_received(b"garbage", (PEER[0], PEER[1] + 1))
        stream._rtcp_received(build_rr(77), ("192.0.2.200", 9))
        self.assertEqual((stream.stats()["malformed"], stream.stats()["foreign"]), (1, 1))
        self.reactor.run(5.0)
        self.assertEqual(len(rtcp_port.sent), 2)
        stream.stop()
        last = parse_rtcp(rtcp_port.sent[-1][0])
        self.assertEqual(type(last[0]), ReceiverReport)
        self.assertEqual(last[-1].ssrcs, (stream.sender.ssrc,))


class StopTests(StreamTestCase):
    def test_stop_closes_everything(self) -> None:
        sink = Recorder()
        stream = self.stream(rtcp=True, sink=sink, source=PcmSource(tone_pcm(1.0)))
        stream.set_remote(PEER)
        stream.start()
        self.reactor.run(0.1)
        d1, d2 = stream.stop(), stream.stop()
        self.assertNoResult(d1)
        self.reactor.advance(0)
        self.assertIsNone(self.successResultOf(d1))
        self.assertIsNone(self.successResultOf(d2))
        self.assertIsNone(self.successResultOf(stream.stop()))
        self.assertEqual(self.reactor.ports, {})
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.assertTrue(sink.closed)
        sent = stream.stats()["sent"]
        stream.datagramReceived(audio(1), PEER)
        self.reactor.run(1.0)
        self.assertEqual((stream.stats()["sent"], stream.stats()["received"]), (sent, 0))


class LoopbackTests(TestCase):
    """Two streams on real sockets on 127.0.0.1."""

    timeout = 30

    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir)
        self.streams: list[RTPStream] = []

    def tearDown(self) -> defer.Deferred:
        return defer.gatherResults([s.stop() for s in self.streams])

    def make(self, **options) -> RTPStream:
        stream = RTPStream(reactor, **options)
        stream.listen("127.0.0.1")
        self.streams.append(stream)
        return stream

    def counter(self, count: int) -> tuple[defer.Deferred, Any]:
        """A Deferred firing when the returned callback was called C{count}
        times (with a timeout, so a lost packet fails instead of hanging)."""
        d: defer.Deferred = defer.Deferred()
        seen = [0]

        def tick(*args: Any) -> None:
            seen[0] += 1
            if seen[0] == count and not d.called:
                d.callback(seen[0])

        d.addTimeout(15, reactor)
        return d, tick

    @defer.inlineCallbacks
    def test_two_seconds_of_audio_both_ways(self) -> None:
        rng = random.Random(3)
        speechy = array("h", (int(6000 * math.sin(2 * math.pi * (200 + 50 * math.sin(n / 900)) * n / 8000)
                                  + rng.gauss(0, 800)) for n in range(16000)))
        wav_a = os.path.join(self.dir, "a.wav")
        write_wav(wav_a, speechy.tobytes())
        pcm_b = tone_pcm(2.0, 1000.0)
        a_done, a_frame = self.counter(100)
        b_done, b_frame = self.counter(100)
        a = self.make(source=WavSource(wav_a), on_frame=b_frame, sink=WavSink(os.path.join(self.dir, "a-got.wav")))
        b = self.make(codec="PCMU", source=PcmSource(pcm_b), on_frame=a_frame,
                      sink=WavSink(os.path.join(self.dir, "b-got.wav")))
        a.set_remote(("127.0.0.1", b.local_port))
        b.set_remote(None)  # b learns a's address from its packets (latching)
        a.start()
        b.start()
        yield defer.gatherResults([a_done, b_done])
        yield a.stop()
        yield b.stop()
        got_by_b = read_wav(os.path.join(self.dir, "b-got.wav"))
        got_by_a = read_wav(os.path.join(self.dir, "a-got.wav"))
        self.assertEqual(got_by_b, g711.ulaw_to_pcm16(g711.pcm16_to_ulaw(speechy.tobytes())))
        self.assertEqual(got_by_a, g711.ulaw_to_pcm16(g711.pcm16_to_ulaw(pcm_b)))
        self.assertEqual(b.latched, ("127.0.0.1", a.local_port))
        for stream in (a, b):
            stats = stream.stats()
            self.assertEqual((stats["sent"], stats["received"], stats["lost"]), (100, 100, 0))
            self.assertLess(stats["jitter_ms"], 20.0)

    @defer.inlineCallbacks
    def test_dtmf_both_methods(self) -> None:
        keys: list[DtmfDigit] = []
        done, tick = self.counter(8)

        def on_dtmf(digit: DtmfDigit) -> None:
            keys.append(digit)
            tick()

        a = self.make(codec="PCMA", dtmf_payload_type=101)
        b = self.make(codec="PCMA", dtmf_payload_type=101, detect_inband=True, on_dtmf=on_dtmf)
        a.set_remote(("127.0.0.1", b.local_port))
        a.start()
        yield a.send_dtmf("123#", method="rfc4733")
        yield a.send_dtmf("456*", method="audio")
        pause = a.send_dtmf(",,")  # trailing silence, so the last tone ends
        yield done
        yield pause
        self.assertEqual([(k.digit, k.method) for k in keys],
                         [(k, "rfc4733") for k in "123#"] + [(k, "audio") for k in "456*"])
        for key in keys:
            self.assertLessEqual(abs(key.duration_ms - 100), 20, key)

    @defer.inlineCallbacks
    def test_ipv6_loopback(self) -> None:
        if not has_ipv6():
            raise SkipTest("this host cannot bind UDP on ::1")
        done, tick = self.counter(10)
        a = RTPStream(reactor, source=PcmSource(tone_pcm(0.2)))
        a.listen("::1")
        b = RTPStream(reactor, on_frame=tick)
        b.listen("::1")
        self.streams += [a, b]
        a.set_remote(("::1", b.local_port))
        a.start()
        yield done
        self.assertEqual(b.stats()["received"], 10)
        self.assertEqual(b.latched, ("::1", a.local_port))
