"""The DNS options of C{twistd sipproxy} (RFC 3263 resolution, failover),
their checks, and the resolver they build (used by L{sipproxy.app.tap}).

  --dns-server HOST:PORT      ask this DNS server (repeatable; default:
                              the nameservers of /etc/resolv.conf)
  --dns-timeout SECONDS       per query and server
  --dns-max-queries N         queries in flight at most
  --dns-blocklist-expire S    how long a destination that failed is tried last
"""
from __future__ import annotations

from typing import Any

from twisted.python import usage

from sipproxy.app.option_types import number
from sipproxy.transport.resolver import DEFAULT_MAX_PENDING, DEFAULT_TIMEOUT, DNSResolver, parse_server

__all__ = ["DNS_PARAMETERS", "DNSServerOption", "check_dns_options", "make_resolver"]

DNS_PARAMETERS = [
    ["dns-timeout", None, DEFAULT_TIMEOUT, "Seconds a DNS query waits for each server before the next (or "
                                           "failure: the request gets 503).",
     number(float, "dns-timeout", "a number of seconds")],
    ["dns-max-queries", None, DEFAULT_MAX_PENDING, "DNS queries in flight at most; a request needing one more "
                                                   "gets 503 at once (requests for IP addresses, hosts-file and "
                                                   "cached names never wait for DNS).",
     number(int, "dns-max-queries", "an integer")],
    ["dns-blocklist-expire", None, 60.0, "Seconds a destination a send to which failed (TCP/TLS connect "
                                         "refused or timed out, ICMP unreachable) is tried after the others "
                                         "(Kamailio's dst_blocklist_expire); 0 turns this off.",
     number(float, "dns-blocklist-expire", "a number of seconds")],
]


class DNSServerOption:
    """Mixed into the twistd Options: C{--dns-server}, repeatable."""

    def opt_dns_server(self, value: str) -> None:
        """DNS server HOST:PORT to ask (repeatable, tried in order; default: /etc/resolv.conf's)."""
        try:
            server = parse_server(value)
        except ValueError as e:
            raise usage.UsageError(f"--dns-server: {e}") from None
        self.setdefault("dns_servers", []).append(server)  # type: ignore[attr-defined]


def check_dns_options(options: Any) -> None:
    """One line naming the problem (exit 2) for a bad value."""
    if not 0 < options["dns-timeout"] <= 60:
        raise usage.UsageError("--dns-timeout must be more than 0 and at most 60 seconds")
    if not 1 <= options["dns-max-queries"] <= 100000:
        raise usage.UsageError("--dns-max-queries must be between 1 and 100000")
    if not 0 <= options["dns-blocklist-expire"] <= 86400:
        raise usage.UsageError("--dns-blocklist-expire must be between 0 and 86400 seconds")


def make_resolver(reactor: Any, options: Any) -> DNSResolver:
    return DNSResolver(reactor, servers=options.get("dns_servers") or None, timeout=options["dns-timeout"],
                       max_pending=options["dns-max-queries"])
