"""The endpoint: a user agent's place in the receive chain (Net::SIP's
Endpoint and Endpoint::Context, rebuilt on transaction machines).

The endpoint is an L{IReceiver}. It owns the client and server
transactions of one user agent (the sans-IO machines of
L{sipproxy.sip.transaction}, whose timers it runs with
C{reactor.callLater} and whose messages it sends through the
dispatcher) and the dialogs its calls registered. What is not its own it
leaves alone, so a user agent, a registrar and a proxy can share one
dispatcher (L{sipproxy.access.chain.ReceiveChain}):

- a response whose branch is none of our client transactions: False;
- a request in no transaction and no dialog of ours that is not
  addressed to us (L{Endpoint.owns}): False.

What it answers by itself (RFC 3261 and Net::SIP's habits):

- 100 Trying to every new INVITE it takes;
- CANCEL of a pending INVITE: 200 to the CANCEL, 487 to the INVITE;
  CANCEL or in-dialog request matching nothing: 481 (ACK: never answered);
- OPTIONS: 200 with Allow, Accept and Supported (also inside a dialog);
- a method it knows but does not do: 405 with Allow; an unknown one: 501;
- NOTIFY and INFO inside a dialog: 200 (after telling the dialog's owner);
- a request older than the dialog's remote CSeq: 500 (12.2.2);
- a Require we do not support: 420; an INVITE body that is not SDP: 415;
- a 2xx from a second fork of our INVITE: ACK, then BYE (one call per INVITE).

A transaction that has its final answer is not kept for its linger timer
(J, K, L, M); a small record of it is (L{sipproxy.ua.lingering}), which
repeats our answer or ACK to a retransmission: the collector would walk
the whole transaction, and the call it holds, for those 32 s.

Client side, a 401/407 is answered once per challenge with the
credentials given (L{sipproxy.sip.client_auth.with_credentials} refuses a
second answer to the same realm unless the nonce was stale), and send
failures reported by the dispatcher end the transaction at once (17.1.4).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Optional, Sequence, Union

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from twisted.python.failure import Failure
from zope.interface import implementer

from sipproxy.observe.logsafe import SafeLogger
from sipproxy.interfaces import IDispatcher, ILeg, IReceiver
from sipproxy.proxy.routing import RoutingError, response_hop
from sipproxy.sip import transaction as tx
from sipproxy.sip.client_auth import Credentials, with_credentials
from sipproxy.sip.dialog import Dialog, dialog_id_of_request
from sipproxy.sip.fastparse import parse
from sipproxy.sip.ids import new_tag
from sipproxy.sip.message import ParseError, Request, Response
from sipproxy.sip.uac import add_via, create_ack, create_cancel
from sipproxy.sip.uri import parse_name_addr
from sipproxy.ua.lingering import LingerTable

__all__ = [
    "Endpoint",
    "ClientTransaction",
    "ServerTransaction",
    "SIPError",
    "TransactionTimeout",
    "TransportFailure",
    "ALLOWED",
    "KNOWN_METHODS",
]

log = SafeLogger()

#: What the endpoint does (the Allow header).
ALLOWED = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "INFO", "NOTIFY", "MESSAGE")
#: Methods answered 405 rather than 501 when nobody takes them.
KNOWN_METHODS = frozenset(ALLOWED) | {"REGISTER", "SUBSCRIBE", "PUBLISH", "REFER", "PRACK", "UPDATE"}
#: Challenges answered for one request at most: with_credentials answers a
#: realm again only when the server says stale=true, and a server saying
#: that every time must not make us loop.
MAX_AUTH_RETRIES = 3


class SIPError(Exception):
    """A request that did not succeed: the final C{code} and C{reason}
    (and the C{response} when one came)."""

    def __init__(self, code: int, reason: str, response: Optional[Response] = None) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason
        self.response = response


class TransactionTimeout(SIPError):
    """No final response in time (Timer B/F): treated as 408 (RFC 3261 8.1.3.1)."""

    def __init__(self, method: str) -> None:
        super().__init__(408, f"Request Timeout (no answer to {method})")


class TransportFailure(SIPError):
    """The request could not be sent: treated as 503 (RFC 3261 8.1.3.1)."""

    def __init__(self, reason: str) -> None:
        super().__init__(503, f"Service Unavailable (transport error: {reason})")


#: Timers after which a finished transaction is forgotten (RFC 3261 17:
#: D after a 3xx-6xx to our INVITE, I after the ACK of ours): they only
#: absorb retransmissions, so a little longer does no harm. (J, K, L and M
#: never start here: the endpoint keeps a record instead, in a
#: L{LingerTable} on the same grain.)
LINGER_TIMERS = frozenset("DI")
#: Their deadlines are rounded up to a multiple of this many seconds, so
#: those falling due in the same half second fire on one wake-up, as a
#: timer wheel would, instead of one wake-up each.
LINGER_GRAIN = 0.5
#: The timers of a server transaction that has sent its final answer
#: (non-INVITE: J; INVITE answered 2xx: L, RFC 6026): the endpoint then
#: keeps a small record instead of the transaction (L{LingerTable}).
SERVER_LINGER = frozenset("JL")
#: The timers of a client transaction that has its final response
#: (non-INVITE: K; INVITE answered 2xx: M, RFC 6026): the endpoint then
#: keeps a small record instead of the transaction.
CLIENT_LINGER = frozenset("KM")


# The records below are plain tuples of strings, bytes and numbers (a leg
# by its index in the dispatcher's list), never objects of ours: CPython's
# collector stops tracking such a tuple once it has looked at it (and at
# the tuples inside it first), so the tens of thousands that linger at a
# high call rate cost full collections nothing. An object of a class,
# even a NamedTuple, is walked again in every one: 150-320 ms pauses at
# 1900 calls/s (bench/README.md).

#: What is left of a server transaction that has answered:
#: (method, our final answer as bytes, index of the leg, the peer's address).
#: A retransmitted request gets the answer again, sent as the
#: transaction sent it; the answer is None for an INVITE answered 2xx,
#: whose repeats are absorbed (the UA core repeats the 2xx until the ACK).
_Answered = tuple  # tuple[str, Optional[bytes], int, tuple[Union[str, int], ...]]


def _answered(method: str, data: Optional[bytes], leg: ILeg, addr: tuple[str, int]) -> _Answered:
    return (method, data, leg.index, tuple(addr))


#: What is left of an INVITE answered 2xx for RFC 6026's Timer M:
#: (the INVITE as bytes, the To tag of the 2xx we took, our ACK as bytes,
#: the ACK's leg index, the ACK's address, the To tags of the forks
#: we ended). A repeated 2xx gets our ACK again, another fork's 2xx is
#: ACKed and ended with a BYE (RFC 3261 13.2.2.4), as one call is all we
#: keep. The messages are parsed again only when one is needed (a lost
#: ACK, a second fork).
_AcceptedInvite = tuple  # tuple[bytes, Optional[str], Optional[bytes], int, Optional[tuple[str, int]], tuple[str, ...]]
_INVITE, _TAG, _ACK, _ACK_LEG, _ACK_ADDR, _ENDED = range(6)


def _amended(record: tuple, field: int, *values: Any) -> tuple:
    """C{record} with its fields from C{field} on replaced by C{values}: a
    new tuple, so that it stays one the collector does not track."""
    return record[:field] + values + record[field + len(values):]


def _ignore_timer(name: str) -> None:
    """What released timers call: nothing (their machine has ended)."""


#: how much of a routing failure a L{SIPError} repeats: the URI may be a
#: peer's Contact, as long as its message
_NO_ROUTE_CHARS = 300


def _no_route_error(error: RoutingError, uri: str) -> "SIPError":
    """A routing failure as the L{SIPError} the user agent reports."""
    text = f"No route to {uri} ({error.reason})"
    if len(text) > _NO_ROUTE_CHARS:
        text = text[:_NO_ROUTE_CHARS] + "..."
    return SIPError(error.code, text)


def _first_target(targets: list) -> Any:
    """The target a request goes to: the first the dispatcher found."""
    return targets[0]


def _no_route(failure: Failure, uri: str) -> Any:
    failure.trap(RoutingError)
    raise _no_route_error(failure.value, uri)


class _Timers:
    """The named timers of one machine, run on C{clock}."""

    def __init__(self, clock: IReactorTime, fire: Callable[[str], None]) -> None:
        self.clock = clock
        self.fire = fire
        self.calls: dict[str, IDelayedCall] = {}

    def start(self, name: str, delay: float) -> None:
        self.cancel(name)
        if name in LINGER_TIMERS and delay > 0:
            now = self.clock.seconds()
            delay = math.ceil((now + delay) / LINGER_GRAIN) * LINGER_GRAIN - now
        self.calls[name] = self.clock.callLater(delay, self._fired, name)

    def _fired(self, name: str) -> None:
        self.calls.pop(name, None)
        self.fire(name)

    def cancel(self, name: str) -> None:
        call = self.calls.pop(name, None)
        if call is not None and call.active():
            call.cancel()

    def cancel_all(self) -> None:
        for name in list(self.calls):
            self.cancel(name)

    def release(self) -> None:
        """Cancel every timer and let go of the owner: its machine has
        ended, and the owner's bound method kept here would be a reference
        cycle holding the whole call until a full garbage collection."""
        self.cancel_all()
        self.fire = _ignore_timer


class ClientTransaction:
    """One request we sent and what became of it.

    @ivar deferred: fires with the final L{Response} (any code from 200;
        after an authentication retry, the retry's), or fails with
        L{TransactionTimeout} / L{TransportFailure}.
    @ivar request: the request as last sent (a retry replaces it).
    @ivar on_provisional: called with each 1xx.
    @ivar on_retry: called with the new request when a challenge is
        answered (a dialog moves its CSeq to it).
    """

    def __init__(self, endpoint: "Endpoint", request: Request, target: Any,
                 credentials: Optional[Credentials], on_provisional: Optional[Callable[[Response], Any]] = None,
                 on_retry: Optional[Callable[[Request], Any]] = None) -> None:
        self.endpoint = endpoint
        self.request = request
        self.target = target
        self.credentials = credentials
        self.on_provisional = on_provisional
        self.on_retry = on_retry
        self.deferred: Deferred = Deferred()
        self.final: Optional[Response] = None
        self.provisional = False
        self.retries = 0
        self._child: Optional[ClientTransaction] = None
        self._failed_reason = "send failed"
        self._cancel_wanted = False
        self._cancel: Optional[ClientTransaction] = None
        self._ack: Optional[Request] = None
        self._accepted = False  # an INVITE answered 2xx: the endpoint keeps its record (Timer M)
        self._machine: Any = None
        self._key: Any = None
        self._timers = _Timers(endpoint.clock, self._timer_fired)
        self._depth = 0  # nested _run calls (an event's callbacks may feed the machine again)
        self._ended = False

    # -- life ------------------------------------------------------------------------
    def _start(self) -> None:
        leg = self.target[0]
        reliable = leg.proto != "udp"
        request = self.request
        timers = self.endpoint.timers
        if request.method == "INVITE":
            self._machine = tx.ClientInvite(request, timers, reliable=reliable)
        else:
            self._machine = tx.ClientNonInvite(request, timers, reliable=reliable)
        self._key = self._machine.key
        self.endpoint._clients[self._key] = self
        self._run(self._machine.start())

    def _receive(self, response: Response, key: Any = None) -> None:
        self._run(self._machine.receive(response, key))

    def _timer_fired(self, name: str) -> None:
        self._run(self._machine.timer_fired(name))

    def _transport_error(self, reason: str) -> None:
        log.info("{method} to {dst}: {reason}", method=self.request.method, dst=self.target[1], reason=reason)
        self._failed_reason = reason
        self._run(self._machine.transport_error())

    def _run(self, outputs: Iterable[Any]) -> None:
        self._depth += 1
        try:
            for out in _actions_first(outputs):
                if isinstance(out, tx.Send):
                    self.endpoint._send(out.message, self.target, self._transport_error)
                elif isinstance(out, tx.StartTimer):
                    if out.name in CLIENT_LINGER and not self._machine.terminated:
                        self._retire(out.delay)
                    else:
                        self._timers.start(out.name, out.delay)
                elif isinstance(out, tx.CancelTimer):
                    self._timers.cancel(out.name)
                elif isinstance(out, tx.Provisional):
                    self._provisional(out.response)
                elif isinstance(out, tx.Final):
                    self._final_response(out.response)
                elif isinstance(out, tx.Timeout):
                    self._fail(TransactionTimeout(self.request.method))
                elif isinstance(out, tx.TransportError):
                    self._fail(TransportFailure(self._failed_reason))
                elif isinstance(out, tx.Terminated):
                    self._terminated()
        finally:
            self._depth -= 1
        if self._ended and not self._depth:
            # nothing reaches an ended transaction any more: drop the
            # owner's callbacks (bound methods of the call: a cycle)
            self.on_provisional = self.on_retry = None

    def _terminated(self) -> None:
        self._ended = True
        self._timers.release()
        if self.endpoint._clients.get(self._key) is self:
            del self.endpoint._clients[self._key]

    def _retire(self, delay: float) -> None:
        """The final response is in (Timer K or M starts): for C{delay}
        seconds the endpoint only absorbs its repeats (non-INVITE) or
        answers them with our ACK (INVITE), from a record of the key."""
        self._terminated()
        record: object = self.request.method
        if self.request.method == "INVITE":
            self._accepted = True
            record = (bytes(self.request), None, None, -1, None, ())
        self.endpoint._finished_clients.add(self._key, record, delay)

    def _amend(self, field: int, *values: Any) -> None:
        """Change fields of our L{_AcceptedInvite} record (L{_amended})."""
        table = self.endpoint._finished_clients
        record = table.get(self._key)
        if isinstance(record, tuple):
            table.update(self._key, _amended(record, field, *values))

    # -- what comes back ------------------------------------------------------------
    def _provisional(self, response: Response) -> None:
        self.provisional = True
        if self._cancel_wanted and self._cancel is None:
            self._send_cancel()
        if self.on_provisional is not None:
            _call(self.on_provisional, response)

    def _final_response(self, response: Response) -> None:
        if response.code in (401, 407) and self.credentials is not None and not self._cancel_wanted \
                and self.retries < MAX_AUTH_RETRIES:
            retry = with_credentials(self.request, response, self.credentials)
            if retry is not None:
                self._retry(retry)
                return
        self.final = response
        if self._accepted:
            self._amend(_TAG, response.to_tag)
        if not self.deferred.called:
            self.deferred.callback(response)

    def _retry(self, request: Request) -> None:
        """Answer a challenge: a new transaction, same target; its outcome
        is ours."""
        log.info("{method}: answering the {realm} challenge", method=request.method,
                 realm="proxy" if request.get("proxy-authorization") else "server")
        child = ClientTransaction(self.endpoint, request, self.target, self.credentials, self.on_provisional,
                                  self.on_retry)
        child.retries = self.retries + 1
        self.request = request
        if self.on_retry is not None:
            _call(self.on_retry, request)
        self._child = child
        child.deferred.addBoth(self._child_done)
        child._start()

    def _child_done(self, result: Any) -> None:
        child = self._child
        assert child is not None
        self.final = child.final
        if not self.deferred.called:
            self.deferred.callback(result) if not isinstance(result, Failure) else self.deferred.errback(result)

    def _fail(self, error: SIPError) -> None:
        if self.final is None and not self.deferred.called:
            self.deferred.errback(error)

    # -- what the user may do ---------------------------------------------------------
    def ack(self, ack: Request, target: Any = None) -> None:
        """Send the ACK of a 2xx (built by the dialog's owner) and send it
        again for each retransmitted 2xx.

        @param target: (leg, address) of the dialog's first hop (its route
            set, or the peer's Contact); the INVITE's target by default."""
        child = self._child
        if child is not None:
            child.ack(ack, target)
            return
        target = target or self.target
        if ack.get("via") is None:
            leg = target[0]
            add_via(ack, leg.sent_by, leg.proto.upper())
        self._ack = ack
        if self._accepted:  # a repeated 2xx gets this ACK again
            leg, addr = target
            self._amend(_ACK, bytes(ack), leg.index, tuple(addr))
        self.endpoint._send(ack, target)

    def cancel(self) -> None:
        """CANCEL a pending INVITE (RFC 3261 9.1): at once after a
        provisional response, else when the first one arrives."""
        child = self._child
        if child is not None:
            child.cancel()
            return
        if self.request.method != "INVITE" or self.final is not None or self._cancel_wanted:
            return
        self._cancel_wanted = True
        if self.provisional:
            self._send_cancel()

    def _send_cancel(self) -> None:
        cancel = create_cancel(self.request)
        self._cancel = ClientTransaction(self.endpoint, cancel, self.target, None)
        self._cancel.deferred.addErrback(lambda f: log.info("CANCEL got no answer: {e}", e=f.getErrorMessage()))
        self._cancel._start()


class ServerTransaction:
    """One request we received, to be answered through L{respond}.

    @ivar cancelled: True once a CANCEL arrived for this INVITE.
    @ivar on_cancel: called (no arguments) when a CANCEL arrives before
        the final answer (the endpoint has already answered 487).
    @ivar acked: for an INVITE answered 2xx, fires with the ACK, or
        fails with L{TransactionTimeout} when none came (the caller then
        ends the dialog with BYE, RFC 3261 13.3.1.4).
    @param trying: for an INVITE, send 100 Trying as the transaction
        starts (else its machine sends one if nothing was sent in 200 ms).
    """

    def __init__(self, endpoint: "Endpoint", request: Request, leg: ILeg, addr: tuple[str, int],
                 key: Optional[Any] = None, trying: bool = False) -> None:
        self.endpoint = endpoint
        self.request = request
        self.leg = leg
        self.addr = addr
        tag = request.to_tag
        self.to_tag = tag or new_tag()
        self._creates_dialog = tag is None and request.method == "INVITE"  # its 101-299 answers do
        self.final: Optional[Response] = None
        self.cancelled = False
        self.on_cancel: Optional[Callable[[], Any]] = None
        self.acked: Deferred = Deferred()
        reliable = leg.proto != "udp"
        timers = endpoint.timers
        if request.method == "INVITE":
            self._machine: Any = tx.ServerInvite(request, timers, reliable=reliable, key=key, trying_now=trying)
        else:
            self._machine = tx.ServerNonInvite(request, timers, reliable=reliable, key=key)
        self._key = self._machine.key
        #: made when a timer first starts: a UDP transaction that answers
        #: at once hands its Timer J or L to the endpoint's records instead
        self._timers: Optional[_Timers] = None
        self._retransmitter: Any = None
        self._2xx_timers: Optional[_Timers] = None  # only for a 2xx to an INVITE
        #: where our answers go, found once from the request's top Via
        #: (parsed already), which every answer copies
        self._destination: Optional[tuple[str, int]] = None
        endpoint._servers[self._key] = self
        self._run(self._machine.start())

    @property
    def method(self) -> str:
        return self.request.method

    def respond(self, code: int, reason: Optional[str] = None, headers: Sequence[tuple[str, str]] = (),
                body: bytes = b"", content_type: Optional[str] = None) -> Optional[Response]:
        """Answer (a 1xx, then one final answer; later calls are ignored)."""
        if self.final is not None:
            return None
        # RFC 3261 12.1.1: a response that creates a dialog carries the
        # request's Record-Route, or the caller's route set stays empty and
        # its ACK and BYE bypass the proxies that asked to stay on the path
        response = self.request.create_response(code, reason, headers, body,
                                                to_tag=self.to_tag if code > 100 else None,
                                                record_route=self._creates_dialog and 100 < code < 300)
        if content_type is not None and body:
            response.set("content-type", content_type)
        try:
            outputs = self._machine.respond(response)
        except tx.LocalProtocolError as e:  # the transaction ended meanwhile (a transport error)
            log.info("cannot answer {method} from {source}: {error}", method=self.method, source=self.addr, error=e)
            return None
        if code >= 200:
            self.final = response
        self._run(outputs)
        if self.request.method == "INVITE" and 200 <= code < 300:
            self._retransmit_2xx(response)
        return response

    def _receive(self, request: Request, key: Any = None) -> None:
        self._run(self._machine.receive(request, key))

    def _timer_fired(self, name: str) -> None:
        self._run(self._machine.timer_fired(name))

    def _transport_error(self, reason: str) -> None:
        self._run(self._machine.transport_error())

    def _run(self, outputs: Iterable[Any]) -> None:
        for out in _actions_first(outputs):
            if isinstance(out, tx.Send):
                self.endpoint.dispatcher.send(out.message, self.leg, self._answer_to(), on_error=self._transport_error)
            elif isinstance(out, tx.StartTimer):
                if out.name in SERVER_LINGER and not self._machine.terminated:
                    self._retire(out.delay)
                else:
                    if self._timers is None:
                        self._timers = _Timers(self.endpoint.clock, self._timer_fired)
                    self._timers.start(out.name, out.delay)
            elif isinstance(out, tx.CancelTimer):
                if self._timers is not None:
                    self._timers.cancel(out.name)
            elif isinstance(out, tx.Terminated):
                self._terminated()
            elif isinstance(out, tx.AckReceived):
                # a 2xx ACK reusing the INVITE's branch (RFC 2543 peers,
                # Net::SIP): it matched this transaction, but the dialog must
                # see it too (RFC 6026 7.1: passed to the TU, not absorbed)
                if not self.endpoint._ack(out.ack):
                    self._ack_received(out.ack)
            elif isinstance(out, (tx.Timeout, tx.TransportError)):
                log.info("{method} from {source}: our answer was not acknowledged", method=self.method,
                         source=self.addr)
            # RequestReceived: the endpoint hands the request on itself

    def _answer_to(self) -> tuple[str, int]:
        destination = self._destination
        if destination is None:
            destination = self._destination = _response_destination(self.request, self.leg, self.addr)
        return destination

    def _terminated(self) -> None:
        if self._timers is not None:
            self._timers.release()
        self.on_cancel = None  # no CANCEL finds an ended transaction; the call's method was a cycle
        if self.endpoint._servers.get(self._key) is self:
            del self.endpoint._servers[self._key]
        else:  # a transport error after the final answer: nothing is repeated any more
            self.endpoint._finished_servers.pop(self._key)

    def _retire(self, delay: float) -> None:
        """The final answer is out (Timer J or L starts): only
        retransmissions can come now. The endpoint keeps a record that
        answers them for C{delay} seconds instead of this object (whose
        2xx retransmission, if any, goes on until the ACK)."""
        self._terminated()
        final = self.final
        data = bytes(final) if final is not None and self.request.method != "INVITE" else None
        self.endpoint._finished_servers.add(self._key, _answered(self.request.method, data, self.leg, self.addr),
                                            delay)

    # -- 2xx to INVITE: retransmitted by the UA core until the ACK (13.3.1.4) -------------
    def _retransmit_2xx(self, response: Response) -> None:
        self._2xx_timers = _Timers(self.endpoint.clock, self._2xx_timer_fired)
        self._retransmitter = tx.TwoXXRetransmitter(response, self.endpoint.timers,
                                                    reliable=self.leg.proto != "udp")
        self.endpoint._awaiting_ack[(self.request.call_id, self.request.cseq[0])] = self
        self._run_2xx(self._retransmitter.start())

    def _2xx_timer_fired(self, name: str) -> None:
        if self._retransmitter is not None:
            self._run_2xx(self._retransmitter.timer_fired(name))

    def _run_2xx(self, outputs: Iterable[Any]) -> None:
        for out in outputs:
            if isinstance(out, tx.Send):
                self.endpoint.dispatcher.send(out.message, self.leg, self._answer_to())
            elif isinstance(out, tx.StartTimer):
                assert self._2xx_timers is not None
                self._2xx_timers.start(out.name, out.delay)
            elif isinstance(out, tx.CancelTimer):
                assert self._2xx_timers is not None
                self._2xx_timers.cancel(out.name)
            elif isinstance(out, (tx.AckTimeout, tx.TransportError)):
                self._stop_2xx()
                if not self.acked.called:
                    self.acked.errback(TransactionTimeout("ACK"))

    def _ack_received(self, ack: Request) -> None:
        if self._retransmitter is not None:
            self._run_2xx(self._retransmitter.ack_received(ack))
        self._stop_2xx()
        if not self.acked.called:
            self.acked.callback(ack)

    def _stop_2xx(self) -> None:
        if self._2xx_timers is not None:
            self._2xx_timers.release()  # the 2xx is never retransmitted again
        self._retransmitter = None
        key = (self.request.call_id, self.request.cseq[0])
        if self.endpoint._awaiting_ack.get(key) is self:
            del self.endpoint._awaiting_ack[key]

    def _cancelled(self) -> None:
        """A CANCEL for this INVITE: 487 unless answered already."""
        if self.final is not None or self.cancelled:
            return
        self.cancelled = True
        on_cancel = self.on_cancel  # answering may end the transaction (and drop it)
        self.respond(487, "Request Terminated")
        if on_cancel is not None:
            _call(on_cancel)


@implementer(IReceiver)
class Endpoint:
    """The transactions and dialogs of one user agent.

    @param reactor: C{IReactorTime} for the transaction timers.
    @param dispatcher: an L{IDispatcher} (sends, resolves, names its legs).
    @param credentials: what 401/407 challenges are answered with
        (C{(user, password)}, C{{realm: (user, password)}} or a callable).
    @param owns: C{owns(request) -> bool}: whether a request outside our
        dialogs and transactions is addressed to us. None: everything is
        (the endpoint is alone on its dispatcher).
    @param user_agent: the User-Agent header of our requests.
    @param timers: the RFC 3261 timer values (L{sipproxy.sip.transaction.TimerConfig}).
    @ivar on_invite: C{on_invite(transaction) -> bool} for a new INVITE
        outside a dialog; true when taken (the endpoint has sent 100
        Trying); false passes the INVITE down the chain.
    @ivar accept_invite: C{accept_invite(request, leg, addr) -> bool},
        asked before the 100 Trying (C{listen}'s filter); false passes the
        INVITE down the chain.
    @ivar on_request: C{on_request(transaction) -> bool} for other
        requests outside a dialog (MESSAGE, NOTIFY, ...); false gets 405
        or 501.
    @ivar options_headers: (name, value) pairs added to (or replacing
        ours in) the answers to OPTIONS.
    @ivar last_in_chain: nothing follows us in the receive chain: an
        INVITE nobody takes is answered (480 without a listener, 403 when
        the filter refuses it) instead of passed on.
    """

    def __init__(self, reactor: IReactorTime, dispatcher: IDispatcher, credentials: Optional[Credentials] = None,
                 owns: Optional[Callable[[Request], bool]] = None,
                 user_agent: str = "sipproxy", timers: Optional[tx.TimerConfig] = None) -> None:
        self.clock = reactor
        self.timers = timers or tx.TimerConfig()
        self.dispatcher = dispatcher
        self.credentials = credentials
        self.owns = owns
        self.user_agent = user_agent
        self.last_in_chain = False
        self.options_headers: list[tuple[str, str]] = []
        self.on_invite: Optional[Callable[[ServerTransaction], Any]] = None
        self.accept_invite: Optional[Callable[[Request, Any, Any], Any]] = None
        self.on_request: Optional[Callable[[ServerTransaction], Any]] = None
        self._clients: dict[Any, ClientTransaction] = {}
        self._servers: dict[Any, ServerTransaction] = {}
        self._awaiting_ack: dict[tuple[str, int], ServerTransaction] = {}
        self._dialogs: dict[Any, Any] = {}
        #: server transactions that have answered, as records (L{ServerTransaction._retire})
        self._finished_servers = LingerTable(reactor)
        #: client transactions that have their final answer (L{ClientTransaction._retire})
        self._finished_clients = LingerTable(reactor)

    # -- dialogs ---------------------------------------------------------------------
    def add_dialog(self, dialog: Any, owner: Any) -> None:
        """Route the requests of C{dialog} to C{owner}, which has
        C{dialog_request(transaction)} and C{dialog_ack(request)}."""
        self._dialogs[dialog.id] = (dialog, owner)

    def remove_dialog(self, dialog: Any) -> None:
        self._dialogs.pop(dialog.id, None)

    # -- sending -----------------------------------------------------------------------
    def resolve(self, uri: str) -> Deferred:
        """The (leg, address) a request to C{uri} (its top Route or its
        Request-URI) goes to; fails with L{SIPError} when there is none."""
        target = self.route(uri)
        return target if isinstance(target, Deferred) else succeed(target)

    def route(self, uri: str) -> Union[tuple[ILeg, tuple[str, int]], Deferred]:
        """What L{resolve} gives, without its Deferred when the target is
        known at once (an IP address: a caller routes three times a call,
        for the INVITE, the ACK and the BYE); a Deferred otherwise (a name
        to look up, or no route: a failure with L{SIPError})."""
        dispatcher = self.dispatcher
        try:
            targets = dispatcher.targets_for_hop(dispatcher.hop_for(uri))
        except RoutingError as error:
            return fail(_no_route_error(error, uri))
        if isinstance(targets, list) and targets:
            return targets[0]
        d = targets if isinstance(targets, Deferred) else succeed(targets)
        return d.addCallbacks(_first_target, _no_route, errbackArgs=(uri,))

    def send_request(self, request: Request, target: Any, credentials: Any = "default",
                     on_provisional: Optional[Callable[[Response], Any]] = None,
                     on_retry: Optional[Callable[[Request], Any]] = None) -> ClientTransaction:
        """Send C{request} to C{target} (leg, address) in a new client
        transaction; adds our Via when it has none."""
        if request.get("via") is None:
            leg = target[0]
            add_via(request, leg.sent_by, leg.proto.upper())
        if self.user_agent and request.get("user-agent") is None:
            request.add("User-Agent", self.user_agent)
        if credentials == "default":
            credentials = self.credentials
        transaction = ClientTransaction(self, request, target, credentials, on_provisional, on_retry)
        transaction._start()
        return transaction

    def _send(self, message: Any, target: Any, on_error: Optional[Callable[[str], Any]] = None) -> None:
        leg, addr = target
        self.dispatcher.send(message, leg, addr, on_error=on_error)

    def _send_response(self, response: Response, leg: ILeg, addr: tuple[str, int],
                       on_error: Optional[Callable[[str], Any]] = None) -> None:
        """Back along the top Via (see L{_response_destination})."""
        self.dispatcher.send(response, leg, _response_destination(response, leg, addr), on_error=on_error)

    # -- receiving ---------------------------------------------------------------------
    def receive(self, packet: Any, leg: ILeg, addr: tuple[str, int]) -> Any:
        if isinstance(packet, Response):
            key = tx.client_key(packet)
            client = self._clients.get(key)
            if client is None:  # ours still when it repeats an answer we had
                record = self._finished_clients.get(key)
                if record is None:
                    return False
                if isinstance(record, tuple) and 200 <= packet.code < 300:
                    self._extra_2xx(key, record, packet)
                return True
            client._receive(packet, key)
            return True
        return self._receive_request(packet, leg, addr)

    def _receive_request(self, request: Request, leg: ILeg, addr: tuple[str, int]) -> bool:
        method = request.method
        key = tx.server_key(request)  # once: every lookup and the new transaction use it
        server = self._servers.get(key)
        if server is not None:  # a retransmission, or the ACK of a non-2xx answer
            server._receive(request, key)
            return True
        if self._finished_servers and self._repeat_answer(request, key):
            return True
        if method == "ACK":
            return self._ack(request)
        if method == "CANCEL":
            return self._cancel(request, leg, addr, key)
        if request.to_tag is not None:
            return self._in_dialog(request, leg, addr, key)
        if self.owns is not None and not self.owns(request):
            return False
        if method == "INVITE":
            return self._invite(request, leg, addr, key)
        transaction = ServerTransaction(self, request, leg, addr, key)
        if self._unacceptable(transaction):
            return True
        if method == "OPTIONS":
            self._options(transaction)
        elif method == "BYE":
            transaction.respond(481, "Call/Transaction Does Not Exist")
        elif not (self.on_request is not None and _call(self.on_request, transaction)):
            self._refuse(transaction)
        return True

    def _extra_2xx(self, key: Any, record: _AcceptedInvite, response: Response) -> None:
        """A 2xx after the first (RFC 6026 7.2): the same one again (our
        ACK was lost) gets the ACK again; another fork's is ended."""
        tag = response.to_tag
        if tag == record[_TAG]:
            ack = _ours(record[_ACK]) if record[_ACK] is not None else None
            if ack is not None:
                self._send(ack, (self.dispatcher.legs[record[_ACK_LEG]], record[_ACK_ADDR]))
            return
        if tag is None or tag in record[_ENDED]:
            return
        self._finished_clients.update(key, _amended(record, _ENDED, record[_ENDED] + (tag,)))
        invite = _ours(record[_INVITE])
        if not isinstance(invite, Request):
            return
        try:
            self._end_fork(invite, response)
        except ValueError as e:  # the peer's 2xx makes no dialog we could reach (ParseError too)
            log.warn("call {call_id}: cannot end the fork {tag}: {error}", call_id=response.call_id, tag=tag,
                     error=e)

    def _end_fork(self, invite: Request, response: Response) -> None:
        """ACK another fork's 2xx and end its dialog with BYE at once."""
        fork = Dialog.from_uac(invite, response)
        ack = create_ack(invite, response, fork)
        bye = fork.new_request("BYE")
        hop = str(parse_name_addr(fork.route_set[0]).uri) if fork.route_set else fork.remote_target
        log.info("call {call_id}: a second fork answered ({tag}); ending it", call_id=invite.call_id,
                 tag=response.to_tag)

        def send(target: Any) -> None:
            self._send(ack, target)
            self.send_request(bye, target).deferred.addErrback(lambda f: None)

        self.resolve(hop).addCallback(send).addErrback(
            lambda f: log.warn("call {call_id}: cannot end the fork: {e}", call_id=invite.call_id,
                               e=f.getErrorMessage()))

    def _repeat_answer(self, request: Request, key: Any) -> bool:
        """A request for a transaction that has answered (L{LingerTable}):
        a retransmission gets the same final answer again (non-INVITE) or
        is absorbed (INVITE answered 2xx, whose 2xx the UA core repeats);
        an ACK with the INVITE's branch (RFC 2543 peers, Net::SIP) goes to
        the dialog like any 2xx ACK. False when no record matches."""
        record = self._finished_servers.get(key)
        if record is None:
            return False
        method, data, leg_index, addr = record
        if request.method == "ACK" and method == "INVITE":
            if not self._ack(request):
                waiting = self._awaiting_ack.get((request.call_id, request.cseq[0]))
                if waiting is not None:
                    waiting._ack_received(request)
        elif request.method == method and data is not None:
            response = _ours(data)
            if response is not None:
                self._send_response(response, self.dispatcher.legs[leg_index], addr)
        return True

    def _ack(self, ack: Request) -> bool:
        waiting = self._awaiting_ack.get((ack.call_id, ack.cseq[0]))
        entry = self._dialogs.get(dialog_id_of_request(ack))
        if waiting is not None and waiting.to_tag == ack.to_tag:
            waiting._ack_received(ack)
        elif entry is None:
            return False  # not ours: a proxy sharing the dispatcher forwards it
        if entry is not None:
            _call(entry[1].dialog_ack, ack)
        return True

    def _cancel(self, cancel: Request, leg: ILeg, addr: tuple[str, int], key: Any) -> bool:
        invite_key = tx.server_key(cancel, method="INVITE")
        invite = self._servers.get(invite_key)
        answered = invite is None and self._finished_servers.get(invite_key) is not None
        if invite is None and not answered and self.owns is not None and not self.owns(cancel):
            return False
        transaction = ServerTransaction(self, cancel, leg, addr, key)
        if answered:  # too late: the INVITE has its final answer (RFC 3261 9.2)
            transaction.respond(200)
            return True
        if invite is None:
            transaction.respond(481, "Call/Transaction Does Not Exist")
            return True
        transaction.respond(200)
        invite._cancelled()
        return True

    def _in_dialog(self, request: Request, leg: ILeg, addr: tuple[str, int], key: Any) -> bool:
        entry = self._dialogs.get(dialog_id_of_request(request))
        if entry is None:
            if self.owns is not None and not self.owns(request):
                return False
            ServerTransaction(self, request, leg, addr, key).respond(481, "Call/Transaction Does Not Exist")
            return True
        dialog, owner = entry
        transaction = ServerTransaction(self, request, leg, addr, key)
        if self._unacceptable(transaction):
            return True
        refused = dialog.receive_request(request)
        if refused:
            transaction.respond(refused, "Server Internal Error (CSeq out of order)")
            return True
        if request.method == "INVITE":
            transaction.respond(100, "Trying")
        if request.method == "OPTIONS":
            self._options(transaction)
            return True
        try:
            handled = owner.dialog_request(transaction)
        except Exception:
            log.failure("the owner of dialog {dialog} failed on {method}", dialog=dialog.id, method=request.method)
            if transaction.final is None:
                transaction.respond(500, "Server Internal Error")
            return True
        if transaction.final is None:
            if request.method in ("NOTIFY", "INFO", "MESSAGE", "BYE"):
                transaction.respond(200)
            elif not handled:
                self._refuse(transaction)
        return True

    def _invite(self, request: Request, leg: ILeg, addr: tuple[str, int], key: Any) -> bool:
        if self.on_invite is None:
            if self.last_in_chain:
                transaction = ServerTransaction(self, request, leg, addr, key)
                transaction.respond(480, "Temporarily Unavailable (not listening)")
                return True
            return False
        if self.accept_invite is not None and not _call(self.accept_invite, request, leg, addr):
            if self.last_in_chain:
                ServerTransaction(self, request, leg, addr, key).respond(403, "Forbidden (refused by filter)")
                return True
            return False
        refusal = self._refusal(request)
        # 100 Trying goes out as the transaction starts, unless it is refused at once
        transaction = ServerTransaction(self, request, leg, addr, key, trying=refusal is None)
        if refusal is not None:
            transaction.respond(*refusal)
            return True
        if not _call(self.on_invite, transaction) and transaction.final is None:
            transaction.respond(603, "Decline")
        return True

    def _unacceptable(self, transaction: ServerTransaction) -> bool:
        """Refuse what we cannot honour before anyone acts on it (see
        L{_refusal}); true when refused."""
        refusal = self._refusal(transaction.request)
        if refusal is None:
            return False
        transaction.respond(*refusal)
        return True

    @staticmethod
    def _refusal(request: Request) -> Optional[tuple[int, str, list[tuple[str, str]]]]:
        """The answer to a request we cannot honour, or None: an extension
        we do not support in Require (420, RFC 3261 8.2.2.3), a body of an
        INVITE that is not SDP (415, 8.2.3)."""
        if request.method in ("ACK", "CANCEL"):
            return None
        required = [tag.strip() for tag in request.get_all("require") if tag.strip()]
        if required:
            return 420, "Bad Extension", [("Unsupported", ", ".join(required))]
        if request.method == "INVITE" and request.body:
            kind = (request.get("content-type") or "").split(";")[0].strip().lower()
            if kind != "application/sdp":
                return 415, "Unsupported Media Type", [("Accept", "application/sdp")]
        return None

    def _options(self, transaction: ServerTransaction) -> None:
        headers = [("Allow", ", ".join(ALLOWED)), ("Accept", "application/sdp"), ("Supported", "")]
        extra = {name.lower() for name, _ in self.options_headers}
        headers = [h for h in headers if h[0].lower() not in extra] + list(self.options_headers)
        transaction.respond(200, "OK", headers)

    def _refuse(self, transaction: ServerTransaction) -> None:
        if transaction.method in KNOWN_METHODS:
            transaction.respond(405, "Method Not Allowed", [("Allow", ", ".join(ALLOWED))])
        else:
            transaction.respond(501, "Not Implemented", [("Allow", ", ".join(ALLOWED))])

    def close(self) -> None:
        """Stop every timer (after the calls were ended)."""
        for client in list(self._clients.values()):
            client._terminated()
        for server in list(self._servers.values()) + list(self._awaiting_ack.values()):
            server._stop_2xx()
            server._terminated()
        self._finished_servers.clear()
        self._finished_clients.clear()


_ACTIONS = (tx.Send, tx.StartTimer, tx.CancelTimer, tx.Terminated)


def _actions_first(outputs: Iterable[Any]) -> list[Any]:
    """A machine's actions (in their order), then its events: an event
    runs user code (a Deferred's callbacks) that may end the user agent,
    and no timer of the machine may start after that."""
    outputs = outputs if isinstance(outputs, list) else list(outputs)
    event_seen = False
    for out in outputs:  # the machines list their events last: nothing to reorder
        if isinstance(out, _ACTIONS):
            if event_seen:
                break
        else:
            event_seen = True
    else:
        return outputs
    return [o for o in outputs if isinstance(o, _ACTIONS)] + [o for o in outputs if not isinstance(o, _ACTIONS)]


def _response_destination(message: Union[Request, Response], leg: ILeg, addr: tuple[str, int]) -> tuple[str, int]:
    """Where the answers to a request go, from its top Via or from that of
    an answer (the same line): back along it for UDP (received, rport: RFC
    3261 18.2.2, RFC 3581), over the connection the request came on for
    stream legs (C{addr})."""
    if leg.proto != "udp":
        return addr
    via = message.top_via()
    try:
        hop = response_hop(via) if via is not None else None
    except RoutingError:
        hop = None
    if hop is not None and hop.is_ip:
        return (hop.host, hop.port or 5060)
    return addr


def _ours(data: bytes) -> Optional[Union[Request, Response]]:
    """A message we sent before, kept as bytes, parsed again to be used
    again; None (and a warning) when it does not parse, which can only
    be a header the application added that our parser refuses."""
    try:
        return parse(data)
    except ParseError as e:
        log.warn("cannot use our own message again: {error}", error=e)
        return None


def _call(function: Callable[..., Any], *args: Any) -> Any:
    """Run a user's callback; its exception is logged, never raised into
    the packet path."""
    try:
        return function(*args)
    except Exception:
        log.failure("callback {name} failed", name=getattr(function, "__qualname__", repr(function)))
        return None
