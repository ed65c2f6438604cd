"""How well does RTPStream keep its deadlines, and what does a stream cost?

N concurrent streams (each an RTPStream sending a looped tone as PCMU, 50
packets/s) run for a few seconds on the real (epoll) reactor over
loopback. A separate receiver process stamps every packet's arrival; for
each stream the ideal schedule is the grid of 20 ms slots (the RTP
timestamp gives the slot) shifted to the stream's earliest arrival, and each
packet's lateness is its arrival minus its slot on that grid. The report
gives p50/p99/max lateness over all packets of all streams, slots with
no packet (lost, or skipped by a sender that fell more than three packets
behind), the senders' own worst timer lateness, and the sending process's CPU
(user + system, getrusage) per stream.

Usage:

    python bench/rtp_pacing.py [--streams 1,25,50,100] [--seconds 5] [--warmup 5]

Bounded: at most 200 streams and 60 s per step; the receiver runs under a
timeout and is killed by its PID if it hangs.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import select
import socket
import subprocess
import sys
import time

MAX_STREAMS = 200
MAX_SECONDS = 60.0


# -- the receiver (a child process: its work does not disturb the senders' CPU figure) --
def receive(max_seconds: float) -> None:
    """Bind 127.0.0.1:0, print the port, stamp packets until a line on
    stdin (or C{max_seconds}), print the analysis as JSON."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    arrivals: dict[int, list[tuple[int, float]]] = {}
    deadline = time.monotonic() + max_seconds
    recv = sock.recvfrom
    clock = time.monotonic
    stopping = False
    while not stopping and time.monotonic() < deadline:
        ready, _, _ = select.select([sock, sys.stdin], [], [], 0.5)
        stopping = sys.stdin in ready  # drain the socket once more, then stop
        while True:
            try:
                data, addr = recv(2048)
            except BlockingIOError:
                break
            now = clock()
            if len(data) >= 12:
                # the slot of a packet is its RTP timestamp / 160: the
                # sequence number does not count slots a late sender skipped
                timestamp = int.from_bytes(data[4:8], "big")
                arrivals.setdefault(addr[1], []).append((timestamp, now))
    print(json.dumps(analyse(arrivals)), flush=True)


def analyse(arrivals: dict[int, list[tuple[int, float]]], interval: float = 0.020) -> dict:
    lateness: list[float] = []
    skipped_or_lost = 0
    received = 0
    for packets in arrivals.values():
        # 32-bit timestamps, unwrapped, in 160-sample slots
        slots, last, base = [], None, 0
        for timestamp, _ in packets:
            if last is not None and timestamp < last and last - timestamp > 1 << 31:
                base += 1 << 32
            last = timestamp
            slots.append((base + timestamp) // 160)
        first = slots[0]
        offset = min(t - (s - first) * interval for s, (_, t) in zip(slots, packets))
        lateness += [t - offset - (s - first) * interval for s, (_, t) in zip(slots, packets)]
        received += len(packets)
        skipped_or_lost += (max(slots) - first + 1) - len(set(slots))
    lateness.sort()

    def pct(p: float) -> float:
        if not lateness:
            return math.nan
        return lateness[min(len(lateness) - 1, int(p * len(lateness)))] * 1000

    return {"streams_seen": len(arrivals), "received": received, "missing_slots": skipped_or_lost, "p50_ms": pct(0.50),
            "p99_ms": pct(0.99), "max_ms": lateness[-1] * 1000 if lateness else math.nan}


# -- the senders ------------------------------------------------------------------------
def run_steps(counts: list[int], seconds: float, warmup: float = 0.0) -> list[dict]:
    from twisted.internet import epollreactor

    epollreactor.install()
    from array import array

    from twisted.internet import defer, reactor, task

    from sipproxy.ua.media.audiofile import PcmSource
    from sipproxy.ua.media.stream import RTPStream

    tone = array("h", (int(8000 * math.sin(2 * math.pi * 440 * n / 8000)) for n in range(8000))).tobytes()
    results: list[dict] = []

    @defer.inlineCallbacks
    def steps():
        try:
            plan = ([(max(counts), warmup, False)] if warmup > 0 else []) + [(c, seconds, True) for c in counts]
            for count, duration, reported in plan:
                receiver = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--receive",
                                             "--seconds", str(duration + 30)],
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                try:
                    port = int(receiver.stdout.readline().split()[1])
                    streams = []
                    for _ in range(count):
                        stream = RTPStream(reactor, source=PcmSource(tone, repeat=0))
                        stream.listen("127.0.0.1")
                        stream.set_remote(("127.0.0.1", port))
                        streams.append(stream)
                    yield task.deferLater(reactor, 0.2, lambda: None)
                    before = resource.getrusage(resource.RUSAGE_SELF)
                    started = time.monotonic()
                    # stagger the starts over one interval, as calls would be
                    for i, stream in enumerate(streams):
                        reactor.callLater(0.020 * i / count, stream.start)
                    yield task.deferLater(reactor, duration, lambda: None)
                    after = resource.getrusage(resource.RUSAGE_SELF)
                    elapsed = time.monotonic() - started
                    late_max = max(s.late_max for s in streams)
                    sent = sum(s.stats()["sent"] for s in streams)
                    yield defer.gatherResults([s.stop() for s in streams])
                    out, _ = receiver.communicate("STOP\n", timeout=60)
                finally:
                    if receiver.poll() is None:
                        receiver.kill()
                        receiver.wait()
                if not reported:
                    continue
                report = json.loads(out.strip().splitlines()[-1])
                cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
                report.update(streams=count, seconds=round(elapsed, 2), sent=sent,
                              sender_late_max_ms=late_max * 1000,
                              cpu_percent_total=100 * cpu / elapsed,
                              cpu_percent_per_stream=100 * cpu / elapsed / count)
                results.append(report)
                print_row(report)
        finally:
            reactor.stop()

    reactor.callWhenRunning(steps)
    reactor.run()
    return results


HEADER = ("streams", "sent", "received", "missing_slots", "p50_ms", "p99_ms", "max_ms", "sender_late_max_ms",
          "cpu_percent_total", "cpu_percent_per_stream")


def print_row(report: dict) -> None:
    cells = []
    for key in HEADER:
        value = report[key]
        cells.append(f"{value:.2f}" if isinstance(value, float) else str(value))
    print(" ".join(f"{c:>10}" for c in cells) + f"   (load {os.getloadavg()[0]:.2f})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", default="1,25,50,100", help="comma-separated stream counts (max 200)")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per step (max 60)")
    parser.add_argument("--warmup", type=float, default=0.0,
                        help="seconds of an unreported first step with the largest count (PyPy's JIT)")
    parser.add_argument("--receive", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receive:
        receive(args.seconds)
        return
    counts = [int(c) for c in args.streams.split(",") if c.strip()]
    if not counts or min(counts) < 1 or max(counts) > MAX_STREAMS:
        parser.error(f"stream counts must be 1..{MAX_STREAMS}")
    if not 0 < args.seconds <= MAX_SECONDS or not 0 <= args.warmup <= MAX_SECONDS:
        parser.error(f"--seconds and --warmup must be at most {MAX_SECONDS:.0f}")
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    print(f"# {sys.implementation.name} {sys.version.split()[0]}, {args.seconds:.0f} s per step, "
          f"lateness of arrivals against each stream's 20 ms grid; {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f} before", flush=True)
    print(" ".join(f"{h[:10]:>10}" for h in HEADER), flush=True)
    run_steps(counts, args.seconds, args.warmup)


if __name__ == "__main__":
    main()
