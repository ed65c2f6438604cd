"""The parser's fast path: what runs for every datagram, and the caches it
owns.

L{sipproxy.sip.message} is the readable API (messages, headers, Via); this
module turns bytes into those objects as cheaply as it can, and checks what
a proxy must refuse before acting (RFC 4475 3.1.2): the start line, the
headers that identify the transaction (Via, From, To, Call-ID, CSeq), the
numeric headers, Content-Length, and octets that may not appear in a
header at all (NUL outside a quoted-pair, a CR not followed by LF: RFC 3261
25.1).

The tricks, and why each pays (instruction counts from
C{bench/proxy_micro.py --callgrind}, one leg, as measured when each was
added; 464k instructions per message at the start, 158k with all of them):

 - B{the header block is decoded once} (UTF-8 with C{surrogateescape}, so
   any octet survives and is written back unchanged) and split on CRLF
   with one C{str.split}; a value is decoded into its parts only when read.
   A proxy reads six headers of a dozen.
 - B{header names by their spelling}: L{CACHES} C{names} maps the raw text
   before a colon (C{"Call-ID"}, C{"i"}, C{"v"}) to its canonical name, so
   one pass with one C{dict.get} per line splits the block
   (L{_split_headers}); a spelling not seen before takes the slow way once.
 - B{layouts}: the tuple of a message's header names -> where the checked
   headers are (L{Layout}). Phones and proxies send their own layout again
   and again, so finding CSeq, Call-ID, From, To, Via, Content-Length and
   Max-Forwards, and knowing whether a singleton repeats or a required
   header is missing, is one lookup.
 - B{one match for five fields}: L{grammar.USUAL_RE} vouches for CSeq,
   Call-ID, From, To and the top Via as most messages spell them, and
   hands back the CSeq method and the parts of the Via; what it does not
   vouch for is checked field by field (L{check_fields}) with the same
   outcome (the hypothesis tests in tests/test_message.py hold them to it).
 - B{parsed values by text}: Vias (every response of a transaction brings
   its Vias back), Request-URIs (a dialog's requests share one), checked
   From/To lines (a dialog's messages repeat them).
 - B{objects built past C{__init__}}: the parser fills the slots of
   L{Request}, L{Response} and L{Via} itself, in L{_parse_request_line},
   L{_parse_status_line}, L{_via_of} and L{parse_via} (and C{copy()} in
   the message module: nowhere else), with L{sipproxy.sip.message.blank},
   skipping the rendering and checks C{__init__} does for a message built
   by hand; a wrapper function would cost a Python call per object.

Every cache is a L{BoundedCache} held by L{CACHES}: bounded in entries and
in characters of keys, and a key longer than a short limit is never
stored (a 60 KB Request-URI is computed again, not kept).
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Union

from sipproxy.sip.bounded import BoundedCache, CacheSet
from sipproxy.sip.grammar import (
    CALLID_RE,
    CSEQ_RE,
    FOLD_RE,
    HOST_LABEL_RE,
    NAME_ADDR_SHAPE,
    SIMPLE_VIA_RE,
    TOKEN_RE,
    USUAL_RE,
    VERSION_RE,
    VIA_RE,
)
from sipproxy.sip.message import (
    COMPACT_FORMS,
    SINGLETONS,
    Message,
    ParseError,
    Request,
    Response,
    Values,
    Via,
    _split_value,
    blank,
)
from sipproxy.sip.uri import URI, URIError, parse_name_addr, parse_params, parse_uri

__all__ = ["parse", "parse_via", "our_via", "canonical_name", "label", "line_prefix", "read_cseq", "cached_uri",
           "CACHES", "Layout"]

_ENC = "utf-8"
_ERRORS = "surrogateescape"

#: The parser's caches, one object: bounded by one policy, reported and
#: cleared together (tests and the memory regression test read it).
CACHES = CacheSet()
#: raw spelling of a header name (text before the colon) -> canonical name
_NAMES = CACHES.add(BoundedCache("header name spellings", 4096, max_key=64))
#: a header name given to the API as str -> canonical name
_STR_NAMES = CACHES.add(BoundedCache("header names", 4096, max_key=64))
#: canonical name -> how we spell a header we add
_LABELS = CACHES.add(BoundedCache("header labels", 4096, max_key=64))
#: a header name given to the API as str -> (canonical name, "Label: "):
#: how a built message's lines start, one lookup a line
_PREFIXES = CACHES.add(BoundedCache("header line prefixes", 4096, max_key=64))
#: CSeq value -> (number, method), for values already read once
_CSEQS = CACHES.add(BoundedCache("CSeq values", 4096, max_key=64))
#: Via text -> the Via parsed from it, a template (never handed out)
_VIAS = CACHES.add(BoundedCache("Vias", 8192, max_key=512))
#: Request-URI text -> URI (shared: read it, never change it in place)
_URIS = CACHES.add(BoundedCache("Request-URIs", 8192, max_key=512))
#: header layout -> L{Layout}; keys sized by the characters of their names
_LAYOUTS = CACHES.add(BoundedCache("header layouts", 8192, max_key=1024))
#: raw From or To line that passed the exact check -> its values
_CHECKED_LINES = CACHES.add(BoundedCache("checked From/To lines", 8192, max_key=512))
_LAYOUT_MAX_LINES = 64
# the hot lookups, bound once (see L{sipproxy.sip.bounded})
_known_name = _NAMES.get
_known_via = _VIAS.get
_known_uri = _URIS.get
_known_layout = _LAYOUTS.get
known_prefix = _PREFIXES.get
known_cseq = _CSEQS.get

#: How new headers are spelled when we write them.
_CANONICAL_LABELS = {
    "call-id": "Call-ID", "cseq": "CSeq", "www-authenticate": "WWW-Authenticate",
    "mime-version": "MIME-Version", "rack": "RAck", "rseq": "RSeq",
}
_REQUIRED = ("via", "from", "to", "call-id", "cseq")
_NUMERIC_LIMITS = (
    ("content-length", 2**31 - 1),
    ("max-forwards", 255),
    ("expires", 2**32 - 1),
    ("min-expires", 2**32 - 1),
)
_METHODS = frozenset((
    "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "SUBSCRIBE", "NOTIFY", "REFER", "INFO",
    "MESSAGE", "UPDATE", "PRACK", "PUBLISH"))
#: Status code text -> its value, for the codes a status line may carry.
_STATUS_CODES = {str(code): code for code in range(100, 700)}
#: "SIP/" in every case: how a status line starts.
_SIP_SLASH = frozenset(a + b + c + "/" for a in "Ss" for b in "Ii" for c in "Pp")


# -- header names ------------------------------------------------------------
def canonical_name(name: Union[str, bytes]) -> str:
    """The lower-case long form of a header name (C{v} -> C{via})."""
    if isinstance(name, bytes):
        cached = _NAMES.get(name)
        if cached is not None:
            return cached
        name = name.decode(_ENC, _ERRORS)
    canonical = _STR_NAMES.get(name)
    if canonical is None:
        lower = name.strip().lower()
        canonical = _STR_NAMES.store(name, COMPACT_FORMS.get(lower, lower))
    return canonical


def label(name: str) -> str:
    """How we spell a header we add: C{Record-Route}, C{Call-ID}."""
    spelled = _LABELS.get(name)
    if spelled is None:
        spelled = _LABELS.store(
            name, _CANONICAL_LABELS.get(name) or "-".join(p.capitalize() for p in name.split("-")))
    return spelled


def line_prefix(name: str) -> tuple[str, str]:
    """The canonical name of C{name} and the start of a line we write for
    it (C{"call-id"}, C{"Call-ID: "}), remembered by C{name}."""
    found = known_prefix(name)
    if found is None:
        canonical = canonical_name(name)
        found = _PREFIXES.store(name, (canonical, f"{label(canonical)}: "))
    return found


def read_cseq(text: str) -> tuple[int, str]:
    """(number, method) of a CSeq value, remembered by value: a call's
    messages repeat a few CSeqs, each read several times.

    @raise ValueError: for a number that is not one."""
    found = known_cseq(text)
    if found is None:
        number, _, method = text.partition(" ")
        found = _CSEQS.store(text, (int(number), method.strip()))
    return found


def _learn_name(spelled: str) -> str:
    """Canonical name for the raw text before a header's colon."""
    name = spelled.rstrip(" \t")
    if not name or not TOKEN_RE.match(name):
        raise ParseError(f"malformed header name {name[:40]!r}")
    return _NAMES.store(spelled, canonical_name(name))


# -- Via -------------------------------------------------------------------------
def parse_via(text: str) -> Via:
    """Parse one Via value; LWS around C{/}, C{:}, C{;} and C{=} is allowed.

    The Vias of a transaction come back in each of its responses, so
    parsed values are remembered; every call returns a fresh L{Via} (one
    is changed in place when it is stamped).

    @raise ParseError: when it does not follow the grammar, or has an empty
        or malformed parameter, a port above 65535 or a malformed host name.
    """
    template = _known_via(text)
    if template is None:
        template = _VIAS.store(text, _parse_via(text))
    via = blank(Via)
    via.protocol = template.protocol
    via.transport = template.transport
    via.host = template.host
    via.port = template.port
    via._params = None if template._params is None else list(template._params)
    via._ptext = template._ptext
    via._text = text
    return via


def our_via(head: str, ptext: str) -> Optional[Via]:
    """The Via C{head + ptext} that we write on a request we send, without
    reading it again: C{head} (C{SIP/2.0/UDP host:port}, the same on every
    request of a leg) is parsed once and remembered, C{ptext} is our own
    C{;branch=...;rport}. None when C{head} does not parse as a Via
    without parameters: the full parse, when the Via is read, says why."""
    try:
        via = parse_via(head)
    except ParseError:
        return None
    if via._ptext or via._params is not None:
        return None
    via._ptext = ptext
    via._text = head + ptext
    return via


def _parse_via(text: str) -> Via:
    """Parse one Via value; a usual one keeps its parameters as text, to be
    split when read."""
    m = SIMPLE_VIA_RE.match(text)
    if m is not None:
        return _via_of(text, *m.groups())
    m = VIA_RE.match(text)
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
    elif len(host) > 63 or ".." in host or host[0] == ".":  # cheap test first: most hosts pass it
        if not HOST_LABEL_RE.match(host):
            raise ParseError(f"malformed host in Via {text[:80]!r}")
    if port:
        port_number: Optional[int] = int(port)
        if port_number > 65535:  # type: ignore[operator]
            raise ParseError(f"bad port in Via {text[:80]!r}")
    else:
        port_number = None
    via = blank(Via)
    via.protocol = protocol
    via.transport = transport.upper()
    via.host = host
    via.port = port_number
    via._params = params
    via._ptext = ptext or ""
    via._text = text
    return via


# -- Request-URIs -----------------------------------------------------------------
def cached_uri(text: str) -> URI:
    """The Request-URI C{text} parsed, remembered (a dialog's requests
    share it); raises L{URIError}."""
    uri = _known_uri(text)
    if uri is None:
        uri = _URIS.store(text, parse_uri(text))
    return uri


# -- parsing ------------------------------------------------------------------------
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
    # splitlines() costs what split("\r\n") does, and also breaks at a bare
    # CR (and a few other separators): a line count that differs from the
    # LFs' (or a break it dropped at the end) finds those with no extra scan
    lines = text.splitlines()
    octet_error = None
    if len(lines) != text.count("\n") + 1 or text[-1:] in _LINE_BREAKS:
        lines, octet_error = _split_lines(text)
    elif "\x00" in text and text.count("\x00") != text.count("\\\x00"):  # "in": memchr, nearly free
        octet_error = "NUL octet in the header block"
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
    values: list[Optional[Values]] = [None] * len(names)  # decoded when read
    message.names = names
    message.lines = lines
    message._values = values
    if start_error is not None:
        start_error.message = message
        raise start_error
    if octet_error is not None:
        raise ParseError(octet_error, message=message)
    if message._version != "SIP/2.0":  # a request of another SIP version: 505, addressable
        raise ParseError(f"unsupported SIP version {message._version}", status=505, message=message)
    key = tuple(names)
    layout = _known_layout(key) or _learn_layout(key, names)
    i = layout.content_length
    if i < 0:  # no Content-Length
        if stream:
            raise ParseError("missing Content-Length on a stream transport", message=message)
        message.body = rest
    else:
        length_text = texts[i].strip()
        values[i] = (length_text,)
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
    validate(message, texts, layout)
    return message


def _split_lines(text: str) -> tuple[list[str], Optional[str]]:
    """The lines of a header block that splitlines() did not split as SIP
    does: a line ends at CRLF or at a bare LF (read, written back as CRLF);
    and why it must be refused, or None. RFC 3261 25.1: outside a
    quoted-pair no header holds NUL, and a CR only before LF (a bare CR
    is a line end to some parsers and not to others: a way to smuggle a
    header past a proxy, RFC 4475 3.1.2)."""
    joined = text.replace("\r\n", "\n")
    lines = joined.split("\n")
    if "\r" in joined:
        return lines, "CR without LF in the header block"
    if "\x00" in text and text.count("\x00") != text.count("\\\x00"):
        return lines, "NUL octet in the header block"
    return lines, None


#: What str.splitlines() breaks at, besides LF.
_LINE_BREAKS = frozenset("\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")


class Layout(NamedTuple):
    """Where the lines are that parse() reads in one header layout (the
    canonical names of a message's lines, in order), and what else it must
    know of it: -1 for an absent header."""

    via: int
    cseq: int
    call_id: int
    from_: int
    to: int
    content_length: int
    max_forwards: int
    expires: bool  # Expires or Min-Expires is there
    repeated: bool  # a header that may appear once is there twice
    missing: Optional[str]  # the first required header missing


def _learn_layout(key: tuple[str, ...], names: list[str]) -> Layout:
    """The layout of C{names} (C{key} is their tuple), remembered when it
    has a few lines (junk with thousands would make each entry large)."""
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
    layout = Layout(
        *required,
        index("content-length") if "content-length" in present else -1,
        index("max-forwards") if "max-forwards" in present else -1,
        not present.isdisjoint(_EXPIRES),
        repeated,
        missing,
    )
    if len(key) <= _LAYOUT_MAX_LINES:
        _LAYOUTS.store(key, layout, sum(map(len, key)))
    return layout


def _split_headers(lines: list[str]) -> Optional[tuple[list[str], list[str]]]:
    """Canonical names of the header lines and the text after each colon,
    in one pass: the way of every message whose header names were all seen
    before, spelled the same. None when a line needs
    L{_split_headers_slowly}: a name not seen before, a malformed line, a
    continuation line (its leading SP or HT is never part of a known
    spelling)."""
    known = _known_name
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
        known = _NAMES.get
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
            texts.append(FOLD_RE.sub(" ", text) if "\n" in text else text)
    except ParseError as e:
        message.names, message.lines, message._values = [], [], []
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
    if method not in _METHODS and not TOKEN_RE.match(method):
        raise ParseError(f"malformed method {method[:20]!r}")
    if uri[:1] == "<" or ":" not in uri or "\t" in uri:
        raise ParseError(f"malformed Request-URI {uri[:60]!r}")
    request = blank(Request)
    request.body = b""
    request._via = None
    request._method = method
    request._uri = uri
    request._start = start
    request._parsed_uri = None
    request._version = "SIP/2.0"
    if version != "SIP/2.0" and version.upper() != "SIP/2.0":
        if not VERSION_RE.match(version):
            raise ParseError(f"malformed SIP version {version[:20]!r}")
        # SIP/x.y: refused with 505 by parse() once the headers are split
        request._version = version
    return request


def _partial_request(start: str) -> Optional[Request]:
    """What can be read of a malformed request line that still looks like
    one (a method token first, C{SIP/2.0} last), so the request can be
    answered; None for anything else (binary junk)."""
    method, sep, rest = start.partition(" ")
    if not sep or not TOKEN_RE.match(method) or not start.rstrip().upper().endswith("SIP/2.0"):
        return None
    request = blank(Request)
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
    response = blank(Response)
    response.body = b""
    response._via = None
    response._code = code
    response._reason = parts[2] if len(parts) == 3 else ""
    response._version = "SIP/2.0"
    response._start = start
    return response


# -- validation ------------------------------------------------------------------------
def validate(message: Message, texts: list[str], layout: Layout) -> None:
    """Refuse what RFC 3261 and RFC 4475 say a proxy must not act on.

    Called by L{parse} with the text after the colon of each header line,
    unfolded, and the layout of the lines; decodes the values it checks.
    One match of L{USUAL_RE} vouches for CSeq, Call-ID, From, To and the
    top Via as most messages spell them; anything else is checked field by
    field (L{check_fields}), which refuses it or normalises it."""
    i_via, i_cseq, i_call_id, i_from, i_to, _, i_hops, expires, repeated, missing = layout
    if missing is not None:
        raise ParseError(f"missing {label(missing)} header", message=message)
    if repeated:
        _check_singletons(message)
    values = message._values
    cseq = texts[i_cseq].strip()
    call_id = texts[i_call_id].strip()
    from_ = texts[i_from].strip()
    to = texts[i_to].strip()
    top = texts[i_via].strip()
    values[i_cseq] = (cseq,)
    values[i_call_id] = (call_id,)
    values[i_from] = (from_,)
    values[i_to] = (to,)
    if "," in top:  # several Vias on the first line (as sipp answers): the first is checked
        vias = values[i_via] = _split_value("via", top)
        top = vias[0] if vias else ""
    else:
        values[i_via] = (top,) if top else ()
    # a first Via line with no value does not match; ".." is never in a
    # usual From or To (an empty host label: the exact check says so)
    joined = f"{cseq}\n{call_id}\n{from_}\n{to}\n{top}"
    usual = USUAL_RE.match(joined) if ".." not in joined else None
    if usual is None:
        method = check_fields(message)
    else:
        unusual = expires or len(message.body) > _MAX_CONTENT_LENGTH
        if i_hops >= 0:
            hops = texts[i_hops].strip()
            values[i_hops] = (hops,)
            unusual = unusual or hops not in _HOP_COUNTS
        if unusual:
            _check_numbers(message)
        method, transport, host, port, ptext = usual.groups()
    # the CSeq method of a request is its method (RFC 3261 8.1.1.5)
    if isinstance(message, Request) and method != message._method:
        raise ParseError(f"CSeq method {method} does not match request method {message._method}",
                         message=message)
    try:
        if usual is None:
            message.top_via()
        else:
            message._via = _via_of(top, transport, host, port, ptext)
    except ParseError as e:
        e.message = message
        raise


def _check_numbers(message: Message) -> None:
    """Refuse a numeric header out of its range. The Content-Length that
    parse() read is in range unless the body is 2 GiB or more."""
    names = message.names
    for name, limit in _NUMERIC_LIMITS:
        if name in names:
            values = message._decoded(names.index(name))
            value = values[0] if values else ""
            if not (value in _HOP_COUNTS or value.isdigit() and value.isascii() and len(value) < 10
                    and int(value) <= limit):
                _check_number(value, name, limit, message)


def check_fields(message: Message) -> str:
    """The checks of L{validate} one header at a time, in the order that
    picks the reason a message is refused with (RFC 4475 3.1.2.4 answers
    "due to the CSeq error" when Max-Forwards and Expires are off too); the
    CSeq method, for L{validate} to compare and the top Via, for it to
    read. A From or To line that passed is remembered: it comes back in
    every message of its dialog."""
    names = message.names
    values = message._values
    i = names.index("cseq")
    values[i] = _check_cseq(values[i], message)  # type: ignore[arg-type]
    method = values[i][0].partition(" ")[2]  # type: ignore[index]
    _check_numbers(message)
    i = names.index("call-id")
    _check_call_id(values[i], message)  # type: ignore[arg-type]
    for name in ("from", "to"):
        i = names.index(name)
        raw = message.lines[i]
        if raw not in _CHECKED_LINES:
            _CHECKED_LINES.store(raw, _check_name_addr(values[i], name, message))  # type: ignore[arg-type]
    return method


def _check_singletons(message: Message) -> None:
    """Refuse a header that may appear once but comes with different
    values (LWS aside)."""
    names = message.names
    for name in SINGLETONS:
        if names.count(name) > 1:
            values = {" ".join(v.split()) for v in message.get_all(name)}
            if len(values) > 1:
                raise ParseError(f"conflicting {label(name)} values", message=message)


def _check_cseq(values: Values, message: Message) -> Values:
    cseq = values[0] if values else ""
    number, space, method = cseq.partition(" ")
    if (space and number.isdigit() and number.isascii() and len(number) < 10 and number[0] != "0"
            and (method in _METHODS or TOKEN_RE.match(method))):
        return values  # the usual spelling: "314159 INVITE"
    m = CSEQ_RE.match(cseq)
    if m is None:
        raise ParseError(f"malformed CSeq {cseq[:40]!r}", message=message)
    try:
        number = int(m.group(1))
    except ValueError:  # more digits than int() converts
        number = 2**31
    if number >= 2**31:
        raise ParseError("CSeq number out of range", message=message)
    canonical = f"{number} {m.group(2)}"
    return values if canonical == cseq else (canonical,)  # normalised for readers; raw kept


def _check_number(value: str, name: str, limit: int, message: Message) -> None:
    try:
        bad = not value.isdigit() or not value.isascii() or int(value) > limit
    except ValueError:  # more digits than int() converts
        bad = True
    if bad:
        raise ParseError(f"bad {label(name)} value {value[:30]!r}", message=message)


def _check_call_id(values: Values, message: Message) -> None:
    call_id = values[0] if values else ""
    if not CALLID_RE.match(call_id):
        raise ParseError(f"malformed Call-ID {call_id[:40]!r}", message=message)


def _check_name_addr(values: Values, name: str, message: Message) -> Values:
    """The shape of a From or To (RFC 4475 3.1.2.6), and the name-addr
    parsed: what a proxy or registrar reads later (the tag, the URI) must
    not fail then (a port of 99999, an empty or 64-character host label, a
    host that is not text, junk after the URI)."""
    value = values[0] if values else ""
    if ":" not in value or not NAME_ADDR_SHAPE.match(value):
        raise ParseError(f"malformed {label(name)} {value[:60]!r}", message=message)
    try:
        parse_name_addr(value)
    except URIError as e:
        raise ParseError(f"malformed {label(name)}: {str(e)[:80]}", message=message) from None
    return values


_MAX_CONTENT_LENGTH = _NUMERIC_LIMITS[0][1]
_EXPIRES = frozenset(("expires", "min-expires"))
#: Max-Forwards values as usually spelled (no leading zero).
_HOP_COUNTS = frozenset(str(n) for n in range(256))
