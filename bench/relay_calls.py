#!/usr/bin/env python3
"""100 sipp calls with media through `twistd sipproxy --nathelper`, watching
the relay's sockets: before, at the peak, and after (none may leak).

    python bench/relay_calls.py [--calls 100] [--rate 10]

The UAC (bench/sipp/uac_media.xml) follows the Record-Route set and plays
sipp's g711a.pcap; the UAS echoes RTP (-rtp_echo). The proxy runs on two
legs (127.0.0.1 and 127.0.0.2), so every call is relayed. Loopback only,
bounded in time; every process is stopped by its PID.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from tests.nat_util import process_udp_sockets  # noqa: E402

PCAP = "/usr/share/sip-tester/g711a.pcap"


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--rate", type=int, default=10, help="calls per second")
    parser.add_argument("--twistd", default=os.path.join(os.path.dirname(sys.executable), "twistd"))
    args = parser.parse_args()
    for program in ("sipp", args.twistd):
        if shutil.which(program) is None:
            print(f"skip: {program} is not installed")
            return 0
    if not os.path.exists(PCAP):
        print(f"skip: {PCAP} is missing (Debian's sip-tester ships it)")
        return 0
    work = tempfile.mkdtemp(prefix="relay-calls-")
    with open(os.path.join(HERE, "sipp", "uac_media.xml")) as f:
        scenario = f.read().replace("PCAP", PCAP)
    with open(os.path.join(work, "uac.xml"), "w") as f:
        f.write(scenario)
    port = free_port("127.0.0.1")
    low = 40000 + (os.getpid() % 50) * 200
    proxy = subprocess.Popen(
        [args.twistd, "-n", "--pidfile=", "sipproxy", "--legs", f"udp:127.0.0.1:{port},udp:127.0.0.2:{port}",
         "--nathelper", "--rtp-ports", f"{low}-{low + 1999}", "--secret-file", os.path.join(work, "secret")],
        cwd=work, stdout=open(os.path.join(work, "proxy.log"), "w"), stderr=subprocess.STDOUT)
    processes = [proxy]
    try:
        deadline = time.time() + 15
        while len(process_udp_sockets(proxy.pid)) < 2 and time.time() < deadline:
            time.sleep(0.1)
        before = len(process_udp_sockets(proxy.pid))
        uas_port, uac_port = free_port("127.0.0.2"), free_port("127.0.0.1")
        uas = subprocess.Popen(["sipp", "-sn", "uas", "-i", "127.0.0.2", "-p", str(uas_port), "-mi", "127.0.0.2",
                                "-mp", str(low + 4000), "-rtp_echo", "-nostdin", "-timeout", "120s"],
                               cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        processes.append(uas)
        time.sleep(0.5)
        uac = subprocess.Popen(["sipp", f"127.0.0.1:{port}", "-sf", "uac.xml", "-s", "uas", "-key", "uas",
                                f"127.0.0.2:{uas_port}", "-i", "127.0.0.1", "-p", str(uac_port), "-mi", "127.0.0.1",
                                "-mp", str(low + 5000), "-m", str(args.calls), "-r", str(args.rate),
                                "-l", str(args.calls), "-nostdin", "-timeout", "120s", "-trace_stat"],
                               cwd=work, stdout=open(os.path.join(work, "uac.txt"), "w"), stderr=subprocess.STDOUT)
        processes.append(uac)
        peak = before
        while uac.poll() is None:
            peak = max(peak, len(process_udp_sockets(proxy.pid)))
            time.sleep(0.25)
        time.sleep(3)  # the relay releases a session's ports 1 s after BYE
        after = len(process_udp_sockets(proxy.pid))
        stat = sorted(f for f in os.listdir(work) if f.endswith(".csv"))
        ok = failed = "?"
        if stat:
            with open(os.path.join(work, stat[-1])) as f:
                header, *rows = [line.strip().split(";") for line in f if line.strip()]
            ok = rows[-1][header.index("SuccessfulCall(C)")]
            failed = rows[-1][header.index("FailedCall(C)")]
        proxy.send_signal(signal.SIGTERM)
        proxy.wait(10)
        with open(os.path.join(work, "proxy.log")) as f:
            log = f.read()
        ended = re.findall(r"relay session ended.*?reason (\w+)", log)
        print(f"calls: {ok} succeeded, {failed} failed (of {args.calls} at {args.rate}/s)")
        print(f"relay UDP sockets of the proxy (its 2 SIP legs included): before={before} peak={peak} "
              f"after={after}")
        print(f"sessions ended: {len(ended)} ({', '.join(f'{r} {ended.count(r)}' for r in sorted(set(ended)))})")
        return 0 if after == before else 1
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
