"""Media relaying for the stateless proxy (Net::SIP's NATHelper).

  - L{sipproxy.nat.sessions}: which sessions a SIP packet opens, completes
    or closes (C{do_nat}), pure SIP logic over an C{INATHelper};
  - L{sipproxy.nat.relay}: L{LocalRelay}, the RTP relay service, which
    carries out the plans of L{sipproxy.nat.table} (pure bookkeeping:
    groups, sessions, limits, expiry) on the sockets of
    L{sipproxy.nat.sockets} (one epoll set on the reactor), with the
    per-packet path and source learning in L{sipproxy.nat.forward};
  - L{sipproxy.nat.ng}: rtpengine's ng control protocol -- L{NgClient}, an
    C{INATHelper} driving a remote relay (rtpengine or our own), and
    L{NgServer}, which puts a L{LocalRelay} behind ng;
  - L{sipproxy.nat.bencode}: the ng protocol's encoding.

The names below are imported when first used, so the SIP logic
(L{sipproxy.nat.sessions}) can be imported without the socket code.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "LocalRelay": "sipproxy.nat.relay", "parse_port_range": "sipproxy.nat.relay",
    "NgClient": "sipproxy.nat.ng", "NgServer": "sipproxy.nat.ng", "parse_ng_address": "sipproxy.nat.ng",
    "NATSessions": "sipproxy.nat.sessions", "NATError": "sipproxy.nat.sessions", "SessionKey": "sipproxy.nat.sessions",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sipproxy.nat' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
