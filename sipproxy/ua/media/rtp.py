"""RTP packets (RFC 3550 section 5): build, parse, send state, receive
statistics.

Three jobs that belong together because they share the header's fields:

  - L{parse_rtp} / L{build_rtp}: the 12-byte fixed header, the CSRC list,
    the header extension and padding. Parsing is for untrusted datagrams:
    every malformed packet raises L{RTPError} (a C{ValueError}) with a
    reason, never C{IndexError} or C{struct.error}.
  - L{RTPSender}: what a sender must remember between packets -- a random
    SSRC, sequence number and timestamp origin (RFC 3550 5.1 wants them
    unpredictable), the marker bit at the start of each talk spurt, and a
    timestamp that advances by the samples sent (or skipped).
  - L{ReceiverStats}: what a receiver must count to write a reception
    report (RFC 3550 6.4 and appendix A): the extended highest sequence
    number across wrap-arounds, expected and received counts, duplicates
    and reordering, restarts of the source (a new SSRC, or a large jump
    confirmed by the next packet), and the interarrival jitter of A.8.

Pure: no sockets, no clock (arrival times are passed in, in seconds).
"""
from __future__ import annotations

import secrets
import struct
from typing import NamedTuple, Optional, Protocol

__all__ = [
    "RTP_VERSION", "MAX_DROPOUT", "MAX_MISORDER", "RTPError", "RTPPacket", "RTPSender", "ReceiverStats",
    "Verdict", "build_rtp", "parse_rtp",
]

RTP_VERSION = 2
#: RFC 3550 A.1: a forward jump larger than this (in sequence numbers) is a
#: restart of the source unless ... and a packet this far behind is late.
MAX_DROPOUT = 3000
MAX_MISORDER = 100
_SEQ_MOD = 1 << 16

_HEADER = struct.Struct("!BBHII")


class RTPError(ValueError):
    """A datagram that is not a valid RTP packet; C{reason} says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RTPPacket(NamedTuple):
    """One RTP packet, parsed. C{extension} is C{(profile, data)} when the X
    bit is set; C{padding} is the number of padding bytes that were
    removed (0 when the P bit is clear)."""

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False
    csrcs: tuple[int, ...] = ()
    extension: Optional[tuple[int, bytes]] = None
    padding: int = 0

    def to_bytes(self) -> bytes:
        return build_rtp(self.payload_type, self.sequence, self.timestamp, self.ssrc, self.payload,
                         marker=self.marker, csrcs=self.csrcs, extension=self.extension, padding=self.padding)


def build_rtp(payload_type: int, sequence: int, timestamp: int, ssrc: int, payload: bytes, *,
              marker: bool = False, csrcs: tuple[int, ...] = (), extension: Optional[tuple[int, bytes]] = None,
              padding: int = 0) -> bytes:
    """The bytes of an RTP packet. The common case (no CSRC, extension or
    padding) is one C{struct.pack} and a concatenation; it is the sender's
    per-packet path.

    C{extension} data must be a multiple of four bytes long (the header
    counts 32-bit words); C{padding} (0 or 1..255) bytes are appended, the
    last one holding the count, as RFC 3550 5.1 says."""
    if not 0 <= payload_type <= 127:
        raise ValueError(f"payload type {payload_type} is outside 0..127")
    if len(csrcs) > 15:
        raise ValueError("at most 15 CSRCs fit in an RTP header")
    first = 0x80 | len(csrcs)
    if extension is not None:
        first |= 0x10
    if padding:
        if not 1 <= padding <= 255:
            raise ValueError(f"padding {padding} is outside 1..255")
        first |= 0x20
    header = _HEADER.pack(first, payload_type | (0x80 if marker else 0), sequence & 0xFFFF,
                          timestamp & 0xFFFFFFFF, ssrc & 0xFFFFFFFF)
    if len(csrcs) == 0 and extension is None and not padding:
        return header + payload
    parts = [header]
    if csrcs:
        parts.append(struct.pack(f"!{len(csrcs)}I", *csrcs))
    if extension is not None:
        profile, data = extension
        if len(data) % 4:
            raise ValueError("RTP header extension data must be a multiple of 4 bytes")
        if len(data) // 4 > 0xFFFF:
            raise ValueError("RTP header extension too long")
        parts.append(struct.pack("!HH", profile & 0xFFFF, len(data) // 4))
        parts.append(data)
    parts.append(payload)
    if padding:
        parts.append(bytes(padding - 1) + bytes((padding,)))
    return b"".join(parts)


def parse_rtp(data: bytes) -> RTPPacket:
    """Parse one RTP datagram; L{RTPError} when it is not valid RTP
    version 2 (too short, wrong version, CSRC list, extension or padding
    running past the end). RTCP sent to the RTP port (payload types 72-76
    with the marker, RFC 5761 4) is refused as well."""
    size = len(data)
    if size < 12:
        raise RTPError(f"too short for an RTP header ({size} bytes)")
    first, second, sequence, timestamp, ssrc = _HEADER.unpack_from(data)
    if first >> 6 != RTP_VERSION:
        raise RTPError(f"RTP version {first >> 6}, expected 2")
    if 200 <= second <= 204:
        raise RTPError(f"RTCP packet type {second} on the RTP port")
    offset = 12
    count = first & 0x0F
    csrcs: tuple[int, ...] = ()
    if count:
        end = offset + 4 * count
        if end > size:
            raise RTPError(f"CSRC list of {count} runs past the end of a {size}-byte packet")
        csrcs = struct.unpack_from(f"!{count}I", data, offset)
        offset = end
    extension = None
    if first & 0x10:
        if offset + 4 > size:
            raise RTPError("header extension runs past the end of the packet")
        profile, words = struct.unpack_from("!HH", data, offset)
        end = offset + 4 + 4 * words
        if end > size:
            raise RTPError(f"header extension of {words} words runs past the end of a {size}-byte packet")
        extension = (profile, bytes(data[offset + 4:end]))
        offset = end
    end = size
    padding = 0
    if first & 0x20:
        padding = data[-1]
        if padding == 0:
            raise RTPError("padding bit set but the padding count is 0")
        if offset + padding > size:
            raise RTPError(f"padding of {padding} bytes is longer than the payload")
        end = size - padding
    return RTPPacket(second & 0x7F, sequence, timestamp, ssrc, bytes(data[offset:end]), bool(second & 0x80),
                     csrcs, extension, padding)


class _RandomSource(Protocol):
    def getrandbits(self, k: int) -> int: ...


class RTPSender:
    """The sending side of one RTP source: SSRC, next sequence number and
    timestamp, and the talk-spurt marker.

    The initial SSRC, sequence number and timestamp are random (RFC 3550
    5.1, 8.1), from C{secrets} unless an C{rng} (anything with
    C{getrandbits}, e.g. C{random.Random(seed)}) is given for tests.

    The timestamp is the sampling instant of the packet's first sample, so
    it advances by the number of samples in each packet, and also over
    silence nobody sent (L{skip}). The first packet, and the first one
    after L{start_talkspurt} (or a L{skip}), carries the marker bit
    (RFC 3551 4.1: the receiver may use it to adjust its playout delay).
    """

    def __init__(self, payload_type: int, *, ssrc: Optional[int] = None, rng: Optional[_RandomSource] = None) -> None:
        random = rng if rng is not None else secrets.SystemRandom()
        self.payload_type = payload_type
        self.ssrc = ssrc if ssrc is not None else random.getrandbits(32)
        self.sequence = random.getrandbits(16)
        self.timestamp = random.getrandbits(32)
        self.packets_sent = 0
        self.octets_sent = 0
        self._marker = True

    def start_talkspurt(self) -> None:
        """Set the marker bit on the next packet."""
        self._marker = True

    def skip(self, samples: int) -> None:
        """Advance the timestamp over C{samples} not sent (a pause), and
        mark the next packet as the start of a talk spurt."""
        self.timestamp = (self.timestamp + samples) & 0xFFFFFFFF
        self._marker = True

    def packet(self, payload: bytes, samples: int, *, payload_type: Optional[int] = None,
               marker: Optional[bool] = None, timestamp: Optional[int] = None) -> bytes:
        """The next packet: C{payload} covering C{samples} samples. The
        sequence number always advances by one; the stream's timestamp
        advances by C{samples}. An explicit C{timestamp} (RFC 4733 events
        keep their start timestamp) is used for this packet without
        moving the stream's timestamp; an explicit C{marker} overrides
        the talk-spurt rule for this packet."""
        if marker is None:
            marker = self._marker
            self._marker = False
        if timestamp is None:
            timestamp = self.timestamp
            self.timestamp = (self.timestamp + samples) & 0xFFFFFFFF
        data = build_rtp(self.payload_type if payload_type is None else payload_type, self.sequence, timestamp,
                         self.ssrc, payload, marker=marker)
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.packets_sent += 1
        self.octets_sent += len(payload)
        return data


class Verdict:
    """What L{ReceiverStats.update} thinks of a packet (strings, so logs
    and tests read them)."""

    #: in order, or a gap forward (loss): deliver it
    NEW = "new"
    #: behind the highest sequence number, not seen before: deliver or not
    #: as the consumer likes (a jitter buffer would)
    LATE = "late"
    #: seen before: drop
    DUPLICATE = "duplicate"
    #: a new SSRC, or a big jump confirmed by a second packet: statistics
    #: restarted with this packet, deliver it
    RESTART = "restart"
    #: a big jump not yet confirmed (or a very old packet): drop it
    BAD = "bad"


class ReceiverStats:
    """Reception statistics of one RTP source, after RFC 3550 appendix A.

    Departures, each for a reason:
      - A source is accepted at its first packet (no probation): the peer
        was chosen by signalling and its packets are usually latched to
        one address, and a UA should play the first packet.
      - Duplicates (seen among the last MAX_MISORDER sequence numbers)
        are counted apart and not as received, so "cumulative lost" stays
        an estimate of loss instead of going negative (RFC 3550 6.4.1
        allows both).
      - A change of SSRC restarts the statistics (as Net::SIP resets its
        sequence check), counted in C{restarts}.

    The jitter estimate (A.8) uses arrival times in seconds converted to
    timestamp units with C{clock_rate}; packets with the timestamp of the
    previous packet but a later arrival (RFC 4733 event updates) do not
    feed it.
    """

    _WINDOW_MASK = (1 << 128) - 1  # duplicates are looked for MAX_MISORDER back

    def __init__(self, clock_rate: int = 8000) -> None:
        self.clock_rate = clock_rate
        self.ssrc: Optional[int] = None
        self.restarts = 0
        self._reset()

    def _reset(self) -> None:
        self.base_seq = 0
        self.max_seq = 0
        self.cycles = 0
        self.received = 0
        self.duplicates = 0
        self.late = 0
        self.bad = 0
        self._bad_seq: Optional[int] = None
        self._seen = 0  # bit i: extended max - i was received
        self._expected_prior = 0
        self._received_prior = 0
        self._transit: Optional[float] = None
        self._last_timestamp: Optional[int] = None
        self._jitter = 0.0
        self.last_arrival: Optional[float] = None

    def _start(self, packet: RTPPacket, arrival: float) -> None:
        self._reset()
        self.ssrc = packet.ssrc
        self.base_seq = packet.sequence
        self.max_seq = packet.sequence
        self._seen = 1
        self.received = 1
        self._arrived(packet, arrival)

    @property
    def extended_max(self) -> int:
        """The extended highest sequence number received (cycles count
        the wrap-arounds of the 16-bit number)."""
        return self.cycles + self.max_seq

    @property
    def expected(self) -> int:
        if self.ssrc is None:
            return 0
        return self.extended_max - self.base_seq + 1

    @property
    def lost(self) -> int:
        """Cumulative packets lost: expected minus received (late packets
        that arrived count as received)."""
        return max(self.expected - self.received, 0) if self.ssrc is not None else 0

    @property
    def jitter(self) -> int:
        """Interarrival jitter in timestamp units (as an RTCP report
        carries it)."""
        return int(self._jitter)

    @property
    def jitter_ms(self) -> float:
        return self._jitter * 1000.0 / self.clock_rate

    def update(self, packet: RTPPacket, arrival: float) -> str:
        """Account for C{packet} arriving at C{arrival} (seconds); returns a
        L{Verdict} string."""
        if self.ssrc != packet.ssrc:
            if self.ssrc is not None:
                self.restarts += 1
            self._start(packet, arrival)
            return Verdict.NEW if self.restarts == 0 else Verdict.RESTART
        seq = packet.sequence
        delta = (seq - self.max_seq) & 0xFFFF
        if delta == 0:
            self.duplicates += 1
            return Verdict.DUPLICATE
        if delta < MAX_DROPOUT:
            # in order, possibly with a gap
            if seq < self.max_seq:
                self.cycles += _SEQ_MOD
            self.max_seq = seq
            self._seen = ((self._seen << delta) | 1) & self._WINDOW_MASK
            self._bad_seq = None
            self.received += 1
            self._arrived(packet, arrival)
            return Verdict.NEW
        behind = _SEQ_MOD - delta
        if behind <= MAX_MISORDER:
            if self.extended_max - behind < self.base_seq:
                # older than the first packet we saw: not counted
                self.late += 1
                return Verdict.LATE
            bit = 1 << behind
            if self._seen & bit:
                self.duplicates += 1
                return Verdict.DUPLICATE
            self._seen |= bit
            self.late += 1
            self.received += 1
            self.last_arrival = arrival
            return Verdict.LATE
        # a big jump: the source restarted if the next packet follows it
        if self._bad_seq is not None and seq == self._bad_seq:
            self.restarts += 1
            self._start(packet, arrival)
            return Verdict.RESTART
        self._bad_seq = (seq + 1) & 0xFFFF
        self.bad += 1
        return Verdict.BAD

    def _arrived(self, packet: RTPPacket, arrival: float) -> None:
        """RFC 3550 A.8: J += (|D| - J) / 16, D the change in transit time."""
        self.last_arrival = arrival
        if packet.timestamp == self._last_timestamp:
            return
        self._last_timestamp = packet.timestamp
        transit = arrival * self.clock_rate - packet.timestamp
        if self._transit is not None:
            d = transit - self._transit
            # the 32-bit timestamp may wrap between two packets
            if d > 1 << 31:
                d -= 1 << 32
            elif d < -(1 << 31):
                d += 1 << 32
            self._jitter += (abs(d) - self._jitter) / 16.0
        self._transit = transit

    def interval_loss(self) -> tuple[int, int]:
        """(fraction lost as an 8-bit fixed point number, packets lost)
        since the previous call, RFC 3550 A.3; the next interval starts
        now. A negative interval loss (duplicates or late packets) reports
        a fraction of 0."""
        expected = self.expected
        expected_interval = expected - self._expected_prior
        received_interval = self.received - self._received_prior
        self._expected_prior = expected
        self._received_prior = self.received
        lost_interval = expected_interval - received_interval
        if expected_interval <= 0 or lost_interval <= 0:
            return 0, max(lost_interval, 0)
        return min((lost_interval << 8) // expected_interval, 255), lost_interval
