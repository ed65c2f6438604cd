#!/usr/bin/env python3
"""Hostile TCP peers against a real ``twistd -n sipproxy``, on loopback.

Measures what issue 12 asks about, each attack bounded in time and count:

* ``never-reading``: four connections send OPTIONS for the proxy itself as
  fast as they can and never read the answers; one the proxy closes is
  opened again. Reports the proxy's resident
  memory (VmRSS, sampled every 0.25 s) during the attack and for a few
  seconds after the attacker closes, and whether the proxy closed the
  connection itself.
* ``slowloris``: N connections (default 200) each send one byte of an
  endless header per second. Reports how many the proxy accepted and how
  many are still open at the end, and the proxy's file descriptors.
* ``garbage``: connections sending binary junk without a Content-Length,
  opened one after another as fast as possible; ``garbage-framed``: the
  same junk with a Content-Length, so it reaches the parser. Reports the
  proxy's log lines.

    python bench/tcp_attacks.py                       # all three, default options
    python bench/tcp_attacks.py never-reading --seconds 20
    python bench/tcp_attacks.py slowloris -- --tcp-msg-read-timeout 5

Arguments after ``--`` go to ``twistd sipproxy``. Run it with the Python
whose twistd should run the proxy (PyPy: /work/venv-pypy/bin/python).
"""
from __future__ import annotations

import argparse
import errno
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- the proxy ------------------------------------------------------------------------------
class Proxy:
    """A ``twistd -n sipproxy`` with one TCP and one UDP leg on a free port."""

    def __init__(self, extra: list[str], workdir: str) -> None:
        self.port = _free_port()
        self.log_path = os.path.join(workdir, "twistd.log")
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        legs = f"tcp:127.0.0.1:{self.port},udp:127.0.0.1:{self.port}"
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        argv = [twistd, "-n", "--pidfile=", "sipproxy", "--legs", legs,
                "--secret-file", os.path.join(workdir, "secret"), *extra]
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(argv, cwd=workdir, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 30
        while f"listening on tcp:127.0.0.1:{self.port}" not in self.log_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit("twistd did not start:\n" + self.log_text()[-2000:])
            time.sleep(0.05)

    def log_text(self) -> str:
        with open(self.log_path, "r", errors="replace") as f:
            return f.read()

    def log_lines(self) -> int:
        return len(self.log_text().splitlines())

    def rss_kib(self) -> int:
        return _status_kib(self.proc.pid, "VmRSS")

    def fds(self) -> int:
        try:
            return len(os.listdir(f"/proc/{self.proc.pid}/fd"))
        except OSError:
            return -1

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.log.close()


def _free_port() -> int:
    for _ in range(50):
        with socket.socket() as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise SystemExit("no free port")


def _status_kib(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


def options_request(port: int, local: int, n: int) -> bytes:
    return (f"OPTIONS sip:127.0.0.1:{port};transport=tcp SIP/2.0\r\n"
            f"Via: SIP/2.0/TCP 127.0.0.1:{local};branch=z9hG4bK-attack-{n}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:attacker@127.0.0.1>;tag=a{n}\r\n"
            f"To: <sip:127.0.0.1:{port}>\r\nCall-ID: attack-{n}\r\nCSeq: {n + 1} OPTIONS\r\n"
            f"Content-Length: 0\r\n\r\n").encode()


def udp_options_answered(port: int, timeout: float = 3.0) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(timeout)
        local = sock.getsockname()[1]
        request = options_request(port, local, 0).replace(b"TCP", b"UDP").replace(b";transport=tcp", b"")
        sock.sendto(request, ("127.0.0.1", port))
        try:
            return sock.recv(65535).startswith(b"SIP/2.0 200")
        except OSError:
            return False


# -- attacks --------------------------------------------------------------------------------
def never_reading(proxy: Proxy, seconds: float, after: float, count: int = 4) -> dict:
    """C{count} connections that write requests and never read the
    answers; one the proxy closes is opened again at once, so the attack
    lasts C{seconds} whatever the proxy does."""
    sel = selectors.DefaultSelector()
    state: dict[socket.socket, list] = {}  # socket -> [local port, unsent octets]
    closed_by_proxy: list[float] = []
    sent = n = 0

    def open_one() -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fill up fast
        sock.connect(("127.0.0.1", proxy.port))
        sock.setblocking(False)
        state[sock] = [sock.getsockname()[1], b""]
        sel.register(sock, selectors.EVENT_WRITE)

    for _ in range(count):
        open_one()
    baseline = proxy.rss_kib()
    samples: list[tuple[float, int]] = []
    start = time.monotonic()
    next_sample = start
    while time.monotonic() - start < seconds:
        now = time.monotonic()
        if now >= next_sample:
            samples.append((round(now - start, 2), proxy.rss_kib()))
            next_sample += 0.25
        for key, _ in sel.select(0.05):
            sock = key.fileobj
            local, pending = state[sock]
            if not pending:
                pending = b"".join(options_request(proxy.port, local, n + i) for i in range(32))
                n += 32
            try:
                done = sock.send(pending)
            except BlockingIOError:
                done = 0
            except OSError as e:  # reset or broken pipe: the proxy closed us; come back
                if e.errno not in (errno.EPIPE, errno.ECONNRESET):
                    raise
                closed_by_proxy.append(round(time.monotonic() - start, 2))
                sel.unregister(sock)
                del state[sock]
                sock.close()
                open_one()
                continue
            sent += done
            state[sock][1] = pending[done:]
    for sock in list(state):
        sel.unregister(sock)
        sock.close()
    closed_at = time.monotonic()
    while time.monotonic() - closed_at < after:
        samples.append((round(time.monotonic() - start, 2), proxy.rss_kib()))
        time.sleep(0.25)
    during = [kib for t, kib in samples if t <= seconds]
    return {
        "attack": "never-reading", "seconds": seconds, "connections": count, "sent_octets": sent, "requests": n,
        "closed_by_proxy": len(closed_by_proxy), "first_close_after_s": closed_by_proxy[0] if closed_by_proxy else None,
        "rss_baseline_kib": baseline, "rss_peak_during_kib": max(during) if during else -1,
        "rss_peak_overall_kib": max(k for _, k in samples), "rss_end_kib": samples[-1][1],
        "rss_every_5s_kib": [k for t, k in samples if abs(t - round(t / 5) * 5) < 0.13],
        "udp_options_answered_after": udp_options_answered(proxy.port), "proxy_alive": proxy.proc.poll() is None,
    }


def slowloris(proxy: Proxy, count: int, seconds: float) -> dict:
    """C{count} connections trickling one header byte per second each."""
    socks: list[socket.socket] = []
    refused = 0
    fds_before = proxy.fds()
    for _ in range(count):
        sock = socket.socket()
        sock.settimeout(2)
        try:
            sock.connect(("127.0.0.1", proxy.port))
        except OSError:
            refused += 1
            sock.close()
            continue
        sock.setblocking(False)
        socks.append(sock)
    head = options_request(proxy.port, 1, 0)[:-4] + b"X-Slow: " + b"a" * 100000
    open_now = list(socks)
    timeline = []
    start = time.monotonic()
    tick = 0
    while time.monotonic() - start < seconds:
        still = []
        for sock in open_now:
            if _closed_by_peer(sock):
                sock.close()
                continue
            try:
                sock.send(head[tick:tick + 1])
                still.append(sock)
            except OSError:
                sock.close()
        open_now = still
        timeline.append((tick, len(open_now), proxy.fds()))
        tick += 1
        time.sleep(max(0.0, start + tick - time.monotonic()))  # the attack's own pace: 1 byte/s
    result = {
        "attack": "slowloris", "connections_tried": count, "connect_failed": refused,
        "open_at_start": len(socks), "open_at_end": len(open_now), "seconds": seconds,
        "proxy_fds_before": fds_before, "proxy_fds_peak": max(f for _, _, f in timeline),
        "proxy_fds_end": timeline[-1][2],
        "open_every_5s": [(t, n) for t, n, _ in timeline if t % 5 == 0],
        "udp_options_answered_during": udp_options_answered(proxy.port),
    }
    for sock in open_now:
        sock.close()
    return result


def _closed_by_peer(sock: socket.socket) -> bool:
    """True if the proxy has closed (or reset) this connection: any
    pending answer is read and dropped."""
    try:
        data = sock.recv(65536)
    except BlockingIOError:
        return False
    except OSError:
        return True
    if data:
        return False
    return True


def garbage(proxy: Proxy, seconds: float, limit: int, framed: bool = False) -> dict:
    """Connections sending junk, one after another, for C{seconds}: junk
    the stream framing refuses, or (C{framed}) junk with a Content-Length
    that reaches the parser."""
    junk = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 garbage \xff\xfe\r\n"
    junk += b"Content-Length: 0\r\n\r\n" if framed else b"\r\n"
    lines_before = proxy.log_lines()
    start = time.monotonic()
    made = 0
    while time.monotonic() - start < seconds and made < limit:
        try:
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=2) as sock:
                sock.sendall(junk)
                sock.settimeout(2)
                try:
                    if not framed:
                        sock.recv(100)  # wait for the proxy's close
                except OSError:
                    pass
        except OSError:
            pass
        made += 1
    elapsed = time.monotonic() - start
    time.sleep(0.5)  # the last lines reach the log file
    lines = proxy.log_lines() - lines_before
    return {"attack": "garbage-framed" if framed else "garbage", "connections": made,
            "seconds": round(elapsed, 1), "log_lines": lines, "log_lines_per_connection": round(lines / max(made, 1), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("attacks", nargs="*", default=["never-reading", "slowloris", "garbage"],
                        choices=["never-reading", "slowloris", "garbage", "garbage-framed"])
    parser.add_argument("--seconds", type=float, default=None, help="length of each attack")
    parser.add_argument("--connections", type=int, default=None,
                        help="slowloris connections (200), never-reading connections (4)")
    parser.add_argument("--keep-log", default=None, help="copy the proxy's log to this file")
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    results = []
    for attack in args.attacks:
        with tempfile.TemporaryDirectory(prefix="tcp-attack-") as workdir:
            proxy = Proxy(extra, workdir)
            try:
                if attack == "never-reading":
                    results.append(never_reading(proxy, args.seconds or 20, after=4, count=args.connections or 4))
                elif attack == "slowloris":
                    results.append(slowloris(proxy, args.connections or 200, args.seconds or 40))
                else:
                    results.append(garbage(proxy, args.seconds or 20, limit=100000,
                                           framed=attack == "garbage-framed"))
                results[-1]["python"] = sys.implementation.name
                results[-1]["twistd_args"] = extra
            finally:
                proxy.stop()
                if args.keep_log:
                    import shutil

                    shutil.copy(proxy.log_path, args.keep_log)
        print(json.dumps(results[-1]), flush=True)


if __name__ == "__main__":
    main()
