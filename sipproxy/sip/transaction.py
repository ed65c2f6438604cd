"""SIP transactions (RFC 3261 17, with RFC 6026), sans-IO.

Four state machines, one per kind of transaction, in the manner of h11:
they take events (a message, a timer firing, a transport error) and
return a list of actions for the caller (send this, start or cancel that
timer) and of events for the transaction user, the TU. They own no socket
and read no clock; the endpoint that drives them does both. Nothing here
raises for what arrives from the network: a stray or late message is
absorbed and returns no action. L{LocalProtocolError} is raised only when
the caller misuses a machine (a second C{start()}, a 1xx after the final
response, ...).

API (every method returns a list of L{Action} and L{Event} objects, to be
carried out in order)::

    timers = TimerConfig(t1=0.5, t2=4.0, t4=5.0)      # RFC 3261 table 4

    # client side: we sent the request
    txn = ClientInvite(request, timers, reliable=False)
    txn = ClientNonInvite(request, timers, reliable=False)
    txn.key                    # == client_key(response) of its responses
    txn.start()                # Send(request), StartTimer("A"|"E"), StartTimer("B"|"F")
    txn.receive(response)      # Provisional | Final | Extra2xx, Send(ACK) for 3xx-6xx
    txn.receive(response, key) # the same, C{key} being client_key(response) already computed
    txn.timer_fired(name)      # retransmission, or Timeout + Terminated
    txn.transport_error()      # TransportError + Terminated (RFC 3261 17.1.4)

    # server side: the request arrived and matched no transaction
    txn = ServerInvite(request, timers, reliable=False)
    txn = ServerNonInvite(request, timers, reliable=False, key=key)  # key: server_key(request), if computed
    txn.key, txn.ack_key       # server_key() of its retransmissions and of its ACK
    txn.start()                # RequestReceived (+ StartTimer("trying") for INVITE)
    txn.receive(request)       # retransmission: the last response again;
                               # ACK: absorbed (non-2xx) or AckReceived (2xx)
    txn.receive(request, key)  # the same, C{key} being server_key(request) already computed
    txn.respond(response)      # Send; 3xx-6xx starts G/H (INVITE) or J
    txn.timer_fired(name)
    txn.transport_error()

    # the UAS core's 2xx retransmission (RFC 3261 13.3.1.4), after
    # ServerInvite.respond(2xx) sent the first copy
    retransmitter = TwoXXRetransmitter(response, timers, reliable=False)
    retransmitter.start(); .timer_fired(name); .ack_received()
        # Send copies until an ACK; AckTimeout after 64*T1: send a BYE

    client_key(response) -> hashable;  server_key(request) -> hashable

Actions: L{Send}(message), L{StartTimer}(name, delay) (replacing a running
timer of that name), L{CancelTimer}(name). Events for the TU:
L{Provisional}, L{Final}, L{Extra2xx}, L{Timeout}, L{TransportError},
L{Terminated}, L{RequestReceived}, L{AckReceived}, L{AckTimeout}. On the
usual paths a list gives its actions before its events, so a caller that
runs the TU's code (which may end everything) after the actions need not
reorder it. A timer that fires after it was cancelled or replaced, or one
the machine does not know, is ignored, so the caller need not win races
against its own clock.

Timers (RFC 3261 table 4; L and M from RFC 6026): A starts at T1 and
doubles; B = F = H = J = L = M = 64*T1; E and G double from T1 up to T2
(E stays at T2 once a provisional arrived); D = 32 s; I = K = T4. Over a
reliable transport (TCP, TLS) A, E and G never run and D, I, J, K are zero:
the machine goes to Terminated at once instead of starting them.

Decisions:
  - RFC 6026 is followed on both sides. A client INVITE transaction moves
    to Accepted on the first 2xx (L{Final}) and reports any later 2xx (a
    retransmission, or another fork) as L{Extra2xx}, which the UAC core
    ACKs (and, for an unwanted fork, ends with BYE); the TU sees one
    L{Final} per transaction. A server INVITE transaction moves to
    Accepted when the TU sends a 2xx: retransmitted INVITEs are absorbed
    (not passed up as new requests), further 2xx from the TU are sent, and
    an ACK matching it is passed up as L{AckReceived}.
  - The server INVITE transaction sends 100 Trying itself when the TU has
    sent nothing 200 ms after the request arrived (RFC 3261 17.2.1;
    C{TimerConfig.trying}); C{trying=0}, or C{trying_now=True} for one
    transaction (a TU that always sends it first), sends it at once.
  - Timer B is cancelled by a provisional response (17.1.1.2: a
    proceeding INVITE waits for a final response as long as it takes; the
    UAC cancels it when it no longer wants to wait).
  - ACK for 3xx-6xx is built here (17.1.1.3) with uac.create_ack and sent
    again for every retransmitted final response.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Optional, Union

from sipproxy.sip.message import MAGIC_COOKIE, Request, Response
from sipproxy.sip.uac import create_ack

__all__ = [
    "TimerConfig",
    "LocalProtocolError",
    "Send",
    "StartTimer",
    "CancelTimer",
    "Provisional",
    "Final",
    "Extra2xx",
    "Timeout",
    "TransportError",
    "Terminated",
    "RequestReceived",
    "AckReceived",
    "AckTimeout",
    "ClientInvite",
    "ClientNonInvite",
    "ServerInvite",
    "ServerNonInvite",
    "TwoXXRetransmitter",
    "client_key",
    "server_key",
    "INITIAL",
    "CALLING",
    "TRYING",
    "PROCEEDING",
    "ACCEPTED",
    "COMPLETED",
    "CONFIRMED",
    "TERMINATED",
]


@dataclass(frozen=True)
class TimerConfig:
    """RFC 3261 timer base values, in seconds (table 4)."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    #: Timer D for unreliable transports (RFC 3261: at least 32 s).
    d: float = 32.0
    #: How long a server INVITE transaction waits for the TU before it
    #: sends 100 Trying itself (17.2.1); 0 sends it at once.
    trying: float = 0.2

    @property
    def timeout(self) -> float:
        """64*T1: timers B, F, H, J, L, M and the 2xx retransmission limit."""
        return 64 * self.t1


class LocalProtocolError(RuntimeError):
    """The caller used a transaction in a way RFC 3261 forbids (never
    raised for a message from the network)."""


# -- states -----------------------------------------------------------------------------
class _State:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


INITIAL = _State("INITIAL")
CALLING = _State("CALLING")
TRYING = _State("TRYING")
PROCEEDING = _State("PROCEEDING")
ACCEPTED = _State("ACCEPTED")
COMPLETED = _State("COMPLETED")
CONFIRMED = _State("CONFIRMED")
TERMINATED = _State("TERMINATED")
_WAITING = _State("WAITING")

#: Which state may follow which, per machine (RFC 3261 figures 5-8, RFC
#: 6026 figures 2-4). A move outside the table is a bug in this module,
#: reported as LocalProtocolError rather than ignored.
_TRANSITIONS: dict[str, dict[_State, frozenset]] = {
    "ClientInvite": {
        INITIAL: frozenset((CALLING,)),
        CALLING: frozenset((PROCEEDING, ACCEPTED, COMPLETED, TERMINATED)),
        PROCEEDING: frozenset((ACCEPTED, COMPLETED, TERMINATED)),
        ACCEPTED: frozenset((TERMINATED,)),
        COMPLETED: frozenset((TERMINATED,)),
        TERMINATED: frozenset(),
    },
    "ClientNonInvite": {
        INITIAL: frozenset((TRYING,)),
        TRYING: frozenset((PROCEEDING, COMPLETED, TERMINATED)),
        PROCEEDING: frozenset((COMPLETED, TERMINATED)),
        COMPLETED: frozenset((TERMINATED,)),
        TERMINATED: frozenset(),
    },
    "ServerInvite": {
        INITIAL: frozenset((PROCEEDING,)),
        PROCEEDING: frozenset((ACCEPTED, COMPLETED, TERMINATED)),
        ACCEPTED: frozenset((TERMINATED,)),
        COMPLETED: frozenset((CONFIRMED, TERMINATED)),
        CONFIRMED: frozenset((TERMINATED,)),
        TERMINATED: frozenset(),
    },
    "ServerNonInvite": {
        INITIAL: frozenset((TRYING,)),
        TRYING: frozenset((PROCEEDING, COMPLETED, TERMINATED)),
        PROCEEDING: frozenset((COMPLETED, TERMINATED)),
        COMPLETED: frozenset((TERMINATED,)),
        TERMINATED: frozenset(),
    },
    "TwoXXRetransmitter": {
        INITIAL: frozenset((_WAITING,)),
        _WAITING: frozenset((TERMINATED,)),
        TERMINATED: frozenset(),
    },
}


# -- actions and events --------------------------------------------------------------------
@dataclass(frozen=True)
class Send:
    """Pass C{message} to the transport (to the transaction's destination)."""

    message: Union[Request, Response]


@dataclass(frozen=True)
class StartTimer:
    """Start timer C{name} to fire in C{delay} seconds, replacing a running
    timer of the same name."""

    name: str
    delay: float


@dataclass(frozen=True)
class CancelTimer:
    name: str


@dataclass(frozen=True)
class Provisional:
    """A 101-199 (or 100) response for the TU."""

    response: Response


@dataclass(frozen=True)
class Final:
    """The final response of a client transaction; once per transaction."""

    response: Response


@dataclass(frozen=True)
class Extra2xx:
    """A 2xx after the first (RFC 6026 Accepted): a retransmission or
    another fork. The UAC core ACKs it; it is no new final response."""

    response: Response


@dataclass(frozen=True)
class Timeout:
    """Timer B, F or H fired: no (final) response, or no ACK, in time."""


@dataclass(frozen=True)
class TransportError:
    """The transport could not send (RFC 3261 17.1.4, 17.2.4)."""


@dataclass(frozen=True)
class Terminated:
    """The transaction is over: forget it (and its keys)."""


@dataclass(frozen=True)
class RequestReceived:
    """A server transaction's request, for the TU to answer."""

    request: Request


@dataclass(frozen=True)
class AckReceived:
    """An ACK for a 2xx that matched the server INVITE transaction (RFC
    6026 Accepted), or the ACK that ends a L{TwoXXRetransmitter}."""

    ack: Optional[Request]


@dataclass(frozen=True)
class AckTimeout:
    """No ACK for a 2xx within 64*T1 (RFC 3261 13.3.1.4): the UAS core
    should end the dialog with a BYE."""


Action = Union[Send, StartTimer, CancelTimer]
Event = Union[Provisional, Final, Extra2xx, Timeout, TransportError, Terminated, RequestReceived, AckReceived,
              AckTimeout]
Output = list  # list[Union[Action, Event]]


# -- matching ------------------------------------------------------------------------------
def client_key(message: Union[Request, Response]) -> Hashable:
    """What ties a response to its client transaction (RFC 3261 17.1.3):
    the top Via branch and the CSeq method. For the request we send, the
    same function gives the transaction's key."""
    via = message.top_via()
    branch = via.branch if via is not None else None
    return (branch or "", message.cseq[1].upper())


def server_key(request: Request, method: Optional[str] = None) -> Hashable:
    """What ties a request to its server transaction (RFC 3261 17.2.3).

    With an RFC 3261 branch (magic cookie): branch, sent-by and method,
    an ACK counting as INVITE. Without (RFC 2543): Request-URI, To tag,
    From tag, Call-ID, CSeq number and method (ACK as INVITE) and the top
    Via; an ACK then matches the INVITE transaction's L{ServerInvite.ack_key},
    which has the To tag of the response sent.

    @param method: look up another transaction of the same branch: the
        INVITE a CANCEL cancels is C{server_key(cancel, "INVITE")}.
    """
    method = (method or request.method).upper()
    if method == "ACK":
        method = "INVITE"
    via = request.top_via()
    branch = via.branch if via is not None else None
    if via is not None and branch and branch.startswith(MAGIC_COOKIE) and len(branch) > len(MAGIC_COOKIE):
        return ("3261", branch, via.host.lower(), via.port, method)
    number = request.cseq[0]
    return ("2543", request.uri, request.to_tag, request.from_tag, request.call_id, number, method,
            str(via) if via is not None else "")


# -- the machines -----------------------------------------------------------------------------
class _Machine:
    """What all machines share: the state with its table, and the timers
    that run (so a stale firing is ignored and termination cancels them)."""

    def __init__(self, timers: TimerConfig, reliable: bool) -> None:
        self.timers = timers
        self.reliable = reliable
        self.state: _State = INITIAL
        self._running: dict[str, float] = {}

    @property
    def terminated(self) -> bool:
        return self.state is TERMINATED

    def _goto(self, state: _State) -> None:
        allowed = _TRANSITIONS[type(self).__name__][self.state]
        if state not in allowed:
            raise LocalProtocolError(f"{type(self).__name__}: {self.state!r} -> {state!r} is not allowed")
        self.state = state

    def _start_timer(self, out: Output, name: str, delay: float) -> None:
        self._running[name] = delay
        out.append(StartTimer(name, delay))

    def _cancel_timer(self, out: Output, name: str) -> None:
        if self._running.pop(name, None) is not None:
            out.append(CancelTimer(name))

    def _terminate(self, out: Output) -> Output:
        for name in list(self._running):
            self._cancel_timer(out, name)
        self._goto(TERMINATED)
        out.append(Terminated())
        return out

    def _wait_or_terminate(self, out: Output, state: _State, name: str, delay: float,
                           event: Optional[Final] = None) -> Output:
        """Enter C{state} and start timer C{name}, or terminate at once when
        the timer would be zero (reliable transports). C{event}, for the
        TU, goes after the timer's start, and before L{Terminated}."""
        if delay <= 0:
            if event is not None:
                out.append(event)
            return self._terminate(out)
        self._goto(state)
        self._start_timer(out, name, delay)
        if event is not None:
            out.append(event)
        return out

    def _check_started(self) -> None:
        if self.state is not INITIAL:
            raise LocalProtocolError(f"{type(self).__name__} already started")

    def timer_fired(self, name: str) -> Output:
        """Timer C{name} fired; a timer that is not running is ignored."""
        if self._running.pop(name, None) is None or self.state is TERMINATED:
            return []
        return self._on_timer(name)

    def _on_timer(self, name: str) -> Output:
        raise NotImplementedError

    def transport_error(self) -> Output:
        """The transport failed to send our last message."""
        if self.state in (INITIAL, TERMINATED):
            return []
        return self._terminate([TransportError()])

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.state!r}>"


class _Client(_Machine):
    def __init__(self, request: Request, timers: TimerConfig = TimerConfig(), reliable: bool = False) -> None:
        super().__init__(timers, reliable)
        self.request = request
        self.key = client_key(request)
        self.final: Optional[Response] = None

    def _matches(self, response: Response, key: Optional[Hashable]) -> bool:
        if not isinstance(response, Response):
            return False
        return (client_key(response) if key is None else key) == self.key


class ClientInvite(_Client):
    """The INVITE client transaction (RFC 3261 17.1.1, RFC 6026 7.2)."""

    def __init__(self, request: Request, timers: TimerConfig = TimerConfig(), reliable: bool = False) -> None:
        if request.method != "INVITE":
            raise ValueError(f"ClientInvite for a {request.method}")
        super().__init__(request, timers, reliable)
        self.ack: Optional[Request] = None
        self._interval = timers.t1

    def start(self) -> Output:
        self._check_started()
        self._goto(CALLING)
        out: Output = [Send(self.request)]
        if not self.reliable:
            self._start_timer(out, "A", self._interval)
        self._start_timer(out, "B", self.timers.timeout)
        return out

    def receive(self, response: Response, key: Optional[Hashable] = None) -> Output:
        """A response; C{key} is its L{client_key} when the caller has it
        already (it found the transaction by it)."""
        if not self._matches(response, key) or self.state in (INITIAL, TERMINATED):
            return []
        code = response.code
        state = self.state
        out: Output = []
        if state in (CALLING, PROCEEDING):
            if code < 200:
                if state is CALLING:
                    self._cancel_timer(out, "A")
                    self._cancel_timer(out, "B")
                    self._goto(PROCEEDING)
                out.append(Provisional(response))
                return out
            self._cancel_timer(out, "A")
            self._cancel_timer(out, "B")
            self.final = response
            if code < 300:
                self._goto(ACCEPTED)
                self._start_timer(out, "M", self.timers.timeout)
                out.append(Final(response))
                return out
            self.ack = create_ack(self.request, response)
            out.append(Send(self.ack))
            return self._wait_or_terminate(out, COMPLETED, "D", 0 if self.reliable else self.timers.d, Final(response))
        if state is ACCEPTED and 200 <= code < 300:
            return [Extra2xx(response)]
        if state is COMPLETED and code >= 300 and self.ack is not None:
            return [Send(self.ack)]  # the final again: our ACK was lost
        return []

    def _on_timer(self, name: str) -> Output:
        out: Output = []
        if name == "A" and self.state is CALLING:
            self._interval *= 2
            out.append(Send(self.request))
            self._start_timer(out, "A", self._interval)
            return out
        if name == "B" and self.state is CALLING:
            return self._terminate([Timeout()])
        if (name == "D" and self.state is COMPLETED) or (name == "M" and self.state is ACCEPTED):
            return self._terminate(out)
        return out

    def transport_error(self) -> Output:
        if self.state in (COMPLETED, ACCEPTED):
            # the TU has its final response; only the ACK (or nothing) failed
            return self._terminate([])
        return super().transport_error()


class ClientNonInvite(_Client):
    """The non-INVITE client transaction (RFC 3261 17.1.2)."""

    def __init__(self, request: Request, timers: TimerConfig = TimerConfig(), reliable: bool = False) -> None:
        if request.method in ("INVITE", "ACK"):
            raise ValueError(f"ClientNonInvite for a {request.method}")
        super().__init__(request, timers, reliable)
        self._interval = timers.t1

    def start(self) -> Output:
        self._check_started()
        self._goto(TRYING)
        out: Output = [Send(self.request)]
        if not self.reliable:
            self._start_timer(out, "E", self._interval)
        self._start_timer(out, "F", self.timers.timeout)
        return out

    def receive(self, response: Response, key: Optional[Hashable] = None) -> Output:
        """A response; C{key} is its L{client_key} when the caller has it."""
        if not self._matches(response, key) or self.state not in (TRYING, PROCEEDING):
            return []
        out: Output = []
        if response.code < 200:
            if self.state is TRYING:
                self._goto(PROCEEDING)
            out.append(Provisional(response))
            return out
        self.final = response
        self._cancel_timer(out, "E")
        self._cancel_timer(out, "F")
        return self._wait_or_terminate(out, COMPLETED, "K", 0 if self.reliable else self.timers.t4, Final(response))

    def _on_timer(self, name: str) -> Output:
        out: Output = []
        if name == "E" and self.state in (TRYING, PROCEEDING):
            if self.state is TRYING:
                self._interval = min(2 * self._interval, self.timers.t2)
            else:
                self._interval = self.timers.t2
            out.append(Send(self.request))
            self._start_timer(out, "E", self._interval)
            return out
        if name == "F" and self.state in (TRYING, PROCEEDING):
            return self._terminate([Timeout()])
        if name == "K" and self.state is COMPLETED:
            return self._terminate(out)
        return out

    def transport_error(self) -> Output:
        if self.state is COMPLETED:
            return self._terminate([])
        return super().transport_error()


class _Server(_Machine):
    def __init__(self, request: Request, timers: TimerConfig = TimerConfig(), reliable: bool = False,
                 key: Optional[Hashable] = None) -> None:
        super().__init__(timers, reliable)
        self.request = request
        self.key = server_key(request) if key is None else key
        self.last_response: Optional[Response] = None

    def _is_retransmission(self, request: Request, key: Optional[Hashable]) -> bool:
        return isinstance(request, Request) and request.method == self.request.method \
            and (server_key(request) if key is None else key) == self.key

    def _check_response(self, response: Response) -> None:
        if not isinstance(response, Response):
            raise LocalProtocolError(f"respond() takes a Response, not {type(response).__name__}")
        if response.cseq[1].upper() != self.request.method:
            raise LocalProtocolError(f"a response for {response.cseq[1]} in a {self.request.method} transaction")


class ServerInvite(_Server):
    """The INVITE server transaction (RFC 3261 17.2.1, RFC 6026 7.1)."""

    def __init__(self, request: Request, timers: TimerConfig = TimerConfig(), reliable: bool = False,
                 key: Optional[Hashable] = None, trying_now: bool = False) -> None:
        if request.method != "INVITE":
            raise ValueError(f"ServerInvite for a {request.method}")
        super().__init__(request, timers, reliable, key)
        #: send 100 Trying at start, not after C{timers.trying}: for a TU
        #: that sends it first anyway, no timer is started and cancelled
        self.trying_now = trying_now
        self.final: Optional[Response] = None
        #: server_key() of the ACK to our final response: the same as
        #: C{key} for an RFC 3261 branch; for an RFC 2543 request, known
        #: once the final response (with its To tag) is sent.
        self.ack_key: Optional[Hashable] = self.key if self.key[0] == "3261" else None
        self._interval = timers.t1

    def start(self) -> Output:
        self._check_started()
        self._goto(PROCEEDING)
        out: Output = []
        if self.trying_now or self.timers.trying <= 0:
            out += self._send(self.request.create_response(100))
        else:
            self._start_timer(out, "trying", self.timers.trying)
        out.append(RequestReceived(self.request))
        return out

    def _send(self, response: Response) -> Output:
        self.last_response = response
        return [Send(response)]

    def respond(self, response: Response) -> Output:
        """Send the TU's response: 1xx and 2xx while proceeding, more 2xx
        once accepted (the UAS core's retransmissions), one 3xx-6xx."""
        self._check_response(response)
        code = response.code
        out: Output = []
        if self.state is ACCEPTED and 200 <= code < 300:
            return [Send(response)]
        if self.state is not PROCEEDING:
            raise LocalProtocolError(f"ServerInvite cannot send a {code} in state {self.state!r}")
        self._cancel_timer(out, "trying")
        out += self._send(response)
        if code < 200:
            return out
        self.final = response
        if self.ack_key is None:
            self.ack_key = self.key[:2] + (response.to_tag,) + self.key[3:]
        if code < 300:
            self._goto(ACCEPTED)
            self._start_timer(out, "L", self.timers.timeout)
            return out
        self._goto(COMPLETED)
        if not self.reliable:
            self._start_timer(out, "G", self._interval)
        self._start_timer(out, "H", self.timers.timeout)
        return out

    def receive(self, request: Request, key: Optional[Hashable] = None) -> Output:
        """A request for this transaction; C{key} is its L{server_key}
        when the caller has it."""
        if not isinstance(request, Request) or self.state in (INITIAL, TERMINATED):
            return []
        if request.method == "ACK":
            if (server_key(request) if key is None else key) != self.ack_key:
                return []
            if self.state is COMPLETED:
                out: Output = []
                self._cancel_timer(out, "G")
                self._cancel_timer(out, "H")
                return self._wait_or_terminate(out, CONFIRMED, "I", 0 if self.reliable else self.timers.t4)
            if self.state is ACCEPTED:
                return [AckReceived(request)]
            return []
        if not self._is_retransmission(request, key):
            return []
        if self.state in (PROCEEDING, COMPLETED) and self.last_response is not None:
            return [Send(self.last_response)]
        return []  # nothing sent yet, or Accepted/Confirmed: absorbed

    def _on_timer(self, name: str) -> Output:
        out: Output = []
        if name == "trying" and self.state is PROCEEDING and self.last_response is None:
            return self._send(self.request.create_response(100))
        if name == "G" and self.state is COMPLETED and self.final is not None:
            self._interval = min(2 * self._interval, self.timers.t2)
            out.append(Send(self.final))
            self._start_timer(out, "G", self._interval)
            return out
        if name == "H" and self.state is COMPLETED:
            return self._terminate([Timeout()])
        if (name == "I" and self.state is CONFIRMED) or (name == "L" and self.state is ACCEPTED):
            return self._terminate(out)
        return out


class ServerNonInvite(_Server):
    """The non-INVITE server transaction (RFC 3261 17.2.2)."""

    def __init__(self, request: Request, timers: TimerConfig = TimerConfig(), reliable: bool = False,
                 key: Optional[Hashable] = None) -> None:
        if request.method in ("INVITE", "ACK"):
            raise ValueError(f"ServerNonInvite for a {request.method}")
        super().__init__(request, timers, reliable, key)
        self.ack_key = None

    def start(self) -> Output:
        self._check_started()
        self._goto(TRYING)
        return [RequestReceived(self.request)]

    def respond(self, response: Response) -> Output:
        self._check_response(response)
        if self.state not in (TRYING, PROCEEDING):
            raise LocalProtocolError(f"ServerNonInvite cannot send a {response.code} in state {self.state!r}")
        self.last_response = response
        out: Output = [Send(response)]
        if response.code < 200:
            if self.state is TRYING:
                self._goto(PROCEEDING)
            return out
        return self._wait_or_terminate(out, COMPLETED, "J", 0 if self.reliable else self.timers.timeout)

    def receive(self, request: Request, key: Optional[Hashable] = None) -> Output:
        """A request for this transaction; C{key} is its L{server_key}
        when the caller has it."""
        if not self._is_retransmission(request, key) or self.state not in (PROCEEDING, COMPLETED):
            return []  # absorbed while trying (nothing to repeat) and after
        return [Send(self.last_response)] if self.last_response is not None else []

    def _on_timer(self, name: str) -> Output:
        if name == "J" and self.state is COMPLETED:
            return self._terminate([])
        return []


class TwoXXRetransmitter(_Machine):
    """The UAS core's 2xx retransmission (RFC 3261 13.3.1.4): the first
    copy went out through L{ServerInvite.respond}; this sends the others,
    at T1, 2*T1, ... capped at T2, until L{ack_received}. After 64*T1
    without an ACK it reports L{AckTimeout} (send a BYE). Over a reliable
    transport nothing is retransmitted, but the ACK is still awaited.

    Over UDP one timer does both: each C{retransmit} is started for the
    next interval or what is left of the 64*T1, whichever is shorter, and
    the one that ends the wait gives up instead of sending. An answered
    call (nearly every one) then starts and cancels one timer, not two."""

    def __init__(self, response: Response, timers: TimerConfig = TimerConfig(), reliable: bool = False) -> None:
        if not 200 <= response.code < 300:
            raise ValueError(f"TwoXXRetransmitter for a {response.code}")
        super().__init__(timers, reliable)
        self.response = response
        self._interval = timers.t1
        self._next = 0.0  # the delay the running retransmit timer was started with
        self._waited = 0.0  # the delays of the retransmit timers that fired

    def start(self) -> Output:
        self._check_started()
        self._goto(_WAITING)
        out: Output = []
        if self.reliable:
            self._start_timer(out, "give_up", self.timers.timeout)
        else:
            self._retransmit_in(out, min(self._interval, self.timers.timeout))
        return out

    def ack_received(self, ack: Optional[Request] = None) -> Output:
        if self.state is not _WAITING:
            return []
        return self._terminate([AckReceived(ack)])

    def _retransmit_in(self, out: Output, delay: float) -> None:
        self._next = delay
        self._start_timer(out, "retransmit", delay)

    def _on_timer(self, name: str) -> Output:
        out: Output = []
        if name == "retransmit":
            self._waited += self._next
            left = self.timers.timeout - self._waited
            if left <= 1e-9:  # 64*T1 are over (a sum of floats: not compared exactly)
                return self._terminate([AckTimeout()])
            self._interval = min(2 * self._interval, self.timers.t2)
            out.append(Send(self.response))
            self._retransmit_in(out, min(self._interval, left))
            return out
        if name == "give_up":
            return self._terminate([AckTimeout()])
        return out

    def transport_error(self) -> Output:
        if self.state is not _WAITING:
            return []
        return self._terminate([TransportError()])
