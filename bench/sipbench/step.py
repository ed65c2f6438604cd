"""One measured step: a fresh proxy, a fresh sipp UAS, one sipp UAC run.

Fresh processes per step keep steps independent: a step that collapsed
leaves no backlog for the next one, peak memory (VmHWM) belongs to that step
alone, and new ports sidestep sipp's occasional port re-bind failure.

The proxy's CPU is read from /proc just before the UAC starts and just after
it exits, so start-up and shutdown are not charged to the calls. A warm-up
(StepPlan.warmup_calls) runs before that, with its own sipps and ports, so a
JIT (PyPy) is measured warm, as a proxy that runs for days is.
"""

from __future__ import annotations

import gzip
import json
import shutil
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional

from . import procfs
from .netplan import Ports, Scenario, allocate_ports
from .peers import REPO_DIR, Peer
from .sipp import (Finished, SippSettings, SippStats, read_stats, uac_command, uas_command,
                   wait_bounded)

STARTUP_TIMEOUT_S = 20.0
SETTLE_S = 0.5  # after the sockets appear, let workers finish starting

# Pass criteria of a step (see judge()).
MAX_FAILED_FRACTION = 0.01
MAX_RETRANSMISSION_FRACTION = 0.01
MIN_ACHIEVED_FRACTION = 0.90
MIN_SUCCESSFUL_FRACTION = 0.99


@dataclass(frozen=True)
class StepPlan:
    proxy: str
    scenario: Scenario
    rate: int
    calls: int
    kind: str  # "fixed", "search" or "verify"
    round: int = 1
    warmup_calls: int = 0  # sent at the same rate before the measured calls, not counted


@dataclass
class StepResult:
    proxy: str
    scenario: str
    kind: str
    round: int
    rate: int
    planned: int
    verdict: str = "ERROR"  # PASS, FAIL or ERROR (could not measure)
    reason: str = ""
    created: int = 0
    ok: int = 0
    failed: int = 0
    retr_uac: int = 0
    retr_uas: int = 0
    wall_s: float = 0.0
    achieved_cps: float = 0.0
    proxy_cpu_s: float = 0.0
    proxy_cpu_pct: float = 0.0
    cpu_s_per_1k: Optional[float] = None
    proxy_rss_mb: float = 0.0
    proxy_processes: int = 0
    uac_cpu_pct: float = 0.0
    uas_cpu_pct: float = 0.0
    drops_proxy: Optional[int] = None  # UDP receive-buffer drops; None for TCP
    drops_uac: Optional[int] = None
    drops_uas: Optional[int] = None
    drops_system: Optional[int] = None  # /proc/net/snmp RcvbufErrors, all programs
    failure_kinds: dict[str, int] = field(default_factory=dict)
    warmup_ok: Optional[int] = None  # None: no warm-up
    warmup_failed: Optional[int] = None
    ports: dict[str, int] = field(default_factory=dict)
    step_dir: str = ""


def stop_on_signals() -> None:
    """Turn SIGTERM and SIGINT (also an inherited, ignored one) into
    KeyboardInterrupt.

    The step code stops its processes in `finally` blocks; an exception is
    the only way to get there when the harness itself is asked to stop.
    """
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)


class ManagedProcess:
    """A child process with its output in a log file, stopped by PID only."""

    def __init__(self, argv: list[str], cwd: Path, log_path: Path, wrapped: bool = False) -> None:
        self.argv = argv
        self.cwd = cwd
        self.log_path = log_path
        self.wrapped = wrapped  # the root is a `timeout` wrapper, not the program
        self.popen: Optional[subprocess.Popen] = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            log.write(f"$ {' '.join(self.argv)}\n".encode())
            log.flush()
            self.popen = subprocess.Popen(self.argv, cwd=self.cwd, stdin=subprocess.DEVNULL,
                                          stdout=log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def tree(self) -> list[int]:
        return procfs.process_tree(self.pid) if self.running() else []

    def program_tree(self) -> list[int]:
        """The processes of the program itself, without a `timeout` wrapper."""
        tree = self.tree()
        return tree[1:] if self.wrapped else tree

    def log_tail(self, lines: int = 3) -> str:
        return procfs.log_tail(self.log_path, lines)

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM the root, SIGKILL it after grace_s, then any descendant left."""
        if self.popen is None or self.popen.returncode is not None:
            return
        procfs.terminate(self.popen, self.tree(), grace_s)


def wait_for_sockets(process: ManagedProcess, transport: str, port: int, count: int,
                     timeout_s: float = STARTUP_TIMEOUT_S) -> bool:
    """Wait until the process tree owns `count` sockets receiving on `port`.

    Matching by socket inode, not just by port, makes sure it is *our* child
    that listens, not some stale process bound with SO_REUSEADDR.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.running():
        inodes = procfs.socket_inodes(process.tree())
        owned = [entry for entry in procfs.read_sockets(transport)
                 if entry.inode in inodes and entry.local_port == port
                 and (transport == "udp" or entry.state == procfs.TCP_LISTEN)]
        if len({entry.inode for entry in owned}) >= count:
            time.sleep(SETTLE_S)
            return True
        time.sleep(0.05)
    return False


class DropSampler:
    """Keeps the highest drop count seen per UDP socket while sipp runs.

    A socket's counter vanishes with the socket, and the UAC's socket closes
    when it exits, so the counters are sampled during the run; drops in the
    last tick before the UAC exits can be missed.
    """

    def __init__(self) -> None:
        self.peak: dict[int, int] = {}

    def sample(self) -> None:
        for inode, drops in procfs.udp_drops_by_inode().items():
            if drops > self.peak.get(inode, -1):
                self.peak[inode] = drops

    def total(self, inodes: set[int]) -> int:
        return sum(self.peak.get(inode, 0) for inode in inodes)


def judge(result: StepResult) -> tuple[str, str]:
    """PASS if no real failures, no retransmission storm and the rate was held."""
    if result.created == 0:
        return "FAIL", "no calls created"
    problems = []
    if result.failed > MAX_FAILED_FRACTION * result.created:
        problems.append(f"failed {result.failed / result.created:.1%}")
    retransmissions = result.retr_uac + result.retr_uas
    if retransmissions > MAX_RETRANSMISSION_FRACTION * result.created:
        problems.append(f"retransmissions {retransmissions / result.created:.1%}")
    if result.achieved_cps < MIN_ACHIEVED_FRACTION * result.rate:
        problems.append(f"achieved {result.achieved_cps / result.rate:.0%} of rate")
    if result.ok < MIN_SUCCESSFUL_FRACTION * result.planned:
        problems.append(f"only {result.ok}/{result.planned} calls ok")
    return ("FAIL", ", ".join(problems)) if problems else ("PASS", "")


def uac_timeout_s(plan: StepPlan, settings: SippSettings) -> int:
    """sipp's own -timeout: the planned duration with slack for a slow tail."""
    return int(plan.calls / plan.rate * 1.5 + settings.recv_timeout_s + 5)


def _start_uas(plan: StepPlan, ports: Ports, settings: SippSettings, step_dir: Path,
               timeout_s: int) -> Optional[ManagedProcess]:
    """Start the sipp UAS; retry on the same port (a just-freed port can refuse a bind)."""
    for attempt in range(3):
        uas = ManagedProcess(uas_command(plan.scenario, ports, settings, timeout_s),
                             step_dir, step_dir / "uas.out")
        uas.start()
        if wait_for_sockets(uas, plan.scenario.transport, ports.uas, 1, timeout_s=5):
            return uas
        uas.stop()
        time.sleep(1 + attempt)
    return None


def _run_uac(plan: StepPlan, ports: Ports, settings: SippSettings, folder: Path,
             on_tick: Callable[[int], None] = lambda pid: None) -> Finished:
    """Run the sipp UAC for plan.calls at plan.rate until it ends (bounded);
    on_tick gets its PID while it runs."""
    timeout_s = uac_timeout_s(plan, settings)
    uac = ManagedProcess(uac_command(plan.scenario, ports, settings, plan.rate, plan.calls,
                                     timeout_s), folder, folder / "uac.out")
    uac.start()
    try:
        return wait_bounded(uac.popen, time.monotonic() + timeout_s + 10, lambda: on_tick(uac.pid))
    finally:
        uac.stop()  # only acts if wait_bounded was interrupted


def _warm_up(result: StepResult, plan: StepPlan, ports: Ports, settings: SippSettings,
             step_dir: Path, same_sipp_ports: bool) -> bool:
    """Send plan.warmup_calls through the running proxy; False if that could not start.

    Its own UAC and UAS keep the measured sipps' counters clean. They get
    fresh ports (a proxy routes on the Request-URI, so any UAS port works),
    except for a peer that relays to fixed sipp ports (the floor).
    """
    warm_dir = step_dir / "warmup"
    warm_dir.mkdir(exist_ok=True)
    warm_ports = ports
    if not same_sipp_ports:
        fresh = allocate_ports(plan.scenario)
        warm_ports = replace(ports, uac=fresh.uac, uas=fresh.uas)
    warm_plan = replace(plan, calls=plan.warmup_calls, kind="warmup")
    uas = _start_uas(warm_plan, warm_ports, settings, warm_dir, uac_timeout_s(warm_plan, settings) + 20)
    if uas is None:
        result.reason = "warm-up sipp UAS did not start"
        return False
    try:
        _run_uac(warm_plan, warm_ports, settings, warm_dir)
    finally:
        uas.stop()
    stats = read_stats(warm_dir / "uac.csv")
    result.warmup_ok = stats.successful if stats else 0
    result.warmup_failed = stats.failed if stats else 0
    return True


def _fill_from_sipp(result: StepResult, uac: Optional[SippStats], uas: Optional[SippStats],
                    wall_s: float) -> None:
    if uac is not None:
        result.created, result.ok, result.failed = uac.created, uac.successful, uac.failed
        result.retr_uac = uac.retransmissions
        result.failure_kinds = uac.failure_kinds
        elapsed = uac.elapsed_s if uac.elapsed_s > 0 else wall_s
        result.achieved_cps = round(uac.successful / elapsed, 1) if elapsed else 0.0
    if uas is not None:
        result.retr_uas = uas.retransmissions


def _measure_uac_run(result: StepResult, plan: StepPlan, ports: Ports,
                     settings: SippSettings, step_dir: Path,
                     proxy: ManagedProcess, uas: ManagedProcess) -> None:
    """Run the UAC and record CPU, memory and drops around it."""
    udp = plan.scenario.transport == "udp"
    sampler = DropSampler()
    proxy_inodes = procfs.socket_inodes(proxy.tree())
    uas_inodes = procfs.socket_inodes([uas.pid])
    uac_inodes: set[int] = set()
    system_drops_before = procfs.udp_rcvbuf_errors()
    proxy_cpu_before = procfs.cpu_seconds(proxy.program_tree())
    uas_cpu_before = procfs.cpu_seconds([uas.pid])

    def on_tick(uac_pid: int) -> None:
        if udp:
            uac_inodes.update(procfs.socket_inodes([uac_pid]))
            sampler.sample()

    finished = _run_uac(plan, ports, settings, step_dir, on_tick)

    proxy_tree = proxy.program_tree()  # empty if the proxy died: its CPU is then unknown
    if proxy_tree:
        result.proxy_cpu_s = round(procfs.cpu_seconds(proxy_tree) - proxy_cpu_before, 3)
    result.proxy_rss_mb = round(procfs.peak_rss_kb(proxy_tree) / 1024, 1)
    result.proxy_processes = len(proxy_tree)
    uas_cpu = procfs.cpu_seconds([uas.pid]) - uas_cpu_before
    result.wall_s = round(finished.wall_s, 3)
    result.proxy_cpu_pct = round(100 * result.proxy_cpu_s / finished.wall_s, 1)
    result.uac_cpu_pct = round(100 * finished.cpu_s / finished.wall_s, 1)
    result.uas_cpu_pct = round(100 * uas_cpu / finished.wall_s, 1)
    if udp:
        sampler.sample()
        result.drops_proxy = sampler.total(proxy_inodes)
        result.drops_uac = sampler.total(uac_inodes)
        result.drops_uas = sampler.total(uas_inodes)
        result.drops_system = procfs.udp_rcvbuf_errors() - system_drops_before
    if finished.killed:
        result.reason = "UAC killed at the harness deadline"


def compress_large_logs(step_dir: Path, limit_bytes: int = 256 * 1024) -> None:
    """gzip sipp error logs that grew large: a collapsing step writes megabytes of them."""
    for log in step_dir.glob("*_errors.log"):
        if log.stat().st_size > limit_bytes:
            with open(log, "rb") as plain, gzip.open(f"{log}.gz", "wb") as packed:
                shutil.copyfileobj(plain, packed)
            log.unlink()


def run_step(peer: Peer, plan: StepPlan, settings: SippSettings, step_dir: Path,
             ports: Optional[Ports] = None) -> StepResult:
    """Run one step end to end; never raises for a misbehaving peer."""
    step_dir.mkdir(parents=True, exist_ok=True)
    ports = ports or allocate_ports(plan.scenario)
    result = StepResult(plan.proxy, plan.scenario.name, plan.kind, plan.round, plan.rate,
                        plan.calls, ports=asdict(ports), step_dir=str(step_dir))
    proxy = ManagedProcess(peer.command(plan.scenario, ports, step_dir), REPO_DIR,
                           step_dir / "proxy.log", wrapped=peer.wrapped)
    uas: Optional[ManagedProcess] = None
    try:
        proxy.start()
        if not wait_for_sockets(proxy, plan.scenario.transport, ports.proxy,
                                len(plan.scenario.proxy_ips)):
            result.reason = f"proxy did not start listening: {proxy.log_tail()}"
            return result
        if plan.warmup_calls and not _warm_up(result, plan, ports, settings, step_dir,
                                              peer.fixed_sipp_ports):
            return result
        uas = _start_uas(plan, ports, settings, step_dir, uac_timeout_s(plan, settings) + 20)
        if uas is None:
            uas_output = (step_dir / "uas.out").read_text(errors="replace").strip()
            result.reason = f"sipp UAS did not start: {uas_output[-200:]}"
            return result
        _measure_uac_run(result, plan, ports, settings, step_dir, proxy, uas)
        if not proxy.running():
            result.reason = f"proxy died: {proxy.log_tail()}"
    finally:
        if uas is not None:
            uas.stop()  # SIGTERM makes sipp write its final statistics line
        proxy.stop()
    _fill_from_sipp(result, read_stats(step_dir / "uac.csv"), read_stats(step_dir / "uas.csv"),
                    result.wall_s)
    if result.ok:
        result.cpu_s_per_1k = round(1000 * result.proxy_cpu_s / result.ok, 3)
    if not result.reason.startswith("proxy died"):
        verdict, why = judge(result)
        result.verdict = verdict
        result.reason = "; ".join(filter(None, [why, result.reason]))
    compress_large_logs(step_dir)
    (step_dir / "result.json").write_text(json.dumps(asdict(result), indent=2))
    return result
