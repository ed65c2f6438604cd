"""Via branches for a stateless proxy (RFC 3261 16.6 step 8, 16.11).

A branch is a deterministic function of the request, so a retransmission,
the CANCEL and the ACK of a non-2xx response get the same branch as the
INVITE downstream. It has three parts after the magic cookie and the
proxy's prefix (derived from the shared secret, so every worker and node
with the same secret recognises it):

  z9hG4bK <prefix: 6 hex> <incoming leg: 2 hex> <loop: 8 hex> <transaction: 16 hex>

The incoming leg sends a response back out of the leg its request came in
on. The loop part hashes what does not change when a request loops back
(Request-URI, Call-ID, From, CSeq number, Route) and lets the proxy tell a
loop from a spiral (RFC 3261 16.3 item 4). The transaction part hashes the
incoming top Via branch (or, for an RFC 2543 client, the fields that
identify its transaction). Pure: no I/O.
"""
from __future__ import annotations

import hashlib
from typing import Any, Callable, Optional

from sipproxy.sip.message import MAGIC_COOKIE, Request
from sipproxy.sip.keys import derive

__all__ = ["BranchMaker"]

_PREFIX_HEX = 6
_LEG_HEX = 2
_LOOP_HEX = 8
_TXN_HEX = 16
#: every leg part a branch of ours can carry
_LEG_PARTS = frozenset(f"{i:02x}" for i in range(256))


def _builtin_md5() -> Callable[[bytes], Any]:
    """CPython's own MD5 when it has one: the same digest as OpenSSL's, for
    about half the cost on a cold cache (as at a few hundred calls per
    second), where OpenSSL's set-up took about 5% of the proxy's time:
    two digests per forwarded request."""
    try:
        from _md5 import md5
    except ImportError:  # an interpreter built without it
        return hashlib.md5
    return md5


_MD5 = _builtin_md5()


def _md5(*parts: str) -> str:
    return _MD5("\x00".join(parts).encode("utf-8", "surrogateescape")).hexdigest()


class BranchMaker:
    """Computes and reads this proxy's branches."""

    def __init__(self, secret: bytes) -> None:
        self.prefix = MAGIC_COOKIE + derive(secret, "via-branch", 3).hex()
        self._leg_at = len(self.prefix)
        self._loop_at = self._leg_at + _LEG_HEX
        self._txn_at = self._loop_at + _LOOP_HEX

    def loop_part(self, request: Request) -> str:
        """Hash of what a looped request keeps (take it as received)."""
        cseq = request.get("cseq") or ""
        return _md5(
            request.uri,
            request.call_id,
            request.get("from") or "",
            cseq.partition(" ")[0],
            ",".join(request.get_all("route")) if "route" in request.names else "",
        )[:_LOOP_HEX]

    @staticmethod
    def transaction_part(request: Request) -> str:
        """Hash identifying the incoming transaction: its top Via branch
        when RFC 3261 compliant, else the fields RFC 3261 17.2.3 falls back
        on (without the To tag, which the ACK of a non-2xx adds)."""
        via = request.top_via()
        if via is not None:
            branch = via.branch
            if branch and len(branch) > len(MAGIC_COOKIE) and branch.startswith(MAGIC_COOKIE):
                return _md5(branch, via.sent_by)[:_TXN_HEX]
        cseq = request.get("cseq") or ""
        return _md5(
            request.get("via") or "",
            request.call_id,
            cseq.partition(" ")[0],
            request.get("from") or "",
            request.uri,
        )[:_TXN_HEX]

    def branch(self, request: Request, incoming_leg_index: int, loop: Optional[str] = None) -> str:
        """The branch for forwarding C{request} that came in on the leg with
        index C{incoming_leg_index}."""
        if loop is None:
            loop = self.loop_part(request)
        return f"{self.prefix}{incoming_leg_index & 0xFF:02x}{loop}{self.transaction_part(request)}"

    def is_ours(self, branch: Optional[str]) -> bool:
        """True for a branch this proxy made: its prefix, its length, and a
        leg part of two lower-case hex digits (a forged one must not make
        L{incoming_leg} fail, or pick a leg by a negative index)."""
        return (bool(branch) and branch.startswith(self.prefix) and len(branch) == self._txn_at + _TXN_HEX
                and branch[self._leg_at:self._loop_at] in _LEG_PARTS)

    def incoming_leg(self, branch: str) -> int:
        """The leg index written into one of our branches."""
        return int(branch[self._leg_at : self._loop_at], 16)

    def loop_of(self, branch: str) -> str:
        return branch[self._loop_at : self._txn_at]
