"""In-memory fakes for testing code built on sipproxy (ours and yours).

Twisted's C{MemoryReactor} has no C{listenUDP}, so legs get a fake of their
own: a L{MemoryLeg} records what is sent through it and injects what it
"receives" into the real dispatcher, so the whole SIP logic runs without
sockets or a reactor::

    a, b = MemoryLeg("192.0.2.1"), MemoryLeg("198.51.100.1")
    dispatcher = memory_dispatcher([a, b])
    proxy = StatelessProxy(dispatcher, secret=b"0" * 32)
    dispatcher.set_receiver(proxy)
    a.receive(invite_bytes, ("192.0.2.10", 5060))
    message, address = b.sent_messages()[-1]
"""
from __future__ import annotations

import ipaddress
from typing import Any, Callable, Iterable, Mapping, Optional, Union

from zope.interface import implementer

from sipproxy.transport.dispatcher import Dispatcher
from sipproxy.interfaces import ILeg
from sipproxy.transport.legs import _LegIdentity
from sipproxy.sip.message import Message, parse
from sipproxy.transport.resolver import StaticResolver

__all__ = ["MemoryLeg", "memory_dispatcher", "StaticResolver"]


@implementer(ILeg)
class MemoryLeg(_LegIdentity):
    """A leg without a socket.

    @ivar sent: every (data, address) sent through this leg, in order.
    @ivar aliases: what a stream leg was told about peers' Via addresses.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 5060, proto: str = "udp") -> None:
        self.proto = proto
        self._set_address(host, port)
        self.sent: list[tuple[bytes, tuple[str, int]]] = []
        self.aliases: dict[tuple[str, int], tuple[str, int]] = {}

    def listen(self, reactor: Any) -> None:
        """Nothing to bind."""

    def stop(self) -> None:
        """Nothing to close."""

    def send(self, data: bytes, addr: tuple[str, int], on_error: Optional[Callable[[str], Any]] = None) -> None:
        self.sent.append((data, addr))

    def add_alias(self, peer: tuple[str, int], alias: tuple[str, int]) -> None:
        self.aliases[alias] = peer

    def receive(self, data: Union[bytes, Message], addr: tuple[str, int]) -> None:
        """Hand C{data} to the dispatcher as if it arrived from C{addr}."""
        if isinstance(data, Message):
            data = bytes(data)
        if self.proto == "udp" and len(data) < 13:
            return  # what a UDP leg does with keep-alives
        self.dispatcher.message_received(data, self, addr, stream=self.proto != "udp")

    def sent_messages(self) -> list[tuple[Message, tuple[str, int]]]:
        """What was sent, parsed."""
        return [(parse(data, stream=self.proto != "udp"), addr) for data, addr in self.sent]

    def take(self) -> list[tuple[Message, tuple[str, int]]]:
        """What was sent since the last call, parsed; then forget it."""
        messages = self.sent_messages()
        self.sent.clear()
        return messages


def memory_dispatcher(
    legs: Iterable[Any],
    hosts: Optional[Mapping[str, Iterable[str]]] = None,
    **options: Any,
) -> Dispatcher:
    """A real L{Dispatcher} over fake legs, resolving names from C{hosts}
    (anything else does not resolve). Unless C{local_address} is given, the
    fake host "routes" a destination through the leg on its /24 (/64 for
    IPv6) network."""
    legs = list(legs)
    options.setdefault("local_address", subnet_source(legs))
    return Dispatcher(None, legs=legs, resolver=StaticResolver(hosts or {}), **options)


def subnet_source(legs: Iterable[Any]) -> Callable[[str], Optional[str]]:
    """A stand-in for the kernel's source-address choice: the address of the
    first leg on the destination's /24 (or /64) network."""
    legs = list(legs)

    def source(ip: str) -> Optional[str]:
        address = ipaddress.ip_address(ip)
        prefix = 24 if address.version == 4 else 64
        for leg in legs:
            if leg.family == address.version and address in ipaddress.ip_network(f"{leg.host}/{prefix}", strict=False):
                return leg.host
        return None

    return source
