"""rtpengine's "ng" control protocol: a client the proxy uses as its NAT
helper, and a server that puts L{sipproxy.nat.relay.LocalRelay} behind it.

Wire format (rtpengine C{docs/ng_control_protocol.md}): one UDP datagram
per message, C{<cookie> <bencoded dictionary>}; the reply repeats the
cookie. Every request has C{command}; every reply has C{result} (C{ok},
C{pong} or C{error} with C{error-reason}). Keys may come in any order.

How it fits (one code path in the proxy): L{NgClient} is an
L{sipproxy.interfaces.INATHelper} just like C{LocalRelay}, so
L{sipproxy.nat.sessions.NATSessions} drives both the same way and rewrites
the SDP itself. C{allocate_sockets} sends the untouched SDP as an
C{offer} or C{answer} and reads only the new address, port and RTCP port
of each stream out of the SDP the relay returns; everything else the relay
may have changed in its copy (attributes it adds or drops) is ignored, so
the SDP the far side gets differs from what the UA sent only in the
addresses, ports and C{o=} version, whichever relay is behind. The
alternative -- making NATSessions speak offer/answer and giving LocalRelay
an ng-level face -- would have moved Net::SIP's keying (CSeq, one group
per answering dialog) out of the relay and into a translation layer.

Offer or answer: the first SDP of an INVITE transaction is the offer
(usually the INVITE's, side 0; with a late offer the 200's, side 1); the
other side's SDP in the same transaction is the answer. rtpengine wants
C{from-tag} to be the offerer's tag and C{to-tag} the answerer's, so the
tags are swapped when the offer came from the To party.

C{direction}: rtpengine reads it, for offer and answer alike, as [the
interface the SDP came from, the interface it goes to] (checked against
rtpengine 10.5: an answer with the offer's order gets the wrong address).
The client sends [incoming leg's IP, outgoing leg's IP]; start rtpengine
with one interface per leg, named by its address
(C{--interface=127.0.0.1/127.0.0.1 --interface=127.0.0.2/127.0.0.2}), or
turn C{direction} off for a single-interface relay (rtpengine logs a
warning per call for names it does not know). The server below reads a
direction entry that is an IP address as the address to bind on.

Flags sent: C{trust-address} (the proxy sends no C{received-from}; NAT is
handled by the relay's latching, not by guessing from the SIP source).

Closing: BYE sends C{delete} for the dialog. CANCEL and error finals send
C{delete} unless another transaction of the call has an active session:
then they end a re-INVITE, and deleting would cut the established call's
media. (Early media activated by a 183 does not count as another
transaction, so a CANCEL after early media still deletes.)

Requests are retransmitted (0.5 s, doubling) and time out after
C{timeout} seconds (3 s); a relay that does not answer fails the
allocation, which the proxy turns into C{503} with C{Retry-After}.
"""
from __future__ import annotations

import ipaddress
import os
from typing import Any, Optional, Sequence

from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import LoopingCall

from zope.interface import implementer

from sipproxy.observe.logsafe import SafeLogger
from sipproxy.sip.addresses import is_bare_ip_literal
from sipproxy.interfaces import INATHelper
from sipproxy.nat import bencode
from sipproxy.nat.sessions import SessionKey
from sipproxy.sip.sdp import MediaTarget, SDPError, SessionDescription, parse_sdp

__all__ = ["NgError", "NgTimeout", "NgClient", "NgServer", "parse_ng_address", "encode_message",
           "decode_message"]

log = SafeLogger()

DEFAULT_NG_PORT = 2223


#: What rtpengine is asked to do to an SDP on its way to a browser (a
#: party on a WebSocket leg) from a SIP phone: ICE, DTLS-SRTP with
#: feedback (the profile WebRTC requires), RTP and RTCP on one port, a=mid
#: on every media line, no SDES keys.
TO_BROWSER = {"ICE": "force", "transport-protocol": "UDP/TLS/RTP/SAVPF", "rtcp-mux": ["offer", "require"],
              "flags": ["generate-mid", "SDES-off"]}
#: ... and on its way from a browser to a SIP phone: plain RTP, RTCP on
#: its own port, no ICE candidates, no DTLS fingerprint.
TO_PHONE = {"ICE": "remove", "DTLS": "off", "transport-protocol": "RTP/AVP", "rtcp-mux": ["demux"]}
_WEBSOCKET = ("ws", "wss")


def webrtc_options(sender: str, receiver: str) -> dict[str, Any]:
    """The ng options that bridge WebRTC and plain RTP for an SDP sent by a
    party on a C{sender} leg to one on a C{receiver} leg (transports: udp,
    tcp, tls, ws, wss): empty unless exactly one of them is a browser."""
    if receiver in _WEBSOCKET and sender not in _WEBSOCKET:
        options = TO_BROWSER
    elif sender in _WEBSOCKET and receiver not in _WEBSOCKET:
        options = TO_PHONE
    else:
        return {}
    return {name: list(value) if isinstance(value, list) else value for name, value in options.items()}


def _leg_proto(party: str) -> str:
    """The transport of the leg facing a party, from a L{SessionKey}'s
    C{idfrom}/C{idto} (which end with that leg's key, C{proto:host:port})."""
    return party.rpartition(" ")[2].partition(":")[0]


class NgError(Exception):
    """The relay answered C{result: error} (or the request could not go out)."""


class NgTimeout(NgError):
    """The relay did not answer in time."""


#: The ng commands counted under their own name (others count as C{other}).
NG_COMMANDS = frozenset(("ping", "offer", "answer", "delete", "query", "list", "statistics"))


def ng_command_label(command: Optional[str]) -> str:
    """The metrics label of an ng command: bounded, whatever a peer sends."""
    command = (command or "").lower()
    return command if command in NG_COMMANDS else "other"


def parse_ng_address(text: str) -> tuple[str, int]:
    """C{udp:HOST:PORT} (or C{HOST:PORT}; IPv6 as C{[::1]:2223}) ->
    (host, port). HOST must be an IP address: no DNS lookups in the
    reactor thread.

    @raise ValueError: with a one-line reason.
    """
    rest = text.strip()
    if rest.lower().startswith("udp:"):
        rest = rest[4:]
    elif ":" in rest and rest.split(":", 1)[0].lower() in ("tcp", "tls", "http", "ws"):
        raise ValueError(f"{text!r}: only udp is supported for ng")
    if rest.startswith("["):
        host, sep, port_text = rest[1:].partition("]:")
        if not sep:
            raise ValueError(f"{text!r} is not udp:[IPV6]:PORT")
    else:
        host, sep, port_text = rest.rpartition(":")
        if not sep:
            raise ValueError(f"{text!r} is not udp:HOST:PORT")
        if ":" in host:
            raise ValueError(f"{text!r}: write an IPv6 address in brackets, udp:[{host}]:PORT")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{text!r}: {host!r} is not an IP address") from None
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"{text!r}: {port_text!r} is not a port (1-65535)")
    return host, int(port_text)


def encode_message(cookie: bytes, message: dict) -> bytes:
    """C{<cookie> <bencoded message>}."""
    return cookie + b" " + bencode.encode(message)


def decode_message(data: bytes) -> tuple[bytes, dict]:
    """(cookie, dictionary) of one datagram.

    @raise ValueError: (a L{bencode.BencodeError} or plain) when malformed.
    """
    cookie, sep, rest = data.partition(b" ")
    if not sep or not cookie:
        raise ValueError("no cookie")
    message = bencode.decode(rest)
    if not isinstance(message, dict):
        raise ValueError("the message is not a dictionary")
    return cookie, message


def _text(value: Any) -> Optional[str]:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _names(value: Any) -> list[str]:
    if isinstance(value, list):
        return [_text(v) or "" for v in value]
    return []


# -- client -------------------------------------------------------------------------------
class _ClientProtocol(DatagramProtocol):
    noisy = False

    def __init__(self, client: "NgClient") -> None:
        self.client = client

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.client._reply(data, addr)


class _Pending:
    __slots__ = ("deferred", "data", "timer", "interval", "deadline", "command")

    def __init__(self, deferred: Deferred, data: bytes, deadline: float, interval: float, command: str) -> None:
        self.deferred = deferred
        self.data = data
        self.deadline = deadline
        self.interval = interval
        self.timer: Any = None
        self.command = command


class _NgTransaction:
    """What the client knows about one INVITE transaction."""

    __slots__ = ("offer_side", "answered", "active", "time")

    def __init__(self, offer_side: int, now: float) -> None:
        self.offer_side = offer_side
        self.answered: set[str] = set()
        self.active: set[str] = set()
        self.time = now


class _NgCall:
    __slots__ = ("transactions", "activated", "time")

    def __init__(self, now: float) -> None:
        self.transactions: dict[tuple, _NgTransaction] = {}
        self.activated: set[tuple] = set()  # transactions whose session was activated
        self.time = now


@implementer(INATHelper)
class NgClient(Service):
    """An L{INATHelper} that drives a relay over the ng protocol (rtpengine,
    or C{twistd sipproxy --relay-only --ng ...}).

    @param reactor: for C{listenUDP} (and the clock if C{clock} is None).
    @param address: (host, port) of the relay's ng socket.
    @param timeout: seconds before a request without answer fails.
    @param retransmit: the first retransmission interval (doubles).
    @param direction: send C{direction} = [incoming leg IP, outgoing leg IP].
    @param flags: the C{flags} list sent with offer and answer.
    @param transaction_timeout: forget an INVITE transaction's state after
        this many idle seconds; C{call_timeout}: a call's.
    """

    name = "nat-ng-client"

    def __init__(
        self,
        reactor: Any,
        address: tuple[str, int],
        timeout: float = 3.0,
        retransmit: float = 0.5,
        direction: bool = True,
        flags: Sequence[str] = ("trust-address",),
        clock: Any = None,
        transaction_timeout: float = 180.0,
        call_timeout: float = 12 * 3600.0,
    ) -> None:
        self.reactor = reactor
        self.clock = clock if clock is not None else reactor
        self.address = (address[0], int(address[1]))
        self.timeout = timeout
        self.retransmit = retransmit
        self.direction = direction
        self.flags = list(flags)
        self.transaction_timeout = transaction_timeout
        self.call_timeout = call_timeout
        self.calls: dict[str, _NgCall] = {}
        self._pending: dict[bytes, _Pending] = {}
        self._prefix = os.urandom(4).hex()
        self._serial = 0
        self._port: Any = None
        self._loop: Optional[LoopingCall] = None
        # counters read by sipproxy.app.metrics, by command (ng_command_label)
        self.requests: dict[str, int] = {}
        self.timeouts: dict[str, int] = {}
        self.errors: dict[str, int] = {}

    # -- service -----------------------------------------------------------------
    def startService(self) -> None:
        super().startService()
        interface = "::" if ":" in self.address[0] else ""
        self._port = self.reactor.listenUDP(0, _ClientProtocol(self), interface=interface, maxPacketSize=65535)
        self._loop = LoopingCall(self.expire)
        self._loop.clock = self.clock
        self._loop.start(10.0, now=False).addErrback(lambda f: log.failure("ng client expiry stopped", f))

    def stopService(self) -> Any:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        pending, self._pending = self._pending, {}
        for item in pending.values():
            if item.timer is not None and item.timer.active():
                item.timer.cancel()
            item.deferred.errback(NgError("ng client stopped"))
        port, self._port = self._port, None
        super().stopService()
        if port is not None:
            return port.stopListening()
        return None

    # -- requests ----------------------------------------------------------------
    def command(self, message: dict) -> Deferred:
        """Send one ng request; a Deferred firing with the reply dictionary
        (C{result} ok or pong), failing with L{NgError} or L{NgTimeout}."""
        if self._port is None:
            return fail(NgError("ng client not started"))
        self._serial += 1
        cookie = f"{self._prefix}_{self._serial}".encode()
        command = _text(message.get("command")) or "?"
        label = ng_command_label(command)
        self.requests[label] = self.requests.get(label, 0) + 1
        d: Deferred = Deferred(lambda _: self._forget(cookie))
        pending = _Pending(d, encode_message(cookie, message), self.clock.seconds() + self.timeout,
                           self.retransmit, command)
        self._pending[cookie] = pending
        self._send(cookie)
        return d

    def ping(self) -> Deferred:
        return self.command({"command": "ping"})

    def _send(self, cookie: bytes) -> None:
        pending = self._pending.get(cookie)
        if pending is None or self._port is None:
            return
        now = self.clock.seconds()
        if now >= pending.deadline:
            del self._pending[cookie]
            label = ng_command_label(pending.command)
            self.timeouts[label] = self.timeouts.get(label, 0) + 1
            log.warn("ng {command} to {host}:{port} timed out", command=pending.command,
                     host=self.address[0], port=self.address[1])
            pending.deferred.errback(NgTimeout(
                f"no answer from the ng relay at {self.address[0]}:{self.address[1]} in {self.timeout:g} s"))
            return
        try:
            self._port.write(pending.data, self.address)
        except Exception as e:  # a send error is retried like a lost datagram
            log.info("sending ng {command} failed: {error}", command=pending.command, error=e)
        if cookie not in self._pending:
            return  # answered at once
        delay = min(pending.interval, max(pending.deadline - now, 0.0))
        pending.interval *= 2
        pending.timer = self.clock.callLater(delay, self._send, cookie)

    def _forget(self, cookie: bytes) -> None:
        pending = self._pending.pop(cookie, None)
        if pending is not None and pending.timer is not None and pending.timer.active():
            pending.timer.cancel()

    def _reply(self, data: bytes, addr: Any) -> None:
        try:
            cookie, message = decode_message(data)
        except ValueError as e:
            log.info("malformed ng reply from {addr}: {error}", addr=addr, error=e)
            return
        pending = self._pending.pop(cookie, None)
        if pending is None:
            return  # an answer to a retransmission we already have
        if pending.timer is not None and pending.timer.active():
            pending.timer.cancel()
        result = _text(message.get("result"))
        if result in ("ok", "pong"):
            pending.deferred.callback(message)
        else:
            reason = _text(message.get("error-reason")) or f"result {result!r}"
            label = ng_command_label(pending.command)
            self.errors[label] = self.errors.get(label, 0) + 1
            pending.deferred.errback(NgError(f"ng {pending.command} failed: {reason}"))

    # -- INATHelper ----------------------------------------------------------------
    def _call(self, call_id: str) -> _NgCall:
        now = self.clock.seconds()
        call = self.calls.get(call_id)
        if call is None:
            call = self.calls[call_id] = _NgCall(now)
        call.time = now
        return call

    def allocate_sockets(self, session: SessionKey, side: int, local_ip: str, sdp: SessionDescription) -> Deferred:
        """Send the SDP as offer or answer; a Deferred of the targets (None
        on failure, which the proxy answers with 503)."""
        call = self._call(session.call_id)
        tx = call.transactions.get(session.transaction)
        if tx is None:
            tx = call.transactions[session.transaction] = _NgTransaction(side, self.clock.seconds())
        tx.time = self.clock.seconds()
        is_offer = side == tx.offer_side
        # rtpengine: from-tag is the offerer's, to-tag the answerer's; a
        # party without a tag (RFC 2543) is named by its address of record
        from_tag = session.from_tag or session.uri_from
        to_tag = session.to_tag or (None if is_offer and tx.offer_side == 0 else session.uri_to)
        if tx.offer_side == 1:
            from_tag, to_tag = to_tag or session.uri_to, from_tag
        message: dict[str, Any] = {
            "command": "offer" if is_offer else "answer",
            "call-id": session.call_id,
            "from-tag": from_tag,
            "sdp": bytes(sdp),
        }
        if to_tag:
            message["to-tag"] = to_tag
        if self.flags:
            message["flags"] = list(self.flags)
        sender_key, receiver_key = (session.idfrom, session.idto) if side == 0 else (session.idto, session.idfrom)
        bridging = webrtc_options(_leg_proto(sender_key), _leg_proto(receiver_key))
        if bridging:
            message["flags"] = [*message.get("flags", []), *bridging.pop("flags", [])]
            message.update(bridging)
        if self.direction:
            sender, receiver = (session.from_leg, session.to_leg) if side == 0 else (session.to_leg, session.from_leg)
            if sender and receiver:
                message["direction"] = [sender, receiver]
        d = self.command(message)

        def done(reply: dict) -> Optional[list]:
            targets = self._targets(sdp, reply)
            if targets is not None and not is_offer:
                tx.answered.add(session.idto)
            return targets

        def failed(failure: Any) -> None:
            log.info("ng {command} for {call_id} failed: {reason}", command=message["command"],
                     call_id=session.call_id, reason=failure.getErrorMessage())
            return None

        return d.addCallbacks(done, failed)

    @staticmethod
    def _targets(sdp: SessionDescription, reply: dict) -> Optional[list[Optional[MediaTarget]]]:
        raw = reply.get("sdp")
        if not isinstance(raw, bytes):
            log.info("ng reply without sdp")
            return None
        try:
            theirs = parse_sdp(raw)
        except SDPError as e:
            log.info("ng reply with malformed sdp: {error}", error=e)
            return None
        if len(theirs.media) != len(sdp.media):
            log.info("ng reply has {n} media lines for {m}", n=len(theirs.media), m=len(sdp.media))
            return None
        targets: list[Optional[MediaTarget]] = []
        for ours, new in zip(sdp.media, theirs.media):
            address = new.address
            if ours.port == 0 or new.port == 0 or not is_bare_ip_literal(address) or ours.is_held_or_inactive and (
                    ours.address is None or ours.address in ("0.0.0.0", "::")):
                targets.append(None)
                continue
            rtcp_port = None
            rtcp = new.rtcp
            if rtcp is not None and (rtcp[1] is None or rtcp[1] == address):
                rtcp_port = rtcp[0]
            targets.append(MediaTarget(address, new.port, rtcp_port))  # type: ignore[arg-type]
        return targets

    def activate_session(self, session: SessionKey, param: Any = None) -> Optional[int]:
        """rtpengine forwards once the answer is in: 1 the first time both
        sides are known, -1 after, None when the answer is missing."""
        call = self.calls.get(session.call_id)
        tx = call.transactions.get(session.transaction) if call else None
        if tx is None or session.idto not in tx.answered:
            return None
        if session.idto in tx.active:
            return -1
        tx.active.add(session.idto)
        call.activated.add(session.transaction)  # type: ignore[union-attr]
        return 1

    def close_session(self, session: SessionKey, reason: Optional[str] = None) -> Optional[Deferred]:
        """C{delete} the dialog (BYE), or the call after a CANCEL or error
        final unless another transaction of the call has an active session
        (a failed re-INVITE); a Deferred of the count."""
        call = self.calls.get(session.call_id)
        if session.cseq is not None:
            if call is None:
                return None
            tx = call.transactions.pop(session.transaction, None)
            call.activated.discard(session.transaction)
            if tx is None or call.activated:
                return None
        self.calls.pop(session.call_id, None)
        message: dict[str, Any] = {"command": "delete", "call-id": session.call_id}
        if session.from_tag:
            message["from-tag"] = session.from_tag
            if session.to_tag and session.cseq is None:
                message["to-tag"] = session.to_tag
        return self.command(message).addCallback(lambda reply: 0 if reply.get("warning") else 1)

    def expire(self, now: Optional[float] = None) -> list:
        """Forget idle transactions and calls (the relay expires its own)."""
        if now is None:
            now = self.clock.seconds()
        for call_id, call in list(self.calls.items()):
            for key, tx in list(call.transactions.items()):
                if tx.time < now - self.transaction_timeout:
                    del call.transactions[key]
            if call.time < now - self.call_timeout or (not call.transactions and not call.activated):
                del self.calls[call_id]
        return []


# -- server -------------------------------------------------------------------------------
class _ServerProtocol(DatagramProtocol):
    noisy = False

    def __init__(self, server: "NgServer") -> None:
        self.server = server

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        reply = self.server.handle(data)
        if reply is not None and self.transport is not None:
            self.transport.write(reply, addr)


class NgServer(Service):
    """Answers ng C{ping}, C{offer}, C{answer}, C{delete} and C{query} with a
    L{LocalRelay} behind.

    Mapping to Net::SIP's keys: an offer from tag F is side 0 of
    transaction (Call-ID, n, F) where n counts F's distinct offers (a
    repeated identical offer is a retransmission and gets the same ports);
    an answer with to-tag T is side 1 of the same transaction for T, and
    activates the session. C{delete} ends the dialog (both tags), every
    session of one tag, or the whole call. Unknown options (C{ICE},
    C{replace}, C{received-from}, ...) are ignored.

    @param relay: the L{sipproxy.nat.relay.LocalRelay}.
    @param address: (host, port) to listen on.
    @param rtp_address: where to bind relay ports when C{direction} names
        no IP address; default the relay's C{address}, else C{address}'s host.
    """

    name = "ng-server"

    def __init__(self, relay: Any, reactor: Any, address: tuple[str, int], rtp_address: Optional[str] = None,
                 clock: Any = None) -> None:
        self.relay = relay
        self.reactor = reactor
        self.clock = clock if clock is not None else reactor
        self.address = (address[0], int(address[1]))
        host = self.address[0]
        self.rtp_address = rtp_address or relay.address or (host if not ipaddress.ip_address(host).is_unspecified
                                                            else None)
        self.port: Any = None
        # (call-id, from-tag) -> [generation, sdp, local address of the offerer's side, time]
        self._offers: dict[tuple[str, str], list] = {}
        self._replies: list[dict[bytes, bytes]] = [{}, {}]
        self._replies_rotated = 0.0
        #: requests handled, by (command label, result): counted for metrics
        self.handled: dict[tuple[str, str], int] = {}

    def privilegedStartService(self) -> None:
        if self.port is None:
            self.port = self.reactor.listenUDP(self.address[1], _ServerProtocol(self), interface=self.address[0],
                                               maxPacketSize=65535)  # SDP with ICE candidates gets big
            log.info("ng control protocol on udp:{host}:{port}", host=self.address[0], port=self.address[1])
        super().privilegedStartService()

    def startService(self) -> None:
        self.privilegedStartService()
        super().startService()

    def stopService(self) -> Any:
        super().stopService()
        port, self.port = self.port, None
        if port is not None:
            return port.stopListening()
        return None

    # -- requests -------------------------------------------------------------------------
    def handle(self, data: bytes) -> Optional[bytes]:
        """The reply to one datagram (None: nothing to answer)."""
        cookie, sep, _ = data.partition(b" ")
        if not sep or not cookie:
            return None
        cached = self._cached(cookie)
        if cached is not None:
            return cached
        message: dict = {}
        try:
            _, message = decode_message(data)
            reply = self.dispatch(message)
        except ValueError as e:
            reply = {"result": "error", "error-reason": f"malformed request: {e}"}
        except Exception as e:
            log.failure("ng request failed")
            reply = {"result": "error", "error-reason": f"internal error: {e}"}
        key = (ng_command_label(_text(message.get("command"))), _text(reply.get("result")) or "?")
        self.handled[key] = self.handled.get(key, 0) + 1
        encoded = encode_message(cookie, reply)
        self._remember(cookie, encoded)
        return encoded

    def _cached(self, cookie: bytes) -> Optional[bytes]:
        for generation in self._replies:
            if cookie in generation:
                return generation[cookie]
        return None

    def _remember(self, cookie: bytes, reply: bytes) -> None:
        now = self.clock.seconds()
        if now - self._replies_rotated > 30.0 or len(self._replies[0]) > 10000:
            self._replies = [{}, self._replies[0]]
            self._replies_rotated = now
            # forget offers of calls the relay has expired meanwhile
            for item in [k for k, state in self._offers.items()
                         if k[0] not in self.relay.calls and state[3] < now - 30.0]:
                del self._offers[item]
        self._replies[0][cookie] = reply

    def dispatch(self, message: dict) -> dict:
        """The reply dictionary for one request dictionary."""
        command = (_text(message.get("command")) or "").lower()
        handler = {"ping": self._ping, "offer": self._offer, "answer": self._answer,
                   "delete": self._delete, "query": self._query}.get(command)
        if handler is None:
            return {"result": "error", "error-reason": f"Unrecognized command {command!r}"}
        return handler(message)

    @staticmethod
    def _ping(message: dict) -> dict:
        return {"result": "pong"}

    def _required(self, message: dict, *names: str) -> list[str]:
        values = []
        for name in names:
            value = _text(message.get(name))
            if not value:
                raise ValueError(f"no {name}")
            values.append(value)
        return values

    def _local(self, direction: list[str], index: int, fallback: Optional[str]) -> Optional[str]:
        if len(direction) > index and is_bare_ip_literal(direction[index]):
            return direction[index]
        return fallback or self.rtp_address

    @staticmethod
    def _key(call_id: str, generation: int, from_tag: str, to_tag: Optional[str]) -> SessionKey:
        return SessionKey(call_id, generation, f"tag={from_tag}", f"tag={to_tag or ''}",
                          from_tag, to_tag or "", from_tag, to_tag)

    def _rewrite(self, message: dict, key: SessionKey, side: int, local: Optional[str]) -> dict:
        raw = message.get("sdp")
        if not isinstance(raw, bytes):
            return {"result": "error", "error-reason": "no sdp"}
        try:
            sdp = parse_sdp(raw)
        except SDPError as e:
            return {"result": "error", "error-reason": f"Failed to parse SDP: {e}"}
        if local is None:
            return {"result": "error", "error-reason": "no local address for media (give --rtp-address)"}
        targets = self.relay.allocate_sockets(key, side, local, sdp)
        if targets is None:
            return {"result": "error", "error-reason": "Ran out of ports"}
        sdp.replace_media_addresses(targets)
        return {"result": "ok", "sdp": bytes(sdp)}

    def _offer(self, message: dict) -> dict:
        call_id, from_tag = self._required(message, "call-id", "from-tag")
        to_tag = _text(message.get("to-tag"))
        direction = _names(message.get("direction"))
        raw = message.get("sdp")
        state = self._offers.get((call_id, from_tag))
        if state is None or state[1] != raw:
            generation = state[0] + 1 if state is not None else 1
            state = self._offers[(call_id, from_tag)] = [generation, raw, self._local(direction, 0, None),
                                                         self.clock.seconds()]
        reply = self._rewrite(message, self._key(call_id, state[0], from_tag, to_tag), 0,
                              self._local(direction, 1, None))
        return reply

    def _answer(self, message: dict) -> dict:
        call_id, from_tag, to_tag = self._required(message, "call-id", "from-tag", "to-tag")
        state = self._offers.get((call_id, from_tag))
        if state is None:
            return {"result": "error", "error-reason": "Unknown call-id"}
        direction = _names(message.get("direction"))
        key = self._key(call_id, state[0], from_tag, to_tag)
        reply = self._rewrite(message, key, 1, self._local(direction, 1, state[2]))
        if reply.get("result") == "ok":
            self.relay.activate_session(key)
        return reply

    def _delete(self, message: dict) -> dict:
        (call_id,) = self._required(message, "call-id")
        from_tag = _text(message.get("from-tag"))
        to_tag = _text(message.get("to-tag"))
        known = call_id in self.relay.calls
        if from_tag and to_tag:
            key = self._key(call_id, 0, from_tag, to_tag)
            self.relay.close_dialog(call_id, key.idfrom, key.idto, "delete")
        elif from_tag:
            self.relay.close_party(call_id, self._key(call_id, 0, from_tag, None).idfrom, "delete")
        else:
            self.relay.close_call(call_id, "delete")
        if not from_tag:
            for item in [k for k in self._offers if k[0] == call_id]:
                del self._offers[item]
        else:
            self._offers.pop((call_id, from_tag), None)
            if to_tag:
                self._offers.pop((call_id, to_tag), None)
        reply: dict[str, Any] = {"result": "ok"}
        if not known:
            reply["warning"] = "Call-ID not found or tags didn't match"
        return reply

    def _query(self, message: dict) -> dict:
        (call_id,) = self._required(message, "call-id")
        info = self.relay.describe(call_id)
        if info is None:
            return {"result": "error", "error-reason": "Unknown call-id"}
        totals = {"RTP": {"packets": 0, "bytes": 0, "errors": 0}, "RTCP": {"packets": 0, "bytes": 0, "errors": 0}}
        tags: dict[str, Any] = {}
        for group in info["groups"]:
            medias = []
            for index, media in enumerate(group["media"], start=1):
                streams = []
                for n, port in enumerate(media["ports"]):
                    kind = "RTP" if n % 2 == 0 else "RTCP"
                    for name in ("packets", "bytes", "errors"):
                        totals[kind][name] += port[name]
                    stream: dict[str, Any] = {
                        "local port": port["port"], "local address": media["address"],
                        "stats": {"packets": port["packets"], "bytes": port["bytes"], "errors": port["errors"]},
                    }
                    if port["target"]:
                        stream["endpoint"] = {"address": port["target"][0], "port": port["target"][1]}
                    streams.append(stream)
                medias.append({"index": index, "streams": streams})
            tag = group["id"].split("=", 1)[-1]
            tags.setdefault(tag, {"tag": tag, "created": int(group["created"]), "medias": []})["medias"].extend(medias)
        sessions = [{k: (int(v) if isinstance(v, float) else v) for k, v in s.items() if v is not None}
                    for s in info["sessions"]]
        return {"result": "ok", "totals": totals, "tags": tags, "sessions": sessions,
                "sockets": info["sockets"]}
