"""Prove with a packet capture that the UAC and UAS only talk via the proxy.

sipp's -rsa sends the UAC's messages to the proxy, but nothing in sipp's own
statistics shows that the answers came back through it too: a proxy that
wrote a wrong Via could let the UAS answer the UAC directly, and the calls
would still succeed. So a short run (5 calls) is captured on lo with tshark
and every SIP message is classified by its endpoints. It also shows which
leg the proxy sent from, which tells whether a two-leg proxy really crosses
between its legs.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .netplan import Ports, Scenario, allocate_ports
from .peers import Peer
from .sipp import SippSettings
from .step import StepPlan, StepResult, run_step

VERIFY_CALLS = 5
MESSAGES_PER_CALL = 6  # INVITE 180 200 ACK BYE 200, each crossing two hops

Endpoint = tuple[str, int]


@dataclass
class PathCheck:
    proxy: str
    scenario: str
    calls_ok: int = 0
    via_proxy: int = 0
    direct: int = 0
    other: int = 0
    to_uas_from: dict[str, int] = field(default_factory=dict)  # proxy source IP -> count
    to_uac_from: dict[str, int] = field(default_factory=dict)
    first_call_flow: list[str] = field(default_factory=list)
    verdict: str = "ERROR"
    note: str = ""


@dataclass(frozen=True)
class _Message:
    source: Endpoint
    destination: Endpoint
    first_line: str


def _start_capture(scenario: Scenario, ports: Ports, pcap: Path, log: Path) -> subprocess.Popen:
    port_filter = " or ".join(f"port {p}" for p in (ports.proxy, ports.uac, ports.uas))
    argv = ["tshark", "-i", "lo", "-q", "-f", f"{scenario.transport} and ({port_filter})",
            "-w", str(pcap), "-a", "duration:120"]
    with open(log, "wb") as out:
        capture = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and capture.poll() is None:
        if "Capturing on" in log.read_text(errors="replace"):
            return capture
        time.sleep(0.1)
    capture.kill()
    capture.wait()
    raise RuntimeError(f"tshark did not start capturing: {log.read_text(errors='replace')[-300:]}")


def _stop_capture(capture: subprocess.Popen) -> None:
    time.sleep(0.5)  # let the last datagrams reach the capture
    capture.send_signal(signal.SIGINT)
    try:
        capture.wait(timeout=10)
    except subprocess.TimeoutExpired:
        capture.kill()
        capture.wait()


def _read_messages(scenario: Scenario, ports: Ports, pcap: Path) -> list[_Message]:
    """One entry per SIP message in the capture (a TCP segment may carry several)."""
    proto = scenario.transport
    decode_as = [arg for port in (ports.proxy, ports.uac, ports.uas)
                 for arg in ("-d", f"{proto}.port=={port},sip")]
    argv = (["tshark", "-r", str(pcap), *decode_as, "-Y", "sip", "-T", "fields",
             "-E", "separator=\t", "-E", "occurrence=a", "-E", "aggregator=|",
             "-e", "ip.src", "-e", f"{proto}.srcport", "-e", "ip.dst", "-e", f"{proto}.dstport",
             "-e", "sip.Request-Line", "-e", "sip.Status-Line"])
    output = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout
    messages = []
    for line in output.splitlines():
        src, sport, dst, dport, requests, statuses = (line.split("\t") + [""] * 6)[:6]
        for first_line in [text for text in (requests + "|" + statuses).split("|") if text]:
            messages.append(_Message((src, int(sport)), (dst, int(dport)), first_line))
    return messages


def _classify(check: PathCheck, scenario: Scenario, ports: Ports,
              messages: list[_Message]) -> None:
    uac: Endpoint = (scenario.uac_ip, ports.uac)
    uas: Endpoint = (scenario.uas_ip, ports.uas)
    legs = {(ip, ports.proxy) for ip in scenario.proxy_ips}
    to_uas, to_uac = Counter(), Counter()
    for message in messages:
        ends = {message.source, message.destination}
        if ends == {uac, uas}:
            check.direct += 1
        elif uac in ends and ends & legs:
            check.via_proxy += 1
            if message.destination == uac:
                to_uac[message.source[0]] += 1
        elif uas in ends and (ends - {uas}).pop()[0] in scenario.proxy_ips:
            # over TCP the proxy may connect to the UAS from any local port
            check.via_proxy += 1
            if message.destination == uas:
                to_uas[message.source[0]] += 1
        else:
            check.other += 1
    check.to_uas_from, check.to_uac_from = dict(to_uas), dict(to_uac)
    check.first_call_flow = [
        f"{m.source[0]}:{m.source[1]} -> {m.destination[0]}:{m.destination[1]}  {m.first_line}"
        for m in messages[:2 * MESSAGES_PER_CALL]
    ]


def _verdict(check: PathCheck, scenario: Scenario) -> None:
    expected = 2 * MESSAGES_PER_CALL * VERIFY_CALLS
    problems = []
    if check.calls_ok != VERIFY_CALLS:
        problems.append(f"{check.calls_ok}/{VERIFY_CALLS} calls ok")
    if check.direct:
        problems.append(f"{check.direct} messages went directly between UAC and UAS")
    if check.via_proxy != expected:
        problems.append(f"{check.via_proxy} messages via the proxy, expected {expected}")
    check.verdict = "FAIL" if problems else "OK"
    notes = problems
    if len(scenario.proxy_ips) > 1:
        crosses = (set(check.to_uas_from) == {scenario.uas_ip}
                   and set(check.to_uac_from) == {scenario.uac_ip})
        notes.append("crosses legs" if crosses else
                     f"does NOT cross legs (to UAS from {sorted(check.to_uas_from)}, "
                     f"to UAC from {sorted(check.to_uac_from)})")
    check.note = "; ".join(notes)


def check_path(peer: Peer, scenario: Scenario, settings: SippSettings,
               step_dir: Path) -> PathCheck:
    check = PathCheck(peer.name, scenario.name)
    step_dir.mkdir(parents=True, exist_ok=True)
    ports = allocate_ports(scenario)
    pcap = step_dir / "verify.pcapng"
    try:
        capture = _start_capture(scenario, ports, pcap, step_dir / "tshark.log")
    except (OSError, RuntimeError) as error:
        check.note = str(error)
        return check
    try:
        plan = StepPlan(peer.name, scenario, rate=VERIFY_CALLS, calls=VERIFY_CALLS, kind="verify")
        result: StepResult = run_step(peer, plan, settings, step_dir, ports)
    finally:
        _stop_capture(capture)
    check.calls_ok = result.ok
    try:
        messages = _read_messages(scenario, ports, pcap)
    except (OSError, subprocess.SubprocessError) as error:
        check.note = f"could not read the capture: {error}"
        return check
    _classify(check, scenario, ports, messages)
    _verdict(check, scenario)
    if result.verdict == "ERROR":
        check.verdict, check.note = "ERROR", result.reason
    return check
