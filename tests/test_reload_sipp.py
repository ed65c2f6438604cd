"""Interop evidence: a reload in the middle of a sipp run drops no call.

sipp (UAC, tests/sipp/uac_auth_invite.xml) makes CALLS calls through an
authenticating C{twistd -n sipproxy --config ...} to a sipp UAS, each
call answering a 407 first. Once the first tenth have succeeded, the
users file and the config file change and the proxy gets SIGHUP; the
run must end with every call successful and none failed, over UDP and
over TCP (one connection each way, kept across the reload). One summary
line per transport is printed.

Skipped when sipp is not installed, unless SIPPROXY_REQUIRE_INTEROP=1.
"""
from __future__ import annotations

import os
import socket
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest

from tests.test_interop_sipp import _stats
from tests.test_reload import sighup
from tests.util import (
    PROJECT_ROOT,
    port_bound,
    process_exited,
    read_text,
    require_program,
    reserve_port,
    start_process,
    start_proxy,
    stop_process,
    temp_dir,
    wait_until,
)

HOST = "127.0.0.1"
CALLS = 150
RATE = 30
SIPP_TIMEOUT = 25
SCENARIO = os.path.join(PROJECT_ROOT, "tests", "sipp", "uac_auth_invite.xml")


class ReloadDuringSippTests(unittest.TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.sipp = require_program("sipp")
        self.cwd = temp_dir(self)

    def write(self, name: str, text: str) -> str:
        path = os.path.join(self.cwd, name)
        with open(path + ".new", "w") as f:
            f.write(text)
        os.replace(path + ".new", path)
        return path

    @inlineCallbacks
    def _start_uas(self, transport: list[str]) -> Any:
        kind = socket.SOCK_STREAM if transport else socket.SOCK_DGRAM
        for attempt in range(3):
            port = reserve_port(HOST)
            argv = [self.sipp, "-sn", "uas", "-i", HOST, "-p", str(port), "-bind_local", *transport, "-nostdin",
                    "-timeout", f"{SIPP_TIMEOUT + 5}s"]
            proc = start_process(self, argv, self.cwd, f"uas-{attempt}")
            yield wait_until(lambda: proc.poll() is not None or port_bound(HOST, port, kind)(), 10,
                             what=f"the sipp UAS to bind {HOST}:{port}")
            if proc.poll() is None:
                return proc, port
        raise AssertionError("the sipp UAS did not start: " + read_text(os.path.join(self.cwd, "uas-2.err")))

    @inlineCallbacks
    def _calls_across_reload(self, proto: str) -> Any:
        transport = ["-t", "t1"] if proto == "tcp" else []
        users = self.write("users", "alice:secret\n")
        config = self.write("sipproxy.toml", f'users = "{users}"\nforce-rewrite = true\nblock = "MESSAGE=405"\n')
        ports: list[int] = []

        def legs() -> list[str]:
            ports[:] = [reserve_port(HOST)]
            return [f"{proto}:{HOST}:{ports[0]}"]

        proxy = yield start_proxy(self, self.cwd, legs, ["--config", config])
        uas, uas_port = yield self._start_uas(transport)
        stats_path = os.path.join(self.cwd, "uac-stats.csv")
        uac_port = reserve_port(HOST)
        argv = [self.sipp, "-sf", SCENARIO, f"{HOST}:{uas_port}", "-rsa", f"{HOST}:{ports[0]}",
                "-i", HOST, "-p", str(uac_port), "-bind_local", *transport,
                "-key", "caller", "alice", "-au", "alice", "-ap", "secret",
                "-m", str(CALLS), "-r", str(RATE), "-nostdin", "-timeout", f"{SIPP_TIMEOUT}s",
                "-recv_timeout", "5000", "-trace_stat", "-fd", "1", "-stf", stats_path,
                "-trace_err", "-error_file", os.path.join(self.cwd, "uac-errors.log")]
        uac = start_process(self, argv, self.cwd, "uac")

        def succeeded_so_far() -> int:
            try:
                return int(_stats(stats_path)["SuccessfulCall(C)"])
            except (AssertionError, FileNotFoundError, KeyError, ValueError):
                return 0

        try:
            yield wait_until(lambda: uac.poll() is not None or succeeded_so_far() >= CALLS // 10, 20, interval=0.05,
                             what="the first calls")
            at_reload = succeeded_so_far()
            running = uac.poll() is None
            # new users and new filters while calls are set up
            self.write("users", "alice:secret\nbob:bobpw\n")
            self.write("sipproxy.toml", f'users = "{users}"\nforce-rewrite = true\n'
                                        'block = ["MESSAGE=405", "SUBSCRIBE=489"]\n')
            line = yield sighup(proxy)
            yield wait_until(process_exited(uac), SIPP_TIMEOUT + 5, interval=0.1, what="the sipp UAC to finish")
        finally:
            stop_process(uac)
            stop_process(uas)
        stats = _stats(stats_path)
        created, succeeded, failed = (int(stats[k]) for k in ("TotalCallCreated", "SuccessfulCall(C)",
                                                                "FailedCall(C)"))
        summary = (f"reload during sipp run ({proto}): calls sent={created} succeeded={succeeded} failed={failed}; "
                   f"SIGHUP after {at_reload} successful calls; {line.split('] ', 1)[1]}")
        print(summary)
        details = (f"\n--- uac errors ---\n{read_text(os.path.join(self.cwd, 'uac-errors.log'))[-3000:]}"
                   f"\n--- proxy ---\n{proxy.describe()}")
        self.assertTrue(running, "sipp finished before the reload: " + summary)
        self.assertIn("reload: reloaded users 2", line)
        self.assertEqual((created, succeeded, failed), (CALLS, CALLS, 0), summary + details)
        self.assertEqual(uac.returncode, 0, summary + details)
        self.assertLess(at_reload, CALLS, summary)

    def test_udp(self) -> Any:
        return self._calls_across_reload("udp")

    def test_tcp(self) -> Any:
        return self._calls_across_reload("tcp")
