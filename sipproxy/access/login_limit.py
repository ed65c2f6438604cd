"""Failed logins per source IP: after too many, the address is shut out
for a while (Kamailio's pike/secfilter, fail2ban's idea inside the proxy).

Counted per IP address, not per IP and port: a password guesser changes
ports for free. Counted per process: with C{--workers} each worker keeps
its own counts (the kernel spreads sources over workers, so one address may
get up to the limit in each), and nothing survives a restart; for a ban
across workers, nodes and restarts, run fail2ban on the log lines (see
contrib/fail2ban). Memory is bounded: at most C{max_tracked} addresses,
the oldest forgotten first.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Optional

from twisted.internet.interfaces import IReactorTime
from sipproxy.observe.logsafe import SafeLogger

__all__ = ["FailedLogins", "DEFAULT_LIMIT", "parse_limit"]

log = SafeLogger()

#: failures, within seconds, shut out for seconds
DEFAULT_LIMIT = (10, 60.0, 600.0)


def parse_limit(text: str) -> Optional[tuple[int, float, float]]:
    """C{FAILURES/SECONDS[/BLOCK]} (block defaults to ten times SECONDS)
    to a tuple; C{off} or C{0} to None. Raises ValueError."""
    text = text.strip().lower()
    if text in ("off", "0", "none"):
        return None
    parts = text.split("/")
    if len(parts) not in (2, 3):
        raise ValueError(f"{text!r}: want FAILURES/SECONDS[/BLOCK_SECONDS] or off")
    try:
        failures, window = int(parts[0]), float(parts[1])
        block = float(parts[2]) if len(parts) == 3 else window * 10
    except ValueError:
        raise ValueError(f"{text!r}: want FAILURES/SECONDS[/BLOCK_SECONDS] as numbers") from None
    if failures < 1 or window <= 0 or block <= 0:
        raise ValueError(f"{text!r}: want FAILURES >= 1 and positive seconds")
    return failures, window, block


class FailedLogins:
    """Counts failed authentications per source IP.

    @param clock: C{IReactorTime}.
    @param limit: (failures, window seconds, block seconds): an address
        with that many failures within the window is blocked for the block
        time, counted from the last failure.
    """

    def __init__(self, clock: IReactorTime, limit: tuple[int, float, float] = DEFAULT_LIMIT,
                 max_tracked: int = 100_000) -> None:
        self.clock = clock
        self.failures, self.window, self.block = limit
        self.max_tracked = max_tracked
        # ip -> (failures in the window, window start, blocked until)
        self._by_ip: "OrderedDict[str, tuple[int, float, float]]" = OrderedDict()

    def blocked(self, ip: str) -> bool:
        """True while C{ip} is shut out."""
        entry = self._by_ip.get(ip)
        return entry is not None and entry[2] > self.clock.seconds()

    def failed(self, ip: str) -> bool:
        """Count one failure of C{ip}; True when it is now blocked (logged
        once, when the block starts)."""
        now = self.clock.seconds()
        count, start, until = self._by_ip.pop(ip, (0, now, 0.0))
        if now - start > self.window:
            count, start = 0, now
        count += 1
        if count >= self.failures and until <= now:
            until = now + self.block
            log.warn("auth blocked: ip={ip} failures={count} within={window:g}s for={block:g}s", ip=ip, count=count,
                     window=self.window, block=self.block)
        self._by_ip[ip] = (count, start, until)
        if len(self._by_ip) > self.max_tracked:
            self._by_ip.popitem(last=False)
        return until > now

    def __len__(self) -> int:
        return len(self._by_ip)
