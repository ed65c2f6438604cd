"""Simple: a user agent in a few calls (Net::SIP::Simple), with Deferreds
instead of a loop.

::

    ua = Simple(reactor, dispatcher=dispatcher, from_="sip:alice@example.org",
                registrar="sip:example.org", auth=("alice", "secret"))
    expires = await ua.register()
    call = await ua.invite("sip:bob@example.org", ring_time=30)
    await call.bye()
    await ua.cleanup()

Every method returning a Deferred can be awaited (a Deferred is
awaitable inside C{ensureDeferred} or C{task.react}).

Where the sockets come from: this module is logic and never imports the
transport (tests/test_layers.py). Give it a C{dispatcher} (with its legs;
tests use L{sipproxy.testing.memory_dispatcher}), or C{legs} and a
C{transport}: a callable C{transport(reactor, legs) -> dispatcher} that
binds them. L{sipproxy.app.ua.Simple} (also C{from sipproxy import
Simple}) is this class with the socket transport plugged in, so
C{Simple(reactor, legs=["udp:127.0.0.1:5070"])} just works there.

A Simple shares its dispatcher: the endpoint is first in the receive
chain, then whatever C{create_registrar}, C{create_stateless_proxy} or
C{create_chain} added; once something is added, the endpoint takes only
requests addressed to its own user or contact (L{Simple.owns}).

Departures from Net::SIP::Simple, and why:

- Deferreds instead of a loop run until a variable is set: the reactor
  belongs to the application.
- A registration refreshes itself and reports failures (Net::SIP leaves
  the refresh to the application, and the complaint most often heard about
  Python UAs is a refresh that failed silently).
- C{create_registrar} and C{create_stateless_proxy} join the user agent
  in one receive chain instead of replacing the dispatcher's receiver, so
  one process can be a registrar, a proxy and a user agent at once.
- An INVITE nobody listens for, or that the filter refuses, is answered
  (480, 403) when nothing follows the user agent in the chain; Net::SIP
  drops it and the caller waits for its timeout.
- Transactions follow RFC 3261 17 with RFC 6026 (the sans-IO machines of
  L{sipproxy.sip.transaction}), where Net::SIP keeps a retransmission queue.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

from twisted.internet.defer import Deferred, DeferredList, fail, succeed
from twisted.internet.interfaces import IReactorTime

from sipproxy.observe.logsafe import SafeLogger
from sipproxy.interfaces import IDispatcher, ILeg
from sipproxy.access.chain import ReceiveChain
from sipproxy.access.digest_auth import Authorize
from sipproxy.proxy.routing import parse_proxy
from sipproxy.proxy.stateless import StatelessProxy
from sipproxy.registrar.registrar import Registrar
from sipproxy.sip.ids import new_call_id, new_tag
from sipproxy.sip.message import Request, Response
from sipproxy.sip.transaction import TimerConfig
from sipproxy.sip.uac import new_request, outbound_route
from sipproxy.sip.uri import URIError, parse_name_addr
from sipproxy.ua.call import Call
from sipproxy.ua.endpoint import Endpoint, ServerTransaction, SIPError, _call
from sipproxy.ua.media_session import media_factory as session_factory
from sipproxy.ua.registration import RefreshPolicy, Registration

#: an address that names its scheme already (compiled once: a caller
#: completes the target of every call it places)
_HAS_SCHEME = re.compile(r"(?:sips?|tel):", re.I).match

__all__ = ["Simple"]

log = SafeLogger()

Transport = Callable[[IReactorTime, Sequence[str]], Any]


class Simple:
    """A user agent: register, call, answer.

    @param reactor: C{IReactorTime} (the timers); with C{legs}, what the
        transport binds them on.
    @param legs: leg specifications (C{"udp:127.0.0.1:5070"}, ...) for
        C{transport}; or give C{dispatcher}.
    @param dispatcher: an L{sipproxy.interfaces.IDispatcher} with its legs.
    @param transport: C{transport(reactor, legs) -> dispatcher}.
    @param outgoing_proxy: every request goes there (C{host[:port]} or a
        URI).
    @param registrar: where L{register} registers (default: the domain
        of our From address, RFC 3261 10.2).
    @param auth: answers to 401/407: C{(user, password)},
        C{{realm: (user, password)}} or a callable C{realm -> pair}.
    @param domain: completes targets without a host, and From.
    @param from_: our address (C{"sip:alice@example.org"}, a name-addr,
        or just a user name with C{domain}).
    @param contact: our Contact (default: the From user at the leg).
    @param options: extra headers (name, value) for our answers to
        OPTIONS (as Net::SIP's C{options}).
    @param route: preloaded Route set (URIs), first hop first.
    @param domain2proxy: domain to proxy, as the dispatcher's.
    @param media_factory: C{factory(call)} making C{call.media}.
    @param refresh: the L{RefreshPolicy} of registrations.
    @param timers: the RFC 3261 timer values (T1, T2, ...) of every
        transaction, a L{sipproxy.sip.transaction.TimerConfig}.
    """

    transport: Optional[Transport] = None

    def __init__(
        self,
        reactor: IReactorTime,
        legs: Optional[Iterable[str]] = None,
        *,
        dispatcher: Optional[IDispatcher] = None,
        transport: Optional[Transport] = None,
        outgoing_proxy: Optional[str] = None,
        registrar: Optional[str] = None,
        auth: Any = None,
        domain: Optional[str] = None,
        from_: Optional[str] = None,
        contact: Optional[str] = None,
        options: Sequence[tuple[str, str]] = (),
        route: Iterable[str] = (),
        domain2proxy: Optional[Mapping[str, str]] = None,
        media_factory: Optional[Callable[[Call], Any]] = None,
        refresh: Optional[RefreshPolicy] = None,
        user_agent: str = "sipproxy",
        timers: Optional[TimerConfig] = None,
    ) -> None:
        self.clock = reactor
        self._own_legs = dispatcher is None
        # options that can be wrong are read before any socket is bound
        proxy = parse_proxy(outgoing_proxy) if outgoing_proxy else None
        table = {d.lower(): parse_proxy(p) for d, p in (domain2proxy or {}).items()}
        self.route = [r if r.startswith("<") else outbound_route(r) for r in route]
        if dispatcher is None:
            transport = transport or type(self).transport
            if transport is None:
                raise TypeError("Simple needs a dispatcher, or legs and a transport "
                                "(sipproxy.Simple is the one with sockets)")
            if not legs:
                raise TypeError("Simple needs legs (e.g. ['udp:127.0.0.1:5060']) or a dispatcher")
            dispatcher = transport(reactor, [legs] if isinstance(legs, str) else list(legs))
        self.dispatcher = dispatcher
        if proxy is not None:
            dispatcher.outgoing_proxy = proxy
        if table:
            dispatcher.domain2proxy = table
        self.domain = domain or dispatcher.legs[0].host
        try:
            self.from_ = self._complete(from_ or "sipproxy")
            self.user = parse_name_addr(self.from_).uri.user
        except URIError as e:
            if self._own_legs:
                for leg in dispatcher.legs:
                    leg.stop()
            raise ValueError(f"bad from address {from_!r}: {e}") from None
        self.contact = contact
        self.registrar = registrar
        self.media_factory = media_factory
        self.refresh = refresh or RefreshPolicy()
        self.endpoint = Endpoint(reactor, dispatcher, credentials=auth, user_agent=user_agent, timers=timers)
        self.endpoint.options_headers = list(options)
        self._receivers: list[Any] = []
        self._front: list[Any] = []
        self._calls: dict[str, Call] = {}
        self._registration: Optional[Registration] = None
        self._handlers: dict[str, list[Callable[..., Any]]] = {}
        self._listen: Optional[dict] = None
        self._rebuild_chain()

    # -- identity ----------------------------------------------------------------------
    def _complete(self, address: str) -> str:
        """C{bob} -> C{sip:bob@domain}; C{bob@host} -> C{sip:bob@host};
        a URI or name-addr stays."""
        address = address.strip()
        if "<" in address or _HAS_SCHEME(address):
            return address
        if "@" not in address:
            address = f"{address}@{self.domain if ':' not in self.domain else '[' + self.domain + ']'}"
        return f"sip:{address}"

    def contact_for(self, leg: ILeg) -> str:
        """Our Contact for requests and answers leaving through C{leg}."""
        if self.contact:
            return self.contact if self.contact.startswith("<") else f"<{self.contact}>"
        user = f"{self.user}@" if self.user else ""
        scheme = "sips" if leg.proto == "tls" else "sip"
        params = ";transport=tcp" if leg.proto == "tcp" else ""
        return f"<{scheme}:{user}{leg.sent_by}{params}>"

    def owns(self, request: Request) -> bool:
        """Whether a request outside our dialogs is for this user agent:
        its Request-URI names our user (or our Contact), or it is an
        OPTIONS to one of our legs."""
        try:
            uri = request.parsed_uri()
        except URIError:
            return False
        if not uri.is_sip:
            return False
        if self.contact:
            try:
                if parse_name_addr(self.contact).uri.user == uri.user and uri.user:
                    return True
            except URIError:
                pass
        if uri.user:
            return uri.user == self.user
        return request.method == "OPTIONS" and self.dispatcher.is_local(uri.host, uri.port)

    # -- events ----------------------------------------------------------------------------
    def on(self, name: str, function: Callable[[str, dict], Any]) -> None:
        """C{function(name, fields)} on C{"registered"}, C{"register_failed"},
        C{"unregistered"}."""
        self._handlers.setdefault(name, []).append(function)

    def _event(self, name: str, fields: dict) -> None:
        for function in list(self._handlers.get(name, ())):
            _call(function, name, fields)

    # -- the receive chain ---------------------------------------------------------------------
    def _rebuild_chain(self) -> None:
        self.endpoint.last_in_chain = not self._receivers
        if not self._receivers and not self._front:
            self.endpoint.owns = None
            self.dispatcher.set_receiver(self.endpoint)
            return
        self.endpoint.owns = self.owns if self._receivers else None
        self.dispatcher.set_receiver(ReceiveChain([*self._front, self.endpoint, *self._receivers]))

    def _add_receiver(self, receiver: Any) -> Any:
        self._receivers.append(receiver)
        self._rebuild_chain()
        return receiver

    def create_auth(self, users: Mapping[str, str], realm: Optional[str] = None, i_am_proxy: bool = False,
                    **options: Any) -> Authorize:
        """An L{Authorize} on our dispatcher (digest authentication)."""
        return Authorize(self.dispatcher, users, realm=realm or self.domain, clock=self.clock,
                         i_am_proxy=i_am_proxy, **options)

    def create_registrar(self, auth_users: Optional[Mapping[str, str]] = None, **options: Any) -> Any:
        """A L{Registrar} answering REGISTER on our legs (behind digest
        authentication with C{auth_users}); added to the receive chain."""
        options.setdefault("clock", self.clock)
        registrar = Registrar(self.dispatcher, **options)
        receiver: Any = registrar
        if auth_users:
            receiver = ReceiveChain([self.create_auth(auth_users), registrar], methods=["REGISTER"])
            self._add_receiver(receiver)
            self._add_receiver(registrar)  # and its routing of other requests
            return registrar
        return self._add_receiver(receiver)

    def create_stateless_proxy(self, auth_users: Optional[Mapping[str, str]] = None, **options: Any) -> Any:
        """A L{StatelessProxy} forwarding what nothing before it took;
        added last to the receive chain."""
        proxy = StatelessProxy(self.dispatcher, **options)
        if auth_users:
            self._add_receiver(ReceiveChain([self.create_auth(auth_users, i_am_proxy=True), proxy]))
        else:
            self._add_receiver(proxy)
        return proxy

    def create_chain(self, receivers: Iterable[Any], **options: Any) -> ReceiveChain:
        """A L{ReceiveChain} of C{receivers}, added to ours after the
        endpoint."""
        return self._add_receiver(ReceiveChain(receivers, **options))

    # -- registering ---------------------------------------------------------------------------
    def register(self, expires: int = 3600, registrar: Optional[str] = None,
                 contact: Optional[str] = None) -> Deferred:
        """Register our Contact: fires with the granted expiry and keeps
        the binding alive (refresh, back-off on failure, reported through
        L{on}). Fails with L{SIPError} when the first REGISTER fails."""
        if self._registration is not None:
            self._registration.stop()
        target = registrar or self.registrar or f"sip:{parse_name_addr(self.from_).uri.host_port}"
        if not target.lower().startswith(("sip:", "sips:")):
            target = "sip:" + target
        state = {"call_id": new_call_id(), "cseq": 0, "tag": new_tag()}

        def send(seconds: int) -> Deferred:
            return self._register_once(target, seconds, contact, state)

        self._registration = Registration(self.clock, send, expires, self.refresh, self._event)
        return self._registration.start()

    def _register_once(self, registrar: str, expires: int, contact: Optional[str], state: dict) -> Deferred:
        d = self.endpoint.resolve(registrar)

        def send(target: Any) -> Deferred:
            leg = target[0]
            state["cseq"] += 1
            our_contact = contact or self.contact_for(leg)
            aor = str(parse_name_addr(self.from_).uri) if "<" in self.from_ else self.from_
            request = new_request("REGISTER", registrar, self.from_, f"<{aor}>", sent_by=leg.sent_by,
                                  transport=leg.proto.upper(), call_id=state["call_id"], from_tag=state["tag"],
                                  cseq=state["cseq"], contact=our_contact, route_set=self.route,
                                  headers=[("Expires", str(expires))])

            def moved(retry: Request) -> None:
                state["cseq"] = retry.cseq[0]

            transaction = self.endpoint.send_request(request, target, on_retry=moved)
            return transaction.deferred.addCallback(self._granted, expires, our_contact)

        return d.addCallback(send)

    @staticmethod
    def _granted(response: Response, asked: int, contact: str) -> int:
        if not 200 <= response.code < 300:
            raise SIPError(response.code, response.reason, response)
        if asked == 0:
            return 0
        ours = parse_name_addr(contact).uri
        granted: Optional[int] = None
        for value in response.get_all("contact"):
            try:
                addr = parse_name_addr(value)
            except URIError:
                continue
            if addr.uri.user == ours.user and addr.uri.host_port.lower() == ours.host_port.lower():
                param = addr.param("expires")
                if param is not None and param.isdigit():
                    granted = int(param) if granted is None else min(granted, int(param))
        if granted is None:
            header = response.get("expires")
            granted = int(header) if header and header.strip().isdigit() else asked
        return granted

    def unregister(self) -> Deferred:
        """Remove our binding (REGISTER with expires 0) and stop refreshing."""
        registration, self._registration = self._registration, None
        if registration is None:
            return succeed(0)
        return registration.unregister()

    # -- calling ---------------------------------------------------------------------------------
    def invite(self, to: str, ring_time: Optional[float] = None, sdp: Any = True,
               headers: Sequence[tuple[str, str]] = (), from_: Optional[str] = None,
               on_call: Optional[Callable[[Call], Any]] = None, media: Any = None) -> Deferred:
        """Call C{to}: fires with the established L{Call}; fails with
        L{SIPError} (code and reason of the final answer), with
        L{sipproxy.ua.call.RingTimeout} when nobody answered within
        C{ring_time} seconds (the INVITE was cancelled).

        @param sdp: the offer: bytes as they are, True for an audio offer
            (PCMU, PCMA, telephone-event; or what the media factory
            makes), None for an INVITE without a body.
        @param on_call: called with the L{Call} as soon as it exists, before
            any answer (to follow its C{"ringing"} events, or cancel it).
        @param media: RTP for this call (L{sipproxy.ua.media_session}'s
            C{MediaOptions}, a mapping of its fields, or True); files are
            read now: a bad one fails the Deferred before any SIP is sent.
        """
        try:
            factory = session_factory(media)
        except Exception as e:  # AudioFileError, ValueError: before any SIP
            return fail(e)
        uri = self._complete(to)
        if "<" in uri:
            peer, uri = uri, str(parse_name_addr(uri).uri)
        else:
            peer = f"<{uri}>"
        call = Call(self, outgoing=True, peer=peer, sdp=sdp, headers=headers, media_factory=factory)
        if on_call is not None:
            on_call(call)
        return call._invite_out(uri, self._complete(from_) if from_ else self.from_, ring_time)

    def request(self, method: str, to: str, body: bytes = b"", content_type: Optional[str] = None,
                headers: Sequence[tuple[str, str]] = ()) -> Deferred:
        """Send a request outside any dialog (a MESSAGE, an OPTIONS ping,
        ...): fires with the 2xx response, fails with L{SIPError} for a
        3xx-6xx (after answering a 401/407 with our credentials)."""
        uri = self._complete(to)
        peer = uri if "<" in uri else f"<{uri}>"
        uri = str(parse_name_addr(uri).uri) if "<" in uri else uri
        hop = str(parse_name_addr(self.route[0]).uri) if self.route else uri
        d = self.endpoint.resolve(hop)

        def send(target: Any) -> Deferred:
            leg = target[0]
            request = new_request(method, uri, self.from_, peer, sent_by=leg.sent_by, transport=leg.proto.upper(),
                                  route_set=self.route, body=body, content_type=content_type if body else None,
                                  headers=headers)
            return self.endpoint.send_request(request, target).deferred

        def success_only(response: Response) -> Response:
            if response.code >= 300:
                raise SIPError(response.code, response.reason, response)
            return response

        return d.addCallback(send).addCallback(success_only)

    def message(self, to: str, text: Union[str, bytes], content_type: str = "text/plain") -> Deferred:
        """Send a MESSAGE (RFC 3428) outside any dialog; as L{request}."""
        body = text.encode("utf-8") if isinstance(text, str) else text
        return self.request("MESSAGE", to, body, content_type)

    def listen(self, filter: Union[Callable[[str, Request], Any], str, None] = None,
               on_create: Optional[Callable[[Call, Request], Any]] = None,
               on_established: Optional[Callable[[Call], Any]] = None,
               on_cleanup: Optional[Callable[[Call], Any]] = None,
               auth_users: Optional[Mapping[str, str]] = None,
               answer_after: Optional[float] = 0, sdp: Any = True,
               on_request: Optional[Callable[[ServerTransaction], Any]] = None, media: Any = None) -> Endpoint:
        """Take incoming calls.

        @param filter: C{filter(from_value, request)} or a regular
            expression searched in From; calls it refuses are left to the
            rest of the receive chain (a registrar, a proxy), or answered
            403 when nothing follows the user agent.
        @param on_create: C{on_create(call, request)}; a false answer
            declines the call (603).
        @param on_established: called with the call at the caller's ACK.
        @param on_cleanup: called with the call when it ends.
        @param auth_users: user to password: INVITEs must authenticate.
        @param answer_after: answer at once (0), after ringing that many
            seconds, or ring and leave it to the application (None: it
            calls C{call.answer()} or C{call.reject()}).
        @param sdp: what we answer with when the caller offered nothing
            (as L{invite}).
        @param on_request: C{on_request(transaction)} for other requests
            outside a dialog (MESSAGE, NOTIFY, ...): answer with
            C{transaction.respond(code)} and return true; a false answer
            gets 405 (501 for an unknown method).
        @param media: RTP for every call taken (as L{invite}; files are
            read now, and a bad one raises here).
        """
        factory = session_factory(media)
        if isinstance(filter, str):
            pattern = re.compile(filter)

            def accepts(request: Request, leg: ILeg, addr: tuple[str, int]) -> bool:
                return bool(pattern.search(request.get("from") or ""))
        elif filter is not None:
            function = filter

            def accepts(request: Request, leg: ILeg, addr: tuple[str, int]) -> bool:
                return bool(function(request.get("from") or "", request))
        else:
            accepts = None  # type: ignore[assignment]
        self._listen = {"on_create": on_create, "on_established": on_established, "on_cleanup": on_cleanup,
                        "answer_after": answer_after, "sdp": sdp, "media_factory": factory}
        self.endpoint.accept_invite = accepts
        self.endpoint.on_invite = self._incoming
        if on_request is not None:
            self.endpoint.on_request = on_request
        if auth_users:
            auth = self.create_auth(auth_users)
            self._front = [ReceiveChain([auth], filter=lambda p, leg, addr: p.to_tag is None, methods=["INVITE"])]
            self._rebuild_chain()
        return self.endpoint

    def _incoming(self, transaction: ServerTransaction) -> bool:
        settings = self._listen or {}
        request = transaction.request
        call = Call(self, outgoing=False, peer=request.get("from") or "", sdp=settings.get("sdp", True),
                    media_factory=settings.get("media_factory"))
        call._invite_in(transaction)
        self._calls[call.call_id] = call
        on_create = settings.get("on_create")
        if on_create is not None and not _call(on_create, call, request):
            call.reject(603, "Decline")
            return True
        delay = settings.get("answer_after", 0)
        if delay is None:  # the application answers (or not)
            call.ring()
        elif delay > 0:
            call.ring()
            call.answer_later(delay)
        else:
            call.answer()
        return True

    def _established(self, call: Call) -> None:
        function = (self._listen or {}).get("on_established")
        if function is not None and not call.outgoing:
            _call(function, call)

    def _call_ended(self, call: Call) -> None:
        self._calls.pop(call.call_id, None)
        function = (self._listen or {}).get("on_cleanup")
        if function is not None and not call.outgoing:
            _call(function, call)

    @property
    def calls(self) -> list[Call]:
        """The calls not ended yet."""
        return list(self._calls.values())

    # -- the end ---------------------------------------------------------------------------------
    def cleanup(self, unregister: bool = True) -> Deferred:
        """Hang up every call (BYE or CANCEL), remove our registration
        (unless told to leave it to expire), stop the timers and, when we
        bound them, the legs."""
        waits = [call.bye() for call in list(self._calls.values())]
        if unregister and self._registration is not None and self._registration.expires:
            waits.append(self.unregister())
        elif self._registration is not None:
            self._registration.stop()
        d = DeferredList(waits, consumeErrors=True)

        def stop(_: Any) -> Any:
            self.endpoint.close()
            if not self._own_legs:
                return None
            stops = [leg.stop() for leg in self.dispatcher.legs]
            return DeferredList([s for s in stops if isinstance(s, Deferred)], consumeErrors=True)

        return d.addCallback(stop).addCallback(lambda _: None)
