"""Which media sessions a SIP packet opens, completes or closes (Net::SIP's
C{StatelessProxy::do_nat}), as pure SIP logic.

L{NATSessions.do_nat} looks at a packet that changes legs and drives an
L{sipproxy.interfaces.INATHelper}: it never touches the reactor or a
socket, so the same code drives the in-process relay
(L{sipproxy.nat.relay.LocalRelay}) and a remote one over rtpengine's ng
protocol (L{sipproxy.nat.ng.NgClient}); the helper's answers may be plain
values or Deferreds.

What happens, after Net::SIP 0.835:
  - Only packets whose CSeq method is INVITE or ACK have their SDP looked
    at (SDP in UPDATE or PRACK is forwarded untouched, as in Net::SIP).
  - A session is named by a L{SessionKey}: Call-ID, CSeq number, an id for
    each party (the From/To tag when there is one, else the address of
    record, plus the leg that party is on) and the two addresses of record.
    Side 0 is the SDP of a request (the From party's), side 1 that of a
    response (the To party's), so all packets of a dialog, both ways, agree.
  - SDP in a request or response: the helper allocates relay ports on the
    outgoing leg's address and the SDP is rewritten to point at them (the
    C{o=} version goes up; held and rejected streams are left alone).
  - An error final (>= 400) to INVITE closes that transaction's session and
    is remembered, so its ACK is not mistaken for a completing one.
  - CANCEL closes that INVITE transaction; BYE closes every session of the
    dialog, in either direction.
  - ACK activates the session and must succeed when SDP was relayed in its
    transaction (else the ACK is dropped, as Net::SIP does); any other
    packet with SDP tries to activate it (early media) and ignores failure.

Departures from Net::SIP, on purpose:
  - When the relay cannot allocate ports, a request is answered
    C{503 Service Unavailable} with C{Retry-After} (Net::SIP drops it
    silently, which leaves TCP senders hanging); a response is dropped, so
    the UAS retransmits it.
  - Malformed SDP in a request is answered C{400} (Net::SIP drops it).
  - The ACK to an error response is left alone for every code >= 400
    (Net::SIP's check is C{> 400}).
  - An ACK in a transaction whose SDP never went through the relay (a call
    without media) is forwarded; Net::SIP drops it as an "incomplete
    session".
"""
from __future__ import annotations

from typing import Any, NamedTuple, Optional

from twisted.internet.defer import Deferred

from sipproxy.observe.logsafe import SafeLogger
from sipproxy.interfaces import ILeg
from sipproxy.sip.message import Message, ParseError, Request
from sipproxy.sip.sdp import SDPError, SessionDescription, parse_sdp
from sipproxy.sip.uri import URIError

__all__ = ["NATError", "SessionKey", "NATSessions", "sdp_body"]


class NATError(Exception):
    """Raised (or used to errback) by C{do_nat}: the packet cannot be NATed.
    A request gets C{code} (with C{retry_after}, if set); a response is
    dropped."""

    def __init__(self, code: int, reason: str, retry_after: Optional[int] = None) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason
        self.retry_after = retry_after


log = SafeLogger()

#: How many entries a generation of the response-code and media maps holds
#: before it is rotated out (Net::SIP rotates its code map at 5000).
GENERATION_SIZE = 5000


class SessionKey(NamedTuple):
    """What names a media session (Net::SIP's C{nat_basic}, with names).

    @ivar call_id: the Call-ID.
    @ivar cseq: the CSeq number, or None for "every transaction" (BYE).
    @ivar idfrom: the From party: C{"<scheme> tag=<tag> <leg>"} when From
        has a tag, else C{"<scheme> aor=<address of record> <leg>"}; C{leg}
        is the key of the proxy leg facing that party.
    @ivar idto: the same for the To party.
    @ivar uri_from: C{scheme:user@host} of From.
    @ivar uri_to: C{scheme:user@host} of To.
    @ivar from_tag: the From tag, or None.
    @ivar to_tag: the To tag, or None.
    @ivar from_leg: the IP address of the leg facing the From party.
    @ivar to_leg: the IP address of the leg facing the To party.
    """

    call_id: str
    cseq: Optional[int]
    idfrom: str
    idto: str
    uri_from: str
    uri_to: str
    from_tag: Optional[str] = None
    to_tag: Optional[str] = None
    from_leg: str = ""
    to_leg: str = ""

    @property
    def transaction(self) -> tuple:
        """(Call-ID, CSeq, idfrom): what an INVITE, its ACK and its
        responses share."""
        return (self.call_id, self.cseq, self.idfrom)


def sdp_body(packet: Message) -> Optional[bytes]:
    """The SDP body of C{packet}, or None: a non-empty body whose
    Content-Type is C{application/sdp} or missing (as Net::SIP)."""
    body = packet.body
    if not body:
        return None
    ctype = packet.get("content-type")
    if ctype is not None and ctype.split(";", 1)[0].strip().lower() != "application/sdp":
        return None
    return body


class _TwoGenerations:
    """A map that forgets: two dicts, the older dropped when the newer fills."""

    def __init__(self, size: int = GENERATION_SIZE) -> None:
        self.size = size
        self.new: dict = {}
        self.old: dict = {}

    def __setitem__(self, key: Any, value: Any) -> None:
        if len(self.new) >= self.size and key not in self.new:
            self.old, self.new = self.new, {}
        self.new[key] = value

    def get(self, key: Any, default: Any = None) -> Any:
        if key in self.new:
            return self.new[key]
        return self.old.get(key, default)

    def __contains__(self, key: Any) -> bool:
        return key in self.new or key in self.old


class NATSessions:
    """Media relaying decisions for the stateless proxy.

    @param nathelper: an L{sipproxy.interfaces.INATHelper}.
    @param retry_after: seconds for the C{Retry-After} of a 503 sent when
        the relay has no ports.
    """

    def __init__(self, nathelper: Any, retry_after: int = 5) -> None:
        self.nathelper = nathelper
        self.retry_after = retry_after
        self._codes = _TwoGenerations()  # (callid, cseq, idfrom, idto) -> final code >= 400
        self._relayed = _TwoGenerations()  # transactions whose SDP went through the relay

    # -- keys ---------------------------------------------------------------
    @staticmethod
    def _party(packet: Message, header: str) -> tuple[str, str, Optional[str]]:
        """(id without leg, scheme:user@host, tag) of From or To."""
        try:
            addr = packet.name_addr(header)
        except (URIError, ParseError) as e:
            raise NATError(400, f"Bad {header.capitalize()} header ({e})"[:100]) from None
        if addr is None:
            raise NATError(400, f"No {header.capitalize()} header")
        uri = addr.uri
        if uri.host:
            aor = f"{uri.scheme}:{uri.user}@{uri.host}" if uri.user else f"{uri.scheme}:{uri.host}"
        else:
            aor = str(uri)
        tag = addr.tag
        ident = f"{uri.scheme} tag={tag}" if tag else f"{uri.scheme} aor={aor}"
        return ident, aor, tag

    def session_key(self, packet: Message, incoming_leg: ILeg, outgoing_leg: ILeg) -> SessionKey:
        """The L{SessionKey} of C{packet} travelling from C{incoming_leg} to
        C{outgoing_leg}.

        @raise NATError: without From, To or a valid CSeq.
        """
        idfrom, uri_from, from_tag = self._party(packet, "from")
        idto, uri_to, to_tag = self._party(packet, "to")
        try:
            cseq = packet.cseq[0]
        except ValueError:
            raise NATError(400, "Bad CSeq header") from None
        if isinstance(packet, Request):
            from_leg, to_leg = incoming_leg, outgoing_leg
        else:
            from_leg, to_leg = outgoing_leg, incoming_leg
        return SessionKey(
            packet.call_id, cseq,
            f"{idfrom} {from_leg.key}", f"{idto} {to_leg.key}",
            uri_from, uri_to, from_tag, to_tag, from_leg.host, to_leg.host,
        )

    # -- the hook ---------------------------------------------------------------
    def do_nat(self, packet: Message, incoming_leg: ILeg, outgoing_leg: ILeg) -> Optional[Deferred]:
        """Relay the media of C{packet} (see the module docstring).

        @return: None when done (or nothing to do), a Deferred when the
            helper answers later; the packet must not be sent before it fires.
        @raise NATError: the packet must not be forwarded (a request gets
            the code as its answer). A returned Deferred fails with it too.
        """
        is_request = isinstance(packet, Request)
        method = packet.method if is_request else ""
        cseq_method = packet.cseq_method
        body = sdp_body(packet) if cseq_method in ("INVITE", "ACK") else None
        tracked = None
        if not is_request and cseq_method == "INVITE" and packet.code >= 400:  # type: ignore[attr-defined]
            tracked = packet.code  # type: ignore[attr-defined]
        if body is None and tracked is None and method not in ("ACK", "CANCEL", "BYE"):
            return None

        sdp: Optional[SessionDescription] = None
        if body is not None and tracked is None and method not in ("CANCEL", "BYE"):
            try:
                sdp = parse_sdp(body)
            except SDPError as e:
                raise NATError(400, f"Malformed SDP body ({e})"[:100]) from None

        key = self.session_key(packet, incoming_leg, outgoing_leg)

        if tracked is not None:
            self._codes[(key.call_id, key.cseq, key.idfrom, key.idto)] = tracked
            self._close(key, f"final {tracked}")
            return None
        if method == "CANCEL":
            self._close(key, "cancel")
            return None
        if method == "BYE":
            self._close(key._replace(cseq=None), "bye")
            return None

        is_ack = method == "ACK"
        if sdp is None:
            return self._activate(key, is_ack)

        side = 0 if is_request else 1
        try:
            targets = self.nathelper.allocate_sockets(key, side, outgoing_leg.host, sdp)
        except Exception:
            log.failure("allocating relay ports for {call_id} failed", call_id=key.call_id)
            targets = None

        def allocated(targets: Any) -> Any:
            self._rewrite(packet, sdp, targets, key, side)  # type: ignore[arg-type]
            return self._activate(key, is_ack)

        if isinstance(targets, Deferred):
            d = targets.addErrback(self._allocation_failed, key)
            return d.addCallback(allocated)
        return allocated(targets)

    # -- steps ----------------------------------------------------------------
    def _allocation_failed(self, failure: Any, key: SessionKey) -> None:
        log.info("relay allocation for {call_id} failed: {reason}", call_id=key.call_id,
                 reason=failure.getErrorMessage())
        return None

    def _rewrite(self, packet: Message, sdp: SessionDescription, targets: Any, key: SessionKey,
                 side: int) -> None:
        if targets is None or targets is False:
            raise NATError(503, "No media relay ports available", self.retry_after)
        try:
            changed = sdp.replace_media_addresses(targets)
        except (TypeError, ValueError) as e:
            log.error("relay answer for {call_id} does not fit the SDP: {error}", call_id=key.call_id, error=e)
            raise NATError(500, "Media relay failure") from None
        self._relayed[key.transaction] = True
        if changed:
            packet.set_body(bytes(sdp))

    def _activate(self, key: SessionKey, is_ack: bool) -> Optional[Deferred]:
        if is_ack:
            code = self._codes.get((key.call_id, key.cseq, key.idfrom, key.idto), 0)
            if code >= 400 or key.transaction not in self._relayed:
                return None
        try:
            result = self.nathelper.activate_session(key)
        except Exception:
            log.failure("activating the relay session of {call_id} failed", call_id=key.call_id)
            result = None

        def check(result: Any) -> None:
            if is_ack and not result:
                raise NATError(500, "Incomplete media session in ACK")
            return None

        if isinstance(result, Deferred):
            if not is_ack:
                result.addErrback(lambda f: None)
            return result.addCallback(check)
        check(result)
        return None

    def _close(self, key: SessionKey, reason: str) -> None:
        try:
            result = self.nathelper.close_session(key, reason=reason)
        except Exception:
            log.failure("closing the relay session of {call_id} failed", call_id=key.call_id)
            return
        if isinstance(result, Deferred):
            result.addErrback(lambda f: log.info("closing the relay session of {call_id} failed: {reason}",
                                                 call_id=key.call_id, reason=f.getErrorMessage()))
