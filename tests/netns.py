"""A NAT made of network namespaces, for testing phones behind NAT.

Three namespaces joined by two veth pairs::

    phone 10.251.1.2 --- 10.251.1.1 router 10.251.2.1 --- 10.251.2.2 server
                                    (nft masquerade out)

The router forwards and masquerades what leaves towards the server, as a
home router does; the server has no route to 10.251.1.0/24, so a request
sent to a phone's private Contact goes nowhere, and only the mapping the
phone's own packets opened leads back in. Every address lives inside
namespaces this lab creates and removes: nothing leaves the machine.

Needs root, C{ip} and C{nft}; L{NatLab.missing} says why not otherwise.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from typing import Optional, Sequence

PHONE_ADDRESS = "10.251.1.2"
ROUTER_INSIDE = "10.251.1.1"
ROUTER_OUTSIDE = "10.251.2.1"
SERVER_ADDRESS = "10.251.2.2"


def _run(argv: Sequence[str], stdin: Optional[str] = None) -> None:
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=20, input=stdin)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {result.stderr.strip() or result.stdout.strip()}")


class NatLab:
    """The three namespaces, created by L{up} and removed by L{down}."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.phone = f"sp-phone-{tag}"
        self.router = f"sp-nat-{tag}"
        self.server = f"sp-srv-{tag}"
        self._links = (f"spa{tag}", f"spb{tag}", f"spc{tag}", f"spd{tag}")
        self._made: list[str] = []

    @staticmethod
    def missing() -> Optional[str]:
        """Why this machine cannot build the lab, or None."""
        if os.geteuid() != 0:
            return "network namespaces need root"
        for program in ("ip", "nft"):
            if shutil.which(program) is None:
                return f"{program} is not installed"
        probe = f"sp-probe-{uuid.uuid4().hex[:6]}"
        result = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
        if result.returncode != 0:
            return f"cannot create a network namespace: {result.stderr.strip()}"
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
        return None

    def up(self) -> None:
        phone_if, router_in, router_out, server_if = self._links
        for ns in (self.phone, self.router, self.server):
            _run(["ip", "netns", "add", ns])
            self._made.append(ns)
            self.ip(ns, "link", "set", "lo", "up")
        _run(["ip", "link", "add", phone_if, "netns", self.phone, "type", "veth", "peer", "name", router_in,
              "netns", self.router])
        _run(["ip", "link", "add", router_out, "netns", self.router, "type", "veth", "peer", "name", server_if,
              "netns", self.server])
        self.ip(self.phone, "addr", "add", f"{PHONE_ADDRESS}/24", "dev", phone_if)
        self.ip(self.router, "addr", "add", f"{ROUTER_INSIDE}/24", "dev", router_in)
        self.ip(self.router, "addr", "add", f"{ROUTER_OUTSIDE}/24", "dev", router_out)
        self.ip(self.server, "addr", "add", f"{SERVER_ADDRESS}/24", "dev", server_if)
        for ns, link in ((self.phone, phone_if), (self.router, router_in), (self.router, router_out),
                         (self.server, server_if)):
            self.ip(ns, "link", "set", link, "up")
        self.ip(self.phone, "route", "add", "default", "via", ROUTER_INSIDE)
        _run(["ip", "netns", "exec", self.router, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
        ruleset = (f"table ip sp_nat {{\n chain post {{\n  type nat hook postrouting priority 100;\n"
                   f"  oifname \"{router_out}\" masquerade random\n }}\n}}\n")
        _run(["ip", "netns", "exec", self.router, "nft", "-f", "-"], ruleset)

    def ip(self, ns: str, *args: str) -> None:
        _run(["ip", "-n", ns, *args])

    def command(self, ns: str, argv: Sequence[str]) -> list[str]:
        """C{argv} run inside namespace C{ns}."""
        return ["ip", "netns", "exec", ns, *argv]

    def down(self) -> None:
        for ns in reversed(self._made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self._made.clear()
