"""Request filters after Net::SIP's Blocker and Dropper.

- L{Blocker}: answer requests of some methods with a fixed code.
- L{Dropper}: drop packets silently when a check says so; the checks
  L{ByIPPort} (too many packets from one source in an interval, with an
  optional persisted block list) and L{ByField} (a header matches a
  pattern, e.g. a scanner's User-Agent).
"""
from __future__ import annotations

import re
from typing import Any, Callable, Iterable, Mapping, Optional, Pattern, Sequence, Union

from twisted.internet.interfaces import IReactorTime

from zope.interface import implementer

from sipproxy.observe.logsafe import SafeLogger
from sipproxy.observe.logfields import host_port
from sipproxy.interfaces import IDispatcher, ILeg, IReceiver
from sipproxy.registrar.location import WallClock
from sipproxy.sip.message import Message, REASONS, Request
from sipproxy.sip.stateless import is_ack_to_own_answer

__all__ = ["Blocker", "Dropper", "ByIPPort", "ByField", "parse_block"]

log = SafeLogger()


def parse_block(value: Union[int, str]) -> tuple[int, str]:
    """C{"403"}, C{"403 Go away"} or 403 to (code, reason); raises
    ValueError unless the code is a final non-2xx status (300-699)."""
    text = str(value).strip()
    m = re.fullmatch(r"(\d{3})(?:\s+(.+))?", text)
    if m is None:
        raise ValueError(f"block code {text!r}: want DDD [reason]")
    code = int(m.group(1))
    if not 300 <= code <= 699:
        raise ValueError(f"block code {code}: want a final status 300-699")
    return code, m.group(2) or REASONS.get(code, "Blocked")


@implementer(IReceiver)
class Blocker:
    """Answer requests of the blocked methods with their code.

    @param block: method to C{"DDD [reason]"} (or an int code). When
        INVITE is blocked, the ACKs for those answers are swallowed.
    """

    def __init__(self, dispatcher: IDispatcher, block: Mapping[str, Union[int, str]]) -> None:
        if not block:
            raise ValueError("nothing to block")
        self.dispatcher = dispatcher
        self.block = {method.strip().upper(): parse_block(code) for method, code in block.items()}

    def receive(self, packet: Message, leg: ILeg, addr: tuple[str, int]) -> Any:
        if not isinstance(packet, Request):
            return False
        method = packet.method
        if method == "ACK":
            return "INVITE" in self.block and is_ack_to_own_answer(packet)
        blocked = self.block.get(method)
        if blocked is None:
            return False
        code, reason = blocked
        self.dispatcher.respond(packet, code, reason, leg, addr)
        return code


@implementer(IReceiver)
class Dropper:
    """Drop (silently, no answer) every packet for which one of
    C{checks} returns true; checks are callables C{(packet, leg, addr)} or
    objects with such a C{run} method."""

    def __init__(self, checks: Iterable[Any]) -> None:
        self.checks = [c.run if hasattr(c, "run") else c for c in checks]
        if not self.checks:
            raise ValueError("a Dropper needs at least one check")
        self.dropped = 0
        self.dropped_responses = 0  # of those, responses (for metrics)

    def receive(self, packet: Message, leg: ILeg, addr: tuple[str, int]) -> bool:
        for check in self.checks:
            if check(packet, leg, addr):
                self.dropped += 1
                if not isinstance(packet, Request):
                    self.dropped_responses += 1
                return True
        return False


def _method_of(packet: Message) -> str:
    """The method, or C{""} for a response (Net::SIP's convention)."""
    return packet.method if isinstance(packet, Request) else ""


class ByIPPort:
    """Too many packets from one source: counts per IP and port and per
    second; a source that sent C{attempts} or more within the last
    C{interval} seconds is dropped (its dropped packets count too, so a
    flood stays blocked). An entry with port 0 counts for every port of
    its IP, which is how L{block} shuts out a whole address.

    @param methods: only count these (C{""} for responses); all if None.
    @param database: keeps the counts across restarts: an object with
        C{load()} and C{save(data)} (L{sipproxy.stores.blockfile.JSONFile}),
        saved at most every C{save_interval} seconds and by L{save}.
    @param clock: an C{IReactorTime} (C{seconds()}); the wall clock when
        None, only so that Net::SIP-style code can build one without a
        reactor (L{sipproxy.access.front_chain} passes the reactor).
    """

    def __init__(self, interval: float, attempts: int, methods: Optional[Sequence[str]] = None,
                 database: Any = None, clock: Optional[IReactorTime] = None, save_interval: float = 10.0) -> None:
        if interval <= 0 or attempts < 1:
            raise ValueError("want interval > 0 and attempts >= 1")
        self.interval = interval
        self.attempts = attempts
        self.methods = frozenset(m.upper() for m in methods) if methods is not None else None
        self.database = database
        self.clock = clock if clock is not None else WallClock()
        self.save_interval = save_interval
        # ip -> port -> second -> count
        self.data: dict[str, dict[int, dict[int, int]]] = {}
        self._dirty = False
        self._saved_at = 0.0
        self._expired_at = 0.0
        if database is not None:
            self.load()

    def _now(self) -> float:
        return self.clock.seconds()

    def run(self, packet: Message, leg: ILeg, addr: tuple[str, int]) -> bool:
        now = self._now()
        if now - self._expired_at >= 1.0:  # a sweep a second, not one per packet
            self.expire(now)
        if self.methods is not None and _method_of(packet) not in self.methods:
            return False
        ip, port = addr[0], int(addr[1])
        buckets = self.data.setdefault(ip, {}).setdefault(port, {})
        second = int(now)
        buckets[second] = buckets.get(second, 0) + 1
        self._dirty = True
        horizon = now - self.interval
        count = (sum(c for s, c in buckets.items() if s > horizon)
                 + sum(c for s, c in self.data[ip].get(0, {}).items() if s > horizon))
        self._maybe_save(now)
        if count >= self.attempts:
            if count == self.attempts:
                log.info("dropping packets from {ip}:{port}: {count} within {interval} s", ip=ip, port=port,
                         count=count, interval=self.interval, source=host_port((ip, port)))
            return True
        return False

    def block(self, ip: str, port: int = 0, until: Optional[float] = None) -> None:
        """Drop everything from C{ip} (or C{ip:port}) until C{until}
        (seconds since the epoch; one interval from now by default)."""
        until = until if until is not None else self._now() + self.interval
        # an entry is kept while it is younger than the interval: date it so
        # that it stays until `until`
        second = int(until - self.interval) + 1
        buckets = self.data.setdefault(ip, {}).setdefault(port, {})
        buckets[second] = buckets.get(second, 0) + self.attempts
        self._dirty = True
        self.save()

    def expire(self, now: Optional[float] = None) -> None:
        """Forget counts older than the interval."""
        now = now if now is not None else self._now()
        self._expired_at = now
        horizon = now - self.interval
        for ip in list(self.data):
            ports = self.data[ip]
            for port in list(ports):
                buckets = ports[port]
                for second in [s for s in buckets if s <= horizon]:
                    del buckets[second]
                    self._dirty = True
                if not buckets:
                    del ports[port]
            if not ports:
                del self.data[ip]

    # persistence ---------------------------------------------------------------------
    def _maybe_save(self, now: float) -> None:
        if self.database is not None and self._dirty and now - self._saved_at >= self.save_interval:
            self.save()

    def save(self) -> None:
        """Hand the counts to the database."""
        if self.database is None:
            return
        self._saved_at = self._now()
        self._dirty = False
        self.database.save({ip: {str(port): {str(s): c for s, c in buckets.items()}
                                 for port, buckets in ports.items()}
                            for ip, ports in self.data.items()})

    def load(self) -> None:
        """Take the counts from the database (nothing saved: no counts).

        @raise ValueError: when what was saved cannot be understood."""
        raw = self.database.load()
        if raw is None:
            return
        try:
            self.data = {ip: {int(port): {int(s): int(c) for s, c in buckets.items()}
                              for port, buckets in ports.items()}
                         for ip, ports in raw.items()}
        except (AttributeError, TypeError, ValueError) as e:
            raise ValueError(f"cannot understand the drop database: {e}") from None


class ByField:
    """Drop packets whose header matches: C{fields} maps a header name to
    a regular expression (text or compiled, searched in every value) or a
    callable C{(value) -> bool}.

    @param methods: only look at these (C{""} for responses); all if None.
    """

    def __init__(self, fields: Mapping[str, Union[str, Pattern[str], Callable[[str], Any]]],
                 methods: Optional[Sequence[str]] = None) -> None:
        if not fields:
            raise ValueError("ByField needs at least one header")
        self.fields: list[tuple[str, Callable[[str], Any]]] = []
        for name, test in fields.items():
            if isinstance(test, str):
                test = re.compile(test)
            if hasattr(test, "search"):
                test = test.search  # type: ignore[union-attr]
            self.fields.append((name, test))  # type: ignore[arg-type]
        self.methods = frozenset(m.upper() for m in methods) if methods is not None else None

    def run(self, packet: Message, leg: ILeg, addr: tuple[str, int]) -> bool:
        if self.methods is not None and _method_of(packet) not in self.methods:
            return False
        for name, test in self.fields:
            for value in packet.get_all(name):
                if test(value):
                    return True
        return False

