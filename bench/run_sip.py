#!/usr/bin/env python3
"""Benchmark sipproxy against Net::SIP, Kamailio and a bare Twisted relay.

One command runs everything, e.g.

    /work/venv/bin/python bench/run_sip.py --scenario udp1 \\
        --proxies sipproxy,netsip,kamailio,floor --rates 200,1000 --calls 2000 --search

For every proxy and scenario it starts the proxy, a sipp UAS and a sipp UAC
(whose messages all go to the proxy), and measures calls, retransmissions,
achieved rate, proxy CPU per 1000 calls, peak memory, sipp's own CPU and UDP
drops; --search then looks for the highest clean rate. Tables go to stdout,
raw results to bench/results/<timestamp>/. See bench/README.md.

Only loopback addresses are ever used; stdlib only; Linux only.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sipbench.netplan import SCENARIOS, Scenario  # noqa: E402
from sipbench.peers import BENCH_DIR, PEER_CLASSES, REPO_DIR, Peer, PeerOptions, twistd_beside  # noqa: E402
from sipbench.report import (ProxySummary, Tee, progress_line, ratio_lines,  # noqa: E402
                             steps_table, summarize_fixed, summary_table, write_json, write_tsv)
from sipbench.search import SearchOutcome, SearchSettings, search_highest_clean_rate  # noqa: E402
from sipbench.sipp import SippSettings  # noqa: E402
from sipbench.step import StepPlan, StepResult, run_step, stop_on_signals  # noqa: E402
from sipbench.verify import PathCheck, check_path  # noqa: E402

# --quick: 2 s steps at 250, 1000, 4000 calls/s, then one bisection.
QUICK_SEARCH = SearchSettings(start_rate=250, growth=4, step_seconds=2, bisections=1,
                              max_steps=4, budget_s=25)


def _int_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def _name_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _default_python() -> str:
    """The interpreter for the floor: this one if it has Twisted, else the project venv."""
    try:
        import twisted  # noqa: F401
        return sys.executable
    except ImportError:
        return "/work/venv/bin/python"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--scenario", default="udp1",
                        help=f"comma-separated, from {', '.join(SCENARIOS)}")
    parser.add_argument("--proxies", default=",".join(PEER_CLASSES),
                        help=f"comma-separated, from {', '.join(PEER_CLASSES)}")
    parser.add_argument("--rates", default=None,
                        help="fixed rates in calls/s, comma-separated ('' for none) "
                             "[default: 200,1000; --quick: 200]")
    parser.add_argument("--calls", type=int, default=None,
                        help="calls per fixed-rate step [default: 2000; --quick: 400]")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds of fixed-rate steps, interleaved across proxies")
    parser.add_argument("--search", action="store_true",
                        help="also search the highest clean rate")
    parser.add_argument("--search-start", type=int, default=SearchSettings.start_rate)
    parser.add_argument("--search-max", type=int, default=SearchSettings.max_rate)
    parser.add_argument("--search-growth", type=float, default=SearchSettings.growth,
                        help="factor between climbing steps")
    parser.add_argument("--search-seconds", type=float, default=SearchSettings.step_seconds,
                        help="duration of one search step (calls = rate x this, <= 40000)")
    parser.add_argument("--bisections", type=int, default=SearchSettings.bisections)
    parser.add_argument("--search-steps", type=int, default=SearchSettings.max_steps,
                        help="at most this many steps per proxy")
    parser.add_argument("--search-budget", type=float, default=SearchSettings.budget_s,
                        help="no new search step after this many seconds per proxy")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 400 calls at 200/s, and a 4-step search if --search")
    parser.add_argument("--verify", action="store_true",
                        help="first capture 5 calls per proxy with tshark and check the path")
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes: kamailio -n (default 1); passed to sipproxy "
                             "as --workers when given")
    parser.add_argument("--lenient", action="store_true",
                        help="sipp -default_behaviors all,-abortunexp (for reordering proxies)")
    parser.add_argument("--recv-timeout", type=int, default=SippSettings.recv_timeout_s,
                        help="sipp -recv_timeout in seconds")
    parser.add_argument("--sipp-buff-size", type=int, default=None,
                        help="sipp -buff_size in bytes (sipp default: 65535)")
    parser.add_argument("--floor-python", default=_default_python(),
                        help="interpreter with Twisted for floor_relay.py")
    parser.add_argument("--twistd", default=None,
                        help="twistd for sipproxy [default: next to --floor-python]")
    parser.add_argument("--pypy-twistd", default=str(REPO_DIR / ".venv-pypy" / "bin" / "twistd"),
                        help="twistd of a PyPy venv with sipproxy installed, for sipproxy-pypy")
    parser.add_argument("--warmup", type=int, default=0, metavar="CALLS",
                        help="before each step's measured calls, send this many at the same rate "
                             "(own sipps, not counted), so that a JIT is measured warm")
    parser.add_argument("--sipproxy-cmd", default=None,
                        help="command template for sipproxy with {twistd} {legs} {port} "
                             "{workers}, e.g. '{twistd} -n --pidfile= sipproxy --legs {legs}'")
    parser.add_argument("--kamailio", default=shutil.which("kamailio") or "/usr/sbin/kamailio")
    parser.add_argument("--results", type=Path, default=BENCH_DIR / "results",
                        help="parent folder of the timestamped result folder")
    args = parser.parse_args(argv)
    unknown = [name for name in _name_list(args.scenario) if name not in SCENARIOS]
    unknown += [name for name in _name_list(args.proxies) if name not in PEER_CLASSES]
    if unknown:
        parser.error(f"unknown scenario or proxy: {', '.join(unknown)}")
    args.scenarios = [SCENARIOS[name] for name in _name_list(args.scenario)]
    args.proxy_names = _name_list(args.proxies)
    default_rates, default_calls = ("200", 400) if args.quick else ("200,1000", 2000)
    args.rate_list = _int_list(default_rates if args.rates is None else args.rates)
    args.calls = args.calls or default_calls
    args.twistd = args.twistd or twistd_beside(args.floor_python)
    return args


def search_settings(args: argparse.Namespace) -> SearchSettings:
    if args.quick:
        return QUICK_SEARCH
    return SearchSettings(start_rate=args.search_start, max_rate=args.search_max,
                          growth=args.search_growth, step_seconds=args.search_seconds, bisections=args.bisections,
                          max_steps=args.search_steps, budget_s=args.search_budget)


def _first_line(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return "not available"
    lines = [line.strip() for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    return lines[0] if lines else "?"


def describe_machine(args: argparse.Namespace) -> dict[str, str]:
    """The facts needed to compare figures across machines and sessions."""
    cpu_model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "nproc": str(os.cpu_count()),
        "cpu_model": cpu_model,
        "kernel": platform.release(),
        "loadavg_at_start": " ".join(open("/proc/loadavg").read().split()[:3]),
        "sipp": _first_line(["sipp", "-v"]),
        "kamailio": _first_line([args.kamailio, "-v"]),
        "netsip": _first_line(["perl", "-MNet::SIP", "-e", "print qq{Net::SIP $Net::SIP::VERSION, perl $^V}"]),
        "floor_python": _first_line([args.floor_python, "-c",
                                     "import sys, twisted; print(sys.version.split()[0], "
                                     "'Twisted', twisted.__version__)"]),
        "command": " ".join(sys.argv),
    }


class Run:
    """One invocation: its result folder, its output, and everything measured."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.folder = args.results / time.strftime("%Y%m%d-%H%M%S")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.say = Tee(sys.stdout, self.folder / "report.txt")
        self.sipp = SippSettings(recv_timeout_s=args.recv_timeout, lenient=args.lenient,
                                 buff_size=args.sipp_buff_size)
        self.options = PeerOptions(twistd=args.twistd, pypy_twistd=args.pypy_twistd,
                                   sipproxy_cmd=args.sipproxy_cmd,
                                   floor_python=args.floor_python, kamailio=args.kamailio,
                                   workers=args.workers, max_time_s=1800)
        self.results: list[StepResult] = []
        self.searches: dict[tuple[str, str], SearchOutcome] = {}
        self.checks: list[PathCheck] = []
        self.skipped: dict[tuple[str, str], str] = {}
        self.step_counter = 0

    def step_dir(self, scenario: Scenario, proxy: str, label: str) -> Path:
        self.step_counter += 1
        return self.folder / scenario.name / proxy / f"{self.step_counter:03d}-{label}"

    def run_and_report(self, peer: Peer, plan: StepPlan) -> StepResult:
        label = f"{plan.kind}-r{plan.round}-{plan.rate}cps"
        result = run_step(peer, plan, self.sipp, self.step_dir(plan.scenario, peer.name, label))
        self.results.append(result)
        self.say("  " + progress_line(result))
        return result

    def available_peers(self, scenario: Scenario) -> list[Peer]:
        peers = []
        for name in self.args.proxy_names:
            peer = PEER_CLASSES[name](self.options)
            reason = peer.missing(scenario)
            if reason:
                self.skipped[(scenario.name, name)] = reason
                self.say(f"skip {name} ({scenario.name}): {reason}")
            else:
                peers.append(peer)
        return peers

    def verify(self, scenario: Scenario, peers: list[Peer]) -> None:
        self.say(f"\n== path check with tshark, {scenario.name}: 5 calls per proxy ==")
        for peer in peers:
            check = check_path(peer, scenario, self.sipp,
                               self.step_dir(scenario, peer.name, "verify"))
            self.checks.append(check)
            self.say(f"{peer.name}: {check.verdict}  {check.calls_ok} calls ok, "
                     f"{check.via_proxy} messages via proxy, {check.direct} direct, "
                     f"{check.other} other  {check.note}")
            for line in check.first_call_flow:
                self.say(f"    {line}")

    def fixed_rates(self, scenario: Scenario, peers: list[Peer]) -> None:
        if not self.args.rate_list:
            return
        self.say(f"\n== fixed rates {self.args.rate_list}, {self.args.calls} calls per step, "
                 f"{self.args.repeat} round(s), {scenario.name} ==")
        for round_number in range(1, self.args.repeat + 1):
            for peer in peers:
                for rate in self.args.rate_list:
                    self.run_and_report(peer, StepPlan(peer.name, scenario, rate,
                                                       self.args.calls, "fixed", round_number,
                                                       self.args.warmup))

    def search(self, scenario: Scenario, peers: list[Peer]) -> None:
        settings = search_settings(self.args)
        self.say(f"\n== search for the highest clean rate, {scenario.name}: from "
                 f"{settings.start_rate} x{settings.growth:g}, {settings.bisections} bisections, "
                 f"{settings.step_seconds:g} s steps, <= {settings.max_steps} steps ==")
        for peer in peers:
            def run_rate(rate: int, calls: int, peer: Peer = peer) -> StepResult:
                return self.run_and_report(peer, StepPlan(peer.name, scenario, rate, calls,
                                                          "search", warmup_calls=self.args.warmup))
            outcome = search_highest_clean_rate(run_rate, settings)
            self.searches[(scenario.name, peer.name)] = outcome
            self.say(f"  {peer.name}: highest clean rate {outcome.highest_pass or 'none'} cps "
                     f"(lowest failing: {outcome.lowest_fail or 'none'}); "
                     f"stopped: {outcome.stopped}")

    def summaries(self, scenario: Scenario) -> list[ProxySummary]:
        summaries = []
        for name in self.args.proxy_names:
            summary = ProxySummary(name, scenario.name,
                                   note=self.skipped.get((scenario.name, name), ""))
            summarize_fixed(summary, [r for r in self.results if r.scenario == scenario.name
                                      and r.proxy == name and r.kind == "fixed"])
            outcome = self.searches.get((scenario.name, name))
            if outcome is not None:
                summary.highest_clean, summary.lowest_failed = (outcome.highest_pass,
                                                                outcome.lowest_fail)
                at_max = outcome.result_at(outcome.highest_pass)
                if at_max is not None:
                    summary.cpu_per_1k_at_max = at_max.cpu_s_per_1k
                    summary.cpu_pct_at_max = at_max.proxy_cpu_pct
                for step in outcome.steps:
                    summary.peak_rss_mb = max(summary.peak_rss_mb, step.proxy_rss_mb)
            ran = any(r.scenario == scenario.name and r.proxy == name for r in self.results)
            if ran and not summary.cpu_per_1k and summary.highest_clean is None:
                summary.note = "no clean step"
            summaries.append(summary)
        return summaries

    def final_report(self) -> None:
        self.say("\n== all steps ==")
        self.say(steps_table(self.results) if self.results else "(no steps run)")
        all_summaries = []
        for scenario in self.args.scenarios:
            summaries = self.summaries(scenario)
            all_summaries += summaries
            self.say(f"\n== summary, {scenario.name} ({scenario.description}) ==")
            self.say(summary_table(summaries, self.args.rate_list))
            for subject in (name for name in self.args.proxy_names if name.startswith("sipproxy")):
                for line in ratio_lines(summaries, self.args.rate_list, subject):
                    self.say(line)
        write_tsv(self.folder / "steps.tsv", self.results)
        write_json(self.folder / "results.json", {
            "machine": describe_machine(self.args),
            "arguments": {k: str(v) for k, v in vars(self.args).items()},
            "steps": [asdict(r) for r in self.results],
            "searches": {f"{s}/{p}": asdict(replace(o, steps=[])) | {
                "rates": [(st.rate, st.verdict) for st in o.steps]}
                for (s, p), o in self.searches.items()},
            "path_checks": [asdict(c) for c in self.checks],
            "summaries": [asdict(s) for s in all_summaries],
        })
        self.say(f"\nraw results: {self.folder}")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    stop_on_signals()
    if not shutil.which("sipp"):
        print("sipp not found (apt-get install sip-tester)", file=sys.stderr)
        return 2
    if args.verify and not shutil.which("tshark"):
        print("--verify needs tshark", file=sys.stderr)
        return 2
    run = Run(args)
    machine = describe_machine(args)
    (run.folder / "env.txt").write_text("".join(f"{k}: {v}\n" for k, v in machine.items()))
    run.say(f"{machine['date']}: {machine['nproc']} CPUs, {machine['cpu_model']}, "
            f"kernel {machine['kernel']}, load {machine['loadavg_at_start']}")
    run.say(f"{machine['sipp']}; {machine['kamailio']}; {machine['netsip']}; "
            f"floor python {machine['floor_python']}")
    if args.workers and args.workers > 1 and not args.lenient and "kamailio" in args.proxy_names:
        run.say("note: several Kamailio workers can reorder a 180 behind its 200; strict sipp "
                "then fails those calls. Consider --lenient.")
    started = time.monotonic()
    try:
        for scenario in args.scenarios:
            run.say(f"\n#### scenario {scenario.name}: {scenario.description}")
            peers = run.available_peers(scenario)
            if args.verify:
                run.verify(scenario, peers)
            run.fixed_rates(scenario, peers)
            if args.search:
                run.search(scenario, peers)
    except KeyboardInterrupt:
        run.say("\ninterrupted; reporting what was measured")
    run.final_report()
    own = resource.getrusage(resource.RUSAGE_SELF)
    run.say(f"total time {time.monotonic() - started:.0f} s; the harness itself used "
            f"{own.ru_utime + own.ru_stime:.1f} CPU-s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
