"""The seams of sipproxy: every pluggable part has an interface here.

Pieces are chained through L{IReceiver}, as Net::SIP's ReceiveChain does:
the dispatcher hands every parsed message to one receiver, which may be a
chain of receivers (registrar, authorizer, proxy, ...).
"""
from __future__ import annotations

from zope.interface import Attribute, Interface

__all__ = [
    "ILeg",
    "IReceiver",
    "IDispatcher",
    "ICapture",
    "IHostResolver",
    "IHopResolver",
    "IContactRewriter",
    "INATHelper",
    "IRelaySockets",
    "ILocationStore",
    "ILocationListing",
    "ICredentialStore",
]


class ILeg(Interface):
    """One local transport endpoint: a socket and the SIP identity that goes
    with it (what it writes into Via, Record-Route and Contact)."""

    proto = Attribute("Transport in lower case: 'udp', 'tcp', 'tls', 'ws' or 'wss'.")
    host = Attribute("The IP address the leg is bound to (no brackets).")
    port = Attribute("The port the leg is bound to.")
    family = Attribute("4 or 6.")
    index = Attribute("Position in the dispatcher's leg list, set by the dispatcher.")
    sent_by = Attribute("host:port as written into Via (IPv6 bracketed).")
    contact = Attribute("SIP URI of this leg, e.g. 'sip:192.0.2.1:5060;transport=tcp'.")
    key = Attribute("'proto:host:port', unique per leg; names the leg in logs and tokens.")
    via_prefix = Attribute("'SIP/2.0/UDP host:port;branch=' as a proxy writes its Via (branch appended).")
    dispatcher = Attribute("The IDispatcher the leg reports to, set by the dispatcher.")

    def send(data: bytes, addr: tuple, on_error=None) -> None:
        """Send one serialised message to C{addr} (host, port).

        Stream legs reuse a connection to C{addr} (inbound or outbound) or
        open one; failures are logged, never raised, and reported to
        C{on_error(reason)} when given (a closed leg, an unreachable
        address, a connection that could not be opened). The dispatcher
        passes C{on_error} only when its caller asked for it.
        """

    def can_reach(proto: str, family: int) -> bool:
        """True if this leg can send with transport C{proto} to an address
        of C{family}."""

    def has_flow(addr: tuple) -> bool:
        """False when a flow to C{addr} is known to be gone (a WebSocket
        client whose connection closed: nobody can connect to it); True
        otherwise."""

    def add_alias(peer: tuple, alias: tuple) -> None:
        """Stream legs: a request from connection C{peer} named C{alias}
        (its Via sent-by) as its address; send to C{alias} over C{peer}'s
        connection. Datagram legs ignore it."""

    def listen(reactor) -> None:
        """Bind the socket (or start listening) with C{reactor}."""

    def stop() -> None:
        """Close the socket and its connections."""


class IReceiver(Interface):
    """Something that takes parsed incoming messages."""

    def receive(packet, leg, addr) -> object:
        """Handle C{packet} (a Request or Response) that arrived on C{leg}
        from C{addr} (host, port).

        @return: a true value if the packet was handled (a chain stops
            there), a false value to let the next receiver in a chain look
            at it.
        """


class IHostResolver(Interface):
    """Turns host names into addresses (A/AAAA; RFC 3263 comes on top)."""

    def resolve_host(name: str):
        """@return: a Deferred firing with a list of IP address strings
            (possibly empty); errbacks only on resolver failure."""


class IHopResolver(Interface):
    """Resolves a next hop as RFC 3263 says (NAPTR, SRV, A/AAAA)."""

    def resolve_hop(host: str, proto, port, transports, families, key=None):
        """Destinations (proto, IP, port) in the order to try them: a list
        when known at once (hosts file, cache), else a Deferred firing with
        one; empty when the name leads nowhere. Fails with
        L{sipproxy.transport.resolver.ResolutionFailed} when DNS could not
        say. C{key} (a Call-ID) makes the SRV weighted choice repeatable."""


class IDispatcher(Interface):
    """Owns the legs, parses what they receive, sends what the SIP logic
    decides, and resolves targets."""

    legs = Attribute("The legs, in order; a leg's index is its position.")
    outgoing_proxy = Attribute("A URI every request goes to, or None (assignable: the user agent sets it).")
    domain2proxy = Attribute("Domain to proxy URI (assign a new mapping to change it).")
    capture = Attribute("An ICapture told of every message received and sent, or None (the default).")

    def send(message, leg, addr, on_error=None) -> None:
        """Serialise C{message} and send it from C{leg} to C{addr};
        C{on_error(reason)} hears of a failure to send (RFC 3261 17.1.4)."""

    def respond(request, code: int, reason=None, leg=None, addr=None, headers=()) -> None:
        """Answer C{request} statelessly with C{code} (RFC 3261 8.2.6),
        routed back per its top Via."""

    def resolve(uri, leg_hint=None):
        """Targets for a URI: a Deferred firing with a list of
        (leg, (host, port)) pairs, best first."""

    def stateless_tag(request) -> str:
        """The To tag of stateless answers to C{request}
        (L{sipproxy.sip.stateless.stateless_tag})."""

    def hop_for(uri):
        """The L{sipproxy.proxy.routing.Hop} a request for C{uri} goes to
        next (before DNS); raises L{sipproxy.proxy.routing.RoutingError}."""

    def targets_for_hop(hop, leg_hint=None, request=None):
        """(leg, (host, port)) pairs for C{hop}, in the order to try them:
        a list at once for an IP address, else a Deferred of it; raises (or
        errbacks with) L{sipproxy.proxy.routing.RoutingError}. C{request}'s
        Call-ID keys the SRV weighted choice."""

    def choose_leg(proto: str, address: str, hint=None):
        """The leg to send to C{address} with C{proto} from, or None."""

    def legs_at(host: str, port: int) -> list:
        """The legs bound to C{host}:C{port}."""

    def is_local(host: str, port, proto=None) -> bool:
        """C{host[:port]} (and C{proto}, if given) is one of our legs; no
        port means the transport's default."""

    def names_us(uri) -> bool:
        """C{uri} is a sip/sips URI naming one of our legs."""

    def set_receiver(receiver) -> None:
        """Hand every parsed message to C{receiver} (an L{IReceiver})."""

    def message_received(data: bytes, leg, addr: tuple, stream: bool = False) -> None:
        """Called by a leg with one message's bytes; never raises."""

    def copy_sent(data: bytes, leg, addr: tuple) -> None:
        """Tell the capture (C{capture}), if any, of a message sent straight
        through C{leg} instead of by C{send}; never raises."""


class ICapture(Interface):
    """Gets a copy of every SIP message a dispatcher receives or sends, as
    octets (e.g. L{sipproxy.transport.hep.HEPSender}, for Homer). Called
    on the SIP path: it must return at once and never raise."""

    def received(data: bytes, leg, addr: tuple) -> None:
        """C{data} arrived on C{leg} from C{addr} (TLS: the plaintext)."""

    def sent(data: bytes, leg, addr: tuple) -> None:
        """C{data} was handed to C{leg} to send to C{addr}."""


class IContactRewriter(Interface):
    """Rewrites Contact URIs of packets passing between legs, so that the
    far side sends in-dialog requests to the proxy (Net::SIP's
    rewrite_contact)."""

    def rewrite(contact: str, incoming_leg, outgoing_leg, force: bool):
        """@param contact: the C{user@host[:port][;params]} part of a
            sip/sips URI.
        @return: the replacement for that part (for example
            C{b<token>@proxy-host:port}), or None to leave it alone."""

    def restore(user: str, incoming_leg):
        """Undo L{rewrite} for the user part of a Request-URI that names
        the proxy.

        @return: (original contact, leg to send it through) or None if
            C{user} is not a valid token for C{incoming_leg}."""


class INATHelper(Interface):
    """Media relay control used by the stateless proxy's C{do_nat}
    (Net::SIP NATHelper API), through L{sipproxy.nat.sessions.NATSessions}.

    Sessions are named by a L{sipproxy.nat.sessions.SessionKey}: Call-ID,
    CSeq number (None: every transaction), C{idfrom}/C{idto} (a party's tag
    or address of record plus the proxy leg facing it), the From/To
    addresses of record and tags, and the IP addresses of the legs facing
    each party. Every method may answer with a plain value or a Deferred of
    it (a remote relay answers later).
    """

    def allocate_sockets(session, side: int, local_ip: str, sdp):
        """Reserve relay ports for the media of one side of a session.

        @param side: 0 for the SDP of a request (the From party's), 1 for
            that of a response (the To party's).
        @param local_ip: the IP address of the leg the SDP leaves through:
            where the other party will send its media.
        @param sdp: the parsed L{sipproxy.sip.sdp.SessionDescription}, untouched;
            do not change it (the caller rewrites it with the result).
        @return: one L{sipproxy.sip.sdp.MediaTarget} or None (leave that stream
            alone) per media line, in order; or None when allocation failed.
            A retransmission of the same SDP gets the same answer.
        """

    def activate_session(session, param=None):
        """Start forwarding between both sides of a session.

        @return: 1 when activated now, -1 when it already was, a false value
            when one side is missing (or the session is unknown).
        """

    def close_session(session, reason=None):
        """End the session(s) named by C{session}: with a CSeq, the session
        to C{idto} in that transaction (CANCEL, error final); with CSeq None,
        every session between C{idfrom} and C{idto} in either direction
        (BYE). Sockets may linger for a short close delay.

        @param reason: a word for the logs (C{"bye"}, C{"cancel"}, ...).
        @return: the number of sessions ended (or a Deferred of it)."""

    def expire(now: float = None):
        """Expire idle and unused sessions; return infos of what was ended."""


class IRelaySockets(Interface):
    """Where the local RTP relay gets its UDP sockets
    (L{sipproxy.nat.sockets} on a reactor; a fake in tests)."""

    def open_udp(address: str, port: int, receiver):
        """Bind a UDP socket on C{address:port} and hand every datagram to
        C{receiver.datagramReceived(data, addr)}.

        @return: a handle with C{sendto(data, addr)} (the socket's own),
            C{port} and C{close()}.
        @raise OSError: the socket cannot be had (EADDRINUSE: the port is
            taken; EMFILE: no file descriptor left; ...); nothing stays open.
        """

    def close():
        """Stop reading; the sockets themselves are closed by their handles."""


class ILocationStore(Interface):
    """Where a registrar keeps bindings (address-of-record to contacts,
    L{sipproxy.registrar.location.Binding}).

    Every method returns a Deferred. A backend that cannot be reached
    errbacks with L{sipproxy.registrar.location.StoreUnavailable} (the registrar
    answers 503 with Retry-After); nothing else is expected to fail.
    """

    def lookup(aor: str):
        """Deferred list of the current (unexpired) bindings of C{aor},
        each with its remaining seconds in C{expires}."""

    def update(aor: str, call_id: str, cseq: int, changes, remove_all: bool = False):
        """Apply one REGISTER atomically (RFC 3261 10.3 steps 6 to 7).

        @param changes: (key, binding, ttl) triples: add or refresh
            C{binding} under C{key} for C{ttl} seconds, or remove the
            binding filed under C{key} when C{ttl} is 0.
        @param remove_all: remove every binding of C{aor} (C{Contact: *}).
        @return: Deferred list of the bindings of C{aor} after the update.
            Errbacks with L{sipproxy.registrar.location.OutOfOrder}, changing
            nothing, when a touched binding holds the same Call-ID and a
            higher CSeq (an equal CSeq is a retransmission and is applied
            again).
        """

    def has_contact(contact_key: str):
        """Deferred bool: some unexpired binding has this contact
        (L{sipproxy.registrar.location.contact_key}); for the relay policy."""

    def close():
        """Release connections and threads; a Deferred that fires when
        done."""


class ILocationListing(Interface):
    """A location store that can also list what it holds (optional; the
    control socket's C{registrations} and C{stats} use it)."""

    def dump(limit: int):
        """Deferred list of (aor, bindings) pairs, sorted by
        address-of-record, for at most C{limit} of them; only unexpired
        bindings, each with its remaining seconds in C{expires}."""

    def count():
        """Deferred (addresses-of-record, bindings) counts of the
        unexpired bindings."""


class ICredentialStore(Interface):
    """Where digest authentication looks users up."""

    def get_ha1(user: str, realm: str, algorithm: str):
        """The hex HA1 for user@realm with C{algorithm} ('MD5' or
        'SHA-256'), or None if the user is unknown or has no HA1 for that
        algorithm; may be a Deferred."""
