"""RTCP: SR/RR/SDES/BYE layout, compound parsing, the report arithmetic of
RFC 3550 6.4.1 and the reporter's schedule."""
from __future__ import annotations

import random
import struct

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from sipproxy.ua.media import rtcp
from sipproxy.ua.media.rtcp import (Bye, ReceiverReport, ReportBlock, RTCPError, RTCPReporter, SenderReport,
                                    build_bye, build_rr, build_sdes, build_sr, middle32, ntp_timestamp, parse_rtcp)
from sipproxy.ua.media.rtp import ReceiverStats, RTPPacket, RTPSender

BLOCK = ReportBlock(0x11223344, 25, -3, 0x00010005, 42, 0xAABBCCDD, 0x00018000)


class LayoutTests(SynchronousTestCase):
    def test_sr_bytes(self) -> None:
        data = build_sr(0x01020304, 0x0A0B0C0D_01020304, 160, 7, 1120, [BLOCK])
        self.assertEqual(len(data), 28 + 24)
        self.assertEqual(data[:4], bytes([0x81, 200, 0, 12]))  # RC=1, length 13 words - 1
        self.assertEqual(struct.unpack("!IIIIII", data[4:28]), (0x01020304, 0x0A0B0C0D, 0x01020304, 160, 7, 1120))
        # fraction 25, cumulative -3 as 24-bit two's complement
        self.assertEqual(data[32:36], bytes([25, 0xFF, 0xFF, 0xFD]))

    def test_rr_sdes_bye_bytes(self) -> None:
        self.assertEqual(build_rr(5), bytes([0x80, 201, 0, 1, 0, 0, 0, 5]))
        sdes = build_sdes(5, "ab")
        # the item list ends with a null octet, then pads to 32 bits
        self.assertEqual(sdes, bytes([0x81, 202, 0, 3, 0, 0, 0, 5, 1, 2]) + b"ab" + bytes(4))
        bye = build_bye([5], "done")
        self.assertEqual(bye, bytes([0x81, 203, 0, 3, 0, 0, 0, 5, 4]) + b"done" + bytes(3))

    def test_compound_round_trip_skipping_sdes_and_unknown(self) -> None:
        app = bytes([0x80, 204, 0, 2]) + b"\x00\x00\x00\x05" + b"NAME"
        data = (build_sr(9, ntp_timestamp(1000.5), 480, 3, 480, [BLOCK]) + build_sdes(9, "x@y") + app
                + build_rr(9, [BLOCK, BLOCK._replace(ssrc=1)]) + build_bye([9, 10], "bye now"))
        parsed = parse_rtcp(data)
        self.assertEqual(len(parsed), 3)
        sr, rr, bye = parsed
        self.assertEqual(sr, SenderReport(9, ntp_timestamp(1000.5), 480, 3, 480, (BLOCK,)))
        self.assertEqual(rr, ReceiverReport(9, (BLOCK, BLOCK._replace(ssrc=1))))
        self.assertEqual(bye, Bye((9, 10), "bye now"))

    def test_padding_on_last_packet(self) -> None:
        report = bytearray(build_rr(9))
        report[0] |= 0x20
        report[3] += 1
        report += bytes([0, 0, 0, 4])
        self.assertEqual(parse_rtcp(bytes(report)), [ReceiverReport(9, ())])

    def test_malformed(self) -> None:
        cases = {
            b"\x80": "too short",
            bytes([0x40, 201, 0, 1, 0, 0, 0, 5]): "version 1",
            bytes([0x80, 201, 0, 5, 0, 0, 0, 5]): "runs past the end",
            bytes([0x81, 201, 0, 1, 0, 0, 0, 5]): "1 report blocks do not fit",
            bytes([0x80, 200, 0, 1, 0, 0, 0, 5]): "shorter than its sender info",
            bytes([0x80, 201, 0, 0]): "without its SSRC",
            bytes([0x82, 203, 0, 1, 0, 0, 0, 5]): "BYE with 2 sources",
            bytes([0xA0, 201, 0, 1, 0, 0, 0, 0]): "padding",
            build_rr(1) + b"\x80\x00": "stray bytes",
        }
        for data, reason in cases.items():
            with self.assertRaises(RTCPError, msg=data.hex()) as caught:
                parse_rtcp(data)
            self.assertIn(reason, caught.exception.reason)

    @given(st.binary(max_size=120))
    @settings(max_examples=400)
    def test_garbage_is_refused_cleanly(self, data: bytes) -> None:
        try:
            parse_rtcp(data)
        except RTCPError as e:
            self.assertTrue(e.reason)

    @given(st.lists(st.sampled_from(["sr", "rr", "sdes", "bye"]), min_size=1, max_size=5),
           st.integers(0, 2**32 - 1), st.integers(0, 4))
    def test_built_compounds_parse(self, kinds, ssrc, blocks) -> None:
        block_list = [BLOCK._replace(ssrc=i) for i in range(blocks)]
        builders = {"sr": lambda: build_sr(ssrc, 12345 << 32, 1, 2, 3, block_list),
                    "rr": lambda: build_rr(ssrc, block_list), "sdes": lambda: build_sdes(ssrc, "c"),
                    "bye": lambda: build_bye([ssrc])}
        parsed = parse_rtcp(b"".join(builders[k]() for k in kinds))
        self.assertEqual(len(parsed), sum(k != "sdes" for k in kinds))


class ArithmeticTests(SynchronousTestCase):
    def test_ntp_timestamp(self) -> None:
        self.assertEqual(ntp_timestamp(0.0), rtcp.NTP_UNIX_OFFSET << 32)
        self.assertEqual(ntp_timestamp(1.5) & 0xFFFFFFFF, 1 << 31)
        self.assertEqual(middle32(ntp_timestamp(0.25)), ((rtcp.NTP_UNIX_OFFSET & 0xFFFF) << 16) | 0x4000)


class ReporterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.sender = RTPSender(0, ssrc=0xA, rng=random.Random(1))
        self.stats = ReceiverStats()
        self.reporter = RTCPReporter(self.sender, self.stats, cname="me@host", now=1000.0)

    def receive(self, seqs, start: float = 1000.0) -> None:
        for s in seqs:
            self.stats.update(RTPPacket(0, s, s * 160, 0xB, b""), start + s * 0.02)

    def test_due_every_five_seconds(self) -> None:
        self.assertFalse(self.reporter.due(1004.9))
        self.assertTrue(self.reporter.due(1005.0))
        self.reporter.build(1005.2, 0)
        self.assertFalse(self.reporter.due(1010.0))
        self.assertTrue(self.reporter.due(1010.2))

    def test_rr_when_nothing_sent_sr_when_sent(self) -> None:
        first = parse_rtcp(self.reporter.build(1005.0, 0))
        self.assertEqual(first, [ReceiverReport(0xA, ())])
        self.sender.packet(b"x" * 160, 160)
        second = parse_rtcp(self.reporter.build(1010.0, 4242))
        self.assertIsInstance(second[0], SenderReport)
        self.assertEqual(second[0].ntp, ntp_timestamp(1010.0))
        self.assertEqual((second[0].rtp_timestamp, second[0].packet_count, second[0].octet_count), (4242, 1, 160))
        third = parse_rtcp(self.reporter.build(1015.0, 0))
        self.assertIsInstance(third[0], ReceiverReport)

    def test_report_block_loss_and_cumulative(self) -> None:
        self.receive([s for s in range(200) if s % 4 != 1])  # a quarter lost
        (report,) = parse_rtcp(self.reporter.build(1005.0, 0))
        (block,) = report.blocks
        self.assertEqual(block.ssrc, 0xB)
        self.assertEqual(block.extended_max, 199)
        self.assertEqual(block.cumulative_lost, 50)
        self.assertEqual(block.fraction_lost, 64)  # 50/200 * 256
        self.assertEqual((block.lsr, block.dlsr), (0, 0))
        # the next interval has no loss: fraction 0, cumulative unchanged
        self.receive(range(200, 300))
        (report,) = parse_rtcp(self.reporter.build(1010.0, 0))
        self.assertEqual((report.blocks[0].fraction_lost, report.blocks[0].cumulative_lost), (0, 50))

    def test_lsr_dlsr_and_round_trip(self) -> None:
        self.receive(range(10))
        peer_sr_time = 2000.0
        peer_sr = build_sr(0xB, ntp_timestamp(peer_sr_time), 0, 10, 1600)
        self.reporter.received(parse_rtcp(peer_sr), now=1001.0)
        (report,) = parse_rtcp(self.reporter.build(1003.5, 0))
        block = report.blocks[0]
        self.assertEqual(block.lsr, middle32(ntp_timestamp(peer_sr_time)))
        self.assertEqual(block.dlsr, int(2.5 * 65536))
        # the peer answers about our SSRC: our SR went out at 1010, it held
        # it 0.75 s, and its RR arrives at 1011: RTT 0.25 s
        self.sender.packet(b"x", 160)
        our_sr = parse_rtcp(self.reporter.build(1010.0, 0))[0]
        peer_block = ReportBlock(0xA, 0, 0, 5, 3, middle32(our_sr.ntp), int(0.75 * 65536))
        self.reporter.received(parse_rtcp(build_rr(0xB, [peer_block])), now=1011.0)
        self.assertAlmostEqual(self.reporter.round_trip, 0.25, places=3)
        self.assertEqual(self.reporter.peer_report, peer_block)

    def test_blocks_about_others_and_bye(self) -> None:
        other = ReportBlock(0x77, 0, 0, 5, 3, 1, 1)
        self.reporter.received(parse_rtcp(build_rr(0xB, [other]) + build_bye([0xB])), now=1001.0)
        self.assertIsNone(self.reporter.peer_report)
        self.assertIsNone(self.reporter.round_trip)
        self.assertEqual(self.reporter.byes, [0xB])

    def test_bye_compound(self) -> None:
        parsed = parse_rtcp(self.reporter.build_bye("hangup"))
        self.assertEqual(parsed, [ReceiverReport(0xA, ()), Bye((0xA,), "hangup")])
