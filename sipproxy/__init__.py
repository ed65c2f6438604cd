"""sipproxy: a SIP stack for Twisted.

A stateless proxy, a registrar, a NAT helper relaying RTP and digest
authentication, after the Perl library Net::SIP, as Twisted services. The
names a Net::SIP user looks for are here, imported when first used (so
C{import sipproxy.message} stays free of Twisted)::

    from sipproxy import ProxyService, StatelessProxy, ReceiveChain, Registrar

Start with L{sipproxy.message} (parse and serialise), L{sipproxy.proxy}
(C{StatelessProxy}), L{sipproxy.service} (C{ProxyService}) and
L{sipproxy.tap} (the C{twistd sipproxy} plugin).
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "parse": "sipproxy.message", "ParseError": "sipproxy.message", "Request": "sipproxy.message",
    "Response": "sipproxy.message", "parse_uri": "sipproxy.uri", "parse_sdp": "sipproxy.sdp",
    "StatelessProxy": "sipproxy.proxy", "ReceiveChain": "sipproxy.chain", "Dispatcher": "sipproxy.dispatcher",
    "Registrar": "sipproxy.registrar", "Authorize": "sipproxy.auth", "Blocker": "sipproxy.receivers",
    "Redirect": "sipproxy.receivers", "Dropper": "sipproxy.receivers", "LocalRelay": "sipproxy.nat.relay",
    "NgClient": "sipproxy.nat.ng", "ProxyService": "sipproxy.service",
}
__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sipproxy' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
