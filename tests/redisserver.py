"""A real C{redis-server} for the tests: on a free loopback port, in a
temporary directory, stopped (by PID) in the test's cleanup.

Skipped when redis-server is missing, unless C{SIPPROXY_REQUIRE_INTEROP=1}
(then the test fails), through L{tests.util.require_program}.
"""
from __future__ import annotations

import os
import socket
from typing import Any, Optional

from twisted.internet.defer import inlineCallbacks

from tests.util import (
    WaitTimeout,
    read_text,
    require_program,
    reserve_port,
    start_process,
    stop_process,
    temp_dir,
    wait_until,
)

__all__ = ["RedisServer"]


class RedisServer:
    """One redis-server process.

    @param persistent: keep an append-only file, so that a stop and start
        loses nothing (for the outage tests); else nothing is written.
    """

    def __init__(self, testcase: Any, persistent: bool = False, host: str = "127.0.0.1") -> None:
        self.binary = require_program("redis-server")
        self.testcase = testcase
        self.host = host
        self.port = reserve_port(host, socket.SOCK_STREAM)
        self.dir = temp_dir(testcase)
        self.persistent = persistent
        self.proc: Optional[Any] = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def argv(self) -> list[str]:
        argv = [self.binary, "--port", str(self.port), "--bind", self.host, "--dir", self.dir,
                "--save", "", "--daemonize", "no", "--protected-mode", "no", "--loglevel", "warning"]
        if self.persistent:
            argv += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            argv += ["--appendonly", "no"]
        return argv

    @inlineCallbacks
    def start(self, timeout: float = 10.0) -> Any:
        """Start it; fires once it accepts connections."""
        self.starts += 1
        name = f"redis-{self.starts}"
        self.proc = proc = start_process(self.testcase, self.argv(), self.dir, name)
        try:
            # ready means PONG: a persistent server answers -LOADING while it
            # reads its dump back, which is not what a test of the store wants
            yield wait_until(lambda: proc.poll() is not None or _answers_pong(self.host, self.port), timeout,
                             what=f"redis-server on {self.host}:{self.port}")
        except WaitTimeout:
            raise AssertionError(f"redis-server did not start: {read_text(os.path.join(self.dir, name + '.out'))}")
        if proc.poll() is not None:
            raise AssertionError(f"redis-server exited at start (rc {proc.returncode}): "
                                 f"{read_text(os.path.join(self.dir, name + '.out'))}")
        return self

    def stop(self) -> None:
        """Stop it (SIGTERM: it writes its data and exits)."""
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None


def _answers_pong(host: str, port: int) -> bool:
    """Whether the server at C{host:port} answers PING with PONG."""
    try:
        with socket.create_connection((host, port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False
