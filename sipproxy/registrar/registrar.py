"""The registrar (RFC 3261 10.3), after Net::SIP's Registrar.

Where Net::SIP replaces an address-of-record's contacts with those of each
REGISTER, this one follows the RFC: bindings are merged, ordered by
Call-ID and CSeq, removed with C{Contact: *} and C{Expires: 0}, queried by
a REGISTER without Contact; a too-brief interval gets 423 with
C{Min-Expires}; the 200 lists every binding with its remaining time.
Bindings keep their C{+sip.instance}/C{reg-id} parameters and the Path of
their REGISTER (RFC 3327, RFC 5626).

Like Net::SIP's registrar in front of a proxy, it also routes: a new
request for a registered address-of-record gets the best binding as its
Request-URI (highest q, then the most recently refreshed) and goes on to
the next receiver (the proxy). An unknown user of a configured domain gets
404; anything else goes on unchanged.

Bindings live in an L{ILocationStore}; time comes from an injected
C{IReactorTime}, so tests drive it with C{task.Clock}.
"""
from __future__ import annotations

import email.utils
from typing import Any, Iterable, Optional, Union

from twisted.internet.interfaces import IReactorTime
from twisted.internet.defer import Deferred

from twisted.python.failure import Failure
from zope.interface import implementer

from sipproxy.observe.counters import status_counts
from sipproxy.observe.logsafe import SafeLogger
from sipproxy.observe.logfields import message_fields
from sipproxy.interfaces import IDispatcher, ILeg, ILocationStore, IReceiver
from sipproxy.registrar.location import Binding, OutOfOrder, StoreUnavailable, WallClock, best_first, contact_key
from sipproxy.sip.addresses import address_of_record
from sipproxy.sip.message import Message, Request
from sipproxy.sip.stateless import stateless_answer
from sipproxy.proxy.flows import Flow, FlowTokens, came_over_nat
from sipproxy.access.domains import Domains
from sipproxy.sip.uri import URI, URIError, format_host_port, format_params, parse_name_addr, parse_uri

__all__ = ["Registrar", "SUPPORTED", "answer_store_failure", "DEFAULT_MAX_CONTACTS", "UDP_ANSWER_LIMIT"]

log = SafeLogger()

#: Option tags the registrar supports (a Require naming others gets 420).
SUPPORTED = frozenset(["path"])

#: RFC 3261 10.3 step 7: only intervals below one hour may be refused.
_ONE_HOUR = 3600

#: Contacts one address-of-record may hold by default (Kamailio's max_contacts).
DEFAULT_MAX_CONTACTS = 10

#: The largest 200 to REGISTER sent over UDP, in bytes (RFC 3261 18.1.1:
#: 1300 when the path MTU is unknown).
UDP_ANSWER_LIMIT = 1300


def answer_store_failure(dispatcher: IDispatcher, failure: Failure, request: Request, leg: ILeg,
                         addr: tuple[str, int]) -> bool:
    """The one answer to a location store that failed: 503 with the
    store's Retry-After when it is unavailable (RFC 3261 21.5.4), 500 for
    anything else (logged with its traceback); an ACK gets nothing."""
    if request.method == "ACK":
        return True
    if failure.check(StoreUnavailable):
        log.warn("location store unavailable for {method} from {source}: {reason}",
                 **message_fields(request, addr, leg), reason=failure.value.reason)
        dispatcher.respond(request, 503, "Service Unavailable (location service)", leg, addr,
                           (("Retry-After", str(failure.value.retry_after)),))
    else:
        log.failure("location store failed for {method} from {source}", failure,
                    **message_fields(request, addr, leg))
        dispatcher.respond(request, 500, "Server Internal Error (location service)", leg, addr)
    return True


@implementer(IReceiver)
class Registrar:
    """Answers REGISTER for the served domains and routes requests to
    registered users.

    @param dispatcher: answers go out through its C{respond}.
    @param store: the L{ILocationStore} (in memory if None).
    @param clock: C{IReactorTime} for C{Date} and refresh times (the
        wall clock when None).
    @param domains: a L{Domains}, or domain names; None serves every
        domain (as Net::SIP without C{domains}).
    @param min_expires: shorter non-zero intervals get 423.
    @param max_expires: longer ones are cut to this.
    @param default_expires: when the REGISTER names no interval.
    @param route: also route non-REGISTER requests to bindings (off for a
        registrar behind L{sipproxy.access.filters.Redirect}).
    @param max_contacts: contacts one address-of-record may hold; a
        REGISTER adding more gets 403. None: no limit.
    @param flows: a L{FlowTokens}: a REGISTER that came over NAT (its
        Contact is not where it came from) is filed with a Route back to
        the flow it came over, so requests reach the phone (None: contacts
        are used as they stand).
    @param keeper: a L{sipproxy.registrar.flow_keeper.FlowKeeper} told about
        every binding reached over a flow, to keep the NAT open and drop the
        binding when the flow dies.
    """

    def __init__(
        self,
        dispatcher: IDispatcher,
        store: Optional[ILocationStore] = None,
        clock: Optional[IReactorTime] = None,
        domains: Union[Domains, Iterable[str], None] = None,
        min_expires: int = 60,
        max_expires: int = 3600,
        default_expires: Optional[int] = None,
        route: bool = True,
        max_contacts: Optional[int] = DEFAULT_MAX_CONTACTS,
        flows: Optional[FlowTokens] = None,
        keeper: Any = None,
    ) -> None:
        if min_expires < 0 or max_expires < 1 or min_expires > max_expires:
            raise ValueError(f"want 0 <= min_expires ({min_expires}) <= max_expires ({max_expires})")
        if store is None:  # a convenience; the store layer sits above this one
            from sipproxy.registrar.memory_store import MemoryStore

            store = MemoryStore(clock)
        if clock is None:
            clock = WallClock()
        self.dispatcher = dispatcher
        self.store = store
        self.clock = clock
        self.domains = domains if isinstance(domains, Domains) else Domains(domains, dispatcher)
        if self.domains.dispatcher is None:
            self.domains.dispatcher = dispatcher
        self.min_expires = min_expires
        self.max_expires = max_expires
        self.default_expires = min(default_expires or max_expires, max_expires)
        self.route = route
        self.max_contacts = max_contacts
        self.flows = flows
        self.keeper = keeper
        # counters read by sipproxy.app.metrics (see sipproxy.observe.counters)
        self.registrations = status_counts()  # REGISTERs answered here, by status class
        #: contacts bound or refreshed ("set") and removed ("removed"), and "remove all" requests
        self.binding_changes = {"set": 0, "removed": 0, "removed_all": 0}

    # -- names ------------------------------------------------------------------------
    def aor(self, uri: URI) -> str:
        """The address-of-record C{uri} is filed under: C{scheme:user@host},
        host in lower case, user unescaped; a port only when it is neither
        the scheme's default nor one of our legs."""
        return address_of_record(uri.scheme, uri.user, uri.host, uri.port, self.domains.is_local)

    def lookup(self, target: Union[URI, str]) -> Deferred:
        """Deferred list of the bindings of an address-of-record (a URI or
        its text), best first."""
        uri = parse_uri(target) if isinstance(target, str) else target
        return self.store.lookup(self.aor(uri)).addCallback(best_first)

    # -- IReceiver --------------------------------------------------------------------
    def receive(self, packet: Message, leg: ILeg, addr: tuple[str, int]) -> Any:
        if not isinstance(packet, Request):
            return False
        if packet.method == "REGISTER":
            return self._register(packet, leg, addr)
        if self.route:
            return self._route(packet, leg, addr)
        return False

    def _respond(self, request: Request, code: int, reason: Optional[str], leg: ILeg, addr: tuple[str, int],
                 headers: Iterable[tuple[str, str]] = ()) -> bool:
        if request.method == "REGISTER":
            self.registrations[code // 100] += 1
        self.dispatcher.respond(request, code, reason, leg, addr, tuple(headers))
        return True

    # -- REGISTER ---------------------------------------------------------------------
    def _register(self, request: Request, leg: ILeg, addr: tuple[str, int]) -> Any:
        try:
            target = request.parsed_uri()
        except URIError:
            return False  # the proxy answers 400
        if not target.is_sip or not self.domains.served(target.host, target.port):
            return False  # RFC 3261 10.3 step 1: not ours, the proxy forwards it
        try:
            to = request.name_addr("to")
        except URIError as e:
            return self._respond(request, 400, f"Bad To ({e})"[:100], leg, addr)
        if to is None or not to.uri.is_sip or not to.uri.user:
            return self._respond(request, 404, "Not Found (To is not a SIP address-of-record)", leg, addr)
        if not self.domains.served(to.uri.host, to.uri.port):
            return self._respond(request, 404, "Not Found (domain not served here)", leg, addr)
        unsupported = [tag for tag in request.get_all("require") if tag.strip().lower() not in SUPPORTED]
        if unsupported:
            return self._respond(request, 420, "Bad Extension", leg, addr, [("Unsupported", ", ".join(unsupported))])
        aor = self.aor(to.uri)
        values = request.get_all("contact")
        if not values:
            return self._answer(self.store.lookup(aor), request, aor, leg, addr)
        call_id = request.call_id
        cseq = request.cseq[0]
        header = request.get("expires")
        if any(v.strip() == "*" for v in values):
            if len(values) != 1 or header is None or int(header) != 0:
                return self._respond(request, 400, "Bad Request (Contact * needs Expires: 0 and no other Contact)",
                                     leg, addr)
            result = self.store.update(aor, call_id, cseq, [], remove_all=True)
            result.addCallback(self._count_changes, (), removed_all=True)
            return self._answer(result, request, aor, leg, addr)
        now = self.clock.seconds()
        path = tuple(request.get_all("path"))
        source = f"{leg.proto}:{format_host_port(addr[0])}:{addr[1]}"
        changes: dict[str, tuple[str, Optional[Binding], float]] = {}
        for value in values:
            try:
                contact = parse_name_addr(value)
            except URIError as e:
                return self._respond(request, 400, f"Bad Contact ({e})"[:100], leg, addr)
            expires = self._expires(contact.param("expires"), header)
            if 0 < expires < self.min_expires and expires < _ONE_HOUR:
                return self._respond(request, 423, "Interval Too Brief", leg, addr,
                                     [("Min-Expires", str(self.min_expires))])
            params = format_params((n, v) for n, v in contact.params if n.lower() != "expires")
            flow_route = self._flow_route(contact.uri, leg, addr, now + expires) if expires and not path else None
            binding = Binding(contact=str(contact.uri), params=params, expires=expires, call_id=call_id, cseq=cseq,
                              registered=now, path=(flow_route,) if flow_route else path, source=source)
            changes[binding.key] = (binding.key, binding if expires else None, expires)
        update = list(changes.values())
        if self.max_contacts is None or not any(ttl > 0 for _, _, ttl in update):
            return self._update(aor, call_id, cseq, update, request, leg, addr)
        d = self.store.lookup(aor)
        d.addCallbacks(self._within_limit, self._unavailable, callbackArgs=(update, request, aor, leg, addr),
                       errbackArgs=(request, leg, addr))
        return d

    def _within_limit(self, bindings: list[Binding], update: list, request: Request, aor: str, leg: ILeg,
                      addr: tuple[str, int]) -> Any:
        """Apply the update unless it would leave the address-of-record
        with more than C{max_contacts} bindings (403, as Kamailio's
        C{max_contacts}). Checked against a lookup just before the update:
        parallel REGISTERs for one address on several nodes may overshoot
        by their number, never more."""
        keys = {b.key for b in bindings}
        for key, _, ttl in update:
            if ttl > 0:
                keys.add(key)
            else:
                keys.discard(key)
        if len(keys) > self.max_contacts:  # type: ignore[operator]
            log.info("REGISTER {aor} from {source}: answered 403, {count} contacts exceed the limit of {limit}",
                     aor=aor, **message_fields(request, addr, leg), count=len(keys), limit=self.max_contacts)
            return self._respond(request, 403, f"Forbidden (at most {self.max_contacts} contacts)", leg, addr)
        return self._update(aor, request.call_id, request.cseq[0], update, request, leg, addr)

    def _update(self, aor: str, call_id: str, cseq: int, update: list, request: Request, leg: ILeg,
                addr: tuple[str, int]) -> Any:
        """Store the changes, tell the keeper which bindings it reaches over
        flows, and answer."""
        result = self.store.update(aor, call_id, cseq, update)
        result.addCallback(self._count_changes, update)
        if self.keeper is not None:
            result.addCallback(self._tell_keeper, aor, update, leg, addr)
        return self._answer(result, request, aor, leg, addr)

    def _count_changes(self, bindings: Any, update: Iterable[tuple[str, Optional[Binding], float]],
                       removed_all: bool = False) -> Any:
        """Count what a stored update changed (passes the result on)."""
        changes = self.binding_changes
        for _, binding, _ttl in update:
            changes["set" if binding is not None else "removed"] += 1
        if removed_all:
            changes["removed_all"] += 1
        return bindings

    def _flow_route(self, contact: URI, leg: ILeg, addr: tuple[str, int], until: float) -> Optional[str]:
        """The Route that leads back over the flow a REGISTER came on, or
        None when its Contact is reachable as it stands (or flows are off).
        It outlives the binding by a minute, so a refresh that arrives a
        little late still finds the old route valid."""
        if self.flows is None or not contact.is_sip or not came_over_nat(contact, leg.proto, addr):
            return None
        flow = Flow(leg.index, leg.proto, addr[0], addr[1], str(contact))
        return f"<{self.flows.uri(flow, until + 60, leg)};lr>"

    def _tell_keeper(self, bindings: Any, aor: str, update: list, leg: ILeg, addr: tuple[str, int]) -> Any:
        for key, binding, _ in update:
            if binding is not None and binding.path and self.flows is not None:
                self.keeper.watch(aor, binding, leg, addr)
            else:
                self.keeper.forget(aor, key)
        return bindings

    def _expires(self, param: Optional[str], header: Optional[str]) -> int:
        """RFC 3261 10.3 step 7: the contact's expires parameter, else the
        Expires header, else the default; never above the maximum."""
        for value in (param, header):
            if value is not None and value.strip().isdigit():
                return min(int(value), self.max_expires)
        return self.default_expires

    def _answer(self, result: Deferred, request: Request, aor: str, leg: ILeg, addr: tuple[str, int]) -> Deferred:
        def ok(bindings: list[Binding]) -> bool:
            listed = best_first(bindings)
            headers: list[tuple[str, str]] = []
            if "path" in (t.strip().lower() for t in request.get_all("supported")):
                headers += [("Path", p) for p in request.get_all("path")]
            headers.append(("Date", email.utils.formatdate(self.clock.seconds(), usegmt=True)))
            if leg.proto == "udp":
                listed = self._fitting(listed, request, headers)
            log.info("REGISTER {aor} from {source}: {count} binding(s), {listed} listed", aor=aor,
                     **message_fields(request, addr, leg), count=len(bindings), listed=len(listed))
            return self._respond(request, 200, "OK", leg, addr,
                                 [*(("Contact", b.header_value()) for b in listed), *headers])

        def failed(failure: Failure) -> bool:
            if failure.check(OutOfOrder):
                log.info("REGISTER {aor} from {source}: {error}", aor=aor, **message_fields(request, addr, leg),
                         error=failure.value)
                return self._respond(request, 500, "Server Internal Error (REGISTER out of order)", leg, addr)
            return self._unavailable(failure, request, leg, addr)

        return result.addCallbacks(ok, failed)

    def _fitting(self, bindings: list[Binding], request: Request, headers: list[tuple[str, str]]) -> list[Binding]:
        """The bindings a 200 over UDP can list within L{UDP_ANSWER_LIMIT}
        bytes (RFC 3261 18.1.1's 1300 when the path MTU is unknown): the
        contacts of this REGISTER first (the phone reads its own expiry
        there), then the others, best first, while they fit. The rest are
        left out of the answer, not out of the location service; a query
        over TCP lists them all."""
        own = set()
        for value in request.get_all("contact"):
            try:
                own.add(parse_name_addr(value).uri)
            except URIError:
                continue
        own_keys = {contact_key(uri) for uri in own}
        ordered = ([b for b in bindings if b.contact_key in own_keys]
                   + [b for b in bindings if b.contact_key not in own_keys])
        size = len(bytes(stateless_answer(request, 200, "OK", headers)))
        listed = []
        for binding in ordered:
            line = len(binding.header_value()) + len("Contact: \r\n")
            if size + line > UDP_ANSWER_LIMIT and (listed or binding.contact_key not in own_keys):
                continue
            size += line
            listed.append(binding)
        return best_first(listed)

    def _unavailable(self, failure: Failure, request: Request, leg: ILeg, addr: tuple[str, int]) -> bool:
        if request.method == "REGISTER":
            self.registrations[5] += 1  # 503 or 500
        return answer_store_failure(self.dispatcher, failure, request, leg, addr)

    # -- routing ----------------------------------------------------------------------
    def _route(self, request: Request, leg: ILeg, addr: tuple[str, int]) -> Any:
        if request.to_tag:
            return False  # inside a dialog: the proxy follows Route and the remote target
        try:
            uri = request.parsed_uri()
        except URIError:
            return False
        if not uri.is_sip or not uri.user or uri.maddr:
            return False
        local = self.domains.is_local(uri.host, uri.port)
        if not (local or self.domains.matches(uri.host)):
            return False
        d = self.store.lookup(self.aor(uri))
        d.addCallbacks(self._routed, self._unavailable, callbackArgs=(request, leg, addr, local),
                       errbackArgs=(request, leg, addr))
        return d

    def _routed(self, bindings: list[Binding], request: Request, leg: ILeg, addr: tuple[str, int],
                local: bool) -> bool:
        for binding in best_first(bindings):
            try:
                target = binding.uri()
            except URIError:
                continue
            if not target.is_sip:
                continue
            # RFC 3261 19.1.5: a Request-URI carries no headers, and a
            # Route header asked for in a contact is not honoured
            if target.headers:
                target = target.replace(headers=[])
            request.uri = str(target)
            if binding.path:  # RFC 3327 5.3: the Path becomes the route set
                request.set_all("route", [*binding.path, *request.get_all("route")])
            return False
        if local or self.domains.everything:
            return False  # for the proxy: its own contact tokens, or forward as Net::SIP does
        if request.method == "ACK":
            return True
        log.info("{method} {uri} from {source}: answered 404, not registered", uri=request.uri,
                 **message_fields(request, addr, leg))
        return self._respond(request, 404, "Not Found", leg, addr)
