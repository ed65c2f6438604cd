"""Find the highest clean call rate: step up geometrically, then bisect.

A rate is clean when its step PASSes (see step.judge). Above its limit a
proxy usually collapses rather than degrades (late answers cause
retransmissions, which add load), so the first failure ends the climb and
bisection narrows the gap between the last pass and the first failure. The
number of steps and the wall time are both bounded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from .step import StepResult


@dataclass(frozen=True)
class SearchSettings:
    start_rate: int = 500
    max_rate: int = 16000
    growth: float = 2.0
    bisections: int = 3
    step_seconds: float = 5.0
    min_calls: int = 500
    max_calls: int = 40000
    max_steps: int = 10
    budget_s: float = 240.0

    def calls_for(self, rate: int) -> int:
        return int(min(self.max_calls, max(self.min_calls, rate * self.step_seconds)))


@dataclass
class SearchOutcome:
    highest_pass: Optional[int] = None
    lowest_fail: Optional[int] = None
    steps: list[StepResult] = field(default_factory=list)
    stopped: str = ""

    def result_at(self, rate: Optional[int]) -> Optional[StepResult]:
        return next((s for s in self.steps if s.rate == rate and s.verdict == "PASS"), None)


RunRate = Callable[[int, int], StepResult]  # (rate, calls) -> result


def _round_rate(rate: float) -> int:
    """Bisection midpoints rounded to a readable number (multiple of 10 above 100)."""
    return int(round(rate, -1)) if rate >= 100 else max(1, int(rate))


class _Search:
    def __init__(self, run: RunRate, settings: SearchSettings) -> None:
        self.run = run
        self.settings = settings
        self.outcome = SearchOutcome()
        self.started = time.monotonic()

    def out_of_budget(self) -> bool:
        if len(self.outcome.steps) >= self.settings.max_steps:
            self.outcome.stopped = f"step limit ({self.settings.max_steps}) reached"
            return True
        if time.monotonic() - self.started > self.settings.budget_s:
            self.outcome.stopped = f"time budget ({self.settings.budget_s:.0f} s) used up"
            return True
        return False

    def try_rate(self, rate: int) -> Optional[bool]:
        """Run one step; True/False for PASS/FAIL, None if it could not be measured."""
        result = self.run(rate, self.settings.calls_for(rate))
        self.outcome.steps.append(result)
        if result.verdict == "ERROR":
            self.outcome.stopped = f"step at {rate} cps could not run: {result.reason}"
            return None
        passed = result.verdict == "PASS"
        if passed:
            self.outcome.highest_pass = max(rate, self.outcome.highest_pass or 0)
        else:
            self.outcome.lowest_fail = min(rate, self.outcome.lowest_fail or rate)
        return passed

    def climb(self) -> bool:
        """Geometric steps until the first failure; False if the search must end."""
        rate = self.settings.start_rate
        while rate <= self.settings.max_rate:
            if self.out_of_budget():
                return False
            passed = self.try_rate(rate)
            if passed is None:
                return False
            if not passed:
                return True
            rate = int(rate * self.settings.growth)
        self.outcome.stopped = f"passed up to the rate cap {self.settings.max_rate}"
        return False

    def bisect(self) -> None:
        for _ in range(self.settings.bisections):
            low = self.outcome.highest_pass or 0
            high = self.outcome.lowest_fail
            assert high is not None
            if high - low <= max(10, 0.05 * low):
                self.outcome.stopped = "bracket narrower than 5%"
                return
            middle = _round_rate((low + high) / 2)
            if middle in (low, high):
                self.outcome.stopped = "bracket too narrow to split"
                return
            if self.out_of_budget() or self.try_rate(middle) is None:
                return
        self.outcome.stopped = f"{self.settings.bisections} bisection steps done"


def search_highest_clean_rate(run: RunRate, settings: SearchSettings) -> SearchOutcome:
    search = _Search(run, settings)
    if search.climb():
        search.bisect()
    return search.outcome
