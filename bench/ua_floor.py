#!/usr/bin/env python3
"""The floor of bench/ua_bench.py: the same calls with no SIP stack at all.

A Twisted UDP protocol that sends and answers exactly the datagrams a
user agent exchanges with sipp in ua_bench's two roles, built from
templates by copying the few header lines that must match (Via, From,
To, Call-ID, CSeq). It parses nothing else, keeps no transactions, runs
no timers but the caller's pacing, and retransmits nothing. What it
costs per call is what any Twisted program on this Python pays for the
call's system calls and wake-ups: the part of a UA's CPU that no work in
the SIP stack can remove. Same options and JSON lines as ua_load.py
(whose caller pacing and phases it reuses), so ua_bench runs it as the
UA ``floor``:

    ua_floor.py --mode answer --leg IP:PORT [--max-time S] [--parse]
    ua_floor.py --mode call --leg IP:PORT --to URI --rate R --calls N [--warmup W] [--warmup-rate R2] [--parse]

With ``--parse`` (ua_bench's UA ``floor-parse``) it also parses every
datagram with sipproxy's parser, as a UA's dispatcher does, reads the
fields a UA reads first (Call-ID, CSeq, the top Via, the To tag) and drops
what does not parse: the floor of any user agent built on that parser.

Not a user agent: it assumes a well-behaved sipp on loopback.
"""
from __future__ import annotations

import random
import re
from types import SimpleNamespace
from typing import Optional

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol

from ua_load import Caller, caller_phases, emit, load_arguments, parse_leg

from sipproxy.sip.fastparse import parse

SDP = (b"v=0\r\no=- 1 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
       b"m=audio 9 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n")
COPIED = (b"via:", b"v:", b"from:", b"f:", b"to:", b"t:", b"call-id:", b"i:", b"cseq:")


def header_lines(message: bytes) -> tuple[bytes, list[bytes]]:
    """The start line and the header lines of a datagram."""
    head = message.split(b"\r\n\r\n", 1)[0]
    lines = head.split(b"\r\n")
    return lines[0], lines[1:]


def value_of(lines: list[bytes], *names: bytes) -> Optional[bytes]:
    for line in lines:
        name, _, value = line.partition(b":")
        if name.strip().lower() in names:
            return value.strip()
    return None


def token() -> str:
    """64 bits for a tag, branch or Call-ID: from the Mersenne Twister, so
    the floor pays no system call for them (sipproxy reads 4 KiB of kernel
    randomness at a time, a system call per hundreds of identifiers)."""
    return f"{random.getrandbits(64):016x}"


def parses(data: bytes) -> bool:
    """Whether C{data} parses as a SIP message, after reading what a UA
    reads of every message before it decides anything (--parse)."""
    try:
        message = parse(data)
        message.call_id, message.cseq, message.top_via(), message.to_tag
    except ValueError:  # ParseError is one; so are the field readers' errors
        return False
    return True


class Callee(DatagramProtocol):
    """Answers sipp -sn uac: 100 and 200 to an INVITE, 200 to a BYE."""

    def __init__(self, contact: bytes, sdp: bytes, parsing: bool = False) -> None:
        self.contact = contact
        self.sdp = sdp
        self.parsing = parsing

    def datagramReceived(self, data: bytes, addr: tuple) -> None:
        if self.parsing and not parses(data):
            return
        start, lines = header_lines(data)
        if start.startswith(b"INVITE "):
            copied = [line for line in lines if line.lower().startswith(COPIED)]
            self.transport.write(b"SIP/2.0 100 Trying\r\n" + b"\r\n".join(copied)
                                 + b"\r\nContent-Length: 0\r\n\r\n", addr)
            tag = token().encode()
            tagged = [line + b";tag=" + tag if line.lower().startswith((b"to:", b"t:")) else line
                      for line in copied]
            self.transport.write(b"SIP/2.0 200 OK\r\n" + b"\r\n".join(tagged) + b"\r\nContact: " + self.contact
                                 + b"\r\nContent-Type: application/sdp\r\nContent-Length: "
                                 + str(len(self.sdp)).encode() + b"\r\n\r\n" + self.sdp, addr)
        elif start.startswith(b"BYE "):
            copied = [line for line in lines if line.lower().startswith(COPIED)]
            self.transport.write(b"SIP/2.0 200 OK\r\n" + b"\r\n".join(copied) + b"\r\nContent-Length: 0\r\n\r\n",
                                 addr)


class FloorCall:
    """One call of the caller: its dialog's lines and what ends it."""

    def __init__(self, call_id: str, from_tag: str) -> None:
        self.call_id = call_id
        self.from_tag = from_tag
        self.to_line = b""
        self.established: Deferred = Deferred()
        self.ended: Optional[Deferred] = None
        self.ua: Optional["FloorCaller"] = None

    def bye(self) -> Deferred:
        assert self.ua is not None
        self.ended = Deferred()
        self.ua.send_in_dialog(self, b"BYE", 2)
        return self.ended


class FloorCaller(DatagramProtocol):
    """Calls sipp -sn uas: INVITE, ACK for its 200, and BYE (the Caller
    of ua_load.py starts the calls and hangs up each one when it is up)."""

    def __init__(self, host: str, port: int, target: tuple[str, int], uri: bytes, sdp: bytes,
                 parsing: bool = False) -> None:
        self.local = f"{host}:{port}".encode()
        self.target = target
        self.uri = uri
        self.sdp = sdp
        self.parsing = parsing
        self.calls: dict[bytes, FloorCall] = {}

    def _head(self, method: bytes, call: FloorCall, cseq: int, to_line: bytes) -> bytes:
        return (method + b" " + self.uri + b" SIP/2.0\r\nVia: SIP/2.0/UDP " + self.local + b";branch=z9hG4bK"
                + token().encode() + b";rport\r\nMax-Forwards: 70\r\nFrom: <sip:floor@" + self.local
                + b">;tag=" + call.from_tag.encode() + b"\r\n" + to_line + b"\r\nCall-ID: " + call.call_id.encode()
                + b"\r\nCSeq: " + str(cseq).encode() + b" " + method + b"\r\nContact: <sip:floor@" + self.local
                + b">\r\n")

    def invite(self, to: str) -> Deferred:
        call = FloorCall(token() + "@floor", token())
        call.ua = self
        self.calls[call.call_id.encode()] = call
        message = (self._head(b"INVITE", call, 1, b"To: <" + self.uri + b">")
                   + b"Content-Type: application/sdp\r\nContent-Length: " + str(len(self.sdp)).encode()
                   + b"\r\n\r\n" + self.sdp)
        self.transport.write(message, self.target)
        return call.established

    def send_in_dialog(self, call: FloorCall, method: bytes, cseq: int) -> None:
        self.transport.write(self._head(method, call, cseq, call.to_line) + b"Content-Length: 0\r\n\r\n",
                             self.target)

    def datagramReceived(self, data: bytes, addr: tuple) -> None:
        if self.parsing and not parses(data):
            return
        start, lines = header_lines(data)
        if not start.startswith(b"SIP/2.0 200"):
            return  # 100/180: nothing to do
        call = self.calls.get(value_of(lines, b"call-id", b"i") or b"")
        cseq = value_of(lines, b"cseq") or b""
        if call is None:
            return
        if cseq.endswith(b"INVITE"):
            if call.to_line:
                return  # a retransmitted 200
            to_line = next((line for line in lines if line.lower().startswith((b"to:", b"t:"))), None)
            if to_line is None:
                return  # not sipp's answer: nothing to build the ACK from
            call.to_line = to_line
            self.send_in_dialog(call, b"ACK", 1)
            call.established.callback(call)
        elif cseq.endswith(b"BYE"):
            del self.calls[call.call_id.encode()]
            if call.ended is not None:
                call.ended.callback(SimpleNamespace(code=200))


def target_of(uri: str) -> tuple[str, int]:
    """(IPv4 address, port) of a C{sip:user@a.b.c.d:port} URI, the only
    kind ua_bench passes; anything else is one line and exit status 1."""
    match = re.fullmatch(r"sip:[^@\s]+@(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})", uri)
    if match is None or not 0 < int(match.group(2)) < 65536:
        raise SystemExit(f"bad --to {uri!r}: expected sip:user@IPv4:port")
    return match.group(1), int(match.group(2))


def main() -> None:
    parser = load_arguments(__doc__.split("\n\n")[0])
    parser.add_argument("--parse", action="store_true", help="parse every datagram with sipproxy's parser first")
    args = parser.parse_args()
    proto, host, port = parse_leg(args.leg)
    if proto != "udp" or ":" in host:
        raise SystemExit("the floor UA speaks UDP over IPv4 only")
    sdp = SDP.replace(b"{host}", host.encode())
    reactor.callLater(args.max_time, reactor.stop)
    if args.mode == "answer":
        reactor.listenUDP(port, Callee(f"<sip:floor@{host}:{port}>".encode(), sdp, args.parse), interface=host)
        emit(event="ready")
    else:
        phases = caller_phases(args)
        ua = FloorCaller(host, port, target_of(args.to), args.to.encode(), sdp, args.parse)
        reactor.listenUDP(port, ua, interface=host)
        emit(event="ready")
        caller = Caller(ua, args.to, phases, reactor.stop)
        reactor.callWhenRunning(caller.start_phase)
    reactor.addSystemEventTrigger("after", "shutdown", lambda: emit(event="done"))
    reactor.run()


if __name__ == "__main__":
    main()
