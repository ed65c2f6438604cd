"""The stateless proxy (RFC 3261 16.11), after Net::SIP's StatelessProxy.

It keeps no transaction state: every decision is a function of the packet,
the leg it came on and the configuration. Requests get Max-Forwards,
Route/Record-Route processing, a deterministic Via branch and leave through
the leg that reaches their target; responses go back along their Via.
Contacts are rewritten into tokens when a packet changes legs, so in-dialog
requests come back through the proxy.

Where Net::SIP drops silently, this proxy answers as RFC 3261 16.3 expects
(483, 482, 420, 416, 404, 503, 400) and logs one line. It acts only through
the dispatcher it is given; it never touches the reactor.
"""
from __future__ import annotations

import secrets as _secrets
from typing import Any, Callable, Optional, Union

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from zope.interface import implementer

from sipproxy.observe.counters import OTHER, DropCounts, method_counts, method_label, status_counts
from sipproxy.observe.logsafe import SafeLogger
from sipproxy.observe.logfields import message_fields
from sipproxy.sip.addresses import DEFAULT_PORTS
from sipproxy.sip.bounded import BoundedCache, remember
from sipproxy.sip.stateless import is_ack_to_own_answer
from sipproxy.proxy.branch import BranchMaker
from sipproxy.proxy.contact_tokens import (DEFAULT_DIALOG_LIFETIME, DEFAULT_REGISTRATION_LIFETIME, STEP,
                                           CallableRewriter, ContactTokens)
from sipproxy.interfaces import INATHelper, IContactRewriter, IDispatcher, ILeg, IReceiver
from sipproxy.sip.message import Message, ParseError, Request, Response, parse
from sipproxy.nat.sessions import NATError, NATSessions
from sipproxy.proxy.flows import TOKEN_PREFIX, Flow, FlowTokens, came_over_nat, names_private_address
from sipproxy.registrar.location import WallClock
from sipproxy.proxy.routing import RoutingError, response_hop_of
from sipproxy.sip.uri import URI, URIError, format_name_addr, parse_name_addr

__all__ = ["StatelessProxy", "NATError"]

log = SafeLogger()

_ALLOW = "INVITE, ACK, CANCEL, OPTIONS, BYE, REGISTER, SUBSCRIBE, NOTIFY, REFER, INFO, MESSAGE, UPDATE, PRACK"


@implementer(IReceiver)
class StatelessProxy:
    """A stateless proxy in front of a dispatcher.

    @param dispatcher: the L{sipproxy.transport.dispatcher.Dispatcher} (or a fake with
        the same methods) that owns the legs.
    @param rewrite_contact: an L{IContactRewriter}, or a plain function
        C{(contact, incoming_leg, outgoing_leg, force)} as in Net::SIP;
        None for the built-in token scheme.
    @param nathelper: an L{INATHelper}; None to leave SDP alone.
    @param force_rewrite: rewrite Contacts even when a packet leaves through
        the leg it came in on.
    @param secret: key material for Contact tokens and Via branches; share
        it between workers and nodes (see L{sipproxy.app.secret}). None makes a
        random one for this process only.
    @param clock: C{IReactorTime} dating Contact tokens (the wall clock when
        None, so the proxy can be built without a reactor).
    @param token_lifetime: seconds a dialog's Contact token stays good after
        its Contact last passed (see L{sipproxy.proxy.contact_tokens}).
    @param nat_flows: reach phones behind NAT over the flow their packets
        came on (L{sipproxy.proxy.flows}): a Contact that is not where its
        packet came from is replaced by a flow token. A Route or Request-URI
        carrying one of our flow tokens (the registrar's, too) always leaves
        over that flow.
    @param flow_lifetime: how long a flow token in a rewritten Contact
        stays valid (seconds): the longest dialog it must serve.
    """

    def __init__(
        self,
        dispatcher: IDispatcher,
        rewrite_contact: Union[IContactRewriter, Callable[..., Any], None] = None,
        nathelper: Optional[INATHelper] = None,
        force_rewrite: bool = False,
        secret: Optional[bytes] = None,
        clock: Optional[IReactorTime] = None,
        token_lifetime: float = DEFAULT_DIALOG_LIFETIME,
        nat_flows: bool = True,
        flow_lifetime: float = 86400.0,
    ) -> None:
        self.dispatcher = dispatcher
        if secret is None:
            secret = _secrets.token_bytes(32)
        if rewrite_contact is None:
            rewrite_contact = ContactTokens(secret, dispatcher.legs, clock, token_lifetime)
        elif not IContactRewriter.providedBy(rewrite_contact):
            rewrite_contact = CallableRewriter(rewrite_contact)
        self.rewriter: IContactRewriter = rewrite_contact
        # token rewriting is deterministic, so its results can be remembered
        self._tokens: Optional[ContactTokens] = rewrite_contact if isinstance(rewrite_contact, ContactTokens) else None
        self._contact_cache: Optional[BoundedCache] = (
            BoundedCache("rewritten Contacts", 20000) if self._tokens is not None else None)
        # the lookup, bound once (see sipproxy.sip.bounded); clear() keeps it valid
        self._known_contact = self._contact_cache.get if self._contact_cache is not None else None
        # the dialog tokens' expiry now, and when it moves on (see _next_token_step)
        self._token_expires = 0
        self._token_step_ends = float("-inf")
        self._token_now = self._tokens.clock.seconds if self._tokens is not None else None
        self.nathelper = nathelper
        self._nat_sessions = NATSessions(nathelper) if nathelper is not None else None
        self.force_rewrite = force_rewrite
        self.branches = BranchMaker(secret)
        #: per leg: the contact its Record-Route was made from, and (line, value)
        self._record_routes: dict[ILeg, tuple[str, tuple[str, str]]] = {}
        # flow tokens expire by the same clock as Contact tokens
        self.clock: IReactorTime = clock if clock is not None else (
            getattr(dispatcher, "reactor", None) or WallClock())
        # flow tokens the registrar put in Routes are always followed;
        # nat_flows decides whether this proxy also turns the Contacts of
        # packets that came over NAT into them
        self.flows = FlowTokens(secret, dispatcher.legs)
        self.nat_flows = nat_flows
        self.flow_lifetime = flow_lifetime
        # the NAT verdict per (Contact, transport, source): a dialog repeats them
        self._nat_contacts: dict[tuple[str, str, tuple[str, int]], Any] = {}
        self._source_text: dict[tuple[str, int], str] = {}  # a source address as host:port
        # counters read by sipproxy.app.metrics (plain ints: see sipproxy.observe.counters)
        self.requests_forwarded = method_counts()
        self.responses_forwarded = status_counts()
        self.dropped = DropCounts()

    # IReceiver --------------------------------------------------------------
    def receive(self, packet: Message, leg: ILeg, addr: tuple[str, int]) -> bool:
        if isinstance(packet, Request):
            self._request(packet, leg, addr)
        else:
            self._response(packet, leg, addr)  # type: ignore[arg-type]
        return True

    # requests ---------------------------------------------------------------
    def _refuse(self, request: Request, code: int, reason: str, leg: ILeg, addr: tuple[str, int],
                headers: tuple[tuple[str, str], ...] = ()) -> None:
        log.info("{method} {uri} from {source}: answered {code} {reason}",
                 uri=request.uri, **message_fields(request, addr, leg), code=code, reason=reason)
        self.dispatcher.respond(request, code, reason, leg, addr, headers)

    def _request(self, request: Request, leg: ILeg, addr: tuple[str, int]) -> None:
        if request.method == "ACK" and is_ack_to_own_answer(request):
            return  # it ends here (RFC 3261 17.2.1): the next hop never saw the INVITE
        mf = request.get("max-forwards")
        if mf is not None and mf not in _DECREMENTED and int(mf) == 0:  # parse() vouched it is a number
            self._refuse(request, 483, "Too Many Hops", leg, addr)
            return
        if "proxy-require" in request.names:
            unsupported = ", ".join(request.get_all("proxy-require"))
            if unsupported:
                self._refuse(request, 420, "Bad Extension", leg, addr, (("Unsupported", unsupported),))
                return
        loop = self.branches.loop_part(request)
        if self._looped(request, loop):
            self._refuse(request, 482, "Loop Detected", leg, addr)
            return
        try:
            uri = request.parsed_uri()
        except URIError as e:
            self._refuse(request, 400, f"Bad Request-URI ({e})"[:100], leg, addr)
            return
        try:
            hint = self._process_routes(request, uri, leg)
        except (URIError, ParseError) as e:
            self._refuse(request, 400, f"Bad Route ({e})"[:100], leg, addr)
            return
        routes = request.get_all("route")
        if routes and self._leave_over_flow(request, routes[0], leg, addr, loop):
            return
        if routes:
            target_uri = parse_name_addr(routes[0]).uri
        else:
            uri = request.parsed_uri()
            if self.dispatcher.names_us(uri):
                if uri.user and uri.user.startswith(TOKEN_PREFIX):
                    self._to_flow(request, uri.user, leg, addr, loop, set_uri=True)
                    return
                if not uri.user:
                    restored = None
                elif self._tokens is not None:  # ours start nothing new outside a dialog (no To tag)
                    restored = self._tokens.restore(uri.user, leg, "tag=" not in (request.get("to") or ""))
                else:
                    restored = self.rewriter.restore(uri.user, leg)
                if restored is None:
                    self._for_us(request, leg, addr)
                    return
                original, restored_leg = restored
                request.uri = f"{uri.scheme}:{original}"
                hint = restored_leg or hint
                try:
                    uri = request.parsed_uri()
                except URIError as e:
                    self._refuse(request, 400, f"Bad restored contact ({e})"[:100], leg, addr)
                    return
            elif not uri.is_sip and uri.scheme != "tel":
                self._refuse(request, 416, "Unsupported URI Scheme", leg, addr)
                return
            target_uri = uri
        try:
            hop = self.dispatcher.hop_for(target_uri)
            targets = self.dispatcher.targets_for_hop(hop, hint, request)
        except RoutingError as e:
            self._refuse(request, e.code, e.reason, leg, addr)
            return
        if isinstance(targets, list):  # an IP address: at once (a check far cheaper than Deferred's ABC)
            self._forward_request(targets, request, leg, addr, loop)
        else:
            targets.addCallbacks(
                self._forward_with_failover, self._route_failed,
                callbackArgs=(request, leg, addr, loop), errbackArgs=(request, leg, addr),
            )
            targets.addErrback(lambda f: log.failure("forwarding {request!r} failed", f, request=request,
                                                      **message_fields(request, addr, leg)))

    def _route_failed(self, failure: Failure, request: Request, leg: ILeg, addr: tuple[str, int]) -> None:
        error = failure.check(RoutingError)
        if error is None:
            log.failure("resolving the target of {request!r} failed", failure, request=request,
                        **message_fields(request, addr, leg))
            self._refuse(request, 503, "Service Unavailable", leg, addr)
            return
        self._refuse(request, failure.value.code, failure.value.reason, leg, addr)

    def _looped(self, request: Request, loop: str) -> bool:
        """RFC 3261 16.3 item 4: a Via of ours whose loop part equals this
        request's means it came back unchanged (a loop, not a spiral)."""
        prefix = self.branches.prefix
        names = request.names
        if names.count("via") == 1:  # usual: one Via line, from the sender
            if prefix not in request.lines[names.index("via")]:
                return False
        else:
            for name, line in zip(names, request.lines):
                if name == "via" and prefix in line:
                    break
            else:
                return False
        for value in request.get_all("via"):
            if prefix in value:
                try:
                    branch = _via_branch(value)
                except ParseError:
                    continue
                if branch and self.branches.is_ours(branch) and self.branches.loop_of(branch) == loop:
                    return True
        return False

    def _process_routes(self, request: Request, uri: URI, leg: ILeg) -> Any:
        """RFC 3261 16.4: undo a strict router, then pop our own Route
        entries. When two or more were ours (double Record-Route, RFC 5658),
        the last one names the leg to leave through."""
        dispatcher = self.dispatcher
        popped = []
        if "route" not in request.names:
            return None
        if uri.is_sip and uri.user is None and dispatcher.is_local(uri.host, uri.port, uri.transport):
            routes = request.get_all("route")
            last = parse_name_addr(routes[-1]).uri
            request.uri = str(last)
            request.set_all("route", routes[:-1])
        while True:
            top = request.get("route")
            if top is None:
                break
            route = parse_name_addr(top).uri
            if not route.is_sip or route.user is not None:
                break
            legs = [l for l in dispatcher.legs_at(route.host, route.effective_port)
                    if l.proto == _route_proto(route)]
            if not legs:
                break
            request.pop_first("route")
            popped.append(legs[0])
        return popped[-1] if len(popped) > 1 else None

    def _for_us(self, request: Request, leg: ILeg, addr: tuple[str, int]) -> None:
        """A request whose target is the proxy itself: answer OPTIONS (a
        keep-alive ping), refuse the rest."""
        if request.method == "OPTIONS":
            self.dispatcher.respond(request, 200, "OK", leg, addr, (("Allow", _ALLOW), ("Accept", "application/sdp")))
            return
        if request.method == "ACK":
            return
        self._refuse(request, 404, "Not Found (no such user here)", leg, addr)

    def _forward_with_failover(self, targets: list, request: Request, in_leg: ILeg, addr: tuple[str, int],
                               loop: str) -> None:
        """A name's targets (RFC 3263): send to the first; when the leg
        reports that it could not (a TCP/TLS connection refused or timed
        out, an ICMP unreachable for UDP), the same request, as it came
        in, goes to the next; when none is left, answer 503. Stateless:
        what is remembered is the request's text until its send is decided
        (see README, "DNS")."""
        original = bytes(request)

        def next_target(reason: str) -> None:
            log.info("{method} {uri}: sending to {dst} failed ({reason}); {left} target(s) left",
                     method=request.method, uri=request.uri, dst=targets[0][1], reason=reason,
                     left=len(targets) - 1)
            try:
                again = parse(original)
            except ParseError:  # it parsed once; a defect, not input, if not now
                log.failure("cannot re-read {request!r} for failover", request=request)
                return
            if len(targets) > 1:
                self._forward_with_failover(targets[1:], again, in_leg, addr, loop)  # type: ignore[arg-type]
            else:
                self._refuse(again, 503, "Service Unavailable (every destination failed)", in_leg, addr)  # type: ignore

        self._forward_request(targets, request, in_leg, addr, loop, next_target)

    def _forward_request(self, targets: list, request: Request, in_leg: ILeg, addr: tuple[str, int],
                         loop: str, on_error: Optional[Callable[[str], Any]] = None) -> None:
        if not targets:
            self._refuse(request, 503, "No Route", in_leg, addr)
            return
        out_leg, dst = targets[0]
        mf = request.get("max-forwards")
        if mf is None:
            request.add("max-forwards", "70")
        elif request.names.count("max-forwards") > 1:  # repeated with one value: one line, lowered
            request.set("max-forwards", _DECREMENTED.get(mf) or str(int(mf) - 1))
        else:
            request.replace_first("max-forwards", _DECREMENTED.get(mf) or str(int(mf) - 1))
        registering = request.method == "REGISTER"
        if not registering and "tag=" not in (request.get("to") or ""):
            request.insert_line("record-route", *self._record_route(in_leg))
            if out_leg is not in_leg:
                request.insert_line("record-route", *self._record_route(out_leg))
        if ((self.nat_flows or in_leg.proto in _WEBSOCKET) and "contact" in request.names
                and self._contacts_to_flow(request, in_leg, out_leg, addr)):
            pass
        elif out_leg is not in_leg or self.force_rewrite:
            self._rewrite_contacts(request, in_leg, out_leg, registering)
        via = f"{out_leg.via_prefix}{self.branches.branch(request, in_leg.index, loop)}"
        request.insert_line("via", "Via: " + via, via)
        self._deliver(request, in_leg, out_leg, dst, addr, on_error)

    # responses -----------------------------------------------------------------------
    def _response(self, response: Response, leg: ILeg, addr: tuple[str, int]) -> None:
        via = response.top_via()
        branch = via.branch if via is not None else None
        if (via is None or not self.branches.is_ours(branch)
                or not self.dispatcher.is_local(via.host, via.port, via.transport.lower())):
            self.dropped.add("response", "via_not_ours")
            log.info("dropped {code} response from {source}: top Via {via} is not ours",
                     code=response.code, **message_fields(response, addr, leg), via=str(via) if via else None)
            return
        response.pop_first("via")
        next_via = response.get("via")
        if next_via is None:
            self.dropped.add("response", "no_via_left")
            log.info("dropped {code} response from {source}: no Via left after ours",
                     code=response.code, **message_fields(response, addr, leg))
            return
        try:
            hop = response_hop_of(next_via)
        except ParseError as e:
            self.dropped.add("response", "bad_via")
            log.info("dropped {code} response from {source}: {reason}", code=response.code,
                     **message_fields(response, addr, leg), reason=e.reason)
            return
        except RoutingError as e:
            self.dropped.add("response", "no_route")
            log.info("dropped {code} response from {source}: {reason}", code=response.code,
                     **message_fields(response, addr, leg), reason=e.reason)
            return
        legs = self.dispatcher.legs
        index = self.branches.incoming_leg(branch)  # type: ignore[arg-type]
        out_leg = legs[index] if index < len(legs) else None
        if out_leg is not None and out_leg.proto != hop.proto:
            out_leg = None
        if hop.is_ip:
            if out_leg is None:
                out_leg = self.dispatcher.choose_leg(hop.proto, hop.host)
            if out_leg is None:
                self.dropped.add("response", "no_route")
                log.info("dropped {code} response from {source}: no leg for {proto} to {host}",
                         code=response.code, proto=hop.proto, host=hop.host, **message_fields(response, addr, leg))
                return
            self._forward_response([(out_leg, (hop.host, hop.port or DEFAULT_PORTS[hop.proto]))],
                                   response, leg, addr)
            return
        d = self.dispatcher.targets_for_hop(hop, out_leg)
        d.addCallback(self._forward_response, response, leg, addr)
        d.addErrback(self._response_unroutable, response, leg, addr)

    def _response_unroutable(self, failure: Failure, response: Response, leg: ILeg, addr: tuple[str, int]) -> None:
        self.dropped.add("response", "no_route")
        log.info("dropped {code} response from {source}: {reason}", code=response.code,
                 reason=failure.getErrorMessage(), **message_fields(response, addr, leg))

    def _forward_response(self, targets: list, response: Response, in_leg: ILeg, addr: tuple[str, int]) -> None:
        if not targets:
            self.dropped.add("response", "no_route")
            log.info("dropped {code} response from {source}: no route back", code=response.code,
                     **message_fields(response, addr, in_leg))
            return
        out_leg, dst = targets[0]
        if (self.nat_flows or in_leg.proto in _WEBSOCKET) and "contact" in response.names and self._contacts_to_flow(
                response, in_leg, out_leg, addr):
            pass
        elif out_leg is not in_leg or self.force_rewrite:
            self._rewrite_contacts(response, in_leg, out_leg)
        self._deliver(response, in_leg, out_leg, dst, addr)

    # flows (phones behind NAT) ---------------------------------------------------------------
    def _leave_over_flow(self, request: Request, top_route: str, leg: ILeg, addr: tuple[str, int],
                         loop: str) -> bool:
        """When the top Route names us with a flow token (the registrar's
        route to a phone behind NAT), pop it and send the request over that
        flow; True when the request was dealt with."""
        try:
            route = parse_name_addr(top_route).uri
        except URIError:
            return False
        if not route.user or not route.user.startswith(TOKEN_PREFIX) or not self.dispatcher.names_us(route):
            return False
        request.pop_first("route")
        self._to_flow(request, route.user, leg, addr, loop, set_uri=False)
        return True

    def _to_flow(self, request: Request, token: str, leg: ILeg, addr: tuple[str, int], loop: str,
                 set_uri: bool) -> None:
        flow = self.flows.open(token, self.clock.seconds())  # type: ignore[union-attr]
        if flow is None:
            # RFC 5626 11.5: the flow named is gone (expired, or not ours)
            self._refuse(request, 430, "Flow Failed", leg, addr)
            return
        if set_uri:
            if "tag=" not in (request.get("to") or ""):
                # a flow URI in a Contact serves its dialog; a new call to the
                # phone goes through the registrar (as Contact tokens do)
                self._refuse(request, 403, "Forbidden (a flow token starts no new dialog)", leg, addr)
                return
            request.uri = flow.contact
        out_leg = self.dispatcher.legs[flow.leg_index]
        if not out_leg.has_flow(flow.address):  # a WebSocket client whose connection is gone
            self._refuse(request, 430, "Flow Failed", leg, addr)
            return
        self._forward_request([(out_leg, flow.address)], request, leg, addr, loop)

    def _contacts_to_flow(self, packet: Message, in_leg: ILeg, out_leg: ILeg, addr: tuple[str, int]) -> bool:
        """Replace the Contact of a packet that came over NAT with a flow
        token URI naming C{out_leg}, so what the far side sends to that
        Contact comes back here and leaves over the flow. Only a Contact
        naming a private address counts (see L{names_private_address}).
        False (nothing changed) when the packet has no single sip Contact,
        or came from where its Contact says, or names a public address."""
        if in_leg.proto == "udp":
            # the usual case, decided on the raw line before any decoding: the
            # Contact names the source as host:port, not followed by a digit
            line = packet.lines[packet.names.index("contact")]
            needle = self._source_text.get(addr)
            if needle is None:
                needle = remember(self._source_text, addr, f"{addr[0]}:{addr[1]}", 4096)
            at = line.find(needle)
            if at > 0 and line[at - 1] in "@:":
                end = at + len(needle)
                if end == len(line) or not line[end].isdigit():
                    return False
        if isinstance(packet, Request) and packet.method == "REGISTER":
            return False  # a registrar upstream learns the flow itself (or from a Path)
        values = packet.get_all("contact")
        if len(values) != 1:
            return False
        value = values[0]
        key = (value, in_leg.proto, addr)
        contact = self._nat_contacts.get(key, _UNKNOWN)
        if contact is _UNKNOWN:
            try:
                parsed = parse_name_addr(value)
            except URIError:
                parsed = None
            # a WebSocket client is reached over its connection whatever its
            # Contact says (an invented .invalid name, RFC 7118 5.2)
            if parsed is not None and (not parsed.uri.is_sip or not (
                    in_leg.proto in _WEBSOCKET or names_private_address(parsed.uri))
                    or not came_over_nat(parsed.uri, in_leg.proto, addr)):
                parsed = None
            # only short values are remembered: memory stays bounded in bytes too
            contact = remember(self._nat_contacts, key, parsed, 4096) if len(value) <= 512 else parsed
        if contact is None:
            return False
        uri = contact.uri
        flow = Flow(in_leg.index, in_leg.proto, addr[0], addr[1], str(uri))
        token_uri = self.flows.uri(flow, self.clock.seconds() + self.flow_lifetime, out_leg)  # type: ignore
        packet.set_all("contact", [format_name_addr(contact.display, token_uri, contact.params)])
        return True

    # both -------------------------------------------------------------------------------
    def _record_route(self, leg: ILeg) -> tuple[str, str]:
        """The Record-Route line naming a leg, and its value: rendered once
        per leg and kept here, by the proxy, not on the leg (again when
        the leg's contact changed, e.g. after binding port 0)."""
        entry = self._record_routes.get(leg)
        contact = leg.contact
        if entry is None or entry[0] != contact:
            value = f"<{contact};lr>"
            entry = self._record_routes[leg] = (contact, (f"Record-Route: {value}", value))
        return entry[1]

    def _rewrite_contacts(self, packet: Message, in_leg: ILeg, out_leg: ILeg, registering: bool = False) -> None:
        """Replace each sip/sips Contact with what the rewriter gives
        (C{registering}: the packet is a REGISTER, whose tokens may start
        calls).

        With the built-in token scheme the result is a function of the
        Contact value and the two legs, so it is remembered: the Contact of
        a dialog comes back in every request and response of it."""
        if "contact" not in packet.names:
            return
        cache = self._contact_cache
        tokens = self._tokens
        expires = 0
        registration = False
        if tokens is not None:
            if self._token_now() > self._token_step_ends:
                self._next_token_step()  # every STEP seconds: a new expiry, a fresh cache
            expires = self._token_expires
            if registering:
                # a registration token: may start calls, for as long as the
                # REGISTER asked; not cached (REGISTERs are rare beside dialogs).
                # Its answer's Contacts need no kind: they go back to the
                # phone, which sends nothing to them.
                registration, cache = True, None
        changed = False
        new_values = []
        for value in packet.get_all("contact"):
            if registration:
                expires = tokens.expiry(_registration_lifetime(value, packet))  # type: ignore[union-attr]
            key = (value, in_leg.index, out_leg.index)
            new_value = self._known_contact(key) if cache is not None else None
            if new_value is None:
                new_value = self._rewrite_contact(value, in_leg, out_leg, expires, registration)
                if cache is not None:
                    cache.store(key, new_value, len(value))
            if new_value is not value:
                changed = True
            new_values.append(new_value)
        if changed:
            packet.set_all("contact", new_values)

    def _next_token_step(self) -> None:
        """The expiry of the dialog tokens minted from now on, rounded up to
        L{STEP} seconds: the same for every Contact until the clock passes
        it minus the lifetime; then the cache of rewritten Contacts (which
        hold the old expiry) starts again."""
        tokens = self._tokens
        self._token_expires = tokens.expiry(tokens.dialog_lifetime)  # type: ignore[union-attr]
        self._token_step_ends = self._token_expires - tokens.dialog_lifetime  # type: ignore[union-attr]
        if self._contact_cache is not None:
            self._contact_cache.clear()

    def _rewrite_contact(self, value: str, in_leg: ILeg, out_leg: ILeg, expires: int = 0,
                         registration: bool = False) -> str:
        """One Contact value rewritten (the same object when unchanged)."""
        if value.strip() == "*":
            return value
        try:
            addr = parse_name_addr(value)
        except URIError:
            return value
        uri = addr.uri
        if not uri.is_sip or (uri.user is None and self.dispatcher.is_local(uri.host, uri.port)):
            return value
        text = str(uri)[len(uri.scheme) + 1:]
        if self._tokens is not None:
            rewritten = self._tokens.rewrite(text, in_leg, out_leg, self.force_rewrite, expires, registration)
        else:
            rewritten = self.rewriter.rewrite(text, in_leg, out_leg, self.force_rewrite)
        if rewritten is None:
            return value
        new_uri = f"{uri.scheme}:{rewritten}"
        if out_leg.proto != "udp" and rewritten.endswith("@" + out_leg.sent_by):
            new_uri += f";transport={out_leg.proto}"  # a token naming a TCP leg
        return format_name_addr(addr.display, new_uri, addr.params)

    def _deliver(self, packet: Message, in_leg: ILeg, out_leg: ILeg, dst: tuple[str, int],
                 addr: tuple[str, int], on_error: Optional[Callable[[str], Any]] = None) -> None:
        try:
            result = self.do_nat(packet, in_leg, out_leg)
        except NATError as e:
            self._nat_failed(e, packet, in_leg, addr)
            return
        if result is None or not isinstance(result, Deferred):
            self.dispatcher.send(packet, out_leg, dst, on_error)
            if isinstance(packet, Request):  # counted inline, from the slots: this is the hot path
                try:
                    self.requests_forwarded[packet._method] += 1
                except KeyError:
                    self.requests_forwarded[OTHER] += 1
            else:
                self.responses_forwarded[packet._code // 100] += 1  # type: ignore[attr-defined]
        else:
            result.addCallbacks(self._send_after_nat, self._nat_not_done,
                                callbackArgs=(packet, out_leg, dst, on_error), errbackArgs=(packet, in_leg, addr))

    def _send_after_nat(self, _: Any, packet: Message, out_leg: ILeg, dst: tuple[str, int],
                        on_error: Optional[Callable[[str], Any]] = None) -> None:
        self.dispatcher.send(packet, out_leg, dst, on_error)
        if isinstance(packet, Request):
            self.requests_forwarded[method_label(packet.method)] += 1
        else:
            self.responses_forwarded[packet.code // 100] += 1  # type: ignore[attr-defined]

    def _nat_not_done(self, failure: Failure, packet: Message, in_leg: ILeg, addr: tuple[str, int]) -> None:
        if failure.check(NATError):
            self._nat_failed(failure.value, packet, in_leg, addr)
        else:
            self.dropped.add("request" if isinstance(packet, Request) else "response", "nat_error")
            log.failure("NAT handling failed", failure, **message_fields(packet, addr, in_leg))

    def _nat_failed(self, error: NATError, packet: Message, in_leg: ILeg, addr: tuple[str, int]) -> None:
        if isinstance(packet, Request):
            headers: tuple[tuple[str, str], ...] = ()
            if error.retry_after is not None:
                headers = (("Retry-After", str(error.retry_after)),)
            # the packet was already changed for forwarding: answer from its Via below ours
            packet.pop_first("via")
            self._refuse(packet, error.code, error.reason, in_leg, addr, headers)
        else:
            self.dropped.add("response", "nat_refused")
            log.info("dropped {packet!r} from {source}: {reason}", packet=packet, reason=error.reason,
                     **message_fields(packet, addr, in_leg))

    def do_nat(self, packet: Message, incoming_leg: ILeg, outgoing_leg: ILeg) -> Optional[Deferred]:
        """Media relaying for a packet changing legs (Net::SIP's do_nat):
        None when done or nothing to do, a Deferred when the NAT helper
        answers later; raises L{NATError} to refuse the packet. Override it
        to plug in other media handling."""
        if self._nat_sessions is None or incoming_leg is outgoing_leg:
            return None
        return self._nat_sessions.do_nat(packet, incoming_leg, outgoing_leg)


def _registration_lifetime(value: str, packet: Message) -> float:
    """How long a REGISTER's Contact asks to be bound: its
    expires parameter, else the Expires header, else the default; the
    token is good for that plus a rounding step."""
    for text in (_contact_expires(value), packet.get("expires")):
        if text is not None and text.strip().isdigit():
            return min(int(text), 86400) + STEP
    return DEFAULT_REGISTRATION_LIFETIME + STEP


def _contact_expires(value: str) -> Optional[str]:
    if "expires" not in value.lower():
        return None
    try:
        return parse_name_addr(value).param("expires")
    except URIError:
        return None


_UNKNOWN = object()
#: transports whose clients are reached only over their own connection
_WEBSOCKET = ("ws", "wss")


#: Max-Forwards values as text, to the text one lower: the usual ones.
_DECREMENTED = {str(n): str(n - 1) for n in range(1, 256)}


def _route_proto(uri: URI) -> str:
    if uri.scheme == "sips":
        return "tls"
    return uri.transport or "udp"


def _via_branch(value: str) -> Optional[str]:
    from sipproxy.sip.message import parse_via

    return parse_via(value).branch
