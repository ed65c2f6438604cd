"""The floor for an RTP relay in Twisted: per stream, two listenUDP sockets
that forward to each other with transport.write, nothing else (no latching,
no counters, no sessions): what the plainest Twisted relay costs.

Variants, to see where that cost goes (bench/README.md, "RTP relay"):
--sendto (the socket's own sendto, no per-datagram address checks),
--read-one (one recvfrom per readiness event, no EAGAIN exception),
--epoll (the relay sockets in an epoll set of their own, one reactor
reader for all of them), --rcvbuf BYTES (SO_RCVBUF of the relay sockets).

Usage (bench/run_rtp.py drives it):

    python bench/relay_twisted.py [--address 127.0.0.1] [--max-time 600] [variants]

It reads lines ``STREAM i A_IP A_PORT B_IP B_PORT`` on stdin, up to a line
``END``. For each it opens two sockets on --address: what A sends to the
first goes out of the second to B, what B sends to the second goes out of
the first to A (symmetric, like a real relay). It then prints
``SEND i A_SEND_TO_IP A_SEND_TO_PORT B_SEND_TO_IP B_SEND_TO_PORT`` per
stream, ``READY``, and relays until SIGTERM or --max-time.
"""
from __future__ import annotations

import argparse
import ipaddress
import select
import socket
import sys

from twisted.internet import epollreactor

epollreactor.install()

from twisted.internet import reactor, udp  # noqa: E402
from twisted.internet.protocol import DatagramProtocol  # noqa: E402


class Forward(DatagramProtocol):
    """What arrives here leaves through `out` (the other socket) to `dst`."""

    noisy = False

    def __init__(self) -> None:
        self.out = None
        self.dst = None

    def datagramReceived(self, data: bytes, addr: tuple) -> None:
        self.out.write(data, self.dst)


class SendtoForward(DatagramProtocol):
    """--sendto: the paired socket's own sendto, skipping transport.write's
    per-datagram address checks (what sipproxy's RelayPort does)."""

    noisy = False

    def __init__(self) -> None:
        self.sendto = None
        self.dst = None

    def datagramReceived(self, data: bytes, addr: tuple) -> None:
        self.sendto(data, self.dst)


class ReadOnePort(udp.Port):
    """--read-one: one recvfrom per readiness event instead of reading until
    EAGAIN; level-triggered epoll reports the socket again if more is queued."""

    def doRead(self) -> None:
        try:
            data, addr = self.socket.recvfrom(self.maxPacketSize)
        except OSError:
            return
        self.protocol.datagramReceived(data, addr)


class RelayPoller:
    """--epoll: the relay's sockets in an epoll set of their own, which the
    reactor watches as one reader. On each wake-up: poll that set without
    waiting, read one datagram from every ready socket and forward it; again
    while sockets are ready (up to a budget). No per-socket reactor dispatch
    (log context, doRead) and no EAGAIN exception per wake-up."""

    BUDGET = 64

    def __init__(self) -> None:
        self.epoll = select.epoll()
        self.routes: dict[int, tuple] = {}  # fd -> (recvfrom, sendto of the paired socket, destination)

    def add(self, sock: socket.socket, out: socket.socket, dst: tuple) -> None:
        self.routes[sock.fileno()] = (sock.recvfrom, out.sendto, dst)
        self.epoll.register(sock.fileno(), select.EPOLLIN)

    def fileno(self) -> int:
        return self.epoll.fileno()

    def doRead(self) -> None:
        routes, poll = self.routes, self.epoll.poll
        for _ in range(self.BUDGET):
            ready = poll(0)
            if not ready:
                return
            for fd, _event in ready:
                recvfrom, sendto, dst = routes[fd]
                try:
                    data, _addr = recvfrom(2048)
                    sendto(data, dst)
                except OSError:  # nothing after all, or ICMP refused from an earlier send
                    pass

    def logPrefix(self) -> str:
        return "relay-epoll"

    def connectionLost(self, reason: object) -> None:
        self.epoll.close()


def loopback(text: str) -> str:
    if not ipaddress.ip_address(text).is_loopback:
        raise SystemExit(f"relay_twisted: refusing non-loopback address {text!r}")
    return text


def listen(protocol: DatagramProtocol, args: argparse.Namespace) -> udp.Port:
    if args.read_one:
        port = ReadOnePort(0, protocol, args.address, reactor=reactor)
        port.startListening()
        return port
    return reactor.listenUDP(0, protocol, interface=args.address)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--address", default="127.0.0.1", type=loopback)
    parser.add_argument("--max-time", type=float, default=600.0)
    parser.add_argument("--sendto", action="store_true", help="forward with socket.sendto, not transport.write")
    parser.add_argument("--read-one", action="store_true", help="read one datagram per readiness event")
    parser.add_argument("--rcvbuf", type=int, default=0, help="SO_RCVBUF of every relay socket (default: the system's)")
    parser.add_argument("--epoll", action="store_true",
                        help="the relay sockets in their own epoll set, watched by the reactor as one reader")
    args = parser.parse_args()

    out = []
    poller = RelayPoller() if args.epoll else None
    keep = []
    for line in sys.stdin:
        words = line.split()
        if words == ["END"]:
            break
        if len(words) != 6 or words[0] != "STREAM":
            raise SystemExit(f"relay_twisted: bad line {line!r}")
        index, a_ip, a_port, b_ip, b_port = words[1], loopback(words[2]), int(words[3]), loopback(words[4]), \
            int(words[5])
        if poller is not None:
            to_b_sock, to_a_sock = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2))
            for sock in (to_b_sock, to_a_sock):
                sock.bind((args.address, 0))
                sock.setblocking(False)
                if args.rcvbuf:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, args.rcvbuf)
            poller.add(to_b_sock, to_a_sock, (b_ip, b_port))
            poller.add(to_a_sock, to_b_sock, (a_ip, a_port))
            keep += [to_b_sock, to_a_sock]
            out.append(f"SEND {index} {args.address} {to_b_sock.getsockname()[1]} "
                       f"{args.address} {to_a_sock.getsockname()[1]}")
            continue
        kind = SendtoForward if args.sendto else Forward
        to_b, to_a = kind(), kind()  # to_b: A sends here; to_a: B sends here
        port_to_b, port_to_a = listen(to_b, args), listen(to_a, args)
        if args.sendto:
            to_b.sendto, to_a.sendto = port_to_a.socket.sendto, port_to_b.socket.sendto
        else:
            to_b.out, to_a.out = port_to_a, port_to_b
        to_b.dst, to_a.dst = (b_ip, b_port), (a_ip, a_port)
        if args.rcvbuf:
            for port in (port_to_b, port_to_a):
                port.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, args.rcvbuf)
        out.append(f"SEND {index} {args.address} {port_to_b.getHost().port} "
                   f"{args.address} {port_to_a.getHost().port}")
    print("\n".join(out), flush=True)
    print(f"READY reactor={type(reactor).__module__}.{type(reactor).__name__} "
          f"python={sys.implementation.name}-{sys.version.split()[0]}", flush=True)
    if poller is not None:
        reactor.addReader(poller)
    reactor.callLater(args.max_time, reactor.stop)
    reactor.run()


if __name__ == "__main__":
    main()
