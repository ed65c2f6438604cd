"""Running sipproxy's own user agent (the C{sipproxy-ua} command line) in
the UA interop tests, and reading its JSON events back.

Every UA runs as a subprocess of this checkout's Python (C{-m
sipproxy.ua.cli}) under its own C{--timeout} and is killed by PID in the
test's cleanup. The UA is asked for port 0; its C{listening} event says
which port it got, so no port is ever raced for.
"""
from __future__ import annotations

import json
import os
import re
import sys
from typing import Any, Optional, Sequence

from twisted.internet.defer import inlineCallbacks

from tests.util import WaitTimeout, child_environment, read_text, start_process, wait_until


class UARun:
    """One C{sipproxy-ua} process: its argv, events and exit status."""

    def __init__(self, proc: Any, cwd: str, name: str, argv: Sequence[str]) -> None:
        self.proc = proc
        self.name = name
        self.argv = list(argv)
        self.out_path = os.path.join(cwd, name + ".out")
        self.err_path = os.path.join(cwd, name + ".err")

    def events(self, kind: Optional[str] = None) -> list[dict]:
        """The events printed so far (only C{kind} ones when given)."""
        found = []
        for line in read_text(self.out_path).splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and (kind is None or event.get("event") == kind):
                found.append(event)
        return found

    def leg(self, index: int = 0) -> tuple[str, str, int]:
        """(proto, host, port) of a leg from the C{listening} event."""
        legs = self.events("listening")[0]["legs"]
        match = re.match(r"^(\w+):\[?([^\]]+?)\]?:(\d+)$", legs[index])
        if match is None:
            raise AssertionError(f"cannot read the leg {legs[index]!r}")
        return match.group(1), match.group(2), int(match.group(3))

    def describe(self) -> str:
        return (f"--- {self.name} rc={self.proc.poll()} argv={' '.join(self.argv)}\n"
                f"{read_text(self.out_path)[-4000:]}\n--- {self.name} stderr ---\n"
                f"{read_text(self.err_path)[-3000:]}")


def ua_argv(command: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "sipproxy.ua.cli", command, *args]


def start_ua(testcase: Any, cwd: str, name: str, command: str, *args: str) -> UARun:
    argv = ua_argv(command, *args)
    proc = start_process(testcase, argv, cwd, name, env=child_environment())
    return UARun(proc, cwd, name, argv)


@inlineCallbacks
def wait_event(ua: UARun, kind: str, timeout: float, count: int = 1) -> Any:
    """Fires with the C{count}th C{kind} event; fails with the UA's output
    when it exits first or the time is up."""
    try:
        yield wait_until(lambda: len(ua.events(kind)) >= count or ua.proc.poll() is not None, timeout,
                         interval=0.05, what=f"{ua.name} to print {count} {kind!r}")
    except WaitTimeout:
        raise AssertionError(f"{ua.name} printed no {kind!r} in {timeout} s\n{ua.describe()}")
    found = ua.events(kind)
    if len(found) < count:
        raise AssertionError(f"{ua.name} exited before {count} {kind!r}\n{ua.describe()}")
    return found[count - 1]


@inlineCallbacks
def wait_exit(ua: UARun, timeout: float) -> Any:
    try:
        yield wait_until(lambda: ua.proc.poll() is not None, timeout, interval=0.05, what=f"{ua.name} to exit")
    except WaitTimeout:
        raise AssertionError(f"{ua.name} did not exit in {timeout} s\n{ua.describe()}")
    return ua.proc.returncode


def hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
