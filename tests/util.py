"""Helpers shared by the loopback, tap and interop tests.

Nothing here sleeps for wall-clock time: waiting is polling with
C{task.deferLater} under a deadline (L{wait_until}), and every subprocess
runs under a hard timeout and is killed by its PID.
"""
from __future__ import annotations

import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from typing import Any, Callable, Optional, Sequence

from twisted.internet import task
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial.unittest import FailTest, SkipTest

__all__ = [
    "REQUIRE_INTEROP",
    "ProcessResult",
    "ProxyProcess",
    "UDPProbe",
    "WaitTimeout",
    "file_contains",
    "has_ipv6",
    "interop_required",
    "process_exited",
    "program_missing",
    "require_program",
    "reserve_port",
    "run_process",
    "start_proxy",
    "start_process",
    "stop_process",
    "tcp_port_answers",
    "temp_dir",
    "twistd_command",
    "port_bound",
    "wait_until",
]

#: When this environment variable is C{1}, a missing interop peer fails the
#: test instead of skipping it (CI sets it).
REQUIRE_INTEROP = "SIPPROXY_REQUIRE_INTEROP"

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- external programs ------------------------------------------------------------------
def interop_required() -> bool:
    """True when the environment demands that interop peers be present."""
    return os.environ.get(REQUIRE_INTEROP, "") == "1"


def program_missing(name: str) -> Optional[str]:
    """Why the program C{name} cannot be used (a skip reason), or None when
    it is on C{PATH}."""
    if shutil.which(name) is None:
        return f"{name} is not installed (not found on PATH)"
    return None


def require_program(name: str) -> str:
    """The path of C{name}; raises C{SkipTest} when it is missing, or
    C{FailTest} when C{SIPPROXY_REQUIRE_INTEROP=1} (a missing peer in CI is
    a failure, not a skip)."""
    reason = program_missing(name)
    if reason is None:
        return shutil.which(name)  # type: ignore[return-value]
    if interop_required():
        raise FailTest(f"{reason}, and {REQUIRE_INTEROP}=1 requires it")
    raise SkipTest(reason)


def twistd_command() -> list[str]:
    """How to run the twistd of the Python running the tests."""
    script = os.path.join(os.path.dirname(sys.executable), "twistd")
    if os.path.exists(script):
        return [script]
    found = shutil.which("twistd")
    if found is None:
        raise SkipTest("twistd is not installed next to the test interpreter nor on PATH")
    return [found]


def system_program_environment() -> dict[str, str]:
    """The environment for programs written in the system's own Python
    (fail2ban-regex): without the test interpreter's module path, which
    C{trial -j} hands its workers as C{PYTHONPATH} (under PyPy, PyPy's
    standard library then breaks Debian's CPython)."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def child_environment(**extra: str) -> dict[str, str]:
    """The environment for child Python processes: this checkout first on
    C{sys.path}, so they run the code under test."""
    env = dict(os.environ)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = PROJECT_ROOT + (os.pathsep + path if path else "")
    env.update(extra)
    return env


# -- subprocesses -------------------------------------------------------------------------
class ProcessResult:
    """What a finished (or killed) subprocess left behind."""

    def __init__(self, argv: Sequence[str], returncode: Optional[int], stdout: str, stderr: str,
                 timed_out: bool) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.timed_out = timed_out

    def __repr__(self) -> str:
        return (f"<ProcessResult {' '.join(self.argv)!r} rc={self.returncode} timed_out={self.timed_out}"
                f"\n--- stdout ---\n{self.stdout[-2000:]}\n--- stderr ---\n{self.stderr[-2000:]}>")


def run_process(argv: Sequence[str], timeout: float, cwd: Optional[str] = None,
                env: Optional[dict[str, str]] = None, input: Optional[str] = None) -> ProcessResult:
    """Run C{argv} to completion, killing it (by PID) after C{timeout}
    seconds; capture its output as text."""
    proc = subprocess.Popen(
        list(argv), cwd=cwd, env=env, text=True, start_new_session=True,
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        stdout, stderr = proc.communicate(input, timeout=timeout)
        return ProcessResult(argv, proc.returncode, stdout, stderr, False)
    except subprocess.TimeoutExpired:
        _kill(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        return ProcessResult(argv, proc.returncode, stdout, stderr, True)


def start_process(testcase: Any, argv: Sequence[str], cwd: str, name: str,
                  env: Optional[dict[str, str]] = None) -> subprocess.Popen:
    """Start C{argv} in the background with its output in C{cwd/name.out}
    and C{cwd/name.err}; the test's cleanup kills it by PID."""
    out = open(os.path.join(cwd, name + ".out"), "wb")
    err = open(os.path.join(cwd, name + ".err"), "wb")
    try:
        proc = subprocess.Popen(list(argv), cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                start_new_session=True)
    finally:
        out.close()
        err.close()
    testcase.addCleanup(stop_process, proc)
    return proc


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def stop_process(proc: subprocess.Popen, timeout: float = 5.0) -> Optional[int]:
    """SIGTERM C{proc} by its PID, SIGKILL it if it has not exited after
    C{timeout} seconds; its exit status. Then SIGKILL whatever is left in
    its process group (L{start_process} makes it a group's leader): a
    peer's workers (Kamailio forks several) outlive a leader that was
    killed, or that died without ending them, and were seen still running
    hours after their test."""
    if proc.poll() is None:
        _kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # no group of that ID (not a leader): nothing to do
    except (ProcessLookupError, PermissionError):
        pass
    return proc.returncode


def temp_dir(testcase: Any) -> str:
    """A fresh directory, removed in the test's cleanup (trial's C{mktemp}
    is relative to the working directory, which under pytest is the
    checkout)."""
    path = tempfile.mkdtemp(prefix="sipproxy-test-")
    testcase.addCleanup(shutil.rmtree, path, True)
    return path


def count_urandom_reads(testcase: Any) -> list[int]:
    """Make C{os.urandom}, and the alias C{random} keeps of it (what
    C{secrets} and C{SystemRandom} read), record the size of each read in
    the list returned, for the test's duration."""
    import random

    reads: list[int] = []
    real = os.urandom

    def counting(size: int) -> bytes:
        reads.append(size)
        return real(size)

    testcase.patch(os, "urandom", counting)
    testcase.patch(random, "_urandom", counting)
    return reads


def read_text(path: str) -> str:
    """The content of C{path}, or an empty string if it does not exist."""
    try:
        with open(path, "r", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


# -- waiting ------------------------------------------------------------------------------
class WaitTimeout(Exception):
    """L{wait_until} gave up."""


def wait_until(predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.02,
               what: Optional[str] = None, clock: Any = None) -> Deferred:
    """A Deferred that fires with C{predicate()}'s first true value, polling
    every C{interval} seconds; it fails with L{WaitTimeout} after C{timeout}
    seconds, or with whatever C{predicate} raises."""
    if clock is None:
        from twisted.internet import reactor as clock
    deadline = clock.seconds() + timeout
    pending: list[Deferred] = []

    def cancel(_: Deferred) -> None:
        for d in pending:
            d.cancel()

    result: Deferred = Deferred(cancel)

    def poll() -> None:
        pending.clear()
        if result.called:
            return
        try:
            value = predicate()
        except BaseException:
            result.errback()
            return
        if value:
            result.callback(value)
        elif clock.seconds() >= deadline:
            result.errback(WaitTimeout(f"gave up after {timeout} s waiting for {what or predicate!r}"))
        else:
            later = task.deferLater(clock, interval, poll)
            later.addErrback(lambda f: None)  # cancelled with the result
            pending.append(later)

    poll()
    return result


def process_exited(proc: subprocess.Popen) -> Callable[[], bool]:
    """A predicate: C{proc} has exited."""
    return lambda: proc.poll() is not None


def file_contains(path: str, text: str) -> Callable[[], bool]:
    """A predicate: the file at C{path} exists and contains C{text}."""
    return lambda: text in read_text(path)


def tcp_port_answers(host: str, port: int) -> Callable[[], bool]:
    """A predicate: something accepts TCP connections on C{host:port}."""

    def check() -> bool:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            return sock.connect_ex((host, port)) == 0

    return check


def port_bound(host: str, port: int, kind: int = socket.SOCK_DGRAM) -> Callable[[], bool]:
    """A predicate: some process has bound C{host:port} (UDP, or TCP with
    C{kind=SOCK_STREAM}); for peers one should not send probes to."""

    def check() -> bool:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, kind) as sock:
            try:
                sock.bind((host, port))
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    return True
                raise
            return False

    return check


class UDPProbe:
    """A predicate that sends C{payload} to C{host:port} on every poll
    until an answer comes back; returns the answer (bytes).

    Call L{close} when done (or pass the test case to have it closed in
    cleanup).
    """

    def __init__(self, host: str, port: int, payload: Callable[[int], bytes], testcase: Any = None) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.setblocking(False)
        self.local_port = self.sock.getsockname()[1]
        self.target = (host, port)
        self.payload = payload
        self.sent = 0
        if testcase is not None:
            testcase.addCleanup(self.close)

    def __call__(self) -> Optional[bytes]:
        try:
            data, _ = self.sock.recvfrom(65535)
            return data
        except (BlockingIOError, ConnectionRefusedError):
            pass  # nothing yet, or the last probe found the port closed
        self.sent += 1
        self.sock.sendto(self.payload(self.local_port), self.target)
        return None

    def close(self) -> None:
        self.sock.close()


# -- the proxy under test ------------------------------------------------------------
class ProxyProcess:
    """A running C{twistd -n sipproxy}: its process, legs and output."""

    def __init__(self, proc: subprocess.Popen, cwd: str, name: str, legs: Sequence[str]) -> None:
        self.proc = proc
        self.cwd = cwd
        self.legs = list(legs)
        self.out_path = os.path.join(cwd, name + ".out")
        self.err_path = os.path.join(cwd, name + ".err")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        """What twistd logged so far (C{-n} logs to standard output)."""
        return read_text(self.out_path)

    def errors(self) -> str:
        return read_text(self.err_path)

    def describe(self) -> str:
        return (f"twistd pid {self.pid} rc={self.proc.returncode} legs={self.legs}\n"
                f"--- log ---\n{self.log()[-3000:]}\n--- stderr ---\n{self.errors()[-2000:]}")


@inlineCallbacks
def start_proxy(testcase: Any, cwd: str, make_legs: Callable[[], Sequence[str]], args: Sequence[str] = (),
                timeout: float = 15.0, attempts: int = 3, name: str = "twistd") -> Any:
    """Start C{twistd -n --pidfile= sipproxy --legs ...} in C{cwd}; fires with
    a L{ProxyProcess} once every leg is listening. C{make_legs} gives the leg
    specifications (with ports from L{reserve_port}); it is called again
    for a new try when a port was taken meanwhile. The test's cleanup
    kills the process by its PID."""
    for attempt in range(attempts):
        legs = list(make_legs())
        label = f"{name}-{attempt}"
        argv = [*twistd_command(), "-n", "--pidfile=", "sipproxy", "--legs", ",".join(legs), *args]
        proc = start_process(testcase, argv, cwd, label, env=child_environment())
        proxy = ProxyProcess(proc, cwd, label, legs)
        wanted = [f"listening on {leg}" for leg in legs]
        try:
            yield wait_until(lambda: proc.poll() is not None or all(w in proxy.log() for w in wanted),
                             timeout, what=f"twistd to listen on {legs}")
        except WaitTimeout:
            stop_process(proc)
            raise AssertionError("twistd did not start in time\n" + proxy.describe())
        if proc.poll() is None:
            return proxy
        if "already in use" in proxy.errors():
            continue  # lost the race for a port: new ports, new try
        raise AssertionError("twistd exited at start\n" + proxy.describe())
    raise AssertionError(f"no free ports for twistd after {attempts} tries")


# -- ports and addresses ---------------------------------------------------------------
def reserve_port(host: str = "127.0.0.1", kind: int = socket.SOCK_DGRAM, also: Sequence[str] = ()) -> int:
    """A port the kernel just handed out on C{host} (bound to port 0, read
    back, released), free for both UDP and TCP on C{host} and on every
    address in C{also}. A child process may still lose the race for it:
    callers retry on a conflict."""
    for _ in range(50):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, kind) as sock:
            sock.bind((host, 0))
            port = sock.getsockname()[1]
        if all(_free(h, port) for h in (host, *also)):
            return port
    raise RuntimeError(f"no port free on {host} and {list(also)}")


def _free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(family, kind) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                return False
    return True


_IPV6: Optional[bool] = None


def has_ipv6() -> bool:
    """True when this host can bind UDP and TCP sockets on ::1."""
    global _IPV6
    if _IPV6 is None:
        try:
            for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                with socket.socket(socket.AF_INET6, kind) as sock:
                    sock.bind(("::1", 0))
            _IPV6 = True
        except (OSError, AttributeError):
            _IPV6 = False
    return _IPV6


def sip_options(host: str, port: int, local_port: int, target: Optional[str] = None, proto: str = "UDP",
                call_id: str = "probe-1", extra: str = "") -> bytes:
    """An OPTIONS request from C{host:local_port} to C{target} (default:
    C{host:port} itself)."""
    hostport = f"[{host}]" if ":" in host else host
    target = target or f"sip:{hostport}:{port}"
    return (
        f"OPTIONS {target} SIP/2.0\r\n"
        f"Via: SIP/2.0/{proto} {hostport}:{local_port};branch=z9hG4bK-{call_id};rport\r\n"
        f"Max-Forwards: 70\r\n"
        f"From: <sip:tester@{hostport}>;tag=t-{call_id}\r\n"
        f"To: <{target}>\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: 1 OPTIONS\r\n"
        f"{extra}"
        f"Content-Length: 0\r\n\r\n"
    ).encode()
