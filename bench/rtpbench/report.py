"""Tables, ratios and target checks for bench/run_rtp.py."""
from __future__ import annotations

import statistics
from typing import Iterable, Optional

from .measure import Measurement


def fmt(value: Optional[float], digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}"


def pct(value: float) -> str:
    """A loss percentage, short: 97%, 3.5%, 0.057%."""
    if value >= 10:
        return f"{value:.0f}%"
    if value >= 1:
        return f"{value:.1f}%"
    return f"{value:.2g}%"


def krate(rate: Optional[float]) -> str:
    if rate is None:
        return "-"
    return f"{rate / 1000:g}k"


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


def step_cell(m: Measurement) -> str:
    """cpu-s/Mpkt, loss when not zero, and the verdict mark."""
    if m.verdict == "ERROR":
        return "error"
    loss = "" if not m.loss_pct else f" ({pct(m.loss_pct)})"
    return f"{fmt(m.cpu_s_per_mpkt)}{loss}{m.mark()}"


def limit_note(m: Optional[Measurement]) -> str:
    """What stopped a relay, read from its first failing step."""
    if m is None:
        return "no failing step (search cap)"
    if m.verdict == "ERROR":
        return f"error: {m.reason[:60]}"
    if m.verdict == "GEN":
        return "generator fell behind"
    parts = []
    if m.loss_pct is not None and m.loss_pct > 50:
        parts.append(f"collapse ({m.loss_pct:.0f}% lost)")
    if m.relay_cpu_pct is not None:
        parts.append(f"relay CPU {m.relay_cpu_pct:.0f}%")
    if m.drops_relay:
        parts.append(f"{m.drops_relay} drops at relay sockets")
    if m.drops_gen:
        parts.append(f"{m.drops_gen} at rtpgen's")
    lost = m.sent - m.received - (m.drops_relay or 0) - (m.drops_gen or 0)
    if lost > 0 and m.loss_pct and m.loss_pct < 50:
        parts.append(f"{lost} lost elsewhere")
    return ", ".join(parts)


def mean(values: Iterable[Optional[float]]) -> Optional[float]:
    vals = [v for v in values if v is not None]
    return statistics.mean(vals) if vals else None


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    if a is None or b is None or b == 0:
        return None
    return a / b
