"""SIP messages: parse, read, change and serialise (RFC 3261 7, 20, 25).

Pure data, no I/O. The parser keeps the raw bytes of every header line and
decodes a value only when something reads it, so a proxy that touches the
start line, the top Via, Route, Max-Forwards and Contact never decodes the
rest, and forwards every header it did not change byte for byte.

What is checked at parse time is what a proxy must refuse before acting
(RFC 4475 3.1.2): the start line, the headers that identify the transaction
(Via, From, To, Call-ID, CSeq), the numeric headers and Content-Length.

The parser runs for every datagram, so the usual message takes a short
way: one pass over the header lines looks up names already seen in the
same spelling, the layout of the lines (their names, in order) is
remembered, and one regex match vouches for CSeq, Call-ID, From, To and the
top Via as most messages spell them. What it does not vouch for is checked
header by header, with the same outcome.
"""
from __future__ import annotations

import re
import sys
from typing import Any, Callable, Iterable, Iterator, Optional, Union

from sipproxy.sip.bounded import remember
from sipproxy.sip.uri import (
    URI,
    NameAddr,
    URIError,
    format_host_port,
    format_params,
    parse_name_addr,
    parse_params,
    parse_uri,
)

__all__ = [
    "ParseError",
    "Via",
    "Message",
    "Request",
    "Response",
    "parse",
    "parse_via",
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

_NUMERIC_LIMITS = (
    ("content-length", 2**31 - 1),
    ("max-forwards", 255),
    ("expires", 2**32 - 1),
    ("min-expires", 2**32 - 1),
)
_REQUIRED = ("via", "from", "to", "call-id", "cseq")
_REQUIRED_SET = frozenset(_REQUIRED)

#: How new headers are spelled when we write them.
_CANONICAL_LABELS = {
    "call-id": "Call-ID", "cseq": "CSeq", "www-authenticate": "WWW-Authenticate",
    "mime-version": "MIME-Version", "rack": "RAck", "rseq": "RSeq",
}

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

_TOKEN_RE = re.compile(r"[A-Za-z0-9.!%*_+`'~\-]+\Z")
_CSEQ_RE = re.compile(r"([0-9]+)[ \t\r\n]+([A-Za-z0-9.!%*_+`'~\-]+)\Z")
_CALLID_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]+(?:@[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]+)?\Z")
_QUOTED = r'"[^"\\]*(?:\\.[^"\\]*)*"'  # unrolled: no backtracking per character
#: The shape of a name-addr or addr-spec with params: quotes closed,
#: at most one <URI>, nothing unbalanced (RFC 4475 3.1.2.6).
_NAME_ADDR_SHAPE = re.compile(
    rf'[ \t]*(?:{_QUOTED})?[^"<>]*(?:<[^<>"]*>[^"<>]*(?:{_QUOTED}[^"<>]*)*)?\Z', re.S
)
_FOLD_RE = re.compile(r"[ \t]*\r?\n[ \t]+")
_VIA_RE = re.compile(
    r"[ \t]*([A-Za-z0-9.!%*_+`'~\-]+)[ \t]*/[ \t]*([0-9.]+)[ \t]*/[ \t]*([A-Za-z0-9.!%*_+`'~\-]+)"
    r"[ \t]+(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+)(?:[ \t]*:[ \t]*(\d{1,5}))?[ \t]*(;.*)?\Z",
    re.S,
)
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


# -- header names --------------------------------------------------------
#: Raw spelling of a header name (as it appears before the colon) to its
#: canonical name; bounded so junk names cannot grow it without end.
_NAME_CACHE: dict[str, str] = {}
_NAME_CACHE_LIMIT = 4096


_STR_NAMES: dict[str, str] = {}
_LABELS: dict[str, str] = {}


def canonical_name(name: Union[str, bytes]) -> str:
    """The lower-case long form of a header name (C{v} -> C{via})."""
    if isinstance(name, bytes):
        cached = _NAME_CACHE.get(name)
        if cached is not None:
            return cached
        name = name.decode(_ENC, _ERRORS)
    canonical = _STR_NAMES.get(name)
    if canonical is None:
        lower = name.strip().lower()
        canonical = COMPACT_FORMS.get(lower, lower)
        if len(_STR_NAMES) < _NAME_CACHE_LIMIT:
            _STR_NAMES[name] = canonical
    return canonical


def _label(name: str) -> str:
    """How we spell a header we add: C{Record-Route}, C{Call-ID}."""
    label = _LABELS.get(name)
    if label is None:
        label = _CANONICAL_LABELS.get(name) or "-".join(p.capitalize() for p in name.split("-"))
        if len(_LABELS) < _NAME_CACHE_LIMIT:
            _LABELS[name] = label
    return label


def _learn_name(spelled: str) -> str:
    """Canonical name for the raw text before a header's colon."""
    name = spelled.rstrip(" \t")
    if not name or not _TOKEN_RE.match(name):
        raise ParseError(f"malformed header name {name[:40]!r}")
    canonical = canonical_name(name)
    if len(_NAME_CACHE) < _NAME_CACHE_LIMIT:
        _NAME_CACHE[spelled] = canonical
    return canonical


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


def _decode_line(name: str, raw: str) -> list[str]:
    """The values of one raw header line: unfolded, stripped, and split
    on commas for list headers (empty list elements dropped)."""
    text = raw.partition(":")[2]
    if "\n" in text:
        text = _FOLD_RE.sub(" ", text)
    return _split_value(name, text.strip())


def _split_value(name: str, value: str) -> list[str]:
    """The values of a stripped header value: one, or for a list header
    its comma-separated elements (none for an empty one)."""
    if name in LIST_HEADERS:
        if "," not in value:
            return [value] if value else []
        return [v for v in split_list(value) if v]
    return [value]


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


def _split_via_params(text: str) -> list[tuple[str, Optional[str]]]:
    """The parameters of C{;name=value;flag}, already checked by
    L{_SIMPLE_VIA_RE}."""
    params: list[tuple[str, Optional[str]]] = []
    if not text:
        return params
    for item in text[1:].split(";"):
        name, eq, value = item.partition("=")
        params.append((name, value if eq else None))
    return params


#: Via text -> the Via parsed from it, kept as a template (never handed
#: out: L{parse_via} gives copies).
_VIA_CACHE: dict[str, Via] = {}


def parse_via(text: str) -> Via:
    """Parse one Via value; LWS around C{/}, C{:}, C{;} and C{=} is allowed.

    The Vias of a transaction come back in each of its responses, so
    parsed values are remembered; every call returns a fresh L{Via} (one
    is changed in place when it is stamped).

    @raise ParseError: when it does not follow the grammar, or has an empty
        or malformed parameter.
    """
    template = _VIA_CACHE.get(text)
    if template is None:
        template = remember(_VIA_CACHE, text, _parse_via(text))
    via = Via.__new__(Via)
    via.protocol = template.protocol
    via.transport = template.transport
    via.host = template.host
    via.port = template.port
    via._params = None if template._params is None else list(template._params)
    via._ptext = template._ptext
    via._text = text
    return via


def _compile_possessive(pattern: str) -> re.Pattern:
    """Compile a pattern written with possessive quantifiers (C{*+},
    C{++}, C{?+}, C{{m,n}}+}: no giving back). Before Python 3.11 they do
    not exist; where every quantified class excludes what follows it, as
    in the patterns here, the plain quantifier matches the same texts (only
    slower on a mismatch), so the extra C{+} is dropped there (PyPy 3.9)."""
    if sys.version_info >= (3, 11):
        return re.compile(pattern)
    return re.compile(_without_possessive(pattern))


def _without_possessive(pattern: str) -> str:
    """C{pattern} with the C{+} of each possessive quantifier removed (the
    ones outside character classes that follow a quantifier)."""
    out: list[str] = []
    in_class = after_quantifier = False
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            out.append(pattern[i:i + 2])
            i += 2
            after_quantifier = False
            continue
        if in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class = True
        elif ch == "+" and after_quantifier:
            i += 1
            after_quantifier = False
            continue
        out.append(ch)
        after_quantifier = not in_class and ch in "*+?}" and pattern[i - 1:i] != "("
        i += 1
    return "".join(out)


_TOKEN = r"[A-Za-z0-9.!%*_+`'~\-]++"


def _via_pattern(value: str) -> str:
    """The usual spelling of a Via, values of parameters made of C{value}
    characters: no LWS, no quotes, every parameter a token. Quantifiers
    are possessive (C{++}): each class excludes what may follow it, so
    giving characters back could never make a match, and not trying saves
    work."""
    return (
        rf"SIP/2\.0/({_TOKEN}) ([A-Za-z0-9_.\-]++|\[[0-9A-Fa-f:.]++\])(?::([0-9]{{1,5}}+))?+"
        rf"((?:;{_TOKEN}(?:={value}*+)?+)*+)"
    )


_VIA_VALUE = r'[^;\s",]'
#: One match checks a usual Via.
_SIMPLE_VIA_RE = _compile_possessive(_via_pattern(_VIA_VALUE) + r"\Z")


def _parse_via(text: str) -> Via:
    """Parse one Via value; a usual one keeps its parameters as text, to be
    split when read."""
    m = _SIMPLE_VIA_RE.match(text)
    if m is not None:
        return _via_of(text, *m.groups())
    m = _VIA_RE.match(text)
    if m is None:
        raise ParseError(f"malformed Via {text[:80]!r}")
    name, version, transport, host, port, ptext = m.groups()
    try:
        params = parse_params(ptext) if ptext else []
    except URIError as e:
        raise ParseError(f"malformed Via parameters ({e})") from None
    return _via_of(text, transport, host, port, ptext, f"{name.upper()}/{version}", params)


def _via_of(
    text: str,
    transport: str,
    host: str,
    port: Optional[str],
    ptext: Optional[str],
    protocol: str = "SIP/2.0",
    params: Optional[list[tuple[str, Optional[str]]]] = None,
) -> Via:
    """A L{Via} from the parts a Via regex matched in C{text}; C{params}
    None leaves C{ptext} to be split when read."""
    if host[0] == "[":
        host = host[1:-1]
    if port:
        port_number: Optional[int] = int(port)
        if port_number > 65535:  # type: ignore[operator]
            raise ParseError(f"bad port in Via {text[:80]!r}")
    else:
        port_number = None
    via = Via.__new__(Via)
    via.protocol = protocol
    via.transport = transport.upper()
    via.host = host
    via.port = port_number
    via._params = params
    via._ptext = ptext or ""
    via._text = text
    return via


# -- messages ----------------------------------------------------------------
class Message:
    """What requests and responses share: headers and body.

    Headers live in three parallel lists, one entry per header line: the
    canonical name, the raw line (text decoded once for the whole header
    block, with C{surrogateescape} so any octet comes back unchanged), and
    the values (None until read). Header names are case-insensitive and compact forms count as
    their long names. List headers are read value by value (a line
    C{Via: a, b} gives two values).
    """

    __slots__ = ("_names", "_raws", "_values", "body", "_via", "_start")

    def __init__(self) -> None:
        self._names: list[str] = []
        self._raws: list[str] = []
        self._values: list[Optional[list[str]]] = []
        self.body = b""
        self._via: Optional[Via] = None
        self._start: Optional[str] = None  # the start line as sent, None to render

    # reading ------------------------------------------------------------
    def _decoded(self, i: int) -> list[str]:
        values = self._values[i]
        if values is None:
            values = self._values[i] = _decode_line(self._names[i], self._raws[i])
        return values

    def _positions(self, name: str) -> list[int]:
        names = self._names
        if name not in names:
            return []
        if names.count(name) == 1:
            return [names.index(name)]
        return [i for i, n in enumerate(names) if n == name]

    def get(self, name: str) -> Optional[str]:
        """The first value of a header, or None."""
        names = self._names
        if name not in names:
            name = canonical_name(name)
            if name not in names:
                return None
        i = names.index(name)
        values = self._values[i]
        if values is None:
            values = self._values[i] = _decode_line(name, self._raws[i])
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
        return canonical_name(name) in self._names

    def header_names(self) -> list[str]:
        """Canonical names of the header lines, in order."""
        return list(self._names)

    def items(self) -> Iterator[tuple[str, str]]:
        """(canonical name, value) for every value of every header."""
        for i, name in enumerate(self._names):
            for v in self._decoded(i):
                yield name, v

    def raw_lines(self, name: str) -> list[bytes]:
        """The raw header lines of one header, as received or rendered."""
        return [self._raws[i].encode(_ENC, _ERRORS) for i in self._positions(canonical_name(name))]

    @property
    def call_id(self) -> str:
        return self.get("call-id") or ""

    @property
    def cseq(self) -> tuple[int, str]:
        """(number, method) of CSeq."""
        num, _, method = (self.get("cseq") or "0 ").partition(" ")
        return int(num), method.strip()

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
        addr = self.name_addr("from")
        return addr.tag if addr else None

    @property
    def to_tag(self) -> Optional[str]:
        addr = self.name_addr("to")
        return addr.tag if addr else None

    # changing -------------------------------------------------------------
    def _put(self, position: int, name: str, value: str) -> None:
        self._names.insert(position, name)
        self._raws.insert(position, f"{_label(name)}: {value}")
        self._values.insert(position, [value])
        if name == "via":
            self._via = None

    def _drop(self, position: int) -> None:
        if self._names[position] == "via":
            self._via = None
        del self._names[position]
        del self._raws[position]
        del self._values[position]

    def _rerender(self, i: int, values: list[str]) -> None:
        self._values[i] = values
        label = self._raws[i].partition(":")[0].strip()
        self._raws[i] = f"{label}: {', '.join(values)}"
        if self._names[i] == "via":
            self._via = None

    def insert_line(self, name: str, line: str, value: str) -> None:
        """L{insert} with the header line already rendered (C{name} in its
        canonical form): for lines a proxy adds to every message."""
        self._names.insert(0, name)
        self._raws.insert(0, line)
        self._values.insert(0, [value])
        if name == "via":
            self._via = None

    def insert(self, name: str, value: str) -> None:
        """Put a header value above every other line (a new top Via or
        Record-Route)."""
        self._put(0, canonical_name(name), value)

    def add(self, name: str, value: str) -> None:
        """Append a header line at the end."""
        self._put(len(self._names), canonical_name(name), value)

    def remove(self, name: str) -> None:
        """Remove every line of a header."""
        for i in reversed(self._positions(canonical_name(name))):
            self._drop(i)

    def set(self, name: str, value: str) -> None:
        """Replace every value of a header with one value, keeping the
        position of its first line (and the spelling of its name)."""
        name = canonical_name(name)
        positions = self._positions(name)
        if not positions:
            self._put(len(self._names), name, value)
            return
        for i in reversed(positions[1:]):
            self._drop(i)
        self._rerender(positions[0], [value])

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
        names = self._names
        if name not in names:
            name = canonical_name(name)
        if name in names and name not in LIST_HEADERS:  # a one-value line: just re-render it
            self._rerender(names.index(name), [value])
            return
        for i in self._positions(name):
            values = self._decoded(i)
            if values:
                self._rerender(i, [value] + values[1:])
                return
        self._put(0, name, value)

    def set_all(self, name: str, values: Iterable[str]) -> None:
        """Replace a header by one line per value (an empty list removes it)."""
        name = canonical_name(name)
        positions = self._positions(name)
        where = positions[0] if positions else len(self._names)
        for i in reversed(positions):
            self._drop(i)
        for offset, value in enumerate(values):
            self._put(where + offset, name, value)

    def set_top_via(self, via: Via) -> None:
        """Write back a changed top Via (C{received}, C{rport})."""
        self.replace_first("via", str(via))
        self._via = via

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
        names = self._names
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
        head = "\r\n".join([self._start or self._start_line(), *self._raws, "", ""]).encode(_ENC, _ERRORS)
        return head + body if body else head

    def _copy_into(self, other: "Message") -> None:
        other._names = list(self._names)
        other._raws = list(self._raws)
        other._values = list(self._values)  # value lists are replaced, never mutated
        other.body = self.body
        other._via = None  # Via objects are mutable: the copy parses its own

    # validation ---------------------------------------------------------------
    def _validate(self, texts: list[str], layout: tuple) -> None:
        """Refuse what RFC 3261 and RFC 4475 say a proxy must not act on.

        Called by L{parse} with the text after the colon of each header
        line, unfolded, and the layout of the lines (L{_LAYOUTS}); decodes
        the values it checks. One match of L{_USUAL_RE} vouches for CSeq,
        Call-ID, From, To and the top Via as most messages spell them;
        anything else is checked field by field (L{_check_fields}), which
        refuses it or normalises it."""
        i_via, i_cseq, i_call_id, i_from, i_to, _, i_hops, expires, repeated, missing = layout
        if missing is not None:
            raise ParseError(f"missing {_label(missing)} header", message=self)
        if repeated:
            self._check_singletons()
        values = self._values
        cseq = texts[i_cseq].strip()
        call_id = texts[i_call_id].strip()
        from_ = texts[i_from].strip()
        to = texts[i_to].strip()
        top = texts[i_via].strip()
        values[i_cseq] = [cseq]
        values[i_call_id] = [call_id]
        values[i_from] = [from_]
        values[i_to] = [to]
        if "," in top:  # several Vias on the first line (as sipp answers): the first is checked
            vias = values[i_via] = _split_value("via", top)
            top = vias[0] if vias else ""
        else:
            values[i_via] = [top] if top else []
        # a first Via line with no value does not match
        usual = _USUAL_RE.match(f"{cseq}\n{call_id}\n{from_}\n{to}\n{top}")
        if usual is None:
            self._check_fields()
            return
        unusual = expires or len(self.body) > _MAX_CONTENT_LENGTH
        if i_hops >= 0:
            hops = texts[i_hops].strip()
            values[i_hops] = [hops]
            unusual = unusual or hops not in _HOP_COUNTS
        if unusual:
            self._check_numbers()
        method, transport, host, port, ptext = usual.groups()
        if isinstance(self, Request) and method != self._method:
            raise ParseError(f"CSeq method {method} does not match request method {self._method}",
                             message=self)
        try:
            self._via = _via_of(top, transport, host, port, ptext)
        except ParseError as e:
            e.message = self
            raise

    def _check_numbers(self) -> None:
        """Refuse a numeric header out of its range. The Content-Length
        that parse() read is in range unless the body is 2 GiB or more."""
        names = self._names
        for name, limit, check in _NUMERIC_CHECKS:
            if name in names:
                values = self._decoded(names.index(name))
                value = values[0]
                if not (value in _HOP_COUNTS or value.isdigit() and value.isascii() and len(value) < 10
                        and int(value) <= limit):
                    check(values, name, self)

    def _check_fields(self) -> None:
        """The checks of L{_validate} one header at a time, in the order
        that picks the reason a message is refused with (RFC 4475 3.1.2.4
        answers "due to the CSeq error" when Max-Forwards and Expires are
        off too). A From or To line that passed is remembered: it comes
        back in every message of its dialog."""
        names = self._names
        values = self._values
        i = names.index("cseq")
        values[i] = _check_cseq(values[i], "cseq", self)  # type: ignore[arg-type]
        method = values[i][0].partition(" ")[2]  # type: ignore[index]
        self._check_numbers()
        i = names.index("call-id")
        _check_call_id(values[i], "call-id", self)  # type: ignore[arg-type]
        for name in ("from", "to"):
            i = names.index(name)
            raw = self._raws[i]
            if raw not in _CHECKED_LINES:
                remember(_CHECKED_LINES, raw, _check_name_addr(values[i], name, self))  # type: ignore[arg-type]
        if isinstance(self, Request) and method != self._method:
            raise ParseError(f"CSeq method {method} does not match request method {self._method}",
                             message=self)
        try:
            self.top_via()
        except ParseError as e:
            e.message = self
            raise

    def _check_singletons(self) -> None:
        """Refuse a header that may appear once but comes with different
        values (LWS aside)."""
        names = self._names
        for name in SINGLETONS:
            if names.count(name) > 1:
                values = {" ".join(v.split()) for v in self.get_all(name)}
                if len(values) > 1:
                    raise ParseError(f"conflicting {_label(name)} values", message=self)


def _check_cseq(values: list[str], name: str, message: Message) -> list[str]:
    cseq = values[0] if values else ""
    number, space, method = cseq.partition(" ")
    if (space and number.isdigit() and number.isascii() and len(number) < 10 and number[0] != "0"
            and (method in _METHODS or _TOKEN_RE.match(method))):
        return values  # the usual spelling: "314159 INVITE"
    m = _CSEQ_RE.match(cseq)
    if m is None:
        raise ParseError(f"malformed CSeq {cseq[:40]!r}", message=message)
    try:
        number = int(m.group(1))
    except ValueError:  # more digits than int() converts
        number = 2**31
    if number >= 2**31:
        raise ParseError("CSeq number out of range", message=message)
    canonical = f"{number} {m.group(2)}"
    return values if canonical == cseq else [canonical]  # normalised for readers; raw kept


def _numeric_check(limit: int) -> Callable[[list[str], str, Message], list[str]]:
    def check(values: list[str], name: str, message: Message) -> list[str]:
        value = values[0] if values else ""
        try:
            bad = not value.isdigit() or not value.isascii() or int(value) > limit
        except ValueError:  # more digits than int() converts
            bad = True
        if bad:
            raise ParseError(f"bad {_label(name)} value {value[:30]!r}", message=message)
        return values

    return check


def _check_call_id(values: list[str], name: str, message: Message) -> list[str]:
    call_id = values[0] if values else ""
    if not _CALLID_RE.match(call_id):
        raise ParseError(f"malformed Call-ID {call_id[:40]!r}", message=message)
    return values


def _check_name_addr(values: list[str], name: str, message: Message) -> list[str]:
    value = values[0] if values else ""
    if ":" not in value or not _NAME_ADDR_SHAPE.match(value):
        raise ParseError(f"malformed {_label(name)} {value[:60]!r}", message=message)
    return values


#: Numeric headers parse() checks, after CSeq: RFC 4475 3.1.2.4 answers 400
#: "due to the CSeq error" when Max-Forwards and Expires are off too.
_NUMERIC_CHECKS = tuple((name, limit, _numeric_check(limit)) for name, limit in _NUMERIC_LIMITS)
_MAX_CONTENT_LENGTH = _NUMERIC_LIMITS[0][1]
_EXPIRES = frozenset(("expires", "min-expires"))
#: Max-Forwards values as usually spelled (no leading zero).
_HOP_COUNTS = frozenset(str(n) for n in range(256))
#: Raw From or To line -> its checked values, for lines the usual shape
#: (L{_USUAL_RE}) does not cover; bounded (cleared when full).
_CHECKED_LINES: dict[str, list[str]] = {}


def _latin1(char_class: str) -> str:
    """The latin-1 characters of a regex character class, as a class the
    regex engine tests with one lookup (a negated class, or one with
    C{\\s}, is tested item by item, several times slower). Narrower than
    the original: fit for a fast path that leaves what it misses to the
    exact check."""
    runs: list[list[str]] = []  # [first, last] of each run of consecutive characters
    for ch in map(chr, range(256)):
        if re.fullmatch(char_class, ch):
            if runs and ord(runs[-1][-1]) == ord(ch) - 1:
                runs[-1][1:] = [ch]
            else:
                runs.append([ch])
    return "[" + "".join("-".join(map(re.escape, run)) for run in runs) + "]"


_CALLID = r"[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]++"
_TEXT = _latin1(r'[^"<>\n]')
_QUOTED_TEXT = _latin1(r'[^"\\\n]')
_QUOTED_NO_LF = rf'"{_QUOTED_TEXT}*+(?:\\[^\n]{_QUOTED_TEXT}*+)*+"'
#: A latin-1 From or To that L{_NAME_ADDR_SHAPE} accepts, with its colon
#: inside the brackets: C{"Alice" <sip:alice@example.com>;tag=1}.
_URI_TEXT = _latin1(r'[^"<>:\n]')
_USUAL_NAME_ADDR = (
    rf"(?:{_QUOTED_NO_LF})?+{_TEXT}*+<{_URI_TEXT}*+:{_TEXT}*+>{_TEXT}*+"
    rf"(?:{_QUOTED_NO_LF}{_TEXT}*+)*+"
)
#: The usual spelling of the five values parse() must check, joined by LF
#: (no decoded value holds one): CSeq (its number without leading zero or
#: more than 9 digits), Call-ID, From, To and the top Via. One match does
#: the work of five, and gives the CSeq method and the parts of the Via.
_USUAL_RE = _compile_possessive(
    rf"[1-9][0-9]{{0,8}}+ ({_TOKEN})\n{_CALLID}(?:@{_CALLID})?+\n"
    rf"{_USUAL_NAME_ADDR}\n{_USUAL_NAME_ADDR}\n{_via_pattern(_latin1(_VIA_VALUE))}\Z"
)


class _StartLineField:
    """A part of the start line (method, code, ...), kept in the slot of
    the same name with a leading underscore; setting it re-renders the
    line that is sent."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.slot = "_" + name

    def __get__(self, message: Any, owner: Optional[type] = None) -> Any:
        return self if message is None else getattr(message, self.slot)

    def __set__(self, message: Any, value: Any) -> None:
        setattr(message, self.slot, value)
        message._start = None


class Request(Message):
    """A SIP request. Changing C{method}, C{uri} or C{version} changes the
    request line that is sent."""

    __slots__ = ("_method", "_uri", "_version", "_parsed_uri")

    method = _StartLineField()
    version = _StartLineField()

    def __init__(
        self,
        method: str,
        uri: str,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        version: str = "SIP/2.0",
    ) -> None:
        super().__init__()
        self.method = method
        self._uri = str(uri)
        self.version = version
        self._start: Optional[str] = None
        self._parsed_uri = None
        for name, value in headers:
            self.add(name, value)
        self.set_body(body)

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
            uri = _URI_CACHE.get(text)
            if uri is None:
                uri = remember(_URI_CACHE, text, parse_uri(text))
            self._parsed_uri = uri
        return uri

    def _start_line(self) -> str:
        start = self._start
        if start is None:
            start = self._start = f"{self.method} {self._uri} {self.version}"
        return start

    def copy(self) -> "Request":
        """An independent copy."""
        other = Request.__new__(Request)
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
        response = Response(code, reason)
        copied = _RESPONSE_COPIED_RR if record_route else _RESPONSE_COPIED
        for i, name in enumerate(self._names):
            if name in copied:
                response._names.append(name)
                response._raws.append(self._raws[i])
                response._values.append(self._values[i])
        if to_tag and code > 100 and "to" in response._names:
            to = response.get("to") or ""
            try:
                tagged = parse_name_addr(to).tag is not None
            except URIError:
                tagged = True
            if not tagged:
                response.set("to", f"{to};tag={to_tag}")
        for name, value in headers:
            response.add(name, value)
        response.set_body(body)
        return response

    def __repr__(self) -> str:
        return f"<Request {self.method} {self._uri}>"


_URI_CACHE: dict[str, URI] = {}
_RESPONSE_COPIED = frozenset(("via", "from", "to", "call-id", "cseq"))
_RESPONSE_COPIED_RR = _RESPONSE_COPIED | {"record-route"}


class Response(Message):
    """A SIP response. Changing C{code}, C{reason} or C{version} changes
    the status line that is sent."""

    __slots__ = ("_code", "_reason", "_version")

    code = _StartLineField()
    reason = _StartLineField()
    version = _StartLineField()

    def __init__(
        self,
        code: int,
        reason: Optional[str] = None,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        version: str = "SIP/2.0",
    ) -> None:
        super().__init__()
        self.code = code
        self.reason = REASONS.get(code, "Unknown") if reason is None else reason
        self.version = version
        self._start: Optional[str] = None
        for name, value in headers:
            self.add(name, value)
        if body:
            self.set_body(body)

    @property
    def method(self) -> str:
        """The method of the request this answers (from CSeq)."""
        return self.cseq[1]

    def _start_line(self) -> str:
        start = self._start
        if start is None:
            start = self._start = f"{self.version} {self.code} {self.reason}"
        return start

    def copy(self) -> "Response":
        """An independent copy."""
        other = Response.__new__(Response)
        self._copy_into(other)
        other._code = self._code
        other._reason = self._reason
        other._version = self._version
        other._start = self._start
        return other

    def __repr__(self) -> str:
        return f"<Response {self.code} {self.reason}>"


# -- parsing -------------------------------------------------------------------
#: "SIP/" in every case: how a status line starts.
_SIP_SLASH = frozenset(a + b + c + "/" for a in "Ss" for b in "Ii" for c in "Pp")


def parse(data: bytes, stream: bool = False) -> Union[Request, Response]:
    """Parse one SIP message.

    On a datagram the body is what follows the headers, cut to
    Content-Length when that is shorter (RFC 3261 18.3); a Content-Length
    larger than what arrived is an error. With C{stream}, C{data} is one
    message already framed by Content-Length, which must be present.

    @raise ParseError: with the reason, the status to answer with, and the
        partial message where the headers could be split.
    """
    if not isinstance(data, bytes):
        data = bytes(data)
    if data[:1] in (b"\r", b"\n"):  # CRLFs before the start line are ignored (7.5)
        data = data.lstrip(b"\r\n")
    end = data.find(b"\r\n\r\n")
    if end >= 0:
        head = data[:end]
        rest = data[end + 4 :]
    else:
        end = data.find(b"\n\n")
        if end >= 0:
            head = data[:end]
            rest = data[end + 2 :]
        elif data.endswith(b"\r\n"):
            head, rest = data[:-2], b""
        else:
            raise ParseError("no end of headers (missing empty line)")
    text = head.decode(_ENC, _ERRORS)  # once for the whole block; any octet survives
    lines = text.split("\r\n")
    if len(lines) != text.count("\n") + 1:  # bare LF line ends, all or some: read them, write CRLF
        lines = text.replace("\r\n", "\n").split("\n")
    start = lines[0]
    message: Message
    start_error: Optional[ParseError] = None
    if start[:4] in _SIP_SLASH:
        message = _parse_status_line(start)
    else:
        try:
            message = _parse_request_line(start)
        except ParseError as e:
            # a broken request line with readable headers can still be
            # answered with a 400 (RFC 4475 3.1.2.7-3.1.2.10)
            partial = _partial_request(start)
            if partial is None:
                raise
            message, start_error = partial, e
    del lines[0]
    split = _split_headers(lines)
    if split is None:
        lines, split = _split_headers_slowly(lines, message)
    names, texts = split
    values: list[Optional[list[str]]] = [None] * len(names)  # decoded when read
    message._names = names
    message._raws = lines
    message._values = values
    if start_error is not None:
        start_error.message = message
        raise start_error
    if message._version != "SIP/2.0":  # a request of another SIP version: 505, addressable
        raise ParseError(f"unsupported SIP version {message._version}", status=505, message=message)
    key = tuple(names)
    layout = _LAYOUTS.get(key) or _learn_layout(key, names)
    i = layout[_LENGTH]
    if i < 0:  # no Content-Length
        if stream:
            raise ParseError("missing Content-Length on a stream transport", message=message)
        message.body = rest
    else:
        length_text = texts[i].strip()
        values[i] = [length_text]
        try:
            length = int(length_text) if length_text.isdigit() and length_text.isascii() else -1
        except ValueError:  # more digits than int() converts
            length = -1
        if length < 0:
            raise ParseError(f"bad Content-Length {length_text[:30]!r}", message=message)
        if length > len(rest):
            raise ParseError(
                f"Content-Length {length} larger than the {len(rest)} octets of body", message=message
            )
        message.body = rest[:length] if length < len(rest) else rest
    message._validate(texts, layout)
    return message


#: Header layout (the canonical names of the lines of a message, in
#: order) -> where the lines are that parse() reads, and what else it must
#: know of the layout: the positions of Via, CSeq, Call-ID, From, To,
#: Content-Length and Max-Forwards (-1 when absent), whether Expires or
#: Min-Expires is there, whether a header that may appear once is there
#: twice, and the first required header missing (None). Phones and
#: proxies send their own layout again and again, whatever the call, so
#: finding these is a lookup most of the time. Bounded like the other
#: caches, and only layouts of a few lines are kept (junk with thousands
#: of lines would make each entry large).
_LAYOUTS: dict[tuple[str, ...], tuple] = {}
_LAYOUT_MAX_LINES = 64
_LENGTH = 5  # the position of Content-Length in a layout


def _learn_layout(key: tuple[str, ...], names: list[str]) -> tuple:
    """The layout of C{names} (C{key} is their tuple), remembered."""
    present = set(names)
    index = names.index
    try:
        required = (index("via"), index("cseq"), index("call-id"), index("from"), index("to"))
        missing = None
    except ValueError:
        required = (-1, -1, -1, -1, -1)
        missing = next(name for name in _REQUIRED if name not in present)
    repeated = (
        len(present) != len(names)
        and len(present) != len(names) - names.count("via") + 1  # not only Vias repeat
        and any(names.count(name) > 1 for name in SINGLETONS)
    )
    layout = required + (
        index("content-length") if "content-length" in present else -1,
        index("max-forwards") if "max-forwards" in present else -1,
        not present.isdisjoint(_EXPIRES),
        repeated,
        missing,
    )
    return remember(_LAYOUTS, key, layout) if len(key) <= _LAYOUT_MAX_LINES else layout


def _split_headers(lines: list[str]) -> Optional[tuple[list[str], list[str]]]:
    """Canonical names of the header lines and the text after each colon,
    in one pass: the way of every message whose header names were all seen
    before, spelled the same. None when a line needs
    L{_split_headers_slowly}: a name not seen before, a malformed line, a
    continuation line (its leading SP or HT is never part of a known
    spelling)."""
    known = _NAME_CACHE.get
    names: list[str] = []
    texts: list[str] = []
    for line in lines:
        spelled, _, text = line.partition(": ")  # the usual spelling, one space
        name = known(spelled)
        if name is None:
            spelled, _, text = line.partition(":")
            name = known(spelled)
            if name is None:
                return None
        names.append(name)
        texts.append(text)
    return names, texts


def _split_headers_slowly(lines: list[str], message: Message) -> tuple[list[str], tuple[list[str], list[str]]]:
    """The header lines with folded ones joined, their names and their
    unfolded texts after the colon; learns the spelling of new names.

    @raise ParseError: for a continuation line before any header, a line
        without colon, a malformed name; its message is C{message} with no
        headers."""
    try:
        if any(line[:1] in (" ", "\t") for line in lines):
            lines = _join_folded(lines, message)
        known = _NAME_CACHE.get
        names = []
        texts = []
        for line in lines:
            spelled, colon, text = line.partition(":")
            name = known(spelled)
            if name is None:
                if not colon:
                    raise ParseError(f"header line without colon: {line[:40]!r}", message=message)
                name = _learn_name(spelled)
            names.append(name)
            texts.append(_FOLD_RE.sub(" ", text) if "\n" in text else text)
    except ParseError as e:
        message._names, message._raws, message._values = [], [], []
        e.message = message
        raise
    return lines, (names, texts)


def _join_folded(lines: list[str], message: Message) -> list[str]:
    """Glue continuation lines (leading SP/HT) to the line they continue,
    keeping them as they were (RFC 3261 7.3.1)."""
    joined: list[str] = []
    for line in lines:
        if line[:1] in (" ", "\t"):
            if not joined:
                raise ParseError("continuation line before any header", message=message)
            joined[-1] += "\r\n" + line
        else:
            joined.append(line)
    return joined


def _parse_request_line(start: str) -> Request:
    parts = start.split(" ")
    if len(parts) != 3 or "" in parts:
        raise ParseError("malformed request line (want 'METHOD SP Request-URI SP SIP/2.0')")
    method, uri, version = parts
    if method not in _METHODS and not _TOKEN_RE.match(method):
        raise ParseError(f"malformed method {method[:20]!r}")
    if uri[:1] == "<" or ":" not in uri or "\t" in uri:
        raise ParseError(f"malformed Request-URI {uri[:60]!r}")
    request = Request.__new__(Request)
    request.body = b""
    request._via = None
    request._method = method
    request._uri = uri
    request._start = start
    request._parsed_uri = None
    request._version = "SIP/2.0"
    if version != "SIP/2.0" and version.upper() != "SIP/2.0":
        if not _VERSION_RE.match(version):
            raise ParseError(f"malformed SIP version {version[:20]!r}")
        # SIP/x.y: refused with 505 by parse() once the headers are split
        request._version = version
    return request


_VERSION_RE = re.compile(r"SIP/[0-9]+\.[0-9]+\Z", re.I)
_METHODS = frozenset((
    "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "SUBSCRIBE", "NOTIFY", "REFER", "INFO",
    "MESSAGE", "UPDATE", "PRACK", "PUBLISH"))


def _partial_request(start: str) -> Optional[Request]:
    """What can be read of a malformed request line that still looks like
    one (a method token first, C{SIP/2.0} last), so the request can be
    answered; None for anything else (binary junk)."""
    method, sep, rest = start.partition(" ")
    if not sep or not _TOKEN_RE.match(method) or not start.rstrip().upper().endswith("SIP/2.0"):
        return None
    request = Request.__new__(Request)
    Message.__init__(request)
    request._method = method
    request._uri = rest.rstrip()[: -len("SIP/2.0")].strip()
    request._start = start
    request._parsed_uri = None
    request._version = "SIP/2.0"
    return request


def _parse_status_line(start: str) -> Response:
    parts = start.split(" ", 2)
    if len(parts) < 2 or parts[0] != "SIP/2.0" and parts[0].upper() != "SIP/2.0":
        raise ParseError(f"malformed status line {start[:40]!r}")
    code = _STATUS_CODES.get(parts[1])
    if code is None:
        raise ParseError(f"bad status code {parts[1][:20]!r}")
    response = Response.__new__(Response)
    response.body = b""
    response._via = None
    response._code = code
    response._reason = parts[2] if len(parts) == 3 else ""
    response._version = "SIP/2.0"
    response._start = start
    return response


#: Status code text -> its value, for the codes a status line may carry.
_STATUS_CODES = {str(code): code for code in range(100, 700)}
