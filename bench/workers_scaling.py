#!/usr/bin/env python3
"""Does `sipproxy --workers N` raise the highest clean call rate with CPU?

For each N in --workers (default 1,2) it searches the highest call rate
that sipproxy carries cleanly (the pass criteria of bench/run_sip.py), and
records how the proxy's CPU splits over its N processes. Run it as

    /work/venv/bin/python bench/workers_scaling.py [--workers 1,2] [--core-share 0.3]

It needs root (for the cgroups), sipp, Linux and loopback only; stdlib only.
Tables go to stdout, raw results to bench/results/<timestamp>-workers/.

Why the CPU quota: this machine has 2 vCPUs, and the sipps need CPU too. A
second worker could only look faster by taking CPU from the sipps, and one
worker may already use a whole core. So each proxy process gets its own
cgroup with a fixed share of a core (--core-share, default 0.3): N workers
then have N x that share, like N small cores, and everything still fits.

Why many flows: the workers share the leg with SO_REUSEPORT, and the kernel
picks a worker per datagram by hashing source and destination address and
port. One sipp UAC and one sipp UAS are two flows, so one worker can get
everything. Here the UAC uses one UDP socket per call (sipp -t un) and the
calls go round-robin to --uas sipp UAS instances (an injection file puts
each UAS in the Request-URI; the proxy routes on it), so both requests and
responses come from many flows. A first short run per N checks that the
calls succeed and that every INVITE reached the UAS its Request-URI names.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sipbench import procfs  # noqa: E402
from sipbench.netplan import SCENARIOS, Ports, free_port, require_loopback  # noqa: E402
from sipbench.peers import BENCH_DIR, bounded, twistd_beside  # noqa: E402
from sipbench.report import Tee, format_table, write_json  # noqa: E402
from sipbench.search import SearchOutcome, SearchSettings, search_highest_clean_rate  # noqa: E402
from sipbench.sipp import SippSettings, read_stats, uac_command, uas_command, wait_bounded  # noqa: E402
from sipbench.step import (ManagedProcess, StepPlan, StepResult, compress_large_logs,  # noqa: E402
                           judge, stop_on_signals, uac_timeout_s, wait_for_sockets)

ADDRESS = require_loopback("127.0.0.1")
SCENARIO = SCENARIOS["udp1"]  # UAC, proxy and every UAS on 127.0.0.1
CGROUP_ROOT = Path("/sys/fs/cgroup/cpu")
CFS_PERIOD_US = 10000  # a short period: a throttled worker waits at most ~7 ms
PROXY_MAX_TIME_S = 600  # coreutils timeout around twistd, should this script be killed
UAS_START_TIMEOUT_S = 5.0
SIPP_MAX_SOCKETS = 1000  # sipp -t un's default (50000) exceeds the open-files limit
ROUTE_CHECK_RATE = 5
# Request-URI or To URI host:port of the UAS, as sipp's built-in uac writes them.
REMOTE_HOSTPORT = "@[remote_ip]:[remote_port]"
INVITE_LINE = re.compile(r"^INVITE sip:[^@\s]*@([^\s;>]+) SIP/2\.0", re.MULTILINE)


@dataclass
class WorkersStep(StepResult):
    """One step's figures: the shared StepResult (so judge() applies) plus
    what only a multi-process proxy has."""

    workers: int = 1
    core_share: Optional[float] = None
    uas_ports: list[int] = field(default_factory=list)
    process_labels: list[str] = field(default_factory=list)  # "w0" is the twistd parent
    process_cpu_s: list[float] = field(default_factory=list)
    throttled_pct: list[float] = field(default_factory=list)  # % of CFS periods throttled
    uac_cpu_s: float = 0.0
    uas_cpu_s: float = 0.0  # all UAS instances together
    route_check: str = ""


class CoreQuota:
    """One cgroup v1 cpu group per proxy process, each capped at a share of a core.

    With share None (--no-quota) nothing is created and place() does nothing.
    """

    def __init__(self, share: Optional[float], count: int) -> None:
        self.share = share
        self.groups = [CGROUP_ROOT / f"sipbench-w{index}" for index in range(count)] if share else []

    def create(self) -> None:
        """Make the groups; raises OSError if the cgroup tree is not writable."""
        quota_us = round((self.share or 0) * CFS_PERIOD_US)
        for group in self.groups:
            group.mkdir(exist_ok=True)
            (group / "cpu.cfs_quota_us").write_text("-1")  # so any period is accepted
            (group / "cpu.cfs_period_us").write_text(str(CFS_PERIOD_US))
            (group / "cpu.cfs_quota_us").write_text(str(quota_us))

    def place(self, pids: list[int]) -> None:
        """Put process i into group i (all its threads move with it)."""
        for group, pid in zip(self.groups, pids):
            (group / "cgroup.procs").write_text(str(pid))

    def throttle_counters(self, count: int) -> list[tuple[int, int]]:
        """(nr_periods, nr_throttled) of the first count groups, to tell how
        often each process hit its quota."""
        counters = []
        for group in self.groups[:count]:
            stat = dict(line.split() for line in (group / "cpu.stat").read_text().splitlines())
            counters.append((int(stat["nr_periods"]), int(stat["nr_throttled"])))
        return counters

    def remove(self) -> None:
        """Move any process left back to the root group, then delete the groups."""
        for group in self.groups:
            if not group.exists():
                continue
            for pid in (group / "cgroup.procs").read_text().split():
                try:
                    (CGROUP_ROOT / "cgroup.procs").write_text(pid)
                except OSError:  # it has just exited
                    pass
            try:
                group.rmdir()
            except OSError as error:
                print(f"could not remove {group}: {error}", file=sys.stderr)


@dataclass
class Config:
    """What every step needs: options, the uac scenario file and the cgroups."""

    twistd: str
    sipp: SippSettings
    uas_count: int
    quota: CoreQuota
    proxy_cwd: Path  # sipproxy writes sipproxy.secret into its working directory
    uac_scenario: Path
    step_counter: int = 0


def write_uac_scenario(folder: Path, sipp_binary: str) -> Path:
    """sipp's built-in uac with the UAS address taken from injection field 0.

    Each call then names its UAS in the Request-URI and To URI; -rsa still
    sends everything to the proxy, which routes on the Request-URI.
    """
    # sipp -sd prints the scenario and then exits with status 99, so no check=True.
    builtin = subprocess.run([sipp_binary, "-sd", "uac"], capture_output=True, text=True,
                             timeout=20).stdout
    if "<scenario" not in builtin or REMOTE_HOSTPORT not in builtin:
        raise SystemExit(f"sipp's built-in uac has no {REMOTE_HOSTPORT!r}; cannot inject the UAS")
    path = folder / "uac_to_many.xml"
    path.write_text(builtin.replace(REMOTE_HOSTPORT, "@[field0]"))
    return path


def proxy_argv(twistd: str, port: int, workers: int) -> list[str]:
    argv = [twistd, "-n", "--pidfile=", "sipproxy", "--legs", f"udp:{ADDRESS}:{port}"]
    return argv + (["--workers", str(workers)] if workers > 1 else [])


def worker_index(pid: int) -> int:
    """0 for the twistd parent, K for the worker started with --worker-index=K
    (-1 if the process is gone), so the processes can be listed in order."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return -1
    return next((int(a.split(b"=", 1)[1]) for a in args if a.startswith(b"--worker-index=")), 0)


def start_uases(config: Config, step_dir: Path, taken: set[int], timeout_s: int,
                trace_messages: bool, started: list[ManagedProcess]) -> dict[int, ManagedProcess]:
    """Start all UAS instances at once, then wait for their sockets; returns
    the ones that receive, by port.

    Started together rather than one by one, because wait_for_sockets waits
    0.5 s after each socket appears. A UAS that cannot bind (a just-freed
    port sometimes refuses) is replaced by one on a fresh port. Every
    process is also added to `started`, so the caller can stop them all
    even if this is interrupted.
    """
    running: dict[int, ManagedProcess] = {}
    for attempt in range(3):
        pending = {}
        for _ in range(config.uas_count - len(running)):
            port = free_port((ADDRESS,), taken)
            uas_dir = step_dir / f"uas-{port}"
            uas_dir.mkdir()
            argv = uas_command(SCENARIO, Ports(0, 0, port), config.sipp, timeout_s)
            if trace_messages:
                argv += ["-trace_msg", "-message_file", "messages.log"]
            pending[port] = ManagedProcess(argv, uas_dir, uas_dir / "uas.out")
            started.append(pending[port])
            pending[port].start()
        deadline = time.monotonic() + UAS_START_TIMEOUT_S
        while pending and time.monotonic() < deadline:
            receiving = {entry.inode: entry.local_port for entry in procfs.read_sockets("udp")}
            for port, uas in list(pending.items()):
                if any(receiving.get(inode) == port for inode in procfs.socket_inodes([uas.pid])):
                    running[port] = pending.pop(port)
                elif not uas.running():
                    del pending[port]  # it could not bind; a new one follows
            time.sleep(0.05)
        for uas in pending.values():
            uas.stop()
        if len(running) == config.uas_count:
            break
        time.sleep(1 + attempt)
    return running


def write_injection(step_dir: Path, uas_ports: list[int]) -> Path:
    """The -inf file: calls take the UASes in turn."""
    path = step_dir / "uases.csv"
    path.write_text("SEQUENTIAL\n" + "".join(f"{ADDRESS}:{port};\n" for port in uas_ports))
    return path


def uac_argv(config: Config, plan: StepPlan, ports: Ports, injection: Path,
             timeout_s: int) -> list[str]:
    """run_sip.py's UAC command, with our scenario file, the injection file
    and one socket per call (-t un) instead of the built-in uac on one socket."""
    argv = uac_command(SCENARIO, ports, config.sipp, plan.rate, plan.calls, timeout_s)
    at = argv.index("-sn")
    argv[at:at + 2] = ["-sf", str(config.uac_scenario)]
    return argv + ["-inf", str(injection), "-t", "un", "-max_socket", str(SIPP_MAX_SOCKETS)]


def measure_uac(result: WorkersStep, config: Config, argv: list[str], step_dir: Path,
                proxy_pids: list[int], uases: list[ManagedProcess], timeout_s: int) -> None:
    """Run the UAC; record CPU per proxy process, sipp CPU, throttling and drops.

    Drops are read once at the end: the proxy's and the UASes' sockets live
    until they are stopped, and their counters are cumulative.
    """
    identities = [procfs.process_id(pid) for pid in proxy_pids]
    uas_pids = [uas.pid for uas in uases]
    proxy_before = [procfs.cpu_seconds([pid]) for pid in proxy_pids]
    uas_before = procfs.cpu_seconds(uas_pids)
    count = len(proxy_pids)
    throttle_before = config.quota.throttle_counters(count)
    system_drops_before = procfs.udp_rcvbuf_errors()

    uac = ManagedProcess(argv, step_dir, step_dir / "uac.out")
    uac.start()
    try:
        finished = wait_bounded(uac.popen, time.monotonic() + timeout_s + 10)
    finally:
        uac.stop()  # only acts if wait_bounded was interrupted

    if not all(ident is not None and procfs.is_alive(ident) for ident in identities):
        result.reason = "a proxy process died during the run"
        return
    result.process_cpu_s = [round(procfs.cpu_seconds([pid]) - before, 3)
                            for pid, before in zip(proxy_pids, proxy_before)]
    result.proxy_cpu_s = round(sum(result.process_cpu_s), 3)
    result.uas_cpu_s = round(procfs.cpu_seconds(uas_pids) - uas_before, 3)
    result.uac_cpu_s = round(finished.cpu_s, 3)
    result.throttled_pct = [
        round(100 * (throttled - t0) / (periods - p0), 1) if periods > p0 else 0.0
        for (p0, t0), (periods, throttled) in zip(throttle_before, config.quota.throttle_counters(count))]
    drops = procfs.udp_drops_by_inode()
    result.drops_proxy = sum(drops.get(i, 0) for i in procfs.socket_inodes(proxy_pids))
    result.drops_uas = sum(drops.get(i, 0) for i in procfs.socket_inodes(uas_pids))
    result.drops_system = procfs.udp_rcvbuf_errors() - system_drops_before
    result.proxy_rss_mb = round(procfs.peak_rss_kb(proxy_pids) / 1024, 1)
    result.wall_s = round(finished.wall_s, 3)
    result.proxy_cpu_pct = round(100 * result.proxy_cpu_s / finished.wall_s, 1)
    result.uac_cpu_pct = round(100 * result.uac_cpu_s / finished.wall_s, 1)
    result.uas_cpu_pct = round(100 * result.uas_cpu_s / finished.wall_s, 1)
    if finished.killed:
        result.reason = "UAC killed at the deadline"


def fill_from_sipp(result: WorkersStep, step_dir: Path) -> None:
    """Calls and the achieved rate from the UAC's CSV; retransmissions from every sipp."""
    uac = read_stats(step_dir / "uac.csv")
    if uac is not None:
        result.created, result.ok, result.failed = uac.created, uac.successful, uac.failed
        result.retr_uac = uac.retransmissions
        result.failure_kinds = uac.failure_kinds
        elapsed = uac.elapsed_s if uac.elapsed_s > 0 else result.wall_s
        result.achieved_cps = round(uac.successful / elapsed, 1) if elapsed else 0.0
    uas_stats = [read_stats(step_dir / f"uas-{port}" / "uas.csv") for port in result.uas_ports]
    result.retr_uas = sum(stats.retransmissions for stats in uas_stats if stats is not None)


def start_proxy(config: Config, proxy: ManagedProcess, result: WorkersStep, port: int) -> list[int]:
    """Start twistd, wait for all N leg sockets, then cap each process's CPU.

    Returns the processes, parent first; an empty list (with result.reason
    set) if the proxy did not come up as N processes.
    """
    proxy.start()
    if not wait_for_sockets(proxy, "udp", port, result.workers):
        result.reason = f"proxy did not start listening: {proxy.log_tail()}"
        return []
    pids = sorted(proxy.program_tree(), key=worker_index)
    if len(pids) != result.workers:
        result.reason = f"expected {result.workers} proxy processes, found {len(pids)}"
        return []
    config.quota.place(pids)
    result.process_labels = [f"w{worker_index(pid)}" for pid in pids]
    return pids


def run_step(config: Config, workers: int, rate: int, calls: int, folder: Path,
             kind: str = "search") -> WorkersStep:
    """One step with fresh processes: proxy, UASes, one UAC run; never raises
    for a misbehaving process (the result then says ERROR and why)."""
    config.step_counter += 1
    step_dir = folder / f"workers{workers}" / f"{config.step_counter:03d}-{kind}-{rate}cps"
    step_dir.mkdir(parents=True)
    plan = StepPlan("sipproxy", SCENARIO, rate, calls, kind)
    timeout_s = uac_timeout_s(plan, config.sipp)
    taken: set[int] = set()
    ports = Ports(proxy=free_port((ADDRESS,), taken), uac=free_port((ADDRESS,), taken), uas=0)
    result = WorkersStep("sipproxy", SCENARIO.name, kind, 1, rate, calls, workers=workers,
                         core_share=config.quota.share, step_dir=str(step_dir))
    proxy = ManagedProcess(bounded(proxy_argv(config.twistd, ports.proxy, workers), PROXY_MAX_TIME_S),
                           config.proxy_cwd, step_dir / "proxy.log", wrapped=True)
    started: list[ManagedProcess] = []
    try:
        pids = start_proxy(config, proxy, result, ports.proxy)
        if pids:
            uases = start_uases(config, step_dir, taken, timeout_s + 20, kind == "route-check",
                                started)
            result.uas_ports = sorted(uases)
            if len(uases) < config.uas_count:
                result.reason = f"only {len(uases)} of {config.uas_count} sipp UAS started"
            else:
                ports = replace(ports, uas=result.uas_ports[0])  # sipp's positional remote
                argv = uac_argv(config, plan, ports, write_injection(step_dir, result.uas_ports),
                                timeout_s)
                measure_uac(result, config, argv, step_dir, pids, list(uases.values()), timeout_s)
    finally:
        for uas in started:
            uas.stop()  # SIGTERM makes sipp write its final statistics line
        proxy.stop()
    result.ports = {"proxy": ports.proxy, "uac": ports.uac}
    fill_from_sipp(result, step_dir)
    if result.ok:
        result.cpu_s_per_1k = round(1000 * result.proxy_cpu_s / result.ok, 3)
    if result.process_cpu_s:
        verdict, why = judge(result)
        result.verdict = verdict
        result.reason = "; ".join(filter(None, [why, result.reason]))
    for directory in [step_dir, *step_dir.glob("uas-*")]:
        compress_large_logs(directory)
    (step_dir / "result.json").write_text(json.dumps(asdict(result), indent=2))
    return result


def check_routes(config: Config, workers: int, folder: Path) -> WorkersStep:
    """A few calls per UAS at 5 calls/s: they must all succeed, and every UAS
    must have received INVITEs addressed to itself only."""
    calls = 2 * config.uas_count
    result = run_step(config, workers, ROUTE_CHECK_RATE, calls, folder, kind="route-check")
    if result.verdict != "PASS":
        result.route_check = f"calls did not pass: {result.reason}"
        return result
    wrong, empty = [], []
    for port in result.uas_ports:
        log = Path(result.step_dir) / f"uas-{port}" / "messages.log"
        targets = INVITE_LINE.findall(log.read_text(errors="replace")) if log.exists() else []
        wrong += [f"{target} at UAS {port}" for target in targets if target != f"{ADDRESS}:{port}"]
        if not targets:
            empty.append(port)
    if wrong or empty:
        result.verdict = "FAIL"
        result.route_check = "; ".join(filter(None, [
            f"misrouted INVITEs: {', '.join(wrong[:5])}" if wrong else "",
            f"no INVITE at UAS {empty}" if empty else ""]))
    else:
        result.route_check = (f"{result.ok}/{calls} calls ok; each of the {len(result.uas_ports)} "
                              f"UASes received only INVITEs for itself")
    return result


def cpu_split(result: WorkersStep) -> str:
    """CPU per proxy process as % of one core, e.g. '29+27'."""
    if not result.process_cpu_s or not result.wall_s:
        return "-"
    return "+".join(f"{100 * cpu / result.wall_s:.0f}" for cpu in result.process_cpu_s)


def shares(result: WorkersStep) -> str:
    """Each process's part of the proxy's CPU, e.g. 'w0 52% / w1 48%'."""
    if not result.proxy_cpu_s:
        return "-"
    return " / ".join(f"{label} {100 * cpu / result.proxy_cpu_s:.0f}%"
                      for label, cpu in zip(result.process_labels, result.process_cpu_s))


def throttled(result: WorkersStep) -> str:
    """% of each process's CFS periods in which it hit its quota, e.g. '90/50'."""
    return "/".join(f"{pct:.0f}" for pct in result.throttled_pct) or "-"


def steps_table(results: list[WorkersStep]) -> str:
    """All steps of one N, one row each."""
    header = ["rate", "created", "ok", "fail", "retr uac/uas", "cps", "proxy cpu%",
              "per process", "throttled%", "cpu-s/1k", "uac cpu%", "uas cpu%",
              "drops p/uas/sys", "result"]
    rows = [[str(r.rate), str(r.created), str(r.ok), str(r.failed), f"{r.retr_uac}/{r.retr_uas}",
             f"{r.achieved_cps:.1f}", f"{r.proxy_cpu_pct:.1f}", cpu_split(r),
             throttled(r),
             "-" if r.cpu_s_per_1k is None else f"{r.cpu_s_per_1k:.3f}",
             f"{r.uac_cpu_pct:.1f}", f"{r.uas_cpu_pct:.1f}",
             "-" if r.drops_proxy is None else f"{r.drops_proxy}/{r.drops_uas}/{r.drops_system}",
             r.verdict + (f" ({r.reason})" if r.reason else "")]
            for r in results]
    return format_table(header, rows)


def progress_line(r: WorkersStep) -> str:
    """One line per finished step, printed while the search goes on."""
    return (f"  N={r.workers} {r.kind} {r.rate} cps: {r.ok}/{r.planned} ok, {r.failed} failed, "
            f"retr {r.retr_uac}/{r.retr_uas}, {r.achieved_cps:.1f} cps, proxy {r.proxy_cpu_pct:.1f}% "
            f"({cpu_split(r)}), throttled {throttled(r)}%, "
            f"drops {r.drops_proxy} -> {r.verdict}" + (f" ({r.reason})" if r.reason else ""))


def summary_lines(searches: dict[int, SearchOutcome]) -> list[str]:
    """Highest clean rate per N, the ratio N=2/N=1, and the CPU split at each maximum."""
    if not searches:
        return ["no search finished"]
    best = {n: outcome.highest_pass for n, outcome in searches.items()}
    lines = ["highest clean rate: " + ", ".join(
        f"N={n} {rate or 'none'} cps (lowest fail {searches[n].lowest_fail or 'none'})"
        for n, rate in best.items())]
    if best.get(1) and best.get(2):
        lines[0] += f"; ratio N=2/N=1 = {best[2] / best[1]:.2f}"
    for n, outcome in searches.items():
        at_max = outcome.result_at(outcome.highest_pass)
        if at_max is not None:
            lines.append(f"  N={n} at {at_max.rate} cps: proxy {at_max.proxy_cpu_pct:.0f}% of a core "
                         f"= {cpu_split(at_max)} per process ({shares(at_max)}), throttled "
                         f"{throttled(at_max)}% of periods, "
                         f"{at_max.cpu_s_per_1k} cpu-s/1k")
    return lines


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts to compare")
    parser.add_argument("--core-share", type=float, default=0.3,
                        help="CPU quota of each proxy process, as a fraction of one core")
    parser.add_argument("--no-quota", action="store_true",
                        help="run without CPU quotas (the result then says little about scaling)")
    parser.add_argument("--uas", type=int, default=32,
                        help="number of sipp UAS instances (half of all messages come from them: "
                             "with few, the hash splits the load unevenly)")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds of calls per step")
    parser.add_argument("--start", type=int, default=250, help="first rate of the ladder, calls/s")
    parser.add_argument("--growth", type=float, default=1.5, help="factor between ladder steps")
    parser.add_argument("--bisections", type=int, default=2)
    parser.add_argument("--max-steps", type=int, default=10, help="at most this many steps per N")
    parser.add_argument("--budget", type=float, default=200.0,
                        help="start no new step after this many seconds per N")
    parser.add_argument("--twistd", default=twistd_beside(sys.executable),
                        help="twistd with sipproxy installed")
    parser.add_argument("--results", type=Path, default=BENCH_DIR / "results")
    args = parser.parse_args(argv)
    args.worker_counts = [int(part) for part in args.workers.split(",") if part.strip()]
    if not args.worker_counts or min(args.worker_counts) < 1:
        parser.error("--workers needs positive integers")
    if not args.no_quota and not 0.1 <= args.core_share <= 1.0:
        parser.error("--core-share must be between 0.1 and 1")
    if args.uas < 1:
        parser.error("--uas must be at least 1")
    return args


def search_each(config: Config, args: argparse.Namespace, folder: Path, say: Tee,
                steps: list[WorkersStep], searches: dict[int, SearchOutcome]) -> None:
    """For each N: the route check, then the ladder and bisections. Fills
    steps and searches as it goes, so an interrupted run still reports them."""
    settings = SearchSettings(start_rate=args.start, growth=args.growth, bisections=args.bisections,
                              step_seconds=args.seconds, max_steps=args.max_steps,
                              budget_s=args.budget)
    for workers in args.worker_counts:
        say(f"\n== N={workers} ==")
        check = check_routes(config, workers, folder)
        steps.append(check)
        say(f"  route check: {check.verdict}: {check.route_check}")
        if check.verdict != "PASS":
            continue

        def run_rate(rate: int, calls: int, workers: int = workers) -> StepResult:
            result = run_step(config, workers, rate, calls, folder)
            steps.append(result)
            say(progress_line(result))
            return result

        searches[workers] = search_highest_clean_rate(run_rate, settings)
        say(f"  stopped: {searches[workers].stopped}")


def report(say: Tee, steps: list[WorkersStep], searches: dict[int, SearchOutcome],
           folder: Path, args: argparse.Namespace) -> None:
    for workers in args.worker_counts:
        ran = [s for s in steps if s.workers == workers and s.kind == "search"]
        if ran:
            say(f"\n== N={workers}, core share {args.core_share if not args.no_quota else 'none'} "
                f"per process ({args.uas} UAS, {args.seconds:g} s steps) ==")
            say(steps_table(ran))
    say("")
    for line in summary_lines(searches):
        say(line)
    write_json(folder / "results.json", {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": " ".join(sys.argv),
        "arguments": {key: str(value) for key, value in vars(args).items()},
        "loadavg_at_end": Path("/proc/loadavg").read_text().split()[:3],
        "steps": [asdict(step) for step in steps],
        "searches": {str(n): {"highest_pass": o.highest_pass, "lowest_fail": o.lowest_fail,
                              "stopped": o.stopped, "rates": [(s.rate, s.verdict) for s in o.steps]}
                     for n, o in searches.items()},
    })
    say(f"\nraw results: {folder}")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if not shutil.which("sipp"):
        print("sipp not found (apt-get install sip-tester)", file=sys.stderr)
        return 2
    quota = CoreQuota(None if args.no_quota else args.core_share, max(args.worker_counts))
    try:
        quota.create()
    except OSError as error:
        quota.remove()
        print(f"cannot set CPU quotas in {CGROUP_ROOT} ({error}); run as root or pass --no-quota",
              file=sys.stderr)
        return 2
    stop_on_signals()
    folder = args.results / (time.strftime("%Y%m%d-%H%M%S") + "-workers")
    folder.mkdir(parents=True)
    say = Tee(sys.stdout, folder / "report.txt")
    steps: list[WorkersStep] = []
    searches: dict[int, SearchOutcome] = {}
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="sipproxy-workers-") as proxy_cwd:
            config = Config(args.twistd, SippSettings(), args.uas, quota, Path(proxy_cwd),
                            write_uac_scenario(folder, SippSettings().binary))
            say(f"{time.strftime('%Y-%m-%d %H:%M:%S')}: {os.cpu_count()} CPUs, load "
                f"{' '.join(Path('/proc/loadavg').read_text().split()[:3])}; workers "
                f"{args.worker_counts}, core share {'none' if args.no_quota else args.core_share}, "
                f"{args.uas} UAS, ladder {args.start} x{args.growth:g} then {args.bisections} "
                f"bisections, {args.seconds:g} s per step")
            search_each(config, args, folder, say, steps, searches)
    except KeyboardInterrupt:
        say("\ninterrupted; reporting what was measured")
    finally:
        quota.remove()
    report(say, steps, searches, folder, args)
    say(f"total time {time.monotonic() - started:.0f} s")
    return 0 if searches and all(o.highest_pass for o in searches.values()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
