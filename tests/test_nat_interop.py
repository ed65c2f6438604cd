"""Interop: real third-party peers on loopback.

  - Two Net::SIP (Perl) user agents, on 127.0.0.1 and 127.0.0.2, call
    each other through C{twistd -n sipproxy --nathelper}: each UA's SDP
    names the proxy's addresses, RTP flows both ways (the caller sends,
    the callee echoes), and after BYE the relay ports are closed.
  - The same call through C{--nathelper-ng} to a real rtpengine started
    here (userspace only), and to our own relay process
    (C{twistd -n sipproxy --relay-only --ng ...}).

Skipped with a reason when perl with Net::SIP or rtpengine is missing,
unless SIPPROXY_REQUIRE_INTEROP=1 (then they fail).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from typing import Any, Optional

from twisted.internet import defer
from twisted.trial.unittest import FailTest, SkipTest, TestCase

from sipproxy.nat.ng import decode_message, encode_message
from tests.nat_util import free_udp_block, process_udp_ports
from tests.util import (REQUIRE_INTEROP, UDPProbe, child_environment, interop_required,
                        process_exited, read_text, require_program, reserve_port, run_process, start_process,
                        twistd_command, wait_until)

HERE = os.path.dirname(os.path.abspath(__file__))
UAS_SCRIPT = os.path.join(HERE, "perl", "uas.pl")
UAC_SCRIPT = os.path.join(HERE, "perl", "uac.pl")
PACKETS = 50
A, B = "127.0.0.1", "127.0.0.2"

_NETSIP: Optional[str] = None


def require_netsip() -> str:
    """perl's path; skip (or fail when interop is required) without Net::SIP."""
    global _NETSIP
    perl = require_program("perl")
    if _NETSIP is None:
        result = subprocess.run([perl, "-MNet::SIP", "-e", "print $Net::SIP::VERSION"], capture_output=True,
                                text=True, timeout=30)
        _NETSIP = result.stdout.strip() if result.returncode == 0 else ""
    if not _NETSIP:
        reason = "the Perl module Net::SIP is not installed (Debian: libnet-sip-perl)"
        if interop_required():
            raise FailTest(f"{reason}, and {REQUIRE_INTEROP}=1 requires it")
        raise SkipTest(reason)
    return perl


def _lines(text: str, prefix: str) -> list[str]:
    return [line[len(prefix):].strip() for line in text.splitlines() if line.startswith(prefix)]


class _CallThroughProxy:
    """Start processes, run one Net::SIP call, check what both UAs saw."""

    relay_range: tuple[int, int]

    def setUp(self) -> None:
        self.perl = require_netsip()
        self.dir = tempfile.mkdtemp(prefix="sipproxy-nat-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.env = child_environment()

    def start(self, name: str, argv: list[str]) -> subprocess.Popen:
        return start_process(self, argv, self.dir, name, env=self.env)

    def started(self, proc: subprocess.Popen, name: str, text: str) -> Any:
        """A predicate: C{text} is in C{name}'s output; fails at once if it exited."""

        def check() -> bool:
            if text in self.out(name):
                return True
            if proc.poll() is not None:
                raise FailTest(f"{name} exited with {proc.returncode}:\n{self.out(name)[-3000:]}")
            return False

        return check

    def out(self, name: str) -> str:
        return read_text(os.path.join(self.dir, name + ".out")) + read_text(os.path.join(self.dir, name + ".err"))

    @defer.inlineCallbacks
    def start_proxy(self, *nat_options: str):
        self.sip_port = reserve_port(A, also=[B])
        argv = [*twistd_command(), "-n", "--pidfile=", "sipproxy", "--legs",
                f"udp:{A}:{self.sip_port},udp:{B}:{self.sip_port}", "--secret-file",
                os.path.join(self.dir, "secret"), *nat_options]
        self.proxy = self.start("proxy", argv)
        yield wait_until(self.started(self.proxy, "proxy", f"listening on udp:{B}:{self.sip_port}"), 15,
                         what="the proxy to listen")

    @defer.inlineCallbacks
    def run_call(self):
        """Run the call; returns (caller's peer media, callee's peer media, uac output, uas output)."""
        uas_port, uac_port = reserve_port(B), reserve_port(A)
        uas = self.start("uas", [self.perl, UAS_SCRIPT, f"{B}:{uas_port}", "20"])
        yield wait_until(self.started(uas, "uas", "UAS ready"), 10, what="the Perl UAS")
        result = run_process([self.perl, UAC_SCRIPT, f"{A}:{uac_port}", f"{A}:{self.sip_port}",
                              f"sip:uas@{B}:{uas_port}", str(PACKETS), "15"], timeout=30, env=self.env)
        yield wait_until(process_exited(uas), 10, what="the Perl UAS to exit")
        uac_out, uas_out = result.stdout + result.stderr, self.out("uas")
        self.call_output = f"--- uac ---\n{uac_out}--- uas ---\n{uas_out}"
        self.assertEqual(result.returncode, 0, f"{self.call_output}\n--- proxy ---\n{self.out('proxy')[-3000:]}")
        caller_sees = [tuple(x.split()) for x in _lines(uac_out, "UAC peer-media ")]
        callee_sees = [tuple(x.split()) for x in _lines(uas_out, "UAS peer-media ")]
        self.assertEqual(_lines(uac_out, "UAC sent "), [f"{PACKETS} packets"], self.call_output)
        # the relay loses nothing on loopback: the callee gets every packet, the caller every echo
        self.assertEqual(_lines(uas_out, "UAS received "), [f"{PACKETS} packets"], self.call_output)
        self.assertEqual(_lines(uac_out, "UAC received "), [f"{PACKETS} packets"], self.call_output)
        return caller_sees, callee_sees

    def check_relay_addresses(self, caller_sees: list, callee_sees: list) -> tuple[int, int]:
        """Each UA was told to send to the relay, on the address it can reach."""
        (caller_media,), (callee_media,) = caller_sees, callee_sees
        low, high = self.relay_range
        self.assertEqual(caller_media[0], A, self.call_output)
        self.assertEqual(callee_media[0], B, self.call_output)
        for _, port in (caller_media, callee_media):
            self.assertTrue(low <= int(port) <= high, f"{port} not a relay port\n{self.call_output}")
        return int(caller_media[1]), int(callee_media[1])


class LocalRelayCallTests(_CallThroughProxy, TestCase):
    @defer.inlineCallbacks
    def test_two_netsip_uas_through_the_local_relay(self):
        low = free_udp_block(A, 200, also=[B])
        self.relay_range = (low, low + 199)
        yield self.start_proxy("--nathelper", "--rtp-ports", f"{low}-{low + 199}", "--rtp-close-delay", "0.3")
        before = process_udp_ports(self.proxy.pid)
        caller_sees, callee_sees = yield self.run_call()
        to_caller, to_callee = self.check_relay_addresses(caller_sees, callee_sees)
        relay_ports = {to_caller, to_caller + 1, to_callee, to_callee + 1}
        yield wait_until(lambda: not relay_ports & process_udp_ports(self.proxy.pid), 5,
                         what="the relay ports to close after BYE")
        self.assertEqual(process_udp_ports(self.proxy.pid), before)
        log = self.out("proxy")
        ended = [line for line in log.splitlines() if "relay session ended" in line]
        self.assertEqual(len(ended), 1, log[-3000:])
        self.assertIn("reason bye", ended[0])
        self.assertRegex(ended[0], rf"from sip:uac@{re.escape(A)} {PACKETS} packets .* to sip:uas@{re.escape(B)} "
                                   rf"{PACKETS} packets")


def _ng(host: str, port: int, message: dict, cookie: bytes = b"t1") -> dict:
    """One ng request with a blocking socket (for checks, not the proxy)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.sendto(encode_message(cookie, message), (host, port))
        return decode_message(sock.recv(65535))[1]


class RtpengineCallTests(_CallThroughProxy, TestCase):
    @defer.inlineCallbacks
    def test_two_netsip_uas_through_rtpengine(self):
        rtpengine = require_program("rtpengine")
        ng_port = reserve_port(A)
        low = free_udp_block(A, 200, low=30000, high=31000, also=[B])
        self.relay_range = (low, low + 199)
        self.start("rtpengine", [rtpengine, "--config-file=none", "--foreground", "--table=-1",
                                 f"--interface={A}/{A}", f"--interface={B}/{B}", f"--listen-ng={A}:{ng_port}",
                                 f"--port-min={low}", f"--port-max={low + 199}", "--delete-delay=0",
                                 "--log-stderr", "--log-level=6"])
        probe = UDPProbe(A, ng_port, lambda _: encode_message(b"p1", {"command": "ping"}), testcase=self)
        pong = yield wait_until(probe, 10, what="rtpengine to answer ng ping")
        self.assertEqual(decode_message(pong)[1], {"result": b"pong"})
        yield self.start_proxy("--nathelper-ng", f"udp:{A}:{ng_port}")
        caller_sees, callee_sees = yield self.run_call()
        self.check_relay_addresses(caller_sees, callee_sees)
        # the proxy deleted the call at BYE (rtpengine runs with no delete delay)
        yield wait_until(lambda: _ng(A, ng_port, {"command": "list"}).get("calls") == [], 5,
                         what="rtpengine to have no calls left")
        log = self.out("rtpengine")
        self.assertIn("Final packet stats", log)
        self.assertNotIn("not found, using default", log)  # direction named known interfaces


class OwnRelayProcessCallTests(_CallThroughProxy, TestCase):
    @defer.inlineCallbacks
    def test_two_netsip_uas_through_our_relay_process(self):
        ng_port = reserve_port(A)
        low = free_udp_block(A, 200, low=31000, high=32000, also=[B])
        self.relay_range = (low, low + 199)
        relay = self.start("relay", [*twistd_command(), "-n", "--pidfile=", "sipproxy", "--relay-only",
                                     "--ng", f"udp:{A}:{ng_port}", "--rtp-ports", f"{low}-{low + 199}",
                                     "--rtp-close-delay", "0.3"])
        probe = UDPProbe(A, ng_port, lambda _: encode_message(b"p1", {"command": "ping"}), testcase=self)
        yield wait_until(probe, 15, what="our relay to answer ng ping")
        before = process_udp_ports(relay.pid)
        yield self.start_proxy("--nathelper-ng", f"udp:{A}:{ng_port}")
        caller_sees, callee_sees = yield self.run_call()
        to_caller, to_callee = self.check_relay_addresses(caller_sees, callee_sees)
        relay_ports = {to_caller, to_caller + 1, to_callee, to_callee + 1}
        yield wait_until(lambda: not relay_ports & process_udp_ports(relay.pid), 5,
                         what="the relay process to close the call's ports")
        # (seen once in CI under trial -j2: four more relay ports open; the
        # logs say which sessions held them)
        self.assertEqual(process_udp_ports(relay.pid), before,
                         f"{self.call_output}\n--- relay ---\n{self.out('relay')[-4000:]}\n"
                         f"--- proxy ---\n{self.out('proxy')[-4000:]}")
        ended = [line for line in self.out("relay").splitlines() if "relay session ended" in line]
        self.assertEqual(len(ended), 1, self.out("relay")[-3000:])
        self.assertIn("reason delete", ended[0])
