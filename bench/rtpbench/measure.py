"""One measurement: fresh rtpgen sockets, a fresh relay with the streams set
up through it, a warm-up, one paced run, the relay's CPU around the run, the
UDP drop counters of both sides, and the relay stopped by PID."""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from .gen import Generator
from .procs import udp_drops
from .relays import Relay

MAX_LOSS = 0.001          # "loss-free": under 0.1 % lost
MIN_SENT_FRACTION = 0.97  # below this the generator could not keep pace: not a relay verdict


@dataclass
class Measurement:
    relay: str
    kind: str            # search, fixed, multi, ...
    round: int
    streams: int
    rate: int            # target relayed packets/s, both directions summed
    secs: float
    verdict: str = "ERROR"   # PASS, FAIL (loss), GEN (generator fell behind), ERROR
    reason: str = ""
    sent: int = 0
    received: int = 0
    loss_pct: Optional[float] = None
    relayed_pps: float = 0.0
    relay_cpu_s: Optional[float] = None
    relay_cpu_pct: Optional[float] = None
    cpu_s_per_mpkt: Optional[float] = None
    relay_rss_mb: float = 0.0
    gen_cpu_pct: Optional[float] = None
    drops_relay: Optional[int] = None
    drops_gen: Optional[int] = None
    lat_p50_us: Optional[float] = None
    lat_p99_us: Optional[float] = None
    lat_max_us: Optional[float] = None
    skipped: int = 0
    max_lag_ms: float = 0.0
    misrouted: int = 0
    warm: str = ""
    setup_s: float = 0.0
    banner: str = ""
    run_dir: str = ""
    generator: dict = field(default_factory=dict)

    def mark(self) -> str:
        return {"PASS": "✓", "FAIL": "✗", "GEN": "?", "ERROR": "!"}[self.verdict]


def measure(relay: Relay, binary: Path, run_dir: Path, *, kind: str, round_: int, streams: int, rate: int,
            secs: float, drain: float = 0.5, warmup: float = 0.5) -> Measurement:
    run_dir.mkdir(parents=True, exist_ok=True)
    m = Measurement(relay.name, kind, round_, streams, rate, secs, run_dir=str(run_dir))
    pps = rate / (2.0 * streams)
    warmup_pps = max(20.0, min(pps, 2000.0 / streams))
    gen = started = None
    try:
        gen = Generator(binary, run_dir, streams, pps, secs, drain=drain, warmup=warmup, warmup_pps=warmup_pps)
        started = relay.start(run_dir, [gen.endpoints(i) for i in range(streams)])
        m.setup_s, m.banner = round(started.setup_s, 2), started.banner
        ok, of = gen.go(started.targets)
        m.warm = f"{ok}/{of}"
        relay_inodes = started.child.socket_inodes()
        gen_inodes = gen.child.socket_inodes()
        drops_relay0, drops_gen0 = udp_drops(relay_inodes), udp_drops(gen_inodes)
        cpu0 = started.child.cpu_s()
        t0 = time.monotonic()
        gen.run()
        gen.wait_sent()
        res = gen.result()
        cpu1 = started.child.cpu_s()
        wall = time.monotonic() - t0
        m.drops_relay = udp_drops(relay_inodes) - drops_relay0
        m.drops_gen = udp_drops(gen_inodes) - drops_gen0
        m.relay_rss_mb = started.child.rss_mb()
        m.generator = res
        m.sent = res["sent_ab"] + res["sent_ba"]
        m.received = res["recv_ab"] + res["recv_ba"]
        m.skipped = res["skipped_ab"] + res["skipped_ba"]
        m.max_lag_ms = res["max_lag_ms"]
        m.misrouted = res["misrouted"] + res["foreign"]
        m.gen_cpu_pct = round(100 * res["gen_cpu_s"] / wall, 1)
        m.lat_p50_us, m.lat_p99_us, m.lat_max_us = res["lat_p50_us"], res["lat_p99_us"], res["lat_max_us"]
        m.relayed_pps = round(m.received / res["send_wall_s"], 1) if res["send_wall_s"] else 0.0
        if m.sent:
            m.loss_pct = round(100.0 * (m.sent - m.received) / m.sent, 4)
        if cpu0 is None or cpu1 is None:
            m.reason = f"relay died: {started.child.tail()}"
            return m
        m.relay_cpu_s = round(cpu1 - cpu0, 3)
        m.relay_cpu_pct = round(100 * m.relay_cpu_s / max(res["send_wall_s"], 0.001), 1)
        if m.received:
            m.cpu_s_per_mpkt = round(m.relay_cpu_s * 1e6 / m.received, 2)
        planned = rate * secs
        problems = []
        if ok < of:
            problems.append(f"warm-up reached {ok}/{of} directions")
        if m.misrouted:
            problems.append(f"{m.misrouted} packets arrived at the wrong endpoint")
        behind = m.sent < MIN_SENT_FRACTION * planned
        if behind:
            problems.append(f"generator sent only {m.sent / planned:.1%} of the planned packets")
        if m.loss_pct is None or m.loss_pct >= 100 * MAX_LOSS or ok < of or m.misrouted:
            m.verdict = "FAIL"  # loss is the relay's, whether or not rtpgen kept pace
            if m.loss_pct is not None and m.loss_pct >= 100 * MAX_LOSS:
                problems.insert(0, f"loss {m.loss_pct:.3f}%")
        elif behind:
            m.verdict = "GEN"  # no loss, but the planned rate was not offered: no verdict on the relay
        else:
            m.verdict = "PASS"
        m.reason = "; ".join(problems)
        return m
    except Exception as e:  # a relay that misbehaves is reported, not fatal
        m.reason = f"{type(e).__name__}: {e}"
        return m
    finally:
        if gen is not None:
            gen.finish()
        if started is not None:
            started.child.stop()
        (run_dir / "result.json").write_text(json.dumps(asdict(m), indent=2))
