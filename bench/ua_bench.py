#!/usr/bin/env python3
"""Benchmark sipproxy's user agent against Net::SIP::Simple, sipp as the
far end and as the C reference.

    /work/venv/bin/python bench/ua_bench.py --uas ours,netsip --roles caller,callee \\
        --rates 20,50 --calls 500 --warmup 300 --search

Roles:

- caller: the UA starts calls at a fixed rate to ``sipp -sn uas`` and hangs
  up each one as soon as it is established (INVITE, 180, 200, ACK, BYE, 200);
- callee: ``sipp -sn uac -r RATE`` calls the UA, which answers at once;
  sipp hangs up.

For each UA, role and rate, one process runs a warm-up (the same calls, not
measured: PyPy's JIT needs it, and a UA that runs for days is warm), then
the measured calls. The UA's CPU is the scheduler's nanosecond count
(/proc/PID/task/*/schedstat; a UA at 40 calls/s runs in bursts much
shorter than the 10 ms ticks of /proc/PID/stat), read at the start and end
of the measured calls (the UA prints a line at each phase; the callee's
phases are the sipp runs); sipp's CPU (ticks) in the same window is the
C++ reference. A rate is clean when every
measured call succeeded and none failed. ``--search`` steps the rate up
(x growth) from ``--search-start`` until a rate is not clean, then bisects.

UAs: ``ours`` (bench/ua_load.py on this Python, with sipproxy.ua.Simple),
``ours-pypy`` (the same on --pypy, default /work/venv-pypy/bin/python),
``netsip`` (bench/netsip_ua.pl, Net::SIP::Simple 0.835), ``floor``
(bench/ua_floor.py: the same datagrams from templates with no SIP stack,
so what the system calls and wake-ups of a call cost Twisted on this
Python, which no work in the stack can remove), and ``floor-parse`` (the
floor that also parses every datagram with sipproxy's parser: the floor
of any UA built on it). Loopback only,
stdlib only, Linux only; every process runs under a deadline and is stopped
by PID.
"""
from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sipbench.procfs import cpu_seconds, process_tree, run_seconds, terminate  # noqa: E402
from sipbench.sipp import read_stats, wait_bounded  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
HOST = "127.0.0.1"


#: bounds of --sipp-buff-size, in bytes: below a few datagrams sipp drops
#: everything; above this the kernel caps it anyway (net.core.rmem_max)
SIPP_BUFFER_RANGE = (4096, 1 << 30)


#: the UAs --uas names (see the module's doc)
UAS = ("ours", "ours-pypy", "netsip", "floor", "floor-parse")


def ua_names(text: str) -> list[str]:
    """--uas as a list; an unknown name is one line and exit status 1."""
    names = [name for name in text.split(",") if name]
    unknown = [name for name in names if name not in UAS]
    if unknown:
        raise SystemExit(f"--uas: unknown UA {unknown[0][:40]!r} (known: {', '.join(UAS)})")
    return names


def whole_number_in(value: str, low: int, high: int) -> bool:
    """C{value} is ASCII digits (no sign, exponent or other script's
    digits) naming a number from C{low} to C{high}; the length is checked
    first, so thousands of digits are never converted."""
    return (len(value) <= len(str(high)) and value.isascii() and value.isdigit()
            and low <= int(value) <= high)


def sipp_buffer_size(text: Optional[str]) -> Optional[int]:
    """--sipp-buff-size as a number of bytes (None: sipp's default); a bad
    value is one line naming the option, and exit status 1."""
    if text is None:
        return None
    low, high = SIPP_BUFFER_RANGE
    value = text.strip()
    if not whole_number_in(value, low, high):
        raise SystemExit(f"--sipp-buff-size {text[:40]!r}: expected a number of bytes from {low} to {high}")
    return int(value)


#: the calls per second --rates takes (the highest clean rate found so far is under 2000)
RATE_RANGE = (1, 100000)


def fixed_rates(text: str) -> list[int]:
    """--rates as a list of calls/s (empty: only a search); a value that is
    not a whole number in RATE_RANGE is one line and exit status 1 (a zero
    rate divided by zero, a negative one waited for a phase that never
    came)."""
    low, high = RATE_RANGE
    rates = []
    for item in text.split(","):
        value = item.strip()
        if not value:
            continue
        if not whole_number_in(value, low, high):
            raise SystemExit(f"--rates {text[:40]!r}: expected calls/s from {low} to {high}, comma-separated")
        rates.append(int(value))
    return rates


@dataclass
class Result:
    ua: str
    role: str
    rate: int
    calls: int
    warmup: int
    ok: int = 0
    failed: int = 0
    retransmissions: Optional[int] = None  # sipp's, over the measured calls
    seconds: float = 0.0
    ua_cpu_s: float = 0.0
    sipp_cpu_s: float = 0.0
    warmup_ok: int = 0
    warmup_failed: int = 0
    note: str = ""
    failure_kinds: dict = field(default_factory=dict)
    retransmission_calls: int = 0  # the calls sipp's retransmission count covers
    search: bool = False  # a step of the rate search (not one of the fixed-rate steps)

    @property
    def achieved(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    @property
    def clean(self) -> bool:
        """Every call succeeded, at (at least 90 % of) the rate asked, with
        retransmissions under 1 % of the calls: the proxy bench's PASS rule.
        A UA that falls behind shows it as a lower achieved rate and as
        sipp's retransmissions long before calls fail."""
        retransmitted = self.retransmissions or 0
        return (self.ok == self.calls and self.failed == 0 and not self.note
                and self.achieved >= 0.9 * self.rate
                and retransmitted <= 0.01 * (self.retransmission_calls or self.calls))

    @property
    def ms_per_call(self) -> Optional[float]:
        return 1000 * self.ua_cpu_s / self.ok if self.ok else None

    @property
    def sipp_ms_per_call(self) -> Optional[float]:
        return 1000 * self.sipp_cpu_s / self.ok if self.ok else None

    def row(self) -> str:
        ms = f"{self.ms_per_call:.3f}" if self.ms_per_call else "-"
        sipp_ms = f"{self.sipp_ms_per_call:.3f}" if self.sipp_ms_per_call else "-"
        achieved = f"{self.achieved:.1f}" if self.seconds else "-"
        return (f"| {self.ua} | {self.role} | {self.rate} | {self.calls} | {self.ok} | {self.failed} | "
                f"{self.retransmissions if self.retransmissions is not None else '-'} | {achieved} | "
                f"{self.ua_cpu_s:.2f} | {ms} | {sipp_ms} | {'clean' if self.clean else ('FAIL ' + self.note).strip()} |")


HEADER = ("| UA | role | rate | calls | ok | failed | sipp retr | achieved cps | UA cpu-s | "
          "UA cpu-ms/call | sipp cpu-ms/call | result |\n|---|---|---|---|---|---|---|---|---|---|---|---|")


def free_port() -> int:
    """A port free for UDP and TCP on HOST (bound to 0, read, released)."""
    import socket
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                t.bind((HOST, port))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port")


class UAProcess:
    """A UA under test: its process, and its JSON lines read by a thread."""

    def __init__(self, argv: list[str], log: Path, env: Optional[dict] = None) -> None:
        self.log = open(log, "w")
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.log, text=True, env=env,
                                     cwd=REPO_DIR, start_new_session=True)
        self.lines: "queue.Queue[dict]" = queue.Queue()
        self.tree: list[int] = [self.proc.pid]
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if not self.log.closed:
                self.log.write("OUT " + line)
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                # read the CPU at once: the phase lines are measurement points
                event["_cpu"] = run_seconds(self.proc.pid)
                event["_t"] = time.monotonic()
                self.lines.put(event)

    def wait_for(self, predicate, deadline: float) -> Optional[dict]:
        while time.monotonic() < deadline:
            try:
                event = self.lines.get(timeout=0.1)
            except queue.Empty:
                # the reader at the end of the output, not the process's
                # exit: its last lines may still be in the pipe then
                if not self.reader.is_alive() and self.lines.empty():
                    return None
                continue
            if predicate(event):
                return event
        return None

    def cpu(self) -> float:
        return run_seconds(self.proc.pid)

    def stop(self) -> None:
        terminate(self.proc, process_tree(self.proc.pid))
        self.log.close()


class Bench:
    def __init__(self, args: argparse.Namespace, out: Path) -> None:
        self.args = args
        self.out = out
        self.sipp = shutil.which("sipp")
        if self.sipp is None:
            sys.exit("sipp is not installed")

    # -- the UAs --------------------------------------------------------------------------
    def ua_command(self, ua: str, role: str, port: int, rate: int, calls: int, warmup: int,
                   target: str) -> tuple[list[str], dict]:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO_DIR) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        mode = "call" if role == "caller" else "answer"
        common = ["--mode", mode, "--leg", f"{HOST}:{port}", "--max-time", str(self.args.max_time)]
        if role == "caller":
            common += ["--to", target, "--rate", str(rate), "--calls", str(calls), "--warmup", str(warmup),
                       "--warmup-rate", str(self.warmup_rate(ua, rate))]
        if ua == "netsip":
            return ["perl", str(BENCH_DIR / "netsip_ua.pl"), *common], env
        if ua in ("floor", "floor-parse"):
            parse = ["--parse"] if ua == "floor-parse" else []
            return [sys.executable, str(BENCH_DIR / "ua_floor.py"), *common, *parse], env
        python = {"ours": sys.executable, "ours-pypy": self.args.pypy}[ua]
        return [python, str(BENCH_DIR / "ua_load.py"), *common], env

    def missing(self, ua: str) -> Optional[str]:
        if ua == "netsip":
            probe = subprocess.run(["perl", "-MNet::SIP", "-e", "1"], capture_output=True)
            return None if probe.returncode == 0 else "perl Net::SIP is not installed"
        if ua == "ours-pypy" and not os.access(self.args.pypy, os.X_OK):
            return f"no PyPy at {self.args.pypy}"
        return None

    def warmup_rate(self, ua: str, rate: int) -> int:
        """The warm-up's calls/s: the step's, but --pypy-warmup-rate for
        ours-pypy's long warm-up when higher (it is not measured, and
        thousands of calls at a low rate would only take time). The other
        UAs warm up at the step's rate: Net::SIP's caller does not survive
        a faster warm-up."""
        if ua == "ours-pypy":
            return max(rate, self.args.pypy_warmup_rate or rate)
        return rate

    # -- sipp --------------------------------------------------------------------------------
    def sipp_buffers(self) -> list[str]:
        """sipp's socket buffers: 64 KB by default, a few dozen datagrams.
        At 1897 calls/s a caller step lost 141 datagrams to full receive
        buffers (RcvbufErrors in /proc/net/snmp) and 62 calls failed, sipp
        having aborted them for a missing ACK; with 4 MB the same step was
        clean. --sipp-buff-size gives every UA's sipp the same buffers."""
        size = self.args.sipp_buff_size
        return ["-buff_size", str(size)] if size else []

    def sipp_uas(self, port: int, folder: Path) -> subprocess.Popen:
        argv = [self.sipp, "-sn", "uas", "-i", HOST, "-p", str(port), "-nostdin", "-bind_local",
                "-trace_stat", "-stf", str(folder / "uas-stats.csv"), "-fd", "1",
                "-timeout", f"{self.args.max_time}s", *self.sipp_buffers()]
        with open(folder / "uas.log", "w") as log:
            return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=folder, start_new_session=True)

    def sipp_uac(self, port: int, target_port: int, rate: int, calls: int, folder: Path, name: str):
        stats = folder / f"{name}-stats.csv"
        argv = [self.sipp, "-sn", "uac", f"{HOST}:{target_port}", "-i", HOST, "-p", str(port), "-bind_local",
                "-r", str(rate), "-m", str(calls), "-nostdin", "-recv_timeout", "10s",
                "-timeout", f"{int(calls / rate) + 30}s", "-trace_stat", "-stf", str(stats), "-fd", "1",
                *self.sipp_buffers()]
        with open(folder / f"{name}.log", "w") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=folder, start_new_session=True)
        finished = wait_bounded(proc, time.monotonic() + calls / rate + 40)
        return finished, read_stats(stats)

    # -- one step ----------------------------------------------------------------------------
    def run(self, ua: str, role: str, rate: int, calls: int) -> Result:
        warmup = self.args.pypy_warmup if ua == "ours-pypy" and self.args.pypy_warmup else self.args.warmup
        folder = self.out / f"{ua}-{role}-{rate}"
        folder.mkdir(parents=True, exist_ok=True)
        result = Result(ua, role, rate, calls, warmup)
        port, sipp_port = free_port(), free_port()
        if role == "caller":
            uas = self.sipp_uas(sipp_port, folder)
            time.sleep(0.3)  # sipp binds at once; a short grace instead of probing it with calls
            argv, env = self.ua_command(ua, role, port, rate, calls, warmup, f"sip:service@{HOST}:{sipp_port}")
            proc = UAProcess(argv, folder / "ua.log", env)
            try:
                budget = time.monotonic() + warmup / self.warmup_rate(ua, rate) + calls / rate + 60
                if warmup:
                    warm = proc.wait_for(lambda e: e.get("event") == "phase_done", budget)
                    if warm is not None:
                        result.warmup_ok, result.warmup_failed = int(warm["ok"]), int(warm["failed"])
                start = proc.wait_for(lambda e: e.get("event") == "phase" and e.get("phase") == "measure", budget)
                if start is None:
                    result.note = "no measure phase"
                    return result
                sipp_cpu0 = cpu_seconds([uas.pid])
                end = proc.wait_for(lambda e: e.get("event") == "phase_done" and e.get("phase") == "measure",
                                    budget)
                if end is None:
                    result.note = "UA did not finish"
                    return result
                result.ok, result.failed = int(end["ok"]), int(end["failed"])
                result.seconds = end["_t"] - start["_t"]
                result.ua_cpu_s = end["_cpu"] - start["_cpu"]
                result.sipp_cpu_s = cpu_seconds([uas.pid]) - sipp_cpu0
            finally:
                proc.stop()
                terminate(uas, process_tree(uas.pid))
            stats = read_stats(folder / "uas-stats.csv")
            if stats is not None:
                result.retransmissions = stats.retransmissions  # warm-up included: the UAS ran for both
                result.retransmission_calls = warmup + calls
                result.failure_kinds = stats.failure_kinds
        else:
            argv, env = self.ua_command(ua, role, port, rate, calls, warmup, "")
            proc = UAProcess(argv, folder / "ua.log", env)
            try:
                if proc.wait_for(lambda e: e.get("event") == "ready", time.monotonic() + 30) is None:
                    result.note = "UA did not start"
                    return result
                if warmup:
                    _, warm = self.sipp_uac(free_port(), port, self.warmup_rate(ua, rate), warmup, folder, "warmup")
                    if warm is not None:
                        result.warmup_ok, result.warmup_failed = warm.successful, warm.failed
                cpu0 = proc.cpu()
                t0 = time.monotonic()
                finished, stats = self.sipp_uac(free_port(), port, rate, calls, folder, "uac")
                result.seconds = time.monotonic() - t0
                result.ua_cpu_s = proc.cpu() - cpu0
                result.sipp_cpu_s = finished.cpu_s
                if stats is None:
                    result.note = "sipp wrote no statistics"
                    return result
                result.ok, result.failed = stats.successful, stats.failed + (stats.created - stats.successful
                                                                            - stats.failed)
                result.retransmissions = stats.retransmissions
                result.failure_kinds = stats.failure_kinds
                if stats.elapsed_s:
                    result.seconds = stats.elapsed_s
            finally:
                proc.stop()
        return result

    def search(self, ua: str, role: str, log) -> Optional[int]:
        """Highest clean rate: grow until a step fails, then bisect."""
        rate, best, worst = self.args.search_start, None, None
        steps = 0
        while steps < self.args.search_steps:
            steps += 1
            r = self.step(ua, role, rate, log, searching=True)
            if r.clean:
                best = rate
                if worst is not None:
                    break
                rate = int(rate * self.args.growth)
            else:
                worst = rate
                break
        for _ in range(self.args.bisections if best is not None and worst is not None else 0):
            mid = (best + worst) // 2
            if mid in (best, worst):
                break
            if self.step(ua, role, mid, log, searching=True).clean:
                best = mid
            else:
                worst = mid
        return best

    def step(self, ua: str, role: str, rate: int, log, searching: bool = False) -> Result:
        calls = max(self.args.min_calls, int(rate * self.args.search_seconds)) if searching else self.args.calls
        r = self.run(ua, role, rate, calls)
        r.search = searching
        self.results.append(r)
        log(r.row())
        return r


def summary_lines(results: list[Result], roles: list[str], uas: list[str],
                  best: Optional[dict[tuple[str, str], Optional[int]]]) -> list[str]:
    """The run's summary: for each role and fixed rate, each UA's CPU per
    call (the mean of that rate's rounds) and its ratio to Net::SIP's at
    the same rate; then, after a search (C{best} given), the highest clean
    rates. Rates are kept apart because a call costs a UA a quarter to a
    third less at 200 calls/s than at 100: a mean over both would depend
    on which rates were asked."""
    lines = []
    for role in roles:
        fixed = [r for r in results if r.role == role and not r.search and r.ms_per_call]
        for rate in sorted({r.rate for r in fixed}):
            means: dict[str, float] = {}
            for ua in uas:
                steps = [r for r in fixed if r.ua == ua and r.rate == rate]
                if not steps:
                    continue
                means[ua] = sum(r.ms_per_call for r in steps) / len(steps)
                sipp = [r.sipp_ms_per_call for r in steps if r.sipp_ms_per_call]
                line = f"{role:6} {rate:>5}/s {ua:11} cpu-ms/call {means[ua]:.3f}"
                line += f" (sipp {sum(sipp) / len(sipp):.3f})" if sipp else ""
                lines.append(line + f", {len(steps)} round{'s' if len(steps) > 1 else ''}")
            reference = means.get("netsip")
            for ua, mean in means.items():
                if reference and ua != "netsip":
                    lines.append(f"{role:6} {rate:>5}/s {ua} / netsip CPU per call = {mean / reference:.3f}"
                                 " (target <= 0.2)")
        if best is None:
            continue
        for ua in uas:
            lines.append(f"{role:6} {ua:11} highest clean rate {best.get((ua, role))}")
        reference_rate = best.get(("netsip", role))
        for ua in uas:
            if reference_rate and ua != "netsip" and best.get((ua, role)):
                lines.append(f"{role:6} {ua} / netsip highest clean rate {best[(ua, role)]} / {reference_rate} = "
                             f"{best[(ua, role)] / reference_rate:.1f}x (target >= 5x)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uas", default="ours,netsip", help=", ".join(UAS))
    parser.add_argument("--roles", default="caller,callee")
    parser.add_argument("--rates", default="20", help="fixed rates, calls/s (may be empty)")
    parser.add_argument("--calls", type=int, default=500, help="measured calls per fixed-rate step")
    parser.add_argument("--warmup", type=int, default=300, help="warm-up calls before each measured run")
    parser.add_argument("--pypy-warmup", type=int, default=0,
                        help="warm-up calls for ours-pypy (default: --warmup); its JIT needs thousands")
    parser.add_argument("--pypy-warmup-rate", type=int, default=0,
                        help="calls/s of ours-pypy's warm-up when higher than the step's rate")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of the fixed-rate steps")
    parser.add_argument("--search", action="store_true", help="find each UA's highest clean rate")
    parser.add_argument("--search-start", type=int, default=25)
    parser.add_argument("--growth", type=float, default=2.0)
    parser.add_argument("--bisections", type=int, default=3)
    parser.add_argument("--search-steps", type=int, default=8)
    parser.add_argument("--search-seconds", type=float, default=5.0, help="calls per search step = rate x this")
    parser.add_argument("--min-calls", type=int, default=200)
    parser.add_argument("--max-time", type=int, default=300, help="hard limit for each UA process, seconds")
    parser.add_argument("--pypy", default="/work/venv-pypy/bin/python")
    parser.add_argument("--sipp-buff-size", default=None,
                        help="sipp -buff_size in bytes, for every UA (sipp default: 65535)")
    parser.add_argument("--out", default=str(BENCH_DIR / "results" / time.strftime("ua-%Y%m%d-%H%M%S")))
    args = parser.parse_args()
    args.sipp_buff_size = sipp_buffer_size(args.sipp_buff_size)
    args.uas = ua_names(args.uas)
    rates = fixed_rates(args.rates)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bench = Bench(args, out)
    bench.results: list[Result] = []
    transcript = open(out / "summary.md", "w")

    def log(text: str) -> None:
        print(text, flush=True)
        transcript.write(text + "\n")
        transcript.flush()

    uas = args.uas
    usable = []
    for ua in uas:
        why = bench.missing(ua)
        if why:
            log(f"skip {ua}: {why}")
        else:
            usable.append(ua)
    roles = [r for r in args.roles.split(",") if r]
    log(f"ua_bench: {time.strftime('%Y-%m-%d %H:%M:%S')} uas={usable} roles={roles} rates={rates} "
        f"calls={args.calls} warmup={args.warmup} pypy-warmup={args.pypy_warmup or args.warmup} "
        f"pypy-warmup-rate={args.pypy_warmup_rate or 'the step rate'} python={sys.version.split()[0]}")
    log(HEADER)
    for _ in range(args.repeat):
        for rate in rates:
            for role in roles:
                for ua in usable:  # interleaved, so drift of the VM's speed hits all alike
                    bench.step(ua, role, rate, log)
    best: dict[tuple[str, str], Optional[int]] = {}
    if args.search:
        log("\nrate search (calls per step = max(min-calls, rate x search-seconds))")
        log(HEADER)
        for role in roles:
            for ua in usable:
                best[(ua, role)] = bench.search(ua, role, log)

    log("\n## summary")
    for line in summary_lines(bench.results, roles, usable, best if args.search else None):
        log(line)
    with open(out / "results.json", "w") as f:
        json.dump([asdict(r) | {"clean": r.clean} for r in bench.results], f, indent=1)


if __name__ == "__main__":
    main()
