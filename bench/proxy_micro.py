#!/usr/bin/env python3
"""The proxy's own work per message, without sockets or a reactor.

Pushes sipp-style calls (INVITE, 180, 200, ACK, BYE, 200; a new Call-ID,
tag and branch per call) through a real Dispatcher and StatelessProxy over
in-memory legs, one leg or two, and reports CPU per message. This is what
the profile before/after in the benchmark notes was taken with:

    python bench/proxy_micro.py                  # µs per message, 1 and 2 legs
    python bench/proxy_micro.py --profile 2      # cProfile, top entries, two legs
    python bench/proxy_micro.py --callgrind 1    # instructions per message (valgrind;
                                                 # stable on a busy machine)
    python bench/proxy_micro.py --cold 8         # µs per message with 8 MiB of memory
                                                 # rewritten before each one (cold caches)
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from sipproxy.sip.message import parse  # noqa: E402
from sipproxy.proxy.stateless import StatelessProxy  # noqa: E402
from sipproxy.testing import MemoryLeg, memory_dispatcher  # noqa: E402

SDP = ("v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       "m=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


class SinkLeg(MemoryLeg):
    """Keeps only the last datagram sent."""

    last = b""

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        self.last = data


def invite(call: int, uas_host: str) -> bytes:
    """Call number C{call}'s INVITE, as sipp's built-in uac sends it."""
    return (f"INVITE sip:service@{uas_host}:5090 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:5091;branch=z9hG4bK-7588-{call}-0\r\n"
            f"From: sipp <sip:sipp@127.0.0.1:5091>;tag=7588SIPpTag00{call}\r\n"
            f"To: service <sip:service@{uas_host}:5090>\r\n"
            f"Call-ID: {call}-7588@127.0.0.1\r\nCSeq: 1 INVITE\r\nContact: sip:sipp@127.0.0.1:5091\r\n"
            f"Max-Forwards: 70\r\nSubject: Performance Test\r\nContent-Type: application/sdp\r\n"
            f"Content-Length: {len(SDP)}\r\n\r\n{SDP}").encode()


def in_dialog(message: bytes, method: str, cseq: str, branch_suffix: str) -> bytes:
    """The ACK or BYE of the same call (with the UAS's To tag)."""
    text = message.decode()
    head = text[: text.index("\r\n\r\n")]
    lines = head.split("\r\n")
    lines[0] = lines[0].replace("INVITE", method, 1)
    out = []
    for line in lines:
        if line.startswith("Via:"):
            line = line.rsplit("-", 1)[0] + "-" + branch_suffix
        elif line.startswith("CSeq:"):
            line = f"CSeq: {cseq} {method}"
        elif line.startswith("To:"):
            line += ";tag=uas1"
        elif line.startswith(("Content-Type", "Content-Length")):
            continue
        out.append(line)
    return ("\r\n".join(out) + "\r\nContent-Length: 0\r\n\r\n").encode()


def run(calls: int, two_legs: bool, quiet: bool = False, timed: int = 0, cold_mib: int = 0) -> float:
    """Build C{calls} calls and push the first C{timed} (all, by default)
    through a fresh proxy; CPU microseconds per message (with C{cold_mib},
    the median wall time of a message run on cold caches)."""
    legs = [SinkLeg("127.0.0.1", 5060)]
    if two_legs:
        legs.append(SinkLeg("127.0.0.2", 5060))
    dispatcher = memory_dispatcher(legs, local_address=lambda ip: None)
    dispatcher.set_receiver(StatelessProxy(dispatcher, secret=b"x" * 32))
    uac, uas = legs[0], legs[-1]
    uac_addr, uas_addr = ("127.0.0.1", 5091), (uas.host, 5090)
    messages = []
    for call in range(calls):
        inv = invite(call, uas.host)
        uac.receive(inv, uac_addr)  # once, to build the responses from what the UAS would get
        forwarded = parse(uas.last)
        ringing = forwarded.create_response(180, to_tag="uas1", record_route=True,
                                            headers=[("Contact", f"<sip:{uas.host}:5090;transport=UDP>")])
        ok = forwarded.create_response(200, to_tag="uas1", record_route=True,
                                       headers=[("Contact", f"<sip:{uas.host}:5090;transport=UDP>")])
        bye = in_dialog(inv, "BYE", "2", "7")
        bye_ok = parse(bye).create_response(200)
        bye_ok.insert("via", forwarded.get("via"))
        messages.append((inv, bytes(ringing), bytes(ok), in_dialog(inv, "ACK", "1", "5"), bye, bytes(bye_ok)))
    # a fresh proxy (fresh caches) for the timed run
    dispatcher = memory_dispatcher(legs, local_address=lambda ip: None)
    dispatcher.set_receiver(StatelessProxy(dispatcher, secret=b"x" * 32))
    # every call's six messages in the order a call sends them; built for
    # all calls, so --callgrind's two runs build the same and it cancels out
    steps = [(leg, data, addr)
             for inv, ringing, ok, ack, bye, bye_ok in messages
             for leg, data, addr in ((uac, inv, uac_addr), (uas, ringing, uas_addr), (uas, ok, uas_addr),
                                     (uac, ack, uac_addr), (uac, bye, uac_addr), (uas, bye_ok, uas_addr))]
    steps = steps[: 6 * (timed or calls)]
    if cold_mib:
        per_message = _cold_median(steps, cold_mib)
        if not quiet:
            print(f"{'two legs' if two_legs else 'one leg'}, {cold_mib} MiB rewritten before each message: "
                  f"{per_message:.1f} µs per message (median)")
        return per_message
    t0 = time.process_time()
    for leg, data, addr in steps:
        leg.receive(data, addr)
    per_message = (time.process_time() - t0) / len(steps) * 1e6
    if not quiet:
        print(f"{'two legs' if two_legs else 'one leg'}: {per_message:.1f} µs CPU per message")
    return per_message


def _cold_median(steps: list[tuple[SinkLeg, bytes, tuple[str, int]]], mib: int) -> float:
    """Median µs per message when each message finds the CPU caches cold.

    At a few hundred calls per second every datagram is its own wake-up,
    and the caches have served other processes in between: the proxy then
    costs two to three times its warm figure. Rewriting a buffer larger
    than the per-core cache before each message models that, reproducibly
    enough to compare two versions of the code (the median hides the
    interrupts)."""
    junk, zeros = bytearray(mib << 20), bytes(mib << 20)
    clock = time.perf_counter_ns
    times = []
    for leg, data, addr in steps:
        junk[:] = zeros
        t0 = clock()
        leg.receive(data, addr)
        times.append(clock() - t0)
    return statistics.median(times) / 1000


def callgrind(legs: int) -> None:
    """Instructions per message: 301 calls timed minus 1 (the same 301
    calls built in both runs)."""
    def collected(timed: int) -> int:
        out = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
                              __file__, "--calls", "301", "--timed", str(timed), "--legs", str(legs), "--quiet"],
                             capture_output=True, text=True, check=True)
        return int(re.search(r"Collected : (\d+)", out.stderr).group(1))
    delta = collected(301) - collected(1)
    print(f"{legs} leg(s): {delta / 300 / 6 / 1000:.0f}k instructions per message")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", type=int, choices=(1, 2), help="cProfile with this many legs")
    parser.add_argument("--callgrind", type=int, choices=(1, 2), help="count instructions with this many legs")
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--timed", type=int, default=0, help="push only the first N calls (default: all)")
    parser.add_argument("--legs", type=int, choices=(1, 2))
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--cold", type=int, metavar="MIB", default=0,
                        help="rewrite MIB MiB of memory before each message and report the median")
    args = parser.parse_args()
    if args.callgrind:
        callgrind(args.callgrind)
    elif args.profile:
        import cProfile
        import pstats

        run(300, args.profile == 2, quiet=True)
        profile = cProfile.Profile()
        profile.runcall(run, args.calls, args.profile == 2)
        pstats.Stats(profile).sort_stats("tottime").print_stats(15)
    elif args.legs:
        run(args.calls, args.legs == 2, args.quiet, args.timed, args.cold)
    else:
        run(args.calls, False, cold_mib=args.cold)
        run(args.calls, True, cold_mib=args.cold)


if __name__ == "__main__":
    main()
