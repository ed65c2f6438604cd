"""Minimal RTCP (RFC 3550 section 6): sender and receiver reports.

Enough RTCP for a two-party call: a peer learns our loss and jitter, we
learn theirs and the round-trip time, and a BYE is noticed. Sender
reports, receiver reports, SDES CNAME and BYE are built; compound
packets are parsed packet by packet, SR, RR and BYE understood, the rest
(SDES, APP, XR, feedback, ...) skipped by their length. Malformed input
raises L{RTCPError} (a C{ValueError}) with a reason.

The report arithmetic follows RFC 3550 6.4.1: fraction lost over the
interval since the previous report (from L{ReceiverStats.interval_loss}),
cumulative lost as a 24-bit signed number, LSR as the middle 32 bits of
the last SR's NTP timestamp and DLSR as the delay since it arrived, both
in 1/65536 s. L{RTCPReporter} keeps what those need between reports and
says when the next one is due.

Pure: times are passed in as seconds since the Unix epoch (the NTP
timestamps are derived from them), e.g. C{reactor.seconds()}.
"""
from __future__ import annotations

import struct
from typing import NamedTuple, Optional, Sequence, Union

from sipproxy.ua.media.rtp import ReceiverStats, RTPSender

__all__ = [
    "REPORT_INTERVAL", "SR", "RR", "SDES", "BYE", "Bye", "RTCPError", "RTCPReporter", "ReceiverReport",
    "ReportBlock", "SenderReport", "build_bye", "build_rr", "build_sdes", "build_sr", "middle32",
    "ntp_timestamp", "parse_rtcp",
]

SR, RR, SDES, BYE = 200, 201, 202, 203
#: RFC 3550 6.2: the recommended minimum interval between reports; a
#: two-party call has no group to scale it for.
REPORT_INTERVAL = 5.0
#: Seconds from 1900-01-01 (NTP era 0) to 1970-01-01.
NTP_UNIX_OFFSET = 2208988800

_BLOCK = struct.Struct("!IIIIII")
_SR_INFO = struct.Struct("!IIIIII")


class RTCPError(ValueError):
    """A datagram that is not valid RTCP; C{reason} says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ReportBlock(NamedTuple):
    """One reception report about source C{ssrc} (RFC 3550 6.4.1)."""

    ssrc: int
    fraction_lost: int  # 8-bit fixed point: lost/expected * 256
    cumulative_lost: int  # signed 24-bit
    extended_max: int
    jitter: int  # timestamp units
    lsr: int
    dlsr: int  # 1/65536 s


class SenderReport(NamedTuple):
    ssrc: int
    ntp: int  # 64-bit NTP timestamp
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    blocks: tuple[ReportBlock, ...]


class ReceiverReport(NamedTuple):
    ssrc: int
    blocks: tuple[ReportBlock, ...]


class Bye(NamedTuple):
    ssrcs: tuple[int, ...]
    reason: str


RTCPPacket = Union[SenderReport, ReceiverReport, Bye]


def ntp_timestamp(unix_seconds: float) -> int:
    """The 64-bit NTP timestamp (32.32 fixed point since 1900) of a Unix
    time."""
    whole = int(unix_seconds)
    fraction = int((unix_seconds - whole) * (1 << 32)) & 0xFFFFFFFF
    return ((whole + NTP_UNIX_OFFSET) & 0xFFFFFFFF) << 32 | fraction


def middle32(ntp: int) -> int:
    """The middle 32 bits of a 64-bit NTP timestamp (the LSR field, and
    the unit of round-trip arithmetic: 1/65536 s)."""
    return (ntp >> 16) & 0xFFFFFFFF


def _header(packet_type: int, count: int, body_length: int) -> bytes:
    """The 4-byte common header; C{body_length} (bytes after the header)
    must be a multiple of 4."""
    return struct.pack("!BBH", 0x80 | count, packet_type, body_length // 4)


def _pack_blocks(blocks: Sequence[ReportBlock]) -> bytes:
    if len(blocks) > 31:
        raise ValueError("at most 31 report blocks fit in one report")
    return b"".join(_BLOCK.pack(b.ssrc & 0xFFFFFFFF,
                                (b.fraction_lost & 0xFF) << 24 | (b.cumulative_lost & 0xFFFFFF),
                                b.extended_max & 0xFFFFFFFF, b.jitter & 0xFFFFFFFF, b.lsr & 0xFFFFFFFF,
                                b.dlsr & 0xFFFFFFFF) for b in blocks)


def build_sr(ssrc: int, ntp: int, rtp_timestamp: int, packet_count: int, octet_count: int,
             blocks: Sequence[ReportBlock] = ()) -> bytes:
    """A sender report (PT 200)."""
    body = _SR_INFO.pack(ssrc & 0xFFFFFFFF, (ntp >> 32) & 0xFFFFFFFF, ntp & 0xFFFFFFFF,
                         rtp_timestamp & 0xFFFFFFFF, packet_count & 0xFFFFFFFF,
                         octet_count & 0xFFFFFFFF) + _pack_blocks(blocks)
    return _header(SR, len(blocks), len(body)) + body


def build_rr(ssrc: int, blocks: Sequence[ReportBlock] = ()) -> bytes:
    """A receiver report (PT 201)."""
    body = struct.pack("!I", ssrc & 0xFFFFFFFF) + _pack_blocks(blocks)
    return _header(RR, len(blocks), len(body)) + body


def build_sdes(ssrc: int, cname: str) -> bytes:
    """An SDES packet with one chunk holding the CNAME item (RFC 3550 6.5:
    required in every compound packet)."""
    text = cname.encode("utf-8")[:255]
    chunk = struct.pack("!IBB", ssrc & 0xFFFFFFFF, 1, len(text)) + text + b"\x00"
    chunk += bytes(-len(chunk) % 4)
    return _header(SDES, 1, len(chunk)) + chunk


def build_bye(ssrcs: Sequence[int], reason: str = "") -> bytes:
    """A BYE packet (PT 203)."""
    if len(ssrcs) > 31:
        raise ValueError("at most 31 sources fit in one BYE")
    body = b"".join(struct.pack("!I", s & 0xFFFFFFFF) for s in ssrcs)
    if reason:
        text = reason.encode("utf-8")[:255]
        body += bytes((len(text),)) + text
        body += bytes(-len(body) % 4)
    return _header(BYE, len(ssrcs), len(body)) + body


def _parse_blocks(data: bytes, offset: int, count: int, end: int) -> tuple[ReportBlock, ...]:
    if offset + 24 * count > end:
        raise RTCPError(f"{count} report blocks do not fit in the packet")
    blocks = []
    for i in range(count):
        ssrc, lost, ext, jitter, lsr, dlsr = _BLOCK.unpack_from(data, offset + 24 * i)
        cumulative = lost & 0xFFFFFF
        if cumulative & 0x800000:
            cumulative -= 1 << 24
        blocks.append(ReportBlock(ssrc, lost >> 24, cumulative, ext, jitter, lsr, dlsr))
    return tuple(blocks)


def parse_rtcp(data: bytes) -> list[RTCPPacket]:
    """The SR, RR and BYE packets of a (compound) RTCP datagram, in order;
    other packet types are skipped by their length. L{RTCPError} when a
    packet's version is not 2, a length runs past the datagram, or a
    report does not fit in its own length."""
    size = len(data)
    if size < 4:
        raise RTCPError(f"too short for an RTCP header ({size} bytes)")
    packets: list[RTCPPacket] = []
    offset = 0
    while offset < size:
        if offset + 4 > size:
            raise RTCPError(f"{size - offset} stray bytes after the last RTCP packet")
        first, packet_type, words = struct.unpack_from("!BBH", data, offset)
        if first >> 6 != 2:
            raise RTCPError(f"RTCP version {first >> 6}, expected 2")
        end = offset + 4 * (words + 1)
        if end > size:
            raise RTCPError(f"RTCP packet of {4 * (words + 1)} bytes runs past the end of a {size}-byte datagram")
        body_end = end
        if first & 0x20:
            padding = data[end - 1]
            if padding == 0 or offset + 4 + padding > end:
                raise RTCPError(f"bad RTCP padding count {padding}")
            body_end = end - padding
        count = first & 0x1F
        if packet_type == SR:
            if offset + 28 > body_end:
                raise RTCPError("sender report shorter than its sender info")
            ssrc, msw, lsw, rtp_ts, packets_sent, octets = _SR_INFO.unpack_from(data, offset + 4)
            blocks = _parse_blocks(data, offset + 28, count, body_end)
            packets.append(SenderReport(ssrc, msw << 32 | lsw, rtp_ts, packets_sent, octets, blocks))
        elif packet_type == RR:
            if offset + 8 > body_end:
                raise RTCPError("receiver report without its SSRC")
            (ssrc,) = struct.unpack_from("!I", data, offset + 4)
            packets.append(ReceiverReport(ssrc, _parse_blocks(data, offset + 8, count, body_end)))
        elif packet_type == BYE:
            if offset + 4 + 4 * count > body_end:
                raise RTCPError(f"BYE with {count} sources does not fit in the packet")
            ssrcs = struct.unpack_from(f"!{count}I", data, offset + 4)
            reason = ""
            at = offset + 4 + 4 * count
            if at < body_end:
                length = data[at]
                reason = bytes(data[at + 1:min(at + 1 + length, body_end)]).decode("utf-8", "replace")
            packets.append(Bye(tuple(ssrcs), reason))
        offset = end
    return packets


class RTCPReporter:
    """The RTCP state of one RTP session: when the next report is due,
    what it says, and what the peer's reports told us.

    C{sender} and C{stats} are the session's L{RTPSender} (our SSRC and
    counts) and L{ReceiverStats} (the peer's stream). Reports go out every
    C{interval} seconds (RFC 3550's 5 s minimum; a two-party session has
    no group size to scale for, and no need for the randomisation that
    keeps large groups from synchronising).
    """

    def __init__(self, sender: RTPSender, stats: ReceiverStats, *, cname: str = "sipproxy",
                 interval: float = REPORT_INTERVAL, now: float = 0.0) -> None:
        self.sender = sender
        self.stats = stats
        self.cname = cname
        self.interval = interval
        self.next_due = now + interval
        self._sent_at_last_report = 0
        self._last_sr: Optional[tuple[int, int, float]] = None  # (ssrc, lsr, arrival)
        #: the round-trip time (seconds) from the last report about us
        self.round_trip: Optional[float] = None
        #: the last report block the peer sent about our stream
        self.peer_report: Optional[ReportBlock] = None
        #: SSRCs the peer said BYE for
        self.byes: list[int] = []
        self.reports_sent = 0
        self.reports_received = 0

    def due(self, now: float) -> bool:
        return now >= self.next_due

    def build(self, now: float, rtp_timestamp: int) -> bytes:
        """The compound report to send at C{now}: an SR when we sent RTP
        since the previous report, else an RR; a report block about the
        peer's stream when it sent any; then SDES CNAME. C{rtp_timestamp}
        is our stream's timestamp for the instant C{now} (the SR ties the
        two clocks together for lip sync and RTT). Schedules the next."""
        self.next_due = now + self.interval
        blocks = []
        stats = self.stats
        if stats.ssrc is not None:
            fraction, _ = stats.interval_loss()
            lsr = dlsr = 0
            if self._last_sr is not None and self._last_sr[0] == stats.ssrc:
                _, lsr, arrival = self._last_sr
                dlsr = int(max(now - arrival, 0.0) * 65536) & 0xFFFFFFFF
            blocks.append(ReportBlock(stats.ssrc, fraction, min(stats.lost, 0x7FFFFF), stats.extended_max,
                                      stats.jitter, lsr, dlsr))
        sender = self.sender
        if sender.packets_sent > self._sent_at_last_report:
            report = build_sr(sender.ssrc, ntp_timestamp(now), rtp_timestamp, sender.packets_sent,
                              sender.octets_sent, blocks)
        else:
            report = build_rr(sender.ssrc, blocks)
        self._sent_at_last_report = sender.packets_sent
        self.reports_sent += 1
        return report + build_sdes(sender.ssrc, self.cname)

    def build_bye(self, reason: str = "") -> bytes:
        """A final compound packet: RR, SDES, BYE (RFC 3550 6.6)."""
        return build_rr(self.sender.ssrc) + build_sdes(self.sender.ssrc, self.cname) + build_bye(
            [self.sender.ssrc], reason)

    def received(self, packets: Sequence[RTCPPacket], now: float) -> None:
        """Take in a parsed compound packet that arrived at C{now}."""
        self.reports_received += 1
        for packet in packets:
            if isinstance(packet, Bye):
                self.byes.extend(packet.ssrcs)
                continue
            if isinstance(packet, SenderReport):
                self._last_sr = (packet.ssrc, middle32(packet.ntp), now)
            for block in packet.blocks:
                if block.ssrc != self.sender.ssrc:
                    continue
                self.peer_report = block
                if block.lsr:
                    # RFC 3550 6.4.1: A - LSR - DLSR, in 1/65536 s, mod 2^32
                    rtt = (middle32(ntp_timestamp(now)) - block.lsr - block.dlsr) & 0xFFFFFFFF
                    if rtt < 1 << 31:
                        self.round_trip = rtt / 65536.0
