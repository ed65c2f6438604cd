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
import socket
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest

from tests.kamailio import USERS, start_kamailio
from tests.uapeer import start_ua, wait_event, wait_exit
from tests.util import (
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

HERE = os.path.dirname(os.path.abspath(__file__))
SIPP_REGISTER = os.path.join(HERE, "sipp", "register_auth.xml")
#: sipp's uas, but copying Record-Route into its answers (the built-in one does not)
SIPP_UAS_RR = os.path.join(HERE, "kamailio", "uas_record_route.xml")
#: the registrar's max_expires: our UA asks for 60 s and is granted this, so
#: it must refresh within it. SIPPROXY_UA_KAMAILIO_EXPIRES=60 makes the
#: real 60 s run (Kamailio then grants what was asked).
EXPIRES = int(os.environ.get("SIPPROXY_UA_KAMAILIO_EXPIRES", "10"))


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


class KamailioUATests(unittest.TestCase):
    """Our UA registers with Kamailio and calls through it."""

    timeout = 60 + 3 * EXPIRES

    def setUp(self) -> None:
        self.sipp = require_program("sipp")
        self.cwd = temp_dir(self)

    def _identity(self, user: str) -> list[str]:
        return ["--from", f"sip:{user}@127.0.0.1", "--auth-user", user, "--password", USERS[user]]

    @inlineCallbacks
    def test_register_401_and_refresh_before_expiry(self) -> Any:
        kamailio = yield start_kamailio(self, self.cwd, max_expires=EXPIRES)
        registrar = kamailio.uri()
        alice = start_ua(self, self.cwd, "alice", "answer", "--leg", "udp:127.0.0.1:0",
                         "--registrar", registrar, "--proxy", registrar, *self._identity("alice"),
                         "--expires", "60", "--timeout", str(2 * EXPIRES + 10))
        first = yield wait_event(alice, "registered", 15)
        self.assertEqual(first.get("expires"), EXPIRES, alice.describe())
        # the refresh: a second registration saved by Kamailio before the first expired
        yield wait_until(lambda: len(kamailio.registrations()) >= 2 or alice.proc.poll() is not None,
                         EXPIRES + 5, what="a refreshed registration")
        saved = kamailio.registrations()
        requests = kamailio.requests("REGISTER")
        detail = alice.describe() + kamailio.describe()
        self.assertGreaterEqual(len(saved), 2, detail)
        gap = float(saved[1]["time"]) - float(saved[0]["time"])
        # the first REGISTER came without credentials and got 401; from then
        # on the UA sent credentials (a refresh may reuse the nonce, or be
        # challenged again: both are fine)
        self.assertEqual(requests[0]["user"], "<null>", detail)
        self.assertEqual(requests[1]["user"], "alice", detail)
        self.assertEqual(saved[0]["call_id"], saved[1]["call_id"], detail)
        self.assertGreater(int(saved[1]["cseq"]), int(saved[0]["cseq"]), detail)
        self.assertLess(gap, EXPIRES, detail)
        print(f"kamailio registrar: granted {EXPIRES} s (asked 60); REGISTERs "
              f"{[(r['cseq'], r['user'], r['time']) for r in requests]}; refresh after {gap:.2f} s")
        stop_process(alice.proc)

    @inlineCallbacks
    def test_call_sipp_through_kamailio_407_and_bye_along_the_route_set(self) -> Any:
        kamailio = yield start_kamailio(self, self.cwd)
        port = reserve_port()
        uas = start_process(self, [self.sipp, "-sf", SIPP_UAS_RR, "-i", "127.0.0.1", "-p", str(port), "-bind_local",
                                   "-nostdin", "-timeout", "40s", "-trace_msg", "-message_file",
                                   os.path.join(self.cwd, "uas-messages.log")], self.cwd, "sipp-uas")
        yield wait_until(lambda: uas.poll() is not None or port_bound("127.0.0.1", port, socket.SOCK_DGRAM)(), 10,
                         what="sipp uas to bind")
        self.assertIsNone(uas.poll(), read_text(os.path.join(self.cwd, "sipp-uas.err")))
        bob = start_ua(self, self.cwd, "bob", "call", "--leg", "udp:127.0.0.1:0", "--proxy", kamailio.uri(),
                       *self._identity("bob"), "--hangup-after", "0.5", "--timeout", "20",
                       f"sip:service@127.0.0.1:{port}")
        rc = yield wait_exit(bob, 30)
        stop_process(uas)
        detail = bob.describe() + kamailio.describe()
        self.assertEqual(rc, 0, detail)
        established = bob.events("established")
        self.assertEqual(len(established), 1, detail)
        call_id = established[0]["call_id"]
        seen = [(r["method"], r["user"], r["route"]) for r in kamailio.requests() if r["call_id"] == call_id]
        invites = [s for s in seen if s[0] == "INVITE"]
        # 407 then the retry with credentials
        self.assertEqual([i[1] for i in invites], ["<null>", "bob"], detail)
        # ACK and BYE came through Kamailio, addressed by the route set it recorded
        for method in ("ACK", "BYE"):
            routed = [s for s in seen if s[0] == method]
            self.assertEqual(len(routed), 1, (method, seen, detail))
            self.assertIn(f"{kamailio.host}:{kamailio.port};lr", routed[0][2], detail)
        self.assertEqual(bob.events("bye")[-1], {"event": "bye", "by": "local", "code": 200}, detail)
        messages = read_text(os.path.join(self.cwd, "uas-messages.log"))
        self.assertIn("Record-Route: <sip:127.0.0.1:%d;lr" % kamailio.port, messages)
        print(f"kamailio proxy: {seen}")

    @inlineCallbacks
    def test_registered_ua_called_through_kamailio(self) -> Any:
        kamailio = yield start_kamailio(self, self.cwd)
        registrar = kamailio.uri()
        alice = start_ua(self, self.cwd, "alice", "answer", "--leg", "udp:127.0.0.1:0", "--registrar", registrar,
                         "--proxy", registrar, *self._identity("alice"), "--expires", "60", "--timeout", "25")
        yield wait_event(alice, "registered", 15)
        bob = start_ua(self, self.cwd, "bob", "call", "--leg", "udp:127.0.0.1:0", "--proxy", registrar,
                       *self._identity("bob"), "--hangup-after", "0.5", "--timeout", "20", kamailio.uri("alice"))
        rc_bob = yield wait_exit(bob, 30)
        rc_alice = yield wait_exit(alice, 30)
        detail = bob.describe() + alice.describe() + kamailio.describe()
        self.assertEqual((rc_bob, rc_alice), (0, 0), detail)
        self.assertEqual(len(alice.events("established")), 1, detail)
        self.assertEqual(alice.events("bye")[-1].get("by"), "remote", detail)
        call_id = bob.events("established")[0]["call_id"]
        methods = [r["method"] for r in kamailio.requests() if r["call_id"] == call_id]
        self.assertEqual(methods, ["INVITE", "INVITE", "ACK", "BYE"], detail)
