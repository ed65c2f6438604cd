"""Interop: sipproxy's user agent against sipp, both ways.

- Our UA (C{sipproxy-ua call --calls N --hangup-after 0}) calls
  C{sipp -sn uas}: every call is INVITE, 180, 200, ACK, BYE, 200.
- C{sipp -sn uac -m N} calls our UA (C{sipproxy-ua answer}); sipp hangs
  up (under C{-lost}, tests/sipp/ua_uac_txn.xml: the same calls with
  responses matched to their transaction).

Over UDP, TCP (C{-t t1}) and IPv6 UDP (C{::1}), and over UDP (v4 and v6)
with C{-lost 10} on the sipp side: sipp drops a tenth of what it sends and
receives, so every call completes only through retransmissions (ours of
INVITE, BYE and the 200 to an INVITE; sipp's of its 200, INVITE and BYE).
Each run prints one summary line: calls sent/succeeded/failed, and sipp's
retransmission and loss counts from its C{-trace_counts} file.

N is 20 per run so the suite stays fast; C{SIPPROXY_UA_SIPP_CALLS=100}
runs the full figures. Skipped when sipp is missing, unless
C{SIPPROXY_REQUIRE_INTEROP=1}; IPv6 runs skip when ::1 cannot be bound.
"""
from __future__ import annotations

import csv
import glob
import os
import socket
from typing import Any, Optional

from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest

from tests.uapeer import hostport, start_ua, wait_event, wait_exit
from tests.util import (
    has_ipv6,
    port_bound,
    process_exited,
    read_text,
    require_program,
    reserve_port,
    start_process,
    stop_process,
    temp_dir,
    wait_until,
)

CALLS = int(os.environ.get("SIPPROXY_UA_SIPP_CALLS", "20"))
UAC_TXN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sipp", "ua_uac_txn.xml")
RATE = 10  # sipp uac: calls per second
LOSS = 10  # percent, for the -lost runs


def _last_row(path: str) -> dict[str, str]:
    with open(path, newline="") as f:
        rows = [row for row in csv.reader(f, delimiter=";") if row]
    if len(rows) < 2:
        raise AssertionError(f"no rows in {path}: {rows!r}")
    return dict(zip(rows[0], rows[-1]))


def _counts(cwd: str) -> dict[str, int]:
    """sipp's per-message counters summed: retransmissions it sent or got
    (C{*_Retrans}) and messages it dropped on purpose (C{*_Lost}). One sipp
    runs per test folder; its file is SCENARIO_PID_counts.csv."""
    paths = glob.glob(os.path.join(cwd, "*_counts.csv"))
    if not paths:
        return {"retrans": 0, "lost": 0, "unexpected": 0, "timeout": 0}
    row = _last_row(paths[0])
    total = {"retrans": 0, "lost": 0, "unexpected": 0, "timeout": 0}
    for key, value in row.items():
        for suffix, name in (("_Retrans", "retrans"), ("_Lost", "lost"), ("_Unexp", "unexpected"),
                             ("_Timeout", "timeout")):
            if key.endswith(suffix) and value.strip().isdigit():
                total[name] += int(value)
    return total


class SippUATests(unittest.TestCase):
    timeout = 60 + 3 * CALLS

    def setUp(self) -> None:
        self.sipp = require_program("sipp")
        self.cwd = temp_dir(self)

    def _host(self, family: int) -> str:
        if family == 6:
            if not has_ipv6():
                raise unittest.SkipTest("this host cannot bind ::1")
            return "::1"
        return "127.0.0.1"

    def _sipp_options(self, proto: str, lost: int, role: str) -> list[str]:
        options = ["-nostdin", "-trace_stat", "-fd", "1", "-trace_counts", "-trace_err"]
        if proto == "tcp":
            options += ["-t", "t1"]
        if lost:
            options += ["-lost", str(lost)]
            if role == "uas":
                # When -lost drops both the 180 and the 200 sipp's uas sends,
                # our INVITE retransmission (Timer A, 0.5 s) reaches it while it
                # waits for the ACK, and sipp aborts the call on that
                # "unexpected" INVITE instead of treating it as a
                # retransmission; the caller then times out (408). Seen in
                # about 1 call in 100. Not aborting lets sipp's own 200
                # retransmission complete the call, as it would with a real UAS.
                options += ["-default_behaviors", "all,-abortunexp"]
        return options

    @inlineCallbacks
    def _start_uas(self, host: str, proto: str, lost: int) -> Any:
        kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
        for attempt in range(3):
            port = reserve_port(host)
            argv = [self.sipp, "-sn", "uas", "-i", host, "-p", str(port), "-bind_local",
                    *self._sipp_options(proto, lost, "uas"), "-stf", os.path.join(self.cwd, "uas-stats.csv"),
                    "-timeout", f"{int(self.timeout)}s"]
            proc = start_process(self, argv, self.cwd, f"sipp-uas-{attempt}")
            yield wait_until(lambda: proc.poll() is not None or port_bound(host, port, kind)(), 10,
                             what=f"sipp uas to bind {host}:{port}")
            if proc.poll() is None:
                return proc, port
        raise AssertionError("sipp uas did not start: " + read_text(os.path.join(self.cwd, "sipp-uas-2.err")))

    @inlineCallbacks
    def _we_call(self, family: int, proto: str, lost: int = 0) -> Any:
        """Our UA calls sipp's UAS CALLS times, hanging up at once."""
        host = self._host(family)
        uas, port = yield self._start_uas(host, proto, lost)
        target = f"sip:service@{hostport(host, port)}" + (";transport=tcp" if proto == "tcp" else "")
        # sipp's uas forgets a call 4 s after its 200 to the BYE and then
        # drops the BYE's retransmissions ("Dead call ... received"), where
        # RFC 3261 (Timer J) keeps answering them for 32 s. Under -lost 10
        # a BYE whose 200 is lost twice outlives that window with our
        # default T2 of 4 s (BYE copies 0.5, 1.5, 3.5, 7.5 s after the
        # first; seen once in 600 calls, ending 408). With T2 = T1 = 0.5 s
        # about seven copies fall inside sipp's window.
        timers = ["--t2", "0.5"] if lost else []
        ua = start_ua(self, self.cwd, "ua-caller", "call", "--leg", f"{proto}:{hostport(host, 0)}", *timers,
                      "--calls", str(CALLS), "--hangup-after", "0", "--timeout", str(self.timeout - 10), target)
        rc = yield wait_exit(ua, self.timeout - 5)
        # sipp counts a call once its 4 s timewait is over: wait for every
        # call to be counted (it writes its statistics every second)
        stats_path = os.path.join(self.cwd, "uas-stats.csv")

        def counted() -> bool:
            try:
                row = _last_row(stats_path)
            except (AssertionError, OSError):
                return False
            return int(row["SuccessfulCall(C)"]) + int(row["FailedCall(C)"]) >= CALLS

        try:
            yield wait_until(lambda: uas.poll() is not None or counted(), 15, interval=0.2,
                             what="sipp uas to count every call")
        finally:
            stop_process(uas)
        established = ua.events("established")
        byes = [e for e in ua.events("bye") if e.get("code") == 200]
        failed = ua.events("failed") + ua.events("cancelled") + ua.events("timeout")
        counts = _counts(self.cwd)
        stats = _last_row(stats_path)
        summary = (f"ua->sipp {proto}/IPv{family}{' lost ' + str(lost) + '%' if lost else ''}: "
                   f"calls sent={CALLS} established={len(established)} ended-200={len(byes)} "
                   f"other-bye-codes={[e.get('code') for e in ua.events('bye') if e.get('code') != 200]} "
                   f"failed={len(failed)}; sipp uas successful={stats['SuccessfulCall(C)']} "
                   f"failed={stats['FailedCall(C)']} retransmissions(sent+received)={counts['retrans']} "
                   f"dropped-by-lost={counts['lost']}")
        print(summary)
        detail = summary + "\n" + ua.describe() + "\n" + read_text(os.path.join(self.cwd, "sipp-uas-0.out"))[-2000:]
        self.assertEqual(rc, 0, detail)
        self.assertEqual((len(established), len(byes), len(failed)), (CALLS, CALLS, 0), detail)
        self.assertEqual(ua.events("done")[-1].get("ok"), True, detail)
        # Over TCP our UA closes its connection when it exits after the last
        # call; sipp, still in that call's 4 s timewait, then counts it as
        # failed (FailedTcpClosed) although its BYE was answered 200. That
        # one call, and only for that reason, is not held against us.
        excused = min(1, int(stats.get("FailedTcpClosed(C)", "0") or 0)) if proto == "tcp" else 0
        self.assertEqual((int(stats["TotalCallCreated"]), int(stats["SuccessfulCall(C)"]) + excused,
                          int(stats["FailedCall(C)"]) - excused), (CALLS, CALLS, 0), detail)
        if lost:
            # sipp dropped messages and every call still completed: each drop
            # was recovered by a retransmission, ours or sipp's. sipp counts
            # only its own and the duplicates it sees, none in about one run
            # of a hundred, so its count is reported, not required.
            self.assertGreater(counts["lost"], 0, detail)
        return summary

    @inlineCallbacks
    def _sipp_calls(self, family: int, proto: str, lost: int = 0) -> Any:
        """sipp's UAC calls our UA CALLS times; sipp hangs up."""
        host = self._host(family)
        # Under -lost the UA takes one call more than sipp makes, so it is
        # still there when sipp is done: sipp may drop our 200 to its last
        # BYE and send the BYE again, which a UA that left at once could not
        # answer; we stop it once sipp has finished. Without loss it takes
        # CALLS calls and must exit 0 by itself (over TCP, after its last
        # 200 left: sipp counts the call failed if the connection closes first).
        ua = start_ua(self, self.cwd, "ua-callee", "answer", "--leg", f"{proto}:{hostport(host, 0)}",
                      "--calls", str(CALLS + 1 if lost else CALLS), "--timeout", str(self.timeout - 10))
        yield wait_event(ua, "listening", 20)
        _, _, port = ua.leg()
        stats_path = os.path.join(self.cwd, "uac-stats.csv")
        # Under -lost, sipp's built-in uac takes any 200 of the call as the
        # answer to its BYE: when its ACK and BYE are dropped, our (correct)
        # retransmission of the 200 to the INVITE "completes" the call in
        # sipp's eyes although the BYE never reached us. UAC_TXN is the same
        # scenario with responses matched to their transaction.
        scenario = ["-sf", UAC_TXN] if lost else ["-sn", "uac"]
        argv = [self.sipp, *scenario, hostport(host, port), "-i", host, "-bind_local",
                *self._sipp_options(proto, lost, "uac"), "-stf", stats_path,
                "-m", str(CALLS), "-r", str(RATE), "-recv_timeout", "20s",
                "-timeout", f"{int(self.timeout - 15)}s"]
        uac = start_process(self, argv, self.cwd, "sipp-uac")
        yield wait_until(process_exited(uac), self.timeout - 10, interval=0.1, what="sipp uac to finish")
        if lost:
            self.assertIsNone(ua.proc.poll(), ua.describe())
            stop_process(ua.proc)
        else:
            rc = yield wait_exit(ua, 20)
            self.assertEqual(rc, 0, ua.describe())
        stats = _last_row(stats_path)
        counts = _counts(self.cwd)
        created, succeeded, failed = (int(stats[k]) for k in ("TotalCallCreated", "SuccessfulCall(C)",
                                                               "FailedCall(C)"))
        summary = (f"sipp->ua {proto}/IPv{family}{' lost ' + str(lost) + '%' if lost else ''}: "
                   f"calls sent={created} succeeded={succeeded} failed={failed} "
                   f"(ua: incoming={len(ua.events('incoming'))} established={len(ua.events('established'))} "
                   f"bye={len(ua.events('bye'))}); sipp retransmissions(sent+received)={counts['retrans']} "
                   f"dropped-by-lost={counts['lost']}")
        print(summary)
        detail = (summary + "\n" + ua.describe() + "\n"
                  + read_text(os.path.join(self.cwd, "sipp-uac.out"))[-2000:]
                  + "".join(read_text(p)[-2000:] for p in glob.glob(os.path.join(self.cwd, "*errors.log"))))
        self.assertEqual((created, succeeded, failed), (CALLS, CALLS, 0), detail)
        self.assertEqual(uac.returncode, 0, detail)
        self.assertEqual(len(ua.events("incoming")), CALLS, detail)
        if not lost:
            self.assertEqual(len(ua.events("established")), CALLS, detail)
        # with -lost, sipp's ACK may be dropped and its BYE (sent right
        # after the ACK) arrive first: the BYE ends the call (RFC 3261 15:
        # the dialog is confirmed once we sent the 2xx), but no ACK ever
        # said "established", so only the BYEs are counted then
        remote_byes = [e for e in ua.events("bye") if e.get("by") == "remote"]
        self.assertEqual(len(remote_byes), CALLS, detail)
        if lost:
            # sipp dropped messages and every call still completed: each drop
            # was recovered by a retransmission, ours or sipp's. sipp counts
            # only its own and the duplicates it sees, none in about one run
            # of a hundred, so its count is reported, not required.
            self.assertGreater(counts["lost"], 0, detail)
        return summary

    # our UA calls sipp
    def test_call_udp(self) -> Any:
        return self._we_call(4, "udp")

    def test_call_tcp(self) -> Any:
        return self._we_call(4, "tcp")

    def test_call_udp_ipv6(self) -> Any:
        return self._we_call(6, "udp")

    def test_call_udp_lost(self) -> Any:
        return self._we_call(4, "udp", LOSS)

    def test_call_udp_ipv6_lost(self) -> Any:
        return self._we_call(6, "udp", LOSS)

    # sipp calls our UA
    def test_answer_udp(self) -> Any:
        return self._sipp_calls(4, "udp")

    def test_answer_tcp(self) -> Any:
        return self._sipp_calls(4, "tcp")

    def test_answer_udp_ipv6(self) -> Any:
        return self._sipp_calls(6, "udp")

    def test_answer_udp_lost(self) -> Any:
        return self._sipp_calls(4, "udp", LOSS)

    def test_answer_udp_ipv6_lost(self) -> Any:
        return self._sipp_calls(6, "udp", LOSS)
