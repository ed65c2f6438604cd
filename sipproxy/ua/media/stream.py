"""One RTP stream on a reactor UDP socket: the media edge of a call.

L{RTPStream} is a C{DatagramProtocol} that
  - sends 20 ms frames from a frame source, paced by deadlines against
    C{reactor.seconds()} (L{sipproxy.ua.media.pacing}: late timers catch up
    a little, then skip), kept on the reactor's L{MediaClock} with every
    other stream's; a stream read by the reactor sends what fell due
    before it handles a datagram, so a burst of arrivals cannot hold the
    packets due during it;
  - is symmetric (RFC 4961): it sends from the socket it receives on, and
    latches the destination to where the peer's first valid packet came
    from (a peer behind NAT sends from its public address, not the one in
    its SDP); after that, packets from elsewhere are dropped and counted;
  - reads its socket on the same tick that sends, once started and while
    few streams do (one wake-up per 20 ms, at most L{_READ_PER_TICK}
    datagrams, each with the kernel's arrival time), or else as packets
    arrive; decodes what arrived (G.711) to a sink and a per-frame
    callback, and keeps reception statistics (loss, jitter, duplicates);
  - sends and receives DTMF: RFC 4733 events on the same SSRC with the
    payload type the peer offered, or in-band tones in place of the audio
    (the audio source pauses while a key is sent, as in Net::SIP); and
    detects both kinds on receipt;
  - tells C{on_no_rtp} when nothing came for C{no_rtp_timeout} seconds
    (Net::SIP hangs up after 10 s without RTP);
  - optionally runs RTCP on the next port: SR/RR every 5 s, BYE on stop.

All the packet work is in the pure modules; this module owns the sockets,
the timers and the wiring. The reactor is passed in (C{IReactorUDP} and
C{IReactorTime}), so tests drive it with a C{Clock} and a fake UDP.
No exception from one datagram reaches the reactor: it is logged and the
stream goes on.
"""
from __future__ import annotations

import random
import socket
import struct
import sys
import weakref
from collections import deque
from typing import Any, Callable, Iterator, Optional

from twisted.internet import defer, error as ierror
from twisted.internet.interfaces import IListeningPort, IReactorTime, IReactorUDP
from twisted.internet.protocol import DatagramProtocol

from twisted.python.failure import Failure

from sipproxy.observe.logsafe import SafeLogger
from sipproxy.sip.addresses import is_bare_ip_literal
from sipproxy.ua.media import g711
from sipproxy.ua.media.audiofile import FrameSource
from sipproxy.ua.media.clock import MediaClock, clock_for
from sipproxy.ua.media.dtmf import (DEFAULT_DURATION_MS, DEFAULT_VOLUME, DtmfDigit, EventPackets, EventReceiver,
                                    ToneDetector, dtmf_plan, tone_frames)
from sipproxy.ua.media.pacing import Pacer
from sipproxy.ua.media.rtcp import RTCPError, RTCPReporter, parse_rtcp
from sipproxy.ua.media.rtp import ReceiverStats, RTPError, RTPPacket, RTPSender, Verdict, parse_rtp

__all__ = ["RTPStream", "PortAllocationError"]

log = SafeLogger()

Address = tuple  # (host, port)
_CLOCK_RATE = 8000
#: distinct source frames whose encoding a stream keeps: 10 s of a looped
#: file, about 100 KiB; a long file played once fills it and is then
#: encoded frame by frame, as before
_ENCODED_FRAMES = 500
#: the kernel's arrival stamp of each datagram (Linux); without it the
#: socket is read by the reactor on arrival, as any other
_SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35) if sys.platform.startswith("linux") else None
_TIMESPEC = struct.Struct("@qq")
#: a plain int: C{socket.MSG_TRUNC} is an C{IntFlag}, and C{int & IntFlag}
#: goes through three enum calls per datagram
_MSG_TRUNC = int(socket.MSG_TRUNC)
#: datagrams a stream reads per packet interval. A peer sends one; the
#: rest covers a burst after a network stall. A flood beyond it stays in
#: the kernel's buffer, which drops the excess, so one hostile peer costs
#: a bounded amount of work per tick.
_READ_PER_TICK = 32
#: streams of a process that read on their own tick. A wake-up costs more
#: than the work of a packet, so a stream with the process to itself does
#: best with one wake-up per interval. With many streams the reactor is
#: awake anyway and reads the sockets that are ready in one go, which costs
#: less per packet than a read per stream and tick (bench/README.md has the
#: figures), so the streams beyond these read on arrival.
CLOCKED_STREAMS = 2
_clocked_streams: "weakref.WeakSet[RTPStream]" = weakref.WeakSet()
#: the largest datagram read (Twisted's UDP port reads as much); a longer
#: one arrives truncated and is counted as malformed
_MAX_DATAGRAM = 8192


def _usable(address: Address) -> bool:
    """An address we may send to: an IP literal and a port in 1-65535."""
    host, port = address[0], address[1]
    return is_bare_ip_literal(host) and isinstance(port, int) and 0 < port < 65536


def _next_port(address: Address) -> Optional[Address]:
    """RTCP's default address, the RTP port + 1 (RFC 3550 11); none after
    port 65535."""
    return (address[0], address[1] + 1) if address[1] < 65535 else None


def _raw_sendto(port: Any) -> Optional[Callable[[bytes, Address], int]]:
    """The bound socket's own C{sendto}, where the port has one (Twisted's
    UDP port does). Its C{write} checks the address three times per
    packet; L{RTPStream.set_remote} checks it once, and a latched address
    comes from the kernel."""
    sock = getattr(port, "socket", None)
    return getattr(sock, "sendto", None)


def _stamped_reader(port: Any) -> Optional[Callable[..., tuple]]:
    """The socket's C{recvmsg}, once the kernel stamps arrivals on it;
    None where it cannot (a fake port in tests, another platform)."""
    sock = getattr(port, "socket", None)
    if _SO_TIMESTAMPNS is None or sock is None or not hasattr(port, "stopReading"):
        return None
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
    except (OSError, AttributeError):
        return None
    return getattr(sock, "recvmsg", None)


class PortAllocationError(Exception):
    """No even/odd RTP/RTCP port pair could be bound."""


class _RTCPProtocol(DatagramProtocol):
    """The RTCP socket of a stream: hands datagrams to its stream."""

    def __init__(self, stream: "RTPStream") -> None:
        self.stream = stream

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.stream._rtcp_received(data, addr)


class RTPStream(DatagramProtocol):
    """One bidirectional G.711 RTP stream (see the module docstring).

    Typical use: C{port = stream.listen("192.0.2.1")} (the port goes in the
    SDP), then C{stream.set_remote(("198.51.100.7", 40000))} from the
    peer's SDP and C{stream.start()}; C{stream.stop()} returns a Deferred
    that fires when the sockets are closed.

    Callbacks: C{on_frame(pcm16, packet)} for each audio packet received
    (decoded to PCM16LE), C{on_dtmf(DtmfDigit)} for each key press
    received, C{on_source_done(stream)} when the source ran out,
    C{on_no_rtp(stream)} after C{no_rtp_timeout} seconds without RTP
    (once; again only after RTP came back and stopped again).
    """

    def __init__(self, reactor: "IReactorUDP | IReactorTime", *, codec: str = "PCMU",
                 payload_type: Optional[int] = None, dtmf_payload_type: Optional[int] = None,
                 source: Optional[FrameSource] = None, sink: Any = None,
                 on_frame: Optional[Callable[[bytes, RTPPacket], None]] = None,
                 on_dtmf: Optional[Callable[[DtmfDigit], None]] = None,
                 on_source_done: Optional[Callable[["RTPStream"], None]] = None,
                 on_no_rtp: Optional[Callable[["RTPStream"], None]] = None, no_rtp_timeout: float = 10.0,
                 detect_inband: bool = False, rtcp: bool = False, ptime: float = 0.020, max_catch_up: int = 3,
                 rng: Any = None, cname: str = "sipproxy", port_range: tuple[int, int] = (16384, 32767)) -> None:
        self.reactor = reactor
        self._clock: MediaClock = clock_for(reactor)
        self.codec = g711.codec_for(codec)
        self.payload_type = self.codec.payload_type if payload_type is None else payload_type
        self.dtmf_payload_type = dtmf_payload_type
        self.source = source
        self.sink = sink
        self.on_frame = on_frame
        self.on_dtmf = on_dtmf
        self.on_source_done = on_source_done
        self.on_no_rtp = on_no_rtp
        self.no_rtp_timeout = no_rtp_timeout
        self.ptime = ptime
        self.samples = int(round(ptime * _CLOCK_RATE))
        self.max_catch_up = max_catch_up
        self.sender = RTPSender(self.payload_type, rng=rng)
        self._rng = rng if rng is not None else random.SystemRandom()
        self.port_range = port_range
        self.rx = ReceiverStats(_CLOCK_RATE)
        self.events = EventReceiver(_CLOCK_RATE)
        self.detector: Optional[ToneDetector] = ToneDetector() if detect_inband else None
        self.use_rtcp = rtcp
        self.reporter: Optional[RTCPReporter] = None
        self._cname = cname
        self._silence = bytes((self.codec.silence,)) * self.samples
        #: source frame -> its payload in our codec (see L{_payload}), for
        #: frames in the encoding C{_encoded_from}
        self._encoded: dict[bytes, bytes] = {}
        self._encoded_from: Optional[str] = None

        self.port: Optional[IListeningPort] = None
        self._sendto: Optional[Callable[[bytes, Address], int]] = None
        #: the RTP socket's C{recvmsg} once the stream reads it on its own
        #: tick (see L{start})
        self._read: Optional[Callable[..., tuple]] = None
        self._local_port: Optional[int] = None
        self.rtcp_port: Optional[IListeningPort] = None
        self.remote: Optional[Address] = None
        self.remote_rtcp: Optional[Address] = None
        self.latched: Optional[Address] = None
        self.latched_rtcp: Optional[Address] = None
        self._pacer: Optional[Pacer] = None
        self._timer: Any = None
        self._watchdog: Any = None
        self._started_at: Optional[float] = None
        self._last_rx: Optional[float] = None
        self._no_rtp_reported = False
        self._dtmf_queue: deque[tuple[Iterator[list[bytes]], defer.Deferred]] = deque()
        self._dtmf_current: Optional[tuple[Iterator[list[bytes]], defer.Deferred]] = None
        self._stop_waiters: Optional[list[defer.Deferred]] = None
        self._stop_done = False
        self.stopped = False
        #: False pauses sending (hold): slots pass, the RTP clock moves on
        self.sending = True

        # counters (stats() reports them with the RTP statistics)
        self.malformed = 0
        self.foreign = 0
        self.unknown_payload = 0
        self.send_errors = 0
        self.late_max = 0.0
        self.dtmf_received: list[DtmfDigit] = []

    # -- sockets ---------------------------------------------------------------------
    def listen(self, host: str = "127.0.0.1", port: int = 0, attempts: int = 50) -> int:
        """Bind the RTP socket; the RTP port number (for the SDP).

        With C{rtcp}, the RTCP socket goes on the next port and RTP on an
        even one (RFC 3550 11). Port 0 then means a random even port of
        C{port_range} (C{attempts} tries): the kernel's ephemeral port
        cannot be asked for an even/odd pair. RTCP is bound first, so this
        protocol is connected to one port only, the one it keeps (a
        C{DatagramProtocol} cannot be reused at once after C{stopListening}:
        its transport is released a reactor turn later)."""
        if not self.use_rtcp:
            self.port = self.reactor.listenUDP(port, self, interface=host)
            self._local_port = self.port.getHost().port
            self._sendto = _raw_sendto(self.port)
            return self._local_port
        if port:
            candidates = [port]
        else:
            low, high = self.port_range
            candidates = [2 * self._rng.randint((low + 1) // 2, (high - 1) // 2) for _ in range(attempts)]
        for number in candidates:
            try:
                rtcp_port = self.reactor.listenUDP(number + 1, _RTCPProtocol(self), interface=host)
            except ierror.CannotListenError:
                continue
            try:
                self.port = self.reactor.listenUDP(number, self, interface=host)
            except ierror.CannotListenError:
                rtcp_port.stopListening()
                continue
            self.rtcp_port = rtcp_port
            self._local_port = number
            self._sendto = _raw_sendto(self.port)
            return number
        raise PortAllocationError(f"no free RTP/RTCP port pair on {host} after {len(candidates)} attempts")

    @property
    def local_port(self) -> Optional[int]:
        """The RTP port number (still known after L{stop})."""
        return self._local_port

    def set_remote(self, rtp: Optional[Address], rtcp: Optional[Address] = None) -> None:
        """Where to send (from the peer's SDP; None: on hold, send nothing).
        Forgets a latched address: a re-INVITE may move the peer. An SDP
        may name a host (RFC 4566 allows it); we send to IP addresses only
        (no lookup on the media path), so a host name sends nothing until
        the peer's own packets give the address to latch to."""
        if rtp is not None and not _usable(rtp):
            log.info("RTP stream {port}: the peer's media address {host} port {remote_port} is not an IP "
                     "address and port: waiting for its packets", port=self._local_port, host=rtp[0],
                     remote_port=rtp[1])
            rtp = rtcp = None
        if rtcp is not None and not _usable(rtcp):
            rtcp = None
        self.remote = tuple(rtp) if rtp is not None else None
        if rtcp is None and rtp is not None:
            rtcp = _next_port(rtp)
        self.remote_rtcp = tuple(rtcp) if rtcp is not None else None
        self.latched = self.latched_rtcp = None

    def set_codec(self, codec: str, payload_type: Optional[int] = None,
                  dtmf_payload_type: Optional[int] = None) -> None:
        """Switch to what the offer/answer agreed (the socket is bound
        before the SDP is written, the codec is known only after it)."""
        self.codec = g711.codec_for(codec)
        self.payload_type = self.codec.payload_type if payload_type is None else payload_type
        self.sender.payload_type = self.payload_type
        self.dtmf_payload_type = dtmf_payload_type
        self._silence = bytes((self.codec.silence,)) * self.samples
        self._encoded.clear()

    @property
    def destination(self) -> Optional[Address]:
        """Where RTP goes: the latched source of the peer's packets, or the
        address from its SDP until one came."""
        return self.latched or self.remote

    # -- sending ---------------------------------------------------------------------
    def start(self) -> None:
        """Start sending (paced from now) and watching for incoming RTP.

        While fewer than L{CLOCKED_STREAMS} streams do so, the stream
        reads its RTP socket itself from here on, on the tick that sends,
        where the kernel stamps arrivals (Linux): one wake-up per packet
        interval instead of one for the peer's packet and one for ours,
        which on one call is most of the CPU. A received frame waits at
        most one interval (20 ms) before it is handled; jitter and DTMF
        timing use the kernel's arrival time, not the handling time."""
        if self._pacer is not None or self.stopped:
            return
        if self.port is not None and self._read is None and len(_clocked_streams) < CLOCKED_STREAMS:
            self._read = _stamped_reader(self.port)
            if self._read is not None:
                _clocked_streams.add(self)
                self.port.stopReading()
        now = self.reactor.seconds()
        self._started_at = now
        self._pacer = Pacer(now, self.ptime, self.max_catch_up)
        if self.use_rtcp and self.reporter is None:
            self.reporter = RTCPReporter(self.sender, self.rx, cname=self._cname, now=now)
        self._arm_watchdog(self.no_rtp_timeout)
        self._tick()

    def _tick(self) -> None:
        self._timer = None
        if self.stopped or self._pacer is None:
            return
        now = self.reactor.seconds()
        pacer = self._pacer
        deadline = pacer.next_deadline
        send, skip = pacer.due(now)
        if send:
            self.late_max = max(self.late_max, now - deadline - skip * self.ptime)
        if skip:
            self.sender.skip(skip * self.samples)
        for _ in range(send):
            try:
                self._send_slot()
            except Exception:
                log.failure("RTP stream {port}: sending failed", port=self.local_port)
        # the report goes with the packet slot nearest its due time
        if self.reporter is not None and self.reporter.due(now + self.ptime / 2):
            self._send_rtcp(now)
        # what arrived since the last tick, after our packet went out on time
        if self._read is not None and not self.stopped:
            self._read_pending(now)
        if not self.stopped:
            self._timer = self._clock.call_at(pacer.next_deadline, self._tick)

    def _send_slot(self) -> None:
        """One packet interval: DTMF if any is queued, else the next frame
        of the source, else nothing (the RTP clock moves on)."""
        if self.destination is None or not self.sending:
            # on hold, or the peer's address not known yet: nothing is
            # taken from the source or the DTMF queue, the clock moves on
            self.sender.skip(self.samples)
            return
        if self._dtmf_current is None and self._dtmf_queue:
            self._dtmf_current = self._dtmf_queue.popleft()
        while self._dtmf_current is not None:
            slots, done = self._dtmf_current
            try:
                packets = next(slots)
            except StopIteration:
                self._dtmf_current = self._dtmf_queue.popleft() if self._dtmf_queue else None
                done.callback(None)
                continue
            for data in packets:
                self._write(data)
            return
        frame = self.source.next_frame() if self.source is not None else None
        if frame is None:
            if self.source is not None:
                self.source = None
                if self.on_source_done is not None:
                    self.on_source_done(self)
            self.sender.skip(self.samples)
            return
        self._write(self.sender.packet(self._payload(frame), self.samples))

    def _payload(self, frame: bytes) -> bytes:
        """The frame in our codec. A looped file or a tone plays the same
        frames over and over: each distinct frame is encoded once (up to
        L{_ENCODED_FRAMES} of them; the bytes cache their own hash)."""
        encoding = getattr(self.source, "encoding", None)
        if encoding == self.codec.name:
            return frame
        if encoding != self._encoded_from:
            # another source: a PCMA and a PCMU frame may be the same bytes
            self._encoded.clear()
            self._encoded_from = encoding
        payload = self._encoded.get(frame)
        if payload is None:
            if encoding is None:
                payload = self.codec.encode(frame)
            else:
                payload = self.codec.encode(g711.codec_for(encoding).decode(frame))
            if len(self._encoded) < _ENCODED_FRAMES:
                self._encoded[frame] = payload
        return payload

    def _write(self, data: bytes) -> None:
        destination = self.destination
        if destination is None or self.port is None:
            return
        try:
            if self._sendto is not None:
                self._sendto(data, destination)
            else:
                self.port.write(data, destination)
        except (OSError, ierror.MessageLengthError):
            self.send_errors += 1

    def send_dtmf(self, keys: str, duration_ms: int = DEFAULT_DURATION_MS, method: Optional[str] = None,
                  volume: int = DEFAULT_VOLUME) -> defer.Deferred:
        """Queue key presses (Net::SIP's plan: gaps between keys, other
        characters pause). C{method} is C{"rfc4733"} (needs
        C{dtmf_payload_type}), C{"audio"}, or None: RFC 4733 when the peer
        offered telephone-event, else audio (as Net::SIP chooses). The
        Deferred fires when the last packet of the keys was sent."""
        if method is None:
            method = "rfc4733" if self.dtmf_payload_type is not None else "audio"
        if method not in ("rfc4733", "audio"):
            raise ValueError(f"unknown DTMF method {method!r}")
        if method == "rfc4733" and self.dtmf_payload_type is None:
            raise ValueError("RFC 4733 DTMF needs the peer's telephone-event payload type")
        if duration_ms <= 0 or not 0 <= volume <= 63:
            raise ValueError(f"bad DTMF duration {duration_ms} ms or volume {volume}")
        plan = dtmf_plan(keys, duration_ms)
        done: defer.Deferred = defer.Deferred()
        self._dtmf_queue.append((self._dtmf_slots(plan, method, volume), done))
        return done

    def _dtmf_slots(self, plan: list, method: str, volume: int) -> Iterator[list[bytes]]:
        """The packets of each slot of a key plan (generated slot by slot,
        so each press takes the stream's timestamp when it starts)."""
        sender = self.sender
        for key, ms in plan:
            if key is None:
                # whole packet intervals, rounded up (50 ms is three)
                for _ in range(max(1, -(-ms * _CLOCK_RATE // 1000 // self.samples))):
                    yield [sender.packet(self._silence, self.samples)]
            elif method == "rfc4733":
                press = EventPackets(key, ms, volume=volume, samples_per_tick=self.samples)
                start = sender.timestamp
                for i, tick in enumerate(press.ticks):
                    yield [sender.packet(payload, 0, payload_type=self.dtmf_payload_type, timestamp=start,
                                         marker=(i == 0 and j == 0)) for j, payload in enumerate(tick)]
                sender.skip(press.samples)
            else:
                for frame in tone_frames(key, ms, frame=self.samples):
                    yield [sender.packet(self.codec.encode(frame), self.samples)]

    # -- receiving -------------------------------------------------------------------
    def datagramReceived(self, data: bytes, addr: Any) -> None:
        try:
            self._clock.run_due()  # our packets first: see clock.py
            self._received(data, tuple(addr))
        except Exception:
            log.failure("RTP stream {port}: a packet from {source} failed", port=self.local_port, source=addr)

    def _read_pending(self, now: float) -> None:
        """Handle what queued on the RTP socket since the last tick, each
        datagram with its kernel arrival time.

        Reading stops after the first packet from the peer (the latched
        address) that arrived within the last interval: the peer sends one
        packet per interval, so anything behind that one came after it and
        waits for the next tick, which then finds an older packet first and
        reads on. This spares the read that finds the queue empty, an
        exception per tick. Packets from anyone else do not stop the read,
        so a stranger's fresh packets queued in front cannot hold the
        peer's back. At most L{_READ_PER_TICK} datagrams are read per
        tick."""
        receive = self._read
        assert receive is not None
        fresh = now - self.ptime
        for _ in range(_READ_PER_TICK):
            try:
                data, ancillary, flags, addr = receive(_MAX_DATAGRAM, 64)
            except BlockingIOError:
                return
            except OSError:  # an ICMP error of an earlier send surfaces here: not fatal
                continue
            stamped = None
            for _level, kind, stamp in ancillary:
                if kind == _SO_TIMESTAMPNS and len(stamp) >= _TIMESPEC.size:
                    seconds, nanoseconds = _TIMESPEC.unpack_from(stamp)
                    stamped = seconds + nanoseconds * 1e-9
                    if abs(now - stamped) >= 1.0:  # a reactor on another clock than the kernel's
                        stamped = None
            if flags & _MSG_TRUNC:
                self.malformed += 1
                continue
            source = (addr[0], addr[1])
            try:
                self._received(data, source, stamped if stamped is not None else now)
            except Exception:
                log.failure("RTP stream {port}: a packet from {source} failed", port=self.local_port,
                            source=addr)
            if self.stopped or (stamped is not None and stamped > fresh and source == self.latched):
                return

    def _received(self, data: bytes, addr: Address, arrival: Optional[float] = None) -> None:
        if self.stopped:
            return
        if self.latched is not None and addr != self.latched:
            self.foreign += 1
            return
        try:
            packet = parse_rtp(data)
        except RTPError:
            self.malformed += 1
            return
        pt = packet.payload_type
        if pt != self.payload_type and pt != self.dtmf_payload_type:
            self.unknown_payload += 1  # comfort noise, another codec: not ours
            return
        now = arrival if arrival is not None else self.reactor.seconds()
        if self.latched is None:
            self.latched = addr
            if addr != self.remote:
                log.info("RTP stream {port}: peer sends from {source}, not {remote}: sending there",
                         port=self.local_port, source=addr, remote=self.remote)
        self._last_rx = now
        if self._no_rtp_reported:
            self._no_rtp_reported = False
            self._arm_watchdog(self.no_rtp_timeout)
        verdict = self.rx.update(packet, now)
        if verdict == Verdict.DUPLICATE or verdict == Verdict.BAD:
            return
        if pt == self.dtmf_payload_type:
            self._report(self.events.feed(packet.timestamp, packet.payload, now))
            return
        self._report(self.events.expire(now))
        pcm = self.codec.decode(packet.payload)
        if self.sink is not None:
            try:
                self.sink.write(pcm)
            except OSError as e:  # a full disk: one line, and the call goes on unrecorded
                log.error("RTP stream {port}: recording stopped: {error}", port=self.local_port, error=e)
                self._drop_sink()
        if self.on_frame is not None:
            self.on_frame(pcm, packet)
        if self.detector is not None:
            self._report(self.detector.feed(pcm))

    def _report(self, digits: list[DtmfDigit]) -> None:
        for digit in digits:
            self.dtmf_received.append(digit)
            log.debug("RTP stream {port}: DTMF {digit} ({duration_ms} ms, {method})", port=self.local_port,
                      digit=digit.digit, duration_ms=digit.duration_ms, method=digit.method)
            if self.on_dtmf is not None:
                self.on_dtmf(digit)

    # -- watchdog --------------------------------------------------------------------
    def _arm_watchdog(self, delay: float) -> None:
        if self._watchdog is not None and self._watchdog.active():
            self._watchdog.cancel()
        self._watchdog = self.reactor.callLater(delay, self._check_rtp)

    def _check_rtp(self) -> None:
        """Fires at most once per C{no_rtp_timeout}, whatever the packet
        rate: the last arrival time is looked at, not re-armed per packet."""
        self._watchdog = None
        if self.stopped:
            return
        now = self.reactor.seconds()
        last = self._last_rx if self._last_rx is not None else self._started_at
        idle = now - (last if last is not None else now)
        if idle + 1e-9 >= self.no_rtp_timeout:
            self._no_rtp_reported = True
            log.info("RTP stream {port}: no RTP for {idle:.1f} s", port=self.local_port, idle=idle)
            if self.on_no_rtp is not None:
                self.on_no_rtp(self)
            return
        self._arm_watchdog(self.no_rtp_timeout - idle)

    # -- RTCP ------------------------------------------------------------------------
    def _send_rtcp(self, now: float) -> None:
        reporter = self.reporter
        assert reporter is not None and self._pacer is not None
        # our RTP timestamp for "now": the next packet's, minus the time to its deadline
        ahead = max(self._pacer.next_deadline - now, 0.0)
        report = reporter.build(now, self.sender.timestamp - int(ahead * _CLOCK_RATE))
        self._write_rtcp(report)

    def _write_rtcp(self, data: bytes) -> None:
        destination = self.latched_rtcp or self.remote_rtcp
        if destination is None and self.latched is not None:
            destination = _next_port(self.latched)
        if destination is None or self.rtcp_port is None:
            return
        try:
            self.rtcp_port.write(data, destination)
        except (OSError, ierror.MessageLengthError):
            self.send_errors += 1

    def _rtcp_received(self, data: bytes, addr: Any) -> None:
        try:
            if self.stopped or self.reporter is None:
                return
            addr = tuple(addr)
            if self.latched_rtcp is not None and addr != self.latched_rtcp:
                self.foreign += 1
                return
            try:
                packets = parse_rtcp(data)
            except RTCPError:
                self.malformed += 1
                return
            self.latched_rtcp = addr
            self.reporter.received(packets, self.reactor.seconds())
        except Exception:
            log.failure("RTP stream {port}: an RTCP packet from {source} failed", port=self.local_port,
                        source=addr)

    # -- the end ---------------------------------------------------------------------
    def stop(self) -> defer.Deferred:
        """Stop sending and receiving: timers cancelled, an RTCP BYE sent,
        pending key presses reported, queued DTMF Deferreds failed with
        C{CancelledError}, the sink closed, both sockets closed. The
        Deferred fires (with None) when the sockets are closed; calling
        again gives another Deferred for the same moment."""
        waiter: defer.Deferred = defer.Deferred()
        if self._stop_waiters is not None:
            if self._stop_done:
                waiter.callback(None)
            else:
                self._stop_waiters.append(waiter)
            return waiter
        self._stop_waiters = [waiter]
        for timer in (self._timer, self._watchdog):
            if timer is not None and timer.active():
                timer.cancel()
        self._timer = self._watchdog = None
        if self.reporter is not None:
            self._write_rtcp(self.reporter.build_bye())
        self._report(self.events.expire(float("inf")))
        if self.detector is not None:
            self._report(self.detector.flush())
        self.stopped = True
        _clocked_streams.discard(self)
        pending = ([self._dtmf_current] if self._dtmf_current is not None else []) + list(self._dtmf_queue)
        self._dtmf_current = None
        self._dtmf_queue.clear()
        for _, done in pending:
            done.errback(defer.CancelledError("the RTP stream stopped"))
        self._drop_sink()
        waits = []
        for port in (self.port, self.rtcp_port):
            if port is not None:
                result = port.stopListening()
                if isinstance(result, defer.Deferred):
                    waits.append(result)
        defer.gatherResults(waits, consumeErrors=True).addBoth(self._closed)
        return waiter

    def _drop_sink(self) -> None:
        sink, self.sink = self.sink, None
        if sink is not None and hasattr(sink, "close"):
            try:
                sink.close()
            except OSError as e:
                log.error("RTP stream {port}: closing the recording failed: {error}", port=self.local_port,
                          error=e)

    def _closed(self, result: Any) -> None:
        if isinstance(result, Failure):
            log.failure("RTP stream: closing its sockets failed", result)
        self._stop_done = True
        waiters, self._stop_waiters = self._stop_waiters or [], []
        for waiter in waiters:
            waiter.callback(None)

    def stats(self) -> dict:
        """Counters of both directions, for logs and tests."""
        rx = self.rx
        out = {
            "sent": self.sender.packets_sent, "sent_octets": self.sender.octets_sent,
            "received": rx.received, "expected": rx.expected, "lost": rx.lost, "duplicates": rx.duplicates,
            "late": rx.late, "jitter_ms": rx.jitter_ms, "restarts": rx.restarts, "malformed": self.malformed,
            "foreign": self.foreign, "unknown_payload": self.unknown_payload, "send_errors": self.send_errors,
            "skipped_slots": self._pacer.skipped if self._pacer is not None else 0, "late_max": self.late_max,
        }
        if self.reporter is not None:
            out["round_trip"] = self.reporter.round_trip
            out["rtcp_sent"] = self.reporter.reports_sent
            out["rtcp_received"] = self.reporter.reports_received
        return out
