"""The proxies under test: how to start each one, and whether it can run here.

Each peer builds a foreground command for a scenario and its ports. A peer
that is not installed is skipped with one line saying why, so the harness
still runs on a machine that lacks, say, Kamailio.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .netplan import Ports, Scenario, proxy_legs

BENCH_DIR = Path(__file__).resolve().parent.parent
REPO_DIR = BENCH_DIR.parent


@dataclass(frozen=True)
class PeerOptions:
    """Command-line choices that shape the proxy commands."""

    twistd: str
    pypy_twistd: str  # the twistd of a PyPy venv with sipproxy installed
    sipproxy_cmd: Optional[str]  # template with {twistd} {legs} {port} {workers}
    floor_python: str
    kamailio: str
    workers: Optional[int]
    max_time_s: int  # self-termination bound for proxies that support one


def _first_line_of_failure(argv: list[str]) -> Optional[str]:
    """Run a quick probe command; None if it succeeds, else its last output line."""
    try:
        done = subprocess.run(argv, cwd=REPO_DIR, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        return str(error)
    if done.returncode == 0:
        return None
    lines = (done.stderr or done.stdout).strip().splitlines()
    return lines[-1] if lines else f"exit status {done.returncode}"


def twistd_beside(python: str) -> str:
    """The twistd installed with the interpreter C{python} (so sipproxy
    runs on that interpreter), else the one on PATH."""
    beside = Path(python).parent / "twistd"
    return str(beside) if beside.exists() else (shutil.which("twistd") or "twistd")


def bounded(argv: list[str], seconds: int) -> list[str]:
    """Wrap a command that has no self-termination bound of its own in coreutils timeout.

    Should the harness itself be killed (SIGKILL leaves no chance to clean
    up), the proxy still goes away after `seconds`. The wrapper is the root of
    the process tree; step.py leaves it out of the memory figures.
    """
    return ["timeout", "--kill-after=5", str(seconds)] + argv


class Peer:
    """Base class: a name, an availability check and a command builder."""

    name = "?"
    wrapped = False  # True if command() puts `timeout` in front of the proxy
    fixed_sipp_ports = False  # True if it relays to the step's sipp ports, not by Request-URI

    def __init__(self, options: PeerOptions) -> None:
        self.options = options

    def missing(self, scenario: Scenario) -> Optional[str]:
        """Why this peer cannot run the scenario here, or None if it can."""
        raise NotImplementedError

    def command(self, scenario: Scenario, ports: Ports, run_dir: Path) -> list[str]:
        raise NotImplementedError


class SipproxyPeer(Peer):
    """The project itself, as `twistd -n sipproxy --legs ...` (or a custom command)."""

    name = "sipproxy"
    wrapped = True
    DEFAULT_TEMPLATE = "{twistd} -n --pidfile= sipproxy --legs {legs}"

    def _template(self) -> str:
        template = self.options.sipproxy_cmd or self.DEFAULT_TEMPLATE
        if self.options.workers and "{workers}" not in template:
            template += " --workers {workers}"
        return template

    def twistd(self) -> str:
        return self.options.twistd

    def command(self, scenario: Scenario, ports: Ports, run_dir: Path) -> list[str]:
        text = self._template().format(
            twistd=self.twistd(), legs=",".join(proxy_legs(scenario, ports.proxy)),
            port=ports.proxy, workers=self.options.workers or "")
        return bounded(shlex.split(text), self.options.max_time_s)

    def missing(self, scenario: Scenario) -> Optional[str]:
        if self.options.sipproxy_cmd:
            program = shlex.split(self.options.sipproxy_cmd.format(
                twistd=self.twistd(), legs="", port=0, workers=""))[0]
            return None if shutil.which(program) else f"{program} not found"
        if not shutil.which(self.twistd()):
            return f"twistd not found at {self.twistd()} (use --twistd)"
        failure = _first_line_of_failure([self.twistd(), "sipproxy", "--help"])
        return f"`twistd sipproxy --help` fails: {failure}" if failure else None


class SipproxyPypyPeer(SipproxyPeer):
    """The project on PyPy: the twistd of a PyPy venv that has sipproxy installed."""

    name = "sipproxy-pypy"

    def twistd(self) -> str:
        return self.options.pypy_twistd

    def missing(self, scenario: Scenario) -> Optional[str]:
        if not Path(self.twistd()).exists():
            return (f"no PyPy twistd at {self.twistd()}: make one with `pypy3 -m venv .venv-pypy && "
                    f".venv-pypy/bin/pip install -e . --config-settings editable_mode=compat`, "
                    f"or pass --pypy-twistd")
        return super().missing(scenario)


class NetsipPeer(Peer):
    """Perl Net::SIP's stateless proxy (bench/netsip_proxy.pl), one process."""

    name = "netsip"

    def command(self, scenario: Scenario, ports: Ports, run_dir: Path) -> list[str]:
        return (["perl", str(BENCH_DIR / "netsip_proxy.pl"),
                 "--max-time", str(self.options.max_time_s)]
                + proxy_legs(scenario, ports.proxy))

    def missing(self, scenario: Scenario) -> Optional[str]:
        if not shutil.which("perl"):
            return "perl not found"
        failure = _first_line_of_failure(["perl", "-MNet::SIP", "-e", "1"])
        return f"Net::SIP not installed (libnet-sip-perl): {failure}" if failure else None


class KamailioPeer(Peer):
    """Kamailio with bench/kamailio.cfg: stateless forward(), no tm, no DB."""

    name = "kamailio"
    wrapped = True

    def workers(self) -> int:
        return self.options.workers or 1

    def command(self, scenario: Scenario, ports: Ports, run_dir: Path) -> list[str]:
        kamailio_run_dir = run_dir / "kamailio-run"
        kamailio_run_dir.mkdir(parents=True, exist_ok=True)
        argv = [self.options.kamailio, "-f", str(BENCH_DIR / "kamailio.cfg"),
                "-DD", "-E", "-S", "-Y", str(kamailio_run_dir),
                "-n", str(self.workers())]
        argv += [arg for leg in proxy_legs(scenario, ports.proxy) for arg in ("-l", leg)]
        if scenario.transport == "tcp":
            argv += ["-N", str(self.workers()), "-A", "TCP_ONLY"]
        else:
            argv += ["-T"]
        if len(scenario.proxy_ips) > 1:
            argv += ["-A", "MULTI_LEG"]
        return bounded(argv, self.options.max_time_s)

    def missing(self, scenario: Scenario) -> Optional[str]:
        if not shutil.which(self.options.kamailio):
            return f"{self.options.kamailio} not found (apt-get install kamailio)"
        failure = _first_line_of_failure(
            [self.options.kamailio, "-c", "-f", str(BENCH_DIR / "kamailio.cfg"),
             "-l", "udp:127.0.0.1:5999"])
        return f"kamailio -c rejects bench/kamailio.cfg: {failure}" if failure else None


class FloorPeer(Peer):
    """bench/floor_relay.py: Twisted relaying bytes, the cost no proxy can beat."""

    name = "floor"
    fixed_sipp_ports = True

    def command(self, scenario: Scenario, ports: Ports, run_dir: Path) -> list[str]:
        return ([self.options.floor_python, str(BENCH_DIR / "floor_relay.py"),
                 "--uac", f"{scenario.uac_ip}:{ports.uac}",
                 "--uas", f"{scenario.uas_ip}:{ports.uas}",
                 "--max-time", str(self.options.max_time_s)]
                + [f"{ip}:{ports.proxy}" for ip in scenario.proxy_ips])

    def missing(self, scenario: Scenario) -> Optional[str]:
        if scenario.transport != "udp":
            return "the floor is a UDP relay; no TCP floor"
        failure = _first_line_of_failure([self.options.floor_python, "-c", "import twisted"])
        return f"{self.options.floor_python} cannot import twisted: {failure}" if failure else None


PEER_CLASSES = {cls.name: cls for cls in (SipproxyPeer, SipproxyPypyPeer, NetsipPeer,
                                          KamailioPeer, FloorPeer)}
