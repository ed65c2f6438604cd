"""sipp command lines and its statistics files.

The UAC uses sipp's built-in "uac" scenario: INVITE, 180, 200, ACK, BYE,
200, i.e. 6 SIP messages (12 datagrams) through the proxy per call. Its
Request-URI names the UAS, but -rsa makes it send every message to the
proxy, so the proxy must route on the Request-URI.

Every sipp gets -nostdin (it runs without a tty), -m (UAC) and -timeout
(both), so it ends by itself; the caller also enforces a wall-clock deadline.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from .netplan import Ports, Scenario


@dataclass(frozen=True)
class SippSettings:
    binary: str = "sipp"
    recv_timeout_s: int = 5
    # -default_behaviors all,-abortunexp: do not abort a call on an
    # out-of-order message (a late 180 after the 200). Needed with a
    # multi-worker Kamailio, which can reorder; a real UA ignores a late 180.
    lenient: bool = False
    buff_size: Optional[int] = None  # sipp's default socket buffers are 64 KB


def _common_options(scenario: Scenario, settings: SippSettings, ip: str, port: int,
                    files: str) -> list[str]:
    options = ["-i", ip, "-p", str(port), "-nostdin",
               "-trace_stat", "-stf", f"{files}.csv", "-fd", "1",
               "-trace_screen", "-screen_file", f"{files}_screen.log",
               "-trace_err", "-error_file", f"{files}_errors.log"]
    if scenario.transport == "tcp":
        options += ["-t", "t1"]
    if settings.lenient:
        options += ["-default_behaviors", "all,-abortunexp"]
    if settings.buff_size:
        options += ["-buff_size", str(settings.buff_size)]
    return options


def uas_command(scenario: Scenario, ports: Ports, settings: SippSettings,
                timeout_s: int) -> list[str]:
    return ([settings.binary, "-sn", "uas"]
            + _common_options(scenario, settings, scenario.uas_ip, ports.uas, "uas")
            + ["-timeout", f"{timeout_s}s"])


def uac_command(scenario: Scenario, ports: Ports, settings: SippSettings,
                rate: int, calls: int, timeout_s: int) -> list[str]:
    return ([settings.binary, "-sn", "uac", f"{scenario.uas_ip}:{ports.uas}",
             "-rsa", f"{scenario.proxy_ips[0]}:{ports.proxy}"]
            + _common_options(scenario, settings, scenario.uac_ip, ports.uac, "uac")
            + ["-r", str(rate), "-m", str(calls),
               "-recv_timeout", f"{settings.recv_timeout_s}s",
               "-timeout", f"{timeout_s}s"])


@dataclass
class SippStats:
    """The cumulative counters of sipp's last -trace_stat line."""

    created: int
    successful: int
    failed: int
    retransmissions: int
    elapsed_s: float
    failure_kinds: dict[str, int] = field(default_factory=dict)


def _epoch(timestamp_field: str) -> float:
    # sipp writes "date<TAB>time<TAB>epoch" inside one ';'-separated field.
    return float(timestamp_field.split("\t")[-1])


def read_stats(path: Path) -> Optional[SippStats]:
    """Parse the final line of a sipp -trace_stat CSV; None if absent or empty."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f, delimiter=";"))
    except OSError:
        return None
    if len(rows) < 2:
        return None
    last = dict(zip(rows[0], rows[-1]))
    failure_kinds = {
        name[len("Failed"):-len("(C)")]: int(value)
        for name, value in last.items()
        if name.startswith("Failed") and name.endswith("(C)") and name != "FailedCall(C)"
        and value.isdigit() and int(value) > 0
    }
    return SippStats(
        created=int(last["TotalCallCreated"]),
        successful=int(last["SuccessfulCall(C)"]),
        failed=int(last["FailedCall(C)"]),
        retransmissions=int(last["Retransmissions(C)"]),
        elapsed_s=_epoch(last["CurrentTime"]) - _epoch(last["StartTime"]),
        failure_kinds=failure_kinds,
    )


@dataclass
class Finished:
    returncode: Optional[int]
    cpu_s: float  # user+system time of the process itself, from wait4()
    wall_s: float
    killed: bool


def wait_bounded(proc: subprocess.Popen, deadline: float,
                 on_tick: Callable[[], None] = lambda: None,
                 tick_s: float = 0.1) -> Finished:
    """Wait for a child until a monotonic deadline, calling on_tick meanwhile.

    wait4() rather than Popen.wait() because it also returns the child's CPU
    time, which /proc can no longer tell once the process is gone. Past the
    deadline the child gets SIGTERM, then SIGKILL: nothing can hang the run.
    """
    started = time.monotonic()
    killed = False
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return Finished(proc.returncode, usage.ru_utime + usage.ru_stime,
                            time.monotonic() - started, killed)
        now = time.monotonic()
        if now > deadline + 5:
            os.kill(proc.pid, signal.SIGKILL)
        elif now > deadline and not killed:
            os.kill(proc.pid, signal.SIGTERM)
            killed = True
        on_tick()
        time.sleep(tick_s)
