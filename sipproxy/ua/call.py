"""A call: one INVITE dialog seen from our side (Net::SIP::Simple::Call).

A L{Call} is made by L{sipproxy.ua.simple.Simple.invite} (outgoing) or by
a listener (incoming). It owns the dialog, answers the requests the
endpoint routes to it (BYE, re-INVITE, INFO, NOTIFY, MESSAGE), keeps the
SDP of both sides, and ends once, telling who ended it and with what
code.

Events, for whoever holds the call (C{call.on(name, function)}):

- C{"ringing"}: a 1xx to our INVITE (the response);
- C{"established"}: the call is up (our ACK sent, or theirs received);
- C{"reinvite"}: the peer sent a re-INVITE (the request; already answered);
- C{"request"}: an INFO, NOTIFY or MESSAGE of the dialog (the transaction;
  answered 200 unless the handler answered it);
- C{"bye"}: the peer hung up (the BYE request);
- C{"end"}: the call is over (a L{CallEnd});
- C{"dtmf"}: a key press received on the media (a C{DtmfDigit}: digit,
  duration_ms, method C{"rfc4733"} or C{"inband"});
- C{"media_end"}: the played media ran out (the call).

The media seam: a C{media_factory(call)} given to C{Simple} makes
C{call.media}. The call builds its SDP (L{sipproxy.sip.offer_answer}'s
C{SdpSession}) from the media's C{address}, C{port} (its RTP socket) and
C{codecs} when it has them, and calls C{media.start(call)} after each
offer/answer (C{call.negotiated} then holds the peer's L{MediaParams}) and
C{media.stop(call)} at the end. Without media, a call offers (or answers
with) an SDP whose port is L{NO_RTP_PORT} and sends no RTP; or it carries
the SDP bytes the application gave.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Sequence

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall

from twisted.python.failure import Failure

from sipproxy.observe.logsafe import SafeLogger
from sipproxy.sip.dialog import Dialog
from sipproxy.sip.offer_answer import DEFAULT_CODECS, MediaParams, NoCommonCodec, SdpSession, remote_media
from sipproxy.sip.sdp import SDPError
from sipproxy.sip.message import Request, Response
from sipproxy.sip.uac import create_ack, new_request
from sipproxy.sip.uri import parse_name_addr
from sipproxy.ua.endpoint import ClientTransaction, ServerTransaction, SIPError, _call

__all__ = ["Call", "CallEnd", "RingTimeout", "CallCancelled", "SDP_TYPE", "MAX_REDIRECTS"]

log = SafeLogger()

SDP_TYPE = "application/sdp"
#: How many 302/305 answers one invite follows.
MAX_REDIRECTS = 5
#: The RTP port a call without media offers: the discard port (RFC 863),
#: so the SDP is complete (port 0 would refuse the stream) and what a peer
#: sends there is dropped.
NO_RTP_PORT = 9


class CallEnd(NamedTuple):
    """How a call ended: C{by} is C{"local"} or C{"remote"}; C{code} the
    status of the request that ended it (BYE's 200, the INVITE's 4xx-6xx,
    487 when cancelled), C{reason} its text."""

    by: str
    code: Optional[int]
    reason: str


class RingTimeout(SIPError):
    """Nobody answered within C{ring_time}: the INVITE was cancelled."""

    def __init__(self, ring_time: float) -> None:
        super().__init__(487, f"No answer within {ring_time:g} s (cancelled)")


class CallCancelled(SIPError):
    """The caller cancelled the INVITE before an answer."""

    def __init__(self) -> None:
        super().__init__(487, "Request Terminated (cancelled)")


class Call:
    """One call. Do not build it directly: use C{Simple.invite} or
    C{Simple.listen}.

    @ivar dialog: the L{Dialog} once established (None before).
    @ivar call_id: the Call-ID.
    @ivar peer: the other side's From/To value.
    @ivar state: C{"calling"}, C{"ringing"}, C{"established"} or C{"ended"}.
    @ivar local_sdp: the SDP we sent last (bytes), or None.
    @ivar remote_sdp: the SDP the peer sent last (bytes), or None.
    @ivar negotiated: the result of the last offer/answer
        (L{sipproxy.sip.offer_answer}), or None.
    @ivar media: what the media factory made, or None.
    @ivar ended: a Deferred firing with the L{CallEnd}.
    """

    def __init__(self, simple: Any, outgoing: bool, peer: str, sdp: Any = None,
                 headers: Sequence[tuple[str, str]] = (),
                 media_factory: Optional[Callable[["Call"], Any]] = None) -> None:
        self.simple = simple
        self.endpoint = simple.endpoint
        self.clock = simple.clock
        self.outgoing = outgoing
        self.peer = peer
        self.sdp = sdp
        self.headers = list(headers)
        self.dialog: Optional[Dialog] = None
        self.call_id = ""
        self.state = "calling"
        self.local_sdp: Optional[bytes] = None
        self.remote_sdp: Optional[bytes] = None
        self._params: Optional[MediaParams] = None
        self._held_by_peer = False
        #: an SDP answer not read yet: without media nothing needs it at
        #: once, and reading it is a tenth of what a call costs the caller
        self._unread_answer: Optional[bytes] = None
        self.on_hold = False
        self._sdp_session: Optional[SdpSession] = None
        self._answer_in_ack = False
        self._reinviting = False
        self.media: Any = None
        self.ended: Deferred = Deferred()
        self.end: Optional[CallEnd] = None
        self.target: Any = None  # (leg, address) of the first hop
        self._handlers: dict[str, list[Callable[..., Any]]] = {}
        self._invite: Optional[ClientTransaction] = None
        self._server: Optional[ServerTransaction] = None
        self._result: Optional[Deferred] = None
        self._ring_timer: Optional[IDelayedCall] = None
        self._answer_timer: Optional[IDelayedCall] = None
        self._ring_time: Optional[float] = None
        self._redirects = 0
        self._cancelled = False
        factory = media_factory or getattr(simple, "media_factory", None)
        if factory is not None:
            self.media = factory(self)

    # -- events ------------------------------------------------------------------
    def on(self, name: str, function: Callable[..., Any]) -> None:
        """Call C{function(payload)} on event C{name} (see the module doc)."""
        self._handlers.setdefault(name, []).append(function)

    def _emit(self, name: str, payload: Any) -> None:
        for function in list(self._handlers.get(name, ())):
            _call(function, payload)

    # -- SDP ---------------------------------------------------------------------------
    def _session(self) -> SdpSession:
        """Our side of the SDP: the media's address, port and codecs when
        there is media, else the leg's address and L{NO_RTP_PORT}."""
        if self._sdp_session is None:
            media = self.media
            address = getattr(media, "address", None) or self._sdp_address()
            port = getattr(media, "port", None) or NO_RTP_PORT
            codecs = getattr(media, "codecs", None) or DEFAULT_CODECS
            self._sdp_session = SdpSession(address, port, codecs)
        return self._sdp_session

    def _sdp_address(self) -> str:
        leg = self.target[0] if self.target is not None else self.endpoint.dispatcher.legs[0]
        return leg.host

    def _our_sdp(self, direction: str = "sendrecv") -> Optional[bytes]:
        """What we offer (or answer with when the peer offered nothing)."""
        if isinstance(self.sdp, (bytes, str)):
            if direction != "sendrecv":
                raise ValueError("hold and resume re-offer an SDP the call builds (sdp=True or a media factory), "
                                 "not one given as bytes")
            return self.sdp.encode() if isinstance(self.sdp, str) else self.sdp
        if not self.sdp and self.media is None:
            return None
        return self._session().offer(direction)

    def _answer_offer(self, offer: bytes) -> tuple[Optional[bytes], Optional[tuple[int, str]]]:
        """Our answer to the peer's offer; or the refusal (488 when no
        codec is in common, 400 for an SDP that does not parse)."""
        self.remote_sdp = offer
        codecs = getattr(self.media, "codecs", None) or DEFAULT_CODECS
        try:
            # both readings of the offer share one parse per distinct body (offer_answer remembers them)
            params = remote_media(offer, codecs)
            if isinstance(self.sdp, (bytes, str)):
                body = self._our_sdp()
            else:
                body = self._session().answer(offer)
        except NoCommonCodec:
            return None, (488, "Not Acceptable Here (no common codec)")
        except SDPError as e:
            return None, (400, f"Bad Request (SDP: {e})"[:100])
        self.local_sdp = body
        self._negotiated(params)
        return body, None

    @property
    def negotiated(self) -> Optional[MediaParams]:
        """The result of the last offer/answer, or None."""
        if self._unread_answer is not None:
            self._read_answer()
        return self._params

    @negotiated.setter
    def negotiated(self, params: Optional[MediaParams]) -> None:
        self._unread_answer = None
        self._params = params

    @property
    def held_by_peer(self) -> bool:
        """Whether the peer's last SDP says it sends us nothing (hold)."""
        if self._unread_answer is not None:
            self._read_answer()
        return self._held_by_peer

    @held_by_peer.setter
    def held_by_peer(self, held: bool) -> None:
        self._held_by_peer = held

    def _take_answer(self, answer: bytes) -> None:
        if self._unread_answer is not None:
            self._read_answer()  # answers are read in their order
        self.remote_sdp = answer
        if self.media is None:
            self._unread_answer = answer  # read when asked for (negotiated, held_by_peer)
            return
        self._unread_answer = answer
        self._read_answer()

    def _read_answer(self) -> None:
        answer, self._unread_answer = self._unread_answer, None
        assert answer is not None
        codecs = getattr(self.media, "codecs", None) or DEFAULT_CODECS
        try:
            params = remote_media(answer, codecs)
        except (NoCommonCodec, SDPError) as e:
            log.info("call {call_id}: unusable SDP answer: {error}", call_id=self.call_id, error=e)
            return
        self._negotiated(params)

    def _negotiated(self, params: MediaParams) -> None:
        self.negotiated = params
        self.held_by_peer = params.direction in ("sendonly", "inactive")
        if self.media is not None and hasattr(self.media, "start"):
            _call(self.media.start, self)

    # -- outgoing -------------------------------------------------------------------------
    def _invite_out(self, uri: str, from_: str, ring_time: Optional[float]) -> Deferred:
        """Send the first INVITE; the Deferred fires with this call once
        established."""
        self._ring_time = ring_time
        result = self._result = Deferred()  # a failure while sending fires it and drops self._result
        self._uri = uri
        self._from = from_
        self._route_set = list(self.simple.route)
        self._send_invite(uri, cseq=1, call_id=None, from_tag=None)
        return result

    def _send_invite(self, uri: str, cseq: int, call_id: Optional[str], from_tag: Optional[str]) -> None:
        hop = str(parse_name_addr(self._route_set[0]).uri) if self._route_set else uri

        def send(target: Any) -> None:
            self.target = target
            leg = target[0]
            body = self._our_sdp()
            self.local_sdp = body
            request = new_request("INVITE", uri, self._from, self.peer, sent_by=leg.sent_by,
                                  transport=leg.proto.upper(), call_id=call_id, from_tag=from_tag, cseq=cseq,
                                  contact=self.simple.contact_for(leg), route_set=self._route_set,
                                  body=body or b"", content_type=SDP_TYPE if body else None, headers=self.headers)
            self.call_id = request.call_id
            self.simple._calls[self.call_id] = self
            self._invite = self.endpoint.send_request(request, target, on_provisional=self._provisional)
            # a peer's answer we cannot use (a 2xx without To tag, ...) fails the call, not the reactor
            self._invite.deferred.addCallbacks(self._invite_final, self._invite_failed).addErrback(
                self._invite_failed)
            if self._ring_time and self._ring_timer is None:
                self._ring_timer = self.clock.callLater(self._ring_time, self._ring_timeout)
            if self._cancelled:
                self._invite.cancel()

        self._when_routed(hop, send, self._invite_failed)

    def _provisional(self, response: Response) -> None:
        if response.code > 100:
            self.state = "ringing"
            self._emit("ringing", response)

    def _invite_final(self, response: Response) -> None:
        code = response.code
        invite = self._invite.request
        if 200 <= code < 300:
            self._stop_ring_timer()
            dialog = Dialog.from_uac(invite, response)
            self.dialog = dialog
            self.endpoint.add_dialog(dialog, self)
            ack = create_ack(invite, response, dialog)
            refusal = None
            if response.body and not invite.body:
                # we offered nothing: the 2xx holds the offer, our ACK the answer (RFC 3261 13.2.1)
                answer, refusal = self._answer_offer(response.body)
                if answer:
                    ack.set_body(answer, SDP_TYPE)
            elif response.body:
                self._take_answer(response.body)
            self._send_ack(self._invite, ack)
            if refusal is not None:
                # an offer we cannot take: ACK it, then end the call (13.2.1)
                self.state = "established"
                self.bye()
                self._fail(SIPError(refusal[0], refusal[1], response))
                return
            if self._cancelled:
                # answered while we were cancelling: hang up (RFC 3261 9.1)
                self.state = "established"
                self.bye()
                self._fail(RingTimeout(self._ring_time or 0) if self._ring_expired else CallCancelled())
                return
            self.state = "established"
            self._emit("established", self)
            self._succeed(self)
            return
        if code in (302, 305) and self._redirects < MAX_REDIRECTS and not self._cancelled:
            contact = response.get("contact")
            if contact:
                self._redirects += 1
                target = str(parse_name_addr(contact).uri)
                log.info("INVITE {uri}: {code}, following to {target}", uri=self._uri, code=code, target=target)
                if code == 302:
                    self._uri = target
                else:
                    self._route_set = [f"<{parse_name_addr(contact).uri.with_param('lr')}>"] + self._route_set
                self._send_invite(self._uri, invite.cseq[0] + 1, invite.call_id, invite.from_tag)
                return
        self._stop_ring_timer()
        if self._ring_expired:
            error: SIPError = RingTimeout(self._ring_time or 0)
        elif self._cancelled:
            error = CallCancelled()
        else:
            error = SIPError(code, response.reason, response)
            if 300 <= code < 400:
                error.contacts = response.get_all("contact")  # type: ignore[attr-defined]
        self._finish(CallEnd("local" if self._cancelled else "remote", code, error.reason))
        self._fail(error)

    _ring_expired = False

    def _invite_failed(self, failure: Failure) -> None:
        self._stop_ring_timer()
        error = failure.value
        code = getattr(error, "code", None)
        self._finish(CallEnd("local", code, getattr(error, "reason", str(error))))
        self._fail(failure)

    def _ring_timeout(self) -> None:
        self._ring_timer = None
        self._ring_expired = True
        log.info("INVITE {uri}: no answer in {seconds} s, cancelling", uri=self._uri, seconds=self._ring_time)
        self.cancel()
        if self._invite is None or not self._invite.provisional:
            # nothing heard yet: the CANCEL waits for a 1xx (RFC 3261 9.1),
            # the caller does not; a late 2xx is ACKed and hung up
            error = RingTimeout(self._ring_time or 0)
            self._finish(CallEnd("local", error.code, error.reason))
            self._fail(error)

    def _stop_ring_timer(self) -> None:
        if self._ring_timer is not None and self._ring_timer.active():
            self._ring_timer.cancel()
        self._ring_timer = None

    def _succeed(self, value: Any) -> None:
        result = self._result
        if result is not None and not result.called:
            self._result = None  # fired once; holding it (and the call as its result) would be a cycle
            result.callback(value)

    def _fail(self, error: Any) -> None:
        result = self._result
        if result is not None and not result.called:
            self._result = None
            result.errback(error)

    # -- incoming ---------------------------------------------------------------------------
    def _invite_in(self, transaction: ServerTransaction) -> None:
        request = transaction.request
        self._server = transaction
        self.target = (transaction.leg, transaction.addr)
        self.call_id = request.call_id
        self.dialog = Dialog.from_uas(request, transaction.to_tag, self.simple.contact_for(transaction.leg))
        self.endpoint.add_dialog(self.dialog, self)
        transaction.on_cancel = self._cancelled_by_peer

    def ring(self) -> None:
        """Tell an incoming caller we are ringing (180)."""
        if self._server is not None and self._server.final is None:
            self.state = "ringing"
            self._server.respond(180, "Ringing")

    def answer(self) -> Optional[Response]:
        """Accept an incoming call: 200 with our SDP (488 when the offer
        has nothing we can take). The call is established at the ACK."""
        server = self._server
        if server is None or server.final is not None:
            return None
        offer = server.request.body
        if offer:
            body, refusal = self._answer_offer(offer)
            if refusal is not None:
                response = server.respond(*refusal)
                self._finish(CallEnd("local", refusal[0], refusal[1]))
                return response
        else:
            body = self._our_sdp()
            self.local_sdp = body
            self._answer_in_ack = body is not None
        response = server.respond(200, "OK", [("Contact", self.simple.contact_for(server.leg))], body or b"",
                                  SDP_TYPE if body else None)
        server.acked.addCallbacks(lambda ack: None, self._no_ack)
        return response

    def answer_later(self, delay: float) -> None:
        """Answer after C{delay} seconds (unless the call ends first)."""
        self._answer_timer = self.clock.callLater(delay, self.answer)

    def reject(self, code: int = 486, reason: Optional[str] = None) -> None:
        """Refuse an incoming call that was not answered yet."""
        if self._server is not None and self._server.final is None:
            self._server.respond(code, reason)
            self._finish(CallEnd("local", code, reason or "rejected"))

    def _no_ack(self, failure: Failure) -> None:
        """RFC 3261 13.3.1.4: no ACK within 64*T1: end the dialog with a
        BYE; the call ends as a 408 (it never was up)."""
        log.info("call {call_id}: no ACK for our 200; hanging up", call_id=self.call_id)
        self.state = "established"
        self.bye()
        self._finish(CallEnd("local", 408, "Request Timeout (no ACK for our 200; BYE sent)"))

    def _cancelled_by_peer(self) -> None:
        self._finish(CallEnd("remote", 487, "cancelled by the caller"))

    # -- the dialog's requests (from the endpoint) -------------------------------------------
    def dialog_ack(self, ack: Request) -> None:
        if self._answer_in_ack:  # we offered in the 200: the answer is here
            self._answer_in_ack = False
            if ack.body:
                self._take_answer(ack.body)
        if self.state not in ("established", "ended"):
            self.state = "established"
            self._emit("established", self)
            self.simple._established(self)

    def dialog_request(self, transaction: ServerTransaction) -> bool:
        request = transaction.request
        method = request.method
        if method == "BYE":
            transaction.respond(200)
            self._emit("bye", request)
            self._finish(CallEnd("remote", 200, "BYE"))
            return True
        if method == "INVITE":
            if self._reinviting:  # both sides re-offer at once: glare (RFC 3261 14.2)
                transaction.respond(491, "Request Pending")
                return True
            offer = request.body
            if offer:
                body, refusal = self._answer_offer(offer)
                if refusal is not None:
                    transaction.respond(*refusal)  # the call goes on as it was (RFC 3261 14.2)
                    return True
            else:
                body = self._our_sdp()
                self.local_sdp = body
                self._answer_in_ack = body is not None
            transaction.respond(200, "OK", [("Contact", self.simple.contact_for(transaction.leg))], body or b"",
                                SDP_TYPE if body else None)
            self._emit("reinvite", request)
            return True
        if method in ("INFO", "NOTIFY", "MESSAGE"):
            self._emit("request", transaction)
            return True
        return False

    # -- what the user may do -----------------------------------------------------------------
    def _first_hop(self) -> str:
        """The URI of the dialog's next hop: its first route, or the
        peer's Contact (RFC 3261 12.2.1.1)."""
        dialog = self.dialog
        assert dialog is not None
        return str(parse_name_addr(dialog.route_set[0]).uri) if dialog.route_set else dialog.remote_target

    def _when_routed(self, uri: str, then: Callable[[Any], Any], on_error: Callable[[Failure], Any]) -> None:
        """C{then(target)} with the (leg, address) of C{uri}: at once when
        the endpoint knows it (no Deferred), else once it is resolved;
        C{on_error(failure)} when there is no route or C{then} fails."""
        target = self.endpoint.route(uri)
        if isinstance(target, Deferred):
            target.addCallback(then).addErrback(on_error)
            return
        try:
            then(target)
        except Exception:
            on_error(Failure())

    def _send_ack(self, transaction: ClientTransaction, ack: Request) -> None:
        """The ACK of a 2xx goes to the dialog's next hop, which may not
        be where the INVITE went (a proxy that did not record-route)."""
        self._when_routed(self._first_hop(), lambda target: transaction.ack(ack, target),
                          lambda f: log.warn("call {call_id}: cannot send the ACK: {error}", call_id=self.call_id,
                                             error=f.getErrorMessage()))

    def _in_dialog(self, method: str, body: bytes = b"", content_type: Optional[str] = None,
                   headers: Sequence[tuple[str, str]] = ()) -> ClientTransaction:
        dialog = self.dialog
        assert dialog is not None
        request = dialog.new_request(method, body=body, content_type=content_type, headers=headers)
        transaction_holder: list[ClientTransaction] = []

        def moved_cseq(retry: Request) -> None:
            dialog.local_cseq = retry.cseq[0]

        result = Deferred()

        def send(target: Any) -> None:
            transaction = self.endpoint.send_request(request, target, on_retry=moved_cseq)
            transaction_holder.append(transaction)
            transaction.deferred.chainDeferred(result)

        self._when_routed(self._first_hop(), send, result.errback)
        result.transaction_holder = transaction_holder  # type: ignore[attr-defined]
        return result  # type: ignore[return-value]

    def request(self, method: str, body: bytes = b"", content_type: Optional[str] = None,
                headers: Sequence[tuple[str, str]] = ()) -> Deferred:
        """Send a request in the dialog (INFO, MESSAGE, NOTIFY, ...): a
        Deferred firing with the 2xx response, failing with L{SIPError}
        for a 3xx-6xx."""
        if self.dialog is None or self.state == "ended":
            return fail(SIPError(481, "no dialog"))
        d = self._in_dialog(method, body, content_type, headers)
        return d.addCallback(_success_only)

    def reinvite(self, sdp: Any = None) -> Deferred:
        """A new offer in the dialog (a re-INVITE): fires with the 2xx."""
        if sdp is not None:
            self.sdp = sdp
        return self._reoffer("sendrecv")

    def hold(self) -> Deferred:
        """Put the peer on hold: re-offer with a=sendonly."""
        return self._reoffer("sendonly").addCallback(self._held, True)

    def resume(self) -> Deferred:
        """Take the peer off hold: re-offer with a=sendrecv."""
        return self._reoffer("sendrecv").addCallback(self._held, False)

    def _held(self, response: Response, held: bool) -> Response:
        self.on_hold = held
        return response

    def _reoffer(self, direction: str) -> Deferred:
        if self.dialog is None or self.state != "established":
            return fail(SIPError(481, "no established dialog"))
        if self._reinviting:
            return fail(SIPError(491, "Request Pending (our re-INVITE is not answered yet)"))
        offer = self._our_sdp(direction)
        previous, self.local_sdp = self.local_sdp, offer
        self._reinviting = True
        d = self._in_dialog("INVITE", offer or b"", SDP_TYPE if offer else None)
        holder = d.transaction_holder  # type: ignore[attr-defined]

        def acked(response: Response) -> Response:
            self._reinviting = False
            if 200 <= response.code < 300:
                invite = holder[-1].request
                self._send_ack(holder[-1], create_ack(invite, response, self.dialog))
                self.dialog.receive_response(response)
                if response.body:
                    self._take_answer(response.body)
            else:
                self.local_sdp = previous  # refused: the session stays as it was (RFC 3261 14.1)
            return response

        def failed(failure: Failure) -> Failure:
            self._reinviting = False
            self.local_sdp = previous
            return failure

        return d.addCallbacks(acked, failed).addCallback(_success_only)

    def send_dtmf(self, keys: str, method: str = "auto", duration_ms: int = 100) -> Deferred:
        """Send key presses (C{"0123456789*#ABCD"}; other characters pause)
        on the call's media: C{method} C{"rfc4733"}, C{"inband"} or
        C{"auto"} (RFC 4733 when the peer offered telephone-event, tones
        otherwise, as Net::SIP). Fires when the last packet was sent."""
        if self.media is None or not hasattr(self.media, "send_dtmf") or self.state != "established":
            return fail(SIPError(481, "no established call with media"))
        return self.media.send_dtmf(keys, method, duration_ms)

    def bye(self) -> Deferred:
        """Hang up: BYE when established, CANCEL while our INVITE is
        pending, 480 for an incoming call not answered. Fires with the
        L{CallEnd}."""
        if self.state == "ended":
            return succeed(self.end)
        if self.state == "ending":
            return self.ended
        if self.dialog is not None and self.state == "established":
            self.state = "ending"
            d = self._in_dialog("BYE")

            def done(result: Any) -> CallEnd:
                if self.dialog is not None:
                    self.endpoint.remove_dialog(self.dialog)  # also after an end reported earlier
                if isinstance(result, Failure):
                    self._finish(CallEnd("local", getattr(result.value, "code", None), result.getErrorMessage()))
                else:
                    self._finish(CallEnd("local", result.code, result.reason))
                return self.end  # type: ignore[return-value]

            return d.addBoth(done)
        if self.outgoing:
            self.cancel()
            return self.ended
        self.reject(480, "Temporarily Unavailable")
        return succeed(self.end)

    def cancel(self) -> None:
        """CANCEL our pending INVITE (the invite's Deferred then fails with
        L{CallCancelled}, or L{RingTimeout} after the ring time)."""
        if not self.outgoing or self.state in ("established", "ended"):
            return
        self._cancelled = True
        if self._invite is not None:
            self._invite.cancel()

    # -- the end ---------------------------------------------------------------------------------
    def _finish(self, end: CallEnd) -> None:
        if self.end is not None:
            return
        self.end = end
        self.state = "ended"
        self._stop_ring_timer()
        if self._answer_timer is not None and self._answer_timer.active():
            self._answer_timer.cancel()
        if self.dialog is not None:
            self.endpoint.remove_dialog(self.dialog)
        if self.media is not None and hasattr(self.media, "stop"):
            _call(self.media.stop, self)
        self.simple._call_ended(self)
        self._emit("end", end)
        if not self.ended.called:
            self.ended.callback(end)

    def __repr__(self) -> str:
        return f"<Call {self.call_id} {self.state} {'to' if self.outgoing else 'from'} {self.peer}>"


def _success_only(response: Response) -> Response:
    if response.code >= 300:
        raise SIPError(response.code, response.reason, response)
    return response
