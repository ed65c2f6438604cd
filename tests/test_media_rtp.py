"""RTP packets, the sender's state and the receiver's statistics."""
from __future__ import annotations

import random

from hypothesis import assume, given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from sipproxy.ua.media.rtp import (MAX_DROPOUT, ReceiverStats, RTPError, RTPPacket, RTPSender, Verdict, build_rtp,
                                   parse_rtp)


def packet(seq: int, ts: int = 0, ssrc: int = 0x1234, pt: int = 0, payload: bytes = b"\xff" * 160) -> RTPPacket:
    return RTPPacket(pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc, payload)


class BuildParseTests(SynchronousTestCase):
    def test_fixed_header_layout(self) -> None:
        data = build_rtp(8, 0x1234, 0xDEADBEEF, 0xCAFEBABE, b"abc", marker=True)
        self.assertEqual(data[:12], bytes.fromhex("80 88 1234 deadbeef cafebabe"))
        self.assertEqual(data[12:], b"abc")

    def test_parse_fixed_header(self) -> None:
        parsed = parse_rtp(bytes.fromhex("80 00 0001 00000002 00000003") + b"xyz")
        self.assertEqual(parsed, RTPPacket(0, 1, 2, 3, b"xyz", False, (), None, 0))

    def test_round_trip_with_everything(self) -> None:
        original = RTPPacket(96, 65535, 0xFFFFFFFF, 7, b"payload", True, (1, 2, 3), (0xBEDE, b"\x10\x20\x30\x40"), 5)
        data = original.to_bytes()
        self.assertEqual(data[0], 0x80 | 0x20 | 0x10 | 3)
        self.assertEqual(data[-1], 5)
        self.assertEqual(parse_rtp(data), original)

    def test_extension_without_payload(self) -> None:
        data = build_rtp(0, 1, 2, 3, b"", extension=(0x1000, b""))
        self.assertEqual(parse_rtp(data).extension, (0x1000, b""))

    def test_build_refuses_bad_fields(self) -> None:
        self.assertRaises(ValueError, build_rtp, 128, 0, 0, 0, b"")
        self.assertRaises(ValueError, build_rtp, 0, 0, 0, 0, b"", csrcs=tuple(range(16)))
        self.assertRaises(ValueError, build_rtp, 0, 0, 0, 0, b"", extension=(1, b"abc"))
        self.assertRaises(ValueError, build_rtp, 0, 0, 0, 0, b"", padding=256)

    def test_malformed_packets_have_reasons(self) -> None:
        cases = {
            b"": "too short",
            b"\x80\x00\x00": "too short",
            bytes.fromhex("40 00 0001 00000002 00000003"): "version 1",
            bytes.fromhex("82 00 0001 00000002 00000003 00000004"): "CSRC list of 2",
            bytes.fromhex("90 00 0001 00000002 00000003 0001"): "header extension runs past",
            bytes.fromhex("90 00 0001 00000002 00000003 00010002 00000000"): "header extension of 2 words",
            bytes.fromhex("a0 00 0001 00000002 00000003 00"): "padding count is 0",
            bytes.fromhex("a0 00 0001 00000002 00000003 0005"): "padding of 5 bytes",
            bytes.fromhex("80 c8 0006 00000002 00000003"): "RTCP packet type 200",
        }
        for data, reason in cases.items():
            with self.assertRaises(RTPError, msg=data.hex()) as caught:
                parse_rtp(data)
            self.assertIn(reason, caught.exception.reason)
            self.assertIsInstance(caught.exception, ValueError)

    @given(st.binary(max_size=80))
    @settings(max_examples=400)
    def test_garbage_is_refused_cleanly(self, data: bytes) -> None:
        try:
            parsed = parse_rtp(data)
        except RTPError as e:
            self.assertTrue(e.reason)
        else:
            self.assertLessEqual(len(parsed.payload), len(data) - 12)

    @given(st.integers(0, 127), st.integers(0, 65535), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1),
           st.binary(max_size=200), st.booleans(), st.lists(st.integers(0, 2**32 - 1), max_size=15),
           st.one_of(st.none(), st.tuples(st.integers(0, 65535), st.binary(max_size=40).map(
               lambda b: b[:len(b) - len(b) % 4]))),
           st.integers(0, 255))
    def test_round_trip_property(self, pt, seq, ts, ssrc, payload, marker, csrcs, extension, padding) -> None:
        # PT 72-76 with the marker look like RTCP (RFC 5761 4): refused on parse
        assume(not (marker and 72 <= pt <= 76))
        original = RTPPacket(pt, seq, ts, ssrc, payload, marker, tuple(csrcs), extension, padding)
        self.assertEqual(parse_rtp(original.to_bytes()), original)


class SenderTests(SynchronousTestCase):
    def test_random_origins_from_injected_rng(self) -> None:
        a = RTPSender(0, rng=random.Random(1))
        b = RTPSender(0, rng=random.Random(1))
        c = RTPSender(0, rng=random.Random(2))
        self.assertEqual((a.ssrc, a.sequence, a.timestamp), (b.ssrc, b.sequence, b.timestamp))
        self.assertNotEqual((a.ssrc, a.sequence, a.timestamp), (c.ssrc, c.sequence, c.timestamp))

    def test_default_rng_differs_per_sender(self) -> None:
        origins = {(s.ssrc, s.sequence, s.timestamp) for s in (RTPSender(0) for _ in range(20))}
        self.assertEqual(len(origins), 20)

    def test_sequence_timestamp_marker(self) -> None:
        sender = RTPSender(0, ssrc=42, rng=random.Random(3))
        sender.sequence, sender.timestamp = 65534, 0xFFFFFF00
        packets = [parse_rtp(sender.packet(b"\xff" * 160, 160)) for _ in range(3)]
        self.assertEqual([p.sequence for p in packets], [65534, 65535, 0])
        self.assertEqual([p.timestamp for p in packets], [0xFFFFFF00, 0xFFFFFFA0, 0x40])
        self.assertEqual([p.marker for p in packets], [True, False, False])
        self.assertEqual({p.ssrc for p in packets}, {42})
        self.assertEqual((sender.packets_sent, sender.octets_sent), (3, 480))

    def test_talkspurt_and_skip(self) -> None:
        sender = RTPSender(0, rng=random.Random(4))
        start = sender.timestamp
        sender.packet(b"x" * 160, 160)
        sender.start_talkspurt()
        second = parse_rtp(sender.packet(b"x" * 160, 160))
        self.assertTrue(second.marker)
        sender.skip(800)
        third = parse_rtp(sender.packet(b"x" * 160, 160))
        self.assertTrue(third.marker)
        self.assertEqual(third.timestamp, (start + 320 + 800) & 0xFFFFFFFF)

    def test_explicit_timestamp_does_not_move_the_clock(self) -> None:
        sender = RTPSender(0, rng=random.Random(5))
        start = sender.timestamp
        event = parse_rtp(sender.packet(b"\x01\x0a\x00\xa0", 160, payload_type=101, timestamp=start, marker=True))
        self.assertEqual((event.payload_type, event.timestamp, event.marker), (101, start, True))
        self.assertEqual(sender.timestamp, start)
        audio = parse_rtp(sender.packet(b"x", 160))
        self.assertEqual((audio.payload_type, audio.sequence), (0, (event.sequence + 1) & 0xFFFF))
        # the explicit marker did not consume the talk-spurt marker
        self.assertTrue(audio.marker)


class ReceiverStatsTests(SynchronousTestCase):
    def feed(self, stats: ReceiverStats, seqs, ssrc: int = 0x1234) -> list[str]:
        return [stats.update(packet(s, s * 160, ssrc), s * 0.02) for s in seqs]

    def test_in_order(self) -> None:
        stats = ReceiverStats()
        self.assertEqual(self.feed(stats, range(100, 150)), [Verdict.NEW] * 50)
        self.assertEqual((stats.expected, stats.received, stats.lost), (50, 50, 0))
        self.assertEqual(stats.extended_max, 149)
        self.assertEqual(stats.jitter, 0)

    def test_loss(self) -> None:
        stats = ReceiverStats()
        self.feed(stats, [s for s in range(0, 100) if s % 10 != 3])
        self.assertEqual((stats.expected, stats.received, stats.lost), (100, 90, 10))
        fraction, lost = stats.interval_loss()
        self.assertEqual((fraction, lost), (int(10 * 256 / 100), 10))
        self.feed(stats, range(100, 200))
        self.assertEqual(stats.interval_loss(), (0, 0))

    def test_wrap_around(self) -> None:
        stats = ReceiverStats()
        verdicts = self.feed(stats, [s & 0xFFFF for s in range(65530, 65540)])
        self.assertEqual(verdicts, [Verdict.NEW] * 10)
        self.assertEqual(stats.cycles, 1 << 16)
        self.assertEqual(stats.extended_max, (1 << 16) + 3)
        self.assertEqual((stats.expected, stats.lost), (10, 0))

    def test_reordering_and_duplicates(self) -> None:
        stats = ReceiverStats()
        verdicts = self.feed(stats, [1, 2, 4, 3, 4, 3, 5, 5, 2])
        self.assertEqual(verdicts, [Verdict.NEW, Verdict.NEW, Verdict.NEW, Verdict.LATE, Verdict.DUPLICATE,
                                    Verdict.DUPLICATE, Verdict.NEW, Verdict.DUPLICATE, Verdict.DUPLICATE])
        self.assertEqual((stats.received, stats.late, stats.duplicates, stats.lost), (5, 1, 4, 0))

    def test_late_across_wrap(self) -> None:
        stats = ReceiverStats()
        self.assertEqual(self.feed(stats, [65534, 0, 65535]), [Verdict.NEW, Verdict.NEW, Verdict.LATE])
        self.assertEqual((stats.expected, stats.received, stats.lost), (3, 3, 0))

    def test_older_than_first_packet(self) -> None:
        stats = ReceiverStats()
        self.assertEqual(self.feed(stats, [10, 11, 9]), [Verdict.NEW, Verdict.NEW, Verdict.LATE])
        self.assertEqual((stats.expected, stats.received), (2, 2))

    def test_ssrc_change_restarts(self) -> None:
        stats = ReceiverStats()
        self.feed(stats, range(0, 50, 2))
        self.assertEqual(stats.lost, 24)
        self.assertEqual(self.feed(stats, [9000, 9001], ssrc=0x9999), [Verdict.RESTART, Verdict.NEW])
        self.assertEqual((stats.ssrc, stats.restarts, stats.expected, stats.lost), (0x9999, 1, 2, 0))

    def test_big_jump_needs_confirmation(self) -> None:
        stats = ReceiverStats()
        self.feed(stats, range(10))
        jump = 9 + MAX_DROPOUT + 10
        self.assertEqual(self.feed(stats, [jump]), [Verdict.BAD])
        self.assertEqual(self.feed(stats, [10]), [Verdict.NEW])  # a stray packet is forgotten
        self.assertEqual(self.feed(stats, [jump, jump + 1, jump + 2]), [Verdict.BAD, Verdict.RESTART, Verdict.NEW])
        self.assertEqual((stats.restarts, stats.expected, stats.received), (1, 2, 2))

    def test_jitter_of_steady_stream_is_zero_and_of_wobbly_stream_matches_a8(self) -> None:
        stats = ReceiverStats()
        offsets = [0.0, 0.004, -0.002, 0.010, 0.0, 0.003] * 10
        expected_jitter = 0.0
        previous = None
        for i, wobble in enumerate(offsets):
            stats.update(packet(i, i * 160), 100.0 + i * 0.02 + wobble)
            transit = (100.0 + i * 0.02 + wobble) * 8000 - i * 160
            if previous is not None:
                expected_jitter += (abs(transit - previous) - expected_jitter) / 16
            previous = transit
        self.assertAlmostEqual(stats.jitter_ms, expected_jitter / 8, places=6)
        self.assertEqual(stats.jitter, int(expected_jitter))
        self.assertGreater(stats.jitter_ms, 2.0)

    def test_jitter_survives_timestamp_wrap(self) -> None:
        stats = ReceiverStats()
        for i in range(20):
            stats.update(packet(i, 0xFFFFFF00 + i * 160), i * 0.02)
        self.assertLess(stats.jitter_ms, 0.01)

    def test_repeated_timestamps_do_not_feed_jitter(self) -> None:
        stats = ReceiverStats()
        for i in range(10):  # an RFC 4733 event: one timestamp, 20 ms apart
            stats.update(packet(i, 1000, pt=101), i * 0.02)
        self.assertEqual(stats.jitter, 0)
