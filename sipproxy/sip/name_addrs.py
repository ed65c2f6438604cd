"""What a user agent reads from From, To and Contact values, remembered
by value.

Every message of a call repeats the same From, To and Contact values, and
the user agent reads each several times: the tag (transaction and dialog
matching), the value without its tag (a dialog's URIs), the Contact's URI
(a dialog's remote target). Parsing a name-addr is a tenth of what a call
costs, so each value is parsed once and what was read from it is kept.

Only immutable readings (strings) are handed out: a parsed L{NameAddr} is
mutable and never leaves this module. A value that does not parse raises
L{URIError} every time and is not remembered. The table is bounded
(L{sipproxy.sip.bounded}): it is emptied when full, and overlong values
are parsed but not kept.
"""
from __future__ import annotations

import re
from typing import Optional

from sipproxy.sip.bounded import BoundedCache
from sipproxy.sip.uri import NameAddr, parse_name_addr

__all__ = ["Reading", "reading", "tag_of", "tagged", "untagged", "uri_text", "with_new_tag", "READINGS"]

#: a tag whose reading after C{;tag=} is the tag itself (a token)
_PLAIN_TAG = re.compile(r"[A-Za-z0-9.!%*_+`'~-]+\Z")
#: The From or To most user agents send, with its tag: C{name <sip:user@host:port>;tag=token}
#: (display name: tokens, each followed by one space; user: unreserved and
#: a few sub-delims, no C{;}; host: IPv4 or a name; one header parameter,
#: the tag). Read without a parse (L{_usual_reading}); anything else, and a
#: host or port out of range, is parsed.
_USUAL_TAGGED = re.compile(
    r"((?:[A-Za-z0-9.!%*_+`'~-]+ )*)<(sips?:[A-Za-z0-9._~!$&'()*+,=-]+@([A-Za-z0-9.-]+)(?::([0-9]{1,5}))?)>"
    r";tag=([A-Za-z0-9.!%*_+`'~-]+)\Z")
#: value -> its L{Reading}
READINGS = BoundedCache("name-addr readings", 2048, max_key=512)
_known = READINGS.get


class Reading:
    """One From/To/Contact value, parsed once; the other forms are made
    when first asked for."""

    __slots__ = ("tag", "_addr", "_untagged", "_uri")

    def __init__(self, addr: Optional[NameAddr]) -> None:
        self.tag: Optional[str] = addr.tag if addr is not None else None
        self._addr = addr  # None for a value this module wrote (every form known)
        self._untagged: Optional[tuple[str, str]] = None
        self._uri: Optional[str] = None

    def untagged(self) -> tuple[str, str]:
        """The value without its tag parameters, as given (URI bracketed
        or not) and with the URI bracketed (how a tag is appended safely)."""
        forms = self._untagged
        if forms is None:
            addr = self._addr
            assert addr is not None
            forms = self._untagged = addr.texts_without("tag")
        return forms

    def uri(self) -> str:
        """The URI, as text."""
        uri = self._uri
        if uri is None:
            assert self._addr is not None
            uri = self._uri = str(self._addr.uri)
        return uri


def reading(value: str) -> Reading:
    """The L{Reading} of C{value}; raises L{URIError} for a value that is
    not a name-addr."""
    found = _known(value)
    if found is None:
        found = _usual_reading(value) or Reading(parse_name_addr(value))
        READINGS.store(value, found)
    return found


def _usual_reading(value: str) -> Optional[Reading]:
    """The L{Reading} of a From or To of the usual shape (L{_USUAL_TAGGED})
    without parsing it: each call brings a new tag, so the caller's From
    (and the callee's To) would be parsed once a call. None for any other
    value. What it reads is what the parser reads (tests/test_name_addrs.py
    holds the two to it)."""
    m = _USUAL_TAGGED.match(value)
    if m is None:
        return None
    display, uri, host, port, tag = m.groups()
    if len(host) > 63 or ".." in host or host[0] == "." or port is not None and int(port) > 65535:
        return None  # the parser says what is wrong with it
    head = f"{display[:-1]} <{uri}>" if display else f"<{uri}>"
    found = Reading(None)
    found.tag = tag
    found._untagged = (head, head)
    found._uri = uri
    return found


def tag_of(value: str) -> Optional[str]:
    """The tag parameter of a From or To value (None without one, or an
    empty one); remembered per value, as a user agent reads the tags of
    every message of a call many times.

    @raise URIError: for a value that is not a name-addr (not remembered)."""
    return reading(value).tag


def untagged(value: str, tag: Optional[str] = None) -> tuple[str, str]:
    """C{value} without its tag, and with the URI bracketed and C{;tag=tag}
    (no tag when C{tag} is empty): the From or To of a dialog's requests."""
    bare, bracketed = reading(value).untagged()
    return bare, (f"{bracketed};tag={tag}" if tag else bracketed)


def uri_text(value: str) -> str:
    """The URI of a name-addr (a Contact's: a dialog's remote target)."""
    return reading(value).uri()


def with_new_tag(value: str, tag: str) -> str:
    """C{value} with its URI bracketed and C{;tag=tag} instead of any tag
    it had: the From of a request we start. The result is remembered as
    read (its tag, untagged forms and URI are those of C{value}), so the
    dialog made from it parses nothing."""
    if not tag:
        raise ValueError("an empty tag")
    base = reading(value)
    bracketed = base.untagged()[1]
    text = f"{bracketed};tag={tag}"
    _remember_written(text, tag, None, (bracketed, bracketed), base.uri())
    return text


def tagged(value: str, tag: str) -> str:
    """C{value}, a To without a tag, with C{;tag=tag} appended as it is:
    the To of a user agent server's responses. The result is remembered
    as read (the tag given, every other form that of C{value}), so the
    ACK and BYE that echo it parse nothing.

    @raise URIError: for a value that is not a name-addr."""
    if not tag:
        raise ValueError("an empty tag")
    base = reading(value)
    text = f"{value};tag={tag}"
    addr = base._addr  # None when this module wrote C{value}: it has a tag
    if addr is not None and not any(name.lower() == "tag" for name, _ in addr.params):  # not even an empty one
        # what it reads without a tag is C{value}'s (the forms made from C{addr} when first asked for)
        _remember_written(text, tag, addr, base._untagged, base._uri)
    return text


def _remember_written(text: str, tag: str, addr: Optional[NameAddr], untagged_forms: Optional[tuple[str, str]],
                      uri: Optional[str]) -> None:
    """Keep C{text}, a value we wrote by adding C{tag} to one already read,
    as read: its tag, its forms without the tag and its URI, with no
    parse. Only a plain token tag reads back as itself."""
    if _known(text) is None and _PLAIN_TAG.match(tag):
        written = Reading(addr)
        written.tag = tag
        written._untagged = untagged_forms
        written._uri = uri
        READINGS.store(text, written)
