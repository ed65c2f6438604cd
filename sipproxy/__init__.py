"""sipproxy: a SIP stack for Twisted.

A stateless proxy, a registrar, a NAT helper relaying RTP and digest
authentication, after the Perl library Net::SIP, as Twisted services. The
names a Net::SIP user looks for are here, imported when first used (so
C{import sipproxy.sip.message} stays free of Twisted)::

    from sipproxy import ProxyService, StatelessProxy, ReceiveChain, Registrar

Start with L{sipproxy.sip.message} (parse and serialise), L{sipproxy.proxy.stateless}
(C{StatelessProxy}), L{sipproxy.app.service} (C{ProxyService}) and
L{sipproxy.app.tap} (the C{twistd sipproxy} plugin).
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    # sip: the pure message layer
    "parse": "sipproxy.sip.message", "ParseError": "sipproxy.sip.message", "Request": "sipproxy.sip.message",
    "Response": "sipproxy.sip.message", "parse_uri": "sipproxy.sip.uri", "parse_sdp": "sipproxy.sip.sdp",
    # transport
    "Dispatcher": "sipproxy.transport.dispatcher",
    # proxy, registrar, access
    "StatelessProxy": "sipproxy.proxy.stateless", "Registrar": "sipproxy.registrar.registrar",
    "Redirect": "sipproxy.registrar.redirect", "ReceiveChain": "sipproxy.access.chain",
    "Authorize": "sipproxy.access.digest_auth", "Users": "sipproxy.access.digest_auth",
    "Blocker": "sipproxy.access.filters", "Dropper": "sipproxy.access.filters",
    "Domains": "sipproxy.access.domains", "RelayGuard": "sipproxy.access.domains",
    "FrontDoor": "sipproxy.access.front_chain",
    # stores, nat
    "MemoryStore": "sipproxy.registrar.memory_store", "LocalRelay": "sipproxy.nat.relay", "NgClient": "sipproxy.nat.ng",
    # ua: the Simple with sockets is wiring (sipproxy.app.ua); its logic is sipproxy.ua.simple
    "Call": "sipproxy.ua.call", "SIPError": "sipproxy.ua.endpoint", "Endpoint": "sipproxy.ua.endpoint",
    # app
    "ProxyService": "sipproxy.app.service", "Simple": "sipproxy.app.ua",
}
__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sipproxy' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
