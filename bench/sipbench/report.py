"""Tables on stdout and raw files on disk.

The per-step table has everything measured; the summary boils it down to
what the issue asks: CPU-seconds per 1000 calls at each fixed rate, the
highest clean rate, and how sipproxy compares with each peer (sipproxy/peer:
below 1 is better for CPU, above 1 is better for the rate).
"""

from __future__ import annotations

import csv
import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, TextIO

from .step import StepResult


def _num(value: Optional[float], digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _pair(a: Optional[int], b: Optional[int]) -> str:
    return "-" if a is None and b is None else f"{a if a is not None else '-'}/{b if b is not None else '-'}"


STEP_COLUMNS: list[tuple[str, Callable[[StepResult], str]]] = [
    ("proxy", lambda r: r.proxy),
    ("scen", lambda r: r.scenario),
    ("kind", lambda r: r.kind if r.kind != "fixed" else f"fixed#{r.round}"),
    ("rate", lambda r: str(r.rate)),
    ("created", lambda r: str(r.created)),
    ("ok", lambda r: str(r.ok)),
    ("fail", lambda r: str(r.failed)),
    ("retr uac/uas", lambda r: f"{r.retr_uac}/{r.retr_uas}"),
    ("cps", lambda r: _num(r.achieved_cps, 1)),
    ("proxy cpu%", lambda r: _num(r.proxy_cpu_pct, 1)),
    ("cpu-s/1k", lambda r: _num(r.cpu_s_per_1k, 3)),
    ("rss MB", lambda r: _num(r.proxy_rss_mb, 1)),
    ("uac/uas cpu%", lambda r: f"{r.uac_cpu_pct:.1f}/{r.uas_cpu_pct:.1f}"),
    ("drops p/uac/uas", lambda r: "-" if r.drops_proxy is None
     else f"{r.drops_proxy}/{r.drops_uac}/{r.drops_uas}"),
    ("result", lambda r: r.verdict + (f" ({r.reason})" if r.reason else "")),
]


def format_table(header: list[str], rows: list[list[str]]) -> str:
    """A plain aligned text table; the last column is left unpadded."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        padded = [cell.rjust(width) if i else cell.ljust(width)
                  for i, (cell, width) in enumerate(zip(cells, widths))]
        padded[-1] = cells[-1]
        return "  ".join(padded).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def progress_line(r: StepResult) -> str:
    """One readable line per finished step, printed while the run goes on."""
    drops = "" if r.drops_proxy is None else f", drops {r.drops_proxy}/{r.drops_uac}/{r.drops_uas}"
    warm = "" if r.warmup_ok is None else f" (after a warm-up: {r.warmup_ok} ok, {r.warmup_failed} failed)"
    return (f"{r.proxy} {r.scenario} {r.kind} {r.rate} cps{warm}: {r.ok}/{r.planned} ok, "
            f"{r.failed} failed, retr {r.retr_uac}/{r.retr_uas}, {r.achieved_cps:.1f} cps, "
            f"proxy {r.proxy_cpu_pct:.1f}% = {_num(r.cpu_s_per_1k, 3)} cpu-s/1k, "
            f"rss {r.proxy_rss_mb:.1f} MB, sipp {r.uac_cpu_pct:.1f}/{r.uas_cpu_pct:.1f}%{drops}"
            f" -> {r.verdict}" + (f" ({r.reason})" if r.reason else ""))


def step_row(result: StepResult) -> list[str]:
    return [render(result) for _, render in STEP_COLUMNS]


def steps_table(results: list[StepResult]) -> str:
    return format_table([name for name, _ in STEP_COLUMNS], [step_row(r) for r in results])


@dataclass
class ProxySummary:
    proxy: str
    scenario: str
    cpu_per_1k: dict[int, list[float]] = field(default_factory=dict)  # fixed rate -> repeats
    fixed_failures: dict[int, str] = field(default_factory=dict)  # rate -> FAIL/ERROR
    highest_clean: Optional[int] = None
    lowest_failed: Optional[int] = None
    cpu_per_1k_at_max: Optional[float] = None
    cpu_pct_at_max: Optional[float] = None
    peak_rss_mb: float = 0.0
    note: str = ""

    def mean_cpu(self, rate: int) -> Optional[float]:
        values = self.cpu_per_1k.get(rate)
        return statistics.mean(values) if values else None


def summarize_fixed(summary: ProxySummary, results: list[StepResult]) -> None:
    for result in results:
        summary.peak_rss_mb = max(summary.peak_rss_mb, result.proxy_rss_mb)
        if result.verdict == "PASS" and result.cpu_s_per_1k is not None:
            summary.cpu_per_1k.setdefault(result.rate, []).append(result.cpu_s_per_1k)
        else:
            summary.fixed_failures.setdefault(result.rate, result.verdict)


def _cpu_cell(summary: ProxySummary, rate: int) -> str:
    values = summary.cpu_per_1k.get(rate)
    if not values:
        return summary.fixed_failures.get(rate, "-")
    spread = f" ({min(values):.2f}-{max(values):.2f})" if len(values) > 1 else ""
    return f"{statistics.mean(values):.3f}{spread}"


def summary_table(summaries: list[ProxySummary], rates: list[int]) -> str:
    header = (["proxy", "scen"] + [f"cpu-s/1k @{rate}" for rate in rates]
              + ["max clean cps", "cpu-s/1k @max", "cpu% @max", "peak rss MB", "note"])
    rows = []
    for s in summaries:
        bracket = f" (<{s.lowest_failed})" if s.lowest_failed else ""
        rows.append([s.proxy, s.scenario] + [_cpu_cell(s, rate) for rate in rates]
                    + [("-" if s.highest_clean is None else str(s.highest_clean)) + bracket,
                       _num(s.cpu_per_1k_at_max, 3), _num(s.cpu_pct_at_max, 1),
                       _num(s.peak_rss_mb, 1), s.note])
    return format_table(header, rows)


def _ratio(ours: Optional[float], theirs: Optional[float]) -> str:
    return "-" if not ours or not theirs else f"{ours / theirs:.2f}"


def ratio_lines(summaries: list[ProxySummary], rates: list[int],
                subject: str = "sipproxy") -> list[str]:
    ours = next((s for s in summaries if s.proxy == subject and (s.cpu_per_1k or s.highest_clean)),
                None)
    if ours is None:
        return [f"ratios {subject}/peer: n/a ({subject} was not measured in this run)"]
    lines = []
    for peer in summaries:
        if peer.proxy == subject:
            continue
        cpu = ", ".join(f"@{rate} {_ratio(ours.mean_cpu(rate), peer.mean_cpu(rate))}"
                        for rate in rates)
        lines.append(f"{subject}/{peer.proxy}: cpu-s per 1k calls {cpu}; "
                     f"highest clean rate {_ratio(ours.highest_clean, peer.highest_clean)}")
    return lines


def write_tsv(path: Path, results: list[StepResult]) -> None:
    rows = [asdict(result) for result in results]
    if not rows:
        return
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="\t")
        writer.writeheader()
        for row in rows:
            row["failure_kinds"] = json.dumps(row["failure_kinds"])
            row["ports"] = json.dumps(row["ports"])
            writer.writerow(row)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.write_text(json.dumps(payload, indent=2, default=lambda o: asdict(o)))


class Tee:
    """Print to stdout and append the same text to the run's report file."""

    def __init__(self, stream: TextIO, path: Path) -> None:
        self.stream = stream
        self.path = path

    def __call__(self, text: str = "") -> None:
        print(text, file=self.stream, flush=True)
        with open(self.path, "a") as f:
            f.write(text + "\n")
