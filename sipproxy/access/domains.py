"""Which domains this proxy serves, and the "not an open relay" rule.

L{Domains} answers "is this host one of ours?": a configured domain
(exact, or a true subdomain: C{a.example.com} is under C{example.com},
C{badexample.com} is not, unlike Net::SIP's suffix match), or one of the
proxy's own addresses. Without configured domains every domain is served,
as in Net::SIP.

L{RelayGuard} refuses (403) a new request that is neither to nor from a
served domain, nor to a registered contact; the predicates
L{registrar_request} and L{proxy_auth_needed} pick what the authorizers
challenge.
"""
from __future__ import annotations

import ipaddress
from typing import Any, Iterable, Optional


from zope.interface import implementer

from sipproxy.observe.logsafe import SafeLogger
from sipproxy.observe.logfields import message_fields
from sipproxy.interfaces import ILocationStore, IDispatcher, ILeg, IReceiver
from sipproxy.registrar.location import contact_key
from sipproxy.sip.message import Message, Request
from sipproxy.sip.stateless import is_ack_to_own_answer
from sipproxy.sip.uri import URI, URIError, is_ip_address, parse_name_addr

__all__ = ["Domains", "RelayGuard", "OwnAcks", "is_ack_for_own_response", "in_dialog_through_us", "registrar_request",
           "proxy_auth_needed", "names_us", "next_target", "has_foreign_route", "is_keepalive_for_us"]

log = SafeLogger()


def _normalise(domain: str) -> str:
    domain = domain.strip().lower().rstrip(".")
    if domain.startswith("[") and domain.endswith("]"):
        domain = domain[1:-1]
    if domain.startswith("*."):
        domain = domain[2:]
    elif domain.startswith("."):
        domain = domain[1:]
    return domain


class Domains:
    """The domains this proxy is responsible for.

    @param domains: domain names or IP addresses; None (or one C{*}) means
        every domain.
    @param dispatcher: its legs' addresses count as served domains (phones
        often use the proxy's address as their domain).
    """

    def __init__(self, domains: Optional[Iterable[str]] = None, dispatcher: IDispatcher = None) -> None:
        names = None if domains is None else [_normalise(d) for d in domains if d.strip()]
        if names is not None and ("*" in names or not names):
            names = None
        self.names: Optional[tuple[str, ...]] = tuple(dict.fromkeys(names)) if names is not None else None
        self.dispatcher = dispatcher

    @property
    def everything(self) -> bool:
        """True when no domain was configured: every domain is served."""
        return self.names is None

    def matches(self, host: str) -> bool:
        """C{host} is a configured domain or a true subdomain of one."""
        if self.names is None:
            return True
        host = _normalise(host)
        if is_ip_address(host):
            try:
                address = ipaddress.ip_address(host)
            except ValueError:
                return False
            return any(is_ip_address(n) and ipaddress.ip_address(n) == address for n in self.names)
        return any(host == name or (host.endswith("." + name) and not is_ip_address(name)) for name in self.names)

    def is_local(self, host: str, port: Optional[int] = None) -> bool:
        """C{host[:port]} is one of the proxy's legs."""
        return self.dispatcher is not None and self.dispatcher.is_local(host.strip("[]"), port)

    def served(self, host: str, port: Optional[int] = None) -> bool:
        return self.matches(host) or self.is_local(host, port)

    def __repr__(self) -> str:
        return f"Domains({'*' if self.names is None else ', '.join(self.names)})"


# -- request classification -------------------------------------------------------
def is_ack_for_own_response(request: Request, dispatcher: IDispatcher = None) -> bool:
    """An ACK to a final response this proxy sent statelessly (a 401, 403,
    404, ...): hop-by-hop, it ends here. Kept for callers of the old name;
    the test itself is L{sipproxy.sip.stateless.is_ack_to_own_answer}."""
    return is_ack_to_own_answer(request)


def in_dialog_through_us(request: Request, dispatcher: IDispatcher) -> bool:
    """A request inside a dialog this proxy record-routed: it has a To tag
    and its top Route (or, with a strict router or a rewritten contact, its
    Request-URI) names one of our legs."""
    if not request.to_tag:
        return False
    route = request.get("route")
    try:
        if route is not None:
            uri = parse_name_addr(route).uri
        else:
            uri = request.parsed_uri()
    except URIError:
        return False
    return uri.is_sip and dispatcher.is_local(uri.host, uri.port)


def names_us(uri: URI, dispatcher: IDispatcher) -> bool:
    """A sip/sips URI whose host and port are one of our legs (any user
    part: a Contact token names us too)."""
    return uri.is_sip and dispatcher.is_local(uri.host, uri.port)


def next_target(request: Request, dispatcher: IDispatcher) -> Optional[URI]:
    """Where a request goes after the proxy pops its own Route entries: the
    first Route that does not name us, else the Request-URI. None when a
    Route or the Request-URI cannot be parsed (the proxy answers 400)."""
    try:
        for value in request.get_all("route"):
            uri = parse_name_addr(value).uri
            if not names_us(uri, dispatcher):
                return uri
        uri = request.parsed_uri()
    except URIError:
        return None
    if names_us(uri, dispatcher) and uri.user is None and request.get("route") is not None:
        # a strict router put us in the Request-URI: the last Route is the target
        try:
            return parse_name_addr(request.get_all("route")[-1]).uri
        except URIError:
            return None
    return uri


def has_foreign_route(request: Request, dispatcher: IDispatcher) -> bool:
    """The request carries a preloaded Route entry naming someone else:
    the proxy would send it there whatever the Request-URI says. (The
    common request has no Route at all: that costs one lookup.)"""
    if request.get("route") is None:
        return False
    for value in request.get_all("route"):
        try:
            if not names_us(parse_name_addr(value).uri, dispatcher):
                return True
        except URIError:
            return True
    return False


def is_keepalive_for_us(request: Request, dispatcher: IDispatcher) -> bool:
    """An OPTIONS to the proxy itself (no user part, no Route): a phone's
    keep-alive, answered at once and forwarded nowhere (as Kamailio's
    default configuration does in REQINIT, before authentication)."""
    if request.method != "OPTIONS" or request.get("route") is not None:
        return False
    target = _request_uri_host(request)
    return target is not None and target[2] and dispatcher.is_local(target[0], target[1])


def _request_uri_host(request: Request) -> Optional[tuple[str, Optional[int], bool]]:
    try:
        uri = request.parsed_uri()
    except URIError:
        return None
    if not uri.is_sip:
        return None
    return uri.host, uri.port, uri.user is None


def _from_host(request: Request) -> Optional[str]:
    try:
        addr = request.name_addr("from")
    except URIError:
        return None
    if addr is None or not addr.uri.is_sip:
        return None
    return addr.uri.host


def registrar_request(domains: Domains) -> Any:
    """A chain filter: REGISTERs the registrar answers (Request-URI in a
    served domain)."""

    def check(packet: Message, leg: ILeg, addr: tuple[str, int]) -> bool:
        if not isinstance(packet, Request) or packet.method != "REGISTER":
            return False
        target = _request_uri_host(packet)
        return target is not None and domains.served(target[0], target[1])

    return check


def proxy_auth_needed(domains: Domains, dispatcher: IDispatcher, registrar: bool = True) -> Any:
    """A chain filter: new requests the proxy must authenticate (407).

    Without configured domains: every new request. With them: new requests
    from a served domain. Requests addressed to the proxy itself are no
    exception (a Route after them could lead anywhere); only a keep-alive
    OPTIONS to the proxy is answered without credentials. Inside a dialog
    we record-routed nothing is challenged (as Kamailio's C{loose_route}),
    except an INVITE whose target is not ours: from a served domain it
    could start a call to anywhere, so it is challenged like a new one.
    Never: ACK and CANCEL (they cannot be challenged) and the REGISTERs
    the registrar answers (those get a 401).
    """
    is_registrar_request = registrar_request(domains) if registrar else (lambda *a: False)

    def check(packet: Message, leg: ILeg, addr: tuple[str, int]) -> bool:
        if not isinstance(packet, Request) or packet.method in ("ACK", "CANCEL"):
            return False
        if is_registrar_request(packet, leg, addr):
            return False
        if in_dialog_through_us(packet, dispatcher):
            if packet.method != "INVITE":
                return False
            target = next_target(packet, dispatcher)
            if target is None or names_us(target, dispatcher) or (target.is_sip and domains.served(target.host,
                                                                                                    target.port)):
                return False
        elif is_keepalive_for_us(packet, dispatcher):
            return False
        if domains.everything:
            return True
        host = _from_host(packet)
        return host is not None and domains.served(host)

    return check


@implementer(IReceiver)
class OwnAcks:
    """Swallow ACKs to final responses the front door answered itself
    (401, 403, 404, 407, 423, 503, ...): they end here, the proxy must not
    forward them."""

    def __init__(self, dispatcher: IDispatcher) -> None:
        self.dispatcher = dispatcher

    def receive(self, packet: Message, leg: ILeg, addr: tuple[str, int]) -> bool:
        return isinstance(packet, Request) and is_ack_to_own_answer(packet)


@implementer(IReceiver)
class RelayGuard:
    """Refuse to relay: a new request must be to or from a served domain,
    or to a registered contact; anything else gets 403 (an ACK is
    dropped). Does nothing when every domain is served.

    @param store: an L{sipproxy.interfaces.ILocationStore} to recognise
        registered contacts; None to skip that test.
    """

    def __init__(self, dispatcher: IDispatcher, domains: Domains, store: Optional[ILocationStore] = None) -> None:
        self.dispatcher = dispatcher
        self.domains = domains
        self.store = store

    def receive(self, packet: Message, leg: ILeg, addr: tuple[str, int]) -> Any:
        if not isinstance(packet, Request) or self.domains.everything:
            return False
        dispatcher = self.dispatcher
        if is_ack_to_own_answer(packet):
            return True
        if in_dialog_through_us(packet, dispatcher):
            if packet.method != "INVITE":
                return False  # as Kamailio's loose_route: our Route is the dialog's proof
            # a re-INVITE can start a call: its target, or its sender, must be ours
            target = next_target(packet, dispatcher)
            if target is None or self._ours(target) or self._from_served(packet):
                return False
            return self._unless_registered(target, packet, leg, addr)
        if has_foreign_route(packet, dispatcher):
            # a preloaded route leads wherever it names, whatever the
            # Request-URI says: only for senders of a served domain (who
            # are authenticated when there are users)
            return False if self._from_served(packet) else self._refuse(packet, leg, addr)
        target = _request_uri_host(packet)
        if target is None:
            try:
                packet.parsed_uri()
            except URIError:
                return False  # the proxy answers 400
            # tel: and other schemes: only from our own users
            if self._from_served(packet):
                return False
            return self._refuse(packet, leg, addr)
        if self.domains.served(target[0], target[1]):
            return False
        if self._from_served(packet):
            return False
        return self._unless_registered(packet.parsed_uri(), packet, leg, addr)

    def _ours(self, uri: URI) -> bool:
        return names_us(uri, self.dispatcher) or (uri.is_sip and self.domains.served(uri.host, uri.port))

    def _from_served(self, packet: Request) -> bool:
        host = _from_host(packet)
        return host is not None and self.domains.served(host)

    def _unless_registered(self, target: URI, packet: Request, leg: ILeg, addr: tuple[str, int]) -> Any:
        """Pass a request to a registered contact; refuse the rest."""
        if self.store is None or not target.is_sip:
            return self._refuse(packet, leg, addr)
        d = self.store.has_contact(contact_key(target))
        d.addCallbacks(lambda found: False if found else self._refuse(packet, leg, addr),
                       lambda failure: self._refuse(packet, leg, addr))
        return d

    def _refuse(self, packet: Request, leg: ILeg, addr: tuple[str, int]) -> bool:
        if packet.method != "ACK":
            log.info("{method} {uri} from {source}: answered 403, neither to nor from a served domain",
                     uri=packet.uri, **message_fields(packet, addr, leg))
            self.dispatcher.respond(packet, 403, "Forbidden (relaying denied)", leg, addr)
        return True

