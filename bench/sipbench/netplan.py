"""Scenarios (who listens where) and free loopback ports.

The benchmark floods its peers with thousands of calls per second, so it must
never aim at a real network: every address goes through require_loopback().
Ports are picked fresh for every step, away from 5060 (another program may
own it) and from the ephemeral range, which avoids sipp's occasional failure
to re-bind a port its predecessor released a moment ago.
"""

from __future__ import annotations

import ipaddress
import random
import socket
from dataclasses import dataclass

PORT_RANGE = range(20000, 30000)


def require_loopback(address: str) -> str:
    """Return the address if it is a loopback address, else stop the run."""
    if not ipaddress.ip_address(address.strip("[]")).is_loopback:
        raise SystemExit(f"refusing non-loopback address {address!r}")
    return address


@dataclass(frozen=True)
class Scenario:
    """Where the UAC, the UAS and the proxy legs live, and over what."""

    name: str
    transport: str  # "udp" or "tcp"
    proxy_ips: tuple[str, ...]
    uac_ip: str
    uas_ip: str
    description: str

    def __post_init__(self) -> None:
        for address in (*self.proxy_ips, self.uac_ip, self.uas_ip):
            require_loopback(address)


SCENARIOS = {
    "udp1": Scenario("udp1", "udp", ("127.0.0.1",), "127.0.0.1", "127.0.0.1",
                     "one UDP leg; UAC, proxy and UAS on 127.0.0.1"),
    "udp2": Scenario("udp2", "udp", ("127.0.0.1", "127.0.0.2"), "127.0.0.1", "127.0.0.2",
                     "two UDP legs (127.0.0.1, 127.0.0.2); UAC on .1, UAS on .2"),
    "tcp": Scenario("tcp", "tcp", ("127.0.0.1",), "127.0.0.1", "127.0.0.1",
                    "one TCP leg; sipp -t t1 on both sides"),
}


@dataclass(frozen=True)
class Ports:
    proxy: int
    uac: int
    uas: int


def _port_is_free(ip: str, port: int) -> bool:
    """True if both UDP and TCP can bind ip:port right now.

    No SO_REUSEADDR here on purpose: a socket bound with it elsewhere (Kamailio
    and Net::SIP both set it) makes this bind fail, which is what we want.
    """
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as probe:
            try:
                probe.bind((ip, port))
            except OSError:
                return False
    return True


def free_port(ips: tuple[str, ...], taken: set[int]) -> int:
    """A random port from PORT_RANGE that is free on every one of the ips."""
    for _ in range(200):
        port = random.choice(PORT_RANGE)
        if port not in taken and all(_port_is_free(ip, port) for ip in ips):
            taken.add(port)
            return port
    raise RuntimeError(f"no free port in {PORT_RANGE} on {ips}")


def allocate_ports(scenario: Scenario) -> Ports:
    taken: set[int] = set()
    return Ports(
        proxy=free_port(scenario.proxy_ips, taken),
        uac=free_port((scenario.uac_ip,), taken),
        uas=free_port((scenario.uas_ip,), taken),
    )


def proxy_legs(scenario: Scenario, port: int) -> list[str]:
    """Leg specs "proto:ip:port", in the form sipproxy and netsip_proxy.pl take."""
    return [f"{scenario.transport}:{ip}:{port}" for ip in scenario.proxy_ips]
