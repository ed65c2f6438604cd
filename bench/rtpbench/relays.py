"""The relays under test: how each is started, and how a stream is set up
through it.

Two ways to set up a stream (A <-> B, A and B being rtpgen's sockets):
- ng (sipproxy --relay-only, rtpengine): `offer` with A's SDP, then `answer`
  with B's SDP, as a proxy does for an INVITE and its 200. The relay's SDPs
  say where B (offer) and A (answer) must send.
- stdin (relay_netsip.pl, relay_twisted.py): lines "STREAM i A B" in,
  lines "SEND i WHERE_A_SENDS WHERE_B_SENDS" out.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from . import ng
from .procs import BENCH_DIR, REPO_DIR, Child, bounded

from sipbench.netplan import free_port, require_loopback  # noqa: E402

RELAY_PORTS = (61000, 64999)  # above Linux's ephemeral range (rtpgen binds there)
ADDRESS = "127.0.0.1"

Endpoint = tuple[str, int]


@dataclass
class Options:
    twistd: str
    python: str
    pypy_twistd: Optional[str]
    rtpengine_threads: int = 0
    max_time_s: int = 900


@dataclass
class Started:
    child: Child
    targets: list[tuple[Endpoint, Endpoint]] = field(default_factory=list)  # (where A sends, where B sends)
    setup_s: float = 0.0
    banner: str = ""


class Relay:
    name = "?"
    description = ""
    via = "ng"  # or "stdin"

    def __init__(self, options: Options) -> None:
        self.options = options

    def missing(self) -> Optional[str]:
        return None

    def argv(self, ng_port: int) -> list[str]:
        raise NotImplementedError

    def env(self) -> Optional[dict]:
        return None

    def start(self, run_dir: Path, endpoints: list[tuple[Endpoint, Endpoint]]) -> Started:
        for a, b in endpoints:
            require_loopback(a[0])
            require_loopback(b[0])
        if self.via == "ng":
            return self._start_ng(run_dir, endpoints)
        return self._start_stdin(run_dir, endpoints)

    def _start_ng(self, run_dir: Path, endpoints: list[tuple[Endpoint, Endpoint]]) -> Started:
        ng_port = free_port((ADDRESS,), set())
        child = Child(self.name, self.argv(ng_port), run_dir / "relay.log", run_dir, wrapped=True, env=self.env())
        started = Started(child)
        client = ng.NgClient((ADDRESS, ng_port), timeout=0.5, tries=2)
        try:
            deadline = time.monotonic() + 30
            while not client.ping():
                if not child.running() or time.monotonic() > deadline:
                    child.stop()
                    raise RuntimeError(f"{self.name} did not answer ng ping: {child.tail()}")
                time.sleep(0.2)
            t0 = time.monotonic()
            client.timeout, client.tries = 2.0, 3
            for index, (a, b) in enumerate(endpoints):
                started.targets.append(ng.setup_stream(client, index, a, b))
            started.setup_s = time.monotonic() - t0
        except Exception:
            child.stop()
            raise
        finally:
            client.close()
        return started

    def _start_stdin(self, run_dir: Path, endpoints: list[tuple[Endpoint, Endpoint]]) -> Started:
        t0 = time.monotonic()
        child = Child(self.name, self.argv(0), run_dir / "relay.log", run_dir, pipe_stdin=True, read_stdout=True,
                      env=self.env())
        try:
            child.send("".join(f"STREAM {i} {a[0]} {a[1]} {b[0]} {b[1]}\n" for i, (a, b) in enumerate(endpoints))
                       + "END\n")
            started = Started(child)
            for _ in endpoints:
                words = child.expect("SEND", 60).split()
                started.targets.append(((words[2], int(words[3])), (words[4], int(words[5]))))
            started.banner = child.expect("READY", 10)
            started.setup_s = time.monotonic() - t0
        except Exception:
            child.stop()
            raise
        return started


def _ports() -> str:
    return f"{RELAY_PORTS[0]}-{RELAY_PORTS[1]}"


class SipproxyRelay(Relay):
    name = "sipproxy"
    description = "twistd -n sipproxy --relay-only --ng ... (LocalRelay behind NgServer), CPython"

    def _twistd(self) -> str:
        return self.options.twistd

    def missing(self) -> Optional[str]:
        try:
            done = subprocess.run([self._twistd(), "sipproxy", "--help"], cwd=REPO_DIR, env=self.env(),
                                  capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"cannot run {self._twistd()}: {e}"
        if done.returncode != 0 or "--relay-only" not in done.stdout:
            lines = (done.stderr or done.stdout).strip().splitlines()
            return f"twistd sipproxy --help failed: {lines[-1] if lines else done.returncode}"
        return None

    def argv(self, ng_port: int) -> list[str]:
        return bounded([self._twistd(), "-n", "--pidfile=", "sipproxy", "--relay-only",
                        "--ng", f"udp:{ADDRESS}:{ng_port}", "--rtp-ports", _ports()], self.options.max_time_s)


class SipproxyPypyRelay(SipproxyRelay):
    name = "sipproxy-pypy"
    description = "the same under PyPy (a pypy3 venv with Twisted; sipproxy from the work tree)"

    def _twistd(self) -> str:
        return self.options.pypy_twistd or "(no pypy venv)"

    def env(self) -> Optional[dict]:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO_DIR)
        return env

    def missing(self) -> Optional[str]:
        if not self.options.pypy_twistd:
            return "no PyPy venv with Twisted (see --pypy)"
        return super().missing()


class RtpengineRelay(Relay):
    name = "rtpengine"
    description = "rtpengine userspace only (--table=-1), default threads, ng offer/answer"

    def missing(self) -> Optional[str]:
        return None if shutil.which("rtpengine") else "rtpengine not installed (Debian rtpengine-daemon)"

    def argv(self, ng_port: int) -> list[str]:
        # --config-file=none: else /etc/rtpengine/rtpengine.conf adds a kernel
        # table, interface=any and HTTP/CLI listeners
        return bounded(["rtpengine", "--config-file=none", "--foreground", "--table=-1",
                        f"--interface={ADDRESS}", f"--listen-ng={ADDRESS}:{ng_port}",
                        f"--port-min={RELAY_PORTS[0]}", f"--port-max={RELAY_PORTS[1]}",
                        "--log-stderr", "--log-level=4"]
                       + ([f"--num-threads={self.options.rtpengine_threads}"] if self.options.rtpengine_threads else []),
                       self.options.max_time_s)


class NetsipRelay(Relay):
    name = "netsip"
    description = "Net::SIP::NATHelper::Local on its Eventloop (bench/relay_netsip.pl)"
    via = "stdin"

    def missing(self) -> Optional[str]:
        done = subprocess.run(["perl", "-MNet::SIP::NATHelper::Local", "-e", "1"], capture_output=True, text=True)
        return None if done.returncode == 0 else "perl Net::SIP not installed (Debian libnet-sip-perl)"

    def argv(self, ng_port: int) -> list[str]:
        return ["perl", str(BENCH_DIR / "relay_netsip.pl"), "--address", ADDRESS, "--ports", _ports(),
                "--max-time", str(self.options.max_time_s)]


class FloorRelay(Relay):
    name = "floor"
    description = "bare Twisted: two listenUDP sockets per stream forwarding to each other (bench/relay_twisted.py)"
    via = "stdin"

    def argv(self, ng_port: int) -> list[str]:
        return [self.options.python, str(BENCH_DIR / "relay_twisted.py"), "--address", ADDRESS,
                "--max-time", str(self.options.max_time_s)]


class FloorSendtoRelay(FloorRelay):
    name = "floor-sendto"
    description = "the floor forwarding with socket.sendto (no transport.write checks), as sipproxy does"
    flags = ["--sendto"]

    def argv(self, ng_port: int) -> list[str]:
        return super().argv(ng_port) + self.flags


class FloorReadOneRelay(FloorSendtoRelay):
    name = "floor-read1"
    description = "floor-sendto reading one datagram per epoll event (no EAGAIN exception per wakeup)"
    flags = ["--sendto", "--read-one"]


class FloorEpollRelay(FloorSendtoRelay):
    name = "floor-epoll"
    description = "the relay sockets in their own epoll set, one reactor reader, one read per ready socket"
    flags = ["--epoll"]


ALL = {cls.name: cls for cls in (SipproxyRelay, SipproxyPypyRelay, NetsipRelay, RtpengineRelay, FloorRelay,
                                 FloorSendtoRelay, FloorReadOneRelay, FloorEpollRelay)}
