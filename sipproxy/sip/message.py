"""SIP messages: read, change and serialise (RFC 3261 7, 20, 25).

Pure data, no I/O. A message keeps the raw text of every header line and
decodes a value only when something reads it, so a proxy that touches the
start line, the top Via, Route, Max-Forwards and Contact never decodes the
rest, and forwards every header it did not change byte for byte.

This module is the readable API: L{Message}, L{Request}, L{Response},
L{Via} and their methods. Turning bytes into them is the job of
L{sipproxy.sip.fastparse} (the parser's fast path and the caches it owns);
its C{parse}, C{parse_via} and C{canonical_name} are re-exported here.
The regular expressions are in L{sipproxy.sip.grammar}, beside the ABNF.
"""
from __future__ import annotations

from operator import attrgetter
from typing import Any, Iterable, Iterator, Optional

from sipproxy.sip.grammar import FOLD_RE
from sipproxy.sip.name_addrs import READINGS, tag_of, tagged  # tag_of re-exported: message.tag_of is public
from sipproxy.sip.uri import (
    URI,
    NameAddr,
    URIError,
    format_host_port,
    format_params,
    parse_name_addr,
)

__all__ = [
    "ParseError",
    "Via",
    "Message",
    "Request",
    "Response",
    "parse",
    "parse_via",
    "our_via",
    "canonical_name",
    "REASONS",
    "MAGIC_COOKIE",
]

MAGIC_COOKIE = "z9hG4bK"

#: Compact header forms (RFC 3261 7.3.3 and the IANA registry).
COMPACT_FORMS = {
    "i": "call-id", "m": "contact", "e": "content-encoding", "l": "content-length",
    "c": "content-type", "f": "from", "s": "subject", "k": "supported", "t": "to",
    "v": "via", "o": "event", "u": "allow-events", "r": "refer-to", "b": "referred-by",
    "x": "session-expires", "a": "accept-contact", "j": "reject-contact",
    "d": "request-disposition", "y": "identity",
}

#: Headers whose value is a comma-separated list (RFC 3261 7.3.1); every
#: other header is kept whole (From, To and the auth headers among them).
LIST_HEADERS = frozenset(
    """via contact record-route route path service-route allow supported
    unsupported require proxy-require accept accept-encoding accept-language
    content-encoding content-language alert-info call-info error-info
    warning in-reply-to allow-events""".split()
)

#: Headers that may appear once; duplicates must carry the same value.
SINGLETONS = ("call-id", "cseq", "from", "to", "content-length", "max-forwards", "content-type")

REASONS = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 200: "OK", 202: "Accepted", 300: "Multiple Choices",
    301: "Moved Permanently", 302: "Moved Temporarily", 305: "Use Proxy",
    380: "Alternative Service", 400: "Bad Request", 401: "Unauthorized",
    402: "Payment Required", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 406: "Not Acceptable",
    407: "Proxy Authentication Required", 408: "Request Timeout", 410: "Gone",
    413: "Request Entity Too Large", 414: "Request-URI Too Long",
    415: "Unsupported Media Type", 416: "Unsupported URI Scheme",
    420: "Bad Extension", 421: "Extension Required", 423: "Interval Too Brief",
    480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist",
    482: "Loop Detected", 483: "Too Many Hops", 484: "Address Incomplete",
    485: "Ambiguous", 486: "Busy Here", 487: "Request Terminated",
    488: "Not Acceptable Here", 491: "Request Pending", 493: "Undecipherable",
    500: "Server Internal Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Server Time-out", 505: "Version Not Supported",
    513: "Message Too Large", 600: "Busy Everywhere", 603: "Decline",
    604: "Does Not Exist Anywhere", 606: "Not Acceptable",
}

_ENC = "utf-8"
_ERRORS = "surrogateescape"


class ParseError(ValueError):
    """A message that must be refused.

    @ivar reason: human-readable cause, fit for a log line and a reason
        phrase.
    @ivar status: the response code a server answers with (400, or 505 for
        an unknown SIP version).
    @ivar message: the part that could be parsed (a L{Request} or
        L{Response} whose headers were split), so an edge can still address
        a 400; None when not even that was possible.
    """

    def __init__(self, reason: str, status: int = 400, message: Optional["Message"] = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.message = message


#: The values of one header line: a tuple of strings, which the garbage
#: collector stops tracking (a list it would traverse in every collection
#: for as long as the message lives: a transaction keeps its messages for
#: the 32 s of its linger timer).
Values = tuple[str, ...]


def split_list(value: str) -> list[str]:
    """Split a list header value on commas outside quotes and C{<>}."""
    if '"' not in value and "<" not in value:
        return [v.strip() for v in value.split(",")]
    items: list[str] = []
    start = 0
    quoted = False
    angle = False
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if quoted:
            if ch == "\\":
                i += 1
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "<":
            angle = True
        elif ch == ">":
            angle = False
        elif ch == "," and not angle:
            items.append(value[start:i].strip())
            start = i + 1
        i += 1
    items.append(value[start:].strip())
    return items


def _decode_line(name: str, raw: str) -> Values:
    """The values of one raw header line: unfolded, stripped, and split
    on commas for list headers (empty list elements dropped)."""
    text = raw.partition(":")[2]
    if "\n" in text:
        text = FOLD_RE.sub(" ", text)
    return _split_value(name, text.strip())


def _split_value(name: str, value: str) -> Values:
    """The values of a stripped header value: one, or for a list header
    its comma-separated elements (none for an empty one)."""
    if name in LIST_HEADERS:
        if "," not in value:
            return (value,) if value else ()
        return tuple(v for v in split_list(value) if v)
    return (value,)


def _label_of(raw: str) -> str:
    return raw.partition(":")[0].strip()


# -- Via -------------------------------------------------------------------
class Via:
    """One Via value (RFC 3261 20.42): protocol, transport, sent-by and
    parameters in their order.

    A parsed Via splits its parameters only when they are first read: the
    parser has already checked them, and most Vias a proxy passes on are
    never looked into."""

    __slots__ = ("protocol", "transport", "host", "port", "_params", "_ptext", "_text")

    def __init__(
        self,
        transport: str,
        host: str,
        port: Optional[int] = None,
        params: Optional[list[tuple[str, Optional[str]]]] = None,
        protocol: str = "SIP/2.0",
    ) -> None:
        self.protocol = protocol
        self.transport = transport.upper()
        self.host = host
        self.port = port
        self._params = params if params is not None else []
        self._ptext = ""
        self._text: Optional[str] = None

    @property
    def params(self) -> list[tuple[str, Optional[str]]]:
        """(name, value) of each parameter, value None for a flag."""
        params = self._params
        if params is None:
            params = self._params = _split_via_params(self._ptext)
        return params

    @params.setter
    def params(self, params: list[tuple[str, Optional[str]]]) -> None:
        self._params = params

    def param(self, name: str) -> Optional[str]:
        """Value of a parameter (any case), C{""} for a flag, None if
        absent."""
        name = name.lower()
        for n, v in self.params:
            if n == name or n.lower() == name:
                return "" if v is None else v
        return None

    def set_param(self, name: str, value: Optional[str]) -> None:
        name = name.lower()
        params = self.params
        for i, (n, _) in enumerate(params):
            if n.lower() == name:
                params[i] = (n, value)
                break
        else:
            params.append((name, value))
        self._text = None

    @property
    def branch(self) -> Optional[str]:
        text = self._ptext
        if text.startswith(";branch=") and self._params is None:
            # where branch usually is, first: read without splitting
            return text[8:].partition(";")[0]
        return self.param("branch")

    def hop_params(self) -> tuple[Optional[str], Optional[str], Optional[str]]:
        """C{maddr}, C{received} and C{rport}: the first value of each
        (C{""} for a flag), None when absent; what a response's next hop
        is read from (RFC 3261 18.2.2, RFC 3581). A parsed Via whose
        parameter text names none of them (most carry a branch only) is
        answered without splitting its parameters."""
        if self._params is None:
            lowered = self._ptext.lower()
            if "maddr" not in lowered and "received" not in lowered and "rport" not in lowered:
                return _NO_HOP_PARAMS
        maddr = received = rport = None
        for name, value in self.params:  # one pass: these are rare beside branch
            name = _HOP_PARAMS.get(name) or _HOP_PARAMS.get(name.lower())
            if name is None:
                continue
            value = value or ""
            if name == "maddr":
                maddr = maddr if maddr is not None else value
            elif name == "received":
                received = received if received is not None else value
            elif rport is None:
                rport = value
        return maddr, received, rport

    @property
    def sent_by(self) -> str:
        return format_host_port(self.host, self.port)

    @property
    def rfc3261_branch(self) -> bool:
        """True when the branch carries the magic cookie and more."""
        branch = self.branch
        return bool(branch) and branch.startswith(MAGIC_COOKIE) and len(branch) > len(MAGIC_COOKIE)

    def __str__(self) -> str:
        if self._text is None:
            self._text = f"{self.protocol}/{self.transport} {self.sent_by}{format_params(self.params)}"
        return self._text

    def __repr__(self) -> str:
        return f"Via({str(self)!r})"



_HOP_PARAMS = {"maddr": "maddr", "received": "received", "rport": "rport"}
_NO_HOP_PARAMS: tuple[None, None, None] = (None, None, None)


def _split_via_params(text: str) -> list[tuple[str, Optional[str]]]:
    """The parameters of C{;name=value;flag}, already checked by the
    parser (L{sipproxy.sip.grammar.SIMPLE_VIA_RE})."""
    params: list[tuple[str, Optional[str]]] = []
    if not text:
        return params
    for item in text[1:].split(";"):
        name, eq, value = item.partition("=")
        params.append((name, value if eq else None))
    return params

#: C{blank(Request)}: an instance whose slots the caller fills, the one way
#: past C{__init__}. For the parser (L{sipproxy.sip.fastparse}), which has
#: checked the parts already, and for C{copy()}: C{__init__} would render
#: and validate again. A C function, not a wrapper: a Python call costs
#: ~1.5k instructions, and the parser builds two objects a message.
blank = object.__new__


# -- messages ----------------------------------------------------------------
class Message:
    """What requests and responses share: headers and body.

    Headers live in three parallel lists, one entry per header line: the
    canonical name, the raw line (text decoded once for the whole header
    block, with C{surrogateescape} so any octet comes back unchanged), and
    the values (None until read). Header names are case-insensitive and compact forms count as
    their long names. List headers are read value by value (a line
    C{Via: a, b} gives two values).

    @ivar names: the canonical name (lower-case long form) of each header
        line, in order.
    @ivar lines: each header line as text (name, colon, value: as received
        or rendered), in the same order.

    Read C{names} and C{lines}, never change them (change headers through
    the methods): they are attributes, not methods, because the proxy's
    hot path reads them for every message and a Python call costs more
    than the test itself (C{"route" in message.names}).
    """

    __slots__ = ("names", "lines", "_values", "body", "_via", "_start")

    def __init__(self) -> None:
        self.names: list[str] = []
        self.lines: list[str] = []
        self._values: list[Optional[Values]] = []
        self.body = b""
        self._via: Optional[Via] = None
        self._start: Optional[str] = None  # the start line as sent, None to render

    # reading ------------------------------------------------------------
    def _decoded(self, i: int) -> Values:
        values = self._values[i]
        if values is None:
            values = self._values[i] = _decode_line(self.names[i], self.lines[i])
        return values

    def _positions(self, name: str) -> list[int]:
        names = self.names
        if name not in names:
            return []
        if names.count(name) == 1:
            return [names.index(name)]
        return [i for i, n in enumerate(names) if n == name]

    def get(self, name: str) -> Optional[str]:
        """The first value of a header, or None."""
        names = self.names
        if name not in names:
            name = canonical_name(name)
            if name not in names:
                return None
        i = names.index(name)
        values = self._values[i]
        if values is None:
            values = self._values[i] = _decode_line(name, self.lines[i])
        if values:
            return values[0]
        for j in self._positions(name):
            values = self._decoded(j)
            if values:
                return values[0]
        return None

    def get_all(self, name: str) -> list[str]:
        """Every value of a header, in order (list headers split)."""
        name = canonical_name(name)
        out: list[str] = []
        for i in self._positions(name):
            out.extend(self._decoded(i))
        return out

    def count(self, name: str) -> int:
        """How many values a header has."""
        return len(self.get_all(name))

    def __contains__(self, name: str) -> bool:
        return canonical_name(name) in self.names

    def raw_header(self, name: str) -> Optional[str]:
        """The first line of a header as text (name, colon and value, as
        received or rendered), or None."""
        names = self.names
        if name not in names:
            name = canonical_name(name)
            if name not in names:
                return None
        return self.lines[names.index(name)]

    def raw_headers(self, name: str) -> list[str]:
        """Every line of a header as text, in order: for a cheap substring
        test before any value is decoded."""
        names = self.names
        if name not in names:
            name = canonical_name(name)
            if name not in names:
                return []
        if names.count(name) == 1:
            return [self.lines[names.index(name)]]
        return [raw for n, raw in zip(names, self.lines) if n == name]

    def header_lines(self) -> list[tuple[str, str]]:
        """(canonical name, line as text) of every header line, in order."""
        return list(zip(self.names, self.lines))

    def header_names(self) -> list[str]:
        """Canonical names of the header lines, in order."""
        return list(self.names)

    def items(self) -> Iterator[tuple[str, str]]:
        """(canonical name, value) for every value of every header."""
        for i, name in enumerate(self.names):
            for v in self._decoded(i):
                yield name, v

    def raw_lines(self, name: str) -> list[bytes]:
        """The raw header lines of one header, as received or rendered."""
        return [self.lines[i].encode(_ENC, _ERRORS) for i in self._positions(canonical_name(name))]

    @property
    def call_id(self) -> str:
        return self.get("call-id") or ""

    @property
    def cseq(self) -> tuple[int, str]:
        """(number, method) of CSeq."""
        text = self.get("cseq") or "0 "
        found = known_cseq(text)
        return found if found is not None else read_cseq(text)

    @property
    def cseq_method(self) -> str:
        return self.cseq[1]

    @property
    def tid(self) -> str:
        """Call-ID and CSeq number: what ACK and CANCEL share with their INVITE."""
        return f"{self.call_id} {self.cseq[0]}"

    def top_via(self) -> Optional[Via]:
        """The topmost Via, parsed (cached until the Vias change)."""
        via = self._via
        if via is None:
            value = self.get("via")
            if value is None:
                return None
            via = self._via = parse_via(value)
        return via

    def name_addr(self, name: str) -> Optional[NameAddr]:
        """The first value of From/To/Contact/... as a L{NameAddr}."""
        value = self.get(name)
        return parse_name_addr(value) if value is not None else None

    @property
    def from_tag(self) -> Optional[str]:
        value = self.get("from")
        if value is None:
            return None
        found = known_reading(value)  # the tag_of() of a value read before, without two calls
        return found.tag if found is not None else tag_of(value)

    @property
    def to_tag(self) -> Optional[str]:
        value = self.get("to")
        if value is None:
            return None
        found = known_reading(value)
        return found.tag if found is not None else tag_of(value)

    # changing -------------------------------------------------------------
    def _put(self, position: int, name: str, value: str) -> None:
        self.names.insert(position, name)
        self.lines.insert(position, f"{label(name)}: {value}")
        self._values.insert(position, (value,))
        if name == "via":
            self._via = None

    def _drop(self, position: int) -> None:
        if self.names[position] == "via":
            self._via = None
        del self.names[position]
        del self.lines[position]
        del self._values[position]

    def _rerender(self, i: int, values: Values) -> None:
        self._values[i] = values
        label = self.lines[i].partition(":")[0].strip()
        self.lines[i] = f"{label}: {', '.join(values)}"
        if self.names[i] == "via":
            self._via = None

    def insert_line(self, name: str, line: str, value: str, via: Optional[Via] = None) -> None:
        """L{insert} with the header line already rendered (C{name} in its
        canonical form): for lines a proxy adds to every message. A new
        top Via may come with its parsed form (C{via}), else it is parsed
        when read."""
        self.names.insert(0, name)
        self.lines.insert(0, line)
        self._values.insert(0, (value,))
        if name == "via":
            self._via = via

    def _add_all(self, headers: Iterable[tuple[str, str]]) -> None:
        """L{add} for each (name, value), in order: how a built message
        gets its headers, without two calls a line."""
        names, lines, values = self.names, self.lines, self._values
        for name, value in headers:
            found = known_prefix(name)
            name, prefix = found if found is not None else line_prefix(name)
            names.append(name)
            lines.append(prefix + value)
            values.append((value,))
        self._via = None

    def insert(self, name: str, value: str) -> None:
        """Put a header value above every other line (a new top Via or
        Record-Route)."""
        self._put(0, canonical_name(name), value)

    def add(self, name: str, value: str) -> None:
        """Append a header line at the end."""
        self._put(len(self.names), canonical_name(name), value)

    def remove(self, name: str) -> None:
        """Remove every line of a header."""
        for i in reversed(self._positions(canonical_name(name))):
            self._drop(i)

    def set(self, name: str, value: str) -> None:
        """Replace every value of a header with one value, keeping the
        position of its first line (and the spelling of its name)."""
        name = canonical_name(name)
        names = self.names
        if name not in names:  # a new line (a built message's Content-Length): no search
            self._put(len(names), name, value)
            return
        positions = self._positions(name)
        for i in reversed(positions[1:]):
            self._drop(i)
        self._rerender(positions[0], (value,))

    def pop_first(self, name: str) -> Optional[str]:
        """Remove and return the first value of a (list) header."""
        name = canonical_name(name)
        for i in self._positions(name):
            values = self._decoded(i)
            if not values:
                continue
            if len(values) > 1:
                self._rerender(i, values[1:])
            else:
                self._drop(i)
            return values[0]
        return None

    def replace_first(self, name: str, value: str) -> None:
        """Replace the first value of a (list) header, keeping the others."""
        names = self.names
        if name not in names:
            name = canonical_name(name)
        if name in names and name not in LIST_HEADERS:  # a one-value line: just re-render it
            self._rerender(names.index(name), (value,))
            return
        for i in self._positions(name):
            values = self._decoded(i)
            if values:
                self._rerender(i, (value, *values[1:]))
                return
        self._put(0, name, value)

    def set_all(self, name: str, values: Iterable[str]) -> None:
        """Replace a header by one line per value (an empty list removes it)."""
        name = canonical_name(name)
        positions = self._positions(name)
        where = positions[0] if positions else len(self.names)
        for i in reversed(positions):
            self._drop(i)
        for offset, value in enumerate(values):
            self._put(where + offset, name, value)

    def set_top_via(self, via: Via) -> None:
        """Write back a changed top Via (C{received}, C{rport})."""
        self.replace_first("via", str(via))
        self._via = via

    def _append_length(self, body: bytes) -> None:
        """C{set_body(body)} for a message being built: the Content-Length
        line appended without a search, unless its headers had one."""
        names = self.names
        if "content-length" in names:
            self.set_body(body)
            return
        self.body = body
        length = str(len(body))
        names.append("content-length")
        self.lines.append("Content-Length: " + length)
        self._values.append((length,))

    def set_body(self, body: bytes, content_type: Optional[str] = None) -> None:
        """Replace the body; Content-Length follows, Content-Type if given."""
        self.body = body
        self.set("content-length", str(len(body)))
        if content_type is not None:
            self.set("content-type", content_type)

    # serialising -------------------------------------------------------------
    def _start_line(self) -> str:
        raise NotImplementedError

    def __bytes__(self) -> bytes:
        names = self.names
        body = self.body
        try:
            i = names.index("content-length")
        except ValueError:
            self.add("content-length", str(len(body)))
        else:
            values = self._values[i]
            if values is None:
                values = self._decoded(i)
            if names.count("content-length") > 1 or not values or int(values[0]) != len(body):
                self.set("content-length", str(len(body)))
        head = "\r\n".join([self._start or self._start_line(), *self.lines, "", ""]).encode(_ENC, _ERRORS)
        return head + body if body else head

    def _copy_into(self, other: "Message") -> None:
        other.names = list(self.names)
        other.lines = list(self.lines)
        other._values = list(self._values)  # value tuples are replaced, never mutated
        other.body = self.body
        other._via = None  # Via objects are mutable: the copy parses its own

    # validation ---------------------------------------------------------------
def _start_line_field(slot: str) -> property:
    """A part of the start line (method, code, ...), kept in C{slot};
    setting it re-renders the line that is sent. Read through
    C{attrgetter}, so a read (dozens per call) runs no Python frame."""

    def set_field(message: Any, value: Any) -> None:
        setattr(message, slot, value)
        message._start = None

    return property(attrgetter(slot), set_field)


class Request(Message):
    """A SIP request. Changing C{method}, C{uri} or C{version} changes the
    request line that is sent."""

    __slots__ = ("_method", "_uri", "_version", "_parsed_uri")

    method = _start_line_field("_method")
    version = _start_line_field("_version")

    def __init__(
        self,
        method: str,
        uri: str,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        version: str = "SIP/2.0",
    ) -> None:
        super().__init__()
        self._method = method  # the slots, not the properties: no line rendered yet
        self._uri = str(uri)
        self._version = version
        self._parsed_uri = None
        if headers:
            self._add_all(headers)
        self._append_length(body)

    @property
    def uri(self) -> str:
        """The Request-URI as text."""
        return self._uri

    @uri.setter
    def uri(self, value: str) -> None:
        self._uri = str(value)
        self._start = None
        self._parsed_uri = None

    def parsed_uri(self) -> URI:
        """The Request-URI parsed; raises L{URIError}.

        The result is shared (the Request-URIs of a dialog repeat): read
        it, or change a copy (L{URI.replace}), never change it in place."""
        uri = self._parsed_uri
        if uri is None:
            text = self._uri
            uri = _known_uri(text) or cached_uri(text)
            self._parsed_uri = uri
        return uri

    def _start_line(self) -> str:
        start = self._start
        if start is None:
            start = self._start = f"{self._method} {self._uri} {self._version}"
        return start

    def copy(self) -> "Request":
        """An independent copy."""
        other = blank(Request)
        self._copy_into(other)
        other._method = self._method
        other._uri = self._uri
        other._version = self._version
        other._start = self._start
        other._parsed_uri = self._parsed_uri
        return other

    def create_response(
        self,
        code: int,
        reason: Optional[str] = None,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        to_tag: Optional[str] = None,
        record_route: bool = False,
    ) -> "Response":
        """A response to this request (RFC 3261 8.2.6): the Via lines,
        From, To, Call-ID and CSeq copied as they are (Record-Route too if
        asked), and C{to_tag} added to To when it has none."""
        response = blank(Response)  # the slots filled here: Response() would render and check again
        response._code = code
        response._reason = REASONS.get(code, "Unknown") if reason is None else reason
        response._version = "SIP/2.0"
        response._start = None
        response._via = None
        response.body = b""
        names: list[str] = []
        lines: list[str] = []
        values: list[Optional[Values]] = []
        response.names, response.lines, response._values = names, lines, values
        copied = _RESPONSE_COPIED_RR if record_route else _RESPONSE_COPIED
        for name, line, value in zip(self.names, self.lines, self._values):
            if name in copied:
                names.append(name)
                lines.append(line)
                values.append(value)
        if to_tag and code > 100 and "to" in names:
            to = response.get("to") or ""
            try:
                if tag_of(to) is None:
                    response.set("to", tagged(to, to_tag))
            except URIError:
                pass  # not a name-addr: left as it came
        if headers:
            response._add_all(headers)
        response._append_length(body)
        return response

    def __repr__(self) -> str:
        return f"<Request {self.method} {self._uri}>"


_RESPONSE_COPIED = frozenset(("via", "from", "to", "call-id", "cseq"))
_RESPONSE_COPIED_RR = _RESPONSE_COPIED | {"record-route"}


class Response(Message):
    """A SIP response. Changing C{code}, C{reason} or C{version} changes
    the status line that is sent."""

    __slots__ = ("_code", "_reason", "_version")

    code = _start_line_field("_code")
    reason = _start_line_field("_reason")
    version = _start_line_field("_version")

    def __init__(
        self,
        code: int,
        reason: Optional[str] = None,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        version: str = "SIP/2.0",
    ) -> None:
        super().__init__()
        self._code = code  # the slots, not the properties: no line rendered yet
        self._reason = REASONS.get(code, "Unknown") if reason is None else reason
        self._version = version
        if headers:
            self._add_all(headers)
        if body:
            self.set_body(body)

    @property
    def method(self) -> str:
        """The method of the request this answers (from CSeq)."""
        return self.cseq[1]

    def _start_line(self) -> str:
        start = self._start
        if start is None:
            start = self._start = f"{self._version} {self._code} {self._reason}"
        return start

    def copy(self) -> "Response":
        """An independent copy."""
        other = blank(Response)
        self._copy_into(other)
        other._code = self._code
        other._reason = self._reason
        other._version = self._version
        other._start = self._start
        return other

    def __repr__(self) -> str:
        return f"<Response {self.code} {self.reason}>"


# The parser and the caches of the fast path live in fastparse, which
# builds the classes above: imported last (sipproxy.sip's __init__ loads
# this module first, so either import order works).
from sipproxy.sip.fastparse import (  # noqa: E402
    _known_uri,
    cached_uri,
    canonical_name,
    known_cseq,
    known_prefix,
    label,
    line_prefix,
    our_via,
    parse,
    parse_via,
    read_cseq,
)

known_reading = READINGS.get
