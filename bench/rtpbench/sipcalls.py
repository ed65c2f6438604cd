"""Real SIP calls through `sipproxy --nathelper`, so that the RTP load of
the SIP-under-load check runs over sessions the proxy set up itself from
SDP (INVITE with A's SDP, 200 with B's SDP, ACK), not over the ng port.

A minimal UAC (on the first leg's side) and UAS (on the second leg's side)
in one blocking loop: INVITE -> (100/180 ignored) 200 -> ACK along the
route the 200 gives (Record-Route reversed, else its Contact). The SDP the
UAS receives says where B must send; the SDP of the 200 as the UAC
receives it says where A must send.
"""
from __future__ import annotations

import os
import re
import select
import socket
import time
from dataclasses import dataclass, field
from typing import Optional

from .ng import media_target

Endpoint = tuple[str, int]


@dataclass
class Call:
    index: int
    a_media: Endpoint
    b_media: Endpoint
    call_id: str = ""
    branch: str = ""
    invite: bytes = b""
    sent_at: float = 0.0
    tries: int = 0
    b_send_to: Optional[Endpoint] = None
    a_send_to: Optional[Endpoint] = None
    acked: bool = False
    ack_seen: bool = False
    status: int = 0


@dataclass
class CallSetup:
    calls: list[Call] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def established(self) -> int:
        return sum(1 for c in self.calls if c.a_send_to and c.b_send_to and c.acked)


def _headers(msg: bytes) -> tuple[str, list[tuple[str, str]], bytes]:
    head, _, body = msg.partition(b"\r\n\r\n")
    lines = head.decode("utf-8", "replace").split("\r\n")
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name.strip().lower(), value.strip()))
    return lines[0], headers, body


def _get(headers: list[tuple[str, str]], *names: str) -> list[str]:
    return [v for n, v in headers if n in names]


def _sdp(ip: str, port: int, session: int) -> bytes:
    return (f"v=0\r\no=bench {session} 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n").encode()


def _hostport(uri: str) -> Endpoint:
    m = re.search(r"sip:(?:[^@;>]*@)?([0-9.]+)(?::(\d+))?", uri)
    if not m:
        raise ValueError(f"no host in {uri!r}")
    return m.group(1), int(m.group(2) or 5060)


def setup_calls(proxy: Endpoint, uac_ip: str, uas_ip: str, media: list[tuple[Endpoint, Endpoint]],
                timeout: float = 30.0, window: int = 50) -> CallSetup:
    """Set up one call per (A media, B media) pair; at most `window` INVITEs
    outstanding, retransmitted after 1 s (3 tries)."""
    uac = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    uas = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    uac.bind((uac_ip, 0))
    uas.bind((uas_ip, 0))
    uac_port, uas_port = uac.getsockname()[1], uas.getsockname()[1]
    tag = os.urandom(3).hex()
    setup = CallSetup([Call(i, a, b) for i, (a, b) in enumerate(media)])
    by_id = {}
    for call in setup.calls:
        call.call_id = f"rtpbench-{tag}-{call.index}"
        call.branch = f"z9hG4bK-{tag}-{call.index}"
        by_id[call.call_id] = call
        body = _sdp(*call.a_media, call.index)
        call.invite = (
            f"INVITE sip:b{call.index}@{uas_ip}:{uas_port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {uac_ip}:{uac_port};branch={call.branch};rport\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: <sip:a{call.index}@{uac_ip}>;tag=a{tag}{call.index}\r\n"
            f"To: <sip:b{call.index}@{uas_ip}:{uas_port}>\r\n"
            f"Call-ID: {call.call_id}\r\nCSeq: 1 INVITE\r\n"
            f"Contact: <sip:a{call.index}@{uac_ip}:{uac_port}>\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    start = time.monotonic()
    deadline = start + timeout
    pending = list(setup.calls)
    outstanding: list[Call] = []
    all_acked = 0.0
    while time.monotonic() < deadline:
        now = time.monotonic()
        outstanding = [c for c in outstanding if not c.acked and c.tries <= 3]
        while pending and len(outstanding) < window:
            call = pending.pop(0)
            outstanding.append(call)
            call.tries, call.sent_at = 1, now
            uac.sendto(call.invite, proxy)
        for call in outstanding:
            if call.status < 200 and now - call.sent_at > 1.0:
                call.tries += 1
                call.sent_at = now
                if call.tries <= 3:
                    uac.sendto(call.invite, proxy)
        if not pending and not outstanding:
            if all(c.ack_seen or c.tries > 3 for c in setup.calls):
                break
            all_acked = all_acked or now
            if now - all_acked > 2.0:
                break  # some ACKs were not seen at the UAS; the calls still count if the 200 came
        readable, _, _ = select.select([uac, uas], [], [], 0.05)
        for sock in readable:
            data, source = sock.recvfrom(65535)
            first, headers, body = _headers(data)
            call_id = (_get(headers, "call-id", "i") or [""])[0]
            call = by_id.get(call_id)
            if call is None:
                continue
            if sock is uas:
                if first.startswith("INVITE"):
                    if body:
                        call.b_send_to = media_target(body)
                    answer = _sdp(*call.b_media, call.index + 100000)
                    vias = "".join(f"Via: {v}\r\n" for v in _get(headers, "via", "v"))
                    rr = "".join(f"Record-Route: {v}\r\n" for v in _get(headers, "record-route"))
                    to = _get(headers, "to", "t")[0]
                    reply = (f"SIP/2.0 200 OK\r\n{vias}{rr}"
                             f"From: {_get(headers, 'from', 'f')[0]}\r\nTo: {to};tag=b{tag}{call.index}\r\n"
                             f"Call-ID: {call_id}\r\nCSeq: {_get(headers, 'cseq')[0]}\r\n"
                             f"Contact: <sip:b{call.index}@{uas_ip}:{uas_port}>\r\n"
                             f"Content-Type: application/sdp\r\nContent-Length: {len(answer)}\r\n\r\n"
                             ).encode() + answer
                    uas.sendto(reply, source)
                elif first.startswith("ACK"):
                    call.ack_seen = True
            else:
                if not first.startswith("SIP/2.0"):
                    continue
                code = int(first.split()[1])
                if code < 200:
                    call.status = max(call.status, code)
                    continue
                call.status = code
                if code >= 300 or not body:
                    call.acked = True  # a failure (a real UA would ACK it; the proxy absorbs or forwards)
                    continue
                call.a_send_to = media_target(body)
                contact = _get(headers, "contact", "m")[0]
                target_uri = contact.strip("<>").split(">")[0]
                routes = list(reversed(_get(headers, "record-route")))
                route_hdr = "".join(f"Route: {r}\r\n" for r in routes)
                next_hop = _hostport(routes[0]) if routes and ";lr" in routes[0] else _hostport(target_uri)
                to = _get(headers, "to", "t")[0]
                ack = (f"ACK {target_uri} SIP/2.0\r\n"
                       f"Via: SIP/2.0/UDP {uac_ip}:{uac_port};branch={call.branch}-ack;rport\r\n"
                       f"{route_hdr}Max-Forwards: 70\r\n"
                       f"From: {_get(headers, 'from', 'f')[0]}\r\nTo: {to}\r\n"
                       f"Call-ID: {call_id}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n").encode()
                uac.sendto(ack, next_hop)
                call.acked = True
    setup.seconds = time.monotonic() - start
    uac.close()
    uas.close()
    return setup
