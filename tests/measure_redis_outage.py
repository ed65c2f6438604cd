"""Measure what phones see when Redis goes away under a registrar.

Not a unit test (it takes about 35 s of wall time): run it by hand::

    .venv/bin/python -m tests.measure_redis_outage [--mode stop|freeze] [--outage 10]

It starts redis-server (append-only file, fsync always) and
C{twistd -n sipproxy --registrar --store redis://...} on loopback, registers
50 phones, then sends one REGISTER refresh and one INVITE every 100 ms for
10 s, takes Redis away for C{--outage} seconds (C{stop}: SIGTERM and a
restart on the same data; C{freeze}: SIGSTOP/SIGCONT, so connections hang
instead of being refused), and goes on for 10 s after it is back. A phone
answers every INVITE it gets with 200. Then every phone queries its
binding. Prints, per phase, how requests ended (200, 503 with Retry-After,
other, no answer within 2 s), how long after Redis came back the first
request succeeded again, and how many bindings were lost.
"""
from __future__ import annotations

import argparse
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from typing import Any, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from sipproxy.sip.message import Response, parse  # noqa: E402

PHONES = 50
TICK = 0.1
ANSWER_WAIT = 2.0


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting for {what}")
        time.sleep(0.05)


def port_answers(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Phones:
    """50 phones on UDP sockets plus a caller; all SIP by hand."""

    def __init__(self, proxy: tuple[str, int]) -> None:
        self.proxy = proxy
        self.selector = selectors.DefaultSelector()
        self.phones = []
        for i in range(PHONES):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
            self.phones.append({"sock": sock, "user": f"u{i:02d}", "cseq": 0, "port": sock.getsockname()[1]})
            self.selector.register(sock, selectors.EVENT_READ, i)
        self.caller = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.caller.bind(("127.0.0.1", 0))
        self.caller.setblocking(False)
        self.selector.register(self.caller, selectors.EVENT_READ, "caller")
        self.pending: dict[str, dict] = {}  # call-id -> record
        self.done: list[dict] = []
        self.count = 0

    def _send(self, sock: socket.socket, text: str) -> None:
        sock.sendto(text.replace("\n", "\r\n").encode(), self.proxy)

    def register(self, i: int, phase: str, query: bool = False) -> None:
        phone = self.phones[i]
        phone["cseq"] += 1
        port, user = phone["port"], phone["user"]
        call_id = f"reg-{user}"
        branch = f"z9hG4bK-r{user}-{phone['cseq']}"
        contact = "" if query else f"Contact: <sip:{user}@127.0.0.1:{port}>\nExpires: 600\n"
        self._send(phone["sock"], f"REGISTER sip:office.test SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch={branch}\n"
                   f"Max-Forwards: 70\nFrom: <sip:{user}@office.test>;tag=t{user}\nTo: <sip:{user}@office.test>\n"
                   f"Call-ID: {call_id}\nCSeq: {phone['cseq']} REGISTER\n{contact}Content-Length: 0\n\n")
        self.pending[f"{call_id} {phone['cseq']}"] = {"kind": "query" if query else "register", "phase": phase,
                                                       "sent": time.monotonic(), "user": user}

    def invite(self, i: int, phase: str) -> None:
        self.count += 1
        user = self.phones[i]["user"]
        port = self.caller.getsockname()[1]
        call_id = f"call-{self.count}"
        self._send(self.caller, f"INVITE sip:{user}@office.test SIP/2.0\n"
                   f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-c{self.count}\nMax-Forwards: 70\n"
                   f"From: <sip:caller@example.org>;tag=c{self.count}\nTo: <sip:{user}@office.test>\n"
                   f"Call-ID: {call_id}\nCSeq: 1 INVITE\nContact: <sip:caller@127.0.0.1:{port}>\n"
                   f"Content-Length: 0\n\n")
        self.pending[f"{call_id} 1"] = {"kind": "invite", "phase": phase, "sent": time.monotonic(), "user": user}

    def poll(self, timeout: float) -> None:
        for key, _ in self.selector.select(timeout):
            sock = key.fileobj
            try:
                data, addr = sock.recvfrom(65535)  # type: ignore[union-attr]
            except BlockingIOError:
                continue
            message = parse(data)
            if isinstance(message, Response):
                if message.code < 200:
                    continue
                record = self.pending.pop(f"{message.call_id} {message.cseq[0]}", None)
                if record is not None:
                    record.update(code=message.code, retry_after=message.get("retry-after"),
                                  answered=time.monotonic(), contacts=message.get_all("contact"))
                    self.done.append(record)
                continue
            if message.method == "INVITE":  # a phone answers its call
                response = message.create_response(200, to_tag="ph")
                response.add("Contact", f"<sip:x@127.0.0.1:{sock.getsockname()[1]}>")  # type: ignore
                sock.sendto(bytes(response), addr)  # type: ignore[union-attr]

    def expire_pending(self) -> None:
        now = time.monotonic()
        for key in [k for k, r in self.pending.items() if now - r["sent"] > ANSWER_WAIT]:
            record = self.pending.pop(key)
            record.update(code=None, retry_after=None, answered=None)
            self.done.append(record)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["stop", "freeze"], default="stop")
    parser.add_argument("--outage", type=float, default=10.0)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="sipproxy-outage-")
    redis_port, sip_port = free_port(socket.SOCK_STREAM), free_port()
    redis_argv = ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--dir", work, "--save", "",
                  "--appendonly", "yes", "--appendfsync", "always", "--protected-mode", "no", "--loglevel", "warning"]
    procs: list[subprocess.Popen] = []

    def start(argv: list[str], name: str) -> subprocess.Popen:
        out = open(os.path.join(work, name + ".log"), "ab")
        proc = subprocess.Popen(argv, cwd=work, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "PYTHONPATH": ROOT})
        procs.append(proc)
        return proc

    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    try:
        redis = start(redis_argv, "redis")
        wait_for(lambda: port_answers(redis_port), 10, "redis")
        start([twistd, "-n", "--pidfile=", "sipproxy", "--legs", f"udp:127.0.0.1:{sip_port}", "--registrar",
                       "--domain", "office.test", "--store", f"redis://127.0.0.1:{redis_port}/0"], "twistd")
        wait_for(lambda: "listening on" in open(os.path.join(work, "twistd.log")).read(), 15, "twistd")
        phones = Phones(("127.0.0.1", sip_port))
        for i in range(PHONES):
            phones.register(i, "setup")
        end = time.monotonic() + 3
        while phones.pending and time.monotonic() < end:
            phones.poll(0.05)
        setup = Counter(r["code"] for r in phones.done)
        print(f"setup: {PHONES} phones registered: {dict(setup)}")
        phones.done.clear()

        timeline = {"before": 10.0, "outage": args.outage, "after": 10.0}
        t0 = time.monotonic()
        back_at: Optional[float] = None
        tick = 0
        phase = "before"
        outage_started = t0 + timeline["before"]
        outage_ended = outage_started + timeline["outage"]
        finish = outage_ended + timeline["after"]
        while time.monotonic() < finish:
            now = time.monotonic()
            if phase == "before" and now >= outage_started:
                phase = "outage"
                if args.mode == "stop":
                    redis.send_signal(signal.SIGTERM)
                    redis.wait(10)
                else:
                    redis.send_signal(signal.SIGSTOP)
            elif phase == "outage" and now >= outage_ended:
                phase = "after"
                if args.mode == "stop":
                    redis = start(redis_argv, "redis")
                    wait_for(lambda: port_answers(redis_port), 10, "redis restart")
                else:
                    redis.send_signal(signal.SIGCONT)
                back_at = time.monotonic()
            phones.register(tick % PHONES, phase)
            phones.invite((tick * 7) % PHONES, phase)
            tick += 1
            next_tick = t0 + tick * TICK
            while time.monotonic() < next_tick:
                phones.poll(max(0.0, next_tick - time.monotonic()))
            phones.expire_pending()
        end = time.monotonic() + ANSWER_WAIT + 0.5
        while phones.pending and time.monotonic() < end:
            phones.poll(0.05)
            phones.expire_pending()

        print(f"mode={args.mode} outage={args.outage:.0f}s, one REGISTER and one INVITE every {TICK * 1000:.0f} ms")
        for name in ("before", "outage", "after"):
            records = [r for r in phones.done if r["phase"] == name]
            for kind in ("register", "invite"):
                rs = [r for r in records if r["kind"] == kind]
                ok = sum(1 for r in rs if r["code"] == 200)
                r503 = sum(1 for r in rs if r["code"] == 503 and r["retry_after"])
                r500 = sum(1 for r in rs if r["code"] == 500)
                none = sum(1 for r in rs if r["code"] is None)
                other = len(rs) - ok - r503 - r500 - none
                waits = sorted(r["answered"] - r["sent"] for r in rs if r["answered"] is not None)
                p50 = waits[len(waits) // 2] * 1000 if waits else 0
                worst = waits[-1] * 1000 if waits else 0
                print(f"  {name:7s} {kind:8s} sent={len(rs):4d} 200={ok:4d} 503+Retry-After={r503:4d} 500={r500:3d} "
                      f"other={other:3d} no-answer={none:3d}  answer time p50={p50:.1f} ms max={worst:.1f} ms")
        retry_values = Counter(r["retry_after"] for r in phones.done if r["code"] == 503)
        print(f"  Retry-After values on 503: {dict(retry_values)}")
        if back_at is not None:
            later = sorted(r["sent"] for r in phones.done if r["phase"] == "after" and r["code"] == 200)
            first_fail_after = [r["sent"] for r in phones.done if r["phase"] == "after" and r["code"] != 200]
            if later:
                print(f"  first success {1000 * (later[0] - back_at):.0f} ms after Redis was back; "
                      f"failures after it was back: {len(first_fail_after)}")
        # every binding still there?
        phones.done.clear()
        for i in range(PHONES):
            phones.register(i, "check", query=True)
        end = time.monotonic() + 3
        while phones.pending and time.monotonic() < end:
            phones.poll(0.05)
        present = 0
        for r in phones.done:
            phone = next(p for p in phones.phones if p["user"] == r["user"])
            if r["code"] == 200 and any(f":{phone['port']}>" in c for c in r["contacts"]):
                present += 1
        print(f"  bindings after the run: {present}/{PHONES} present, lost={PHONES - present}")
        return 0 if present == PHONES else 1
    finally:
        for proc in procs:
            if proc.poll() is None:
                try:
                    os.kill(proc.pid, signal.SIGCONT)
                    os.kill(proc.pid, signal.SIGTERM)
                    proc.wait(5)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    os.kill(proc.pid, signal.SIGKILL)
        print(f"  logs in {work}")


if __name__ == "__main__":
    sys.exit(main())
