"""C{twistd sipproxy}: command line options and the service they build.

A bad option prints one line naming the problem and exits with status 2;
a leg that cannot be bound or a secret file that cannot be used prints one
line and exits with status 1. No traceback either way.
"""
from __future__ import annotations

import errno
import socket
import sys
from typing import Any, Optional

from twisted.python import usage

from sipproxy.legs import DEFAULT_BUFFER
from sipproxy.legspec import LegSpec, LegSpecError, parse_leg_list
from sipproxy.routing import parse_proxy
from sipproxy.secret import SecretError, load_or_create

__all__ = ["Options", "makeService"]

DEFAULT_LEG = "udp:127.0.0.1:5060"


def _number(kind: Any, option: str, what: str) -> Any:
    """A coerce function whose error names the option (usage.Options' own
    message would only quote int()'s)."""

    def coerce(value: str) -> Any:
        try:
            return kind(value)
        except ValueError:
            raise ValueError(f"--{option} wants {what}, not {value!r}") from None

    return coerce


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Run a stateless SIP proxy (after Net::SIP's StatelessProxy). Each leg is a "
        "socket the proxy listens and sends on: [proto:]host[:port], proto udp "
        "(default) or tcp, port 5060 by default, IPv6 as [::1]. A request leaves "
        "through the leg that reaches its target; when a packet changes legs its "
        "Contact is rewritten into a token so in-dialog requests return through "
        "the proxy. Example: twistd -n sipproxy --legs udp:127.0.0.1:5060,udp:127.0.0.2:5060"
    )
    optFlags = [
        ["force-rewrite", None, "Rewrite Contact headers even when a packet leaves through the leg it came in on."],
    ]
    optParameters = [
        ["outgoing-proxy", None, None, "Send every request to this proxy: host[:port] or a sip: URI "
                                       "(;transport=tcp picks TCP)."],
        ["secret-file", None, "sipproxy.secret",
         "File with the secret that seals Contact tokens and Via branches; created (mode 0600) if "
         "missing. Give every worker and node that must understand each other the same file."],
        ["udp-buffer", None, DEFAULT_BUFFER, "Receive and send buffer size of UDP legs, in bytes.",
         _number(int, "udp-buffer", "an integer")],
        ["tcp-idle", None, 120.0, "Close TCP connections idle for this many seconds.",
         _number(float, "tcp-idle", "a number")],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["legs"] = []
        self["domain2proxy"] = {}

    def opt_legs(self, value: str) -> None:
        """Comma-separated legs, [proto:]host[:port] (repeatable; default udp:127.0.0.1:5060)."""
        self["legs"].append(value)

    def opt_domain2proxy(self, value: str) -> None:
        """DOMAIN=PROXY: requests for DOMAIN (exact, *.parent or *) go to PROXY (host[:port] or sip: URI); comma list, repeatable."""
        for item in filter(None, (part.strip() for part in value.split(","))):
            domain, sep, proxy = item.partition("=")
            if not sep or not domain.strip() or not proxy.strip():
                raise usage.UsageError(f"--domain2proxy {item!r}: want DOMAIN=PROXY")
            try:
                self["domain2proxy"][domain.strip().lower()] = parse_proxy(proxy)
            except ValueError as e:
                raise usage.UsageError(f"--domain2proxy {item!r}: {e}") from None

    def postOptions(self) -> None:
        try:
            self["leg_specs"] = parse_leg_list(self["legs"] or [DEFAULT_LEG])
        except LegSpecError as e:
            raise usage.UsageError(str(e)) from None
        for spec in self["leg_specs"]:
            if spec.proto == "tls":
                raise usage.UsageError(f"leg {spec}: TLS legs are not supported yet")
        if self["outgoing-proxy"]:
            try:
                self["outgoing_proxy"] = parse_proxy(self["outgoing-proxy"])
            except ValueError as e:
                raise usage.UsageError(f"--outgoing-proxy: {e}") from None
        else:
            self["outgoing_proxy"] = None
        if self["udp-buffer"] < 0:
            raise usage.UsageError("--udp-buffer must not be negative")
        if not 0 < self["tcp-idle"] < float("inf"):
            raise usage.UsageError("--tcp-idle must be a positive number of seconds")

    def parseOptions(self, options: Optional[list[str]] = None) -> None:
        """Parse, and on a mistake print one line and exit 2 (twistd would
        dump the whole usage text before the message)."""
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            sys.stderr.write(f"twistd sipproxy: {e}\n")
            sys.exit(2)


def _fail(message: str) -> None:
    sys.stderr.write(f"twistd sipproxy: {message}\n")
    sys.exit(1)


def check_bindable(spec: LegSpec) -> Optional[str]:
    """Why a leg cannot be bound (address in use, not local, ...), or None.

    Checked before twistd starts, so the user gets one line, not a
    traceback from inside the reactor.
    """
    family = socket.AF_INET6 if spec.family == 6 else socket.AF_INET
    kind = socket.SOCK_DGRAM if spec.proto == "udp" else socket.SOCK_STREAM
    with socket.socket(family, kind) as sock:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((spec.host, spec.port))
        except OSError as e:
            reason = {errno.EADDRINUSE: "address already in use", errno.EADDRNOTAVAIL: "not an address of this host",
                      errno.EACCES: "permission denied"}.get(e.errno or 0, e.strerror)
            return f"cannot listen on {spec}: {reason}"
    return None


def makeService(options: Any) -> Any:
    from twisted.internet import reactor

    from sipproxy.service import ProxyService

    for spec in options["leg_specs"]:
        problem = check_bindable(spec)
        if problem:
            _fail(problem)
    try:
        secret = load_or_create(options["secret-file"])
    except SecretError as e:
        _fail(str(e))
    return ProxyService(
        reactor,
        options["leg_specs"],
        secret=secret,
        outgoing_proxy=options["outgoing_proxy"],
        domain2proxy=options["domain2proxy"],
        force_rewrite=bool(options["force-rewrite"]),
        udp_buffer=options["udp-buffer"],
        tcp_idle=options["tcp-idle"],
    )
