"""Leg specifications: C{[proto:]host[:port]} as given to C{--legs}.

Pure parsing; binding happens in L{sipproxy.transport.legs}.
"""
from __future__ import annotations

import ipaddress
from typing import NamedTuple

from sipproxy.sip.addresses import DEFAULT_PORTS, is_ip_literal
from sipproxy.sip.uri import URIError, split_host_port

__all__ = ["LegSpec", "LegSpecError", "parse_leg_spec", "parse_leg_list", "PROTOCOLS"]

PROTOCOLS = ("udp", "tcp", "tls", "ws", "wss")


class LegSpecError(ValueError):
    """A leg specification that cannot be used; C{str(err)} says why."""


class LegSpec(NamedTuple):
    """Where one leg listens. C{port} 0 lets the kernel choose."""

    proto: str
    host: str
    port: int

    @property
    def family(self) -> int:
        return 6 if ":" in self.host else 4

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.proto}:{host}:{self.port}"


def parse_leg_spec(text: str) -> LegSpec:
    """Parse C{[proto:]host[:port]}: proto C{udp} (default), C{tcp},
    C{tls}, C{ws} or C{wss} (WebSocket, RFC 7118); port 5060 by default
    (5061 for tls, 80 for ws, 443 for wss); IPv6 as C{[::1]}.

    The host must be an IP address of this machine (not a wildcard: the
    leg writes its address into Via and Record-Route).
    """
    original = text
    text = text.strip()
    if not text:
        raise LegSpecError("empty leg specification")
    proto = "udp"
    head, sep, rest = text.partition(":")
    if sep and head.lower() in PROTOCOLS:
        proto, text = head.lower(), rest
    elif sep and head.isalpha() and not is_ip_literal(text):
        raise LegSpecError(f"leg {original!r}: unknown transport {head!r} (use udp, tcp, tls, ws or wss)")
    try:
        host, port = split_host_port(text)
    except URIError as e:
        raise LegSpecError(f"leg {original!r}: {e}") from None
    if not host:
        raise LegSpecError(f"leg {original!r}: no host")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise LegSpecError(f"leg {original!r}: host must be an IP address, not {host!r}") from None
    if address.is_unspecified:
        raise LegSpecError(
            f"leg {original!r}: give the address to bind, not a wildcard "
            "(the leg writes it into Via and Record-Route)"
        )
    return LegSpec(proto, str(address), DEFAULT_PORTS[proto] if port is None else port)


def parse_leg_list(values: "list[str] | str") -> list[LegSpec]:
    """Parse one or more comma-separated lists of leg specifications;
    duplicates are refused."""
    if isinstance(values, str):
        values = [values]
    specs: list[LegSpec] = []
    for value in values:
        for item in _split_commas(value):
            spec = parse_leg_spec(item)
            if any(s.host == spec.host and s.port == spec.port and s.proto == spec.proto and spec.port
                   for s in specs):
                raise LegSpecError(f"leg {item!r} given twice")
            specs.append(spec)
    if not specs:
        raise LegSpecError("no legs given")
    return specs


def _split_commas(value: str) -> list[str]:
    return [part for part in (p.strip() for p in value.split(",")) if part]
