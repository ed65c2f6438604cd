"""Per-process facts from /proc: CPU time, peak memory, sockets, UDP drops.

Why per process: /proc/stat (system-wide busy time) is unreliable in the
Firecracker VMs this runs on, while /proc/PID/stat agrees with top. A proxy
may fork (Kamailio has a main process, workers and timers), so every figure
is summed over the process tree rooted at the PID we started.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


@dataclass(frozen=True)
class ProcessId:
    """A PID plus its start time, so a recycled PID is never mistaken for it."""

    pid: int
    start_ticks: int


def _stat_fields(pid: int) -> Optional[list[str]]:
    """Fields of /proc/PID/stat after the command name, or None if gone.

    The command name is in parentheses and may itself contain spaces or
    parentheses, so split after the *last* ')'. Index 0 is the state field
    (field 3 in proc(5)).
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode("ascii", "replace")
    except OSError:
        return None
    return raw[raw.rindex(")") + 2:].split()


def process_id(pid: int) -> Optional[ProcessId]:
    fields = _stat_fields(pid)
    if fields is None:
        return None
    return ProcessId(pid, int(fields[19]))


def is_alive(proc: ProcessId) -> bool:
    """True if the PID still names the same, not yet reaped, process."""
    fields = _stat_fields(proc.pid)
    return fields is not None and fields[0] != "Z" and int(fields[19]) == proc.start_ticks


def _all_parents() -> dict[int, int]:
    parents = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = _stat_fields(int(name))
            if fields is not None:
                parents[int(name)] = int(fields[1])
    return parents


def process_tree(root: int) -> list[int]:
    """The root PID and all its live descendants."""
    children: dict[int, list[int]] = {}
    for pid, ppid in _all_parents().items():
        children.setdefault(ppid, []).append(pid)
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def terminate(popen: "subprocess.Popen", tree: list[int], grace_s: float = 5.0) -> None:
    """SIGTERM a process, SIGKILL it after grace_s, then SIGKILL what is
    left of its descendants (C{tree}: its process tree, root first),
    checked by PID and start time so no recycled PID is hit."""
    family = [p for p in map(process_id, tree) if p is not None]
    if popen.poll() is None:
        popen.send_signal(signal.SIGTERM)
        try:
            popen.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait(timeout=grace_s)
    for orphan in family[1:]:
        if is_alive(orphan):
            os.kill(orphan.pid, signal.SIGKILL)


def cpu_seconds(pids: Iterable[int]) -> float:
    """utime+stime of the given processes, plus that of their reaped children."""
    ticks = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            # proc(5) fields 14-17: utime stime cutime cstime
            ticks += sum(int(value) for value in fields[11:15])
    return ticks / CLOCK_TICKS


def run_seconds(pid: int) -> float:
    """CPU time of a process, every thread, from the scheduler's nanosecond
    count (/proc/PID/task/*/schedstat); its utime+stime ticks (10 ms) where
    the kernel keeps no such count. For processes that run in bursts much
    shorter than a tick, such as one call's media: the ticks miss much of
    it (Net::SIP at one call: 6.0-6.4 % by ticks, 6.4-7.5 % here). Reaped
    children are not in it, unlike L{cpu_seconds}."""
    try:
        total = 0
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        return total / 1e9
    except (OSError, ValueError, IndexError):
        fields = _stat_fields(pid)
        return sum(int(value) for value in fields[11:13]) / CLOCK_TICKS if fields is not None else 0.0


def peak_rss_kb(pids: Iterable[int]) -> int:
    """Sum of VmHWM (peak resident set) over the processes, in KiB.

    Summing over a tree counts shared pages (Kamailio's shared memory, the
    text of forked workers) once per process, so for a forking proxy this
    over-states its real footprint; it is still the number ps/top would add up.
    """
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
    return total


_SOCKET_LINK = re.compile(r"socket:\[(\d+)\]")


def socket_inodes(pids: Iterable[int]) -> set[int]:
    """Inodes of all sockets the processes hold open."""
    inodes = set()
    for pid in pids:
        fd_dir = f"/proc/{pid}/fd"
        try:
            names = os.listdir(fd_dir)
        except OSError:
            continue
        for name in names:
            try:
                match = _SOCKET_LINK.match(os.readlink(f"{fd_dir}/{name}"))
            except OSError:
                continue
            if match:
                inodes.add(int(match.group(1)))
    return inodes


@dataclass(frozen=True)
class SocketEntry:
    """One line of /proc/net/{udp,udp6,tcp,tcp6}."""

    local_port: int
    state: int
    inode: int
    drops: int  # UDP only: datagrams dropped, mostly for a full receive buffer


TCP_LISTEN = 0x0A


def read_sockets(proto: str) -> list[SocketEntry]:
    """All IPv4 and IPv6 sockets of one protocol ("udp" or "tcp")."""
    entries = []
    for path in (f"/proc/net/{proto}", f"/proc/net/{proto}6"):
        try:
            with open(path) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            drops = int(fields[12]) if proto == "udp" and len(fields) > 12 else 0
            entries.append(SocketEntry(local_port, int(fields[3], 16), int(fields[9]), drops))
    return entries


def listening_ports(proto: str, owner_inodes: set[int]) -> set[int]:
    """Local ports on which the owner of these inodes receives (UDP) or listens (TCP)."""
    return {
        entry.local_port
        for entry in read_sockets(proto)
        if entry.inode in owner_inodes and (proto == "udp" or entry.state == TCP_LISTEN)
    }


def udp_drops_by_inode() -> dict[int, int]:
    return {entry.inode: entry.drops for entry in read_sockets("udp")}


def udp_rcvbuf_errors() -> int:
    """System-wide UDP RcvbufErrors from /proc/net/snmp (other programs count too)."""
    with open("/proc/net/snmp") as f:
        lines = [line.split() for line in f if line.startswith("Udp:")]
    header, values = lines[0], lines[1]
    return int(values[header.index("RcvbufErrors")])


def log_tail(path: Path, lines: int = 3) -> str:
    """The last lines of a process's log, joined for a one-line reason."""
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])
