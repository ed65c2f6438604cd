"""Host name resolution for the dispatcher (an edge module).

The default asks the reactor's own name resolver (getaddrinfo in a thread,
both address families). NAPTR and SRV (RFC 3263) will sit on top of the same
L{IHostResolver} seam; tests pass L{StaticResolver}.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IResolutionReceiver
from zope.interface import implementer

from sipproxy.interfaces import IHostResolver

__all__ = ["ReactorHostResolver", "StaticResolver"]


@implementer(IResolutionReceiver)
class _Collector:
    def __init__(self, deferred: Deferred) -> None:
        self.deferred = deferred
        self.addresses: list[str] = []

    def resolutionBegan(self, resolution: Any) -> None:
        pass

    def addressResolved(self, address: Any) -> None:
        host = address.host
        if host not in self.addresses:
            self.addresses.append(host)

    def resolutionComplete(self) -> None:
        self.deferred.callback(self.addresses)


@implementer(IHostResolver)
class ReactorHostResolver:
    """A/AAAA lookups through C{reactor.nameResolver}."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor

    def resolve_host(self, name: str) -> Deferred:
        d: Deferred = Deferred()
        self._reactor.nameResolver.resolveHostName(
            _Collector(d), name, 0, addressTypes=(IPv4Address, IPv6Address), transportSemantics="UDP"
        )
        return d


@implementer(IHostResolver)
class StaticResolver:
    """A fixed table of names to addresses; unknown names resolve to
    nothing (like NXDOMAIN)."""

    def __init__(self, table: Mapping[str, Iterable[str]]) -> None:
        self.table = {name.lower(): list(addrs) for name, addrs in table.items()}
        self.queries: list[str] = []

    def resolve_host(self, name: str) -> Deferred:
        self.queries.append(name)
        return succeed(list(self.table.get(name.lower(), [])))
