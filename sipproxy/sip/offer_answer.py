"""The SDP offer/answer model for one audio stream (RFC 3264, RFC 4733).

Pure: builds offers and answers as bytes and reads what was agreed; the
user agent turns the result into RTP sockets. Reading goes through
L{sipproxy.sip.sdp.parse_sdp}.

API::

    session = SdpSession(address, port, codecs=(PCMU, PCMA),
                         telephone_event=TELEPHONE_EVENT, ptime=20)
    session.offer(direction="sendrecv") -> bytes
        m=audio <port> RTP/AVP 0 8 101, rtpmap lines, a=fmtp:101 0-15,
        a=ptime:20, the direction; hold is offer("sendonly") (RFC 3264 8.4).
    session.answer(offer_bytes, direction="sendrecv") -> bytes
        raises NoCommonCodec (answer 488) or SDPError (answer 400).
    session.version        o= session version: one more for every SDP
                           this session produces after the first (8)
    remote_media(sdp_bytes, codecs=...) -> MediaParams
        what the peer's offer or answer asks of us: where to send (address,
        port), the payload type and codec, the telephone-event payload type
        (or None), ptime, the peer's direction and whether we send and
        receive. Raises NoCommonCodec when no audio stream is usable.

Answer rules (RFC 3264 6): one m= line per offered line, in the same
order; the first RTP/AVP audio stream with a codec in common is accepted
and every other stream is refused with port 0 (we play one stream); the
accepted stream lists the common codecs in the offerer's order with the
offerer's payload type numbers, plus telephone-event when offered at the
codec's rate; the direction is the mirror of the offer's (sendonly ->
recvonly, recvonly -> sendonly, inactive -> inactive) limited by our own
C{direction}. An offer whose connection address is 0.0.0.0 (RFC 2543 hold,
RFC 3264 8.4) is read as the offerer not wanting media: sendrecv becomes
sendonly, recvonly becomes inactive.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Optional, Sequence, Union

from sipproxy.sip.bounded import BoundedCache
from sipproxy.sip.ids import new_session_id
from sipproxy.sip.sdp import DIRECTIONS, Media, SessionDescription, parse_sdp

__all__ = [
    "Codec",
    "PCMU",
    "PCMA",
    "TELEPHONE_EVENT",
    "DEFAULT_CODECS",
    "NoCommonCodec",
    "MediaParams",
    "SdpSession",
    "remote_media",
    "answer_direction",
]


@dataclass(frozen=True)
class Codec:
    """An RTP payload format: the payload type we offer it with, its
    encoding name and clock rate (RFC 3551, RFC 4566 6 rtpmap)."""

    payload_type: int
    name: str
    rate: int = 8000
    fmtp: Optional[str] = None

    def same_format(self, name: str, rate: int) -> bool:
        return self.name.lower() == name.lower() and self.rate == rate


PCMU = Codec(0, "PCMU")
PCMA = Codec(8, "PCMA")
TELEPHONE_EVENT = Codec(101, "telephone-event", fmtp="0-15")
DEFAULT_CODECS = (PCMU, PCMA)

#: Static payload types (RFC 3551 table 4) an offer may use without rtpmap.
_STATIC = {0: ("PCMU", 8000), 3: ("GSM", 8000), 4: ("G723", 8000), 8: ("PCMA", 8000), 9: ("G722", 8000),
           15: ("G728", 8000), 18: ("G729", 8000)}
_PROTO = "RTP/AVP"


class NoCommonCodec(ValueError):
    """No audio stream of the offer can be accepted: answer 488 Not
    Acceptable Here (RFC 3261 13.3.1.3)."""

    status = 488


@dataclass(frozen=True)
class MediaParams:
    """What one SDP of the peer means for our RTP.

    @ivar address: where to send RTP (an unspecified address when held).
    @ivar port: the peer's RTP port.
    @ivar payload_type: the payload type to send with.
    @ivar codec: its encoding name (C{PCMU}, C{PCMA}, ...).
    @ivar rate: its clock rate.
    @ivar telephone_event: the payload type for RFC 4733 events, or None.
    @ivar ptime: packet time in ms (a=ptime, 20 when absent).
    @ivar direction: the direction the peer declared (after the legacy
        0.0.0.0 rule).
    @ivar send: whether we should send media.
    @ivar receive: whether the peer will send media to us.
    """

    address: str
    port: int
    payload_type: int
    codec: str
    rate: int
    telephone_event: Optional[int]
    ptime: int
    direction: str
    send: bool
    receive: bool


# -- reading --------------------------------------------------------------------------------
def _rtpmaps(media: Media) -> dict[int, tuple[str, int]]:
    """Payload type -> (encoding name, rate) from a=rtpmap, static types filled in."""
    found: dict[int, tuple[str, int]] = {}
    for value in media.attributes:
        if not value.startswith("rtpmap:"):
            continue
        pt_text, _, encoding = value[7:].partition(" ")
        parts = encoding.strip().split("/")
        try:
            pt, rate = int(pt_text), int(parts[1])
        except (ValueError, IndexError):
            continue
        found[pt] = (parts[0], rate)
    for fmt in media.formats:
        if fmt.isdigit() and int(fmt) in _STATIC:
            found.setdefault(int(fmt), _STATIC[int(fmt)])
    return found


def _ptime(media: Media) -> int:
    value = media.attribute("ptime")
    try:
        return int(value) if value else 20
    except ValueError:
        return 20


def _is_unspecified(address: Optional[str]) -> bool:
    if not address:
        return True
    if ":" not in address:  # IPv4 (one spelling: leading zeros are refused) or a host name
        return address == "0.0.0.0"
    try:
        return ipaddress.ip_address(address).is_unspecified
    except ValueError:
        return False


def _effective_direction(media: Media) -> str:
    """The direction a stream declares, reading a 0.0.0.0 connection as
    "do not send to me" (RFC 3264 8.4)."""
    direction = media.direction
    if _is_unspecified(media.address):
        direction = {"sendrecv": "sendonly", "recvonly": "inactive"}.get(direction, direction)
    return direction


def _common(media: Media, codecs: Sequence[Codec]) -> list[tuple[int, Codec]]:
    """(their payload type, our codec) for every offered format we speak,
    in their order."""
    maps = _rtpmaps(media)
    out = []
    for fmt in media.formats:
        if not fmt.isdigit() or int(fmt) not in maps:
            continue
        name, rate = maps[int(fmt)]
        for codec in codecs:
            if codec.same_format(name, rate):
                out.append((int(fmt), codec))
                break
    return out


def _telephone_event(media: Media, rate: int) -> Optional[int]:
    for pt, (name, pt_rate) in _rtpmaps(media).items():
        if name.lower() == "telephone-event" and pt_rate == rate and str(pt) in media.formats:
            return pt
    return None


def _usable(media: Media, codecs: Sequence[Codec]) -> bool:
    return media.kind == "audio" and media.port != 0 and media.proto.upper() == _PROTO \
        and bool(_common(media, codecs))


def _first_usable(sdp: SessionDescription, codecs: Sequence[Codec]) -> Optional[Media]:
    for media in sdp.media:
        if _usable(media, codecs):
            return media
    return None


#: SDP body -> its parse, only read here and never handed out: a peer
#: sends the same offer (or answer) call after call. A body that does not
#: parse raises every time and is not kept.
_BODIES = BoundedCache("SDP bodies", 256, max_key=4096)
#: (SDP body, our codecs) -> what L{remote_media} read from it (immutable)
_PARAMS = BoundedCache("SDP media readings", 256, max_key=4096)
#: (offer body, our codecs, telephone-event, ptime, direction) -> our
#: answer's m= sections around our port (L{SdpSession.answer})
_ANSWERS = BoundedCache("SDP answer plans", 256, max_key=4096)


def _read(sdp: Union[bytes, str, SessionDescription]) -> SessionDescription:
    """C{sdp} parsed; a body already seen is not parsed again (the result
    must only be read)."""
    if isinstance(sdp, SessionDescription):
        return sdp
    if not isinstance(sdp, bytes):
        return parse_sdp(sdp)
    parsed = _BODIES.get(sdp)
    if parsed is None:
        parsed = _BODIES.store(sdp, parse_sdp(sdp))
    return parsed


def remote_media(sdp: Union[bytes, str, SessionDescription], codecs: Sequence[Codec] = DEFAULT_CODECS
                 ) -> MediaParams:
    """Read the peer's SDP (an offer or an answer) for our one audio stream.

    What is read from an SDP body (bytes) is remembered per body and codecs.

    @raise NoCommonCodec: no RTP/AVP audio stream with a codec we speak.
    @raise SDPError: a malformed SDP.
    """
    if isinstance(sdp, bytes):
        key = (sdp, tuple(codecs))
        params = _PARAMS.get(key)
        if params is None:
            params = _PARAMS.store(key, _remote_media(_read(sdp), codecs), size=len(sdp))
        return params
    return _remote_media(_read(sdp), codecs)


def _remote_media(sdp: SessionDescription, codecs: Sequence[Codec]) -> MediaParams:
    media = _first_usable(sdp, codecs)
    if media is None:
        raise NoCommonCodec("no audio stream with a codec in common")
    payload_type, codec = _common(media, codecs)[0]
    direction = _effective_direction(media)
    return MediaParams(
        address=media.address or "",
        port=media.port,
        payload_type=payload_type,
        codec=codec.name,
        rate=codec.rate,
        telephone_event=_telephone_event(media, codec.rate),
        ptime=_ptime(media),
        direction=direction,
        send=direction in ("sendrecv", "recvonly"),
        receive=direction in ("sendrecv", "sendonly"),
    )


def answer_direction(offered: str, wanted: str = "sendrecv") -> str:
    """The direction of an answer (RFC 3264 6.1): we send only if the
    offerer receives and we want to send; we receive only if the offerer
    sends and we want to receive."""
    if offered not in DIRECTIONS or wanted not in DIRECTIONS:
        raise ValueError(f"unknown direction {offered!r} or {wanted!r}")
    send = offered in ("sendrecv", "recvonly") and wanted in ("sendrecv", "sendonly")
    receive = offered in ("sendrecv", "sendonly") and wanted in ("sendrecv", "recvonly")
    return {(True, True): "sendrecv", (True, False): "sendonly", (False, True): "recvonly",
            (False, False): "inactive"}[(send, receive)]


# -- writing ---------------------------------------------------------------------------------
def _addrtype(address: str) -> str:
    if ":" not in address:  # IPv4 or a host name
        return "IP4"
    try:
        return "IP6" if ipaddress.ip_address(address).version == 6 else "IP4"
    except ValueError:
        return "IP4"  # a host name (RFC 4566 5.7 allows an FQDN)


class SdpSession:
    """Our side of the SDP of one call: the o= line (session id fixed,
    version raised on every new description), our address, port and
    codecs.

    @param address: the connection address for our RTP.
    @param port: our RTP port (RTCP on port + 1).
    @param codecs: what we offer and accept, preferred first.
    @param telephone_event: RFC 4733 events we offer, None for none.
    @param session_id: the o= sess-id (random by default).
    @param version: the o= version of the first description.
    """

    def __init__(
        self,
        address: str,
        port: int,
        codecs: Sequence[Codec] = DEFAULT_CODECS,
        telephone_event: Optional[Codec] = TELEPHONE_EVENT,
        ptime: int = 20,
        username: str = "-",
        session_id: Optional[int] = None,
        version: int = 0,
    ) -> None:
        if not codecs:
            raise ValueError("at least one codec")
        self.address = address
        self.port = port
        self.codecs = tuple(codecs)
        self.telephone_event = telephone_event
        self.ptime = ptime
        self.username = username
        self.session_id = session_id if session_id is not None else new_session_id()
        self.version = version
        self._produced = 0

    def _head(self) -> bytes:
        if self._produced:
            self.version += 1
        self._produced += 1
        addrtype = _addrtype(self.address)
        return (f"v=0\r\no={self.username} {self.session_id} {self.version} IN {addrtype} {self.address}\r\n"
                f"s=-\r\nc=IN {addrtype} {self.address}\r\nt=0 0\r\n").encode("utf-8")

    def _audio(self, formats: list[tuple[int, Codec]], event_pt: Optional[int], direction: str) -> str:
        """Our audio m= section without its first four octets and port
        (C{"m=audio <port>"}), which the caller puts in front."""
        pts = [str(pt) for pt, _ in formats] + ([str(event_pt)] if event_pt is not None else [])
        lines = [f" {_PROTO} {' '.join(pts)}"]
        for pt, codec in formats:
            lines.append(f"a=rtpmap:{pt} {codec.name}/{codec.rate}")
            if codec.fmtp:
                lines.append(f"a=fmtp:{pt} {codec.fmtp}")
        if event_pt is not None:
            event = self.telephone_event
            lines.append(f"a=rtpmap:{event_pt} telephone-event/{formats[0][1].rate}")
            lines.append(f"a=fmtp:{event_pt} {event.fmtp if event and event.fmtp else '0-15'}")
        lines.append(f"a=ptime:{self.ptime}")
        lines.append(f"a={direction}")
        return "\r\n".join(lines) + "\r\n"

    def _with_port(self, before: str, audio: str) -> bytes:
        return self._head() + f"{before}m=audio {self.port}{audio}".encode("utf-8")

    def offer(self, direction: str = "sendrecv") -> bytes:
        """A new offer; C{direction="sendonly"} puts the call on hold
        (RFC 3264 8.4), C{"inactive"} stops media both ways."""
        if direction not in DIRECTIONS:
            raise ValueError(f"unknown direction {direction!r}")
        formats = [(codec.payload_type, codec) for codec in self.codecs]
        event_pt = self.telephone_event.payload_type if self.telephone_event is not None else None
        return self._with_port("", self._audio(formats, event_pt, direction))

    def answer(self, offer: Union[bytes, str, SessionDescription], direction: str = "sendrecv") -> bytes:
        """The answer to the peer's offer (rules in the module docstring).

        What an answer says besides our o= line and port is remembered per
        offer body (bytes), codecs and direction: a peer makes the same
        offer call after call.

        @raise NoCommonCodec: no audio stream we can accept (send 488).
        @raise SDPError: a malformed offer (send 400).
        """
        if not isinstance(offer, bytes):
            return self._with_port(*self._answer_plan(_read(offer), direction))
        key = (offer, self.codecs, self.telephone_event, self.ptime, direction)
        plan = _ANSWERS.get(key)
        if plan is None:
            plan = _ANSWERS.store(key, self._answer_plan(_read(offer), direction), size=len(offer))
        return self._with_port(*plan)

    def _answer_plan(self, sdp: SessionDescription, direction: str) -> tuple[str, str]:
        """The answer's m= sections as text: those before our audio port,
        and those after it."""
        chosen = _first_usable(sdp, self.codecs)
        if chosen is None:
            raise NoCommonCodec("no audio stream with a codec in common")
        before: list[str] = []
        after: list[str] = []
        refused = before
        audio = ""
        for media in sdp.media:
            if media is not chosen:
                port = f"0/{media.port_count}" if media.port_count > 1 else "0"
                refused.append(f"m={media.kind} {port} {media.proto} {' '.join(media.formats) or '0'}\r\n")
                continue
            formats = _common(media, self.codecs)
            event_pt = None
            if self.telephone_event is not None:
                event_pt = _telephone_event(media, formats[0][1].rate)
            audio = self._audio(formats, event_pt, answer_direction(_effective_direction(media), direction))
            refused = after
        return "".join(before), audio + "".join(after)
