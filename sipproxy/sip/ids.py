"""Random identifiers a user agent puts in its requests (RFC 3261 8.1.1).

API::

    new_branch() -> "z9hG4bK" + 96 random bits      (Via branch, 8.1.1.7)
    new_tag() -> 64 random bits as text                (From/To tag, 19.3)
    new_call_id(host) -> "<128 random bits>@host"      (Call-ID, 8.1.1.4)

Each draws from C{secrets}: the RFC asks for identifiers unique across
space and time, and a guessable branch or tag lets a third party forge
a CANCEL or a BYE. The stateless proxy's branches are different on
purpose (derived from the request, so a retransmission gets the same
one) and live in C{sipproxy.proxy.branch}.
"""
from __future__ import annotations

import secrets
from typing import Optional

from sipproxy.sip.message import MAGIC_COOKIE

__all__ = ["new_branch", "new_tag", "new_call_id", "new_cnonce"]


def new_branch() -> str:
    """A fresh RFC 3261 branch: the magic cookie and 96 random bits."""
    return MAGIC_COOKIE + secrets.token_hex(12)


def new_tag() -> str:
    """A fresh From or To tag (64 random bits; 19.3 asks for 32)."""
    return secrets.token_hex(8)


def new_call_id(host: Optional[str] = None) -> str:
    """A fresh Call-ID, C{random@host} when a host is given."""
    token = secrets.token_hex(16)
    return f"{token}@{host}" if host else token


def new_cnonce() -> str:
    """A client nonce for digest C{qop=auth} (RFC 7616 3.4)."""
    return secrets.token_hex(8)
