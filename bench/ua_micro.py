#!/usr/bin/env python3
"""The user agent's own work per call, without sockets or a reactor.

Runs sipproxy.Simple over an in-memory leg and a task.Clock against a
scripted far end that answers as ``sipp -sn uas`` (caller role: INVITE,
180, 200, ACK, BYE, 200) or calls as ``sipp -sn uac`` (callee role:
INVITE, 100, 200, ACK, BYE, 200), and reports the UA's CPU per call. The
far end's own work (reading what the UA sent, building its answers) is
kept out of the figure. This is what the profile before/after in the
benchmark notes was taken with (bench/README.md, "The user agent"):

    python bench/ua_micro.py                    # µs per call, both roles
    python bench/ua_micro.py --profile caller   # cProfile of the caller, top entries
    python bench/ua_micro.py --callgrind callee # instructions per call (valgrind;
                                                # stable on a busy machine)
    python bench/ua_micro.py --misses callee    # cache lines read from memory per
                                                # call when every step starts cold
"""
from __future__ import annotations

import argparse
import heapq
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Callable, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from twisted.internet.base import DelayedCall  # noqa: E402
from twisted.internet.interfaces import IDelayedCall  # noqa: E402

from sipproxy.testing import MemoryLeg, memory_dispatcher  # noqa: E402
from sipproxy.ua.simple import Simple  # noqa: E402

UA = ("127.0.0.1", 5070)
PEER = ("127.0.0.1", 5090)
#: the SDP sipp's built-in scenarios send
SDP = ("v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       "m=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


class HeapClock:
    """A clock whose timers live in a heap, as the reactor's do (Twisted's
    C{task.Clock} re-sorts a list at every call, which would be most of
    the cost with thousands of 32 s transaction timers pending)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.heap: list[DelayedCall] = []

    def seconds(self) -> float:
        return self.now

    def callLater(self, delay: float, function: Callable[..., object], *args: object,
                  **kw: object) -> IDelayedCall:
        call = DelayedCall(self.now + delay, function, args, kw, lambda c: None, lambda c: None, self.seconds)
        heapq.heappush(self.heap, call)
        return call

    def advance(self, amount: float) -> None:
        self.now += amount
        heap = self.heap
        while heap and heap[0].time <= self.now:
            call = heapq.heappop(heap)
            if call.cancelled:
                continue
            call.called = 1
            call.func(*call.args, **call.kw)


#: the caches cachegrind simulates for --misses (a small last level: --evict
#: need not write much to empty it)
COLD_CACHES = ("--I1=32768,8,64", "--D1=32768,8,64", "--LL=2097152,16,64")
_evict_buffer = None


def _evict() -> None:
    """Write over twice the simulated last-level cache, so that what the
    next step reads comes from memory, as after a wake-up on an idle host.
    memset only writes: the step's read misses are its own."""
    import ctypes

    global _evict_buffer
    if _evict_buffer is None:
        _evict_buffer = ctypes.create_string_buffer(2 * 2097152)
    ctypes.memset(_evict_buffer, 0, len(_evict_buffer))


class Timed:
    """Adds up the CPU time spent inside the UA."""

    evict = False

    def __init__(self) -> None:
        self.total = 0.0

    def __call__(self, function: Callable[..., object], *args: object) -> object:
        if self.evict:
            _evict()
        t0 = time.process_time()
        try:
            return function(*args)
        finally:
            self.total += time.process_time() - t0


def _headers(data: bytes) -> dict[str, str]:
    """The far end's reading of a message: first value of each header
    (lower-case names; sipp does about this much)."""
    head = data.split(b"\r\n\r\n", 1)[0].decode()
    fields: dict[str, str] = {}
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        fields.setdefault(name.strip().lower(), value.strip())
    return fields


def _response(request: dict[str, str], code: int, reason: str, to_tag: str, body: str = "",
              contact: bool = False) -> bytes:
    lines = [f"SIP/2.0 {code} {reason}", f"Via: {request['via']}", f"From: {request['from']}",
             f"To: {request['to']};tag={to_tag}" if ";tag=" not in request["to"] else f"To: {request['to']}",
             f"Call-ID: {request['call-id']}", f"CSeq: {request['cseq']}"]
    if contact:
        lines.append(f"Contact: <sip:{PEER[0]}:{PEER[1]};transport=UDP>")
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


#: the clock moves this much per call (the timers of about this many
#: calls per second are pending, as in a real run)
STEP = 0.01


def caller(calls: int) -> float:
    """C{calls} calls made by the UA: CPU seconds spent in the UA."""
    clock = HeapClock()
    leg = MemoryLeg(*UA)
    ua = Simple(clock, dispatcher=memory_dispatcher([leg]), from_=f"sip:ours-bench@{UA[0]}:{UA[1]}")
    timed = Timed()
    ended = []
    for number in range(calls):
        d = timed(ua.invite, f"sip:service@{PEER[0]}:{PEER[1]}")
        d.addCallback(lambda call: call.bye())  # type: ignore[union-attr]
        d.addCallbacks(lambda end: ended.append(getattr(end, "code", None)),  # type: ignore[union-attr]
                       lambda failure: ended.append(failure))
        (invite, _), = leg.sent
        leg.sent.clear()
        request = _headers(invite)
        tag = f"uas{number}"
        timed(leg.receive, _response(request, 180, "Ringing", tag), PEER)
        timed(leg.receive, _response(request, 200, "OK", tag, SDP, contact=True), PEER)
        (ack, _), (bye, _) = leg.sent
        leg.sent.clear()
        assert ack.startswith(b"ACK ") and bye.startswith(b"BYE "), (ack, bye)
        timed(leg.receive, _response(_headers(bye), 200, "OK", tag), PEER)
        timed(clock.advance, STEP)
    assert len(ended) == calls and all(code == 200 for code in ended), ended[:3]
    return timed.total


def callee(calls: int) -> float:
    """C{calls} calls taken by the UA: CPU seconds spent in the UA."""
    clock = HeapClock()
    leg = MemoryLeg(*UA)
    ua = Simple(clock, dispatcher=memory_dispatcher([leg]), from_=f"sip:ours-bench@{UA[0]}:{UA[1]}")
    ended: list = []  # end codes only: holding the calls would keep them all alive
    ua.listen(on_cleanup=lambda call: ended.append(call.end.code))
    timed = Timed()
    uri = f"sip:service@{UA[0]}:{UA[1]}"
    for number in range(calls):
        via = f"SIP/2.0/UDP {PEER[0]}:{PEER[1]};branch=z9hG4bK-{number}-1-0"
        common = (f"From: sipp <sip:sipp@{PEER[0]}:{PEER[1]}>;tag={number}SIPpTag00{number}\r\n"
                  f"Call-ID: {number}-4242@{PEER[0]}\r\n")
        invite = (f"INVITE {uri} SIP/2.0\r\nVia: {via}\r\n{common}To: service <{uri}>\r\n"
                  f"CSeq: 1 INVITE\r\nContact: sip:sipp@{PEER[0]}:{PEER[1]}\r\nMax-Forwards: 70\r\n"
                  f"Subject: Performance Test\r\nContent-Type: application/sdp\r\n"
                  f"Content-Length: {len(SDP)}\r\n\r\n{SDP}").encode()
        timed(leg.receive, invite, PEER)
        (trying, _), (ok, _) = leg.sent
        leg.sent.clear()
        assert ok.startswith(b"SIP/2.0 200"), ok
        to = _headers(ok)["to"]
        ack = (f"ACK {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {PEER[0]}:{PEER[1]};branch=z9hG4bK-{number}-1-5\r\n"
               f"{common}To: {to}\r\nCSeq: 1 ACK\r\nContact: sip:sipp@{PEER[0]}:{PEER[1]}\r\n"
               f"Max-Forwards: 70\r\nSubject: Performance Test\r\nContent-Length: 0\r\n\r\n").encode()
        bye = (f"BYE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {PEER[0]}:{PEER[1]};branch=z9hG4bK-{number}-2-7\r\n"
               f"{common}To: {to}\r\nCSeq: 2 BYE\r\nContact: sip:sipp@{PEER[0]}:{PEER[1]}\r\n"
               f"Max-Forwards: 70\r\nSubject: Performance Test\r\nContent-Length: 0\r\n\r\n").encode()
        timed(leg.receive, ack, PEER)
        timed(leg.receive, bye, PEER)
        (bye_ok, _), = leg.sent
        leg.sent.clear()
        assert bye_ok.startswith(b"SIP/2.0 200"), bye_ok
        timed(clock.advance, STEP)
    assert len(ended) == calls and all(code == 200 for code in ended), ended[:3]
    return timed.total


ROLES = {"caller": caller, "callee": callee}


class ValgrindError(Exception):
    """valgrind is missing or the run under it failed: one line to print."""


def _valgrind(tool_args: list[str], role: str, calls: int, *extra: str, env: Optional[dict] = None) -> str:
    """Run this script's C{role} for C{calls} calls under valgrind; its
    standard error (valgrind's summary)."""
    if shutil.which("valgrind") is None:
        raise ValgrindError("valgrind not found (Debian: apt-get install valgrind)")
    result = subprocess.run(["valgrind", *tool_args, sys.executable, __file__, "--role", role,
                             "--calls", str(calls), *extra, "--quiet"], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise ValgrindError(f"valgrind exited with {result.returncode}: {last[:200]}")
    return result.stderr


def callgrind(role: str) -> None:
    """Instructions per call: 201 calls minus 1 call, in two processes."""
    def collected(calls: int) -> int:
        stderr = _valgrind(["--tool=callgrind", "--callgrind-out-file=/dev/null"], role, calls)
        return int(re.search(r"Collected : (\d+)", stderr).group(1))
    delta = collected(201) - collected(1)
    print(f"{role}: {delta / 200 / 1000:.0f}k instructions per call")


def misses_per_call(role: str) -> None:
    """Cache lines read from memory per call (cachegrind's ILmr + DLmr in
    simulated caches) when the caches are emptied before every step:
    what a wake-up at a few calls per second costs beyond the
    instructions. 101 calls minus 1 call, in two processes."""
    def misses(calls: int) -> int:
        with tempfile.NamedTemporaryFile() as out:
            _valgrind(["--tool=cachegrind", "--cache-sim=yes", *COLD_CACHES, f"--cachegrind-out-file={out.name}"],
                      role, calls, "--evict",
                      env={**os.environ, "PYTHONHASHSEED": "0"})  # the same dict layouts each run
            lines = out.read().decode().splitlines()
        # the file names its events ("events: Ir I1mr ILmr ...") and ends with their totals
        names = next(line for line in lines if line.startswith("events:")).split()[1:]
        totals = next(line for line in lines if line.startswith("summary:")).split()[1:]
        events = dict(zip(names, map(int, totals)))
        return events["ILmr"] + events["DLmr"]
    delta = misses(101) - misses(1)
    print(f"{role}: {delta / 100 / 1000:.1f}k cache lines read from memory per call, every step cold")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--role", choices=tuple(ROLES), action="append", help="default: both")
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=0, help="calls run first, not counted (PyPy's JIT)")
    parser.add_argument("--profile", choices=tuple(ROLES), help="cProfile of this role, top entries")
    parser.add_argument("--callgrind", choices=tuple(ROLES), help="count instructions per call (valgrind)")
    parser.add_argument("--misses", choices=tuple(ROLES),
                        help="cache lines read from memory per call, every step cold (valgrind)")
    parser.add_argument("--evict", action="store_true", help="empty the caches before every step (for --misses)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    try:
        if args.callgrind:
            callgrind(args.callgrind)
            return
        if args.misses:
            misses_per_call(args.misses)
            return
    except ValgrindError as e:
        sys.exit(f"ua_micro.py: {e}")
    Timed.evict = args.evict
    if args.profile:
        import cProfile
        import pstats

        ROLES[args.profile](300)
        profile = cProfile.Profile()
        profile.runcall(ROLES[args.profile], args.calls)
        pstats.Stats(profile).sort_stats("tottime").print_stats(30)
        return
    for role in args.role or list(ROLES):
        if args.warmup:
            ROLES[role](args.warmup)
        seconds = ROLES[role](args.calls)
        if not args.quiet:
            print(f"{role}: {seconds / args.calls * 1e6:.0f} µs CPU per call ({args.calls} calls)")


if __name__ == "__main__":
    main()
