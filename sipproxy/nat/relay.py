"""The local RTP relay: Net::SIP's NATHelper on this process's UDP sockets.

L{LocalRelay} implements L{sipproxy.interfaces.INATHelper} and is a
Twisted C{Service} (its expiry timer runs while it is started). It joins
three parts, each in its own module:

  - L{sipproxy.nat.table}: the pure bookkeeping -- calls, socket groups,
    sessions, limits, expiry -- answering with plans (which port numbers
    to try, which ports to close);
  - L{sipproxy.nat.forward}: the per-packet path and source learning;
  - L{sipproxy.nat.sockets}: the sockets (an L{IRelaySockets}; one epoll
    set on the reactor by default, a fake in tests -- both run this same
    code).

What is left here: carrying out the table's plans on sockets (trying
port blocks until one binds, giving back everything opened when an
allocation fails half-way -- EMFILE included), the expiry timer on the
injected clock, and one structured log line per ended session.
"""
from __future__ import annotations

import errno
import random
from typing import Any, Optional, Sequence

from twisted.application.service import Service
from twisted.internet.task import LoopingCall

from zope.interface import implementer

from sipproxy.observe.logsafe import SafeLogger
from sipproxy.interfaces import INATHelper, IRelaySockets
from sipproxy.nat.forward import LEARN_WINDOW, RelayPort
from sipproxy.nat.table import (DEFAULT_MAX_CALL_SOCKETS, DEFAULT_MAX_STREAMS, Expiry, GroupPlan, RelayTable,
                                _unspecified)
from sipproxy.sip.sdp import MediaTarget, SessionDescription

__all__ = ["LocalRelay", "RelayPort", "DEFAULT_PORT_RANGE", "DEFAULT_RELAY_BUFFER", "DEFAULT_MAX_STREAMS",
           "DEFAULT_MAX_CALL_SOCKETS", "DEFAULT_UNANSWERED", "parse_port_range"]

#: Receive/send buffer of relay sockets: a few milliseconds of a busy
#: stream must fit while the process is not scheduled (the kernel default,
#: about 208 KiB, overflowed in the benchmark).
DEFAULT_RELAY_BUFFER = 1024 * 1024

#: Below Linux's ephemeral range (32768-60999), so relay ports do not race
#: outgoing connections for numbers.
DEFAULT_PORT_RANGE = (16384, 32767)

#: Seconds an offer's ports wait for an answer with SDP.
DEFAULT_UNANSWERED = 60.0

#: Errors after which trying another port number cannot help.
_HOPELESS = {errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT, errno.EINVAL, errno.EMFILE, errno.ENFILE, errno.ENOBUFS,
             errno.ENOMEM}

log = SafeLogger()


def parse_port_range(text: str) -> tuple[int, int]:
    """C{"LOW-HIGH"} -> (low, high); at least one even/odd pair inside.

    @raise ValueError: with a one-line reason.
    """
    low_text, sep, high_text = text.strip().partition("-")
    if not sep or not low_text.strip().isdigit() or not high_text.strip().isdigit():
        raise ValueError(f"{text!r} is not LOW-HIGH (two port numbers)")
    low, high = int(low_text), int(high_text)
    if not 1 <= low <= 65535 or not 1 <= high <= 65535:
        raise ValueError(f"{text!r}: ports must be 1-65535")
    if low + (low % 2) + 1 > high:
        raise ValueError(f"{text!r} holds no even/odd port pair")
    return low, high


@implementer(INATHelper)
class LocalRelay(Service):
    """An RTP relay in this process (see L{sipproxy.nat.table} for what it
    keeps and when it lets go, L{sipproxy.nat.forward} for what it forwards).

    @param reactor: the reactor the default sockets are read on (and the
        clock if C{clock} is None).
    @param port_range: (low, high), inclusive.
    @param address: bind and advertise this address instead of the
        outgoing leg's (C{--rtp-address}).
    @param idle_timeout: end an active session after this many idle seconds.
    @param unused_timeout: release a group never used in a session after
        this many seconds.
    @param unanswered_timeout: release an offer's ports after this many
        seconds without an answer carrying SDP (0 or None: C{unused_timeout}).
    @param close_delay: release the sockets of an ended session this many
        seconds after it ended (nothing is forwarded meanwhile).
    @param max_sockets: at most this many relay sockets in total (None: no
        limit but the port range).
    @param max_sockets_per_call: at most this many per Call-ID (0/None: no limit).
    @param max_streams: at most this many media streams per SDP (0/None: no limit).
    @param learn_window: seconds each port learns its peer's source.
    @param strict_source: forward only from the SDP address and port.
    @param expire_interval: how often the expiry runs while started.
    @param clock: an C{IReactorTime}; default the reactor.
    @param rng: a C{random.Random} for port choice (tests seed it).
    @param sockets: an L{IRelaySockets}; default an epoll set on C{reactor}.
    """

    name = "nat-relay"

    def __init__(
        self,
        reactor: Any,
        port_range: Sequence[int] = DEFAULT_PORT_RANGE,
        address: Optional[str] = None,
        idle_timeout: float = 30.0,
        unused_timeout: float = 180.0,
        close_delay: float = 1.0,
        max_sockets: Optional[int] = None,
        max_sockets_per_call: Optional[int] = DEFAULT_MAX_CALL_SOCKETS,
        expire_interval: float = 1.0,
        clock: Any = None,
        rng: Optional[random.Random] = None,
        max_attempts: int = 1000,
        buffer_size: int = DEFAULT_RELAY_BUFFER,
        unanswered_timeout: Optional[float] = DEFAULT_UNANSWERED,
        max_streams: Optional[int] = DEFAULT_MAX_STREAMS,
        learn_window: float = LEARN_WINDOW,
        strict_source: bool = False,
        sockets: Optional[IRelaySockets] = None,
    ) -> None:
        self.table = RelayTable(
            port_range, idle_timeout=idle_timeout, unused_timeout=unused_timeout,
            unanswered_timeout=unanswered_timeout, close_delay=close_delay, max_sockets=max_sockets,
            max_sockets_per_call=max_sockets_per_call, max_streams=max_streams, learn_window=learn_window,
            strict_source=strict_source, rng=rng, max_attempts=max_attempts)
        self.reactor = reactor
        self.clock = clock if clock is not None else reactor
        self.address = address
        self.expire_interval = expire_interval
        self.buffer_size = buffer_size
        self._sockets = sockets
        self._own_sockets = sockets is None  # made here: closed and dropped on stop, made again on use
        self._loop: Optional[LoopingCall] = None
        self._warned: set[str] = set()

    # -- what the table holds, for callers and tests -----------------------------
    @property
    def calls(self) -> dict:
        return self.table.calls

    @property
    def socket_count(self) -> int:
        return self.table.socket_count

    @property
    def port_range(self) -> tuple[int, int]:
        return self.table.port_range

    @property
    def idle_timeout(self) -> float:
        return self.table.idle_timeout

    @property
    def unused_timeout(self) -> float:
        return self.table.unused_timeout

    @property
    def unanswered_timeout(self) -> Optional[float]:
        return self.table.unanswered_timeout

    @property
    def close_delay(self) -> float:
        return self.table.close_delay

    @property
    def max_sockets(self) -> Optional[int]:
        return self.table.max_sockets

    @property
    def max_sockets_per_call(self) -> Optional[int]:
        return self.table.max_sockets_per_call

    @property
    def max_streams(self) -> Optional[int]:
        return self.table.max_streams

    @property
    def strict_source(self) -> bool:
        return self.table.strict_source

    @property
    def sockets(self) -> IRelaySockets:
        """The socket layer, made on first use (a relay that never opens a
        socket creates no epoll set)."""
        if self._sockets is None:
            from sipproxy.nat.sockets import default_sockets

            self._sockets = default_sockets(self.reactor, self.buffer_size)
        return self._sockets

    # -- service --------------------------------------------------------------
    def startService(self) -> None:
        super().startService()
        self._loop = LoopingCall(self._tick)
        self._loop.clock = self.clock
        self._loop.start(self.expire_interval, now=False).addErrback(
            lambda f: log.failure("relay expiry stopped", f))

    def _tick(self) -> None:
        try:
            self.expire()
        except Exception:  # keep expiring: a stopped timer would leak every socket
            log.failure("relay expiry failed")

    def stopService(self) -> Any:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        self.close_all("shutdown")
        if self._sockets is not None and self._own_sockets:
            self._sockets.close()
            self._sockets = None
        return super().stopService()

    # -- INATHelper -------------------------------------------------------------
    def allocate_sockets(self, session: Any, side: int, local_ip: str,
                         sdp: SessionDescription) -> Optional[list[Optional[MediaTarget]]]:
        """Sockets for the media of one side; the targets to write into the
        SDP (None for a stream to leave alone), or None on failure."""
        address = self.address or local_ip
        if not address or _unspecified(address):
            if "unspecified" not in self._warned:
                self._warned.add("unspecified")
                log.error("relay: no address to bind RTP sockets on (leg address {address!r}); "
                          "give --rtp-address", address=local_ip)
            return None
        plan = self.table.plan_group(session, side, address, sdp)
        if plan.refusal is not None:
            refusal = plan.refusal
            getattr(log, refusal.level)(refusal.format, **refusal.fields)
            return None
        if plan.targets is not None:
            return plan.targets
        blocks: list[list[RelayPort]] = []
        for count in plan.counts:
            ports = self._open_block(plan, count) if count else []
            if ports is None:
                for opened in blocks:
                    self._close(opened)
                return None
            blocks.append(ports)
        return self.table.commit_group(plan, blocks, self.clock.seconds())

    def activate_session(self, session: Any, param: Any = None) -> Optional[int]:
        """Pair the groups of C{session}: 1 when new, -1 when already
        active, None when incomplete or unknown."""
        result, replaced = self.table.activate(session, self.clock.seconds(), param)
        if result is None and session.call_id in self.table.calls:
            log.debug("relay: {call_id}: nothing to activate for {idto}", call_id=session.call_id,
                      idto=session.idto)
        self._log_ended(replaced)
        return result

    def close_session(self, session: Any, reason: Optional[str] = None) -> int:
        """INATHelper's close: with a CSeq, L{close_transaction} (CANCEL,
        error final); without, L{close_dialog} (BYE). Sockets go
        C{close_delay} seconds later; forwarding stops now.

        @return: the number of sessions ended.
        """
        if session.cseq is not None:
            return self.close_transaction(session, reason or "closed")
        return self.close_dialog(session.call_id, session.idfrom, session.idto, reason or "closed")

    # -- closing, one method per kind ---------------------------------------------
    def close_transaction(self, session: Any, reason: str) -> int:
        """The session to C{session.idto} in one INVITE transaction."""
        return self._log_ended(self.table.close_transaction(
            session.call_id, session.idfrom, session.cseq, session.idto, reason, self.clock.seconds()))

    def close_dialog(self, call_id: str, idfrom: str, idto: str, reason: str) -> int:
        """Every session between two parties, either way (BYE)."""
        return self._log_ended(self.table.close_dialog(call_id, idfrom, idto, reason, self.clock.seconds()))

    def close_party(self, call_id: str, idfrom: str, reason: str) -> int:
        """Every session of one party in a call."""
        return self._log_ended(self.table.close_party(call_id, idfrom, reason, self.clock.seconds()))

    def close_call(self, call_id: str, reason: str) -> int:
        """Every session of a call."""
        return self._log_ended(self.table.close_call(call_id, reason, self.clock.seconds()))

    def close_all(self, reason: str = "shutdown") -> None:
        """End every session and release every socket now."""
        self._carry_out(self.table.close_all(reason, self.clock.seconds()))

    def expire(self, now: Optional[float] = None) -> list[dict[str, Any]]:
        """Run the expiry once; the infos of the sessions ended by it."""
        result = self.table.expire(self.clock.seconds() if now is None else now)
        self._carry_out(result)
        return result.ended

    # -- looking ------------------------------------------------------------------
    def sessions(self, call_id: Optional[str] = None) -> list[dict[str, Any]]:
        """Infos of the live sessions (of one call, or all)."""
        return self.table.sessions(call_id)

    def describe(self, call_id: str) -> Optional[dict[str, Any]]:
        """Groups, ports and counters of one call (for ng C{query}), or None."""
        return self.table.describe(call_id)

    # -- carrying out plans ------------------------------------------------------
    def _open_block(self, plan: GroupPlan, count: int) -> Optional[list[RelayPort]]:
        address = plan.address
        sockets = self.sockets
        for start in self.table.block_starts(address, count):
            ports: list[RelayPort] = []
            try:
                for number in range(start, start + count):
                    port = RelayPort(address, number)
                    port.handle = sockets.open_udp(address, number, port)
                    port.send = port.handle.sendto
                    ports.append(port)
            except OSError as e:
                self._close(ports)
                if e.errno in _HOPELESS:
                    log.error("relay: cannot open relay sockets on {address} for {call_id}: {error}",
                              address=address, call_id=plan.key.call_id, error=e)
                    return None
                continue  # taken by someone else: try another block
            return ports
        low, high = self.table.port_range
        log.warn("relay: no free block of {count} ports on {address} in {low}-{high} for {call_id}",
                 count=count, address=address, low=low, high=high, call_id=plan.key.call_id)
        return None

    @staticmethod
    def _close(ports: list[RelayPort]) -> None:
        for port in ports:
            handle, port.handle = port.handle, None
            port.send = None
            if handle is not None:
                handle.close()

    def _carry_out(self, result: Expiry) -> None:
        self._close(result.release)
        self._log_ended(result.ended)

    @staticmethod
    def _log_ended(ended: list[dict[str, Any]]) -> int:
        for info in ended:
            log.info(
                "relay session ended: call {call_id} cseq {cseq} reason {reason}; "
                "from {uri_from} {packets_from} packets {bytes_from} bytes, "
                "to {uri_to} {packets_to} packets {bytes_to} bytes; start {start:.3f} end {end:.3f}",
                log_category="relay_session", **info)
        return len(ended)
