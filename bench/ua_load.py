#!/usr/bin/env python3
"""The sipproxy side of bench/ua_bench.py: a C{sipproxy.Simple} user agent
that makes or answers many calls without media, so the bench measures
what the SIP stack costs per call. Same options and output as
bench/netsip_ua.pl, its Net::SIP::Simple twin:

    ua_load.py --mode answer --leg IP:PORT [--max-time S]
    ua_load.py --mode call --leg IP:PORT --to URI --rate R --calls N [--warmup W] [--warmup-rate R2]

``--profile FILE`` writes a cProfile of the measured calls (the caller's
measure phase; for the callee, everything after the first INVITE) to FILE,
for ``python -m pstats FILE``.

The caller starts call k at t0 + k/R (deadline pacing on the reactor's
clock, never sleep) and hangs up each call as soon as it is established.
One JSON object per line on stdout: ready, phase, phase_done (ok, failed,
seconds, gc_seconds: CPU in the garbage collector), stats (answered, byes,
gc_seconds), done.
"""
from __future__ import annotations

import argparse
import gc
import json
import re
import sys
import time
from typing import Any, Callable

from twisted.internet import reactor, task
from twisted.internet.defer import Deferred


#: seconds after a phase's last call started before its unended calls count as failed
GRACE = 10.0


class GCClock:
    """CPU seconds spent in the cyclic garbage collector (gc.callbacks):
    reported with each phase, since a UA keeps every call's transactions
    for 32 s and full collections then walk all of them."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.collections = 0
        self._start = 0.0
        if hasattr(gc, "callbacks"):  # CPython; PyPy's collector has no hooks here (0 is reported)
            gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._start = time.process_time()
        else:
            self.seconds += time.process_time() - self._start
            self.collections += 1


GC = GCClock()


def emit(**fields: Any) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def parse_leg(text: str) -> tuple[str, str, int]:
    match = re.match(r"^(?:(udp|tcp):)?\[?([^\]]*?)\]?:(\d+)$", text)
    if match is None:
        raise SystemExit(f"bad --leg {text!r}")
    return match.group(1) or "udp", match.group(2), int(match.group(3))


class Caller:
    """Calls at a fixed rate, one phase after the other."""

    def __init__(self, ua: Any, to: str, phases: list[tuple[str, int, float]],
                 finished: Callable[[], None]) -> None:
        self.ua = ua
        self.to = to
        self.phases = phases
        self.finished = finished
        self.timer: Any = None
        self.give_up: Any = None
        self.phase_number = 0

    def start_phase(self) -> None:
        if not self.phases:
            self.finished()
            return
        self.name, self.count, self.rate = self.phases.pop(0)
        self.gc0 = (GC.seconds, GC.collections)
        self.started = self.ok = self.failed = self.open = 0
        self.t0 = reactor.seconds()
        emit(event="phase", phase=self.name, started=0)
        self.tick()

    def tick(self) -> None:
        self.timer = None
        now = reactor.seconds()
        while self.started < self.count and now >= self.t0 + self.started / self.rate:
            self.start_call()
        if self.started < self.count:
            self.timer = reactor.callLater(max(0.0, self.t0 + self.started / self.rate - now), self.tick)
        else:
            # calls not ended GRACE s after the last one started count as failed
            # (as netsip_ua.pl's), so one lost call cannot hold the phase
            self.give_up = reactor.callLater(GRACE, self.end_phase)
            self.maybe_done()

    def start_call(self) -> None:
        self.started += 1
        self.open += 1
        d = self.ua.invite(self.to)
        d.addCallback(lambda call: call.bye())
        d.addCallbacks(self.ended, self.failed_call, callbackArgs=(self.phase_number,),
                       errbackArgs=(self.phase_number,))

    def ended(self, end: Any, phase: int) -> None:
        if phase != self.phase_number:
            return  # a late end of a call the last phase gave up on
        self.open -= 1
        if end is not None and end.code is not None and 200 <= end.code < 300:
            self.ok += 1
        else:
            self.failed += 1
        self.maybe_done()

    def failed_call(self, failure: Any, phase: int) -> None:
        if phase != self.phase_number:
            return
        self.open -= 1
        self.failed += 1
        self.maybe_done()

    def maybe_done(self) -> None:
        if self.started >= self.count and self.open == 0 and self.timer is None and self.count:
            self.end_phase()

    def end_phase(self) -> None:
        if not self.count:
            return
        if self.give_up is not None and self.give_up.active():
            self.give_up.cancel()
        self.give_up = None
        emit(event="phase_done", phase=self.name, ok=self.ok, failed=self.failed + self.open,
             seconds=round(reactor.seconds() - self.t0, 3), gc_seconds=round(GC.seconds - self.gc0[0], 3),
             gc_collections=GC.collections - self.gc0[1])
        self.count = 0
        self.open = 0  # the calls of this phase that may still end are not counted again
        self.phase_number += 1
        reactor.callLater(0, self.start_phase)


def load_arguments(description: str) -> argparse.ArgumentParser:
    """The options every UA of bench/ua_bench.py takes (ua_floor.py too)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--mode", choices=("call", "answer"), default="answer")
    parser.add_argument("--leg", required=True)
    parser.add_argument("--to")
    parser.add_argument("--rate", type=float, default=10)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=0)
    parser.add_argument("--warmup-rate", type=float, help="calls/s of the warm-up (default: --rate)")
    parser.add_argument("--max-time", type=float, default=600)
    return parser


def caller_phases(args: argparse.Namespace) -> list[tuple[str, int, float]]:
    """The caller's phases: (name, calls, calls/s), the warm-up if any first."""
    if not args.to:
        raise SystemExit("--to is required")
    return (([("warmup", args.warmup, args.warmup_rate or args.rate)] if args.warmup else [])
            + [("measure", args.calls, args.rate)])


def main() -> None:
    parser = load_arguments(__doc__.split("\n\n")[0])
    parser.add_argument("--profile", help="write a cProfile of the measured calls here")
    args = parser.parse_args()
    profiler = None
    if args.profile:
        import cProfile
        import time
        profiler = cProfile.Profile(time.thread_time)  # CPU time: the machine is shared

        def save_profile() -> None:
            profiler.disable()
            profiler.dump_stats(args.profile)

        reactor.addSystemEventTrigger("before", "shutdown", save_profile)

    from sipproxy import Simple

    proto, host, port = parse_leg(args.leg)
    hostport = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    ua = Simple(reactor, legs=[f"{proto}:{hostport}"], from_=f"sip:ours-bench@{hostport}")
    reactor.callLater(args.max_time, reactor.stop)
    emit(event="ready")

    if args.mode == "answer":
        counts = {"answered": 0, "byes": 0}

        def established(call: Any) -> None:
            if profiler is not None and not counts["answered"]:
                profiler.enable()
            counts["answered"] += 1

        def cleaned(call: Any) -> None:
            if call.end is not None and call.end.by == "remote":
                counts["byes"] += 1

        ua.listen(on_established=established, on_cleanup=cleaned)
        def stats() -> None:
            emit(event="stats", gc_seconds=round(GC.seconds, 3), gc_collections=GC.collections, **counts)

        task.LoopingCall(stats).start(1.0, now=False)
        reactor.addSystemEventTrigger("before", "shutdown", stats)
    else:
        caller = Caller(ua, args.to, caller_phases(args), reactor.stop)
        if profiler is not None:
            start_phase = caller.start_phase

            def profiled_phase() -> None:
                if caller.phases and caller.phases[0][0] == "measure":
                    profiler.enable()
                start_phase()

            caller.start_phase = profiled_phase  # type: ignore[method-assign]
        reactor.callWhenRunning(caller.start_phase)
    reactor.addSystemEventTrigger("after", "shutdown", lambda: emit(event="done"))
    reactor.run()


if __name__ == "__main__":
    main()
