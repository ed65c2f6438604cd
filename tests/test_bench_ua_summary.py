"""ua_bench.py's summary keeps each fixed rate apart: the mean CPU per
call of a rate's rounds, its ratio to Net::SIP's at that rate, and after
a search the highest clean rates."""
from __future__ import annotations

import os
import sys

from twisted.trial.unittest import SynchronousTestCase

from tests.util import PROJECT_ROOT

sys.path.insert(0, os.path.join(PROJECT_ROOT, "bench"))

from ua_bench import Result, summary_lines  # noqa: E402


def step(ua: str, role: str, rate: int, ua_cpu_s: float, sipp_cpu_s: float = 0.0, search: bool = False) -> Result:
    """One measured step of 1000 calls that all succeeded."""
    return Result(ua=ua, role=role, rate=rate, calls=1000, warmup=0, ok=1000, seconds=1000 / rate,
                  ua_cpu_s=ua_cpu_s, sipp_cpu_s=sipp_cpu_s, search=search)


class SummaryTests(SynchronousTestCase):
    def test_each_rate_has_its_own_means_and_ratio(self) -> None:
        results = [
            step("ours", "caller", 100, 1.2, 0.4), step("netsip", "caller", 100, 4.0, 0.5),
            step("ours", "caller", 200, 0.8, 0.3), step("netsip", "caller", 200, 3.0, 0.2),
            step("ours", "caller", 100, 1.4, 0.6), step("netsip", "caller", 100, 4.4, 0.3),
            # a search step at 100/s is not one of the fixed-rate rounds
            step("ours", "caller", 100, 9.0, 9.0, search=True),
        ]
        self.assertEqual(summary_lines(results, ["caller"], ["ours", "netsip"], None), [
            "caller   100/s ours        cpu-ms/call 1.300 (sipp 0.500), 2 rounds",
            "caller   100/s netsip      cpu-ms/call 4.200 (sipp 0.400), 2 rounds",
            "caller   100/s ours / netsip CPU per call = 0.310 (target <= 0.2)",
            "caller   200/s ours        cpu-ms/call 0.800 (sipp 0.300), 1 round",
            "caller   200/s netsip      cpu-ms/call 3.000 (sipp 0.200), 1 round",
            "caller   200/s ours / netsip CPU per call = 0.267 (target <= 0.2)",
        ])

    def test_no_ratio_where_netsip_did_not_run_at_that_rate(self) -> None:
        results = [step("ours", "callee", 40, 1.0), step("floor", "callee", 40, 0.4),
                   step("netsip", "caller", 40, 4.0), step("netsip", "callee", 80, 4.0)]
        lines = summary_lines(results, ["callee"], ["ours", "floor", "netsip"], None)
        self.assertEqual(lines, [
            "callee    40/s ours        cpu-ms/call 1.000, 1 round",
            "callee    40/s floor       cpu-ms/call 0.400, 1 round",
            "callee    80/s netsip      cpu-ms/call 4.000, 1 round",
        ])

    def test_a_search_adds_the_highest_clean_rates_and_their_ratio(self) -> None:
        best = {("ours", "callee"): 1600, ("netsip", "callee"): 300, ("floor", "callee"): None}
        lines = summary_lines([], ["callee"], ["ours", "floor", "netsip"], best)
        self.assertEqual(lines, [
            "callee ours        highest clean rate 1600",
            "callee floor       highest clean rate None",
            "callee netsip      highest clean rate 300",
            "callee ours / netsip highest clean rate 1600 / 300 = 5.3x (target >= 5x)",
        ])

    def test_no_clean_rate_for_netsip_gives_no_rate_ratio(self) -> None:
        best = {("ours", "caller"): 600, ("netsip", "caller"): None}
        lines = summary_lines([], ["caller"], ["ours", "netsip"], best)
        self.assertEqual(lines, ["caller ours        highest clean rate 600",
                                 "caller netsip      highest clean rate None"])
