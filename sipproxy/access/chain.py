"""ReceiveChain: several receivers tried in order (Net::SIP's ReceiveChain).

Each receiver's C{receive} returns a true value when it handled the packet
(the chain stops there) or a false one to pass it on. A receiver may also
return a Deferred (a registrar asking a remote location store); the chain
goes on when it fires. Chains nest, since a chain is a receiver.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Optional

from twisted.internet.defer import Deferred
from zope.interface import implementer

from sipproxy.interfaces import ILeg, IReceiver
from sipproxy.sip.message import Message, Request

__all__ = ["ReceiveChain"]


@implementer(IReceiver)
class ReceiveChain:
    """Try C{receivers} in order.

    @param filter: C{(packet, leg, addr) -> bool}; when false the chain
        passes the packet on without looking.
    @param methods: only packets with one of these methods enter the chain
        (for a response, the method of its CSeq).
    """

    def __init__(
        self,
        receivers: Iterable[IReceiver],
        filter: Optional[Callable[[Message, ILeg, tuple[str, int]], Any]] = None,
        methods: Optional[Iterable[str]] = None,
    ) -> None:
        self.receivers = list(receivers)
        self.filter = filter
        self.methods = frozenset(m.upper() for m in methods) if methods else None

    def receive(self, packet: Message, leg: ILeg, addr: tuple[str, int]) -> Any:
        if self.methods is not None:
            method = packet.method if isinstance(packet, Request) else packet.cseq_method
            if method not in self.methods:
                return False
        if self.filter is not None and not self.filter(packet, leg, addr):
            return False
        return self._run(self.receivers, 0, packet, leg, addr)

    def replace(self, receivers: Iterable[IReceiver]) -> None:
        """Swap in new receivers (a configuration reload). A packet whose
        trip through the old ones waits on a Deferred finishes there."""
        self.receivers = list(receivers)

    def _run(self, receivers: list, start: int, packet: Message, leg: ILeg, addr: tuple[str, int]) -> Any:
        for i in range(start, len(receivers)):
            result = receivers[i].receive(packet, leg, addr)
            if isinstance(result, Deferred):
                return result.addCallback(self._continue, receivers, i + 1, packet, leg, addr)
            if result:
                return result
        return False

    def _continue(self, result: Any, receivers: list, start: int, packet: Message, leg: ILeg,
                  addr: tuple[str, int]) -> Any:
        return result if result else self._run(receivers, start, packet, leg, addr)
