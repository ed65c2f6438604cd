"""Media for a call: the glue between a L{Call}'s offer/answer and one
L{RTPStream} (Net::SIP::Simple::RTP's C{media_send_recv} and
C{media_recv_echo}, with DTMF as Net::SIP::Simple::Call's C{dtmf}).

::

    media = MediaOptions(play="prompt.wav", record="caller.wav", on_dtmf=print)
    call = await ua.invite("sip:bob@example.org", media=media)
    await call.send_dtmf("1234#")           # RFC 4733 if offered, else tones

What a session does, and why:
  - binds its RTP socket (through the reactor the L{Simple} was given) the
    first time the call asks for its C{address} or C{port}, that is when
    the call writes its offer or answer, so the SDP carries the real port;
  - at every offer/answer (C{start}) takes the agreed codec, payload types
    and the peer's address, and whether to send: nothing goes out while
    the peer holds us (sendonly, inactive, c=0.0.0.0; RFC 3264 8.4) nor
    while we hold it (our own sendonly/inactive offer: hold mutes us);
  - plays a file (WAV or Net::SIP raw payload, once or looped), or frames
    from a producer callback, or echoes what comes in after a delay;
    records to a file (WAV, or raw payload for other names, as Net::SIP's
    C{writeto}); hands each received frame to a callback;
  - when the played media ends, calls C{on_media_end(call)}; the default
    hangs up, as Net::SIP does; after C{no_rtp_timeout} seconds without
    incoming RTP (10 by default, as Net::SIP) it hangs up;
  - reports received key presses (RFC 4733, and tones in the audio when
    asked or when an C{on_dtmf} callback is given) as the call's C{"dtmf"}
    event: a L{DtmfDigit} whose C{method} is C{"rfc4733"} or C{"inband"};
  - stops everything when the call ends (C{stop}).

Files are read when the options are made (L{MediaOptions.load}), so a
missing or bad file fails before any SIP is sent, and no disk read happens
on the reactor during calls.
"""
from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence, Union

from twisted.internet.defer import Deferred, fail, succeed

from sipproxy.observe.logsafe import SafeLogger
from sipproxy.sip.offer_answer import PCMA, PCMU, Codec, MediaParams
from sipproxy.sip.sdp import SDPError, parse_sdp
from sipproxy.ua.media import g711
from sipproxy.ua.media.audiofile import (FrameListSource, PcmSource, RawPayloadSink, WavSink, read_raw_payload,
                                         read_wav)
from sipproxy.ua.media.dtmf import DEFAULT_DURATION_MS, DtmfDigit
from sipproxy.ua.media.rtp import ReceiverStats, RTPPacket
from sipproxy.ua.media.stream import RTPStream

__all__ = ["MediaOptions", "MediaSession", "media_factory", "DTMF_METHODS", "BYE"]

log = SafeLogger()

#: C{on_media_end} default: hang up when the played media is over.
BYE = "bye"
#: What C{send_dtmf(method=...)} takes.
DTMF_METHODS = ("auto", "rfc4733", "inband")
_CODECS = {"PCMU": PCMU, "PCMA": PCMA}
_FRAME_SECONDS = 0.020
#: Echo: frames kept beyond the delay before the oldest are dropped (a
#: burst of arrivals must not turn into lasting extra delay).
_ECHO_SLACK = 10


def _codec_list(names: Sequence[Union[str, Codec]]) -> tuple[Codec, ...]:
    out = []
    for name in names:
        if isinstance(name, Codec):
            out.append(name)
            continue
        key = name.strip().upper()
        if key not in _CODECS:
            raise ValueError(f"unsupported codec {name!r} (PCMU and PCMA are supported)")
        out.append(_CODECS[key])
    if not out:
        raise ValueError("no codec")
    return tuple(out)


@dataclass
class MediaOptions:
    """What a call does with its media (every field optional).

    @ivar play: a file to send: C{*.wav} (PCM; converted to 8 kHz mono) or
        a Net::SIP raw payload file (C{raw_encoding} bytes, 160 a packet).
    @ivar repeat: plays of C{play} (<= 0: loop until the call ends).
    @ivar record: a file for what we receive: C{*.wav}, else raw payload.
    @ivar echo: send back what we receive after this many seconds (0:
        after one packet of jitter buffer); None: no echo.
    @ivar on_frame: C{on_frame(pcm16, packet)} for each audio packet in.
    @ivar producer: C{producer()} returning the next 20 ms of PCM16LE
        (320 bytes) to send, or None when done.
    @ivar on_media_end: C{on_media_end(call)} when C{play} or C{producer}
        ran out; L{BYE} (the default) hangs up; None does nothing.
    @ivar no_rtp_timeout: hang up after this many seconds without RTP in
        (None or 0: never).
    @ivar on_dtmf: C{on_dtmf(digit)} for each key press received.
    @ivar detect_inband: look for DTMF tones in the received audio (None:
        when C{on_dtmf} is given).
    @ivar codecs: what we offer and accept, preferred first.
    @ivar rtcp: RTCP on the next port (SR/RR every 5 s).
    @ivar address: the address to bind and put in the SDP (default: the
        address of the SIP leg the call uses).
    """

    play: Optional[str] = None
    repeat: int = 1
    record: Optional[str] = None
    echo: Optional[float] = None
    on_frame: Optional[Callable[[bytes, RTPPacket], Any]] = None
    producer: Optional[Callable[[], Optional[bytes]]] = None
    on_media_end: Any = BYE
    no_rtp_timeout: Optional[float] = 10.0
    on_dtmf: Optional[Callable[[DtmfDigit], Any]] = None
    detect_inband: Optional[bool] = None
    codecs: Sequence[Union[str, Codec]] = ("PCMU", "PCMA")
    rtcp: bool = True
    address: Optional[str] = None
    raw_encoding: str = "PCMU"
    _pcm: Optional[bytes] = field(default=None, repr=False)
    _payloads: Optional[list] = field(default=None, repr=False)
    _records: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        self.codecs = _codec_list(self.codecs)
        g711.codec_for(self.raw_encoding)
        if self.echo is not None and (self.play or self.producer):
            raise ValueError("echo and play (or a producer) both want to send: choose one")
        if self.echo is not None and self.echo < 0:
            raise ValueError(f"echo delay {self.echo} s is negative")

    @classmethod
    def coerce(cls, media: Any) -> Optional["MediaOptions"]:
        """C{media=} as L{Simple.invite} takes it: options, a mapping of
        their fields, True (receive only), or None/False (no media)."""
        if media is None or media is False:
            return None
        if media is True:
            media = cls()
        elif isinstance(media, Mapping):
            media = cls(**media)
        elif not isinstance(media, cls):
            raise TypeError(f"media must be MediaOptions, a mapping or True, not {type(media).__name__}")
        media.load()
        return media

    def load(self) -> "MediaOptions":
        """Read C{play} and check C{record} can be written; raises
        L{sipproxy.ua.media.audiofile.AudioFileError} (one line naming the
        file and the trouble)."""
        if self.play and self._pcm is None and self._payloads is None:
            if _is_wav(self.play):
                self._pcm = read_wav(self.play)
            else:
                data = read_raw_payload(self.play)
                self._payloads = [data[i:i + 160] for i in range(0, len(data), 160)]
        if self.record:
            _check_writable(self.record)
        return self

    def source(self) -> Any:
        """A fresh frame source for one call (None when nothing is played)."""
        self.load()
        if self._pcm is not None:
            return PcmSource(self._pcm, self.repeat)
        if self._payloads is not None:
            return FrameListSource(self._payloads, self.repeat, self.raw_encoding.upper())
        if self.producer is not None:
            return _ProducerSource(self.producer)
        return None

    def sink(self) -> Any:
        """A recorder for one call: the C{record} name for the first call,
        C{name-2.ext}, C{name-3.ext}... for the next ones."""
        if not self.record:
            return None
        self._records += 1
        path = self.record
        if self._records > 1:
            stem, ext = os.path.splitext(path)
            path = f"{stem}-{self._records}{ext}"
        return WavSink(path) if _is_wav(path) else _PayloadRecorder(path)


def _is_wav(path: str) -> bool:
    return path.lower().endswith((".wav", ".wave"))


def _check_writable(path: str) -> None:
    from sipproxy.ua.media.audiofile import AudioFileError

    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise AudioFileError(path, "is a folder, not a file")
    if not os.path.isdir(folder):
        raise AudioFileError(path, f"cannot create: folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise AudioFileError(path, "cannot create: permission denied")


class _ProducerSource:
    """A producer callback as a frame source (PCM16 frames)."""

    encoding = None

    def __init__(self, producer: Callable[[], Optional[bytes]]) -> None:
        self._producer = producer

    def next_frame(self) -> Optional[bytes]:
        try:
            return self._producer()
        except Exception:
            log.failure("media producer failed: the played media ends")
            return None


class _EchoSource:
    """What came in, sent back after C{delay} frames (payloads as they
    came: nothing is decoded and re-encoded).

    A small jitter buffer: sending starts once C{delay + 1} frames are in
    (the extra one absorbs arrival jitter against our own packet clock, so
    a packet arriving just after our tick does not open a gap), an empty
    buffer sends silence and fills up again (an underrun), and a buffer
    grown C{_ECHO_SLACK} frames beyond that drops its oldest (a burst must
    not become lasting delay)."""

    def __init__(self, delay_frames: int, codec: str) -> None:
        self.target = delay_frames + 1
        self._buffer: deque[bytes] = deque()
        self._playing = False
        self.dropped = 0
        self.underruns = 0
        self.encoding = codec
        self.set_codec(codec)

    def set_codec(self, codec: str) -> None:
        if codec != self.encoding or not hasattr(self, "_silence"):
            self._buffer.clear()
            self._playing = False
        self.encoding = codec
        self._silence = bytes((g711.codec_for(codec).silence,)) * 160

    def push(self, payload: bytes) -> None:
        self._buffer.append(payload)
        while len(self._buffer) > self.target + _ECHO_SLACK:
            self._buffer.popleft()
            self.dropped += 1

    def next_frame(self) -> Optional[bytes]:
        if not self._playing:
            if len(self._buffer) < self.target:
                return self._silence
            self._playing = True
        if self._buffer:
            return self._buffer.popleft()
        self._playing = False
        self.underruns += 1
        return self._silence


class _SilenceSource:
    """Silence for ever: a call with nothing to play still sends RTP, so
    the peer's no-RTP watchdog (Net::SIP hangs up after 10 s) stays quiet
    and in-band key presses are followed by audio that ends them."""

    def __init__(self, codec: str) -> None:
        self.set_codec(codec)

    def set_codec(self, codec: str) -> None:
        self.encoding = codec
        self._frame = bytes((g711.codec_for(codec).silence,)) * 160

    def next_frame(self) -> bytes:
        return self._frame


class _PayloadRecorder(RawPayloadSink):
    """Raw payload recording: the stream's sinks get PCM16, Net::SIP's
    files hold PCMU payload bytes."""

    def write(self, pcm16: bytes) -> None:  # type: ignore[override]
        super().write(g711.pcm16_to_ulaw(pcm16))


class _CallStats(ReceiverStats):
    """Reception statistics kept over the whole call: the stream's restart
    at a new SSRC (sipp's pcaps, a peer switching its source) would
    otherwise forget what came before."""

    def __init__(self) -> None:
        self.prior_received = 0
        self.prior_lost = 0
        super().__init__(8000)

    def _start(self, packet: RTPPacket, arrival: float) -> None:
        if self.ssrc is not None:
            self.prior_received += self.received
            self.prior_lost += max(self.lost, 0)
        super()._start(packet, arrival)


class MediaSession:
    """One call's media (see the module docstring). Made by
    L{media_factory}; the call reads C{address}, C{port}, C{codecs} and
    calls C{start} and C{stop}."""

    def __init__(self, call: Any, options: MediaOptions) -> None:
        self.call = call
        self.options = options
        self.reactor = call.clock
        self.codecs = options.codecs
        self.stream: Optional[RTPStream] = None
        self.params: Optional[MediaParams] = None
        self._address: Optional[str] = None
        self._echo: Optional[_EchoSource] = None
        self._source_started = False
        self.closed: Deferred = Deferred()
        self.stopped = False
        detect = options.detect_inband
        self._detect = bool(options.on_dtmf) if detect is None else detect

    # -- what the call reads for its SDP --------------------------------------------------
    @property
    def address(self) -> str:
        self._bind()
        assert self._address is not None
        return self._address

    @property
    def port(self) -> int:
        stream = self._bind()
        return stream.local_port or 0

    def _bind(self) -> RTPStream:
        if self.stream is not None:
            return self.stream
        host = self.options.address or self._leg_host()
        options = self.options
        # frames go up only to an echo or the application's callback
        wanted = options.echo is not None or options.on_frame is not None
        stream = RTPStream(self.reactor, codec=self.codecs[0].name, on_frame=self._frame_in if wanted else None,
                           on_dtmf=self._dtmf_in, on_source_done=self._source_done,
                           on_no_rtp=self._no_rtp if options.no_rtp_timeout else None,
                           no_rtp_timeout=options.no_rtp_timeout or 3600.0, detect_inband=self._detect,
                           rtcp=options.rtcp, sink=options.sink())
        stream.rx = _CallStats()
        try:
            stream.listen(host)
        except Exception:
            if stream.sink is not None:
                stream.sink.close()
            raise
        self.stream = stream
        self._address = host
        return stream

    def _leg_host(self) -> str:
        call = self.call
        leg = call.target[0] if call.target is not None else call.endpoint.dispatcher.legs[0]
        return leg.host

    # -- offer/answer ----------------------------------------------------------------------
    def start(self, call: Any) -> None:
        """After each offer/answer: the agreed codec and the peer's address;
        sending on or off; the stream started the first time."""
        if self.stopped:
            return
        params: Optional[MediaParams] = call.negotiated
        if params is None:
            return
        stream = self._bind()
        self.params = params
        stream.set_codec(params.codec, params.payload_type, params.telephone_event)
        unspecified = params.port == 0 or params.address in ("", "0.0.0.0", "::")
        if unspecified:
            stream.set_remote(None)
        elif stream.remote != (params.address, params.port):
            stream.set_remote((params.address, params.port))
        stream.sending = params.send and not self._we_hold(call) and not unspecified
        if not self._source_started:
            self._source_started = True
            if self.options.echo is not None:
                delay = int(round(self.options.echo / _FRAME_SECONDS))
                self._echo = _EchoSource(delay, params.codec)
                stream.source = self._echo
            else:
                stream.source = self.options.source() or _SilenceSource(params.codec)
        elif isinstance(stream.source, (_EchoSource, _SilenceSource)):
            stream.source.set_codec(params.codec)
        stream.start()

    @staticmethod
    def _we_hold(call: Any) -> bool:
        """Whether our last SDP holds the peer (we mute while holding)."""
        sdp = call.local_sdp
        if not sdp or not isinstance(sdp, bytes):
            return False
        try:
            media = parse_sdp(sdp).media
        except SDPError:
            return False
        return bool(media) and media[0].direction in ("sendonly", "inactive")

    # -- events from the stream --------------------------------------------------------------
    def _frame_in(self, pcm16: bytes, packet: RTPPacket) -> None:
        if self._echo is not None:
            self._echo.push(packet.payload)
        if self.options.on_frame is not None:
            self.options.on_frame(pcm16, packet)

    def _dtmf_in(self, digit: DtmfDigit) -> None:
        if digit.method == "audio":
            digit = digit._replace(method="inband")
        if self.options.on_dtmf is not None:
            try:
                self.options.on_dtmf(digit)
            except Exception:
                log.failure("on_dtmf failed")
        self.call._emit("dtmf", digit)

    def _source_done(self, stream: RTPStream) -> None:
        self.call._emit("media_end", self.call)
        action = self.options.on_media_end
        if action == BYE:
            log.info("call {call_id}: media sent, hanging up", call_id=self.call.call_id)
            self.call.bye()
        else:
            stream.source = _SilenceSource(stream.codec.name)  # the line stays alive
            if action is not None:
                action(self.call)

    def _no_rtp(self, stream: RTPStream) -> None:
        log.info("call {call_id}: no RTP for {seconds} s, hanging up", call_id=self.call.call_id,
                 seconds=self.options.no_rtp_timeout)
        self.call.bye()

    # -- what the user may do ----------------------------------------------------------------
    def send_dtmf(self, keys: str, method: str = "auto", duration_ms: int = DEFAULT_DURATION_MS) -> Deferred:
        """Send key presses: C{"rfc4733"}, C{"inband"} (tones in place of
        the audio), or C{"auto"}: RFC 4733 when the peer offered
        telephone-event, tones otherwise (Net::SIP's choice). Fires when
        the last packet went out; fails with ValueError when the method
        cannot be used."""
        if method not in DTMF_METHODS:
            return fail(ValueError(f"unknown DTMF method {method!r} (auto, rfc4733 or inband)"))
        stream = self.stream
        if stream is None or self.params is None or self.stopped:
            return fail(ValueError("no media negotiated yet"))
        wanted = {"auto": None, "rfc4733": "rfc4733", "inband": "audio"}[method]
        try:
            return stream.send_dtmf(keys, duration_ms=duration_ms, method=wanted)
        except ValueError as e:
            return fail(e)

    def dtmf_method(self, method: str = "auto") -> str:
        """What C{send_dtmf(method=...)} would use now."""
        if method != "auto":
            return method
        return "rfc4733" if self.params is not None and self.params.telephone_event is not None else "inband"

    def stats(self) -> dict:
        """C{sent}, C{received}, C{lost}, C{jitter_ms} (and the rest of the
        stream's counters)."""
        if self.stream is None:
            return {"sent": 0, "received": 0, "lost": 0, "jitter_ms": 0.0}
        stats = self.stream.stats()
        rx = self.stream.rx
        if isinstance(rx, _CallStats):
            stats["received"] += rx.prior_received
            stats["lost"] += rx.prior_lost
        return stats

    def stop(self, call: Any = None) -> Deferred:
        """Stop sending and receiving and close the sockets and the
        recording; C{closed} fires when done."""
        if self.stopped:
            return self.closed if not self.closed.called else succeed(None)
        self.stopped = True
        if self.stream is None:
            self.closed.callback(None)
            return succeed(None)

        def done(_: Any) -> None:
            if not self.closed.called:
                self.closed.callback(None)

        self.stream.stop().addBoth(done)
        return self.closed if not self.closed.called else succeed(None)


def media_factory(media: Any) -> Optional[Callable[[Any], MediaSession]]:
    """C{media=} (see L{MediaOptions.coerce}) as a C{factory(call)} for
    L{sipproxy.ua.call.Call}; None for no media. Reads the files now."""
    options = MediaOptions.coerce(media)
    if options is None:
        return None

    def make(call: Any) -> MediaSession:
        return MediaSession(call, options)

    make.options = options  # type: ignore[attr-defined]
    return make
