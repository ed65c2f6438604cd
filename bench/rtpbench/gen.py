"""bench/rtpgen.c: compiled once per run into a temporary directory, then
driven over its stdin/stdout (see the protocol at the top of rtpgen.c)."""
from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Optional

from .procs import BENCH_DIR, Child

SOURCE = BENCH_DIR / "rtpgen.c"


def build(workdir: Optional[Path] = None) -> Path:
    """gcc -O2 into a temporary directory; the binary's path."""
    if shutil.which("gcc") is None:
        raise SystemExit("gcc is needed to build bench/rtpgen.c")
    out_dir = Path(tempfile.mkdtemp(prefix="rtpgen-", dir=workdir))
    binary = out_dir / "rtpgen"
    subprocess.run(["gcc", "-O2", "-Wall", "-o", str(binary), str(SOURCE)], check=True)
    return binary


class Generator:
    """One rtpgen process: bound sockets, then targets, warm-up, one run."""

    def __init__(self, binary: Path, run_dir: Path, streams: int, pps: float, secs: float,
                 a_ip: str = "127.0.0.1", b_ip: str = "127.0.0.1", drain: float = 1.0,
                 warmup: float = 1.0, warmup_pps: float = 20.0) -> None:
        self.streams = streams
        argv = [str(binary), "--streams", str(streams), "--pps", f"{pps:.4f}", "--secs", f"{secs:g}",
                "--a-ip", a_ip, "--b-ip", b_ip, "--drain", f"{drain:g}", "--warmup", f"{warmup:g}",
                "--warmup-pps", f"{warmup_pps:g}"]
        self.secs, self.drain, self.warmup = secs, drain, warmup
        self.a_ip, self.b_ip = a_ip, b_ip
        self.child = Child("rtpgen", argv, run_dir / "rtpgen.log", run_dir, pipe_stdin=True, read_stdout=True)
        self.ports: list[tuple[int, int]] = []
        for _ in range(streams):
            words = self.child.expect("BOUND", 20).split()
            self.ports.append((int(words[2]), int(words[3])))
        self.child.expect("READY", 10)

    def endpoints(self, index: int) -> tuple[tuple[str, int], tuple[str, int]]:
        a_port, b_port = self.ports[index]
        return (self.a_ip, a_port), (self.b_ip, b_port)

    def go(self, targets: list[tuple[tuple[str, int], tuple[str, int]]]) -> tuple[int, int]:
        """Send the targets (where A sends, where B sends) and warm up; (directions
        that got traffic in the warm-up, directions in all)."""
        lines = [f"TARGET {i} {a[0]} {a[1]} {b[0]} {b[1]}\n" for i, (a, b) in enumerate(targets)]
        self.child.send("".join(lines) + "GO\n")
        words = dict(word.split("=") for word in self.child.expect("WARM", self.warmup + 20).split()[1:])
        return int(words["ok"]), int(words["of"])

    def run(self) -> None:
        self.child.send("RUN\n")

    def wait_sent(self) -> None:
        self.child.expect("SENT_DONE", self.secs + 15)

    def result(self) -> dict:
        return json.loads(self.child.expect("RESULT", self.drain + 15).split(" ", 1)[1])

    def finish(self) -> None:
        if self.child.running():
            try:
                self.child.send("EXIT\n")
            except OSError:
                pass
        self.child.stop(grace_s=2)

    def quit(self) -> None:
        if self.child.running():
            try:
                self.child.send("QUIT\n")
            except OSError:
                pass
        self.child.stop(grace_s=2)
