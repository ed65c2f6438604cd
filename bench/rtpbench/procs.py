"""Child processes for the RTP benchmark: started with their output in a
log file (and, when asked, their stdout lines readable as a queue), bounded
in time, and stopped by PID only.

CPU and memory come from bench/sipbench/procfs.py (per process, from
/proc/PID/stat and /proc/PID/status; /proc/stat is unreliable in these VMs).
"""
from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional

BENCH_DIR = Path(__file__).resolve().parent.parent
REPO_DIR = BENCH_DIR.parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

from sipbench import procfs  # noqa: E402  (read-only use of the SIP harness's helpers)


def bounded(argv: list[str], seconds: float) -> list[str]:
    """coreutils timeout in front: the program dies even if the harness is SIGKILLed."""
    return ["timeout", "--kill-after=5", str(int(seconds))] + argv


class Child:
    """One started program. `wrapped`: argv starts with a `timeout` wrapper,
    which is left out of the CPU and memory figures."""

    def __init__(self, name: str, argv: list[str], log_path: Path, cwd: Path, *, pipe_stdin: bool = False,
                 read_stdout: bool = False, wrapped: bool = False, env: Optional[dict] = None) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.wrapped = wrapped
        self.lines: "queue.Queue[Optional[str]]" = queue.Queue()
        self._log = open(log_path, "ab", buffering=0)
        self._log.write(f"$ {' '.join(argv)}\n".encode())
        self.popen = subprocess.Popen(
            argv, cwd=cwd, env=env,
            stdin=subprocess.PIPE if pipe_stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE if read_stdout else self._log,
            stderr=self._log, start_new_session=False)
        self._reader: Optional[threading.Thread] = None
        if read_stdout:
            self._reader = threading.Thread(target=self._read, daemon=True)
            self._reader.start()
        self.started = time.monotonic()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            self._log.write(raw)
            self.lines.put(raw.decode("utf-8", "replace").rstrip("\n"))
        self.lines.put(None)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def send(self, text: str) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(text.encode())
        self.popen.stdin.flush()

    def expect(self, prefix: str, timeout: float) -> str:
        """The next stdout line starting with prefix (earlier lines are skipped);
        RuntimeError on timeout, EOF or an ERROR line."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"{self.name}: no '{prefix}' line within {timeout:.0f} s")
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError(f"{self.name}: exited before '{prefix}' ({self.tail()})")
            if line.startswith(prefix):
                return line
            if line.startswith("ERROR"):
                raise RuntimeError(f"{self.name}: {line}")

    def tree(self) -> list[int]:
        if not self.running():
            return []
        tree = procfs.process_tree(self.pid)
        return tree[1:] if self.wrapped else tree

    def cpu_s(self) -> Optional[float]:
        tree = self.tree()
        return procfs.cpu_seconds(tree) if tree else None

    def rss_mb(self) -> float:
        return round(procfs.peak_rss_kb(self.tree()) / 1024, 1)

    def socket_inodes(self) -> set[int]:
        return procfs.socket_inodes(self.tree())

    def tail(self, lines: int = 3) -> str:
        return procfs.log_tail(self.log_path, lines)

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM the root, SIGKILL after grace_s, then any descendant still alive
        (checked by PID and start time)."""
        if self.popen.returncode is None:
            procfs.terminate(self.popen, procfs.process_tree(self.pid), grace_s)
        if self.popen.stdin is not None:
            try:
                self.popen.stdin.close()
            except OSError:
                pass
        if self._reader is not None:
            self._reader.join(timeout=2)
        self._log.close()


def udp_drops(inodes: set[int]) -> int:
    table = procfs.udp_drops_by_inode()
    return sum(table.get(inode, 0) for inode in inodes)
