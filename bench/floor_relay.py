"""The benchmark "floor": the cheapest possible UDP relay in Twisted.

It does no SIP work at all. A datagram from the UAC goes to the UAS, one
from the UAS goes back to the UAC, anything else is dropped. Whatever this
costs per call is the price of Twisted plus the socket system calls, so no
Twisted SIP proxy can be cheaper: it is the yardstick run_sip.py compares
sipproxy against.

With two listen addresses the relay forwards *between* them (UAC traffic is
received on the first and sent from the second, UAS traffic the other way
round), which mirrors the two-leg scenario of run_sip.py.

Usage:
    python bench/floor_relay.py --uac 127.0.0.1:5091 --uas 127.0.0.1:5090 \
        [--rcvbuf BYTES] [--max-time SECONDS] 127.0.0.1:5072 [127.0.0.2:5072]
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import sys
from typing import Optional

from twisted.internet import epollreactor

epollreactor.install()

from twisted.internet import reactor  # noqa: E402  (must follow install())
from twisted.internet.protocol import DatagramProtocol  # noqa: E402

Address = tuple[str, int]


def loopback_address(text: str) -> Address:
    """Parse HOST:PORT and refuse anything but an IPv4 loopback address."""
    host, _, port = text.rpartition(":")
    if not ipaddress.ip_address(host).is_loopback:
        raise argparse.ArgumentTypeError(f"{text}: only loopback addresses are allowed")
    return host, int(port)


class RelaySocket(DatagramProtocol):
    """One listening socket; forwards each datagram by its source address.

    `routes` maps a known peer to (socket to send from, destination). Both
    are resolved once, so the per-datagram work is one dict lookup.
    """

    def __init__(self, rcvbuf: Optional[int]) -> None:
        self.rcvbuf = rcvbuf
        self.routes: dict[Address, tuple[DatagramProtocol, Address]] = {}

    def startProtocol(self) -> None:
        if self.rcvbuf:
            sock = self.transport.getHandle()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)

    def datagramReceived(self, data: bytes, addr: Address) -> None:
        route = self.routes.get(addr)
        if route is not None:
            out, destination = route
            out.transport.write(data, destination)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("listen", nargs="+", type=loopback_address,
                        help="one or two HOST:PORT to listen on")
    parser.add_argument("--uac", type=loopback_address, required=True)
    parser.add_argument("--uas", type=loopback_address, required=True)
    parser.add_argument("--rcvbuf", type=int, default=None,
                        help="SO_RCVBUF in bytes (the kernel doubles it)")
    parser.add_argument("--max-time", type=float, default=3600.0,
                        help="stop by itself after this many seconds")
    args = parser.parse_args(argv)
    if len(args.listen) > 2:
        parser.error("at most two listen addresses")
    return args


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    uac_side = RelaySocket(args.rcvbuf)
    uas_side = uac_side if len(args.listen) == 1 else RelaySocket(args.rcvbuf)
    uac_side.routes[args.uac] = (uas_side, args.uas)
    uas_side.routes[args.uas] = (uac_side, args.uac)
    for protocol, (host, port) in zip((uac_side, uas_side), args.listen):
        reactor.listenUDP(port, protocol, interface=host)
    reactor.callLater(args.max_time, reactor.stop)
    print(f"floor_relay: {type(reactor).__name__} on {args.listen}", flush=True)
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1:])
