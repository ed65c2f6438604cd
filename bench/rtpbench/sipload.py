"""Does SIP stay responsive while the relay is loaded?

One `twistd sipproxy --legs udp:127.0.0.1:P,udp:127.0.0.2:P --nathelper`
(the relay in the proxy's own process). The harness sets up N calls through
it with SDP (bench/rtpbench/sipcalls.py), then rtpgen sends RTP over those
calls' relay ports while sipp runs a modest call load through the same
proxy: `sipp -sn uac` (127.0.0.1) -> proxy -> `sipp -sn uas` (127.0.0.2),
sipp's built-in scenarios (their INVITE and 200 carry SDP, so every sipp
call also allocates relay ports; sipp itself sends no RTP).

The same is run without RTP (the N calls set up, no media), so the two
can be compared.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from . import sipcalls
from .gen import Generator
from .procs import Child, bounded, udp_drops

from sipbench import procfs  # noqa: E402
from sipbench.netplan import SCENARIOS, allocate_ports  # noqa: E402
from sipbench.sipp import SippSettings, read_stats, uac_command, uas_command, wait_bounded  # noqa: E402
from sipbench.step import wait_for_sockets  # noqa: E402

SCENARIO = SCENARIOS["udp2"]


@dataclass
class SipUnderLoad:
    label: str
    rtp_rate: int            # target relayed RTP packets/s (0: no RTP)
    streams: int
    sipp_rate: int
    sipp_calls: int
    verdict: str = "ERROR"
    reason: str = ""
    calls_set_up: int = 0
    setup_s: float = 0.0
    created: int = 0
    ok: int = 0
    failed: int = 0
    retr_uac: int = 0
    retr_uas: int = 0
    achieved_cps: float = 0.0
    call_length_ms: Optional[float] = None
    response_ms: Optional[float] = None
    proxy_cpu_pct: Optional[float] = None
    leg_drops: Optional[int] = None     # UDP drops at the proxy's SIP leg sockets
    relay_drops: Optional[int] = None   # at its relay sockets
    rtp_sent: int = 0
    rtp_received: int = 0
    rtp_loss_pct: Optional[float] = None
    rtp_lat_p99_us: Optional[float] = None
    rtp_cpu_window_s: float = 0.0
    run_dir: str = ""


def _ms(text: str) -> Optional[float]:
    """sipp's "HH:MM:SS:mmmmmm" durations to milliseconds."""
    try:
        parts = text.split(":")
        h, m, s = int(parts[0]), int(parts[1]), int(parts[2])
        frac = parts[3] if len(parts) > 3 else "0"
        return round((h * 3600 + m * 60 + s) * 1000 + int(frac) / 10 ** (len(frac) - 3), 3)
    except (ValueError, IndexError):
        return None


def _csv_field(path: Path, name: str) -> Optional[str]:
    try:
        rows = [line.rstrip("\n").split(";") for line in path.read_text().splitlines() if line.strip()]
    except OSError:
        return None
    if len(rows) < 2 or name not in rows[0]:
        return None
    return rows[-1][rows[0].index(name)]


def run(binary: Path, run_dir: Path, twistd: str, *, label: str, rtp_rate: int, streams: int, sipp_rate: int,
        sipp_calls: int, max_time_s: int = 600) -> SipUnderLoad:
    run_dir.mkdir(parents=True, exist_ok=True)
    r = SipUnderLoad(label, rtp_rate, streams, sipp_rate, sipp_calls, run_dir=str(run_dir))
    ports = allocate_ports(SCENARIO)
    settings = SippSettings()
    sipp_secs = sipp_calls / sipp_rate
    gen_secs = round(sipp_secs + 4, 1)
    legs = ",".join(f"udp:{ip}:{ports.proxy}" for ip in SCENARIO.proxy_ips)
    proxy = Child("sipproxy", bounded([twistd, "-n", "--pidfile=", "sipproxy", "--legs", legs, "--nathelper",
                                       "--rtp-ports", "61000-64999", "--secret-file", str(run_dir / "secret")],
                                      max_time_s), run_dir / "proxy.log", run_dir, wrapped=True)
    gen: Optional[Generator] = None
    uas: Optional[Child] = None
    try:
        if not wait_for_sockets(proxy, "udp", ports.proxy, len(SCENARIO.proxy_ips)):
            r.reason = f"proxy did not start: {proxy.tail()}"
            return r
        pps = max(rtp_rate, 1) / (2.0 * streams)
        gen = Generator(binary, run_dir, streams, pps, gen_secs, a_ip=SCENARIO.uac_ip, b_ip=SCENARIO.uas_ip,
                        warmup=0.5, warmup_pps=20)
        setup = sipcalls.setup_calls((SCENARIO.proxy_ips[0], ports.proxy), SCENARIO.uac_ip, SCENARIO.uas_ip,
                                     [gen.endpoints(i) for i in range(streams)])
        r.calls_set_up, r.setup_s = setup.established, round(setup.seconds, 2)
        if setup.established < streams:
            r.reason = f"only {setup.established}/{streams} calls set up"
            return r
        ok, of = gen.go([(c.a_send_to, c.b_send_to) for c in setup.calls])
        if ok < of:
            r.reason = f"RTP warm-up reached {ok}/{of} directions"
        uas_timeout = int(sipp_secs * 1.5 + 30)
        uas = Child("sipp-uas", uas_command(SCENARIO, ports, settings, uas_timeout) + ["-mp", str(ports.uas + 2)],
                    run_dir / "uas.out", run_dir)
        if not wait_for_sockets(uas, "udp", ports.uas, 1, timeout_s=10):
            r.reason = f"sipp UAS did not start: {uas.tail()}"
            return r
        proxy_inodes = proxy.socket_inodes()
        leg_inodes = {e.inode for e in procfs.read_sockets("udp")
                      if e.inode in proxy_inodes and e.local_port == ports.proxy}
        relay_inodes = proxy_inodes - leg_inodes
        legs0, relay0 = udp_drops(leg_inodes), udp_drops(relay_inodes)
        cpu0 = proxy.cpu_s()
        t0 = time.monotonic()
        if rtp_rate:
            gen.run()
            time.sleep(1.0)  # RTP first, then the calls
        uac_timeout = int(sipp_secs * 1.5 + settings.recv_timeout_s + 5)
        uac = Child("sipp-uac", uac_command(SCENARIO, ports, settings, sipp_rate, sipp_calls, uac_timeout)
                    + ["-mp", str(ports.uac + 2)], run_dir / "uac.out", run_dir)
        finished = wait_bounded(uac.popen, time.monotonic() + uac_timeout + 10)
        uac.stop()
        if rtp_rate:
            gen.wait_sent()
            res = gen.result()
            r.rtp_sent = res["sent_ab"] + res["sent_ba"]
            r.rtp_received = res["recv_ab"] + res["recv_ba"]
            if r.rtp_sent:
                r.rtp_loss_pct = round(100.0 * (r.rtp_sent - r.rtp_received) / r.rtp_sent, 4)
            r.rtp_lat_p99_us = res["lat_p99_us"]
        cpu1 = proxy.cpu_s()
        wall = time.monotonic() - t0
        r.rtp_cpu_window_s = round(wall, 2)
        r.leg_drops = udp_drops(leg_inodes) - legs0
        r.relay_drops = udp_drops(relay_inodes) - relay0
        if cpu0 is not None and cpu1 is not None:
            r.proxy_cpu_pct = round(100 * (cpu1 - cpu0) / wall, 1)
        uas.stop()
        uas = None
        stats, uas_stats = read_stats(run_dir / "uac.csv"), read_stats(run_dir / "uas.csv")
        if stats is None:
            r.reason = f"no sipp statistics (UAC exit {finished.returncode}): {(run_dir / 'uac.out').read_text()[-200:]}"
            return r
        r.created, r.ok, r.failed, r.retr_uac = stats.created, stats.successful, stats.failed, stats.retransmissions
        r.retr_uas = uas_stats.retransmissions if uas_stats else 0
        r.achieved_cps = round(stats.successful / stats.elapsed_s, 1) if stats.elapsed_s else 0.0
        r.call_length_ms = _ms(_csv_field(run_dir / "uac.csv", "CallLength(C)") or "")
        r.response_ms = _ms(_csv_field(run_dir / "uac.csv", "ResponseTime1(C)") or "")
        problems = [r.reason] if r.reason else []
        if r.failed or r.ok < sipp_calls:
            problems.append(f"{r.ok}/{sipp_calls} calls ok")
        if r.retr_uac + r.retr_uas:
            problems.append(f"{r.retr_uac + r.retr_uas} retransmissions")
        r.verdict = "PASS" if not problems else "FAIL"
        r.reason = "; ".join(problems)
        return r
    except Exception as e:
        r.reason = f"{type(e).__name__}: {e}"
        return r
    finally:
        if uas is not None:
            uas.stop()
        if gen is not None:
            gen.finish()
        proxy.stop()
        (run_dir / "result.json").write_text(json.dumps(asdict(r), indent=2))
