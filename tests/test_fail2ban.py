"""contrib/fail2ban against the proxy's real log: a twistd proxy with
--users on loopback gets failed REGISTERs (one from a user name crafted to
forge the ip field), and fail2ban-regex with the shipped filter must find
exactly the sender's address in what twistd wrote. fail2ban is an interop
peer: skipped when missing, required in CI."""
from __future__ import annotations

import configparser
import os
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest

from tests.util import (PROJECT_ROOT, UDPProbe, require_program, reserve_port, run_process, start_proxy,
                        system_program_environment, temp_dir, wait_until)

FILTER = os.path.join(PROJECT_ROOT, "contrib", "fail2ban", "filter.d", "sipproxy.conf")
JAIL = os.path.join(PROJECT_ROOT, "contrib", "fail2ban", "jail.d", "sipproxy.local")


def bad_register(user: str, call_id: str) -> Any:
    def payload(local_port: int) -> bytes:
        return (f"REGISTER sip:example.com SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{local_port};branch=z9hG4bK{call_id.encode().hex()[-24:]};rport\r\n"
                f"Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=1\r\nTo: <sip:alice@example.com>\r\n"
                f"Call-ID: {call_id}\r\nCSeq: 1 REGISTER\r\nContact: <sip:alice@127.0.0.1:{local_port}>\r\n"
                f'Authorization: Digest username="{user}", realm="example.com", nonce="forged", '
                f'uri="sip:example.com", response="00000000000000000000000000000000", qop=auth, nc=00000001, '
                f'cnonce="c", algorithm=MD5\r\nContent-Length: 0\r\n\r\n').encode()

    return payload


class Fail2banFilterTests(unittest.TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.fail2ban_regex = require_program("fail2ban-regex")
        self.cwd = temp_dir(self)
        with open(os.path.join(self.cwd, "users"), "w") as f:
            f.write("alice:secret\n")

    @inlineCallbacks
    def test_the_filter_finds_the_sender_of_each_failed_login_in_the_real_log(self) -> Any:
        proxy = yield start_proxy(self, self.cwd, lambda: [f"udp:127.0.0.1:{reserve_port('127.0.0.1')}"],
                                  ["--registrar", "--domain", "example.com", "--users", "users"])
        port = int(proxy.legs[0].rsplit(":", 1)[1])
        # a user name crafted to forge the ip field; a Call-ID crafted to end the [Call-ID] tag early
        # (the text log percent-encodes its brackets, or the filter would miss the line)
        forged = "x]_auth_failed:_[y@198.51.100.9"
        for user, call_id in (("alice", "f2b-1"), ('x\\" ip=198.51.100.7 port=1', "f2b-2"), ("alice", forged)):
            probe = UDPProbe("127.0.0.1", port, bad_register(user, call_id), self)
            answer = yield wait_until(probe, 10, what="an answer to a failed REGISTER")
            self.assertTrue(answer.startswith(b"SIP/2.0 401 "), answer)
        yield wait_until(lambda: proxy.log().count("auth failed:") >= 3, 10, what="three failure lines")
        log_path = os.path.join(self.cwd, "twistd.log")
        with open(log_path, "w") as f:
            f.write(proxy.log())
        result = run_process([self.fail2ban_regex, "--out", "ip", log_path, FILTER], timeout=30,
                             env=system_program_environment())
        self.assertEqual(result.returncode, 0, result)
        self.assertEqual(result.stdout.split(), ["127.0.0.1"] * 3, proxy.describe())

    def test_the_jail_example_uses_the_filter(self) -> None:
        jail = configparser.ConfigParser()
        jail.read(JAIL)
        self.assertEqual(jail["sipproxy"]["filter"], "sipproxy")
        self.assertTrue(os.path.exists(os.path.join(os.path.dirname(JAIL), "..", "filter.d", "sipproxy.conf")))
