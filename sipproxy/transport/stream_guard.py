"""Limits of TCP and TLS legs, and the guard that enforces the shared ones.

Every stream connection costs a file descriptor, buffers and a place in the
leg's tables, and a peer decides how many it opens, how slowly it sends and
whether it ever reads. The limits below bound each of those; their names
follow Kamailio's core parameters so operators recognise them:

==================  =========================  =====================================
StreamLimits        Kamailio                   what
==================  =========================  =====================================
max_connections     tcp_max_connections        TCP + TLS connections per process
max_per_ip          tcp_accept_iplimit         inbound connections per source IP
write_queue_max     tcp_conn_wq_max            octets queued for a slow reader
send_timeout        tcp_send_timeout           seconds a send may stay blocked
read_timeout        tcp_msg_read_timeout       seconds to read one whole message
idle_timeout        tcp_connection_lifetime    seconds without traffic
==================  =========================  =====================================

One L{ConnectionGuard} is shared by all stream legs of a process, because
the file descriptors it protects are the process's.
"""
from __future__ import annotations

import resource
from dataclasses import dataclass
from typing import Optional

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from sipproxy.observe.logsafe import SafeLogger
from sipproxy.transport.source_log import SourceLog

__all__ = ["StreamLimits", "ConnectionGuard", "fd_budget"]

log = SafeLogger()


@dataclass(frozen=True)
class StreamLimits:
    """The bounds of stream connections (see the module docstring)."""

    max_connections: int = 2048
    max_per_ip: int = 64
    #: beyond the 64 KiB Twisted buffers before it says "pause"
    write_queue_max: int = 128 * 1024
    send_timeout: float = 10.0
    read_timeout: float = 20.0
    #: longer than RFC 5626's keep-alive interval (95 to 120 s for streams)
    idle_timeout: float = 180.0
    #: one log line per source per this many seconds (then a summary)
    log_interval: float = 10.0

    def problems(self) -> list[str]:
        """What is wrong with these values (empty when they are usable)."""
        out = []
        for name in ("max_connections", "max_per_ip", "write_queue_max"):
            if getattr(self, name) < 1:
                out.append(f"{name} must be at least 1")
        for name in ("send_timeout", "read_timeout", "idle_timeout", "log_interval"):
            if not 0 < getattr(self, name) < float("inf"):
                out.append(f"{name} must be a positive number of seconds")
        return out

    @property
    def sweep_interval(self) -> float:
        """How often the timeouts are checked: a quarter of the shortest,
        so a timeout fires at most 25 % late."""
        return max(0.05, min(self.send_timeout, self.read_timeout, self.idle_timeout) / 4)


def fd_budget(reserve_share: float = 0.125, reserve_min: int = 32) -> Optional[int]:
    """How many stream connections the file-descriptor limit leaves room
    for: the soft C{RLIMIT_NOFILE} less a reserve for the UDP legs, relay
    sockets, log files and outbound connections (None when unlimited)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return None
    return max(1, soft - max(reserve_min, int(soft * reserve_share)))


class ConnectionGuard:
    """Counts stream connections in total and per source IP, refuses
    inbound ones beyond the limits, and owns the rate-limited log the
    legs write about hostile peers.

    The total is also kept below L{fd_budget}: refusing a connection
    ourselves costs nothing, while running out of file descriptors would
    also fail the relay's sockets and outbound connections.
    """

    def __init__(self, limits: StreamLimits, clock: IReactorTime, budget: Optional[int] = None) -> None:
        self.limits = limits
        self.clock = clock
        budget = fd_budget() if budget is None else budget
        self.max_connections = limits.max_connections
        if budget is not None and budget < self.max_connections:
            self.max_connections = budget
            log.warn("at most {count} TCP/TLS connections: the file-descriptor limit (ulimit -n) leaves room "
                     "for no more than --tcp-max-connections {wanted}", count=budget, wanted=limits.max_connections)
        self.total = 0
        self.per_ip: dict[str, int] = {}
        # counters read by sipproxy.app.metrics: connections opened (inbound,
        # outbound) and inbound ones refused by the limits
        self.accepted = 0
        self.connected = 0
        self.refused = 0
        self.log = SourceLog(Logger(namespace="sipproxy.transport.legs"), clock, limits.log_interval)

    def refusal(self, ip: str) -> Optional[str]:
        """Why an inbound connection from C{ip} must be refused, or None."""
        if self.total >= self.max_connections:
            self.refused += 1
            return f"{self.total} connections open (--tcp-max-connections {self.max_connections})"
        if self.per_ip.get(ip, 0) >= self.limits.max_per_ip:
            self.refused += 1
            return f"{self.per_ip[ip]} connections from this address (--tcp-accept-iplimit {self.limits.max_per_ip})"
        return None

    def opened(self, ip: str, inbound: bool) -> None:
        """A connection now exists. Outbound ones (the proxy's own) count
        in the total but not against their peer's address."""
        self.total += 1
        if inbound:
            self.accepted += 1
            self.per_ip[ip] = self.per_ip.get(ip, 0) + 1
        else:
            self.connected += 1

    def closed(self, ip: str, inbound: bool) -> None:
        """A connection counted by L{opened} is gone."""
        self.total -= 1
        if not inbound:
            return
        left = self.per_ip.get(ip, 1) - 1
        if left > 0:
            self.per_ip[ip] = left
        else:
            self.per_ip.pop(ip, None)
