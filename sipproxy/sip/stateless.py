"""The stateless answer (RFC 3261 8.2.6) and the recognition of the ACK
that answers it, in one place.

A stateless element has no transaction to say which response an ACK
belongs to, so the To tag of every answer it gives is computed from the
request (Call-ID, CSeq number and From): every retransmission gets the
same answer, and the ACK to a non-2xx answer (RFC 3261 17.1.1.3 copies the
To of the response) carries that tag, which is how it is recognised and
ended here instead of being forwarded to a hop that never saw the INVITE
(RFC 3261 17.2.1). Pure: no I/O.
"""
from __future__ import annotations

import hashlib
from typing import Iterable, Optional

from sipproxy.sip.message import Request, Response

__all__ = ["TAG_PREFIX", "stateless_tag", "stateless_answer", "is_ack_to_own_answer"]

#: What every stateless To tag starts with: a cheap test before hashing.
TAG_PREFIX = "sp"


def stateless_tag(request: Request) -> str:
    """The To tag of our answers to C{request} and its retransmissions."""
    # the CSeq number as text: a request refused for its CSeq has none to convert
    number = (request.get("cseq") or "").partition(" ")[0]
    key = f"{request.call_id}|{number}|{request.get('from') or ''}".encode("utf-8", "surrogateescape")
    return TAG_PREFIX + hashlib.md5(key).hexdigest()[:10]


def stateless_answer(request: Request, code: int, reason: Optional[str] = None,
                     headers: Iterable[tuple[str, str]] = ()) -> Response:
    """The response to C{request} with our stateless To tag."""
    return request.create_response(code, reason, headers, to_tag=stateless_tag(request))


def is_ack_to_own_answer(request: Request) -> bool:
    """True for the ACK of a final response we gave statelessly: its To tag
    is our tag for it. Hop-by-hop, it ends here."""
    if request.method != "ACK" or TAG_PREFIX not in (request.get("to") or ""):
        return False  # the usual ACK (to a 2xx) never pays for parsing To
    tag = request.to_tag
    return bool(tag) and tag.startswith(TAG_PREFIX) and tag == stateless_tag(request)
