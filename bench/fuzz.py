#!/usr/bin/env python3
"""A longer run of tests/test_fuzz.py's mutations, with the tallies.

    python bench/fuzz.py                    # 20,000 mutations, seed 4475
    python bench/fuzz.py --count 100000 --seed 7

The same rig as the test: a proxy built as C{twistd sipproxy --registrar
--nathelper} builds it, on real loopback UDP legs, with a trap UAS; each
mutation is handed to the dispatcher as a datagram would be, and what the
legs send is recorded (only loopback destinations are really sent to).
Prints: mutations sent, refused by the parser, answered 4xx, answered
otherwise, forwarded, dropped, refused-but-forwarded, forwarded-unparseable,
tracebacks (logged failures), the caches' size and the growth of the
process. Exits 1 when any of the three must-be-zero counts is not.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from twisted.internet import reactor  # noqa: E402
from twisted.logger import globalLogPublisher  # noqa: E402

from sipproxy.sip.fastparse import CACHES  # noqa: E402
from tests.test_fuzz import SEED, FuzzRig, Tally, resident_bytes, run_mutations  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args()
    failures: list[str] = []
    globalLogPublisher.addObserver(
        lambda e: failures.append(str(e["log_failure"].value)) if "log_failure" in e else None)
    rig = FuzzRig(tempfile.mkdtemp(prefix="sipproxy-fuzz-"))
    rig.start()
    tally = Tally()
    rss = resident_bytes()
    started = time.process_time()
    run_mutations(rig, args.count, args.seed, tally)
    cpu = time.process_time() - started
    grown = resident_bytes() - rss
    rig.stop()
    reactor.runUntilCurrent()
    print(tally.line())
    print(f"tracebacks (logged failures): {len(failures)}")
    for failure in failures[:5]:
        print("  ", failure[:200])
    print(f"parser caches: {CACHES.key_chars()} characters of keys; process grew {grown / 2**20:.1f} MiB; "
          f"{cpu:.1f} s CPU")
    bad = len(failures) + len(tally.refused_but_forwarded) + len(tally.forwarded_unparseable)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
