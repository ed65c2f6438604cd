"""C{twistd --uid/--gid}: a real twistd started as root drops to C{nobody}
after binding, with an SQLite store and with C{--workers}.

Both were broken before (issue 15): the start-up made the SQLite file as
root, so every REGISTER got 503 once root was dropped; and the workers
were started after the drop, so they could read neither the secret file
nor share root's ports. These tests need root (they are skipped, with the
reason, otherwise); the UAs and sipproxy-ctl run as the test's user.
"""
from __future__ import annotations

import os
import pwd
import re
import sys
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest

from tests.uapeer import start_ua, wait_exit
from tests.util import (ProcessResult, child_environment, process_exited, read_text, reserve_port, run_process,
                        start_process, temp_dir, twistd_command, wait_until)

DOMAIN = "office.test"


def _uids(pid: int) -> list[int]:
    """Real, effective, saved and filesystem uid of a process."""
    for line in read_text(f"/proc/{pid}/status").splitlines():
        if line.startswith("Uid:"):
            return [int(x) for x in line.split()[1:]]
    raise AssertionError(f"no process {pid}")


def ctl(cwd: str, *args: str) -> ProcessResult:
    return run_process([sys.executable, "-m", "sipproxy.app.ctl", *args], 20, cwd=cwd, env=child_environment())


class DropPrivilegesTests(unittest.TestCase):
    timeout = 90

    def setUp(self) -> None:
        if os.geteuid() != 0:
            raise unittest.SkipTest("needs root: twistd must start as root to drop to another user")
        try:
            self.user = pwd.getpwnam("nobody")
        except KeyError:
            raise unittest.SkipTest("no user 'nobody' to drop to")
        self.cwd = temp_dir(self)
        os.chown(self.cwd, self.user.pw_uid, self.user.pw_gid)  # as systemd's install -d -o does
        os.chmod(self.cwd, 0o755)

    def twistd(self, name: str, *args: str) -> Any:
        argv = [*twistd_command(), "-n", "--pidfile=", "--uid", str(self.user.pw_uid), "--gid",
                str(self.user.pw_gid), "sipproxy", *args]
        proc = start_process(self, argv, self.cwd, name, env=child_environment())
        self.out = os.path.join(self.cwd, name + ".out")
        return proc

    def log(self) -> str:
        return read_text(self.out)

    @inlineCallbacks
    def started(self, proc: Any, count: int = 1) -> Any:
        yield wait_until(lambda: proc.poll() is not None or self.log().count("set uid/gid") >= count, 20,
                         what="twistd to drop root")
        self.assertIsNone(proc.poll(), self.log())

    @inlineCallbacks
    def register(self, port: int, user: str) -> Any:
        phone = start_ua(self, self.cwd, user, "register", "--leg", "udp:127.0.0.1:0", "--registrar",
                         f"sip:127.0.0.1:{port}", "--from", f"sip:{user}@{DOMAIN}", "--expires", "300",
                         "--timeout", "15")
        rc = yield wait_exit(phone, 20)
        self.assertEqual(rc, 0, phone.describe() + self.log()[-3000:])
        self.assertEqual(len(phone.events("registered")), 1, phone.describe())

    @inlineCallbacks
    def test_sqlite_store_made_before_the_drop_stays_writable(self) -> Any:
        port = reserve_port()
        db = os.path.join(self.cwd, "registrations.db")
        proc = self.twistd("proxy", "--legs", f"udp:127.0.0.1:{port}", "--registrar", "--domain", DOMAIN,
                           "--store", f"sqlite:{db}")
        yield self.started(proc)
        uid = self.user.pw_uid
        self.assertEqual(_uids(proc.pid), [uid] * 4)
        yield self.register(port, "alice")
        yield self.register(port, "bob")  # a second write, after the first one's WAL files exist
        for name in (db, db + "-wal", db + "-shm", os.path.join(self.cwd, "sipproxy.ctl")):
            self.assertEqual(os.stat(name).st_uid, uid, name)
        listing = ctl(self.cwd, "registrations")
        self.assertEqual(listing.returncode, 0, listing)
        self.assertEqual(listing.stdout.splitlines()[-1], "2 addresses-of-record, 2 bindings", listing)
        self.assertNotIn("readonly", self.log())
        self.assertNotIn("Traceback", self.log())

    def test_sqlite_in_a_directory_the_user_cannot_write_is_one_line(self) -> None:
        locked = temp_dir(self)  # root's, mode 0700
        db = os.path.join(locked, "registrations.db")
        argv = [*twistd_command(), "-n", "--pidfile=", "--uid", str(self.user.pw_uid), "--gid",
                str(self.user.pw_gid), "sipproxy", "--legs", f"udp:127.0.0.1:{reserve_port()}", "--registrar",
                "--store", f"sqlite:{db}", "--control", "off"]
        result = run_process(argv, 30, cwd=self.cwd, env=child_environment())
        self.assertEqual(result.returncode, 1, result)
        self.assertEqual(result.stderr, f"twistd sipproxy: --store sqlite:{db}: uid {self.user.pw_uid} (twistd "
                                        f"--uid) cannot create files in {locked}, which SQLite needs for its -wal "
                                        f"and -shm files; chown the directory to that user\n")

    @inlineCallbacks
    def test_workers_with_uid(self) -> Any:
        port = reserve_port()
        db = os.path.join(self.cwd, "registrations.db")
        proc = self.twistd("proxy", "--legs", f"udp:127.0.0.1:{port}", "--workers", "3", "--registrar",
                           "--domain", DOMAIN, "--store", f"sqlite:{db}")
        yield self.started(proc, count=3)  # the parent and both workers dropped root
        uid = self.user.pw_uid
        pids = [proc.pid]
        for worker in (1, 2):
            stats = ctl(self.cwd, "--worker", str(worker), "--json", "stats")
            self.assertEqual(stats.returncode, 0, stats)
            pids.append(int(re.search(r'"pid": (\d+)', stats.stdout).group(1)))
        self.assertEqual(len(set(pids)), 3)
        for pid in pids:
            self.assertEqual(_uids(pid), [uid] * 4, pid)
        for user in ("u1", "u2", "u3", "u4", "u5", "u6"):  # spread over the workers by source port
            yield self.register(port, user)
        listing = ctl(self.cwd, "--worker", "2", "registrations")
        self.assertEqual(listing.stdout.splitlines()[-1], "6 addresses-of-record, 6 bindings", listing)
        self.assertNotIn("Traceback", self.log())
        # a worker that dies cannot be started again as nobody: the whole service stops, status 1
        os.kill(pids[1], 15)
        yield wait_until(process_exited(proc), 20, what="twistd to stop after losing a worker")
        self.assertEqual(proc.returncode, 1, self.log()[-3000:])
        self.assertIn("worker 1 ended", self.log())
        self.assertIn("cannot be started again after twistd dropped root", self.log())
        for pid in pids[2:]:
            yield wait_until(lambda: not os.path.exists(f"/proc/{pid}") or "State:\tZ" in
                             read_text(f"/proc/{pid}/status"), 10, what=f"worker {pid} to end")
