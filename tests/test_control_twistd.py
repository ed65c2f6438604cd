"""The control socket of a real C{twistd -n sipproxy}, asked with the real
C{sipproxy-ctl} (C{python -m sipproxy.app.ctl} of this checkout).

A phone (our own user agent) registers; C{sipproxy-ctl registrations}
shows it and C{unregister} removes it; a TCP connection shows in C{tcp
connections}; a call relayed by C{--nathelper} between two legs shows in
C{relay sessions} while it is up. Everything on loopback (127.0.0.1 and
127.0.0.2), every process killed by PID in cleanup. The outputs are
printed, for the issue's closing note.
"""
from __future__ import annotations

import json
import os
import re
import socket
import stat
import sys
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest

from tests.uapeer import start_ua, wait_event, wait_exit
from tests.util import (ProcessResult, child_environment, reserve_port, run_process, start_proxy, temp_dir,
                        wait_until)

DOMAIN = "office.test"
A, B = "127.0.0.1", "127.0.0.2"


def readme_commands() -> list[list[str]]:
    """The C{sipproxy-ctl} command lines of README's "Running in production"."""
    from tests.util import PROJECT_ROOT

    with open(os.path.join(PROJECT_ROOT, "README.rst")) as f:
        text = f.read()
    block = text.split("when the socket is missing or the call fails::", 1)[1].split("\n\n")[1]
    return [line.split()[1:] for line in block.splitlines() if line.strip().startswith("sipproxy-ctl ")]


def control_socket_up(cwd: str) -> Any:
    """Fires once the proxy's default control socket exists. start_proxy
    waits for the legs' "listening on" lines, and the control service,
    added after the legs, binds its socket a moment later: ci18 (PyPy)
    found it missing in that moment."""
    path = os.path.join(cwd, "sipproxy.ctl")
    return wait_until(lambda: os.path.exists(path), 15, what=f"the control socket {path}")


def ctl(cwd: str, *args: str) -> ProcessResult:
    """Run C{sipproxy-ctl ARGS} in C{cwd} (so it finds the default socket)."""
    return run_process([sys.executable, "-m", "sipproxy.app.ctl", *args], 20, cwd=cwd, env=child_environment())


class ControlOverTwistdTests(unittest.TestCase):
    timeout = 90

    @inlineCallbacks
    def _proxy(self, *args: str) -> Any:
        self.cwd = temp_dir(self)
        low = reserve_port(A, also=[B])
        self.port = low

        def legs() -> list[str]:
            port = self.port = reserve_port(A, also=[B])
            return [f"udp:{A}:{port}", f"tcp:{A}:{port}", f"udp:{B}:{port}"]

        self.proxy = yield start_proxy(self, self.cwd, legs, ["--registrar", "--domain", DOMAIN, *args])
        yield control_socket_up(self.cwd)
        return self.proxy

    def ok(self, result: ProcessResult) -> str:
        self.assertEqual(result.returncode, 0, f"{result}\n{self.proxy.describe()}")
        self.assertEqual(result.stderr, "", result)
        return result.stdout

    @inlineCallbacks
    def test_registrations_unregister_tcp_and_permissions(self) -> Any:
        yield self._proxy()
        path = os.path.join(self.cwd, "sipproxy.ctl")
        info = os.stat(path)
        self.assertTrue(stat.S_ISSOCK(info.st_mode))
        self.assertEqual(stat.S_IMODE(info.st_mode), 0o600)

        proxy_uri = f"sip:{A}:{self.port}"
        phone = start_ua(self, self.cwd, "alice", "register", "--leg", f"udp:{A}:0", "--registrar", proxy_uri,
                         "--from", f"sip:alice@{DOMAIN}", "--expires", "300", "--timeout", "15")
        registered = yield wait_event(phone, "registered", 15)
        self.assertEqual(registered["expires"], 300, phone.describe())
        self.assertEqual((yield wait_exit(phone, 15)), 0, phone.describe())
        _, _, phone_port = phone.leg()

        listing = self.ok(ctl(self.cwd, "registrations"))
        print(f"\n$ sipproxy-ctl registrations\n{listing}", end="")
        lines = listing.splitlines()
        self.assertEqual(lines[0], f"sip:alice@{DOMAIN}")
        self.assertIn(f"<sip:alice@{A}:{phone_port}>", lines[1])
        expires = int(re.search(r"  expires (\d+) s  ", lines[1]).group(1))
        self.assertTrue(0 < expires <= 300, lines[1])  # what is left of the 300 s granted
        self.assertIn(f"from udp:{A}:{phone_port}", lines[1])
        self.assertEqual(lines[-1], "1 address-of-record, 1 binding")

        as_json = json.loads(self.ok(ctl(self.cwd, "--json", "registrations", f"alice@{DOMAIN}")))
        (entry,) = as_json["aors"]
        self.assertEqual(entry["aor"], f"sip:alice@{DOMAIN}")
        self.assertEqual([b["contact"] for b in entry["bindings"]], [f"sip:alice@{A}:{phone_port}"])

        stats = json.loads(self.ok(ctl(self.cwd, "--json", "stats")))
        self.assertEqual(stats["pid"], self.proxy.pid)
        self.assertEqual(stats["registrations"], {"aors": 1, "bindings": 1})
        # the counters the metrics endpoint serves, named as it names them
        self.assertEqual(stats["counters"]['sipproxy_requests_received_total{method="REGISTER"}'], 1)
        self.assertEqual(stats["counters"]['sipproxy_registrations_total{status_class="2xx"}'], 1)

        # a TCP leg with a connection open: a client that sent an RFC 5626 ping
        with socket.create_connection((A, self.port), timeout=5) as client:
            client.sendall(b"\r\n\r\n")
            self.assertEqual(client.recv(16), b"\r\n")  # the pong: the proxy has the connection now
            client_port = client.getsockname()[1]
            connections = self.ok(ctl(self.cwd, "tcp", "connections"))
            print(f"$ sipproxy-ctl tcp connections\n{connections}", end="")
            self.assertIn(f"tcp:{A}:{self.port}  in   {A}:{client_port}  open", connections)
            self.assertEqual(connections.splitlines()[-1], "1 connection")
            self.assertEqual(json.loads(self.ok(ctl(self.cwd, "--json", "stats")))["tcp"]["connections"], 1)

        removed = self.ok(ctl(self.cwd, "unregister", f"sip:alice@{DOMAIN}"))
        print(f"$ sipproxy-ctl unregister sip:alice@{DOMAIN}\n{removed}", end="")
        self.assertEqual(removed, f"sip:alice@{DOMAIN}: 1 binding removed\n")
        self.assertEqual(self.ok(ctl(self.cwd, "registrations")), "0 addresses-of-record, 0 bindings\n")
        self.assertEqual(self.ok(ctl(self.cwd, "unregister", f"sip:alice@{DOMAIN}")),
                         f"sip:alice@{DOMAIN}: 0 bindings removed\n")
        self.assertIn(f"control: unregistered sip:alice@{DOMAIN} (1 bindings removed)", self.proxy.log())

        # no relay in this process: one line, status 1
        failed = ctl(self.cwd, "relay", "sessions")
        self.assertEqual(failed.returncode, 1, failed)
        self.assertEqual(failed.stderr.count("\n"), 1, failed)
        self.assertIn("no relay in this process", failed.stderr)
        self.assertNotIn("Traceback", self.proxy.log() + self.proxy.errors())

    @inlineCallbacks
    def test_relay_sessions_during_a_relayed_call(self) -> Any:
        # with --metrics the store is wrapped (timed): the listing must still reach it
        yield self._proxy("--nathelper", "--metrics", f"{A}:{reserve_port(A, socket.SOCK_STREAM)}")
        proxy_uri = f"sip:{A}:{self.port}"
        callee = start_ua(self, self.cwd, "bob", "answer", "--leg", f"udp:{B}:0", "--from", f"sip:bob@{B}",
                          "--calls", "1", "--timeout", "40")
        yield wait_event(callee, "listening", 15)
        _, _, callee_port = callee.leg()
        # the caller is on 127.0.0.1 and the callee on 127.0.0.2: the call changes legs, so its media is relayed
        caller = start_ua(self, self.cwd, "alice", "call", "--leg", f"udp:{A}:0", "--proxy", proxy_uri,
                          "--from", f"sip:alice@{DOMAIN}", "--hangup-after", "30", "--timeout", "40",
                          f"sip:bob@{B}:{callee_port}")
        established = yield wait_event(caller, "established", 20)
        call_id = established["call_id"]
        sessions = self.ok(ctl(self.cwd, "relay", "sessions"))
        print(f"\n$ sipproxy-ctl relay sessions\n{sessions}", end="")
        lines = sessions.splitlines()
        self.assertEqual(lines[-1], "1 session")
        self.assertTrue(lines[0].startswith(f"{call_id}  session "), sessions)
        (session,) = json.loads(self.ok(ctl(self.cwd, "--json", "relay", "sessions", call_id)))["sessions"]
        self.assertEqual(session["call_id"], call_id)
        self.assertEqual(session["uri_from"], f"sip:alice@{DOMAIN}")
        self.assertEqual(json.loads(self.ok(ctl(self.cwd, "--json", "relay", "sessions", "no-such-call"))),
                         {"sessions": []})
        stats = json.loads(self.ok(ctl(self.cwd, "--json", "stats")))
        self.assertEqual(stats["relay"]["sessions"], 1)
        self.assertGreaterEqual(stats["relay"]["sockets"], 4)  # RTP and RTCP on each side
        # the README's examples, as they stand, against this proxy
        commands = readme_commands()
        self.assertEqual(len(commands), 7)
        for command in commands:
            result = ctl(self.cwd, *command)
            self.assertEqual((result.returncode, result.stderr), (0, ""), result)
            self.assertTrue(result.stdout.strip(), result)
        # media flows: the packet counters of the session grow
        yield wait_until(lambda: json.loads(ctl(self.cwd, "--json", "stats").stdout)["relay"]["packets"] > 0, 15,
                         interval=0.2, what="relayed packets to be counted")

    @inlineCallbacks
    def test_missing_socket_bad_command_and_reload(self) -> Any:
        yield self._proxy()
        missing = ctl(self.cwd, "--socket", os.path.join(self.cwd, "nothing.ctl"), "stats")
        self.assertEqual(missing.returncode, 1, missing)
        self.assertEqual(missing.stdout, "")
        self.assertEqual(missing.stderr.count("\n"), 1, missing)
        self.assertIn("cannot connect to", missing.stderr)
        bad = ctl(self.cwd, "frobnicate")
        self.assertEqual(bad.returncode, 2, bad)
        self.assertEqual(bad.stderr.count("\n"), 1, bad)
        # reload: the service's reload() (the domains come from the command line, so nothing changes)
        reload = ctl(self.cwd, "reload")
        self.assertEqual(reload.returncode, 0, reload)
        self.assertTrue(reload.stdout.startswith("reload done: "), reload)
        self.assertIn("control: reload requested", self.proxy.log())

    @inlineCallbacks
    def test_a_failed_reload_is_status_1_and_keeps_the_users(self) -> Any:
        cwd = temp_dir(self)
        users = os.path.join(cwd, "users")
        with open(users, "w") as f:
            f.write("alice:wonderland\n")
        self.proxy = yield start_proxy(self, cwd, lambda: [f"udp:{A}:{reserve_port()}"],
                                       ["--registrar", "--domain", DOMAIN, "--users", users])
        yield control_socket_up(cwd)
        with open(users, "w") as f:
            f.write("alice\n")  # no password: the reload must fail
        failed = ctl(cwd, "reload")
        self.assertEqual(failed.returncode, 1, failed)
        self.assertEqual(failed.stdout.count("\n"), 1, failed)
        self.assertTrue(failed.stdout.startswith("reload FAILED: "), failed)
        self.assertIn("line 1", failed.stdout)
        self.assertNotIn("Traceback", self.proxy.log())
