#!/usr/bin/env python3
"""The process's memory under the 60 KB-key attack of issue 12.

Starts C{twistd -n sipproxy} (from this tree, or PYTHONPATH's) on two
loopback legs, sends COUNT OPTIONS over loopback UDP whose Contact, Request-URI
or fake Contact token is 60 KB (a new one each time, so every cache keyed
by them sees a new key), paced so the socket buffer keeps up, and prints the
proxy's resident memory (VmRSS) before and after, and its peak (VmHWM).

    python bench/attack_memory.py                 # 20,000 OPTIONS
    python bench/attack_memory.py --count 2000

Loopback only; the proxy is stopped by its PID at the end.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.test_cache_bounds import attack  # noqa: E402


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def memory(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS", "VmHWM")):
                name, value = line.split(":")
                out[name] = int(value.split()[0]) // 1024  # MiB
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--twistd", default=os.path.join(os.path.dirname(sys.executable), "twistd"))
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()
    port = free_port("127.0.0.1")
    workdir = tempfile.mkdtemp(prefix="sipproxy-attack-")
    env = dict(os.environ, PYTHONPATH=os.environ.get("PYTHONPATH", ROOT))
    proc = subprocess.Popen([args.twistd, "-n", "--pidfile=", "sipproxy", "--legs",
                             f"udp:127.0.0.1:{port},udp:127.0.0.2:{port}",
                             "--secret-file", os.path.join(workdir, "secret")],
                            cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + args.timeout
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        time.sleep(3)  # twistd start-up (a bench script, not a test)
        before = memory(proc.pid)
        kinds = ("contact", "uri", "token")
        for i in range(args.count):
            data = attack(i, kinds[i % 3]).replace(b"127.0.0.1:5060", f"127.0.0.1:{port}".encode())
            sock.sendto(data[:65000], ("127.0.0.1", port))
            if i % 50 == 49:
                time.sleep(0.05)
                try:
                    while True:
                        sock.recv(70000)
                except BlockingIOError:
                    pass
            if time.monotonic() > deadline:
                print(f"stopped after {i + 1} messages (--timeout)")
                break
        time.sleep(2)
        after = memory(proc.pid)
        print(f"proxy PID {proc.pid}, {args.count} OPTIONS with 60 KB fields: "
              f"VmRSS {before['VmRSS']} MiB before, {after['VmRSS']} MiB after; peak VmHWM {after['VmHWM']} MiB")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
