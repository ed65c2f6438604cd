"""The test harness leaves no process behind (tests/util.py)."""
from __future__ import annotations

import os
import time

from twisted.trial.unittest import TestCase

from tests.util import start_process, stop_process, temp_dir


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie waits for init)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def _wait_for(predicate, seconds: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


class StopProcessTests(TestCase):
    def test_a_child_the_leader_leaves_behind_is_killed_too(self) -> None:
        # sh dies of the SIGTERM; the sleep it started stays in its process
        # group, as Kamailio's workers did when their main process went first
        cwd = temp_dir(self)
        pid_file = os.path.join(cwd, "child.pid")
        proc = start_process(self, ["sh", "-c", "sleep 60 & echo $! > child.pid; wait"], cwd, "sh")
        self.assertTrue(_wait_for(lambda: os.path.exists(pid_file) and os.path.getsize(pid_file) > 0))
        with open(pid_file) as f:
            child = int(f.read())
        self.assertTrue(_running(child))
        stop_process(proc)
        self.assertTrue(_wait_for(lambda: not _running(child)), f"pid {child} outlived its group's leader")
