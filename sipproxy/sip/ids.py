"""Random identifiers a user agent puts in its requests (RFC 3261 8.1.1).

API::

    new_branch() -> "z9hG4bK" + 96 random bits      (Via branch, 8.1.1.7)
    new_tag() -> 64 random bits as text                (From/To tag, 19.3)
    new_call_id(host) -> "<128 random bits>@host"      (Call-ID, 8.1.1.4)
    new_session_id() -> 62 random bits as an int       (SDP o= sess-id)

Each draws from the kernel's random source (C{os.urandom}, as
C{secrets}): the RFC asks for identifiers unique across space and time,
and a guessable branch or tag lets a third party forge a CANCEL or a
BYE. The bytes are read 4 KiB at a time: one system call per identifier
was a tenth of what a call costs a user agent. A forked child drops the
pool it inherited, so parent and child never hand out the same bytes. The stateless proxy's branches are different on
purpose (derived from the request, so a retransmission gets the same
one) and live in C{sipproxy.proxy.branch}.
"""
from __future__ import annotations

import os
import threading
from typing import Optional

from sipproxy.sip.message import MAGIC_COOKIE

__all__ = ["new_branch", "new_tag", "new_call_id", "new_cnonce", "new_session_id"]


_POOL_SIZE = 4096


class _Pool:
    """Random bytes from C{os.urandom}, read a block at a time; each byte
    is handed out once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.forget()

    def forget(self) -> None:
        self.data = b""
        self.position = 0

    def hex(self, size: int) -> str:
        with self.lock:
            start = self.position
            end = start + size
            if end > len(self.data):
                self.data = os.urandom(_POOL_SIZE)
                start, end = 0, size
            self.position = end
            return self.data[start:end].hex()


_pool = _Pool()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_pool.forget)


def new_branch() -> str:
    """A fresh RFC 3261 branch: the magic cookie and 96 random bits."""
    return MAGIC_COOKIE + _pool.hex(12)


def new_tag() -> str:
    """A fresh From or To tag (64 random bits; 19.3 asks for 32)."""
    return _pool.hex(8)


def new_call_id(host: Optional[str] = None) -> str:
    """A fresh Call-ID, C{random@host} when a host is given."""
    token = _pool.hex(16)
    return f"{token}@{host}" if host else token


def new_cnonce() -> str:
    """A client nonce for digest C{qop=auth} (RFC 7616 3.4)."""
    return _pool.hex(8)


def new_session_id() -> int:
    """An SDP session id (RFC 4566 5.2: numeric, unique per host): 62
    random bits, so it stays within a signed 64-bit integer."""
    return int(_pool.hex(8), 16) >> 2
