"""The user agent on real sockets: L{Simple} with its legs bound.

L{sipproxy.ua.simple.Simple} is logic and may not import the transport
(the layer rule of DESIGN.md); it takes a C{transport(reactor, legs)}
callable instead. This wiring module supplies that callable, so::

    from sipproxy import Simple          # this class
    ua = Simple(reactor, legs=["udp:127.0.0.1:5070"], from_="alice")

binds the legs and runs. The C{sipproxy-ua} command uses it too.
"""
from __future__ import annotations

from typing import Any, Sequence

from twisted.internet.interfaces import IReactorTime

from sipproxy.transport.dispatcher import Dispatcher
from sipproxy.transport.legs import make_leg
from sipproxy.transport.legspec import LegSpec, parse_leg_list
from sipproxy.ua import simple

__all__ = ["Simple", "socket_transport"]

#: A user agent's UDP legs see a few messages a second, not a proxy's bursts.
UA_UDP_BUFFER = 256 * 1024


def socket_transport(reactor: IReactorTime, legs: Sequence[Any], tls: Any = None) -> Dispatcher:
    """A dispatcher with C{legs} (specifications) bound on C{reactor}.

    @param tls: L{sipproxy.transport.legs.TLSOptions} for C{tls:} legs;
        pass it with C{functools.partial(socket_transport, tls=...)} as
        C{Simple}'s C{transport}.

    @raise sipproxy.transport.legspec.LegSpecError: for a bad specification.
    @raise twisted.internet.error.CannotListenError: when a port is taken.
    """
    specs = [leg for leg in legs if isinstance(leg, LegSpec)]
    if len(specs) != len(legs):
        specs = parse_leg_list([str(leg) for leg in legs])
    dispatcher = Dispatcher(reactor)
    bound = []
    try:
        for spec in specs:
            leg = make_leg(spec, buffer_size=UA_UDP_BUFFER, tls=tls)
            leg.listen(reactor)
            bound.append(leg)
            dispatcher.add_leg(leg)
    except Exception:
        for leg in bound:
            leg.stop()
        raise
    dispatcher.reindex()
    return dispatcher


class Simple(simple.Simple):
    """L{sipproxy.ua.simple.Simple} binding its C{legs} on the reactor."""

    transport = staticmethod(socket_transport)
