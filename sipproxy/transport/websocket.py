"""WebSocket legs (RFC 7118): SIP for browsers, on autobahn (an edge module).

A C{ws:} or C{wss:} leg is a stream leg whose connections speak the
WebSocket protocol with the C{sip} subprotocol: each WebSocket message,
text or binary, carries exactly one SIP message, so nothing is framed by
Content-Length. autobahn does the HTTP upgrade and the frames; this module
only adds what SIP needs:

- the handshake must offer the C{sip} subprotocol, else it is refused
  with 400 (a client that did not ask for SIP cannot be talking SIP);
- a browser's Via names an invented C{.invalid} host, so the dispatcher
  forces C{rport} on requests that come over a WebSocket: responses find
  their connection by the address it came from;
- a browser cannot be connected to, so a flow to a WebSocket whose
  connection is gone has failed (the proxy answers 430); other sends to a
  WebSocket address with no connection open one, as a client (towards
  another proxy's WebSocket server);
- the keep-alive the flow keeper sends over connections (a CRLF pair)
  goes out as a WebSocket ping, which browsers answer by themselves.

Connections share the L{StreamLeg} machinery of TCP and TLS legs: the
admission in front of the socket (connections per IP and in total), the
write queue bound, the send, read and idle timeouts of the sweep, and the
rate-limited log about hostile peers. autobahn's own log lines (one per
bad frame, unthrottled) are silenced; the leg writes one line per source
per interval instead.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Union

from autobahn.twisted.websocket import (WebSocketClientFactory, WebSocketClientProtocol, WebSocketServerFactory,
                                        WebSocketServerProtocol)
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest, ConnectionResponse
from twisted.internet import protocol
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (IAddress, IConnector, IDelayedCall, IReactorTime,
                                         ITCPTransport)
from twisted.python.failure import Failure
from zope.interface import implementer

from sipproxy.interfaces import ILeg
from sipproxy.observe.logsafe import SafeLogger
from sipproxy.transport.legs import (MAX_BODY, MAX_HEADER, CurrentTLS, FlowControlled, StreamLeg, TLSOptions,
                                     _address)
from sipproxy.transport.stream_guard import ConnectionGuard, StreamLimits
from sipproxy.sip.uri import format_host_port

__all__ = ["WebSocketLeg", "SecureWebSocketLeg", "WebSocketConnection", "SUBPROTOCOL", "WEBSOCKET_PROTOS",
           "make_websocket_leg"]

log = SafeLogger()

#: The subprotocol a SIP WebSocket handshake must name (RFC 7118 4).
SUBPROTOCOL = "sip"
WEBSOCKET_PROTOS = ("ws", "wss")
#: One SIP message per WebSocket message: the stream legs' limits, together.
MAX_MESSAGE = MAX_HEADER + MAX_BODY
_PING = b"\r\n\r\n"


class _Quiet:
    """autobahn's logger, silenced: it writes a line for every bad frame
    of every peer, and a traceback for some; the leg logs instead."""

    def _ignore(self, *args: object, **kwargs: object) -> None:
        return None

    trace = debug = info = warn = warning = error = critical = failure = _ignore


_QUIET = _Quiet()


class _Timer:
    """autobahn's timers (handshake and ping timeouts) on the leg's clock,
    one delayed call each: autobahn batches them into buckets whose
    delayed call outlives a cancelled timeout (and a stopped leg)."""

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock

    def call_later(self, delay: float, function: Callable[..., Any], *args: Any, **kwargs: Any) -> "_Call":
        return _Call(self.clock.callLater(delay, function, *args, **kwargs))


class _Call:
    def __init__(self, call: IDelayedCall) -> None:
        self.call = call

    def cancel(self) -> None:
        if self.call.active():
            self.call.cancel()


class WebSocketConnection(FlowControlled):
    """One WebSocket carrying SIP, as its leg sees it: the same
    bookkeeping as a TCP connection (so the leg's sweep and stop apply),
    around the autobahn protocol that moves the frames.

    Messages written before the WebSocket is open wait (bounded by
    C{write_queue_max}); a CRLF pair is sent as a ping."""

    def __init__(self, leg: "WebSocketLeg", outbound: bool = False) -> None:
        self.leg = leg
        self.outbound = outbound
        self.ws: Optional[_SIPWebSocketMixin] = None
        self.peer: Optional[tuple[str, int]] = None
        self.last_active = 0.0
        self.partial_since: Optional[float] = None
        self.paused_since: Optional[float] = None
        self.closing_since: Optional[float] = None
        self.open = False
        self._queued = 0
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._counted = False
        self._aborted = False
        self.connect_errors: list[Callable[[str], Any]] = []
        self._lost_waiters: list[Deferred] = []

    @property
    def transport(self) -> Optional[ITCPTransport]:
        return self.ws.transport if self.ws is not None else None

    # events from the autobahn protocol ---------------------------------------------
    def made(self, ws: "_SIPWebSocketMixin") -> None:
        """The TCP (or TLS) connection exists; the handshake begins and
        must end within the read timeout."""
        self.ws = ws
        self.peer = _address(ws.transport.getPeer())
        self.last_active = self.partial_since = self.leg.clock.seconds()
        ws.transport.registerProducer(self, True)
        self._counted = True
        self.leg.connection_made(self)  # type: ignore[arg-type]

    def opened(self) -> None:
        self.open = True
        self.partial_since = None
        self.last_active = self.leg.clock.seconds()
        self.connect_errors = []
        pending, self._pending, self._pending_size = self._pending, [], 0
        for data in pending:
            self.write(data)

    def received(self, payload: bytes) -> None:
        leg = self.leg
        if not payload.strip(b"\r\n"):  # a CRLF keep-alive (SIP.js sends them): answer as over TCP
            if payload == _PING:
                self.write(b"\r\n")
            return
        leg.dispatcher.message_received(payload, leg, self.peer, websocket=True)

    def lost(self, reason: Optional[str]) -> None:
        if reason and not self._aborted and self.peer is not None:
            self.leg.source_log.info(self.peer[0], "leg {leg}: WebSocket from {peer} closed: {reason}",
                                     leg=self.leg.key, peer=self.peer, reason=reason)
        if not self.open and self.connect_errors:
            reports, self.connect_errors = self.connect_errors, []
            for report in reports:
                report(f"WebSocket to {self.peer} failed: {reason or 'closed before opening'}")
        if self._counted:
            self._counted = False
            self.leg.connection_lost(self)  # type: ignore[arg-type]
        self.open = False
        self._fire_lost_waiters()

    # writing ----------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if self._aborted or self.closing_since is not None:
            return
        limit = self.leg.limits.write_queue_max
        if not self.open:
            self._pending_size += len(data)
            if self._pending_size > limit:
                self._pending_size -= len(data)
                self.leg.source_log.warn(self.leg.host, "leg {leg}: {size} octets wait for a WebSocket still "
                                         "being opened; dropped {dropped} more", leg=self.leg.key,
                                         size=self._pending_size, dropped=len(data))
                return
            self._pending.append(data)
            return
        ws = self.ws
        assert ws is not None
        self.last_active = self.leg.clock.seconds()
        if self.paused_since is not None:
            self._queued += len(data)
            if self._queued > limit:
                self.abort(f"the peer does not read: more than {limit} octets queued (--tcp-conn-wq-max)")
                return
        try:
            if data == _PING:
                ws.sendPing()
            else:
                # text frames, as browsers send; binary for what is not UTF-8 (RFC 7118 5)
                ws.sendMessage(data, isBinary=not _is_utf8(data))
        except Exception as e:  # autobahn refuses: the peer began closing, or the message is too large
            self.leg.source_log.warn(self.peer[0] if self.peer else "?", "leg {leg}: cannot send {size} octets "
                                     "to {peer}: {reason}", leg=self.leg.key, size=len(data), peer=self.peer,
                                     reason=f"{type(e).__name__}: {e}"[:200])

    # closing ----------------------------------------------------------------------------
    def close(self) -> None:
        """A WebSocket closing handshake (code 1000); the sweep aborts the
        connection if it is not gone within the send timeout."""
        transport = self.transport
        if transport is None or self._aborted or self.closing_since is not None:
            return
        self.closing_since = self.leg.clock.seconds()
        transport.unregisterProducer()
        ws = self.ws
        if self.open and ws is not None:
            ws.sendClose(1000)
        else:
            transport.loseConnection()

    def abort(self, reason: str) -> None:
        if self._aborted:
            return
        self._aborted = True
        self.leg.source_log.warn(self.peer[0] if self.peer else "?", "leg {leg}: closing WebSocket from "
                                 "{peer}: {reason}", leg=self.leg.key, peer=self.peer, reason=reason)
        if self.transport is not None:
            self.transport.abortConnection()

    @property
    def closed(self) -> bool:
        return self._aborted or self.closing_since is not None or (
            self.transport is not None and bool(self.transport.disconnecting))


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class _SIPWebSocketMixin:
    """What the server and client protocols share: they report to a
    L{WebSocketConnection} and bound the opening handshake's size."""

    log = _QUIET
    conn: WebSocketConnection
    # provided by autobahn's protocols
    transport: ITCPTransport
    state: int
    data: bytes
    inside_message: bool
    STATE_CONNECTING: int
    STATE_OPEN: int
    wasNotCleanReason: Optional[str]
    sendPing: Callable[..., None]
    sendMessage: Callable[..., None]
    sendClose: Callable[..., None]

    def connectionMade(self) -> None:
        super().connectionMade()  # type: ignore[misc]
        self.conn.made(self)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        _cancel_timeouts(self)
        super().connectionLost(reason)  # type: ignore[misc]

    def dataReceived(self, data: bytes) -> None:
        conn = self.conn
        if conn._aborted:
            return
        now = conn.last_active = conn.leg.clock.seconds()
        if self.state == self.STATE_CONNECTING and len(self.data) + len(data) > MAX_HEADER:
            conn.abort(f"opening handshake larger than {MAX_HEADER} octets")
            return
        try:
            super().dataReceived(data)  # type: ignore[misc]
        except Exception as e:  # autobahn fails the connection itself; this is what it did not expect
            conn.abort(f"undecodable WebSocket data ({type(e).__name__})")
            return
        if self.state == self.STATE_OPEN:
            if self.inside_message or self.data:
                if conn.partial_since is None:
                    conn.partial_since = now  # a message begins: it must be whole within the read timeout
            else:
                conn.partial_since = None

    def onOpen(self) -> None:
        self.conn.opened()

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.conn.received(payload)

    def onClose(self, wasClean: bool, code: Optional[int], reason: Optional[str]) -> None:
        if wasClean and code in (1000, 1001, None):
            why = None
        else:
            why = self.wasNotCleanReason or (f"code {code}: {reason}" if code else "not closed cleanly")
        self.conn.lost(why)


class _ServerProtocol(_SIPWebSocketMixin, WebSocketServerProtocol):
    def onConnect(self, request: ConnectionRequest) -> str:
        if SUBPROTOCOL not in request.protocols:
            raise ConnectionDeny(ConnectionDeny.BAD_REQUEST, "the WebSocket subprotocol 'sip' is required "
                                 "(RFC 7118)")
        return SUBPROTOCOL


class _ClientProtocol(_SIPWebSocketMixin, WebSocketClientProtocol):
    def onConnect(self, response: ConnectionResponse) -> None:
        if response.protocol != SUBPROTOCOL:
            self.conn.abort(f"the server did not accept the subprotocol 'sip' (it said {response.protocol!r})")


class _ServerFactory(WebSocketServerFactory):
    log = _QUIET
    noisy = False

    def __init__(self, leg: "WebSocketLeg") -> None:
        super().__init__(protocols=[SUBPROTOCOL], server="sipproxy")
        self.leg = leg
        _set_options(self, leg.limits, leg.clock)

    def buildProtocol(self, addr: IAddress) -> _ServerProtocol:
        proto = _ServerProtocol()
        proto.factory = self
        proto.conn = WebSocketConnection(self.leg)
        return proto


class _OutboundFactory(WebSocketClientFactory):
    log = _QUIET
    noisy = False

    def __init__(self, leg: "WebSocketLeg", addr: tuple[str, int], conn: WebSocketConnection) -> None:
        scheme = "wss" if leg.proto == "wss" else "ws"
        super().__init__(f"{scheme}://{format_host_port(addr[0], addr[1])}/", protocols=[SUBPROTOCOL],
                         useragent="sipproxy")
        self.leg = leg
        self.addr = addr
        self.conn = conn
        _set_options(self, leg.limits, leg.clock)

    def buildProtocol(self, addr: IAddress) -> _ClientProtocol:
        proto = _ClientProtocol()
        proto.factory = self
        proto.conn = self.conn
        return proto

    def clientConnectionFailed(self, connector: IConnector, reason: Failure) -> None:
        self.leg.connect_failed(self.addr, self.conn, reason)  # type: ignore[arg-type]


def _cancel_timeouts(ws: object) -> None:
    """Cancel what autobahn leaves scheduled when a connection is gone
    (its closing handshake's timeout outlives the connection)."""
    for name in ("closeHandshakeTimeoutCall", "serverConnectionDropTimeoutCall"):
        call = getattr(ws, name, None)
        if call is not None:
            call.cancel()
            setattr(ws, name, None)


def _set_options(factory: Union[WebSocketServerFactory, WebSocketClientFactory], limits: StreamLimits,
                 clock: IReactorTime) -> None:
    """The stream limits, in autobahn's terms; pings keep a quiet but
    live browser from the idle timeout, and find a dead one."""
    factory._batched_timer = _Timer(clock)
    factory.setProtocolOptions(
        maxFramePayloadSize=MAX_MESSAGE, maxMessagePayloadSize=MAX_MESSAGE,
        openHandshakeTimeout=limits.read_timeout, closeHandshakeTimeout=limits.send_timeout,
        autoPingInterval=limits.idle_timeout / 2, autoPingTimeout=limits.send_timeout,
        perMessageCompressionAccept=lambda offers: None)  # no deflate: size limits stay what they say


@implementer(ILeg)
class WebSocketLeg(StreamLeg):
    """A C{ws:} leg: a WebSocket server for browsers and SIP WebSocket
    clients, and a WebSocket client when the proxy sends to a WebSocket
    address it has no connection to."""

    proto = "ws"

    def _server_factory(self) -> protocol.Factory:
        return _ServerFactory(self)

    def _connect(self, addr: tuple[str, int]) -> WebSocketConnection:  # type: ignore[override]
        conn = WebSocketConnection(self, outbound=True)
        self.connections[addr] = conn  # type: ignore[assignment]
        self._dial(addr, _OutboundFactory(self, addr, conn))
        return conn

    def add_alias(self, peer: tuple[str, int], alias: tuple[str, int]) -> None:
        """Nothing: a WebSocket client's Via names no address (RFC 7118
        5.2); its requests carry rport, forced by the dispatcher."""

    def has_flow(self, addr: tuple[str, int]) -> bool:
        """A WebSocket client is reached over its own connection only."""
        conn = self.connections.get(addr)
        return conn is not None and not conn.closed


@implementer(ILeg)
class SecureWebSocketLeg(WebSocketLeg):
    """A C{wss:} leg: WebSocket over TLS, with the certificates of TLS
    legs (C{--tls-cert}/C{--tls-key})."""

    proto = "wss"

    def __init__(self, host: str, port: int = 443, idle_timeout: Optional[float] = None,
                 reuse_port: bool = False, tls: Optional[TLSOptions] = None, limits: Optional[StreamLimits] = None,
                 guard: Optional[ConnectionGuard] = None) -> None:
        if tls is None:
            raise ValueError("a wss leg needs TLSOptions (a certificate and key)")
        self.tls = tls
        super().__init__(host, port, idle_timeout, reuse_port, limits=limits, guard=guard)

    def _server_factory(self) -> protocol.Factory:
        from twisted.protocols.tls import TLSMemoryBIOFactory

        return TLSMemoryBIOFactory(CurrentTLS(self), False, _ServerFactory(self))

    def _client_factory(self, factory: protocol.ClientFactory) -> protocol.ClientFactory:
        from twisted.protocols.tls import TLSMemoryBIOFactory

        return TLSMemoryBIOFactory(CurrentTLS(self), True, factory)

    def set_tls(self, tls: TLSOptions) -> None:
        """New certificates (a reload) for new connections; open ones keep theirs."""
        self.tls = tls


def make_websocket_leg(proto: str, host: str, port: int, **stream: Any) -> WebSocketLeg:
    """The leg for a C{ws:} or C{wss:} specification (see
    L{sipproxy.transport.legs.make_leg})."""
    if proto == "wss":
        return SecureWebSocketLeg(host, port, **stream)
    stream.pop("tls", None)
    return WebSocketLeg(host, port, **stream)
