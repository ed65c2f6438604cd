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
    "IHostResolver",
    "IContactRewriter",
    "INATHelper",
    "ILocationStore",
    "ICredentialStore",
]


class ILeg(Interface):
    """One local transport endpoint: a socket and the SIP identity that goes
    with it (what it writes into Via, Record-Route and Contact)."""

    proto = Attribute("Transport in lower case: 'udp', 'tcp' or 'tls'.")
    host = Attribute("The IP address the leg is bound to (no brackets).")
    port = Attribute("The port the leg is bound to.")
    family = Attribute("4 or 6.")
    index = Attribute("Position in the dispatcher's leg list, set by the dispatcher.")
    sent_by = Attribute("host:port as written into Via (IPv6 bracketed).")
    contact = Attribute("SIP URI of this leg, e.g. 'sip:192.0.2.1:5060;transport=tcp'.")
    key = Attribute("'proto:host:port', unique per leg; names the leg in logs and tokens.")

    def send(data: bytes, addr: tuple) -> None:
        """Send one serialised message to C{addr} (host, port).

        Stream legs reuse a connection to C{addr} (inbound or outbound) or
        open one; failures are logged, never raised.
        """

    def can_reach(proto: str, family: int) -> bool:
        """True if this leg can send with transport C{proto} to an address
        of C{family}."""


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


class IDispatcher(Interface):
    """Owns the legs, parses what they receive, sends what the SIP logic
    decides, and resolves targets."""

    legs = Attribute("The legs, in order; a leg's index is its position.")

    def send(message, leg, addr) -> None:
        """Serialise C{message} and send it from C{leg} to C{addr}."""

    def respond(request, code: int, reason=None, leg=None, addr=None, headers=()) -> None:
        """Answer C{request} statelessly with C{code} (RFC 3261 8.2.6),
        routed back per its top Via."""

    def resolve(uri, leg_hint=None):
        """Targets for a URI: a Deferred firing with a list of
        (leg, (host, port)) pairs, best first."""


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
    (Net::SIP NATHelper API)."""

    def allocate_sockets(session, side: int, local_ip: str, media):
        """Reserve relay ports for the media of one side of a session.

        @return: the new (address, port[, rtcp port]) per media, or a
            Deferred of it; None or a failure when allocation fails."""

    def activate_session(session, param=None):
        """Start forwarding between both sides of a session."""

    def close_session(session):
        """Stop forwarding and release the sockets of a session."""

    def expire(now: float = None):
        """Expire idle and unused sessions; return what was expired."""


class ILocationStore(Interface):
    """Where a registrar keeps bindings (address-of-record to contacts)."""

    def get_bindings(aor: str):
        """Deferred list of the current bindings for C{aor}."""

    def set_bindings(aor: str, bindings, ttl: float):
        """Deferred: replace the bindings of C{aor}."""

    def remove(aor: str):
        """Deferred: drop every binding of C{aor}."""


class ICredentialStore(Interface):
    """Where digest authentication looks users up."""

    def get_ha1(user: str, realm: str, algorithm: str):
        """The hex HA1 for user@realm with C{algorithm} ('MD5' or
        'SHA-256'), or None if the user is unknown; may be a Deferred."""
