"""Service wiring: legs, dispatcher and proxy under one MultiService.

This is what C{twistd sipproxy} runs and what an application embeds::

    from twisted.internet import reactor
    from sipproxy.app.service import ProxyService

    proxy = ProxyService(reactor, ["udp:127.0.0.1:5060"], secret_file="sipproxy.secret")
    proxy.startService()
    reactor.run()
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

from twisted.application.service import MultiService, Service

from sipproxy.observe.logsafe import SafeLogger
from sipproxy.access.chain import ReceiveChain
from sipproxy.transport.dispatcher import Dispatcher
from sipproxy.transport.legs import DEFAULT_BUFFER, make_leg
from sipproxy.transport.legspec import LegSpec, parse_leg_list
from sipproxy.transport.stream_guard import ConnectionGuard, StreamLimits
from sipproxy.proxy.stateless import StatelessProxy
from sipproxy.proxy.contact_tokens import DEFAULT_DIALOG_LIFETIME
from sipproxy.proxy.routing import parse_proxy
from sipproxy.app.secret import load_or_create
from sipproxy.sip.uri import URI
from sipproxy.interfaces import IDispatcher, ILeg

__all__ = ["LegService", "ProxyService"]

log = SafeLogger()


class LegService(Service):
    """One leg as a service: binds at (privileged) start, closes at stop."""

    def __init__(self, leg: ILeg, reactor: Any) -> None:
        self.leg = leg
        self.reactor = reactor
        self.name = leg.key
        self._bound = False

    def privilegedStartService(self) -> None:
        if not self._bound:
            self.leg.listen(self.reactor)
            self._bound = True
            if self.leg.dispatcher is not None:
                self.leg.dispatcher.reindex()
            log.info("listening on {leg}", leg=self.leg.key)
        super().privilegedStartService()

    def startService(self) -> None:
        self.privilegedStartService()
        super().startService()

    def stopService(self) -> Any:
        super().stopService()
        self._bound = False
        return self.leg.stop()


class ProxyService(MultiService):
    """A stateless proxy with its legs, as one service.

    @param reactor: the reactor the legs listen on.
    @param legs: leg specifications (C{"udp:127.0.0.1:5060"} strings,
        comma lists, or L{LegSpec}s).
    @param secret: key material shared by workers and nodes; or
        C{secret_file}, read (or created) at construction.
    @param receivers: receivers tried before the proxy (registrar,
        authorizer, ...), as a L{ReceiveChain}. An item may also be a
        factory: a callable taking the dispatcher and returning a receiver
        or a list of them (e.g. L{sipproxy.access.front_chain.FrontDoor}).
    @param nathelper: an L{sipproxy.interfaces.INATHelper} (e.g.
        L{sipproxy.nat.LocalRelay} or L{sipproxy.nat.NgClient}); when it is
        a C{Service} without a parent it becomes a child of this one.
    @param reuse_port: bind legs with C{SO_REUSEPORT}, so several worker
        processes share them (see L{sipproxy.app.workers}).
    @param tls: L{sipproxy.transport.legs.TLSOptions} for C{tls:} legs.
    @param tcp_limits: the L{StreamLimits} of TCP and TLS legs (connections
        in total and per IP, write queue, send, read and idle timeouts);
        C{tcp_idle}, when given, overrides its idle timeout.
    @param token_lifetime: seconds a dialog's Contact token stays good
        (L{sipproxy.proxy.contact_tokens}).
    @ivar dispatcher: the L{Dispatcher}.
    @ivar proxy: the L{StatelessProxy}.
    """

    def __init__(
        self,
        reactor: Any,
        legs: Iterable[Union[str, LegSpec]],
        *,
        secret: Optional[bytes] = None,
        secret_file: Optional[str] = None,
        outgoing_proxy: Union[str, URI, None] = None,
        domain2proxy: Optional[Mapping[str, Union[str, URI]]] = None,
        force_rewrite: bool = False,
        nat_flows: bool = True,
        rewrite_contact: Any = None,
        nathelper: Any = None,
        resolver: Any = None,
        receivers: Sequence[Any] = (),
        udp_buffer: int = DEFAULT_BUFFER,
        tcp_idle: Optional[float] = None,
        tcp_limits: Optional[StreamLimits] = None,
        reuse_port: bool = False,
        tls: Any = None,
        token_lifetime: float = DEFAULT_DIALOG_LIFETIME,
    ) -> None:
        super().__init__()
        specs = [leg if isinstance(leg, LegSpec) else None for leg in legs]
        if None in specs:
            specs = parse_leg_list([str(leg) for leg in legs])
        if secret is None and secret_file is not None:
            secret = load_or_create(secret_file)
        if isinstance(outgoing_proxy, str):
            outgoing_proxy = parse_proxy(outgoing_proxy)
        table = {d.lower(): parse_proxy(p) if isinstance(p, str) else p for d, p in (domain2proxy or {}).items()}
        self.dispatcher = Dispatcher(reactor, resolver=resolver, outgoing_proxy=outgoing_proxy,
                                     domain2proxy=table)
        limits = tcp_limits or StreamLimits()
        if tcp_idle is not None:
            limits = replace(limits, idle_timeout=tcp_idle)
        #: the connection counts shared by every TCP/TLS leg of the process
        self.stream_guard = ConnectionGuard(limits, reactor) if any(s.proto != "udp" for s in specs) else None
        self.legs = [make_leg(spec, buffer_size=udp_buffer, reuse_port=reuse_port, tls=tls, limits=limits,
                              guard=self.stream_guard) for spec in specs]
        for leg in self.legs:
            self.dispatcher.add_leg(leg)
            LegService(leg, reactor).setServiceParent(self)
        self.proxy = StatelessProxy(self.dispatcher, rewrite_contact=rewrite_contact, nathelper=nathelper,
                                    force_rewrite=force_rewrite, secret=secret, clock=reactor,
                                    token_lifetime=token_lifetime, nat_flows=nat_flows)
        if isinstance(nathelper, Service) and nathelper.parent is None:
            nathelper.setServiceParent(self)  # the relay's expiry timer / the ng client's socket
        receivers = _built(receivers, self.dispatcher)
        #: the receivers before the proxy, with the proxy last (None: the
        #: proxy receives directly); a reload swaps its receivers
        self.chain: Optional[ReceiveChain] = None
        if receivers:
            self.chain = ReceiveChain([*receivers, self.proxy])
            self.dispatcher.set_receiver(self.chain)
        else:
            self.dispatcher.set_receiver(self.proxy)


def _built(receivers: Sequence[Any], dispatcher: IDispatcher) -> list[Any]:
    """Receivers, with factories called with the dispatcher."""
    from sipproxy.interfaces import IReceiver

    out: list[Any] = []
    for item in receivers:
        if not IReceiver.providedBy(item) and callable(item):
            made = item(dispatcher)
            out.extend(made if isinstance(made, (list, tuple)) else [made])
        else:
            out.append(item)
    return out
