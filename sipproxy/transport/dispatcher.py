"""The dispatcher: owns the legs, parses what they receive, stamps it,
hands it to one receiver, and sends what the SIP logic decides (an edge
module).

Malformed input never reaches the receiver: a request that can still be
addressed gets a 400 (505 for an unknown version) naming the reason, the
rest is dropped, each with one log line. No exception from one packet
reaches the reactor.
"""
from __future__ import annotations

import ipaddress
import socket
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

from twisted.internet.defer import Deferred, fail, succeed

from zope.interface import implementer

from sipproxy.observe.counters import OTHER, DropCounts, method_counts, method_label, status_counts
from sipproxy.observe.logsafe import SafeLogger
from sipproxy.observe.logfields import address_fields, host_port, message_fields
from sipproxy.transport.message_log import MessageLog
from sipproxy.sip.bounded import BoundedCache, CacheSet
from sipproxy.registrar.location import WallClock
from sipproxy.transport.source_log import SourceLog
from sipproxy.interfaces import ICapture, IDispatcher, IHopResolver, IHostResolver, ILeg, IReceiver
from sipproxy.sip.message import Message, ParseError, Request, Response, parse
from sipproxy.transport.resolver import DNSResolver, DestinationBlocklist, ResolutionFailed
from sipproxy.transport.rfc3263 import Destination
from sipproxy.proxy.routing import Hop, RoutingError, is_unicast, request_hop, response_hop
from sipproxy.sip.addresses import DEFAULT_PORTS
from sipproxy.sip.stateless import stateless_answer, stateless_tag
from sipproxy.sip.uri import URI

__all__ = ["Dispatcher", "Target", "stamp_via", "local_address_for"]

log = SafeLogger()

Target = tuple[Any, tuple[str, int]]  # (leg, (host, port))


def stamp_via(request: Request, source: tuple[str, int]) -> None:
    """Add C{received} (and fill C{rport}) on the top Via as RFC 3581 and
    RFC 3261 18.2.1 say: received when the sent-by host is not the source
    address, rport when the sender asked for it."""
    via = request.top_via()
    if via is None:
        return
    host, port = source
    wants_rport = "rport" in str(via).lower() and via.param("rport") == ""
    if not wants_rport and _same_host(via.host, host):
        return
    if wants_rport:
        via.set_param("rport", str(port))
    via.set_param("received", host)
    request.set_top_via(via)


def _want_rport(request: Request) -> None:
    """Ask for rport on the top Via of a request from a WebSocket client:
    its sent-by is an invented name (RFC 7118 5.2), and its responses must
    find the connection by the address it came from."""
    via = request.top_via()
    if via is not None and via.param("rport") is None:
        via.set_param("rport", None)  # a bare ;rport, which stamp_via fills in
        request.set_top_via(via)


def _same_host(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return False


def local_address_for(ip: str) -> Optional[str]:
    """The source address the kernel would use to reach C{ip} (a connected
    UDP socket sends nothing; Net::SIP's laddr4dst). Not remembered here:
    the L{Dispatcher} remembers the answers, and forgets them when its legs
    change."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    address: Optional[str]
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect((ip, 9))
            address = sock.getsockname()[0]
    except OSError:
        address = None
    return address


def _family(ip: str) -> int:
    return 6 if ":" in ip else 4


def _reason_phrase(text: str) -> str:
    """A reason phrase that cannot break the status line."""
    clean = "".join(ch if " " <= ch <= "~" else "?" for ch in text)
    return clean[:120] or "Bad Request"


@implementer(IDispatcher)
class Dispatcher:
    """Owns legs and one receiver.

    @param reactor: used for DNS (through the default resolver) and the
        clock of the blocklist only; pass a fake in tests.
    @param resolver: an L{IHopResolver} (RFC 3263; by default a
        L{DNSResolver} asking /etc/resolv.conf's servers), or an
        L{IHostResolver} (A/AAAA only), for host names in targets.
    @param blocklist_expire: seconds a destination a send to which failed
        is tried after the others (Kamailio's C{dst_blocklist_expire}).
    @param outgoing_proxy: a URI every request is sent to.
    @param domain2proxy: domain (exact, C{*.parent} or C{*}) to proxy URI.
    @param local_address: the source address the host would use to reach
        an IP (the kernel's routing decision; replaceable in tests).
    """

    def __init__(
        self,
        reactor: Any = None,
        legs: Iterable[Any] = (),
        receiver: Optional[IReceiver] = None,
        resolver: Union[IHopResolver, IHostResolver, None] = None,
        outgoing_proxy: Optional[URI] = None,
        domain2proxy: Optional[Mapping[str, URI]] = None,
        local_address: Callable[[str], Optional[str]] = local_address_for,
        blocklist_expire: float = 60.0,
    ) -> None:
        self.reactor = reactor
        #: one line per source IP per interval about what it sent malformed
        #: (answered or dropped), so a peer sending garbage cannot flood the log
        self.malformed_log = SourceLog(log, reactor if reactor is not None else WallClock(), interval=10.0)
        #: a L{sipproxy.transport.message_log.MessageLog} (C{--log-messages}):
        #: one line per message received and sent; None, the default, costs one test
        self.message_log: Optional[MessageLog] = None
        self.local_address = local_address
        self.legs: list[Any] = []
        self.receiver = receiver
        self.resolver = resolver if resolver is not None else DNSResolver(reactor)
        #: destinations a send to which failed lately (see L{DestinationBlocklist})
        self.blocklist = DestinationBlocklist(reactor, blocklist_expire)
        self._transports: list[str] = []
        self._families: tuple[int, ...] = ()
        # what routing remembers; emptied by reindex(), bounded like every cache
        self.caches = CacheSet()
        self._hops = self.caches.add(BoundedCache("hops by Request-URI", max_key=512))
        self._ip_targets = self.caches.add(BoundedCache("targets of IP hops", max_key=512))
        self._local_uris = self.caches.add(BoundedCache("URIs naming us", max_key=512))
        self._local_addresses = self.caches.add(BoundedCache("source address by destination", 10000, max_key=64))
        # the lookups, bound once (see sipproxy.sip.bounded)
        self._known_hop = self._hops.get
        self._known_targets = self._ip_targets.get
        self._known_local_uri = self._local_uris.get
        self._outgoing_proxy = outgoing_proxy
        self._domain2proxy = dict(domain2proxy or {})
        self._by_address: dict[tuple[str, int], list[Any]] = {}
        # counters read by sipproxy.app.metrics (plain ints: see sipproxy.observe.counters)
        self.requests_received = method_counts()
        self.responses_received = status_counts()
        #: (method label, code) of every answer given here (respond() and malformed requests)
        self.answered: dict[tuple[str, int], int] = {}
        #: parse errors: answered (400/505) or dropped
        self.parse_errors = {"answered": 0, "dropped": 0}
        self.dropped = DropCounts()
        #: told of every message received and sent (HEP capture); None: off,
        #: which costs the receive and send paths one test each
        self.capture: Optional[ICapture] = None
        for leg in legs:
            self.add_leg(leg)

    # legs ------------------------------------------------------------------
    def add_leg(self, leg: ILeg) -> None:
        """Adopt a leg: it reports to this dispatcher, its index is its
        position."""
        if not ILeg.providedBy(leg):
            raise TypeError(f"{leg!r} does not provide ILeg")
        leg.index = len(self.legs)
        leg.dispatcher = self
        self.legs.append(leg)
        self.reindex()

    @property
    def outgoing_proxy(self) -> Optional[URI]:
        return self._outgoing_proxy

    @outgoing_proxy.setter
    def outgoing_proxy(self, value: Optional[URI]) -> None:
        self._outgoing_proxy = value
        self.reindex()

    @property
    def domain2proxy(self) -> Mapping[str, URI]:
        """Read-only view; assign a new mapping to change it."""
        return dict(self._domain2proxy)

    @domain2proxy.setter
    def domain2proxy(self, value: Mapping[str, URI]) -> None:
        self._domain2proxy = dict(value)
        self.reindex()

    def reindex(self) -> None:
        """Recompute address lookups and forget remembered routes (after a
        leg bound to port 0, or the routing configuration changed)."""
        self.caches.clear()
        self._by_address = {}
        for leg in self.legs:
            self._by_address.setdefault((leg.host, leg.port), []).append(leg)
        self._transports = sorted({leg.proto for leg in self.legs})
        self._families = tuple(sorted({leg.family for leg in self.legs}))

    def legs_at(self, host: str, port: int) -> list[Any]:
        """Legs bound to C{host}:C{port} (the proxy's own addresses)."""
        legs = self._by_address.get((host, port))
        if legs is None and ":" in host:  # IPv6 written another way
            try:
                legs = self._by_address.get((str(ipaddress.ip_address(host)), port))
            except ValueError:
                legs = None
        return legs or []

    def set_receiver(self, receiver: IReceiver) -> None:
        self.receiver = receiver

    # receiving ---------------------------------------------------------------
    def message_received(self, data: bytes, leg: ILeg, addr: tuple[str, int], stream: bool = False,
                         websocket: bool = False) -> None:
        """Parse one message from a leg and pass it on; never raises.
        C{websocket}: one message per WebSocket message, whose sender is
        reached only at the address it came from (rport is forced)."""
        if self.capture is not None:
            self._capture_received(data, leg, addr)
        try:
            message = parse(data, stream=stream)
        except ParseError as e:
            self._refuse(e, leg, addr)
            return
        except Exception:
            self.parse_errors["dropped"] += 1
            log.failure("parser failed on a message from {source} on {leg}", **address_fields(addr, leg))
            return
        try:
            if self.message_log is not None:
                self.message_log.received(message, leg, addr)
            if isinstance(message, Request):
                try:  # the slot behind .method: its descriptor would cost a Python call per message
                    self.requests_received[message._method] += 1
                except KeyError:
                    self.requests_received[OTHER] += 1
                if websocket:
                    _want_rport(message)
                stamp_via(message, addr)
                if stream:
                    via = message.top_via()
                    leg.add_alias(addr, (addr[0], via.port or DEFAULT_PORTS[leg.proto]))
            else:
                self.responses_received[message._code // 100] += 1  # type: ignore[union-attr]
            receiver = self.receiver
            if receiver is None:
                self.dropped.add("request" if isinstance(message, Request) else "response", "no_receiver")
                log.warn("no receiver: dropped {message!r} from {source}", message=message,
                         **message_fields(message, addr, leg))
                return
            receiver.receive(message, leg, addr)
        except Exception:
            log.failure("error handling {message!r} from {source} on {leg}", message=message,
                        **message_fields(message, addr, leg))

    def _refuse(self, error: ParseError, leg: ILeg, addr: tuple[str, int]) -> None:
        """Answer a malformed request that can be addressed, drop the rest;
        one log line either way. The partial message is what failed to
        parse: nothing of it may be trusted to read without failing (a
        CSeq of C{x OPTIONS}), so the answer is built from raw text and a
        failure to build it is one more line, never a traceback."""
        partial = error.message
        if isinstance(partial, Request) and partial.method != "ACK" and "via" in partial.names:
            try:
                data = bytes(stateless_answer(partial, error.status, _reason_phrase(error.reason)))
            except Exception as e:  # what is malformed may be what an answer copies
                self.malformed_log.info(
                    addr[0], "dropped malformed {method} from {source} on {leg}: {reason} (no answer: {problem})",
                    **message_fields(partial, addr, leg), reason=error.reason,
                    problem=f"{type(e).__name__}: {e}"[:120])
                self.parse_errors["dropped"] += 1
                return
            self.malformed_log.info(addr[0], "refused {method} from {source} on {leg}: {reason} (answered {code})",
                                    **message_fields(partial, addr, leg), reason=error.reason, code=error.status)
            # to where it came from: the Via of a malformed request is not
            # to be trusted (and is sometimes what is malformed)
            if self.capture is not None:
                self.copy_sent(data, leg, addr)
            leg.send(data, addr)
            self.parse_errors["answered"] += 1
            self.count_answer(partial.method, error.status)
        else:
            self.parse_errors["dropped"] += 1
            kind = "response" if isinstance(partial, Response) else "message"
            self.malformed_log.info(addr[0], "dropped malformed {kind} from {source} on {leg}: {reason}",
                                    kind=kind, **message_fields(partial, addr, leg), reason=error.reason)

    # sending -------------------------------------------------------------------
    def send(self, message: Message, leg: ILeg, addr: tuple[str, int],
             on_error: Optional[Callable[[str], Any]] = None) -> None:
        """Serialise and send; refuses broadcast and multicast targets.

        @param on_error: called with a reason when the message cannot be
            sent (a refused target; the leg reports its own failures: a
            closed socket, an unreachable network, a TCP connection
            refused), so a transaction can end at once (RFC 3261 17.1.4);
            without it such failures are only logged."""
        if not is_unicast(addr[0]):
            log.warn("not sending {message!r} to non-unicast address {dst}", message=message, dst=host_port(addr),
                     **message_fields(message, leg=leg))
            if on_error is not None:
                on_error(f"{addr[0]} is not a unicast address")
            return
        if self.message_log is not None:
            self.message_log.sent(message, leg, addr)
        data = bytes(message)
        if self.capture is not None:
            self.copy_sent(data, leg, addr)
        if on_error is None:
            leg.send(data, addr)
            return
        failed = self._failed_send(leg, addr, on_error)
        try:
            leg.send(data, addr, failed)
        except Exception as e:  # a leg that raised instead of reporting
            log.warn("sending {message!r} to {dst} failed: {error}", message=message, dst=host_port(addr), error=e,
                     **message_fields(message, leg=leg))
            failed(str(e) or type(e).__name__)

    def _failed_send(self, leg: ILeg, addr: tuple[str, int], on_error: Callable[[str], Any]) -> Callable[[str], Any]:
        """C{on_error}, after putting the destination on the blocklist."""

        def failed(reason: str) -> Any:
            self.blocklist.add(leg.proto, addr[0], addr[1])
            return on_error(reason)

        return failed

    def count_answer(self, method: str, code: int) -> None:
        """Count one answer given here (for metrics)."""
        key = (method_label(method), code)
        self.answered[key] = self.answered.get(key, 0) + 1

    def _capture_received(self, data: bytes, leg: ILeg, addr: tuple[str, int]) -> None:
        """Hand a copy to the capture (HEP); its failure is one log line."""
        capture = self.capture
        try:
            if capture is not None:
                capture.received(data, leg, addr)
        except Exception:
            log.failure("capture failed on a message from {source} on {leg}", **address_fields(addr, leg))

    def copy_sent(self, data: bytes, leg: ILeg, addr: tuple[str, int]) -> None:
        """Tell the capture, if any, of C{data} sent from C{leg} to C{addr}
        (L{send} does it; for messages sent straight through a leg)."""
        capture = self.capture
        try:
            if capture is not None:
                capture.sent(data, leg, addr)
        except Exception:
            log.failure("capture failed on a message to {dst} on {leg}", dst=addr, leg=leg.key)

    @staticmethod
    def stateless_tag(request: Request) -> str:
        """A To tag that is the same for every retransmission of a request,
        so stateless answers to them agree (RFC 3261 8.2.6.2); see
        L{sipproxy.sip.stateless}."""
        return stateless_tag(request)

    def respond(
        self,
        request: Request,
        code: int,
        reason: Optional[str] = None,
        leg: Optional[ILeg] = None,
        addr: Optional[tuple[str, int]] = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Answer C{request} statelessly; routed back per its top Via (over
        the connection it came on, for stream legs). ACKs are never
        answered."""
        if request.method == "ACK":
            return
        response = stateless_answer(request, code, reason, headers)
        via = request.top_via()
        if via is None or leg is None:
            return
        self.count_answer(request.method, code)
        try:
            hop = response_hop(via)
        except RoutingError:
            hop = None
        if hop is not None and hop.is_ip and hop.proto == leg.proto == "udp":
            self.send(response, leg, (hop.host, hop.port or DEFAULT_PORTS["udp"]))
        elif addr is not None:
            # stream transports: over the connection it came on (18.2.2);
            # a Via naming another transport than the leg: to the source
            self.send(response, leg, addr)

    # resolving -----------------------------------------------------------------
    def hop_for(self, uri: Union[URI, str]) -> Hop:
        """Next hop for a request URI under this dispatcher's configuration;
        raises L{RoutingError}. Remembered per URI (a dialog's requests all
        go to the same place)."""
        key = str(uri)
        hop = self._known_hop(key)
        if hop is None:
            hop = self._hops.store(key, request_hop(uri, self._domain2proxy, self._outgoing_proxy))
        return hop

    def targets_for_hop(self, hop: Hop, leg_hint: Any = None, request: Optional[Request] = None,
                        ) -> Union[list[Target], Deferred]:
        """(leg, address) pairs for a hop, in the order to try them: a list
        at once when the host is an IP address, else a Deferred (already
        fired when the hosts file or the DNS cache knew the answer).

        @param request: the request going there: its Call-ID keys the SRV
            weighted choice, so its retransmissions, its CANCEL and its ACK
            go where it went (see L{DNSResolver.resolve_hop}).
        @raise RoutingError: (or errback with it) 404 when the name does not
            resolve, 503 when DNS failed or no leg can reach the address.
        """
        key = (hop, -1 if leg_hint is None else leg_hint.index)
        targets = self._known_targets(key)  # only hops to an IP address are remembered
        if targets is not None:
            return list(targets)
        if hop.is_ip:
            return list(self._ip_targets.store(key, self._targets(hop, [hop.host], leg_hint), len(hop.host)))
        return self._resolve_name(hop, leg_hint, request.get("call-id") if request is not None else None)

    def _resolve_name(self, hop: Hop, leg_hint: Any, key: Optional[str]) -> Deferred:
        resolver = self.resolver
        if not IHopResolver.providedBy(resolver):  # A/AAAA only (a plain IHostResolver)
            d = resolver.resolve_host(hop.host)
            d.addCallback(lambda addresses: self._targets(hop, addresses, leg_hint))
            return d
        try:
            found = resolver.resolve_hop(hop.host, hop.proto, hop.port, self._transports, self._families, key)
        except ResolutionFailed as e:
            return fail(RoutingError(503, f"Service Unavailable ({e})"[:120]))
        if isinstance(found, Deferred):
            found.addCallbacks(self._destination_targets, self._resolution_failed,
                               callbackArgs=(hop, leg_hint))
            return found
        try:
            return succeed(self._destination_targets(found, hop, leg_hint))
        except RoutingError as e:
            return fail(e)

    @staticmethod
    def _resolution_failed(failure: Any) -> None:
        if failure.check(ResolutionFailed):
            raise RoutingError(503, f"Service Unavailable ({failure.value})"[:120])
        return failure

    def _destination_targets(self, destinations: Sequence[Destination], hop: Hop, leg_hint: Any) -> list[Target]:
        """(leg, address) per destination we have a leg for, those on the
        blocklist last (tried, but after the others)."""
        if not destinations:
            raise RoutingError(404, f"cannot resolve {hop.host}")
        targets: list[Target] = []
        blocked: list[Target] = []
        blocklist = self.blocklist
        for proto, host, port in destinations:
            leg = self.choose_leg(proto, host, leg_hint)
            if leg is not None:
                (blocked if (proto, host, port) in blocklist else targets).append((leg, (host, port)))
        if not targets and not blocked:
            raise RoutingError(503, f"no leg can reach {hop.proto or 'any transport'} to {hop.host}")
        return targets + blocked

    def resolve(self, uri: Union[URI, str], leg_hint: Any = None) -> Deferred:
        """Targets for a URI, always as a Deferred (errback with
        L{RoutingError} when there is no route)."""
        try:
            result = self.targets_for_hop(self.hop_for(uri), leg_hint)
        except RoutingError as e:
            return fail(e)
        return result if isinstance(result, Deferred) else succeed(result)

    def _targets(self, hop: Hop, addresses: Sequence[str], leg_hint: Any) -> list[Target]:
        if not addresses:
            raise RoutingError(404, f"cannot resolve {hop.host}")
        targets: list[Target] = []
        for address in addresses:
            address = address.strip("[]")
            family = _family(address)
            proto = hop.proto or self._default_transport(family)
            if proto is None:
                continue
            leg = self.choose_leg(proto, address, leg_hint)
            if leg is not None:
                targets.append((leg, (address, hop.port or DEFAULT_PORTS[proto])))
        if not targets:
            raise RoutingError(503, f"no leg can reach {hop.proto or 'any transport'} to {hop.host}")
        return targets

    def _default_transport(self, family: int) -> Optional[str]:
        """UDP when a leg has it, else what some leg has (RFC 3263 4.1
        lets a client without UDP use TCP)."""
        protos = [leg.proto for leg in self.legs if leg.family == family]
        for proto in ("udp", "tcp", "tls"):
            if proto in protos:
                return proto
        return None

    def choose_leg(self, proto: str, address: str, hint: Any = None) -> Any:
        """The leg to send from: the hint if it fits; else a leg bound to
        the destination's own IP; else the leg bound to the source address
        the kernel would use; else the first leg of the transport and
        family."""
        family = _family(address)
        candidates = [leg for leg in self.legs if leg.can_reach(proto, family)]
        if not candidates:
            return None
        if hint is not None and hint in candidates:
            return hint
        if len(candidates) == 1:
            return candidates[0]
        for leg in candidates:
            if leg.host == address:
                return leg
        source = self._local_addresses.get(address, self)
        if source is self:
            source = self._local_addresses.store(address, self.local_address(address))
        for leg in candidates:
            if leg.host == source:
                return leg
        return candidates[0]

    def names_us(self, uri: URI) -> bool:
        """True if C{uri} is a sip/sips URI naming one of our legs.
        Remembered per URI text: the Request-URIs of a dialog repeat."""
        text = str(uri)
        known = self._known_local_uri(text)
        if known is None:
            known = self._local_uris.store(text, uri.is_sip and self.is_local(uri.host, uri.port, uri.transport))
        return known

    def is_local(self, host: str, port: Optional[int], proto: Optional[str] = None) -> bool:
        """True if host:port is one of our legs (without a port: the
        default port of the leg's transport)."""
        if host[:1] == "[":
            host = host.strip("[]")
        if port is None:
            return any(leg.port == DEFAULT_PORTS[leg.proto] and (proto is None or proto == leg.proto)
                       for leg in self.legs_at(host, DEFAULT_PORTS["udp"]) + self.legs_at(host, DEFAULT_PORTS["tls"]))
        for leg in self.legs_at(host, port):
            if proto is None or proto == leg.proto:
                return True
        return False
