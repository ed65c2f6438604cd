#!/usr/bin/env python3
"""Per-packet CPU of LocalRelay's forwarding path, in one process, on
loopback, with no generator to keep up.

    python bench/relay_micro.py [--streams 50] [--rounds 2000] [--repeat 3]

A LocalRelay on the real (epoll) reactor relays C{--streams} calls set up
through its public API (allocate_sockets side 0 and 1, activate_session).
Every round, each phone of every call sends one 172-byte RTP packet to
its relay port; the reactor is iterated (C{reactor.iterate(0)}) until
every packet arrived at the far phone, which reads it. The process CPU
time per relayed packet is printed: it includes the phones' sendto and
recvfrom (the same for any relay version), so compare versions with it,
not with other relays. Bounded: at most C{--rounds} rounds and 60 s per
repeat. Loopback only.

Why not bench/run_rtp.py: on 2 shared vCPUs its generator falls behind
(steps marked GEN), and its figures move by 30% between runs; this one
has no second process to schedule.
"""
from __future__ import annotations

import argparse
import os
import random
import resource
import socket
import struct
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from twisted.internet import epollreactor  # noqa: E402

epollreactor.install()
from twisted.internet import reactor  # noqa: E402

from sipproxy.nat.relay import LocalRelay  # noqa: E402
from sipproxy.nat.sessions import SessionKey  # noqa: E402
from sipproxy.sip.sdp import parse_sdp  # noqa: E402

PACKET = struct.pack("!BBHII", 0x80, 0, 1, 160, 0x1234) + b"\xff" * 160


def sdp(host: str, port: int) -> bytes:
    return (f"v=0\r\no=- 1 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 0\r\n").encode()


def phone() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    return sock


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run(streams: int, rounds: int, seed: int) -> tuple[float, int]:
    relay = LocalRelay(reactor, port_range=(40000, 40999), rng=random.Random(seed))
    calls = []
    for n in range(streams):
        a, b = phone(), phone()
        key = SessionKey(f"call-{n}", 1, "tag=A udp:127.0.0.1:5060", "tag=B udp:127.0.0.1:5060",
                         "sip:a@x", "sip:b@y", "A", "B", "127.0.0.1", "127.0.0.1")
        (to_b,) = relay.allocate_sockets(key, 0, "127.0.0.1", parse_sdp(sdp(*a.getsockname())))
        (to_a,) = relay.allocate_sockets(key, 1, "127.0.0.1", parse_sdp(sdp(*b.getsockname())))
        assert relay.activate_session(key) == 1
        calls.append((a, b, ("127.0.0.1", to_a.port), ("127.0.0.1", to_b.port)))
    phones = [s for a, b, _, _ in calls for s in (a, b)]
    relayed = 0
    deadline = time.monotonic() + 60
    start = cpu()
    for _ in range(rounds):
        for a, b, to_a, to_b in calls:
            a.sendto(PACKET, to_a)  # A sends to the port advertised to A: it reaches B
            b.sendto(PACKET, to_b)
        want = 2 * streams
        got = 0
        spins = 0
        while got < want and spins < 1000:
            reactor.iterate(0)
            spins += 1
            for sock in phones:
                while True:
                    try:
                        sock.recv(2048)
                    except BlockingIOError:
                        break
                    got += 1
        relayed += got
        if time.monotonic() > deadline:
            break
    used = cpu() - start
    relay.close_all()
    for sock in phones:
        sock.close()
    return used, relayed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"{sys.implementation.name} {sys.version.split()[0]}, {type(reactor).__name__}, "
          f"{args.streams} streams, {args.rounds} rounds x {2 * args.streams} packets")
    run(args.streams, 200, 0)  # warm-up (and the JIT on PyPy)
    figures = []
    for n in range(args.repeat):
        used, relayed = run(args.streams, args.rounds, n + 1)
        per = used / max(relayed, 1) * 1e6
        figures.append(per)
        print(f"  round {n + 1}: {relayed} packets relayed, {used:.2f} cpu-s, {per:.2f} us/packet")
    figures.sort()
    print(f"median {figures[len(figures) // 2]:.2f} us/packet (min {figures[0]:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
