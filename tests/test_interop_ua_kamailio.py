"""Interop: sipproxy's user agent against Kamailio as registrar and proxy.

Kamailio (tests/kamailio/kamailio.cfg) challenges every REGISTER with a
401 and every new INVITE with a 407, record-routes, looks registered users
up and relays with tm. The tests here:

- check the peer itself: sipp's REGISTER with the right password is
  saved (expiry capped by the registrar), a wrong one is challenged again;
- (with the UA) register, refresh before the registrar's expiry, call a
  sipp UAS through Kamailio and hang up along the route set.

Skipped when kamailio or sipp is missing, unless
SIPPROXY_REQUIRE_INTEROP=1 (then that fails). Everything runs on loopback
under hard timeouts; processes are killed by PID.
"""
from __future__ import annotations

import os
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest

from tests.kamailio import USERS, start_kamailio
from tests.util import process_exited, read_text, require_program, reserve_port, start_process, temp_dir, wait_until

HERE = os.path.dirname(os.path.abspath(__file__))
SIPP_REGISTER = os.path.join(HERE, "sipp", "register_auth.xml")


class KamailioPeerTests(unittest.TestCase):
    """The Kamailio peer behaves as the UA tests assume."""

    timeout = 60

    def setUp(self) -> None:
        self.sipp = require_program("sipp")
        self.cwd = temp_dir(self)

    @inlineCallbacks
    def _sipp_register(self, kamailio: Any, user: str, password: str, expect: int, name: str) -> Any:
        port = reserve_port()
        argv = [self.sipp, "-sf", SIPP_REGISTER, "-i", "127.0.0.1", "-p", str(port), "-m", "1",
                "-s", user, "-au", user, "-ap", password, "-key", "domain", "127.0.0.1",
                "-key", "expect", str(expect), kamailio.hostport, "-nostdin", "-timeout", "10s",
                "-trace_msg", "-message_file", os.path.join(self.cwd, name + "-messages.log")]
        proc = start_process(self, argv, self.cwd, name)
        yield wait_until(process_exited(proc), 15, what=f"sipp {name} to finish")
        return proc.returncode, read_text(os.path.join(self.cwd, name + "-messages.log"))

    @inlineCallbacks
    def test_register_challenged_then_saved(self) -> Any:
        kamailio = yield start_kamailio(self, self.cwd, max_expires=10)
        rc, messages = yield self._sipp_register(kamailio, "alice", USERS["alice"], 200, "good")
        self.assertEqual(rc, 0, messages + kamailio.describe())
        self.assertIn("SIP/2.0 401 Unauthorized", messages)
        # sipp asked for 300 s; the registrar caps it at max_expires
        self.assertIn("expires=10", messages)
        saved = kamailio.registrations()
        self.assertEqual([r["aor"] for r in saved], ["sip:alice@127.0.0.1"], kamailio.describe())

        rc, messages = yield self._sipp_register(kamailio, "bob", "not-bobs-password", 401, "bad")
        self.assertEqual(rc, 0, messages + kamailio.describe())
        self.assertEqual(messages.count("SIP/2.0 401 Unauthorized"), 2, messages)
        self.assertEqual(len(kamailio.registrations()), 1, kamailio.describe())
        self.assertEqual([r["method"] for r in kamailio.requests()], ["REGISTER"] * 4, kamailio.describe())
