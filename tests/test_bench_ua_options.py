"""The user agent's benchmarks refuse bad options in one line: ua_bench.py
a bad --sipp-buff-size or --rates, or an unknown UA in --uas, before it
starts any process or writes any result;
ua_micro.py an unknown role, or valgrind missing for --misses and
--callgrind."""
from __future__ import annotations

import os
import sys
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from tests.util import PROJECT_ROOT, child_environment, run_process

BENCH = os.path.join(PROJECT_ROOT, "bench", "ua_bench.py")
sys.path.insert(0, os.path.join(PROJECT_ROOT, "bench"))

from ua_bench import RATE_RANGE, SIPP_BUFFER_RANGE, UAS, fixed_rates, sipp_buffer_size, ua_names  # noqa: E402


def assert_refused_in_one_line(test: SynchronousTestCase, options: list[str], prefix: str) -> None:
    """ua_bench.py with C{options} exits 1 with one short line starting
    with C{prefix}, prints nothing on stdout and writes no results. Were
    the options taken, a real step would start: --max-time bounds its sipp
    and UA to 5 s should such a test ever fail."""
    with tempfile.TemporaryDirectory() as out:
        result = run_process(
            [sys.executable, BENCH, "--rates", "1", "--calls", "1", "--max-time", "5", *options,
             "--out", os.path.join(out, "results")],
            timeout=30, env=child_environment(), cwd=PROJECT_ROOT)
        test.assertEqual(result.returncode, 1, result.stderr[:500])
        lines = result.stderr.splitlines()
        test.assertEqual(len(lines), 1, result.stderr[:500])
        test.assertTrue(lines[0].startswith(prefix), lines[0][:200])
        test.assertLess(len(lines[0]), 200)
        test.assertEqual(result.stdout, "")
        test.assertFalse(os.path.exists(os.path.join(out, "results")))


class SippBufferSizeTests(SynchronousTestCase):
    def test_sizes_in_range_are_taken(self) -> None:
        low, high = SIPP_BUFFER_RANGE
        self.assertEqual([sipp_buffer_size(text) for text in (None, "4194304", " 4096 ", str(high))],
                         [None, 4194304, low, high])

    def test_hostile_sizes_are_one_line_and_a_nonzero_exit(self) -> None:
        hostile = ["-1", "0", "4095", str((1 << 30) + 1), "9" * 5000, "4e6", "0x400000", "", "12\n34",
                   "\u0664\u0660\u0669\u0666"]  # Arabic-Indic digits: isdigit() but not bytes we mean
        for text in hostile:
            with self.subTest(text=text[:20]):
                assert_refused_in_one_line(self, ["--uas", "floor", "--sipp-buff-size", text], "--sipp-buff-size ")


class UANamesTests(SynchronousTestCase):
    def test_known_names_are_taken_in_order(self) -> None:
        self.assertEqual(ua_names("floor-parse,ours,,netsip"), ["floor-parse", "ours", "netsip"])
        self.assertEqual(ua_names(",".join(UAS)), list(UAS))
        self.assertEqual(ua_names(""), [])

    def test_unknown_names_are_one_line_and_a_nonzero_exit(self) -> None:
        hostile = ["foo", "ours,Floor", "floor parse", "x" * 5000, "ours;rm -rf /", "floor-parse\nours"]
        for text in hostile:
            with self.subTest(text=text[:20]):
                assert_refused_in_one_line(self, ["--uas", text], "--uas: unknown UA ")


class FixedRatesTests(SynchronousTestCase):
    def test_rates_in_range_are_taken_in_order(self) -> None:
        low, high = RATE_RANGE
        self.assertEqual(fixed_rates("200, 40,,100"), [200, 40, 100])
        self.assertEqual(fixed_rates(f"{low},{high}"), [low, high])
        self.assertEqual(fixed_rates(""), [])  # only a search

    def test_hostile_rates_are_one_line_and_a_nonzero_exit(self) -> None:
        hostile = ["abc", "0", "-5", "40,0", str(RATE_RANGE[1] + 1), "9" * 5000, "1e3", "0x10", "4.5",
                   "40;rm -rf /", "40\n50", "\u0664\u0660"]  # Arabic-Indic digits: isdigit(), not a rate
        for text in hostile:
            with self.subTest(text=text[:20]):
                assert_refused_in_one_line(self, ["--uas", "floor", "--rates", text], "--rates ")


MICRO = os.path.join(PROJECT_ROOT, "bench", "ua_micro.py")


class MicroOptionsTests(SynchronousTestCase):
    """bench/ua_micro.py: --misses and --callgrind name the problem in one
    line, never a traceback."""

    def run_micro(self, *args: str, path: str = "") -> tuple[int, list[str]]:
        env = child_environment()
        if path:
            env["PATH"] = path
        result = run_process([sys.executable, MICRO, *args], timeout=60, env=env, cwd=PROJECT_ROOT)
        self.assertEqual(result.stdout, "")
        self.assertNotIn("Traceback", result.stderr)
        return result.returncode, result.stderr.splitlines()

    def test_hostile_roles_are_refused(self) -> None:
        for role in ("nobody", "", "callee;rm", "x" * 5000, "CALLEE"):
            for option in ("--misses", "--callgrind"):
                with self.subTest(option=option, role=role[:20]):
                    code, lines = self.run_micro(option, role)
                    self.assertEqual(code, 2)
                    self.assertIn(f"argument {option}: invalid choice", lines[-1])

    def test_without_valgrind_one_line_and_a_nonzero_exit(self) -> None:
        with tempfile.TemporaryDirectory() as empty:  # a PATH where no valgrind is
            for option in ("--misses", "--callgrind"):
                with self.subTest(option=option):
                    code, lines = self.run_micro(option, "callee", path=empty)
                    self.assertEqual(code, 1)
                    self.assertEqual(lines, ["ua_micro.py: valgrind not found (Debian: apt-get install valgrind)"])
