"""Interop: sipp calls through a real C{twistd -n sipproxy}.

For each setup (UDP and TCP, one leg and two legs) a sipp UAS and a sipp
UAC run as subprocesses with hard timeouts; the UAC makes 100 calls at 50
per second through the proxy, and its statistics CSV must show 100 calls
created, 100 successful and 0 failed. One summary line per setup is
printed (shown by trial, and by pytest with C{-rP} or C{-s}).

Skipped when sipp is not installed, unless C{SIPPROXY_REQUIRE_INTEROP=1}
(then a missing sipp fails).
"""
from __future__ import annotations

import csv
import os
import re
import socket
from typing import Any, Optional

from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest

from tests.util import (
    ProxyProcess,
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

CALLS = 100
RATE = 50
SIPP_TIMEOUT = 20  # sipp's own global -timeout, seconds
HARD_TIMEOUT = 30  # then we kill it


def _stats(path: str) -> dict[str, str]:
    """The last (cumulative) row of a sipp statistics CSV."""
    with open(path, newline="") as f:
        rows = [row for row in csv.reader(f, delimiter=";") if row]
    if len(rows) < 2:
        raise AssertionError(f"no statistics in {path}: {rows!r}")
    return dict(zip(rows[0], rows[-1]))


def _first_request(log: str, method: str) -> Optional[str]:
    """The first C{method} request sipp logged as received."""
    for match in re.finditer(r"message received \[\d+\] bytes :\n\n(.*?)(?=\n-{20,}|\Z)", log, re.S):
        if match.group(1).startswith(method + " "):
            return match.group(1)
    return None


class SippInteropTests(unittest.TestCase):
    timeout = 45

    def setUp(self) -> None:
        self.sipp = require_program("sipp")
        self.cwd = temp_dir(self)

    @inlineCallbacks
    def _start_uas(self, host: str, transport: list[str]) -> Any:
        """sipp -sn uas on C{host}; fires with (process, port) once bound."""
        kind = socket.SOCK_STREAM if transport else socket.SOCK_DGRAM
        for attempt in range(3):
            port = reserve_port(host)
            argv = [self.sipp, "-sn", "uas", "-i", host, "-p", str(port), "-bind_local", *transport,
                    "-nostdin", "-timeout", f"{SIPP_TIMEOUT + 5}s",
                    "-trace_msg", "-message_file", os.path.join(self.cwd, "uas-messages.log"),
                    "-trace_err", "-error_file", os.path.join(self.cwd, "uas-errors.log")]
            proc = start_process(self, argv, self.cwd, f"uas-{attempt}")
            yield wait_until(lambda: proc.poll() is not None or port_bound(host, port, kind)(), 10,
                             what=f"the sipp UAS to bind {host}:{port}")
            if proc.poll() is None:
                return proc, port
        raise AssertionError("the sipp UAS did not start: " + read_text(os.path.join(self.cwd, "uas-2.err")))

    @inlineCallbacks
    def _call_through_proxy(self, name: str, proto: str, proxy_hosts: list[str], uas_host: str) -> Any:
        transport = ["-t", "t1"] if proto == "tcp" else []

        ports: list[int] = []

        def legs() -> list[str]:
            ports[:] = [reserve_port(proxy_hosts[0], also=proxy_hosts[1:])]
            return [f"{proto}:{host}:{ports[0]}" for host in proxy_hosts]

        # the UAC sends to the first leg; the proxy reaches the UAS through
        # the leg on the UAS's address
        proxy: ProxyProcess = yield start_proxy(self, self.cwd, legs)
        entry = f"{proxy_hosts[0]}:{ports[0]}"
        exit_hostport = f"{uas_host}:{ports[0]}"
        uas, uas_port = yield self._start_uas(uas_host, transport)

        stats_path = os.path.join(self.cwd, "uac-stats.csv")
        argv = [self.sipp, "-sn", "uac", f"{uas_host}:{uas_port}", "-rsa", entry,
                "-i", "127.0.0.1", "-bind_local", *transport,
                "-m", str(CALLS), "-r", str(RATE), "-nostdin",
                "-timeout", f"{SIPP_TIMEOUT}s", "-recv_timeout", "5000",
                "-trace_stat", "-stf", stats_path,
                "-trace_screen", "-screen_file", os.path.join(self.cwd, "uac-screen.log"),
                "-trace_err", "-error_file", os.path.join(self.cwd, "uac-errors.log")]
        uac = start_process(self, argv, self.cwd, "uac")
        try:
            yield wait_until(process_exited(uac), HARD_TIMEOUT, interval=0.1, what="the sipp UAC to finish")
        finally:
            stop_process(uac)
        stop_process(uas)

        def details() -> str:
            return (f"\n--- uac screen ---\n{read_text(os.path.join(self.cwd, 'uac-screen.log'))[-3000:]}"
                    f"\n--- uac errors ---\n{read_text(os.path.join(self.cwd, 'uac-errors.log'))[-2000:]}"
                    f"\n--- uac stderr ---\n{read_text(os.path.join(self.cwd, 'uac.err'))[-1000:]}"
                    f"\n--- proxy ---\n{proxy.describe()}")

        self.assertTrue(os.path.exists(stats_path), "sipp wrote no statistics" + details())
        stats = _stats(stats_path)
        created = int(stats["TotalCallCreated"])
        succeeded = int(stats["SuccessfulCall(C)"])
        failed = int(stats["FailedCall(C)"])
        summary = (f"sipp interop {name}: calls sent={created} succeeded={succeeded} failed={failed} "
                   f"(proxy legs {','.join(proxy.legs)}; uas {proto}:{uas_host}:{uas_port})")
        print(summary)
        self.assertEqual((created, succeeded, failed), (CALLS, CALLS, 0), summary + details())
        self.assertEqual(uac.returncode, 0, summary + details())

        # The UAS saw the INVITEs come from the proxy's leg on its side.
        invite = _first_request(read_text(os.path.join(self.cwd, "uas-messages.log")), "INVITE")
        self.assertIsNotNone(invite, "the UAS logged no INVITE")
        top_via = [line for line in invite.splitlines() if line.lower().startswith("via:")][0]
        self.assertTrue(top_via.startswith(f"Via: SIP/2.0/{proto.upper()} {exit_hostport};branch=z9hG4bK"),
                        (top_via, exit_hostport))
        record_routes = [line for line in invite.splitlines() if line.lower().startswith("record-route:")]
        self.assertTrue(any(exit_hostport in line for line in record_routes), record_routes)
        self.assertNotIn("Traceback", proxy.log())

    def test_udp_one_leg(self) -> Any:
        return self._call_through_proxy("udp-1-leg", "udp", ["127.0.0.1"], "127.0.0.1")

    def test_udp_two_legs(self) -> Any:
        return self._call_through_proxy("udp-2-legs", "udp", ["127.0.0.1", "127.0.0.2"], "127.0.0.2")

    def test_tcp_one_leg(self) -> Any:
        return self._call_through_proxy("tcp-1-leg", "tcp", ["127.0.0.1"], "127.0.0.1")

    def test_tcp_two_legs(self) -> Any:
        return self._call_through_proxy("tcp-2-legs", "tcp", ["127.0.0.1", "127.0.0.2"], "127.0.0.2")
