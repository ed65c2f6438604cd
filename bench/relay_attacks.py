#!/usr/bin/env python3
"""The media relay attacked on loopback: injection, hijack, port exhaustion.

    python bench/relay_attacks.py

Drives a LocalRelay on the real reactor through its public API only
(allocate_sockets, activate_session, close_session, expire), so the same
script measures any version of the relay. Prints one line per attack:

  inject     after both phones sent, an attacker sends 20 packets to the
             caller's relay port: how many reach the callee
  steal      the attacker sends one packet to each relay port before the
             phones' first; the caller sends one packet, then both phones
             send 10: does the callee's media go to the attacker, and how
             many of the caller's packets does the attacker get
  spray      the same with a blind spray over the whole port range
  lockout    the same, then 10 s (expiry runs) before the phones send:
             how much of their media reaches each other, and the attacker
  after-bye  packets the phones send after BYE that are still forwarded
  range      one INVITE with m=audio 40000/400 on a 1000-port range:
             sockets it takes
  flood      50 unanswered INVITEs fill a 100-port range: when can a new
             call get ports again (seconds, by the relay's own expiry)
  emfile     RLIMIT_NOFILE lowered: what an allocation that runs out of
             descriptors raises, and how many sockets it leaves open

Loopback only; bounded (every wait is at most 2 s); no sleeps but
reactor iterations.
"""
from __future__ import annotations

import os
import random
import resource
import socket
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from twisted.internet import epollreactor  # noqa: E402

epollreactor.install()
from twisted.internet import reactor  # noqa: E402
from twisted.internet.task import Clock  # noqa: E402

from sipproxy.nat.relay import LocalRelay  # noqa: E402
from sipproxy.nat.sessions import SessionKey  # noqa: E402
from sipproxy.sip.sdp import parse_sdp  # noqa: E402

HOST = "127.0.0.1"


def sdp(port: int, media: str = "") -> object:
    media = media or f"m=audio {port} RTP/AVP 0"
    return parse_sdp((f"v=0\r\no=- 1 1 IN IP4 {HOST}\r\ns=-\r\nc=IN IP4 {HOST}\r\nt=0 0\r\n{media}\r\n").encode())


def key(call_id: str, cseq=1) -> SessionKey:
    return SessionKey(call_id, cseq, "tag=A", "tag=B", "sip:a@x", "sip:b@y", "A", "B", HOST, HOST)


def sock() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((HOST, 0))
    s.setblocking(False)
    return s


def drain(s: socket.socket) -> list[bytes]:
    got = []
    while True:
        try:
            got.append(s.recv(2048))
        except BlockingIOError:
            return got


def settle(*socks: socket.socket, want: int = 0, limit: float = 0.3) -> list[list[bytes]]:
    """Iterate the reactor until C{want} datagrams arrived in all, or C{limit} s."""
    got: list[list[bytes]] = [[] for _ in socks]
    end = time.monotonic() + limit
    while time.monotonic() < end:
        reactor.iterate(0.01)
        for n, s in enumerate(socks):
            got[n] += drain(s)
        if want and sum(map(len, got)) >= want:
            break
    return got


class Call:
    def __init__(self, relay: LocalRelay, name: str) -> None:
        self.a, self.b = sock(), sock()
        self.key = key(name)
        (to_b,) = relay.allocate_sockets(self.key, 0, HOST, sdp(self.a.getsockname()[1]))
        (to_a,) = relay.allocate_sockets(self.key, 1, HOST, sdp(self.b.getsockname()[1]))
        assert relay.activate_session(self.key) == 1
        self.to_a = (HOST, to_a.port)  # the caller sends here
        self.to_b = (HOST, to_b.port)  # the callee sends here

    def close(self) -> None:
        self.a.close()
        self.b.close()


def relay_for(low: int, high: int, **options) -> LocalRelay:
    return LocalRelay(reactor, port_range=(low, high), rng=random.Random(1), **options)


def inject() -> str:
    relay = relay_for(41000, 41099)
    call, attacker = Call(relay, "inject"), sock()
    call.a.sendto(b"a1", call.to_a)
    call.b.sendto(b"b1", call.to_b)
    settle(call.a, call.b, want=2)
    for n in range(20):
        attacker.sendto(b"x%d" % n, call.to_a)
    call.a.sendto(b"a2", call.to_a)
    _, at_b = settle(call.a, call.b, want=21, limit=0.5)
    forwarded = sum(1 for d in at_b if d.startswith(b"x"))
    relay.close_all()
    call.close()
    attacker.close()
    return f"inject     20 injected after latching, {forwarded} forwarded to the callee"


def steal(spray: bool) -> str:
    relay = relay_for(41100, 41199)
    call, attacker = Call(relay, "steal"), sock()
    targets = [(HOST, p) for p in range(41100, 41200)] if spray else [call.to_a, call.to_b]
    for target in targets:
        attacker.sendto(b"x", target)
    settle(call.a, call.b, limit=0.1)
    call.a.sendto(b"a1", call.to_a)
    settle(call.a, call.b, want=1, limit=0.3)
    for n in range(10):
        call.b.sendto(b"b%d" % n, call.to_b)
        call.a.sendto(b"a%d" % n, call.to_a)
    at_a, at_b, at_x = settle(call.a, call.b, attacker, want=20, limit=0.5)
    stolen = sum(1 for d in at_x if d.startswith(b"b"))
    leaked = sum(1 for d in at_x if d.startswith(b"a"))
    name = "spray " if spray else "steal "
    relay.close_all()
    call.close()
    attacker.close()
    verdict = "STOLEN" if stolen else "not stolen"
    return (f"{name}     {len(targets)} packet(s) before the phones: {verdict}; the attacker got {stolen}/10 "
            f"of the callee's packets (the caller {sum(1 for d in at_a if d.startswith(b'b'))}/10) and "
            f"{leaked}/11 of the caller's")


def lockout() -> str:
    clock = Clock()
    relay = LocalRelay(reactor, port_range=(41300, 41399), rng=random.Random(1), clock=clock)
    call, attacker = Call(relay, "lockout"), sock()
    attacker.sendto(b"x", call.to_a)
    attacker.sendto(b"x", call.to_b)
    settle(call.a, call.b, attacker, limit=0.1)
    for seconds in range(1, 11):  # early media: the phones stay silent for 10 s
        relay.expire(float(seconds))
    call.a.sendto(b"a0", call.to_a)
    call.b.sendto(b"b0", call.to_b)
    settle(call.a, call.b, attacker, limit=0.1)
    for n in range(1, 11):
        call.a.sendto(b"a%d" % n, call.to_a)
        call.b.sendto(b"b%d" % n, call.to_b)
    at_a, at_b, at_x = settle(call.a, call.b, attacker, want=20, limit=0.5)
    relay.close_all()
    call.close()
    attacker.close()
    to_x = sum(1 for d in at_x if d[:1] in (b"a", b"b"))
    return (f"lockout    one packet per port, then 10 s of silence; after each phone's first packet they exchange "
            f"{sum(1 for d in at_a if d.startswith(b'b')) + sum(1 for d in at_b if d.startswith(b'a'))}/20, "
            f"the attacker gets {to_x}/20")


def after_bye() -> str:
    relay = relay_for(41200, 41299)
    call = Call(relay, "bye")
    call.a.sendto(b"a1", call.to_a)
    settle(call.a, call.b, want=1)
    relay.close_session(key("bye", cseq=None), reason="bye")
    for n in range(10):
        call.a.sendto(b"late%d" % n, call.to_a)
    _, at_b = settle(call.a, call.b, want=10, limit=0.3)
    relay.close_all()
    call.close()
    return f"after-bye  10 packets sent after BYE, {len(at_b)} forwarded"


def range_taken() -> str:
    relay = relay_for(42000, 42999)
    got = relay.allocate_sockets(key("big"), 0, HOST, sdp(40000, "m=audio 40000/400 RTP/AVP 0"))
    taken = relay.socket_count
    relay.close_all()
    return f"range      one INVITE with m=audio 40000/400, 1000-port range: {taken} sockets taken " \
           f"({'allocated' if got else 'refused'})"


def flood() -> str:
    clock = Clock()
    relay = LocalRelay(reactor, port_range=(43000, 43099), rng=random.Random(1), clock=clock)
    accepted = sum(1 for n in range(60) if relay.allocate_sockets(key(f"f{n}"), 0, HOST, sdp(40000)))
    victim = None
    for seconds in range(1, 400):
        relay.expire(float(seconds))
        if relay.allocate_sockets(key(f"victim{seconds}"), 0, HOST, sdp(40000)):
            victim = seconds
            break
    relay.close_all()
    return f"flood      {accepted} unanswered INVITEs took the 100-port range; a new call got ports after " \
           f"{victim if victim is not None else '>400'} s"


def emfile() -> str:
    relay = relay_for(44000, 44199)
    before = len(os.listdir("/proc/self/fd"))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (before + 9, hard))
    three = "m=audio 40000 RTP/AVP 0\r\nm=audio 40002 RTP/AVP 0\r\nm=audio 40004 RTP/AVP 0"
    outcomes = []
    try:
        for n in range(3):
            try:
                got = relay.allocate_sockets(key(f"e{n}"), 0, HOST, sdp(40000, three))
                outcomes.append("ok" if got else "refused")
            except Exception as e:  # noqa: BLE001 -- the point is to see it
                outcomes.append(type(e).__name__ + f"({getattr(e, 'errno', '')})")
        relay.close_all()
        left = len(os.listdir("/proc/self/fd")) - before
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return f"emfile     three 6-socket calls with room for 8 descriptors: {', '.join(outcomes)}; " \
           f"after close_all {left} descriptor(s) left open (the epoll set counts 1)"


def main() -> int:
    print(f"relay attacks, {sys.implementation.name} {sys.version.split()[0]}")
    for attack in (inject, lambda: steal(False), lambda: steal(True), lockout, after_bye, range_taken, flood, emfile):
        print(" ", attack())
    return 0


if __name__ == "__main__":
    sys.exit(main())
