"""The fields every log line about a SIP message carries.

An operator follows a call through the log by its Call-ID, and filters by
method, response status, the address a packet came from and the leg it
came in on. So every line that concerns a message is logged with the same
five field names (C{call_id}, C{method}, C{status} for responses,
C{source} as C{ip:port}, C{leg}); the JSON log writes them as keys and the
text log prints the Call-ID in brackets (L{sipproxy.app.logging_setup}).

Reading them never raises: the message may be hostile, half parsed or
have a CSeq that is not a number, and a log line must not be what turns
one bad packet into a traceback.
"""
from __future__ import annotations

from typing import Any, Optional

from sipproxy.interfaces import ILeg
from sipproxy.sip.message import Message, Response

__all__ = ["host_port", "message_fields", "address_fields"]


def host_port(addr: Optional[tuple[str, int]]) -> Optional[str]:
    """C{ip:port} (C{[v6]:port}) of a socket address, None for none."""
    if addr is None:
        return None
    try:
        host, port = addr[0], addr[1]
    except (TypeError, IndexError):
        return str(addr)
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def address_fields(addr: Optional[tuple[str, int]] = None, leg: Optional[ILeg] = None) -> dict[str, Any]:
    """C{source} and C{leg} of a packet that could not be read as a message."""
    fields: dict[str, Any] = {}
    if addr is not None:
        fields["source"] = host_port(addr)
    if leg is not None:
        fields["leg"] = getattr(leg, "key", str(leg))
    return fields


def message_fields(message: Optional[Message], addr: Optional[tuple[str, int]] = None,
                   leg: Optional[ILeg] = None) -> dict[str, Any]:
    """C{call_id}, C{method}, C{status} (responses), C{source} and C{leg}
    of a message received from C{addr} on C{leg}. A Call-ID that cannot be
    read is left out; a method that cannot be read is None (so a line
    whose text names C{{method}} is still written)."""
    fields = address_fields(addr, leg)
    if message is None:
        return fields
    if isinstance(message, Response):
        fields["status"] = message.code
        try:  # the method a response answers is CSeq's; a bad CSeq is left out, not raised
            fields["method"] = (message.get("cseq") or "").strip().partition(" ")[2].strip() or None
        except Exception:
            fields["method"] = None
    else:
        fields["method"] = getattr(message, "method", None)
    try:
        call_id = message.get("call-id")
    except Exception:  # a header that cannot be decoded: the line is still written
        call_id = None
    if call_id:
        fields["call_id"] = call_id
    return fields
