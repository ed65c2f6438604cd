"""Keeping the flows of phones behind NAT open, and noticing when they die.

A NAT forgets a UDP mapping after a quiet minute or two, and a phone that
sleeps never knows; a TCP connection through NAT dies as quietly. The
keeper pings every binding this node accepted over a flow (the registrar
tells it which, see L{sipproxy.proxy.flows}): an OPTIONS over UDP, whose
answer proves the way back still works, or a CRLF keep-alive over a
connection (RFC 5626 4.4.1) while the connection is still there. A binding
whose UDP flow leaves C{failures} pings in a row unanswered, or whose
connection has closed, is removed from the location store, so calls get a
clean 404/480 instead of vanishing into a dead mapping (Kamailio's
nathelper C{natping_interval} with C{sipping_bflag}, and its
C{keepalive} module's removal of unreachable contacts).

Each node pings only the flows it holds: the flow ends at that node's
socket (or connection), and nodes sharing a store each keep their own
table. Logic: the clock and the dispatcher's legs are passed in.
"""
from __future__ import annotations

import secrets
from typing import Any, NamedTuple, Optional

from twisted.internet.task import LoopingCall

from zope.interface import implementer

from sipproxy.observe.logsafe import SafeLogger
from sipproxy.interfaces import ILeg, ILocationStore, IReceiver
from sipproxy.registrar.location import Binding
from sipproxy.sip.message import Response

__all__ = ["FlowKeeper"]

log = SafeLogger()


class _Watched(NamedTuple):
    aor: str
    binding: Binding
    leg: ILeg
    addr: tuple[str, int]
    until: float


class FlowKeeper:
    """Pings the bindings reached over flows and drops the dead ones.

    @param clock: C{IReactorTime}.
    @param store: the location store to remove dead bindings from.
    @param interval: seconds between pings of one flow.
    @param failures: unanswered UDP pings in a row that mean the flow is dead.
    @param limit: most flows watched at once (memory stays bounded whatever
        registers); past it new flows are not pinged, and a line says so.
    """

    def __init__(self, clock: Any, store: ILocationStore, interval: float = 30.0, failures: int = 3,
                 limit: int = 100000) -> None:
        if interval <= 0 or failures < 1:
            raise ValueError("want interval > 0 and failures >= 1")
        self.clock = clock
        self.store = store
        self.interval = interval
        self.failures = failures
        self.limit = limit
        self._watched: dict[tuple[str, str], _Watched] = {}
        self._missed: dict[tuple[str, str], int] = {}
        self._pending: dict[str, tuple[str, str]] = {}  # branch of an unanswered ping -> flow
        self._prefix = "z9hG4bKnp" + secrets.token_hex(4)
        self._count = 0
        self._loop: Optional[LoopingCall] = None
        self._full_reported = False
        #: how many bindings were dropped because their flow died
        self.dropped = 0

    # the registrar's side ---------------------------------------------------------
    def watch(self, aor: str, binding: Binding, leg: ILeg, addr: tuple[str, int]) -> None:
        """Ping C{binding} over the flow C{(leg, addr)} from now on."""
        key = (aor, binding.key)
        if key not in self._watched and len(self._watched) >= self.limit:
            if not self._full_reported:
                log.warn("NAT keep-alive: {limit} flows watched already; new ones are not pinged", limit=self.limit)
                self._full_reported = True
            return
        self._watched[key] = _Watched(aor, binding, leg, addr, self.clock.seconds() + binding.expires)
        self._missed[key] = 0
        if self._loop is None:
            self._loop = LoopingCall(self.ping_all)
            self._loop.clock = self.clock
            self._loop.start(self.interval, now=False)

    def forget(self, aor: str, key: str) -> None:
        """Stop pinging a binding (removed, or now reachable directly)."""
        self._watched.pop((aor, key), None)
        self._missed.pop((aor, key), None)

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def __len__(self) -> int:
        return len(self._watched)

    # pinging ------------------------------------------------------------------------
    def ping_all(self) -> None:
        """One round: count what the last round left unanswered, drop dead
        flows, ping the rest."""
        for flow in self._pending.values():
            if flow in self._missed:
                self._missed[flow] += 1
        self._pending.clear()
        now = self.clock.seconds()
        for key, watched in list(self._watched.items()):
            if watched.until <= now:
                self.forget(*key)
                continue
            if self._missed.get(key, 0) >= self.failures:
                self._drop(key, watched, f"{self.failures} keep-alive pings unanswered")
                continue
            if watched.leg.proto == "udp":
                self._send_options(key, watched)
                continue
            connections = getattr(watched.leg, "connections", None)
            if connections is not None and watched.addr not in connections:
                self._drop(key, watched, "its connection closed")
            else:
                watched.leg.send(b"\r\n\r\n", watched.addr)

    def _send_options(self, key: tuple[str, str], watched: _Watched) -> None:
        self._count += 1
        branch = f"{self._prefix}{self._count:x}"
        self._pending[branch] = key
        leg = watched.leg
        contact = watched.binding.contact
        text = (f"OPTIONS {contact} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {leg.sent_by};branch={branch};rport\r\n"
                "Max-Forwards: 70\r\n"
                f"From: <sip:keepalive@{leg.sent_by}>;tag={branch[-12:]}\r\n"
                f"To: <{contact}>\r\n"
                f"Call-ID: {branch}@{leg.sent_by}\r\n"
                "CSeq: 1 OPTIONS\r\n"
                "Content-Length: 0\r\n\r\n")
        data = text.encode("utf-8", "surrogateescape")
        if leg.dispatcher is not None:  # the HEP capture sees the ping too
            leg.dispatcher.copy_sent(data, leg, watched.addr)
        leg.send(data, watched.addr)

    def _drop(self, key: tuple[str, str], watched: _Watched, why: str) -> None:
        self.forget(*key)
        self.dropped += 1
        log.info("NAT keep-alive: dropping {contact} of {aor} (flow {source}): {why}",
                 contact=watched.binding.contact, aor=watched.aor, source=watched.addr, why=why)
        binding = watched.binding
        d = self.store.update(watched.aor, binding.call_id, binding.cseq, [(binding.key, None, 0)])
        d.addErrback(lambda f: log.info("NAT keep-alive: could not drop {aor}: {error}", aor=watched.aor,
                                        error=f.getErrorMessage()))

    # IReceiver: the answers to our pings --------------------------------------------------
    def receive(self, packet: Any, leg: ILeg, addr: tuple[str, int]) -> bool:
        if not isinstance(packet, Response):
            return False
        via = packet.top_via()
        branch = via.branch if via is not None else None
        if not branch or not branch.startswith(self._prefix):
            return False
        flow = self._pending.pop(branch, None)
        if flow is not None and flow in self._missed:
            self._missed[flow] = 0
        return True  # any answer proves the way back works; never forwarded


implementer(IReceiver)(FlowKeeper)
