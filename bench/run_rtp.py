#!/usr/bin/env python3
"""RTP relay benchmark: sipproxy's relay against Net::SIP's NATHelper::Local,
rtpengine (userspace) and a bare Twisted relay, in one run, on loopback.

    /work/venv/bin/python bench/run_rtp.py            # about 10 minutes
    /work/venv/bin/python bench/run_rtp.py --quick    # about 2 minutes

Parts (see bench/README.md, section "RTP relay"):
  1. one stream (A<->B), increasing rates: CPU-s per million packets relayed,
     loss, and the highest loss-free rate (< 0.1 % lost), stepped up then bisected;
  2. 200 concurrent streams at 100 packets/s each way: loss and CPU per packet
     (--multi-search also searches the highest loss-free rate with 200 streams);
  3. SIP under load: sipproxy --nathelper on two legs, RTP over calls set up
     through it, and sipp calls through the same process, with and without RTP.

Rates are relayed packets per second, both directions summed. Every
measurement uses a fresh relay process, stopped by PID; everything is
bounded in time; loopback only. Raw results: bench/results/<stamp>-rtp/.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Optional

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from rtpbench import gen, relays, sipload  # noqa: E402
from rtpbench.measure import Measurement, measure  # noqa: E402
from rtpbench.report import fmt, krate, limit_note, mean, ratio, step_cell, table  # noqa: E402

PYPY_VENV = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sipproxy-bench" / "pypy3-venv"
TARGET_CPU_RATIO = 0.6


class Tee:
    def __init__(self, path: Path) -> None:
        self.file = open(path, "a")

    def __call__(self, text: str = "") -> None:
        print(text, flush=True)
        self.file.write(text + "\n")
        self.file.flush()


class Search:
    """Highest loss-free rate: rates go up geometrically to the first failure,
    then bisect. A failing step can be confirmed by one repeat (noise on a
    shared 2-core VM): it then counts as passed if the repeat passes."""

    def __init__(self, relay: str, start: int, growth: float, cap: int, bisections: int, confirm: bool,
                 granularity: int) -> None:
        self.relay, self.start, self.growth, self.cap = relay, start, growth, cap
        self.bisections, self.confirm, self.granularity = bisections, confirm, granularity
        self.lo: Optional[int] = None  # highest rate passed
        self.hi: Optional[int] = None  # lowest rate failed
        self.steps: list[Measurement] = []
        self.up = True
        self.pending_confirm: Optional[int] = None
        self.done = False

    def next_rate(self) -> Optional[int]:
        if self.done:
            return None
        if self.pending_confirm is not None:
            return self.pending_confirm
        if self.up:
            if not self.steps:
                return self.start
            rate = int(round(self.steps[-1].rate * self.growth / self.granularity) * self.granularity)
            if rate > self.cap:
                self.done = True
                return None
            return rate
        if self.bisections <= 0 or self.hi is None:
            self.done = True
            return None
        low = self.lo or 0
        mid = int(round((low + self.hi) / 2 / self.granularity) * self.granularity)
        if mid <= low or mid >= self.hi:
            self.done = True
            return None
        return mid

    def record(self, m: Measurement) -> None:
        self.steps.append(m)
        if self.pending_confirm is not None:  # this step repeated a failed one
            self.pending_confirm = None
            self._passed(m.rate) if m.verdict == "PASS" else self._failed(m.rate)
        elif m.verdict == "PASS":
            self._passed(m.rate)
        elif self.confirm and m.verdict in ("FAIL", "GEN"):
            self.pending_confirm = m.rate
        else:  # a failure not worth repeating (error, generator behind) or no confirmation wanted
            self._failed(m.rate)

    def _passed(self, rate: int) -> None:
        self.lo = max(self.lo or 0, rate)
        if not self.up:
            self.bisections -= 1

    def _failed(self, rate: int) -> None:
        self.hi = rate if self.hi is None else min(self.hi, rate)
        if not self.up:
            self.bisections -= 1
        self.up = False

    def at(self, rate: int) -> list[Measurement]:
        return [m for m in self.steps if m.rate == rate]

    def first_fail(self) -> Optional[Measurement]:
        fails = [m for m in self.steps if m.rate == self.hi and m.verdict != "PASS"]
        return fails[0] if fails else None

    def best(self) -> Optional[Measurement]:
        passes = [m for m in self.steps if m.rate == self.lo and m.verdict == "PASS"]
        return passes[-1] if passes else None

    def generator_bound(self) -> bool:
        """The lowest "failing" rate only ever saw rtpgen fall behind, never loss."""
        at_hi = [m for m in self.steps if m.rate == self.hi]
        return bool(at_hi) and all(m.verdict == "GEN" for m in at_hi)

    def max_text(self) -> str:
        if self.lo is None:
            return f"<{krate(self.hi)}" if self.hi else "-"
        if self.hi is None:
            return f">={krate(self.lo)} (search cap)"
        if self.generator_bound():
            return f">={krate(self.lo)} (rtpgen behind at {krate(self.hi)})"
        return f"{krate(self.lo)} (<{krate(self.hi)})"

    def trail(self) -> str:
        return ", ".join(f"{krate(m.rate)} {m.mark()}" for m in self.steps)


def pypy_twistd(mode: str, say: Tee, allow_install: bool) -> Optional[str]:
    """The twistd of a PyPy venv with Twisted, or None (with one line saying why)."""
    if mode == "off":
        say("skip sipproxy-pypy: --pypy off")
        return None
    venv = Path(mode) if mode != "auto" else PYPY_VENV
    twistd = venv / "bin" / "twistd"
    if twistd.exists():
        return str(twistd)
    if mode != "auto" or not allow_install:
        say(f"skip sipproxy-pypy: no PyPy venv at {venv} (a full run creates it; or --pypy PATH)")
        return None
    if shutil.which("pypy3") is None:
        say("skip sipproxy-pypy: pypy3 not installed (Debian pypy3, pypy3-venv)")
        return None
    say(f"creating a PyPy venv with Twisted at {venv} (once; up to 5 minutes)")
    venv.parent.mkdir(parents=True, exist_ok=True)
    log = venv.parent / "pypy3-venv-install.log"
    steps = [["pypy3", "-m", "venv", str(venv)],
             # cryptography only as a wheel: building it for PyPy needs Rust
             [str(venv / "bin" / "pip"), "install", "-q", "--only-binary=cryptography", "twisted", "cryptography"]]
    try:
        with open(log, "w") as out:
            for argv in steps:
                subprocess.run(argv, check=True, stdout=out, stderr=subprocess.STDOUT, timeout=300)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
        shutil.rmtree(venv, ignore_errors=True)
        say(f"skip sipproxy-pypy: the PyPy venv could not be set up ({e}; see {log})")
        return None
    return str(twistd) if twistd.exists() else None


def machine_facts() -> dict:
    facts = {"date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "nproc": os.cpu_count(),
             "kernel": platform.release(), "python": sys.version.split()[0]}
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                facts["cpu"] = line.split(":", 1)[1].strip()
                break
        facts["loadavg"] = open("/proc/loadavg").read().split()[:3]
        facts["debian"] = open("/etc/debian_version").read().strip()
    except OSError:
        pass
    for name, argv in {"rtpengine": ["rtpengine", "--version"], "perl_netsip": [
            "perl", "-MNet::SIP", "-e", "print $Net::SIP::VERSION"], "sipp": ["sipp", "-v"],
            "pypy3": ["pypy3", "--version"]}.items():
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=20)
            text = (done.stdout + done.stderr).strip().splitlines()
            facts[name] = next((t.strip() for t in text if t.strip()), "")
        except (OSError, subprocess.TimeoutExpired):
            facts[name] = "not installed"
    try:
        import twisted
        facts["twisted"] = twisted.__version__
    except ImportError:
        pass
    return facts


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM: stop the current step's processes (by PID) and report


def main() -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--quick", action="store_true", help="a 1-2 minute smoke run (short steps, coarse search)")
    p.add_argument("--relays", default="sipproxy,sipproxy-pypy,netsip,rtpengine,floor",
                   help="comma list of " + ",".join(relays.ALL))
    p.add_argument("--parts", default="one,multi,sip", help="comma list of one, multi, sip")
    p.add_argument("--secs", type=float, help="seconds of traffic per step (default 3; quick 1.5)")
    p.add_argument("--search-start", type=int, default=None, help="first rate of the one-stream search (20000)")
    p.add_argument("--search-growth", type=float, default=2.0)
    p.add_argument("--search-cap", type=int, default=640000, help="highest rate the search tries")
    p.add_argument("--bisections", type=int, help="bisection steps after the first failure (3; quick 1)")
    p.add_argument("--no-confirm", action="store_true", help="do not repeat a failing step once")
    p.add_argument("--multi-streams", type=int, default=200)
    p.add_argument("--multi-pps", type=float, default=100, help="packets/s per stream and direction")
    p.add_argument("--repeat", type=int, help="rounds of the multi-stream step (2; quick 1)")
    p.add_argument("--multi-search", action=argparse.BooleanOptionalAction, default=None,
                   help="also search the highest loss-free rate with --multi-streams streams (default: on, "
                        "off with --quick)")
    p.add_argument("--multi-search-cap", type=int, default=210000,
                   help="highest rate of the multi-stream search (beyond it rtpgen itself falls behind on 2 cores)")
    p.add_argument("--sip-rtp-rates", default="auto",
                   help="comma list of RTP loads (relayed pps) for the SIP check; auto: 0.8x and 1.2x sipproxy's "
                        "loss-free 200-stream rate from part 2b, else 0.8x and 1.5x its one-stream rate from part 1, "
                        "else 40000,100000")
    p.add_argument("--rtpengine-threads", type=int, default=0, help="rtpengine --num-threads (default: its own, "
                                                                     "one per CPU)")
    p.add_argument("--sip-streams", type=int, default=200, help="calls set up through the proxy carrying the RTP")
    p.add_argument("--sipp-rate", type=int, default=50)
    p.add_argument("--sipp-calls", type=int, help="sipp calls per SIP run (250; quick 100)")
    p.add_argument("--pypy", default="auto",
                   help="auto (a cached venv, created by a full run), off, or the path of a PyPy venv with Twisted")
    p.add_argument("--twistd", default=str(Path(sys.executable).parent / "twistd"))
    p.add_argument("--python", default=sys.executable, help="interpreter for the Twisted floor")
    p.add_argument("--out", help="results directory (default bench/results/<stamp>-rtp)")
    args = p.parse_args()

    quick = args.quick
    secs = args.secs or (1.5 if quick else 3.0)
    start_rate = args.search_start or 20000
    bisections = args.bisections if args.bisections is not None else (1 if quick else 3)
    confirm = not args.no_confirm and not quick
    repeat = args.repeat or (1 if quick else 2)
    sipp_calls = args.sipp_calls or (100 if quick else 250)
    parts = set(args.parts.split(","))

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else BENCH_DIR / "results" / f"{stamp}-rtp"
    out.mkdir(parents=True, exist_ok=True)
    say = Tee(out / "report.txt")
    t_start = time.monotonic()
    cpu_start = os.times()
    facts = machine_facts()
    say(f"RTP relay benchmark, {facts['date_utc']}, {facts.get('cpu', '?')} x{facts['nproc']}, "
        f"load {' '.join(facts.get('loadavg', []))}; results in {out}")
    say(f"steps of {secs:g} s; one-stream search from {krate(start_rate)} x{args.search_growth:g}, "
        f"{bisections} bisections{', failures confirmed once' if confirm else ''}; "
        f"{args.multi_streams} streams x {args.multi_pps:g} pps each way, {repeat} round(s)")

    tmp = Path(tempfile.mkdtemp(prefix="run_rtp-"))
    binary = gen.build(tmp)
    pypy = pypy_twistd(args.pypy, say, allow_install=not quick) if "sipproxy-pypy" in args.relays else None
    options = relays.Options(twistd=args.twistd, python=args.python, pypy_twistd=pypy,
                             rtpengine_threads=args.rtpengine_threads)
    chosen: list[relays.Relay] = []
    for name in args.relays.split(","):
        if name not in relays.ALL:
            raise SystemExit(f"unknown relay {name!r}; known: {', '.join(relays.ALL)}")
        relay = relays.ALL[name](options)
        why = relay.missing()
        if why:
            say(f"skip {name}: {why}")
        else:
            chosen.append(relay)
    for relay in chosen:
        say(f"  {relay.name:14} {relay.description}")

    all_steps: list[Measurement] = []
    searches: dict[str, Search] = {}
    multi: dict[str, list[Measurement]] = {r.name: [] for r in chosen}
    multi_searches: dict[str, Search] = {}
    sip_results: list = []

    def run_step(relay: relays.Relay, kind: str, round_: int, streams: int, rate: int) -> Measurement:
        folder = out / kind / relay.name / f"{len([s for s in all_steps if s.relay == relay.name and s.kind == kind]) + 1:02d}-{streams}x-{rate}pps"
        m = measure(relay, binary, folder, kind=kind, round_=round_, streams=streams, rate=rate, secs=secs)
        all_steps.append(m)
        say(f"  {kind:6} {relay.name:14} {streams:4}x {krate(rate):>6}: {m.verdict:5} loss {fmt(m.loss_pct, 3)}% "
            f"cpu-s/Mpkt {fmt(m.cpu_s_per_mpkt, 2)} relay {fmt(m.relay_cpu_pct, 0)}% gen {fmt(m.gen_cpu_pct, 0)}% "
            f"drops r/g {m.drops_relay}/{m.drops_gen} p99 {fmt(m.lat_p99_us, 0)}us"
            f"{' -- ' + m.reason if m.reason else ''}")
        return m

    def interleaved(searches: dict[str, Search], kind: str, streams: int) -> None:
        by_name = {r.name: r for r in chosen}
        turn = 0
        while True:
            active = [n for n, s in searches.items() if s.next_rate() is not None]
            if not active:
                return
            active = active[turn % len(active):] + active[:turn % len(active)]
            turn += 1
            for name in active:
                rate = searches[name].next_rate()
                if rate is not None:
                    searches[name].record(run_step(by_name[name], kind, turn, streams, rate))

    try:
        if "one" in parts and chosen:
            say("\n== 1. one stream: rising rate, then bisection ==")
            searches = {r.name: Search(r.name, start_rate, args.search_growth, args.search_cap, bisections, confirm,
                                       granularity=1000) for r in chosen}
            interleaved(searches, "one", 1)
        if "multi" in parts and chosen:
            rate = int(round(args.multi_streams * args.multi_pps * 2))
            say(f"\n== 2. {args.multi_streams} streams x {args.multi_pps:g} pps each way "
                f"({krate(rate)} relayed pps) ==")
            for round_ in range(1, repeat + 1):
                order = chosen[round_ - 1:] + chosen[:round_ - 1]
                for relay in order:
                    multi[relay.name].append(run_step(relay, "multi", round_, args.multi_streams, rate))
            if args.multi_search if args.multi_search is not None else not quick:
                say(f"\n== 2b. {args.multi_streams} streams: highest loss-free rate ==")
                multi_searches = {r.name: Search(r.name, rate * 2, 1.5, args.multi_search_cap, max(bisections - 1, 1),
                                                 confirm, granularity=2000) for r in chosen}
                for name, s in multi_searches.items():  # the fixed steps already give the first answer
                    fixed = multi[name]
                    if fixed and all(m.verdict == "PASS" for m in fixed):
                        s.lo = rate
                    elif fixed:
                        s.hi, s.up = rate, False
                    s.steps.extend(fixed)
                interleaved(multi_searches, "multi-search", args.multi_streams)
        if "sip" in parts:
            # the RTP loads: around sipproxy's own limit in this run, with 200
            # streams if that was searched (the SIP check uses 200 calls), else
            # with one stream
            sp_multi, sp_one = multi_searches.get("sipproxy"), searches.get("sipproxy")
            factors: list[str] = []
            if args.sip_rtp_rates != "auto":
                sip_rates = [int(x) for x in args.sip_rtp_rates.split(",") if x]
            elif sp_multi and sp_multi.lo and sp_multi.hi:
                factors = ["0.8x", "1.2x"]
                sip_rates = [int(f * sp_multi.lo / 1000) * 1000 for f in (0.8, 1.2)]
            elif sp_one and sp_one.lo:
                factors = ["0.8x", "1.5x"]
                sip_rates = [int(f * sp_one.lo / 1000) * 1000 for f in (0.8, 1.5)]
            else:
                sip_rates = [40000, 100000]
            factors = factors or [""] * len(sip_rates)
            say(f"\n== 3. SIP under RTP load: sipproxy --nathelper, {args.sip_streams} calls carrying "
                f"{', '.join(krate(r) for r in sip_rates)} relayed pps, sipp {args.sipp_rate} calls/s x {sipp_calls} ==")
            for label, rate in [("no-rtp", 0)] + [(f"rtp-{krate(r)}{'-' + f if f else ''}", r)
                                                  for r, f in zip(sip_rates, factors)]:
                r = sipload.run(binary, out / "sip" / label, args.twistd, label=label, rtp_rate=rate,
                                streams=args.sip_streams, sipp_rate=args.sipp_rate, sipp_calls=sipp_calls)
                sip_results.append(r)
                say(f"  {label:14} {r.verdict:5} calls {r.ok}/{r.created} failed {r.failed} retr {r.retr_uac}+"
                    f"{r.retr_uas} call length {fmt(r.call_length_ms, 0)} ms, proxy CPU {fmt(r.proxy_cpu_pct, 0)}%, "
                    f"RTP loss {fmt(r.rtp_loss_pct, 3)}%, drops leg/relay {r.leg_drops}/{r.relay_drops}"
                    f"{' -- ' + r.reason if r.reason else ''}")
    except KeyboardInterrupt:
        say("interrupted: reporting what was measured")

    summary = summarise(say, chosen, searches, multi, multi_searches, sip_results, args)
    used = os.times()
    say(f"\nharness: {time.monotonic() - t_start:.0f} s wall, "
        f"{used.user - cpu_start.user + used.system - cpu_start.system:.1f} CPU-s (rtpgen and relays not included)")
    (out / "results.json").write_text(json.dumps({
        "facts": facts, "args": vars(args), "summary": summary,
        "steps": [asdict(m) for m in all_steps], "sip": [asdict(r) for r in sip_results],
        "searches": {n: {"max_loss_free": s.lo, "lowest_fail": s.hi, "trail": s.trail()} for n, s in searches.items()},
        "multi_searches": {n: {"max_loss_free": s.lo, "lowest_fail": s.hi, "trail": s.trail()}
                           for n, s in multi_searches.items()},
    }, indent=2))
    columns = ["relay", "kind", "round", "streams", "rate", "verdict", "sent", "received", "loss_pct", "relayed_pps",
               "relay_cpu_s", "relay_cpu_pct", "cpu_s_per_mpkt", "relay_rss_mb", "gen_cpu_pct", "drops_relay",
               "drops_gen", "lat_p50_us", "lat_p99_us", "lat_max_us", "skipped", "max_lag_ms", "reason", "run_dir"]
    with open(out / "steps.tsv", "w") as f:
        f.write("\t".join(columns) + "\n")
        for m in all_steps:
            f.write("\t".join(str(getattr(m, c)) for c in columns) + "\n")
    (out / "env.txt").write_text("\n".join(f"{k}: {v}" for k, v in facts.items()) + "\n")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


def summarise(say: Tee, chosen: list, searches: dict, multi: dict, multi_searches: dict, sip_results: list,
              args: argparse.Namespace) -> dict:
    summary: dict = {}
    names = [r.name for r in chosen]
    ladder: list[int] = []
    if searches:
        first = next(iter(searches.values()))
        ladder = sorted(r for r in _ladder(first) if any(s.at(r) for s in searches.values()))
        say("\n== Summary: one stream (cpu-s per million packets relayed; loss when not 0; "
            "✓ loss-free, ✗ >= 0.1% lost, ? rtpgen fell behind) ==")
        rows = []
        for name in names:
            s = searches[name]
            cells = [" / ".join(step_cell(m) for m in s.at(rate)) for rate in ladder]
            best = s.best()
            rows.append([name] + cells + [
                s.max_text(), fmt(best.cpu_s_per_mpkt if best else None), fmt(best.relay_cpu_pct if best else None, 0),
                limit_note(s.first_fail())])
        say(table(["relay"] + [krate(r) for r in ladder] + ["max loss-free", "cpu-s/Mpkt@max", "CPU%@max",
                                                              "at the first failing rate"], rows))
        say("search steps: " + "; ".join(f"{n}: {searches[n].trail()}" for n in names))
        summary["one"] = {n: {"max_loss_free": searches[n].lo, "lowest_fail": searches[n].hi,
                              "generator_bound": searches[n].generator_bound(),
                              "cpu_at": {r: [m.cpu_s_per_mpkt for m in searches[n].at(r)] for r in ladder}}
                          for n in names}
    if any(multi.values()):
        say(f"\n== Summary: {args.multi_streams} streams x {args.multi_pps:g} pps each way ==")
        rows = []
        for name in names:
            ms = [m for m in multi[name] if m.verdict != "ERROR"]
            if not multi[name]:
                continue
            cpu = mean(m.cpu_s_per_mpkt for m in ms)
            rows.append([name, " / ".join(f"{fmt(m.loss_pct, 3)}%{m.mark()}" for m in multi[name]),
                         f"{fmt(cpu, 2)} ({' / '.join(fmt(m.cpu_s_per_mpkt, 2) for m in ms)})",
                         fmt(mean(m.relay_cpu_pct for m in ms), 0), fmt(mean(m.lat_p99_us for m in ms), 0),
                         str(sum((m.drops_relay or 0) for m in ms)), fmt(mean(m.setup_s for m in ms), 2),
                         fmt(mean(m.relay_rss_mb for m in ms), 0)])
            summary.setdefault("multi", {})[name] = {"cpu_s_per_mpkt": cpu, "loss_pct": [m.loss_pct for m in
                                                                                          multi[name]],
                                                     "pass": all(m.verdict == "PASS" for m in multi[name])}
        say(table(["relay", "loss (per round)", "cpu-s/Mpkt mean (rounds)", "relay CPU%", "p99 latency us",
                   "relay drops", "setup s", "RSS MB"], rows))
        if multi_searches:
            say(f"\n{args.multi_streams} streams, rate per stream raised (a stress figure: real RTP streams stay at "
                f"50 pps each way):")
            rows = []
            for n, s in multi_searches.items():
                best = s.best()
                rows.append([n, s.max_text(), fmt(best.cpu_s_per_mpkt if best else None),
                             fmt(best.relay_cpu_pct if best else None, 0), s.trail()])
                summary.setdefault("multi", {}).setdefault(n, {}).update(
                    max_loss_free=s.lo, lowest_fail=s.hi, generator_bound=s.generator_bound())
            say(table(["relay", "max loss-free", "cpu-s/Mpkt@max", "CPU%@max", "steps"], rows))
    if sip_results:
        say("\n== Summary: SIP through sipproxy --nathelper while its relay carries RTP ==")
        rows = [[r.label, krate(r.rtp_rate) if r.rtp_rate else "-", f"{r.ok}/{r.created}", str(r.failed),
                 f"{r.retr_uac}+{r.retr_uas}", fmt(r.achieved_cps), fmt(r.call_length_ms, 0), fmt(r.proxy_cpu_pct, 0),
                 fmt(r.rtp_loss_pct, 3), fmt(r.rtp_lat_p99_us, 0), f"{r.leg_drops}/{r.relay_drops}", r.verdict]
                for r in sip_results]
        say(table(["run", "RTP pps", "calls ok", "failed", "retr uac+uas", "cps", "call length ms", "proxy CPU%",
                   "RTP loss %", "RTP p99 us", "drops leg/relay", "result"], rows))
        summary["sip"] = [asdict(r) for r in sip_results]

    me = "sipproxy"
    if me not in names or len(names) < 2:
        names = names if me in names else []
    rows = []

    def one_cpu(peer: str) -> tuple[Optional[float], Optional[float], list[int]]:
        """Mean cpu-s/Mpkt of both over the ladder rates both relayed loss-free."""
        if not searches:
            return None, None, []
        common = [r for r in ladder if _passed(searches[me], r) and _passed(searches[peer], r)]
        return (mean(_cpu(searches[me], r) for r in common), mean(_cpu(searches[peer], r) for r in common), common)

    def multi_cpu(name: str) -> Optional[float]:
        return mean(m.cpu_s_per_mpkt for m in multi.get(name, []) if m.verdict != "ERROR")

    for peer in [n for n in names if n != me]:
        a, b, common = one_cpu(peer)
        rows.append([peer, f"{fmt(ratio(a, b), 2)} ({', '.join(krate(r) for r in common)})" if common else "-",
                     fmt(ratio(searches[me].lo, searches[peer].lo), 2) if searches else "-",
                     fmt(ratio(multi_cpu(me), multi_cpu(peer)), 2),
                     fmt(ratio(multi_searches[me].lo, multi_searches[peer].lo), 2)
                     if me in multi_searches and peer in multi_searches else "-"])
    if rows:
        say("\n== Ratios sipproxy/peer (CPU: below 1 is better; rates: above 1 is better) ==")
        say(table(["peer", "cpu/pkt, 1 stream (mean over rates both loss-free)", "max loss-free, 1 stream",
               f"cpu/pkt, {args.multi_streams}x{args.multi_pps:g}", f"max loss-free, {args.multi_streams} streams"],
              rows))

    targets: list[tuple[str, str]] = []  # (met | NOT met | inconclusive, text)
    if "netsip" in names:
        a, b, common = one_cpu("netsip")
        if common:
            q = ratio(a, b)
            targets.append(("met" if q <= TARGET_CPU_RATIO else "NOT met",
                            f"CPU per packet, 1 stream ({', '.join(krate(r) for r in common)}): sipproxy {fmt(a, 2)} "
                            f"vs Net::SIP {fmt(b, 2)} cpu-s/Mpkt = {q:.2f}x (target <= {TARGET_CPU_RATIO}x)"))
        a, b = multi_cpu(me), multi_cpu("netsip")
        q = ratio(a, b)
        if q is not None:
            targets.append(("met" if q <= TARGET_CPU_RATIO else "NOT met",
                            f"CPU per packet, {args.multi_streams} streams x {args.multi_pps:g} pps: sipproxy "
                            f"{fmt(a, 2)} vs Net::SIP {fmt(b, 2)} cpu-s/Mpkt = {q:.2f}x (target <= {TARGET_CPU_RATIO}x)"))
    if "rtpengine" in names:
        def compare(label: str, mine: Search, theirs: Search) -> None:
            text = f"max loss-free rate, {label}: sipproxy {mine.max_text()} vs rtpengine {theirs.max_text()} (target >=)"
            if (mine.lo or 0) < (theirs.lo or 0):
                targets.append(("NOT met", text))
            elif theirs.hi is None or theirs.generator_bound():
                targets.append(("inconclusive", text + "; rtpengine's limit was not reached"))
            else:
                targets.append(("met", text))
        if searches:
            compare("1 stream", searches[me], searches["rtpengine"])
        if multi.get(me) and multi.get("rtpengine"):
            mine_ok = all(m.verdict == "PASS" for m in multi[me])
            theirs_ok = all(m.verdict == "PASS" for m in multi["rtpengine"])
            targets.append(("met" if mine_ok or not theirs_ok else "NOT met",
                            f"{args.multi_streams} streams x {args.multi_pps:g} pps: sipproxy "
                            f"{'loss-free' if mine_ok else 'lost packets'}, rtpengine "
                            f"{'loss-free' if theirs_ok else 'lost packets'} in every round"))
        if me in multi_searches and "rtpengine" in multi_searches:
            compare(f"{args.multi_streams} streams", multi_searches[me], multi_searches["rtpengine"])
    for r in sip_results:
        if r.rtp_rate:
            targets.append(("met" if r.verdict == "PASS" else "NOT met",
                            f"SIP while the in-process relay carries {krate(r.rtp_rate)} pps: {r.ok}/{r.created} calls "
                            f"ok, {r.retr_uac + r.retr_uas} retransmissions, call length {fmt(r.call_length_ms, 0)} ms "
                            f"(no RTP: {fmt(sip_results[0].call_length_ms, 0)} ms); RTP loss {fmt(r.rtp_loss_pct, 3)}%"))
    say("\n== Targets (issue 5) ==")
    for state, text in targets:
        say(f"  [{state}] {text}")
    summary["targets"] = [{"state": st, "text": t} for st, t in targets]
    return summary


def _ladder(s: Search) -> set[int]:
    """The rates of the geometric part of a search (the same for every relay)."""
    rates, rate = set(), s.start
    while rate <= s.cap:
        rates.add(rate)
        rate = int(round(rate * s.growth / s.granularity) * s.granularity)
    return rates


def _passed(s: Search, rate: Optional[int]) -> bool:
    return rate is not None and any(m.rate == rate and m.verdict == "PASS" for m in s.steps) and (
        s.hi is None or rate < s.hi)


def _cpu(s: Search, rate: Optional[int]) -> Optional[float]:
    return mean(m.cpu_s_per_mpkt for m in s.steps if m.rate == rate and m.verdict == "PASS")


if __name__ == "__main__":
    sys.exit(main())
