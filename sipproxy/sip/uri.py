"""SIP, SIPS and tel URIs and name-addr values (RFC 3261 19.1, 20.10, 25.1).

Pure data: parse, inspect, modify and serialise. An unmodified URI serialises
to exactly the text it was parsed from, so a proxy that only reads a URI
forwards it untouched.
"""
from __future__ import annotations

import ipaddress
import re  # noqa: F401  (re.Match in an annotation)
from typing import Iterable, Optional, Sequence

# one place for ports, IP literals and addresses-of-record (DEFAULT_PORTS re-exported)
from sipproxy.sip.addresses import DEFAULT_PORTS, address_of_record as _address_of_record
from sipproxy.sip.addresses import default_port as _default_port, is_ip_literal as _is_ip_literal

from sipproxy.sip.grammar import ESCAPE_RE, HOST_LABEL_RE, HOST_RE, SCHEME_RE, SIMPLE_PARAMS_RE, TOKEN_RE

__all__ = [
    "URIError",
    "URI",
    "NameAddr",
    "parse_uri",
    "parse_name_addr",
    "format_name_addr",
    "parse_params",
    "format_params",
    "split_host_port",
    "format_host_port",
    "is_ip_address",
    "uri_equal",
    "DEFAULT_PORTS",
]


Param = tuple[str, Optional[str]]

_WS = " \t\r\n"


class URIError(ValueError):
    """A URI or name-addr that cannot be parsed; C{str(err)} says why."""


def is_ip_address(host: str) -> bool:
    """True for an IPv4 literal or an IPv6 literal (bracketed or not)."""
    return _is_ip_literal(host)


def split_host_port(hostport: str) -> tuple[str, Optional[int]]:
    """Split C{host[:port]}, C{[v6]:port} or a bare IPv6 literal.

    The host comes back without brackets.
    @raise URIError: for a malformed port or bracket.
    """
    hostport = hostport.strip()
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise URIError(f"unterminated IPv6 reference in {hostport!r}")
        host, rest = hostport[1:end], hostport[end + 1 :]
        if not rest:
            return host, None
        if not rest.startswith(":"):
            raise URIError(f"junk after IPv6 reference in {hostport!r}")
        return host, _port(rest[1:], hostport)
    if hostport.count(":") > 1:  # bare IPv6 literal
        return hostport, None
    host, sep, port = hostport.partition(":")
    return host, (_port(port, hostport) if sep else None)


def _port(text: str, context: str) -> int:
    text = text.strip()
    if not text.isdigit() or len(text) > 5 or int(text) > 65535:
        raise URIError(f"bad port in {context!r}")
    return int(text)


def format_host_port(host: str, port: Optional[int] = None) -> str:
    """Inverse of L{split_host_port}: brackets IPv6, omits a missing port."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return host if port is None else f"{host}:{port}"


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    """Split on C{sep} where it is not inside a quoted string."""
    if '"' not in text:
        return text.split(sep)
    parts: list[str] = []
    start = 0
    quoted = False
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if quoted:
            if ch == "\\":
                i += 1
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == sep:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    if quoted:
        raise URIError(f"unterminated quoted string in {text!r}")
    parts.append(text[start:])
    return parts


def parse_params(text: str, strict: bool = True) -> list[Param]:
    """Parse C{;name=value;flag} (the leading C{;} optional) into pairs.

    Names keep their spelling; compare them with C{.lower()}. LWS around
    C{;} and C{=} is allowed (RFC 3261 25.1). With C{strict}, an empty
    parameter (C{;;}) or a name that is not a token is an error.
    """
    if SIMPLE_PARAMS_RE.match(text):  # the common case: no LWS, no quotes
        return [(name, value if eq else None)
                for name, eq, value in (item.partition("=") for item in text[1:].split(";"))]
    text = text.strip(_WS)
    if not text:
        return []
    if text.startswith(";"):
        text = text[1:]
    params: list[Param] = []
    for item in _split_outside_quotes(text, ";"):
        name, eq, value = item.partition("=")
        name = name.strip(_WS)
        if not name or not TOKEN_RE.match(name):
            if strict:
                raise URIError(f"malformed parameter {item.strip()!r}")
            continue
        params.append((name, value.strip(_WS) if eq else None))
    return params


def format_params(params: Iterable[Param]) -> str:
    """Inverse of L{parse_params}: C{;a=1;b}."""
    return "".join(f";{n}" if v is None else f";{n}={v}" for n, v in params)


def _param(params: Sequence[Param], name: str) -> Optional[str]:
    name = name.lower()
    for n, v in params:
        if n.lower() == name:
            return "" if v is None else v
    return None


def _has_param(params: Sequence[Param], name: str) -> bool:
    name = name.lower()
    return any(n.lower() == name for n, _ in params)


class URI:
    """A parsed URI: C{sip:}/C{sips:} (user, password, host, port, params,
    headers), C{tel:} (number in C{user}, params) or any other scheme
    (opaque text in C{opaque}).

    Attributes are plain and writable, but go through L{replace} or the
    setters so the cached text is dropped; C{str()} gives the original text
    until something changes.
    """

    __slots__ = ("scheme", "user", "password", "host", "port", "params", "headers", "opaque", "_text")

    def __init__(
        self,
        scheme: str = "sip",
        user: Optional[str] = None,
        host: str = "",
        port: Optional[int] = None,
        params: Optional[list[Param]] = None,
        headers: Optional[list[Param]] = None,
        password: Optional[str] = None,
        opaque: Optional[str] = None,
    ) -> None:
        self.scheme = scheme.lower()
        self.user = user
        self.password = password
        self.host = host
        self.port = port
        self.params = params if params is not None else []
        self.headers = headers if headers is not None else []
        self.opaque = opaque
        self._text: Optional[str] = None

    # -- reading -------------------------------------------------------
    @property
    def is_sip(self) -> bool:
        """True for C{sip:} and C{sips:} URIs, the ones a proxy can route."""
        return self.scheme in ("sip", "sips")

    def param(self, name: str) -> Optional[str]:
        """Value of a URI parameter (C{""} for a flag), or None if absent."""
        return _param(self.params, name)

    def has_param(self, name: str) -> bool:
        return _has_param(self.params, name)

    @property
    def transport(self) -> Optional[str]:
        """The C{transport=} parameter in lower case, if any."""
        value = _param(self.params, "transport")
        return value.lower() if value else None

    @property
    def maddr(self) -> Optional[str]:
        value = _param(self.params, "maddr")
        return value or None

    @property
    def host_port(self) -> str:
        return format_host_port(self.host, self.port)

    @property
    def effective_port(self) -> int:
        """The explicit port, else the default for the scheme and transport."""
        if self.port is not None:
            return self.port
        return _default_port(self.scheme, self.transport)

    @property
    def address_of_record(self) -> str:
        """C{scheme:user@host} in canonical form (host lower-cased), the key
        a registrar files bindings under (RFC 3261 10.3 step 5)."""
        if not self.is_sip:
            return str(self.without_params())
        return _address_of_record(self.scheme, self.user, self.host, self.port, drop_default_port=False)

    # -- changing ------------------------------------------------------
    def copy(self) -> "URI":
        other = URI.__new__(URI)
        for slot in URI.__slots__:
            setattr(other, slot, getattr(self, slot))
        other.params = list(self.params)
        other.headers = list(self.headers)
        return other

    def replace(self, **changes: object) -> "URI":
        """A copy with the given attributes changed."""
        other = self.copy()
        for name, value in changes.items():
            if name not in URI.__slots__ or name.startswith("_"):
                raise TypeError(f"unknown URI attribute {name!r}")
            setattr(other, name, value)
        other._text = None
        return other

    def with_param(self, name: str, value: Optional[str] = None) -> "URI":
        """A copy with parameter C{name} set (replacing an existing one)."""
        params = [(n, v) for n, v in self.params if n.lower() != name.lower()]
        params.append((name, value))
        return self.replace(params=params)

    def without_params(self, *names: str) -> "URI":
        """A copy without the named parameters (all of them, and the
        headers, when no name is given)."""
        if not names:
            return self.replace(params=[], headers=[])
        drop = {n.lower() for n in names}
        return self.replace(params=[(n, v) for n, v in self.params if n.lower() not in drop])

    # -- text ----------------------------------------------------------
    def __str__(self) -> str:
        if self._text is None:
            self._text = self._format()
        return self._text

    def _format(self) -> str:
        if self.opaque is not None:
            return f"{self.scheme}:{self.opaque}"
        if self.scheme == "tel":
            return f"tel:{self.user or ''}{format_params(self.params)}"
        userinfo = ""
        if self.user is not None:
            userinfo = self.user
            if self.password is not None:
                userinfo += ":" + self.password
            userinfo += "@"
        text = f"{self.scheme}:{userinfo}{format_host_port(self.host, self.port)}"
        text += format_params(self.params)
        if self.headers:
            text += "?" + "&".join(f"{n}={v or ''}" for n, v in self.headers)
        return text

    def __repr__(self) -> str:
        return f"URI({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, URI):
            return NotImplemented
        return uri_equal(self, other)

    def __hash__(self) -> int:
        host = (self.host or "").lower()
        if ":" in host:  # IPv6 literals are equal as addresses (see uri_equal)
            try:
                host = ipaddress.ip_address(host).compressed
            except ValueError:
                pass
        return hash((self.scheme, host, self.port))


def parse_uri(text: str) -> URI:
    """Parse a URI (no angle brackets).

    @raise URIError: naming what is wrong.
    """
    text = text.strip(_WS)
    scheme, colon, rest = text.partition(":")
    if not colon or not SCHEME_RE.match(scheme):
        raise URIError(f"not a URI: {text!r}")
    lscheme = scheme.lower()
    if lscheme in ("sip", "sips"):
        uri = _parse_sip(lscheme, rest, text)
    elif lscheme == "tel":
        number, _, params = rest.partition(";")
        if not number:
            raise URIError(f"tel URI without a number: {text!r}")
        uri = URI("tel", user=number, params=parse_params(params))
    else:
        if not rest or any(c in rest for c in " \t<>\""):
            raise URIError(f"malformed {lscheme} URI: {text!r}")
        uri = URI(lscheme, opaque=rest)
    uri._text = text
    return uri


def _parse_sip(scheme: str, rest: str, text: str) -> URI:
    if not rest or any(c in rest for c in " \t\r\n<>\""):
        raise URIError(f"malformed SIP URI: {text!r}")
    user = password = None
    at = rest.find("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        if not userinfo:
            raise URIError(f"empty user part in {text!r}")
        user, colon, pw = userinfo.partition(":")
        if colon:
            password = pw
    headers: list[Param] = []
    qmark = rest.find("?")
    if qmark >= 0:
        rest, hdrs = rest[:qmark], rest[qmark + 1 :]
        for item in hdrs.split("&"):
            name, eq, value = item.partition("=")
            if not name:
                raise URIError(f"malformed URI header in {text!r}")
            headers.append((name, value if eq else None))
    hostport, _, params = rest.partition(";")
    host, port = split_host_port(hostport)
    if not host or not HOST_RE.match(format_host_port(host)):
        raise URIError(f"malformed host in {text!r}")
    if (len(host) > 63 or ".." in host or host[0] == ".") and ":" not in host and not HOST_LABEL_RE.match(host):
        # an empty label, or one of 64 characters or more (RFC 1035 2.3.4)
        raise URIError(f"malformed host name in {text!r}")
    if ":" in host:
        try:
            ipaddress.IPv6Address(host.split("%")[0])
        except ValueError:
            raise URIError(f"malformed IPv6 address in {text!r}") from None
    try:
        parsed_params = parse_params(params)
    except URIError as e:
        raise URIError(f"{e} in {text!r}") from None
    return URI(scheme, user=user, host=host, port=port, params=parsed_params, headers=headers, password=password)


class NameAddr:
    """A C{name-addr} or C{addr-spec} with header parameters: the value of
    From, To, Contact, Route, Record-Route (RFC 3261 20.10).

    Without angle brackets every C{;param} belongs to the header, not to the
    URI (RFC 3261 20.10), which is how a tag on C{From: sip:a@b;tag=1} is
    read.
    """

    __slots__ = ("display", "uri", "params", "bracketed", "_text")

    def __init__(
        self,
        uri: URI,
        display: Optional[str] = None,
        params: Optional[list[Param]] = None,
        bracketed: bool = True,
    ) -> None:
        self.uri = uri
        self.display = display
        self.params = params if params is not None else []
        self.bracketed = bracketed
        self._text: Optional[str] = None

    def param(self, name: str) -> Optional[str]:
        return _param(self.params, name)

    @property
    def tag(self) -> Optional[str]:
        return _param(self.params, "tag") or None

    def replace(self, **changes: object) -> "NameAddr":
        other = NameAddr(self.uri, self.display, list(self.params), self.bracketed)
        for name, value in changes.items():
            if name not in ("display", "uri", "params", "bracketed"):
                raise TypeError(f"unknown NameAddr attribute {name!r}")
            setattr(other, name, value)
        return other

    def with_param(self, name: str, value: Optional[str] = None) -> "NameAddr":
        params = [(n, v) for n, v in self.params if n.lower() != name.lower()]
        params.append((name, value))
        return self.replace(params=params)

    def _head(self, bracketed: bool) -> str:
        """The display name and URI, the URI in brackets when asked or
        when its parameters, headers, a comma or a question mark need them."""
        uri = str(self.uri)
        if self.display is not None:
            return f"{self.display} <{uri}>"
        if bracketed or self.uri.params or self.uri.headers or "," in uri or "?" in uri:
            return f"<{uri}>"
        return uri

    def __str__(self) -> str:
        if self._text is not None:
            return self._text
        return self._head(self.bracketed) + format_params(self.params)

    def texts_without(self, name: str) -> tuple[str, str]:
        """This value as text without the parameter C{name} (lower case):
        as it was bracketed, and with the URI bracketed. What
        C{str(self.replace(params=...))} gives, without the copies."""
        params = format_params([(n, v) for n, v in self.params if n.lower() != name])
        return self._head(self.bracketed) + params, self._head(True) + params

    def __repr__(self) -> str:
        return f"NameAddr({str(self)!r})"


def format_name_addr(display: Optional[str], uri: str, params: Iterable[Param] = ()) -> str:
    """C{display <uri>;params} (the display name as it is, quoted or not)."""
    head = f"{display} <{uri}>" if display is not None else f"<{uri}>"
    return head + format_params(params)


def parse_name_addr(text: str) -> NameAddr:
    """Parse a From/To/Contact/Route value.

    @raise URIError: for an unbalanced quote or bracket, a malformed URI or
        a malformed parameter.
    """
    original = text
    text = text.strip(_WS)
    display: Optional[str] = None
    if text.startswith('"'):
        end = _end_of_quoted(text)
        display = text[: end + 1]
        text = text[end + 1 :].lstrip(_WS)
        if not text.startswith("<"):
            raise URIError(f"quoted display name without <URI> in {original!r}")
    lt = text.find("<")
    if lt >= 0:
        if display is None:
            name = text[:lt].strip(_WS)
            if '"' in name or ">" in name:
                raise URIError(f"malformed display name in {original!r}")
            display = name or None
        gt = text.find(">", lt)
        if gt < 0:
            raise URIError(f"unterminated <URI> in {original!r}")
        uri = parse_uri(text[lt + 1 : gt])
        rest = text[gt + 1 :].lstrip(_WS)
        if rest and rest[0] != ";":
            raise URIError(f"junk after <URI> in {original!r}")
        params = parse_params(rest)
        addr = NameAddr(uri, display, params, bracketed=True)
    else:
        if ">" in text or '"' in text:
            raise URIError(f"unbalanced brackets or quotes in {original!r}")
        uri_text, _, params_text = text.partition(";")
        if "?" in uri_text:
            raise URIError(f"URI with headers not enclosed in <> in {original!r}")
        uri = parse_uri(uri_text)
        addr = NameAddr(uri, None, parse_params(params_text), bracketed=False)
    addr._text = original.strip(_WS)
    return addr


def _end_of_quoted(text: str) -> int:
    """Index of the quote closing the quoted string that starts text."""
    i = 1
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == '"':
            return i
        i += 1
    raise URIError(f"unterminated quoted string in {text!r}")


# -- comparison (RFC 3261 19.1.4) -----------------------------------------
_MUST_MATCH = ("user", "ttl", "method", "maddr", "transport")


def uri_equal(a: URI, b: URI) -> bool:
    """Compare two URIs as RFC 3261 19.1.4 says.

    Scheme and host compare case-insensitively, user and password
    case-sensitively after %-unescaping; a port (or user, ttl, method,
    maddr, transport parameter) present in one URI must be present and
    equal in the other; other parameters count only when both carry them;
    URI headers must all match.
    """
    if a.scheme != b.scheme:
        return False
    if not a.is_sip:
        if a.opaque is not None or b.opaque is not None:
            return (a.opaque or "") == (b.opaque or "")
        return _unq(a.user) == _unq(b.user) and _params_equal(a.params, b.params, ())
    if _unq(a.user) != _unq(b.user) or _unq(a.password) != _unq(b.password):
        return False
    if not _hosts_equal(a.host, b.host) or a.port != b.port:
        return False
    if not _params_equal(a.params, b.params, _MUST_MATCH):
        return False
    ha = {_unq(n).lower(): _unq(v or "").lower() for n, v in a.headers}
    hb = {_unq(n).lower(): _unq(v or "").lower() for n, v in b.headers}
    return ha == hb


#: Characters whose %HEX HEX form is not the same as the character
#: (RFC 3261 19.1.4 "reserved", and % itself so that unescaping stays
#: one level deep).
_KEEP_ESCAPED = frozenset(";/?:@&=+$,%")


def _unescape(match: "re.Match[str]") -> str:
    ch = chr(int(match.group(1), 16))
    return "%" + match.group(1).upper() if ch in _KEEP_ESCAPED else ch


def _unq(text: Optional[str]) -> Optional[str]:
    """Comparison form: escapes of unreserved characters decoded, the
    others kept with upper-case hex digits."""
    if text is None or "%" not in text:
        return text
    return ESCAPE_RE.sub(_unescape, text)


def _hosts_equal(a: str, b: str) -> bool:
    if a.lower() == b.lower():
        return True
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return False


def _params_equal(a: Sequence[Param], b: Sequence[Param], must: Sequence[str]) -> bool:
    pa = {_unq(n).lower(): _unq(v).lower() if v is not None else None for n, v in a}
    pb = {_unq(n).lower(): _unq(v).lower() if v is not None else None for n, v in b}
    for name in must:
        if (name in pa) != (name in pb):
            return False
    for name in pa.keys() & pb.keys():
        if pa[name] != pb[name]:
            return False
    return True
