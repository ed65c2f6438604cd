"""--workers: several proxy processes sharing the legs (SO_REUSEPORT)."""
from __future__ import annotations

import os
import signal
import socket

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase, TestCase

from sipproxy.app.workers import worker_argv
from tests.util import (child_environment, process_exited, reserve_port, run_process, sip_options, start_proxy,
                        temp_dir, twistd_command, wait_until)


class WorkerCommandTests(SynchronousTestCase):
    def test_worker_gets_the_parents_options_without_pidfile_logfile_or_workers(self) -> None:
        argv = ["/v/bin/twistd", "-n", "--pidfile=p.pid", "-l", "proxy.log", "sipproxy",
                "--legs", "udp:127.0.0.1:5060", "--workers", "3", "--secret-file=s"]
        child = worker_argv(argv, 2)
        self.assertEqual(child[1], "/v/bin/twistd")
        self.assertNotIn("proxy.log", child)
        self.assertNotIn("--pidfile=p.pid", child)
        self.assertNotIn("3", child)
        self.assertEqual(child[child.index("sipproxy") + 1:],
                         ["--legs", "udp:127.0.0.1:5060", "--secret-file=s", "--worker-index=2"])
        self.assertIn("--logfile=-", child)

    def test_workers_equals_form_is_dropped(self) -> None:
        child = worker_argv(["twistd", "sipproxy", "--workers=2", "--legs", "x"], 1)
        self.assertNotIn("--workers=2", child)


class WorkerOptionTests(SynchronousTestCase):
    def refused(self, *args: str) -> str:
        result = run_process([*twistd_command(), "-n", "--pidfile=", "sipproxy", *args], timeout=30,
                             env=child_environment())
        self.assertEqual(result.returncode, 2, result)
        self.assertEqual(len(result.stderr.strip().splitlines()), 1, result)
        return result.stderr

    def test_local_relay_is_refused(self) -> None:
        self.assertIn("--nathelper-ng", self.refused("--legs", "udp:127.0.0.1:5099", "--workers", "2",
                                                     "--nathelper"))

    def test_registrar_needs_a_shared_store(self) -> None:
        self.assertIn("--store", self.refused("--legs", "udp:127.0.0.1:5099", "--workers", "2", "--registrar"))

    def test_port_zero_is_refused(self) -> None:
        self.assertIn("explicit port", self.refused("--legs", "udp:127.0.0.1:0", "--workers", "2"))


def _worker_pids(parent: int) -> list[int]:
    """PIDs of the children of C{parent} (from /proc)."""
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == parent:
                children.append(int(entry))
    return children


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class WorkerProcessTests(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def start(self):
        self.port = None

        def legs():
            self.port = reserve_port("127.0.0.1")
            return [f"udp:127.0.0.1:{self.port}"]

        proxy = yield start_proxy(self, temp_dir(self), legs, args=["--workers", "2"])
        yield wait_until(lambda: proxy.log().count(f"listening on udp:127.0.0.1:{self.port}") >= 2, timeout=20,
                         what="the second worker to listen")
        return proxy

    @defer.inlineCallbacks
    def test_both_workers_answer_on_the_shared_port(self):
        proxy = yield self.start()
        workers = _worker_pids(proxy.pid)
        self.assertEqual(len(workers), 1)
        answered = 0
        # many source ports: the kernel spreads them over both processes
        for n in range(40):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.bind(("127.0.0.1", 0))
                sock.settimeout(2)
                local = sock.getsockname()[1]
                sock.sendto(sip_options("127.0.0.1", self.port, local, call_id=f"w{n}"), ("127.0.0.1", self.port))
                data, _ = sock.recvfrom(65535)
                answered += data.startswith(b"SIP/2.0 200 ")
        self.assertEqual(answered, 40)
        self.assertIn("worker 1:", proxy.log())

    @defer.inlineCallbacks
    def test_sigterm_to_the_parent_stops_every_worker(self):
        proxy = yield self.start()
        workers = _worker_pids(proxy.pid)
        os.kill(proxy.pid, signal.SIGTERM)
        yield wait_until(process_exited(proxy.proc), timeout=15, what="the parent to exit")
        yield wait_until(lambda: not any(_alive(pid) for pid in workers), timeout=10, what="the workers to exit")
        self.assertNotIn("Traceback", proxy.log())

    @defer.inlineCallbacks
    def test_a_killed_parent_takes_its_workers_along(self):
        proxy = yield self.start()
        workers = _worker_pids(proxy.pid)
        self.assertTrue(workers)
        os.kill(proxy.pid, signal.SIGKILL)
        yield wait_until(lambda: not any(_alive(pid) for pid in workers), timeout=10,
                         what="the workers to notice their parent died")
