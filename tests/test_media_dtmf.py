"""DTMF: RFC 4733 payloads, the sender's packet plan, the receiver's
reports under loss and repeats, the tone generator and the Goertzel
detector (G.711, noise, twist, talk-off), and tones made by sox."""
from __future__ import annotations

import math
import os
import random
import shutil
import subprocess
import tempfile
import wave
from array import array

from hypothesis import given, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from sipproxy.ua.media import dtmf, g711
from sipproxy.ua.media.dtmf import (DtmfDigit, EventPackets, EventReceiver, TelephoneEvent, TelephoneEventError,
                                    ToneDetector, decode_event, detect_digits, dtmf_plan, encode_event, tone_frames)
from sipproxy.ua.media.rtp import RTPSender, parse_rtp
from tests.util import require_program

SILENCE = bytes(320)
KEYS = "0123456789*#ABCD"


def frames_from_samples(samples) -> list[bytes]:
    """PCM16LE frames of 160 samples (clipped to 16 bits, zero padded)."""
    clipped = array("h", (max(-32768, min(32767, int(round(x)))) for x in samples))
    clipped.extend([0] * (-len(clipped) % 160))
    data = clipped.tobytes()
    return [data[i:i + 320] for i in range(0, len(data), 320)]


def samples_of(frames) -> array:
    return array("h", b"".join(frames))


def keyed(keys: str, duration_ms: int = 100, twist_db: float = 0.0, lead_in: int = 0) -> list[bytes]:
    """Audio of a key string as Net::SIP's plan sends it, after C{lead_in}
    samples of silence (so presses do not start on a frame boundary)."""
    samples = array("h", [0] * lead_in)
    for key, ms in dtmf_plan(keys, duration_ms):
        if key is None:
            samples.extend([0] * (ms * 8))
        else:
            samples.extend(samples_of(tone_frames(key, ms, twist_db=twist_db))[:ms * 8])
    samples.extend([0] * 800)
    return frames_from_samples(samples)


def through_g711(frames, law: str = "PCMU") -> list[bytes]:
    codec = g711.codec_for(law)
    return [codec.decode(codec.encode(f)) for f in frames]


def add_noise(frames, snr_db: float, seed: int, signal_power: float) -> list[bytes]:
    """White Gaussian noise C{snr_db} below C{signal_power} (mean square)."""
    rng = random.Random(seed)
    sigma = math.sqrt(signal_power / 10 ** (snr_db / 10))
    return frames_from_samples(x + rng.gauss(0, sigma) for x in samples_of(frames))


class PayloadTests(SynchronousTestCase):
    def test_layout(self) -> None:
        self.assertEqual(encode_event(11, True, 10, 800), bytes([11, 0x8A, 0x03, 0x20]))
        self.assertEqual(decode_event(bytes([11, 0x8A, 0x03, 0x20])), TelephoneEvent(11, True, 10, 800))
        self.assertEqual(decode_event(bytes([11, 0x8A, 0x03, 0x20])).digit, "#")
        # the reserved bit is ignored
        self.assertEqual(decode_event(bytes([1, 0x4A, 0, 160])), TelephoneEvent(1, False, 10, 160))

    def test_refuses_garbage(self) -> None:
        for payload, reason in ((b"", "0 bytes, need 4"), (b"\x01\x0a\x00", "3 bytes"),
                                (b"\x01\x0a\x00\xa0\x00", "not a multiple of 4")):
            with self.assertRaises(TelephoneEventError) as caught:
                decode_event(payload)
            self.assertIn(reason, caught.exception.reason)
        self.assertRaises(ValueError, encode_event, 1, False, 64, 0)

    @given(st.binary(max_size=12))
    def test_any_bytes_decode_or_refuse(self, payload: bytes) -> None:
        try:
            event = decode_event(payload)
        except TelephoneEventError as e:
            self.assertTrue(e.reason)
        else:
            self.assertEqual(encode_event(event.event, event.end, event.volume, event.duration),
                             bytes([payload[0], payload[1] & 0xBF]) + payload[2:4])

    def test_event_codes(self) -> None:
        self.assertEqual([dtmf.event_code(k) for k in "0123456789*#abcd"], list(range(16)))
        self.assertRaises(ValueError, dtmf.event_code, "E")
        self.assertEqual(dtmf.tone_pair("1"), (697.0, 1209.0))
        self.assertEqual(dtmf.tone_pair("d"), (941.0, 1633.0))


class PlanTests(SynchronousTestCase):
    def test_gaps_as_net_sip(self) -> None:
        self.assertEqual(dtmf_plan("12", 100), [("1", 100), (None, 50), ("2", 100)])
        self.assertEqual(dtmf_plan("11", 80), [("1", 80), (None, 100), ("1", 80)])
        self.assertEqual(dtmf_plan("1,2"), [("1", 100), (None, 100), ("2", 100)])
        self.assertEqual(dtmf_plan("a"), [("A", 100)])

    def test_event_packets_of_a_100ms_press(self) -> None:
        press = EventPackets("5", 100)
        self.assertEqual(press.samples, 800)
        self.assertEqual([len(t) for t in press.ticks], [1, 1, 1, 1, 3])
        events = [decode_event(p) for tick in press.ticks for p in tick]
        self.assertEqual([e.duration for e in events], [160, 320, 480, 640, 800, 800, 800])
        self.assertEqual([e.end for e in events], [False] * 4 + [True] * 3)
        self.assertEqual({(e.event, e.volume) for e in events}, {(5, 10)})

    def test_event_packets_round_up_to_ticks(self) -> None:
        press = EventPackets("#", 50, volume=7)
        self.assertEqual(len(press.ticks), 3)
        self.assertEqual(press.samples, 480)
        self.assertEqual(decode_event(press.ticks[-1][0]), TelephoneEvent(11, True, 7, 400))

    def test_refuses_bad_keys(self) -> None:
        self.assertRaises(ValueError, EventPackets, "x")
        self.assertRaises(ValueError, EventPackets, "1", 0)


def send(receiver: EventReceiver, packets, start: float = 10.0) -> list[DtmfDigit]:
    """Feed (timestamp, payload) pairs 20 ms apart."""
    found = []
    for i, (ts, payload) in enumerate(packets):
        found += receiver.feed(ts, payload, start + 0.02 * i)
    return found


def press_packets(key: str, ts: int, duration_ms: int = 100) -> list[tuple[int, bytes]]:
    return [(ts, p) for tick in EventPackets(key, duration_ms).ticks for p in tick]


class EventReceiverTests(SynchronousTestCase):
    def test_one_report_per_press_despite_end_repeats(self) -> None:
        found = send(EventReceiver(), press_packets("5", 1000) + press_packets("5", 1800) + press_packets("9", 2600))
        self.assertEqual(found, [DtmfDigit("5", 100, "rfc4733"), DtmfDigit("5", 100, "rfc4733"),
                                 DtmfDigit("9", 100, "rfc4733")])

    def test_lost_start_packets(self) -> None:
        packets = press_packets("7", 4000, 200)
        found = send(EventReceiver(), packets[4:])
        self.assertEqual(found, [DtmfDigit("7", 200, "rfc4733")])

    def test_only_an_end_packet_arrives(self) -> None:
        found = send(EventReceiver(), press_packets("*", 4000)[-1:])
        self.assertEqual(found, [DtmfDigit("*", 100, "rfc4733")])

    def test_redundant_and_reordered_updates(self) -> None:
        packets = press_packets("3", 100)
        shuffled = [packets[0], packets[2], packets[1], packets[2], packets[3], packets[5], packets[4], packets[6]]
        self.assertEqual(send(EventReceiver(), shuffled), [DtmfDigit("3", 100, "rfc4733")])

    def test_all_end_packets_lost_then_next_press(self) -> None:
        first = [p for p in press_packets("1", 100) if not decode_event(p[1]).end]
        found = send(EventReceiver(), first + press_packets("2", 900))
        # the first press ends when the new timestamp shows up; its
        # duration is the last update's
        self.assertEqual(found, [DtmfDigit("1", 80, "rfc4733"), DtmfDigit("2", 100, "rfc4733")])

    def test_straggler_of_an_older_press_is_ignored(self) -> None:
        receiver = EventReceiver()
        found = send(receiver, press_packets("1", 100)[:2] + press_packets("2", 900)[:1])
        self.assertEqual(found, [DtmfDigit("1", 40, "rfc4733")])
        self.assertEqual(receiver.feed(100, encode_event(1, True, 10, 800), 11.0), [])
        self.assertEqual(receiver.feed(50, encode_event(1, False, 10, 160), 11.0), [])

    def test_expire_reports_a_press_without_end(self) -> None:
        receiver = EventReceiver(timeout=0.5)
        found = send(receiver, press_packets("8", 100)[:3], start=10.0)
        self.assertEqual(found, [])
        self.assertEqual(receiver.expire(10.2), [])
        self.assertEqual(receiver.expire(10.6), [DtmfDigit("8", 60, "rfc4733")])
        self.assertEqual(receiver.expire(20.0), [])
        # its late end packets do not report it again
        self.assertEqual(send(receiver, press_packets("8", 100)[-3:], start=21.0), [])

    def test_non_key_events_and_garbage(self) -> None:
        receiver = EventReceiver()
        self.assertEqual(receiver.feed(5, encode_event(16, True, 10, 800), 1.0), [])  # flash
        self.assertEqual(receiver.feed(6, b"\x01", 1.0), [])
        self.assertEqual(receiver.errors, 1)
        # volume 0 is 0 dBm0 (loud), a key press all the same
        self.assertEqual(receiver.feed(7, encode_event(4, True, 0, 800), 1.0), [DtmfDigit("4", 100, "rfc4733")])

    def test_from_rtp_sender_packets(self) -> None:
        """The RTP side of a press: one timestamp, marker on the first,
        sequence numbers advancing, and the clock moving on after it."""
        sender = RTPSender(0, rng=random.Random(9))
        start = sender.timestamp
        press = EventPackets("B", 100)
        datagrams = []
        for i, tick in enumerate(press.ticks):
            for j, payload in enumerate(tick):
                datagrams.append(sender.packet(payload, 0, payload_type=101, timestamp=start,
                                               marker=(i == 0 and j == 0)))
        sender.skip(press.samples)
        packets = [parse_rtp(d) for d in datagrams]
        self.assertEqual({p.timestamp for p in packets}, {start})
        self.assertEqual([p.marker for p in packets], [True] + [False] * 6)
        self.assertEqual(len({p.sequence for p in packets}), 7)
        self.assertEqual(sender.timestamp, (start + 800) & 0xFFFFFFFF)
        self.assertEqual(send(EventReceiver(), [(p.timestamp, p.payload) for p in packets]),
                         [DtmfDigit("B", 100, "rfc4733")])


class ToneTests(SynchronousTestCase):
    def test_frames_and_padding(self) -> None:
        frames = tone_frames("1", 50)
        self.assertEqual([len(f) for f in frames], [320, 320, 320])
        self.assertEqual(samples_of(frames)[400:].tolist(), [0] * 80)
        self.assertGreater(max(samples_of(frames)), 10000)

    def test_frequencies(self) -> None:
        # the spectrum peaks exactly at the key's two frequencies
        samples = samples_of(tone_frames("9", 200))

        def power(f: float) -> float:
            c = 2 * math.cos(2 * math.pi * f / 8000)
            s1 = s2 = 0.0
            for x in samples:
                s1, s2 = x + c * s1 - s2, s1
            return s1 * s1 + s2 * s2 - c * s1 * s2

        powers = {f: power(f) for f in dtmf.ROWS + dtmf.COLUMNS}
        self.assertEqual(set(sorted(powers, key=powers.get)[-2:]), {852.0, 1477.0})
        self.assertLess(max(p for f, p in powers.items() if f not in (852.0, 1477.0)), powers[852.0] / 1000)

    def test_twist(self) -> None:
        weak_row = samples_of(tone_frames("1", 100, twist_db=6.0))
        detector = ToneDetector()
        self.assertEqual(detector.classify(weak_row[:320]), "1")
        self.assertIsNone(detector.classify(samples_of(tone_frames("1", 100, twist_db=12.0))[:320]))


class DetectorTests(SynchronousTestCase):
    def assertKeys(self, frames, keys: str, durations=None) -> None:
        found = detect_digits(frames)
        self.assertEqual("".join(d.digit for d in found), keys)
        self.assertEqual({d.method for d in found}, {"audio"} if keys else set())
        if durations is not None:
            for d in found:
                self.assertLessEqual(abs(d.duration_ms - durations), 20, d)

    def test_sixteen_keys_round_trip_through_both_laws(self) -> None:
        for law in ("PCMU", "PCMA"):
            self.assertKeys(through_g711(keyed(KEYS, lead_in=37), law), KEYS, durations=100)

    def test_white_noise_at_15_db(self) -> None:
        clean = keyed(KEYS, lead_in=91)
        noisy = through_g711(add_noise(clean, 15.0, seed=4, signal_power=7000 ** 2), "PCMU")
        self.assertKeys(noisy, KEYS, durations=100)

    def test_twist_both_ways(self) -> None:
        for twist in (6.0, -6.0):
            self.assertKeys(through_g711(keyed("147*2580369#ABCD", twist_db=twist, lead_in=50)), "147*2580369#ABCD",
                            durations=100)

    def test_noise_and_twist_together(self) -> None:
        frames = keyed(KEYS, twist_db=4.0, lead_in=13)
        self.assertKeys(through_g711(add_noise(frames, 18.0, seed=8, signal_power=7000 ** 2), "PCMA"), KEYS)

    def test_repeated_key_is_two_presses(self) -> None:
        self.assertKeys(through_g711(keyed("5555", lead_in=100)), "5555")
        # even with only 40 ms between them, wherever the frames cut
        for lead_in in range(0, 160, 20):
            frames = samples_of(tone_frames("5", 100))[:800]
            gap = array("h", [0] * 320)
            self.assertKeys(frames_from_samples([0] * lead_in + list(frames) + list(gap) + list(frames) + [0] * 800),
                            "55")

    def test_durations(self) -> None:
        # 70 ms and longer wherever the frames cut them (60 ms presses are
        # missed at the worst alignment: one clean window only)
        for ms in (70, 80, 200, 1000):
            for lead_in in range(0, 160, 10):
                self.assertKeys(keyed("6", ms, lead_in=lead_in), "6", durations=ms)

    def test_a_dropped_frame_inside_a_press_does_not_split_it(self) -> None:
        for lead_in in range(0, 160, 20):
            frames = keyed("3", 300, lead_in=lead_in)
            frames[7] = SILENCE  # a lost packet, played as silence
            self.assertKeys(frames, "3")

    def test_press_still_sounding_is_reported_by_flush(self) -> None:
        detector = ToneDetector()
        found = []
        for frame in tone_frames("0", 200):
            found += detector.feed(frame)
        self.assertEqual(found, [])
        self.assertEqual(detector.flush(), [DtmfDigit("0", 200, "audio")])
        self.assertEqual(detector.flush(), [])

    def test_feed_any_chunk_size(self) -> None:
        data = b"".join(through_g711(keyed("19", lead_in=3)))
        detector = ToneDetector()
        found = []
        for i in range(0, len(data), 202):
            found += detector.feed(data[i:i + 202])
        self.assertEqual("".join(d.digit for d in found + detector.flush()), "19")

    def test_single_tones_are_not_keys(self) -> None:
        for f in dtmf.ROWS + dtmf.COLUMNS:
            self.assertKeys(frames_from_samples(9000 * math.sin(2 * math.pi * f * n / 8000) for n in range(8000)), "")

    def test_near_misses_are_not_keys(self) -> None:
        t = range(8000)
        cases = {
            "two rows": [6000 * (math.sin(2 * math.pi * 697 * n / 8000) + math.sin(2 * math.pi * 852 * n / 8000))
                         for n in t],
            "a third tone": [5000 * (math.sin(2 * math.pi * 697 * n / 8000) + math.sin(2 * math.pi * 1209 * n / 8000)
                                     + math.sin(2 * math.pi * 1000 * n / 8000)) for n in t],
            "12 dB twist": [8000 * math.sin(2 * math.pi * 697 * n / 8000) + 2000 * math.sin(2 * math.pi * 1209 * n / 8000)
                            for n in t],
            "too quiet": [100 * (math.sin(2 * math.pi * 697 * n / 8000) + math.sin(2 * math.pi * 1209 * n / 8000))
                          for n in t],
        }
        rng = random.Random(2)
        cases["white noise"] = [rng.gauss(0, 6000) for _ in t]
        for name, samples in cases.items():
            found = detect_digits(through_g711(frames_from_samples(samples)))
            self.assertEqual(found, [], name)

    def test_speech_like_signals_are_not_keys(self) -> None:
        """Voiced speech, synthesised: a gliding glottal pulse train through
        three formant resonators, with the two lower formants placed right on
        DTMF rows and columns (the worst case for talk-off)."""
        for seed, (f1, f2) in enumerate([(700, 1220), (770, 1336), (852, 1477), (941, 1633), (697, 1209)]):
            for f0 in ((100.0, 200.0), (118.0, 122.0), (80.0, 300.0)):
                samples = vowel(2.0, seed, f0, ((f1, 60.0), (f2, 70.0), (2500.0, 100.0)))
                self.assertEqual(detect_digits(through_g711(frames_from_samples(samples))), [], (f1, f2, f0))


def vowel(seconds: float, seed: int, f0: tuple[float, float], formants) -> list[float]:
    rng = random.Random(seed)
    coefficients = []
    for f, bandwidth in formants:
        r = math.exp(-math.pi * bandwidth / 8000)
        coefficients.append((2 * r * math.cos(2 * math.pi * f / 8000), -r * r))
    states = [[0.0, 0.0] for _ in formants]
    out, phase = [], 0.0
    for n in range(int(seconds * 8000)):
        pitch = f0[0] + (f0[1] - f0[0]) * (0.5 + 0.5 * math.sin(2 * math.pi * 1.3 * n / 8000))
        phase += pitch / 8000
        x = rng.gauss(0, 0.02)
        if phase >= 1:
            phase -= 1
            x += 1.0
        y = 0.0
        for (a1, a2), state in zip(coefficients, states):
            v = x + a1 * state[0] + a2 * state[1]
            state[1], state[0] = state[0], v
            y += v
        out.append(y * (0.3 + 0.7 * abs(math.sin(3 * math.pi * n / 8000))))
    peak = max(abs(v) for v in out)
    return [v / peak * 12000 for v in out]


class SoxToneTests(SynchronousTestCase):
    """Tones, noise and twist made by sox, an independent generator."""

    def setUp(self) -> None:
        self.sox_path = require_program("sox")
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir)

    def sox(self, *args: str) -> None:
        subprocess.run([self.sox_path, "-R", "-V1", *args], check=True, timeout=60)

    def read(self, name: str) -> array:
        with wave.open(os.path.join(self.dir, name), "rb") as w:
            self.assertEqual((w.getnchannels(), w.getsampwidth(), w.getframerate()), (1, 2, 8000))
            return array("h", w.readframes(w.getnframes()))

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def key_file(self, key: str, name: str, row_gain: float = 1.0, seconds: float = 0.2) -> None:
        low, high = dtmf.tone_pair(key)
        self.sox("-n", "-r", "8000", "-b", "16", "-c", "1", self.path(name), "synth", str(seconds),
                 "sin", str(low), "sin", str(high), "remix", f"1v{0.5 * row_gain},2v0.5", "pad", "0.05", "0.1")

    def test_sox_keys(self) -> None:
        for key in KEYS:
            self.key_file(key, "key.wav")
            frames = frames_from_samples(self.read("key.wav"))
            found = detect_digits(through_g711(frames))
            self.assertEqual([d.digit for d in found], [key])
            self.assertLessEqual(abs(found[0].duration_ms - 200), 20)

    def test_sox_keys_in_noise_at_15_db(self) -> None:
        for key in "159#D":
            self.key_file(key, "tone.wav")
            self.sox("-n", "-r", "8000", "-b", "16", "-c", "1", self.path("noise.wav"), "synth", "0.35", "whitenoise",
                     "vol", "0.39")
            self.sox("-m", self.path("tone.wav"), self.path("noise.wav"), self.path("mixed.wav"))
            tone, noise = self.read("tone.wav"), self.read("noise.wav")
            snr = 10 * math.log10(sum(x * x for x in tone) / 0.2 * 0.35 / sum(x * x for x in noise))
            self.assertLess(snr, 16.0)  # the test is as hard as it says
            self.assertGreater(snr, 13.0)
            found = detect_digits(through_g711(frames_from_samples(self.read("mixed.wav"))))
            self.assertEqual([d.digit for d in found], [key])

    def test_sox_twist(self) -> None:
        for gain in (0.5, 2.0):  # the row tone 6 dB weaker, then 6 dB stronger
            self.key_file("8", "twist.wav", row_gain=gain)
            found = detect_digits(through_g711(frames_from_samples(self.read("twist.wav")), "PCMA"))
            self.assertEqual([d.digit for d in found], ["8"])

    def test_sox_single_tone_and_chords_are_not_keys(self) -> None:
        self.sox("-n", "-r", "8000", "-b", "16", "-c", "1", self.path("one.wav"), "synth", "0.5", "sin", "941")
        self.sox("-n", "-r", "8000", "-b", "16", "-c", "1", self.path("saw.wav"), "synth", "1", "sawtooth", "139.4")
        self.sox("-n", "-r", "8000", "-b", "16", "-c", "1", self.path("pink.wav"), "synth", "1", "pinknoise")
        for name in ("one.wav", "saw.wav", "pink.wav"):
            self.assertEqual(detect_digits(through_g711(frames_from_samples(self.read(name)))), [], name)
