#!/usr/bin/env python3
"""How long a request for an IP address, and one for a hosts-file name,
waits while the DNS server never answers and 200 lookups of random names
are pending (issue 16's reproduction). Uses the proxy's DEFAULT resolver,
so it measures whichever tree is on PYTHONPATH; the DNS server must be
the one in /etc/resolv.conf, so run it in its own namespaces:

    unshare -mn sh -c 'ip link set lo up; echo nameserver 127.0.0.1 > /tmp/r;
        mount --bind /tmp/r /etc/resolv.conf; PYTHONPATH=TREE python bench/dns_dead_resolver.py [LIMIT]'

A socket on 127.0.0.1:53 reads the queries and drops them.
"""
from __future__ import annotations

import os
import sys
import time

from twisted.internet import defer, protocol, reactor, task

#: how long to wait for each request (seconds; first argument)
LIMIT = float(sys.argv[1]) if len(sys.argv) > 1 else 60.0


class Endpoint(protocol.DatagramProtocol):
    def __init__(self) -> None:
        self.got: list[bytes] = []

    def datagramReceived(self, data: bytes, addr: object) -> None:
        self.got.append(data)


class Dropper(protocol.DatagramProtocol):
    received = 0

    def datagramReceived(self, data: bytes, addr: object) -> None:
        self.received += 1


def invite(uri: str, call_id: str, port: int) -> bytes:
    return (f"INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{call_id}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:a@127.0.0.1>;tag=1\r\nTo: <{uri}>\r\nCall-ID: {call_id}\r\n"
            f"CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n").encode()


async def wait_for(predicate, limit: float) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > limit:
            return float("inf")
        await task.deferLater(reactor, 0.001, lambda: None)
    return time.monotonic() - start


async def main() -> None:
    from sipproxy.app.service import ProxyService

    dropper = Dropper()
    reactor.listenUDP(53, dropper, interface="127.0.0.1")
    service = ProxyService(reactor, ["udp:127.0.0.1:0"], secret=b"B" * 32)
    service.startService()
    leg = service.legs[0]
    uac, uas = Endpoint(), Endpoint()
    uac_port = reactor.listenUDP(0, uac, interface="127.0.0.1").getHost().port
    uas_port = reactor.listenUDP(0, uas, interface="127.0.0.1").getHost().port
    for i in range(200):
        uac.transport.write(invite(f"sip:bob@r{i}x{os.getpid()}.example.net", f"name{i}", uac_port),
                            (leg.host, leg.port))
    await wait_for(lambda: dropper.received > 0, 10)
    await task.deferLater(reactor, 0.2, lambda: None)
    for label, uri in (("127.0.0.1", f"sip:bob@127.0.0.1:{uas_port}"), ("localhost", f"sip:bob@localhost:{uas_port}")):
        before = len(uas.got)
        uac.transport.write(invite(uri, label, uac_port), (leg.host, leg.port))
        delay = await wait_for(lambda: len(uas.got) > before, LIMIT)
        print(f"request for {label}: forwarded after {delay * 1000:.2f} ms "
              f"(queries seen by the dead server so far: {dropper.received})")
    sys.stdout.flush()


def run() -> None:
    d = defer.ensureDeferred(main())
    d.addErrback(lambda f: f.printTraceback())
    d.addBoth(lambda _: reactor.stop())
    reactor.run()
    os._exit(0)  # threads blocked in getaddrinfo (the old resolver) would hold the exit


if __name__ == "__main__":
    run()
