"""Message builders shared by the tests: small, explicit SIP texts."""
from __future__ import annotations

from typing import Optional, Sequence

CRLF = "\r\n"


def request(
    method: str = "INVITE",
    uri: str = "sip:bob@198.51.100.20",
    via: str = "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKuac1",
    headers: Sequence[tuple[str, str]] = (),
    body: str = "",
    call_id: str = "call-1@192.0.2.10",
    cseq: int = 1,
    cseq_method: Optional[str] = None,
    from_: str = "<sip:alice@atlanta.example.com>;tag=alice1",
    to: str = "<sip:bob@biloxi.example.com>",
    max_forwards: Optional[int] = 70,
    contact: Optional[str] = "<sip:alice@192.0.2.10:5060>",
    extra_vias: Sequence[str] = (),
) -> bytes:
    """A request as a UA would send it (bytes)."""
    lines = [f"{method} {uri} SIP/2.0", f"Via: {via}"]
    lines += [f"Via: {v}" for v in extra_vias]
    if max_forwards is not None:
        lines.append(f"Max-Forwards: {max_forwards}")
    lines += [f"From: {from_}", f"To: {to}", f"Call-ID: {call_id}", f"CSeq: {cseq} {cseq_method or method}"]
    if contact is not None:
        lines.append(f"Contact: {contact}")
    lines += [f"{name}: {value}" for name, value in headers]
    lines.append(f"Content-Length: {len(body.encode())}")
    return (CRLF.join(lines) + CRLF + CRLF + body).encode()


SDP_OFFER = (
    "v=0\r\no=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\ns=-\r\n"
    "c=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)
