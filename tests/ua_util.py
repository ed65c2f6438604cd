"""A memory network for user-agent tests: memory legs that deliver to each
other, driven by a Clock, with a switch to lose datagrams."""
from __future__ import annotations

from typing import Any, Callable, Optional

from twisted.internet.task import Clock

from sipproxy.sip.message import Message, parse
from sipproxy.testing import MemoryLeg, memory_dispatcher
from sipproxy.ua.simple import Simple


class MemoryNetwork:
    """Legs by address; L{run} moves what each leg sent to the leg it was
    sent to, until nothing moves (bounded)."""

    def __init__(self, clock: Optional[Clock] = None) -> None:
        self.clock = clock or Clock()
        if clock is None:
            self.clock.advance(1_000_000)  # a plausible "now" (nonces issued at 0 read as stale)
        self.legs: dict[tuple[str, int], MemoryLeg] = {}
        self.log: list[tuple[str, Message]] = []
        self.routes: list[tuple[str, str, Message]] = []  # (from host, to host, message)
        self.drop: Optional[Callable[[Message, tuple[str, int]], bool]] = None

    def leg(self, host: str, port: int = 5060, proto: str = "udp") -> MemoryLeg:
        leg = MemoryLeg(host, port, proto)
        self.legs[(host, port)] = leg
        return leg

    def simple(self, host: str, port: int = 5060, **options: Any) -> Simple:
        """A Simple alone on a memory leg at host:port."""
        dispatcher = memory_dispatcher([self.leg(host, port)])
        return Simple(self.clock, dispatcher=dispatcher, **options)

    def run(self, limit: int = 1000) -> int:
        """Deliver until quiet; the number of messages delivered."""
        moved = 0
        for _ in range(limit):
            batch = []
            for source, leg in self.legs.items():
                for data, addr in leg.sent:
                    batch.append((source, data, addr))
                leg.sent.clear()
            if not batch:
                return moved
            for source, data, addr in batch:
                message = parse(data)
                self.log.append((f"{source[0]}:{source[1]}", message))
                self.routes.append((source[0], addr[0], message))
                if self.drop is not None and self.drop(message, addr):
                    continue
                target = self.legs.get((addr[0], addr[1]))
                if target is not None:
                    target.receive(data, source)
                    moved += 1
        raise AssertionError("the memory network did not settle")

    def advance(self, seconds: float, step: float = 0.25) -> None:
        """Let time pass in steps, delivering after each."""
        self.run()
        elapsed = 0.0
        while elapsed < seconds:
            self.clock.advance(min(step, seconds - elapsed))
            elapsed += step
            self.run()

    def methods(self) -> list[str]:
        """What crossed the network, as C{METHOD} or C{code METHOD}."""
        out = []
        for _, message in self.log:
            code = getattr(message, "code", None)
            out.append(f"{code} {message.cseq_method}" if code else message.method)
        return out
