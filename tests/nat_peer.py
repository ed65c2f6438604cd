"""A scripted SIP peer for the NAT tests, run inside a network namespace.

Standard library only, so it behaves the same whatever the proxy does:

- C{phone}: registers a private Contact over UDP or over one TCP
  connection, then answers what arrives on that flow (INVITE with 200,
  BYE and OPTIONS with 200) until its time is up or a BYE ends the call;
- C{caller}: places one call through the proxy and hangs up, following
  the Record-Route set and the remote Contact as a UA must.

Each event is one JSON line on standard output; exit status 0 when the
scripted exchange completed.
"""
from __future__ import annotations

import argparse
import json
import re
import secrets
import socket
import sys
import time
from typing import Optional

CRLF = "\r\n"


def event(name: str, **fields: object) -> None:
    print(json.dumps({"event": name, **fields}), flush=True)


class Message:
    def __init__(self, data: bytes) -> None:
        head, _, self.body = data.partition(b"\r\n\r\n")
        lines = head.decode("utf-8", "replace").split("\r\n")
        self.start = lines[0]
        self.headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers.append((name.strip().lower(), value.strip()))

    @property
    def is_request(self) -> bool:
        return not self.start.startswith("SIP/2.0")

    @property
    def method(self) -> str:
        return self.start.split(" ", 1)[0]

    @property
    def code(self) -> int:
        return int(self.start.split(" ")[1])

    def get(self, name: str) -> Optional[str]:
        for n, v in self.headers:
            if n == name:
                return v
        return None

    def all(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n == name]


class Flow:
    """One UDP socket or one TCP connection to the proxy."""

    def __init__(self, proto: str, local_port: int, proxy: tuple[str, int]) -> None:
        self.proto = proto
        self.proxy = proxy
        self.buffer = b""
        if proto == "udp":
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind(("0.0.0.0", local_port))
        else:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind(("0.0.0.0", local_port))
            self.sock.connect(proxy)
        self.local_address = self.sock.getsockname()

    def send(self, text: str) -> None:
        data = text.encode()
        if self.proto == "udp":
            self.sock.sendto(data, self.proxy)
        else:
            self.sock.sendall(data)

    def receive(self, deadline: float) -> Optional[Message]:
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            if self.proto == "udp":
                try:
                    data, _ = self.sock.recvfrom(65535)
                except socket.timeout:
                    return None
                if data.strip():
                    return Message(data)
                continue
            message = self._framed()
            if message is not None:
                return message
            try:
                chunk = self.sock.recv(65535)
            except socket.timeout:
                return None
            if not chunk:
                event("closed")
                return None
            self.buffer += chunk
        return None

    def _framed(self) -> Optional[Message]:
        self.buffer = self.buffer.lstrip(b"\r\n")
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return None
        match = re.search(rb"(?im)^(?:content-length|l)\s*:\s*(\d+)", self.buffer[:end])
        size = end + 4 + (int(match.group(1)) if match else 0)
        if len(self.buffer) < size:
            return None
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return Message(data)


def via(flow: Flow, host: str) -> str:
    return f"SIP/2.0/{flow.proto.upper()} {host}:{flow.local_address[1]};branch=z9hG4bK{secrets.token_hex(8)};rport"


def response(request: Message, code: int, reason: str, to_tag: str = "", extra: str = "", body: str = "") -> str:
    lines = [f"SIP/2.0 {code} {reason}"]
    for name in ("via", "record-route"):
        lines += [f"{name.title()}: {v}" for v in request.all(name)]
    to = request.get("to") or ""
    if to_tag and "tag=" not in to:
        to += f";tag={to_tag}"
    lines += [f"From: {request.get('from')}", f"To: {to}", f"Call-ID: {request.get('call-id')}",
              f"CSeq: {request.get('cseq')}"]
    if extra:
        lines.append(extra)
    lines.append(f"Content-Length: {len(body)}")
    return CRLF.join(lines) + CRLF + CRLF + body


def run_phone(args: argparse.Namespace) -> int:
    flow = Flow(args.proto, args.local_port, (args.proxy_host, args.proxy_port))
    contact = f"<sip:{args.user}@{args.contact_host}:{flow.local_address[1]};transport={args.proto}>"
    call_id = secrets.token_hex(8)
    from_tag = secrets.token_hex(4)
    register = CRLF.join([
        f"REGISTER sip:{args.domain} SIP/2.0", f"Via: {via(flow, args.contact_host)}", "Max-Forwards: 70",
        f"From: <sip:{args.user}@{args.domain}>;tag={from_tag}", f"To: <sip:{args.user}@{args.domain}>",
        f"Call-ID: {call_id}", "CSeq: 1 REGISTER", f"Contact: {contact}", f"Expires: {args.expires}",
        "Content-Length: 0"]) + CRLF + CRLF
    flow.send(register)
    deadline = time.monotonic() + args.timeout
    registered = False
    answered = False
    tag = secrets.token_hex(4)
    while time.monotonic() < deadline:
        message = flow.receive(deadline)
        if message is None:
            break
        if not message.is_request:
            if message.get("call-id") == call_id and message.code >= 200:
                registered = message.code == 200
                event("registered" if registered else "register_failed", code=message.code)
                if not registered:
                    return 1
            continue
        method = message.method
        event("request", method=method, uri=message.start.split(" ")[1])
        if method == "INVITE":
            sdp = (f"v=0{CRLF}o=- 1 1 IN IP4 {args.contact_host}{CRLF}s=-{CRLF}c=IN IP4 {args.contact_host}{CRLF}"
                   f"t=0 0{CRLF}m=audio 40000 RTP/AVP 0{CRLF}")
            flow.send(response(message, 200, "OK", tag, f"Contact: {contact}\r\nContent-Type: application/sdp", sdp))
            answered = True
        elif method in ("BYE", "OPTIONS", "CANCEL"):
            flow.send(response(message, 200, "OK", tag if method == "BYE" else ""))
            if method == "BYE":
                event("bye")
                return 0 if registered and answered else 1
        elif method != "ACK":
            flow.send(response(message, 405, "Method Not Allowed"))
    if args.until_bye:
        event("timeout")
        return 1
    return 0 if registered else 1


def run_caller(args: argparse.Namespace) -> int:
    flow = Flow(args.proto, args.local_port, (args.proxy_host, args.proxy_port))
    host = flow.local_address[0]
    call_id = secrets.token_hex(8)
    from_tag = secrets.token_hex(4)
    sdp = f"v=0{CRLF}o=- 1 1 IN IP4 {host}{CRLF}s=-{CRLF}c=IN IP4 {host}{CRLF}t=0 0{CRLF}m=audio 40002 RTP/AVP 0{CRLF}"
    invite_via = via(flow, host)
    invite = CRLF.join([
        f"INVITE {args.target} SIP/2.0", f"Via: {invite_via}", "Max-Forwards: 70",
        f"From: <sip:caller@{args.domain}>;tag={from_tag}", f"To: <{args.target}>", f"Call-ID: {call_id}",
        "CSeq: 1 INVITE", f"Contact: <sip:caller@{host}:{flow.local_address[1]};transport={args.proto}>",
        "Content-Type: application/sdp", f"Content-Length: {len(sdp)}"]) + CRLF + CRLF + sdp
    flow.send(invite)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        message = flow.receive(deadline)
        if message is None:
            break
        if message.is_request or message.get("call-id") != call_id:
            continue
        if message.code < 200:
            event("provisional", code=message.code)
            continue
        if message.code >= 300:
            event("failed", code=message.code, reason=message.start.split(" ", 2)[2])
            return 1
        to = message.get("to") or ""
        target = re.search(r"<([^>]*)>", message.get("contact") or "")
        routes = list(reversed(message.all("record-route")))
        event("established", contact=target.group(1) if target else None, routes=routes)
        uri = target.group(1) if target else args.target
        route_lines = [f"Route: {', '.join(routes)}"] if routes else []
        for method, cseq in (("ACK", 1), ("BYE", 2)):
            request = CRLF.join([
                f"{method} {uri} SIP/2.0", f"Via: {via(flow, host)}", "Max-Forwards: 70", *route_lines,
                f"From: <sip:caller@{args.domain}>;tag={from_tag}", f"To: {to}", f"Call-ID: {call_id}",
                f"CSeq: {cseq} {method}", "Content-Length: 0"]) + CRLF + CRLF
            flow.send(request)
        while time.monotonic() < deadline:
            answer = flow.receive(deadline)
            if answer is None:
                break
            if not answer.is_request and (answer.get("cseq") or "").endswith("BYE"):
                event("bye_answered", code=answer.code)
                return 0 if answer.code == 200 else 1
        event("timeout", waiting="BYE answer")
        return 1
    event("timeout", waiting="INVITE answer")
    return 1


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["phone", "caller"])
    parser.add_argument("--proxy", required=True, help="HOST:PORT of the proxy")
    parser.add_argument("--proto", choices=["udp", "tcp"], default="udp")
    parser.add_argument("--domain", default="nat.test")
    parser.add_argument("--user", default="phone")
    parser.add_argument("--target", default="sip:phone@nat.test")
    parser.add_argument("--contact-host", default="10.251.1.2")
    parser.add_argument("--local-port", type=int, default=0)
    parser.add_argument("--expires", type=int, default=300)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--until-bye", action="store_true", help="fail unless a BYE ends a call")
    args = parser.parse_args(argv)
    host, _, port = args.proxy.rpartition(":")
    args.proxy_host, args.proxy_port = host, int(port)
    return run_phone(args) if args.role == "phone" else run_caller(args)


if __name__ == "__main__":
    sys.exit(main())
