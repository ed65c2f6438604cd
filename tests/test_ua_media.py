"""Media in calls (sipproxy.ua.media_session): two Simples on a memory SIP
network whose RTP goes through fake UDP ports on one Clock (deterministic:
hold, the no-RTP hang-up, the end of the played file, the DTMF method
choice, bad files before any SIP); then two Simples on real loopback
sockets exchanging a file, an echo and DTMF both ways."""
from __future__ import annotations

import os
from typing import Any

from twisted.internet import defer, reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

from sipproxy.sip.offer_answer import MediaParams
from sipproxy.ua.call import CallEnd
from sipproxy.ua.media import g711
from sipproxy.ua.media.audiofile import AudioFileError, read_wav, write_wav
from sipproxy.ua.media.dtmf import DIGITS
from sipproxy.ua.media.rtp import parse_rtp
from sipproxy.ua.media_session import MediaOptions, MediaSession
from tests.test_media_stream import FakeReactor
from tests.ua_util import MemoryNetwork
from tests.media_util import align, chirp, samples, tone
from tests.util import temp_dir


class FakeNetwork(MemoryNetwork):
    """SIP on memory legs, RTP on the fake ports of a L{FakeReactor}: each
    step moves the datagrams the fake ports wrote to the port they were
    sent to (by port number; the addresses are 192.0.2.x)."""

    def __init__(self) -> None:
        super().__init__(FakeReactor())
        self.clock.advance(1000.0)
        self.rtp_dropped = 0
        self.block: set[int] = set()

    def move_rtp(self) -> None:
        ports = self.clock.ports
        for number, port in list(ports.items()):
            sent, port.sent = port.sent, []
            for data, addr, _ in sent:
                target = ports.get(addr[1])
                if target is None or addr[1] in self.block:
                    self.rtp_dropped += 1
                    continue
                target.protocol.datagramReceived(data, (port.interface, number))

    def step(self, seconds: float, step: float = 0.02) -> None:
        base = self.clock.seconds()
        self.run()
        for i in range(1, int(round(seconds / step)) + 1):
            self.clock.advance(base + i * step - self.clock.seconds())
            self.move_rtp()
            self.run()
            self.move_rtp()


class CallMediaTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.net = FakeNetwork()
        self.alice = self.net.simple("192.0.2.1", from_="alice")
        self.bob = self.net.simple("192.0.2.2", from_="bob")
        self.bob_calls: list[Any] = []
        self.folder = temp_dir(self)

    def listen(self, **media: Any) -> None:
        self.bob.listen(on_create=lambda call, request: self.bob_calls.append(call) or True, media=media or True)

    def call(self, **media: Any) -> Any:
        d = self.alice.invite("sip:bob@192.0.2.2", media=media or True)
        self.net.run()
        return self.successResultOf(d)

    def wav(self, name: str, pcm: bytes) -> str:
        path = os.path.join(self.folder, name)
        write_wav(path, pcm)
        return path

    def test_sdp_has_the_bound_port_and_the_file_arrives(self) -> None:
        record = os.path.join(self.folder, "bob.wav")
        self.listen(record=record)
        sent = tone(0.4)
        call = self.call(play=self.wav("a.wav", sent))
        port = call.media.stream.local_port
        self.assertIn(f"m=audio {port} RTP/AVP".encode(), call.local_sdp)
        self.assertEqual(self.net.clock.ports[port].interface, "192.0.2.1")
        bobs = self.bob_calls[0]
        self.assertIn(f"m=audio {bobs.media.stream.local_port} ".encode(), bobs.local_sdp)
        self.net.step(0.6)
        # the file is 20 frames: then alice hangs up (Net::SIP's default)
        self.assertEqual(self.successResultOf(call.ended), CallEnd("local", 200, "OK"))
        self.assertEqual(bobs.end.by, "remote")
        self.assertEqual(call.media.stats()["sent"], 20)
        self.assertEqual(bobs.media.stats()["received"], 20)
        got = read_wav(record)
        self.assertEqual(got, g711.ulaw_to_pcm16(g711.pcm16_to_ulaw(sent)))
        self.assertTrue(call.media.stopped and bobs.media.stopped)
        self.assertEqual(self.net.clock.ports, {})  # every socket closed

    def test_codec_of_the_answer_is_used(self) -> None:
        self.listen(codecs=["PCMA"])
        call = self.call(play=self.wav("a.wav", tone(0.2)), codecs=["PCMU", "PCMA"])
        self.assertEqual(call.negotiated.codec, "PCMA")
        port = self.net.clock.ports[call.media.stream.local_port]
        sent = port.sent[:]  # the packet sent at once, before any step moved it
        self.net.step(0.1)
        self.assertTrue(sent)
        self.assertEqual({parse_rtp(d).payload_type for d, _, _ in sent}, {8})
        stats = self.bob_calls[0].media.stats()
        self.assertGreater(stats["received"], 4)
        self.assertEqual(stats["unknown_payload"], 0)

    def test_media_end_callback_instead_of_bye(self) -> None:
        self.listen()
        ended: list[Any] = []
        call = self.call(play=self.wav("a.wav", tone(0.1)), on_media_end=ended.append)
        self.net.step(0.3)
        self.assertEqual(ended, [call])
        self.assertEqual(call.state, "established")
        call.bye()
        self.net.step(0.04)
        self.assertEqual(call.state, "ended")

    def test_looped_file_keeps_playing(self) -> None:
        self.listen()
        call = self.call(play=self.wav("a.wav", tone(0.1)), repeat=0)
        self.net.step(1.0)
        self.assertEqual(call.state, "established")
        self.assertGreaterEqual(call.media.stats()["sent"], 49)

    def test_no_rtp_hangs_up_after_the_timeout(self) -> None:
        self.listen(no_rtp_timeout=None)
        call = self.call(no_rtp_timeout=2.0)
        self.net.block.add(call.media.stream.local_port)  # nothing reaches alice
        self.net.step(1.9)
        self.assertEqual(call.state, "established")
        self.net.step(0.2)
        self.assertEqual(self.successResultOf(call.ended).by, "local")
        self.assertEqual(self.bob_calls[0].end.by, "remote")

    def test_hold_stops_sending_both_ways_and_resume_restarts(self) -> None:
        self.listen(play=self.wav("b.wav", tone(0.1)), repeat=0)
        call = self.call(play=self.wav("a.wav", tone(0.1)), repeat=0, no_rtp_timeout=None)
        bobs = self.bob_calls[0]
        self.net.step(0.2)
        d = call.hold()
        self.net.step(0.04)
        self.successResultOf(d)
        a_sent, b_sent = call.media.stats()["sent"], bobs.media.stats()["sent"]
        self.net.step(0.5)
        # alice holds: she mutes; bob is told sendonly -> recvonly: he stops
        self.assertEqual(call.media.stats()["sent"], a_sent)
        self.assertEqual(bobs.media.stats()["sent"], b_sent)
        self.assertIn(b"a=recvonly", bobs.local_sdp)
        d = call.resume()
        self.net.step(0.5)
        self.successResultOf(d)
        self.assertGreater(call.media.stats()["sent"], a_sent + 20)
        self.assertGreater(bobs.media.stats()["sent"], b_sent + 20)

    def test_dtmf_auto_is_rfc4733_when_offered(self) -> None:
        got: list[Any] = []
        self.listen(on_dtmf=got.append)
        call = self.call()
        seen: list[Any] = []
        self.bob_calls[0].on("dtmf", seen.append)
        self.assertEqual(call.media.dtmf_method(), "rfc4733")
        d = call.send_dtmf("1#")
        self.net.step(0.6)
        self.successResultOf(d)
        self.assertEqual([(x.digit, x.method) for x in got], [("1", "rfc4733"), ("#", "rfc4733")])
        self.assertEqual(seen, got)

    def test_dtmf_inband_on_request_and_bad_methods_fail(self) -> None:
        got: list[Any] = []
        self.listen(on_dtmf=got.append)
        call = self.call()
        d = call.send_dtmf("59", method="inband")
        self.net.step(0.8)
        self.successResultOf(d)
        self.assertEqual([(x.digit, x.method) for x in got], [("5", "inband"), ("9", "inband")])
        self.failureResultOf(call.send_dtmf("1", method="morse"), ValueError)

    def test_bad_file_fails_before_any_sip(self) -> None:
        self.listen()
        bad = os.path.join(self.folder, "bad.wav")
        with open(bad, "wb") as f:
            f.write(b"not a wav at all")
        failure = self.failureResultOf(self.alice.invite("sip:bob@192.0.2.2", media={"play": bad}),
                                       AudioFileError)
        self.assertIn("bad.wav", str(failure.value))
        self.failureResultOf(self.alice.invite("sip:bob@192.0.2.2", media={"play": bad + ".missing.wav"}),
                             AudioFileError)
        self.net.run()
        self.assertEqual(self.net.methods(), [])
        with self.assertRaises(AudioFileError):
            self.bob.listen(media={"record": os.path.join(self.folder, "no", "such", "x.wav")})

    def test_echo_and_play_are_exclusive(self) -> None:
        with self.assertRaises(ValueError):
            MediaOptions(play="x.wav", echo=0.1)


class _Call:
    """Just what a MediaSession reads of a call."""

    def __init__(self, clock: Any, negotiated: MediaParams) -> None:
        self.clock = clock
        self.negotiated = negotiated
        self.local_sdp = b""
        self.target = None
        self.call_id = "x"
        self.events: list[Any] = []
        self.endpoint = type("E", (), {"dispatcher": type("D", (), {"legs": [type("L", (), {"host": "192.0.2.1"})]})})

    def _emit(self, name: str, payload: Any) -> None:
        self.events.append((name, payload))


class SessionTests(SynchronousTestCase):
    def test_auto_without_telephone_event_sends_tones(self) -> None:
        clock = FakeReactor()
        params = MediaParams("198.51.100.7", 40000, 0, "PCMU", 8000, None, 20, "sendrecv", True, True)
        session = MediaSession(_Call(clock, params), MediaOptions(rtcp=False))
        session.start(session.call)
        self.assertEqual(session.dtmf_method(), "inband")
        d = session.send_dtmf("7")
        clock.run(0.3)
        self.successResultOf(d)
        packets = clock.ports[session.port].packets()
        self.assertEqual({p.payload_type for p in packets}, {0})
        from sipproxy.ua.media.dtmf import detect_digits

        found = detect_digits(g711.ulaw_to_pcm16(p.payload) for p in packets)
        self.assertEqual([x.digit for x in found], ["7"])
        self.failureResultOf(session.send_dtmf("7", method="rfc4733"), ValueError)
        stopped = session.stop()
        clock.advance(0)
        self.successResultOf(stopped)


class LoopbackMediaTests(TestCase):
    """Two Simples on 127.0.0.1 with real sockets."""

    timeout = 30

    def setUp(self) -> None:
        from sipproxy.app.ua import Simple

        self.folder = temp_dir(self)
        self.alice = Simple(reactor, legs=["udp:127.0.0.1:0"], from_="alice")
        self.bob = Simple(reactor, legs=["udp:127.0.0.1:0"], from_="bob")
        self.addCleanup(self.alice.cleanup)
        self.addCleanup(self.bob.cleanup)
        self.bob_calls: list[Any] = []

    def target(self) -> str:
        return f"sip:bob@{self.bob.dispatcher.legs[0].sent_by}"

    @defer.inlineCallbacks
    def test_play_to_an_echo_and_record_it(self) -> Any:
        sent = chirp(1.0)
        play = os.path.join(self.folder, "chirp.wav")
        write_wav(play, sent)
        mine = os.path.join(self.folder, "back.wav")
        theirs = os.path.join(self.folder, "bob.wav")
        self.bob.listen(on_create=lambda call, request: self.bob_calls.append(call) or True,
                        media={"echo": 0.0, "record": theirs})
        call = yield self.alice.invite(self.target(), media={"play": play, "record": mine})
        end = yield call.ended
        self.assertEqual(end.by, "local")
        yield call.media.closed
        yield self.bob_calls[0].media.closed
        reference = samples(g711.ulaw_to_pcm16(g711.pcm16_to_ulaw(sent)))
        for path in (theirs, mine):
            recorded = samples(read_wav(path))
            value, lag = align(reference[800:7200], recorded, 2400)
            # Every 100 ms of the chirp comes back intact near that delay. On a
            # loaded machine a late burst may move the delay once (the echo
            # sends what it has at its next deadline), which spoils the
            # one-lag figure and at most the one chunk it falls in.
            chunks = []
            for start in range(800, 7200, 800):
                expected = lag + start - 800
                chunks.append(align(reference[start:start + 800], recorded, expected + 960, probe=200,
                                    min_lag=expected - 960))
            good = [c for c in chunks if c[0] > 0.99]
            self.assertGreaterEqual(len(good), len(chunks) - 1, (path, value, lag, chunks))
        stats = call.media.stats()
        self.assertEqual(stats["sent"], 50)
        self.assertEqual(stats["lost"], 0)
        self.assertGreater(stats["received"], 40)

    @defer.inlineCallbacks
    def test_sixteen_digits_both_methods(self) -> Any:
        got: list[Any] = []
        self.bob.listen(on_create=lambda call, request: self.bob_calls.append(call) or True,
                        media={"on_dtmf": got.append})
        call = yield self.alice.invite(self.target(), media=True)
        yield call.send_dtmf(DIGITS, method="rfc4733", duration_ms=60)
        yield call.send_dtmf(DIGITS, method="inband", duration_ms=80)
        yield call.send_dtmf("0", method="inband")  # a marker: the last digit before it has ended
        yield call.bye()
        yield self.bob_calls[0].media.closed
        rfc = [x.digit for x in got if x.method == "rfc4733"]
        inband = [x.digit for x in got if x.method == "inband"]
        self.assertEqual("".join(rfc), DIGITS)
        self.assertEqual("".join(inband), DIGITS + "0")
