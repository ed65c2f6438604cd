"""SDP session descriptions (RFC 4566): parse, inspect, rewrite, serialise.

Pure data, no I/O, and nothing imported from the rest of the package: the
NAT helper reads the media streams of an offer or answer from here and
rewrites them with L{SessionDescription.replace_media_addresses} so that
media flows through its relay.

A line is re-rendered only when a field in it changes; every other line,
including the ones this module does not understand, is kept verbatim and in
order. An SDP nobody changed therefore serialises byte for byte as it came
in (line ends are always written as CRLF, RFC 4566 5).

Decisions where the RFC or Net::SIP leave room:
  - C{v=0} must be the first line (Net::SIP does the same).
  - C{o=} is required, once, before the first C{m=}: without it the session
    version cannot be raised (RFC 3264 8), so an SDP without it is refused
    rather than forwarded with stale media. Its position among the other
    session lines is not checked, nor is its address (it only names the
    originator). A user name with spaces (seen in the wild) is accepted:
    the last five fields are the fixed ones.
  - C{c=} may name a host instead of an IP address (RFC 4566 5.7 allows an
    FQDN); L{Connection.is_ip} tells the two apart. Something that looks
    like an IP address (digits and dots, or a colon) must be a valid one of
    the declared type.
  - Line ends may be CRLF or LF; a bare CR or a NUL inside a line is refused,
    as is an empty line anywhere but at the end (trailing empty lines are
    tolerated and kept).
  - Unknown line types (any ASCII letter) are kept; C{s=} and C{t=} are not
    required.
  - Bytes are decoded as UTF-8 with C{surrogateescape}, so a body in another
    charset (C{a=charset}) still round-trips.
"""
from __future__ import annotations

import ipaddress
import re
from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple, Union

__all__ = [
    "SDPError",
    "Origin",
    "Connection",
    "Media",
    "MediaTarget",
    "SessionDescription",
    "parse_sdp",
    "DIRECTIONS",
]

_ENC = "utf-8"
_ERRORS = "surrogateescape"

#: The direction attributes of RFC 3264 5.1, default first.
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")

_TYPE_RE = re.compile(r"[A-Za-z]=")
_PORT_RE = re.compile(r"[0-9]{1,5}\Z")
_NUMBER_RE = re.compile(r"[0-9]{1,64}\Z")
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+\Z")
_PROTO_RE = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+(?:/[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+)*\Z")
_FIELD_SEP_RE = re.compile(r"[ \t]+")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME_RE = re.compile(r"(?=.{1,253}\Z)%s(?:\.%s)*\.?\Z" % (_LABEL, _LABEL))
_DOTTED_RE = re.compile(r"[0-9.]+\Z")

#: Session-level line types that RFC 4566 5 puts after c=.
_AFTER_SESSION_C = frozenset("btrzka")


class SDPError(ValueError):
    """An SDP that must be refused; C{str(err)} says what is wrong and where.

    @ivar reason: what is wrong.
    @ivar line: the 1-based number of the offending line, or None when the
        fault is not in one line.
    """

    def __init__(self, reason: str, line: Optional[int] = None) -> None:
        super().__init__(reason if line is None else f"line {line}: {reason}")
        self.reason = reason
        self.line = line


# -- addresses -------------------------------------------------------------


def _ip(text: str) -> Optional[Union[ipaddress.IPv4Address, ipaddress.IPv6Address]]:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _addrtype(address: str) -> str:
    """C{IP4} or C{IP6} for an IP literal.

    @raise ValueError: if C{address} is not an IP literal.
    """
    ip = _ip(address)
    if ip is None:
        raise ValueError(f"{address!r} is not an IPv4 or IPv6 address")
    return "IP4" if ip.version == 4 else "IP6"


def _check_address(addrtype: str, address: str) -> bool:
    """Check an address against its declared type; True if it is an IP.

    @raise SDPError: for a malformed address or one of the other family.
    """
    ip = _ip(address)
    if ip is not None:
        if (ip.version == 4) != (addrtype == "IP4"):
            raise SDPError(f"{address!r} is not an {addrtype} address")
        return True
    if ":" in address or _DOTTED_RE.match(address) or not _HOSTNAME_RE.match(address):
        raise SDPError(f"invalid {addrtype} address {address!r}")
    return False


def _address_key(address: str) -> object:
    """A value equal for two spellings of one address (C{::1}, C{0::1})."""
    ip = _ip(address)
    if ip is not None:
        return ip
    return address.lower().rstrip(".")


def _same_address(a: Optional[str], b: Optional[str]) -> bool:
    if a is None or b is None:
        return a is b
    return _address_key(a) == _address_key(b)


def _split(value: str) -> List[str]:
    """Fields separated by spaces (RFC 4566 wants one; tabs and runs of
    blanks are tolerated, other whitespace is part of a field)."""
    return [field for field in _FIELD_SEP_RE.split(value) if field]


def _parse_port(text: str, what: str) -> int:
    if not _PORT_RE.match(text):
        raise SDPError(f"{what} {text!r} is not a number")
    port = int(text)
    if port > 65535:
        raise SDPError(f"{what} {port} is out of range (0-65535)")
    return port


# -- lines we understand ----------------------------------------------------


class _Field:
    """A line parsed into fields that renders its original text until a
    field changes, so reading never alters what is forwarded."""

    __slots__ = ("_raw", "_parsed")
    _type = ""

    def __init__(self) -> None:
        self._raw: Optional[str] = None
        self._parsed: Optional[tuple] = None

    def _fields(self) -> tuple:
        raise NotImplementedError

    def _format(self) -> str:
        raise NotImplementedError

    def _remember(self, raw: str) -> None:
        self._raw = raw
        self._parsed = self._fields()

    def __str__(self) -> str:
        """The value, the text after C{x=}."""
        if self._raw is not None and self._fields() == self._parsed:
            return self._raw
        return self._format()

    @property
    def line(self) -> str:
        """The whole line, C{x=value}, without line end."""
        return f"{self._type}={self}"

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._fields() == other._fields()  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.line!r}>"


class Origin(_Field):
    """The originator line (C{o=}, RFC 4566 5.2).

    @ivar session_version: raised by L{SessionDescription.bump_version}
        whenever the description changes (RFC 3264 8).
    """

    __slots__ = ("username", "session_id", "session_version", "nettype", "addrtype", "address")
    _type = "o"

    def __init__(
        self,
        username: str,
        session_id: str,
        session_version: int,
        address: str,
        addrtype: str = "IP4",
        nettype: str = "IN",
    ) -> None:
        super().__init__()
        self.username = username
        self.session_id = session_id
        self.session_version = session_version
        self.nettype = nettype
        self.addrtype = addrtype
        self.address = address

    @classmethod
    def parse(cls, value: str) -> Origin:
        """Parse the text after C{o=}.

        @raise SDPError: for fewer than six fields or a session version that
            is not a number.
        """
        fields = _split(value)
        if len(fields) < 6:
            raise SDPError(
                "o= needs 6 fields (username sess-id sess-version nettype addrtype address),"
                f" got {len(fields)}"
            )
        username = " ".join(fields[:-5])
        session_id, version, nettype, addrtype, address = fields[-5:]
        if not _NUMBER_RE.match(version):
            raise SDPError(f"o= session version {version!r} is not a number")
        origin = cls(username, session_id, int(version), address, addrtype, nettype)
        origin._remember(value)
        return origin

    def _fields(self) -> tuple:
        return (
            self.username, self.session_id, self.session_version, self.nettype, self.addrtype, self.address
        )

    def _format(self) -> str:
        return " ".join(str(f) for f in self._fields())


class Connection(_Field):
    """Connection data (C{c=}, RFC 4566 5.7): the address media goes to.

    @ivar nettype: C{"IN"}.
    @ivar addrtype: C{"IP4"} or C{"IP6"}.
    @ivar address: an IP literal or a host name (see L{is_ip}).
    @ivar ttl: the IPv4 multicast TTL, or None.
    @ivar count: the number of multicast addresses, or None.
    """

    __slots__ = ("nettype", "addrtype", "address", "ttl", "count")
    _type = "c"

    def __init__(
        self,
        address: str,
        addrtype: Optional[str] = None,
        ttl: Optional[int] = None,
        count: Optional[int] = None,
        nettype: str = "IN",
    ) -> None:
        """Check the address now, so a bad one never reaches the wire.

        @param addrtype: derived from C{address} when omitted, which then
            must be an IP literal.
        @raise ValueError: if C{address} does not fit C{addrtype}.
        """
        super().__init__()
        if addrtype is None:
            addrtype = _addrtype(address)
        if nettype != "IN" or addrtype not in ("IP4", "IP6"):
            raise SDPError(f"unsupported connection type {nettype} {addrtype} (only IN IP4, IN IP6)")
        _check_address(addrtype, address)
        self.nettype = nettype
        self.addrtype = addrtype
        self.address = address
        self.ttl = ttl
        self.count = count

    @classmethod
    def parse(cls, value: str) -> Connection:
        """Parse the text after C{c=}: C{IN IP4 addr[/ttl[/count]]} or
        C{IN IP6 addr[/count]}.

        @raise SDPError: for another network or address type, a malformed
            address, or a bad TTL or count.
        """
        fields = _split(value)
        if len(fields) != 3:
            raise SDPError(f"c= needs 'IN IP4|IP6 <address>', got {value!r}")
        nettype, addrtype = fields[0].upper(), fields[1].upper()
        if nettype != "IN" or addrtype not in ("IP4", "IP6"):
            raise SDPError(f"unsupported connection type {fields[0]} {fields[1]} (only IN IP4, IN IP6)")
        address, *extra = fields[2].split("/")
        ttl = count = None
        numbers = []
        for text in extra:
            if not _PORT_RE.match(text):
                raise SDPError(f"c= TTL or address count {text!r} is not a number")
            numbers.append(int(text))
        if addrtype == "IP4" and numbers:
            if len(numbers) > 2:
                raise SDPError(f"c= has too many '/' parts in {fields[2]!r}")
            ttl = numbers[0]
            if ttl > 255:
                raise SDPError(f"c= TTL {ttl} is out of range (0-255)")
            count = numbers[1] if len(numbers) == 2 else None
        elif addrtype == "IP6" and numbers:
            if len(numbers) > 1:
                raise SDPError(f"c= has too many '/' parts in {fields[2]!r} (IP6 has no TTL)")
            count = numbers[0]
        if count == 0:
            raise SDPError("c= address count must be at least 1")
        conn = cls(address, addrtype, ttl, count, nettype)
        conn._remember(value)
        return conn

    @property
    def is_ip(self) -> bool:
        """False when the address is a host name a peer must resolve."""
        return _ip(self.address) is not None

    @property
    def is_unspecified(self) -> bool:
        """True for C{0.0.0.0} or C{::}, RFC 2543-style hold."""
        ip = _ip(self.address)
        return ip is not None and ip.is_unspecified

    def set_address(self, address: str) -> None:
        """Point at another IP address, taking its address type.

        Multicast TTL and count go: a relay address is unicast. Nothing
        changes if C{address} is the same address, however spelled.
        """
        if _same_address(address, self.address) and self.addrtype == _addrtype(address):
            return
        self.addrtype = _addrtype(address)
        self.address = address
        self.ttl = self.count = None

    def copy(self) -> Connection:
        """An equal connection that renders the same text."""
        other = Connection(self.address, self.addrtype, self.ttl, self.count, self.nettype)
        other._raw, other._parsed = self._raw, self._parsed
        return other

    def _fields(self) -> tuple:
        return (self.nettype, self.addrtype, self.address, self.ttl, self.count)

    def _format(self) -> str:
        suffix = "".join(f"/{n}" for n in (self.ttl, self.count) if n is not None)
        return f"{self.nettype} {self.addrtype} {self.address}{suffix}"


class _Rtcp(_Field):
    """C{a=rtcp:port [IN IP4|IP6 address]} (RFC 3605)."""

    __slots__ = ("port", "connection")
    _type = "a"

    def __init__(self, port: int, connection: Optional[Connection] = None) -> None:
        super().__init__()
        self.port = port
        self.connection = connection

    @classmethod
    def parse(cls, value: str) -> _Rtcp:
        """Parse the text after C{a=rtcp:}.

        @raise SDPError: for a bad port or address.
        """
        fields = _split(value)
        if not fields:
            raise SDPError("a=rtcp: has no port")
        port = _parse_port(fields[0], "a=rtcp port")
        if len(fields) not in (1, 4):
            raise SDPError(f"a=rtcp: needs 'port [IN IP4|IP6 <address>]', got {value!r}")
        connection = Connection.parse(" ".join(fields[1:])) if len(fields) == 4 else None
        rtcp = cls(port, connection)
        rtcp._remember("rtcp:" + value)
        return rtcp

    def _fields(self) -> tuple:
        return (self.port, None if self.connection is None else self.connection._fields())

    def _format(self) -> str:
        if self.connection is None:
            return f"rtcp:{self.port}"
        return f"rtcp:{self.port} {self.connection}"


_Line = Union[str, Origin, Connection, _Rtcp]


def _render(line: _Line) -> str:
    return line if isinstance(line, str) else line.line


def _line_type(line: _Line) -> str:
    return line[0] if isinstance(line, str) else line._type


def _find(lines: List[_Line], kind: type) -> Optional[int]:
    for i, line in enumerate(lines):
        if isinstance(line, kind):
            return i
    return None


def _set_connection(lines: List[_Line], connection: Optional[Connection],
                    goes_before: "Callable[[_Line], bool]") -> None:
    """Replace, remove or insert the C{c=} line of a section: a new one goes
    before the first line for which C{goes_before} is true."""
    i = _find(lines, Connection)
    if connection is None:
        if i is not None:
            del lines[i]
    elif i is not None:
        lines[i] = connection
    else:
        pos = next((n for n, line in enumerate(lines) if goes_before(line)), len(lines))
        lines.insert(pos, connection)


def _attributes(lines: List[_Line]) -> List[str]:
    return [_render(line)[2:] for line in lines if _line_type(line) == "a"]


def _attribute(lines: List[_Line], name: str) -> Optional[str]:
    for value in _attributes(lines):
        key, colon, rest = value.partition(":")
        if key == name:
            return rest if colon else ""
    return None


def _direction(lines: List[_Line]) -> Optional[str]:
    for value in _attributes(lines):
        if value in DIRECTIONS:
            return value
    return None


# -- media -----------------------------------------------------------------


class Media:
    """One media description: the C{m=} line and the lines up to the next.

    The C{m=} fields are plain attributes; C{connection} reads and writes
    the media-level C{c=} line in place.

    @ivar kind: C{audio}, C{video}, ...
    @ivar port: the transport port, 0 for a rejected stream.
    @ivar port_count: the C{/count} of C{m=audio 49170/2 ...}, 1 if absent.
    @ivar proto: C{RTP/AVP}, C{RTP/SAVP}, C{udp}, ...
    @ivar formats: the format (payload type) list.
    """

    __slots__ = ("kind", "port", "port_count", "proto", "formats", "_lines", "_session", "_raw", "_parsed")

    def __init__(self, kind: str, port: int, proto: str, formats: Sequence[str], port_count: int = 1) -> None:
        self.kind = kind
        self.port = port
        self.port_count = port_count
        self.proto = proto
        self.formats = list(formats)
        self._lines: List[_Line] = []
        self._session: Optional[SessionDescription] = None
        self._raw: Optional[str] = None
        self._parsed: Optional[tuple] = None

    @classmethod
    def _parse(cls, value: str) -> Media:
        fields = _split(value)
        if len(fields) < 3:
            raise SDPError(f"m= needs 'media port[/count] proto fmt...', got {value!r}")
        kind, port_text, proto = fields[:3]
        if not _TOKEN_RE.match(kind) or not _PROTO_RE.match(proto):
            raise SDPError(f"malformed m= line {value!r}")
        port_part, slash, count_part = port_text.partition("/")
        port = _parse_port(port_part, "m= port")
        count = 1
        if slash:
            if not _PORT_RE.match(count_part) or int(count_part) == 0:
                raise SDPError(f"m= port count {count_part!r} is not a positive number")
            count = int(count_part)
        media = cls(kind, port, proto, fields[3:], count)
        media._raw = value
        media._parsed = media._fields()
        return media

    def _fields(self) -> tuple:
        return (self.kind, self.port, self.port_count, self.proto, tuple(self.formats))

    def _mline(self) -> str:
        if self._raw is not None and self._fields() == self._parsed:
            return "m=" + self._raw
        port = f"{self.port}/{self.port_count}" if self.port_count > 1 else str(self.port)
        return " ".join(["m=" + self.kind, port, self.proto, *self.formats])

    @property
    def lines(self) -> List[str]:
        """The lines of this media description as they will be sent."""
        return [self._mline()] + [_render(line) for line in self._lines]

    # -- connection ----------------------------------------------------
    @property
    def connection(self) -> Optional[Connection]:
        """The media-level C{c=}, or None (then the session-level one applies)."""
        i = _find(self._lines, Connection)
        return None if i is None else self._lines[i]  # type: ignore[return-value]

    @connection.setter
    def connection(self, connection: Optional[Connection]) -> None:
        # RFC 4566 5: m=, i=, then c=
        _set_connection(self._lines, connection, lambda line: _line_type(line) != "i")

    def _effective_connection(self) -> Optional[Connection]:
        own = self.connection
        if own is None and self._session is not None:
            return self._session.connection
        return own

    @property
    def address(self) -> Optional[str]:
        """Where this stream's media goes: media C{c=}, else session C{c=}."""
        conn = self._effective_connection()
        return None if conn is None else conn.address

    @property
    def address_family(self) -> Optional[str]:
        """C{IP4} or C{IP6} for the effective address, None without one."""
        conn = self._effective_connection()
        return None if conn is None else conn.addrtype

    # -- transport -----------------------------------------------------
    @property
    def is_rtp(self) -> bool:
        """True for C{RTP/*} protocols, which use a second port for RTCP."""
        return self.proto.upper().startswith("RTP/")

    @property
    def port_range(self) -> int:
        """How many consecutive ports a relay must open for this stream:
        the port count, doubled for RTP (RTP and RTCP, RFC 3550 11)."""
        return self.port_count * 2 if self.is_rtp else self.port_count

    def _rtcp_attr(self) -> Optional[_Rtcp]:
        i = _find(self._lines, _Rtcp)
        return None if i is None else self._lines[i]  # type: ignore[return-value]

    @property
    def rtcp(self) -> Optional[Tuple[int, Optional[str]]]:
        """C{(port, address or None)} from C{a=rtcp:} (RFC 3605), None if absent."""
        rtcp = self._rtcp_attr()
        if rtcp is None:
            return None
        return rtcp.port, (None if rtcp.connection is None else rtcp.connection.address)

    # -- attributes ----------------------------------------------------
    @property
    def attributes(self) -> List[str]:
        """The values of this media's C{a=} lines (text after C{a=}), in order."""
        return _attributes(self._lines)

    def attribute(self, name: str) -> Optional[str]:
        """The value of the first C{a=name:value}; C{""} for a flag
        C{a=name}; None if absent. Names are case-sensitive."""
        return _attribute(self._lines, name)

    @property
    def direction(self) -> str:
        """C{sendrecv}, C{sendonly}, C{recvonly} or C{inactive}: media
        attribute, else session attribute, else C{sendrecv} (RFC 3264 5.1)."""
        direction = _direction(self._lines)
        if direction is None and self._session is not None:
            direction = _direction(self._session._lines)
        return direction or "sendrecv"

    @property
    def is_held_or_inactive(self) -> bool:
        """True if no media flows: port 0, an unspecified address, or
        C{a=inactive}. A relay has nothing to forward for such a stream."""
        conn = self._effective_connection()
        return (
            self.port == 0
            or (conn is not None and conn.is_unspecified)
            or self.direction == "inactive"
        )

    def __repr__(self) -> str:
        return f"<Media {self._mline()!r} address={self.address!r}>"


class MediaTarget(NamedTuple):
    """Where a relay wants one media stream sent instead.

    @ivar rtcp_port: for C{a=rtcp:}; None means C{port + 1}.
    """

    address: str
    port: int
    rtcp_port: Optional[int] = None


def _check_target(target: MediaTarget, media: Media) -> None:
    if not isinstance(target, MediaTarget):
        raise TypeError(f"expected a MediaTarget or None, got {target!r}")
    if not isinstance(target.address, str):
        raise ValueError(f"target address {target.address!r} is not a string")
    _addrtype(target.address)  # raises ValueError for a host name
    ports = [("port", target.port)]
    if target.rtcp_port is not None:
        ports.append(("rtcp_port", target.rtcp_port))
    for name, port in ports:
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            raise ValueError(f"target {name} {port!r} is not a port (1-65535)")
    if target.rtcp_port is None and target.port == 65535 and media._rtcp_attr() is not None:
        raise ValueError("target port 65535 leaves no port + 1 for a=rtcp: give rtcp_port")


# -- session ---------------------------------------------------------------


class SessionDescription:
    """A parsed SDP: the session-level lines and a list of L{Media}.

    C{origin} and C{connection} read and write the C{o=} and session-level
    C{c=} lines in place; C{bytes(sdp)} renders the whole description.

    @ivar version: the C{v=} version, always 0.
    @ivar media: the media descriptions, in C{m=} order.
    """

    __slots__ = ("version", "media", "_lines", "_version_raw", "_trailer")

    def __init__(
        self, origin: Origin, connection: Optional[Connection] = None, session_name: str = "-"
    ) -> None:
        """A minimal description: C{v=0}, C{o=}, C{s=}, C{c=} if given, C{t=0 0}."""
        self.version = 0
        self.media: List[Media] = []
        self._version_raw = "0"
        self._trailer = 0
        self._lines: List[_Line] = [origin, "s=" + session_name]
        if connection is not None:
            self._lines.append(connection)
        self._lines.append("t=0 0")

    # -- fields ----------------------------------------------------------
    @property
    def origin(self) -> Origin:
        """The C{o=} line."""
        i = _find(self._lines, Origin)
        assert i is not None, "an SDP always has an o= line"
        return self._lines[i]  # type: ignore[return-value]

    @origin.setter
    def origin(self, origin: Origin) -> None:
        i = _find(self._lines, Origin)
        if i is None:
            self._lines.insert(0, origin)
        else:
            self._lines[i] = origin

    @property
    def connection(self) -> Optional[Connection]:
        """The session-level C{c=}, the default for every media without its own."""
        i = _find(self._lines, Connection)
        return None if i is None else self._lines[i]  # type: ignore[return-value]

    @connection.setter
    def connection(self, connection: Optional[Connection]) -> None:
        # RFC 4566 5: c= comes before b=, t=, r=, z=, k=, a=
        _set_connection(self._lines, connection, lambda line: _line_type(line) in _AFTER_SESSION_C)

    @property
    def session_lines(self) -> List[str]:
        """The session-level lines (C{v=} up to the first C{m=}) as they will be sent."""
        version = self._version_raw if self.version == 0 else str(self.version)
        return ["v=" + version] + [_render(line) for line in self._lines]

    @property
    def lines(self) -> List[str]:
        """Every line as it will be sent, without line ends."""
        lines = self.session_lines
        for media in self.media:
            lines.extend(media.lines)
        return lines

    @property
    def attributes(self) -> List[str]:
        """The values of the session-level C{a=} lines, in order."""
        return _attributes(self._lines)

    def attribute(self, name: str) -> Optional[str]:
        """Like L{Media.attribute}, for the session level."""
        return _attribute(self._lines, name)

    def __bytes__(self) -> bytes:
        text = "\r\n".join(self.lines) + "\r\n" * (1 + self._trailer)
        return text.encode(_ENC, _ERRORS)

    def __repr__(self) -> str:
        return f"<SessionDescription {self.origin.line!r} media={len(self.media)}>"

    # -- changing --------------------------------------------------------
    def bump_version(self) -> None:
        """Raise the C{o=} session version by one: a peer ignores a changed
        SDP that keeps its old version (RFC 3264 8)."""
        self.origin.session_version += 1

    def replace_media_addresses(self, targets: Sequence[Optional[MediaTarget]]) -> bool:
        """Send media to a relay: rewrite each stream's port and address.

        C{targets} has one entry per C{m=} line; None leaves that stream
        alone. Also left alone: a rejected stream (port 0) and a held one
        (address C{0.0.0.0} or C{::}), which stays held -- Net::SIP
        advertises port 0 there, rejecting what was only held.

        The session-level C{c=} is rewritten when every non-rejected stream
        relying on it maps to one address, else removed, and every stream
        that relied on it gets its own C{c=} (RFC 4566 5.7 wants one or the
        other). A rejected stream has no address of meaning (RFC 3264 6) and
        follows the session C{c=}, or keeps a copy of the old one if that
        goes. A C{c=} pointed at the relay loses any multicast TTL and count.
        A stream that is only C{a=inactive} (port and address intact) is
        still moved, and keeps its direction attribute.
        C{a=rtcp:} is updated when present, never added. The C{o=} version
        goes up once if anything changed; the C{o=} address stays.

        @return: True if the description changed.
        @raise ValueError: if C{targets} does not match the media list, or a
            target has a non-IP address or a bad port; nothing is changed then.
        @raise TypeError: for a target that is not a L{MediaTarget}.
        """
        targets = list(targets)
        if len(targets) != len(self.media):
            raise ValueError(f"{len(targets)} targets for {len(self.media)} media")
        for media, target in zip(self.media, targets):
            if target is not None:
                _check_target(target, media)

        before = self.lines
        session_conn = self.connection
        voters: List[Tuple[Media, Optional[str]]] = []  # (media, new address or None to keep)
        rejected: List[Media] = []  # port 0, relying on the session c=
        for media, target in zip(self.media, targets):
            own = media.connection
            effective = own if own is not None else session_conn
            move = (
                target is not None
                and media.port != 0
                and not (effective is not None and effective.is_unspecified)
            )
            if move:
                assert target is not None
                media.port = target.port
                for rtcp in media._lines:
                    if isinstance(rtcp, _Rtcp):
                        rtcp.port = target.rtcp_port if target.rtcp_port is not None else target.port + 1
                        if rtcp.connection is not None:
                            rtcp.connection.set_address(target.address)
                if own is not None:
                    own.set_address(target.address)
            if own is None:
                if media.port == 0:
                    rejected.append(media)
                else:
                    voters.append((media, target.address if move else None))  # type: ignore[union-attr]

        if session_conn is None:
            # Not valid RFC 4566, but give a moved stream an address anyway.
            for media, address in voters:
                if address is not None:
                    media.connection = Connection(address)
        elif voters:
            old = session_conn.address
            keys = {_address_key(address if address is not None else old) for _, address in voters}
            if len(keys) == 1:
                address = next((a for _, a in voters if a is not None), None)
                if address is not None:
                    session_conn.set_address(address)
            else:
                self.connection = None
                for media, address in voters:
                    media.connection = Connection(address) if address is not None else session_conn.copy()
                for media in rejected:
                    media.connection = session_conn.copy()

        if self.lines == before:
            return False
        self.bump_version()
        return True


# -- parsing ---------------------------------------------------------------


def parse_sdp(data: Union[bytes, str]) -> SessionDescription:
    """Parse an SDP body (the bytes of an C{application/sdp} payload).

    @raise SDPError: for anything this module refuses; see the module
        docstring for what is accepted.
    """
    if isinstance(data, (bytes, bytearray, memoryview)):
        text = bytes(data).decode(_ENC, _ERRORS)
    elif isinstance(data, str):
        text = data
    else:
        raise TypeError(f"SDP must be bytes or str, not {type(data).__name__}")
    if not text:
        raise SDPError("empty SDP")
    raw_lines = text.split("\n")
    if raw_lines[-1] == "":
        raw_lines.pop()  # the final line end
    lines = [line[:-1] if line.endswith("\r") else line for line in raw_lines]
    trailer = 0
    while lines and lines[-1] == "":
        lines.pop()
        trailer += 1
    if not lines:
        raise SDPError("empty SDP")

    first = lines[0]
    if "\r" in first or "\0" in first:
        raise SDPError("bare CR or NUL inside a line", 1)
    if not first.startswith("v="):
        raise SDPError(f"an SDP must start with v=, not {first[:40]!r}", 1)
    if first[2:].strip(" \t") != "0":
        raise SDPError(f"unsupported SDP version {first[2:40]!r} (only v=0)", 1)

    sdp = SessionDescription.__new__(SessionDescription)
    sdp.version = 0
    sdp.media = []
    sdp._version_raw = first[2:]
    sdp._trailer = trailer
    sdp._lines = []
    section = sdp._lines
    section_name = "the session part"
    have_origin = have_connection = False
    media: Optional[Media] = None

    for number, line in enumerate(lines[1:], start=2):
        try:
            if "\r" in line or "\0" in line:
                raise SDPError("bare CR or NUL inside a line")
            if not _TYPE_RE.match(line):
                if not line:
                    raise SDPError("empty line")
                raise SDPError(f"not a 'x=value' line: {line[:40]!r}")
            kind, value = line[0], line[2:]
            if kind == "v":
                raise SDPError("v= may only be the first line")
            elif kind == "m":
                if not have_origin:
                    raise SDPError("m= before o= (o= is required in the session part)")
                media = Media._parse(value)
                media._session = sdp
                sdp.media.append(media)
                section = media._lines
                section_name = f"media {len(sdp.media)}"
                have_connection = False
            elif kind == "o":
                if media is not None:
                    raise SDPError("o= inside a media description")
                if have_origin:
                    raise SDPError("more than one o= line")
                section.append(Origin.parse(value))
                have_origin = True
            elif kind == "c":
                if have_connection:
                    raise SDPError(f"more than one c= line in {section_name}")
                section.append(Connection.parse(value))
                have_connection = True
            elif kind == "a" and media is not None and value.startswith("rtcp:"):
                section.append(_Rtcp.parse(value[5:]))
            else:
                section.append(line)
        except SDPError as err:
            if err.line is None:
                raise SDPError(err.reason, number) from None
            raise
    if not have_origin:
        raise SDPError("no o= line (RFC 4566 5.2)")
    return sdp
