"""Kamailio as a real registrar and proxy for the interop tests.

L{start_kamailio} runs C{kamailio -DD -E -n 1} with this folder's
C{kamailio.cfg} on loopback ports it picks itself, waits until Kamailio
answers an OPTIONS, and kills it (by PID) in the test's cleanup. The
config logs one C{KAM-REQ} line per request and one C{KAM-REG} line per
saved registration on stderr; L{Kamailio.requests} reads them back, so a
test can show that a BYE really followed the route set through Kamailio.
"""
from __future__ import annotations

import os
import re
import shutil
from typing import Any, Optional, Sequence

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import FailTest, SkipTest

from tests.util import (
    REQUIRE_INTEROP,
    UDPProbe,
    WaitTimeout,
    interop_required,
    read_text,
    reserve_port,
    sip_options,
    start_process,
    stop_process,
    wait_until,
)

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kamailio.cfg")

#: the users kamailio.cfg knows, with their passwords
USERS = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw"}

_REQUEST = re.compile(r"KAM-REQ (?P<method>\S+) (?P<uri>\S+) from (?P<source>\S+) cid=(?P<call_id>\S+) "
                      r"cseq=(?P<cseq>\S+) t=(?P<time>\S+) user=(?P<user>\S+) route=(?P<route>.*)$")
_REGISTERED = re.compile(r"KAM-REG (?P<aor>\S+) saved cid=(?P<call_id>\S+) cseq=(?P<cseq>\S+) "
                         r"t=(?P<time>\S+) expires=(?P<expires>\S+) contact=(?P<contact>.*)$")


def require_kamailio() -> str:
    """The kamailio binary (Debian puts it in /usr/sbin, which is not on
    every user's PATH); skips, or fails under SIPPROXY_REQUIRE_INTEROP=1,
    when it is missing."""
    found = shutil.which("kamailio") or next(
        (p for p in ("/usr/sbin/kamailio", "/usr/local/sbin/kamailio") if os.access(p, os.X_OK)), None)
    if found:
        return found
    reason = "kamailio is not installed (Debian: kamailio)"
    if interop_required():
        raise FailTest(f"{reason}, and {REQUIRE_INTEROP}=1 requires it")
    raise SkipTest(reason)


class Kamailio:
    """A running Kamailio: where it listens and what it logged."""

    def __init__(self, proc: Any, cwd: str, name: str, host: str, port: int, transports: Sequence[str]) -> None:
        self.proc = proc
        self.cwd = cwd
        self.host = host
        self.port = port
        self.transports = list(transports)
        self.err_path = os.path.join(cwd, name + ".err")

    @property
    def hostport(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def uri(self, user: Optional[str] = None, transport: str = "udp") -> str:
        """A SIP URI on this Kamailio (an AOR it serves when C{user} is given)."""
        user_part = f"{user}@" if user else ""
        suffix = "" if transport == "udp" else f";transport={transport}"
        return f"sip:{user_part}{self.hostport}{suffix}"

    def log(self) -> str:
        return read_text(self.err_path)

    def requests(self, method: Optional[str] = None) -> list[dict[str, str]]:
        """The requests Kamailio logged, oldest first (probes excluded)."""
        found = []
        for line in self.log().splitlines():
            match = _REQUEST.search(line)
            if match and not match.group("call_id").startswith("kam-probe") and (
                    method is None or match.group("method") == method):
                found.append(match.groupdict())
        return found

    def registrations(self) -> list[dict[str, str]]:
        """The registrations Kamailio saved, oldest first."""
        return [m.groupdict() for m in map(_REGISTERED.search, self.log().splitlines()) if m]

    def describe(self) -> str:
        return f"kamailio pid {self.proc.pid} rc={self.proc.poll()} on {self.hostport}\n{self.log()[-4000:]}"


@inlineCallbacks
def start_kamailio(testcase: Any, cwd: str, host: str = "127.0.0.1", transports: Sequence[str] = ("udp", "tcp"),
                   max_expires: Optional[int] = None, timeout: float = 15.0, attempts: int = 3) -> Any:
    """Start Kamailio on C{host} (one port for every transport in
    C{transports}); fires with a L{Kamailio} once it answers an OPTIONS.
    C{max_expires} caps registrations (the registrar's C{max_expires})."""
    binary = require_kamailio()
    for attempt in range(attempts):
        port = reserve_port(host)
        hostport = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        rundir = os.path.join(cwd, f"kamailio-run-{attempt}")
        os.makedirs(rundir, exist_ok=True)
        argv = [binary, "-f", CONFIG, "-DD", "-E", "-n", "1", "-Y", rundir, "-w", rundir]
        for transport in transports:
            argv += ["-l", f"{transport}:{hostport}"]
        if "tcp" not in transports:
            argv.append("-T")
        if max_expires is not None:
            argv += ["-A", f"MAX_EXPIRES={int(max_expires)}"]
        name = f"kamailio-{attempt}"
        proc = start_process(testcase, argv, cwd, name)
        server = Kamailio(proc, cwd, name, host, port, transports)
        probe = UDPProbe(host, port, lambda local: sip_options(host, port, local, call_id=f"kam-probe-{local}"),
                         testcase)
        try:
            yield wait_until(lambda: proc.poll() is not None or probe(), timeout, interval=0.1,
                             what=f"kamailio to answer OPTIONS on {hostport}")
        except WaitTimeout:
            stop_process(proc)
            raise AssertionError("kamailio did not answer in time\n" + server.describe())
        finally:
            probe.close()
        if proc.poll() is None:
            return server
        if "Address already in use" not in server.log():
            raise AssertionError("kamailio exited at start\n" + server.describe())
    raise AssertionError(f"no free port for kamailio after {attempts} tries")
