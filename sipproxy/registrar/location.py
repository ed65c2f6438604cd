"""Location service data: bindings and the keys they are filed under.

Pure data, no Twisted and no I/O: the registrar builds L{Binding}s, the
location stores (L{sipproxy.stores}) keep them and hand them back.

A binding is one contact of one address-of-record (RFC 3261 10.3). Two
contacts of a REGISTER name the same binding when they carry the same
C{+sip.instance} (and C{reg-id}) (RFC 5626 6, RFC 5627 6), otherwise when
their URIs are equal under RFC 3261 19.1.4; L{binding_key} turns either
rule into a string, so the stores can match without parsing URIs.
"""
from __future__ import annotations

import json
import math
import time
from typing import Optional, Sequence

import attr

from sipproxy.sip.addresses import address_of_record
from sipproxy.sip.uri import URI, URIError, parse_uri

__all__ = [
    "Binding",
    "LocationError",
    "OutOfOrder",
    "StoreUnavailable",
    "binding_key",
    "contact_key",
    "best_first",
    "check_order",
    "WallClock",
]

#: URI parameters that must match for two URIs to be equal (RFC 3261 19.1.4).
_KEY_PARAMS = ("transport", "user", "ttl", "method", "maddr")


class WallClock:
    """C{IReactorTime.seconds} without a reactor.

    The only wall clock in the package: the default of the logic pieces
    that take a clock (registrar, memory store, authorizer, rate limit), so
    that code written the Net::SIP way (C{Registrar(dispatcher)}) still
    works without a reactor at hand. Everything sipproxy wires itself
    passes the reactor, and tests pass C{task.Clock}."""

    #: C{time.time} itself, as Twisted's reactors do: no Python frame per call
    seconds = staticmethod(time.time)


class LocationError(Exception):
    """A location store could not do what was asked."""


class OutOfOrder(LocationError):
    """RFC 3261 10.3 step 7: a REGISTER carries the Call-ID of an existing
    binding with a lower CSeq; the whole update is aborted."""

    def __init__(self, key: str, stored_cseq: int, cseq: int) -> None:
        super().__init__(f"binding {key!r} was updated with CSeq {stored_cseq}, request has {cseq}")
        self.key = key
        self.stored_cseq = stored_cseq
        self.cseq = cseq


class StoreUnavailable(LocationError):
    """The store's backend cannot be reached (Redis down, disk error):
    answer 503 with C{retry_after} and try again later."""

    def __init__(self, reason: str, retry_after: int = 5) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


def contact_key(uri: URI) -> str:
    """The comparison form of a contact URI (RFC 3261 19.1.4): scheme,
    user (unescaped), host (lower case), port, and the parameters that
    must match. Other parameters do not count, so two URIs that differ
    only in a parameter both carry with different values share a key (the
    RFC calls them different; no phone relies on that)."""
    if not uri.is_sip:
        return str(uri.without_params()).lower() if uri.opaque is None else str(uri)
    from urllib.parse import unquote

    params = sorted(
        (name.lower(), (value or "").lower()) for name, value in uri.params if name.lower() in _KEY_PARAMS
    )
    text = address_of_record(uri.scheme, uri.user, uri.host, uri.port, drop_default_port=False)
    text += "".join(f";{n}={v}" for n, v in params)
    if uri.headers:
        text += "?" + "&".join(sorted(f"{unquote(n).lower()}={unquote(v or '').lower()}" for n, v in uri.headers))
    return text


def binding_key(uri: URI, instance: Optional[str] = None, reg_id: Optional[str] = None) -> str:
    """The key a binding is filed under within its address-of-record."""
    if instance:
        key = f"instance:{instance.strip()}"
        if reg_id:
            key += f";reg-id={reg_id.strip()}"
        return key
    return "uri:" + contact_key(uri)


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Binding:
    """One contact of an address-of-record.

    @ivar contact: the contact URI as the phone wrote it (inside C{<>}).
    @ivar params: the Contact header parameters as given, without
        C{expires} (C{;q=0.5;+sip.instance="<urn:...>";reg-id=1}).
    @ivar expires: seconds left (at the time the store answered).
    @ivar call_id: Call-ID of the REGISTER that made or last refreshed it.
    @ivar cseq: its CSeq number.
    @ivar registered: when it was last refreshed (seconds since the epoch,
        by the clock of the node that handled the REGISTER).
    @ivar path: the Path header values of that REGISTER (RFC 3327).
    @ivar source: C{proto:host:port} the REGISTER came from.
    """

    contact: str
    params: str = ""
    expires: int = 0
    call_id: str = ""
    cseq: int = 0
    registered: float = 0.0
    path: tuple[str, ...] = attr.ib(default=(), converter=tuple)
    source: str = ""

    # -- derived ---------------------------------------------------------
    def uri(self) -> URI:
        """The contact parsed; raises L{URIError}."""
        return parse_uri(self.contact)

    def param(self, name: str) -> Optional[str]:
        """A Contact header parameter (C{""} for a flag), or None."""
        from sipproxy.sip.uri import parse_params

        try:
            params = parse_params(self.params, strict=False)
        except URIError:
            return None
        name = name.lower()
        for n, v in params:
            if n.lower() == name:
                return "" if v is None else v
        return None

    @property
    def q(self) -> float:
        """The q-value; 1.0 when absent or malformed (RFC 3261 20.10)."""
        value = self.param("q")
        try:
            return max(0.0, min(1.0, float(value))) if value else 1.0
        except ValueError:
            return 1.0

    @property
    def key(self) -> str:
        try:
            uri = self.uri()
        except URIError:
            return "raw:" + self.contact
        return binding_key(uri, _unquote(self.param("+sip.instance")), self.param("reg-id"))

    @property
    def contact_key(self) -> str:
        try:
            return contact_key(self.uri())
        except URIError:
            return self.contact

    def header_value(self) -> str:
        """The Contact value for a 200 to REGISTER: C{<uri>;params;expires=N}."""
        return f"<{self.contact}>{self.params};expires={max(0, int(self.expires))}"

    def with_expires(self, expires: float) -> "Binding":
        return attr.evolve(self, expires=int(math.ceil(expires)) if expires > 0 else 0)

    # -- storage form ------------------------------------------------------
    def to_json(self) -> str:
        """What stores keep (everything except C{expires}, which they
        track themselves)."""
        return json.dumps(
            {"c": self.contact, "p": self.params, "i": self.call_id, "n": self.cseq,
             "t": self.registered, "r": list(self.path), "s": self.source, "k": self.contact_key},
            separators=(",", ":"), ensure_ascii=False,
        )

    @classmethod
    def from_json(cls, text: str, expires: float) -> "Binding":
        data = json.loads(text)
        return cls(
            contact=data["c"], params=data.get("p", ""), expires=int(math.ceil(expires)) if expires > 0 else 0,
            call_id=data.get("i", ""), cseq=int(data.get("n", 0)), registered=float(data.get("t", 0.0)),
            path=tuple(data.get("r", ())), source=data.get("s", ""),
        )


def _unquote(value: Optional[str]) -> Optional[str]:
    if value and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def check_order(current: dict, keys, call_id: str, cseq: int) -> None:
    """RFC 3261 10.3 step 7 for the bindings in C{current} (key to
    L{Binding}) that C{keys} names: raise L{OutOfOrder} when one holds the
    same Call-ID and a higher CSeq. Used by stores that check in Python."""
    for key in keys:
        binding = current.get(key)
        if binding is not None and binding.call_id == call_id and binding.cseq > cseq:
            raise OutOfOrder(key, binding.cseq, cseq)


def best_first(bindings: Sequence[Binding]) -> list[Binding]:
    """Bindings in the order a request should try them: highest q first,
    then the most recently refreshed."""
    return sorted(bindings, key=lambda b: (-b.q, -b.registered))
