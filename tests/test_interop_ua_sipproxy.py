"""Interop: two of our user agents register with C{twistd sipproxy
--registrar --users FILE} (digest authentication) and call each other
through it, each way, the caller hanging up once and the callee the
other time.

The proxy and the UAs are separate processes (the UAs run C{sipproxy-ua}
from this checkout), killed by PID at the end; everything is on loopback
and bounded in time. A summary line per call is printed.
"""
from __future__ import annotations

import os
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest

from tests.uapeer import start_ua, wait_event, wait_exit
from tests.util import reserve_port, start_proxy, stop_process, temp_dir

DOMAIN = "office.test"
USERS = {"alice": "wonderland", "bob": "b0bsecret"}


class SipproxyUATests(unittest.TestCase):
    timeout = 90

    def setUp(self) -> None:
        self.cwd = temp_dir(self)
        with open(os.path.join(self.cwd, "users"), "w") as f:
            f.write("".join(f"{user}:{password}\n" for user, password in USERS.items()))

    def _identity(self, user: str, password: str = "") -> list[str]:
        return ["--from", f"sip:{user}@{DOMAIN}", "--auth-user", user, "--password", password or USERS[user]]

    @inlineCallbacks
    def _call(self, proxy: str, caller: str, callee: str, hangup_by_caller: bool) -> Any:
        label = f"{caller}-to-{callee}"
        callee_ua = start_ua(self, self.cwd, f"{label}-callee", "answer", "--leg", "udp:127.0.0.1:0",
                             "--registrar", proxy, "--proxy", proxy, *self._identity(callee),
                             "--expires", "300", "--timeout", "30",
                             *([] if hangup_by_caller else ["--hangup-after", "0.5"]))
        registered = yield wait_event(callee_ua, "registered", 15)
        self.assertEqual(registered.get("expires"), 300, callee_ua.describe())
        caller_ua = start_ua(self, self.cwd, f"{label}-caller", "call", "--leg", "udp:127.0.0.1:0",
                             "--proxy", proxy, *self._identity(caller), "--timeout", "20",
                             *(["--hangup-after", "0.5"] if hangup_by_caller else []),
                             f"sip:{callee}@{DOMAIN}")
        rc_caller = yield wait_exit(caller_ua, 30)
        rc_callee = yield wait_exit(callee_ua, 30)
        detail = caller_ua.describe() + callee_ua.describe()
        self.assertEqual((rc_caller, rc_callee), (0, 0), detail)
        ours, theirs = ("local", "remote") if hangup_by_caller else ("remote", "local")
        self.assertEqual(caller_ua.events("bye")[-1], {"event": "bye", "by": ours, "code": 200}, detail)
        self.assertEqual(callee_ua.events("bye")[-1].get("by"), theirs, detail)
        incoming = callee_ua.events("incoming")
        self.assertEqual(len(incoming), 1, detail)
        self.assertIn(f"sip:{caller}@{DOMAIN}", incoming[0]["from"], detail)
        self.assertEqual(incoming[0]["call_id"], caller_ua.events("established")[0]["call_id"], detail)
        print(f"sipproxy registrar: {caller} called {callee}, BYE by {'caller' if hangup_by_caller else 'callee'}: "
              f"ok")

    @inlineCallbacks
    def test_two_uas_register_and_call_each_other(self) -> Any:
        proxy_process = yield start_proxy(self, self.cwd, lambda: [f"udp:127.0.0.1:{reserve_port()}"],
                                          ["--registrar", "--domain", DOMAIN, "--users", "users"])
        proxy = "sip:" + proxy_process.legs[0].split(":", 1)[1]
        yield self._call(proxy, "alice", "bob", hangup_by_caller=True)
        yield self._call(proxy, "bob", "alice", hangup_by_caller=False)
        log = proxy_process.log()
        self.assertIn("alice@office.test", log)
        self.assertIn("bob@office.test", log)
        self.assertNotIn("Traceback", log)

    @inlineCallbacks
    def test_wrong_password_is_refused(self) -> Any:
        proxy_process = yield start_proxy(self, self.cwd, lambda: [f"udp:127.0.0.1:{reserve_port()}"],
                                          ["--registrar", "--domain", DOMAIN, "--users", "users"])
        proxy = "sip:" + proxy_process.legs[0].split(":", 1)[1]
        ua = start_ua(self, self.cwd, "bad", "register", "--leg", "udp:127.0.0.1:0", "--registrar", proxy,
                      *self._identity("alice", "guess"), "--timeout", "15")
        rc = yield wait_exit(ua, 25)
        self.assertEqual(rc, 1, ua.describe())
        self.assertEqual([e.get("code") for e in ua.events("register_failed")], [401], ua.describe())
        stop_process(proxy_process.proc)
