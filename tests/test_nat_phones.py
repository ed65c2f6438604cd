"""Phones behind a real NAT can be called (issue: "Phones behind NAT").

A phone in its own network namespace registers a private Contact through
a masquerading router namespace; a caller in the proxy's namespace then
calls it. The proxy must reach the phone over the flow its REGISTER came
on (the NAT's mapping, or for TCP the phone's own connection), never at
the private address, and in-dialog requests must find the same way back.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SkipTest, TestCase

from tests.netns import SERVER_ADDRESS, NatLab
from tests.util import (REQUIRE_INTEROP, WaitTimeout, child_environment, interop_required, process_exited,
                        read_text, start_process, temp_dir, twistd_command, wait_until)

PEER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nat_peer.py")
PROXY = f"{SERVER_ADDRESS}:5060"


def events(path: str) -> list[dict[str, Any]]:
    out = []
    for line in read_text(path).splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


class PhonesBehindNATTests(TestCase):
    timeout = 90

    def setUp(self) -> None:
        why = NatLab.missing()
        if why:
            if interop_required():
                self.fail(f"{why}, and {REQUIRE_INTEROP}=1 requires the NAT lab")
            raise SkipTest(why)
        self.lab = NatLab()
        self.addCleanup(self.lab.down)
        self.lab.up()
        self.cwd = temp_dir(self)

    @inlineCallbacks
    def start_proxy(self, *args: str) -> Any:
        argv = self.lab.command(self.lab.server, [
            *twistd_command(), "-n", "--pidfile=", "sipproxy",
            "--legs", f"udp:{PROXY},tcp:{PROXY}", "--registrar", *args])
        proc = start_process(self, argv, self.cwd, "twistd", env=child_environment())
        log = os.path.join(self.cwd, "twistd.out")
        try:
            yield wait_until(lambda: proc.poll() is not None or read_text(log).count("listening on") >= 2,
                             15, what="the proxy to listen")
        except WaitTimeout:
            self.fail("proxy did not start\n" + read_text(log)[-2000:])
        if proc.poll() is not None:
            self.fail("proxy exited\n" + read_text(log)[-2000:] + read_text(os.path.join(self.cwd, "twistd.err")))
        self.proxy_log = log
        return proc

    def peer(self, namespace: str, name: str, *args: str) -> Any:
        argv = self.lab.command(namespace, [sys.executable, PEER, *args])
        return start_process(self, argv, self.cwd, name, env=child_environment())

    @inlineCallbacks
    def call_phone(self, proto: str, *proxy_args: str) -> Any:
        yield self.start_proxy(*proxy_args)
        phone = self.peer(self.lab.phone, f"phone-{proto}", "phone", "--proxy", PROXY, "--proto", proto,
                          "--until-bye", "--timeout", "30")
        phone_out = os.path.join(self.cwd, f"phone-{proto}.out")
        yield wait_until(lambda: any(e["event"] in ("registered", "register_failed") for e in events(phone_out))
                         or phone.poll() is not None, 15, what="the phone to register")
        self.assertIn("registered", [e["event"] for e in events(phone_out)], read_text(phone_out))
        caller = self.peer(self.lab.server, f"caller-{proto}", "caller", "--proxy", PROXY, "--proto", "udp",
                           "--timeout", "8")
        yield wait_until(process_exited(caller), 15, what="the caller to finish")
        try:
            yield wait_until(process_exited(phone), 5, what="the phone to see the BYE")
        except WaitTimeout:
            phone.kill()
            phone.wait()
        caller_out = os.path.join(self.cwd, f"caller-{proto}.out")
        report = (f"--- caller ---\n{read_text(caller_out)}\n--- phone ---\n{read_text(phone_out)}\n"
                  f"--- proxy ---\n{read_text(self.proxy_log)[-4000:]}")
        return caller.returncode, phone.returncode, events(caller_out), events(phone_out), report

    @inlineCallbacks
    def test_udp_phone_behind_nat_is_called_over_its_flow(self) -> Any:
        caller_rc, phone_rc, caller_events, phone_events, report = yield self.call_phone("udp")
        self.assertEqual((caller_rc, phone_rc), (0, 0), report)
        methods = [e["method"] for e in phone_events if e["event"] == "request"]
        self.assertEqual(methods[:3], ["INVITE", "ACK", "BYE"], report)

    @inlineCallbacks
    def test_tcp_phone_behind_nat_is_called_over_its_connection(self) -> Any:
        caller_rc, phone_rc, caller_events, phone_events, report = yield self.call_phone("tcp")
        self.assertEqual((caller_rc, phone_rc), (0, 0), report)
        methods = [e["method"] for e in phone_events if e["event"] == "request"]
        self.assertEqual(methods[:3], ["INVITE", "ACK", "BYE"], report)
