"""Interop: phones nobody here wrote register with sipproxy and call
through it.

- Two Perl Net::SIP::Simple UAs (tests/perl/ua.pl) register with digest
  authentication through C{twistd sipproxy --registrar --users} and call
  each other, RTP flowing both ways, then hang up.
- A wrong password gets 401 (REGISTER) / 407 (INVITE) again, and the
  callee never sees the call.
- sipp's REGISTER with C{[authentication]} (tests/sipp/register_auth.xml)
  succeeds after the challenge; with a wrong password it is challenged
  again.
- Two sipproxy nodes (127.0.0.1 and 127.0.0.2) share one Redis: a phone
  registers through node 1 and is called through node 2.

Each program runs as a subprocess with a hard timeout and is killed by
PID. Skipped when perl's Net::SIP, sipp or redis-server is missing, unless
SIPPROXY_REQUIRE_INTEROP=1 (then that fails). One summary line per run is
printed (trial shows it; pytest with -s).
"""
from __future__ import annotations

import os

import subprocess
from typing import Any, Optional

from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest
from twisted.trial.unittest import FailTest, SkipTest

from tests.redisserver import RedisServer
from tests.util import (
    REQUIRE_INTEROP,
    WaitTimeout,
    interop_required,
    process_exited,
    read_text,
    require_program,
    reserve_port,
    start_process,
    start_proxy,
    temp_dir,
    wait_until,
)

HERE = os.path.dirname(os.path.abspath(__file__))
UA = os.path.join(HERE, "perl", "ua.pl")
SIPP_REGISTER = os.path.join(HERE, "sipp", "register_auth.xml")
DOMAIN = "office.test"
USERS = "alice:wonderland\nbob:b0bsecret\n"
UA_TIMEOUT = 20  # ua.pl's own deadline, seconds; we wait a little longer

_PERL_PROBLEM: Optional[str] = None
_PERL_CHECKED = False


def require_net_sip() -> str:
    """The perl binary, if it has Net::SIP; else skip (or fail when
    SIPPROXY_REQUIRE_INTEROP=1)."""
    global _PERL_CHECKED, _PERL_PROBLEM
    perl = require_program("perl")
    if not _PERL_CHECKED:
        _PERL_CHECKED = True
        result = subprocess.run([perl, "-MNet::SIP", "-e", "print $Net::SIP::VERSION"], capture_output=True,
                                text=True, timeout=20)
        if result.returncode != 0:
            _PERL_PROBLEM = "perl module Net::SIP is not installed (Debian: libnet-sip-perl)"
    if _PERL_PROBLEM:
        if interop_required():
            raise FailTest(f"{_PERL_PROBLEM}, and {REQUIRE_INTEROP}=1 requires it")
        raise SkipTest(_PERL_PROBLEM)
    return perl


class _Phones:
    """Running ua.pl phones and reading what they printed."""

    perl: str
    cwd: str

    def phone(self, name: str, proxy: str, user: str, password: str, mode: str, to: Optional[str] = None,
              host: str = "127.0.0.1", extra: tuple = ()) -> Any:
        port = reserve_port(host)
        argv = [self.perl, UA, "--mode", mode, "--proxy", proxy, "--leg", f"{host}:{port}",
                "--from", f"sip:{user}@{DOMAIN}", "--user", user, "--password", password,
                "--timeout", str(UA_TIMEOUT), *extra]
        if to:
            argv += ["--to", f"sip:{to}@{DOMAIN}"]
        proc = start_process(self, argv, self.cwd, name)  # type: ignore[arg-type]
        proc.name = name  # type: ignore[attr-defined]
        return proc

    def output(self, proc: Any) -> str:
        return read_text(os.path.join(self.cwd, proc.name + ".out"))

    def describe(self, *procs: Any) -> str:
        return "\n".join(f"--- {p.name} rc={p.poll()} ---\n{self.output(p)}"
                         f"{read_text(os.path.join(self.cwd, p.name + '.err'))[-1500:]}" for p in procs)

    @inlineCallbacks
    def wait_for(self, proc: Any, text: str, timeout: float = UA_TIMEOUT + 5) -> Any:
        try:
            yield wait_until(lambda: text in self.output(proc) or proc.poll() is not None, timeout,
                             what=f"{proc.name} to print {text!r}")
        except WaitTimeout:
            raise AssertionError(f"{proc.name} did not print {text!r}\n{self.describe(proc)}")
        if text not in self.output(proc):
            raise AssertionError(f"{proc.name} exited without printing {text!r}\n{self.describe(proc)}")

    @inlineCallbacks
    def finished(self, proc: Any, timeout: float = UA_TIMEOUT + 5) -> Any:
        yield wait_until(process_exited(proc), timeout, what=f"{proc.name} to exit")
        return proc.returncode

    @inlineCallbacks
    def call(self, caller: tuple, callee: tuple, label: str) -> Any:
        """callee and caller: (proxy, user, password, host). Returns the
        two outputs after a call with RTP both ways and a BYE."""
        bob = self.phone(f"{label}-callee", callee[0], callee[1], callee[2], "callee", host=callee[3])
        yield self.wait_for(bob, "LISTENING")
        alice = self.phone(f"{label}-caller", caller[0], caller[1], caller[2], "caller", to=callee[1],
                           host=caller[3])
        rc_alice = yield self.finished(alice)
        rc_bob = yield self.finished(bob)
        out_alice, out_bob = self.output(alice), self.output(bob)
        detail = self.describe(alice, bob)
        self.assertEqual((rc_alice, rc_bob), (0, 0), detail)  # type: ignore[attr-defined]
        for line in ("REGISTERED expires=300", "ESTABLISHED"):
            self.assertIn(line, out_alice, detail)  # type: ignore[attr-defined]
            self.assertIn(line, out_bob, detail)  # type: ignore[attr-defined]
        self.assertIn("BYE done", out_alice, detail)  # type: ignore[attr-defined]
        self.assertIn("BYE received", out_bob, detail)  # type: ignore[attr-defined]
        self.assertIn("INCOMING INVITE", out_bob, detail)  # type: ignore[attr-defined]
        for out in (out_alice, out_bob):
            rtp = [line for line in out.splitlines() if line.startswith("RTP ")][-1]
            sent, received = (int(part.split("=")[1]) for part in rtp.split()[1:])
            self.assertEqual(sent, 50, detail)  # type: ignore[attr-defined]
            self.assertGreaterEqual(received, 40, detail)  # type: ignore[attr-defined]
        return out_alice, out_bob


def _rtp_line(out: str) -> str:
    return [line for line in out.splitlines() if line.startswith("RTP ")][-1]


class NetSIPInteropTests(_Phones, unittest.TestCase):
    timeout = 90

    def setUp(self) -> None:
        self.perl = require_net_sip()
        self.cwd = temp_dir(self)
        with open(os.path.join(self.cwd, "users"), "w") as f:
            f.write(USERS)

    @inlineCallbacks
    def start(self, *args: str) -> Any:
        proxy = yield start_proxy(self, self.cwd, lambda: [f"udp:127.0.0.1:{reserve_port('127.0.0.1')}"],
                                  ["--registrar", "--domain", DOMAIN, "--users", "users", *args])
        return proxy, proxy.legs[0].split(":", 1)[1]

    @inlineCallbacks
    def test_register_with_auth_and_call_each_other(self) -> Any:
        proxy, address = yield self.start()
        out_alice, out_bob = yield self.call((address, "alice", "wonderland", "127.0.0.1"),
                                             (address, "bob", "b0bsecret", "127.0.0.1"), "a2b")
        out_bob2, out_alice2 = yield self.call((address, "bob", "b0bsecret", "127.0.0.1"),
                                               (address, "alice", "wonderland", "127.0.0.1"), "b2a")
        log = proxy.log()
        self.assertIn("REGISTER sip:alice@office.test", log)
        self.assertIn("REGISTER sip:bob@office.test", log)
        print(f"\nNet::SIP interop: alice->bob caller [{_rtp_line(out_alice)}] callee [{_rtp_line(out_bob)}]; "
              f"bob->alice caller [{_rtp_line(out_bob2)}] callee [{_rtp_line(out_alice2)}]")

    @inlineCallbacks
    def test_wrong_password_is_challenged_again_and_never_reaches_the_callee(self) -> Any:
        proxy, address = yield self.start()
        bob = self.phone("callee", address, "bob", "b0bsecret", "callee")
        yield self.wait_for(bob, "LISTENING")
        bad_register = self.phone("bad-register", address, "alice", "guess", "caller", to="bob")
        self.assertEqual((yield self.finished(bad_register)), 1)
        self.assertIn("REGISTER FAILED code=401", self.output(bad_register), self.describe(bad_register))
        bad_call = self.phone("bad-call", address, "alice", "guess", "caller", to="bob", extra=("--no-register",))
        self.assertEqual((yield self.finished(bad_call)), 1)
        self.assertIn("CALL FAILED code=407", self.output(bad_call), self.describe(bad_call))
        self.assertNotIn("INCOMING", self.output(bob))
        self.assertNotIn("ESTABLISHED", self.output(bob))
        self.assertIsNone(bob.poll())  # still waiting for a call that never came
        print(f"\nNet::SIP wrong password: register -> {self.output(bad_register).strip().splitlines()[-1]}; "
              f"invite -> {[l for l in self.output(bad_call).splitlines() if 'FAILED' in l][0]}")


class SippRegisterTests(unittest.TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.sipp = require_program("sipp")
        self.cwd = temp_dir(self)
        with open(os.path.join(self.cwd, "users"), "w") as f:
            f.write(USERS)

    @inlineCallbacks
    def run_sipp(self, address: str, password: str, name: str) -> Any:
        host, port = address.split(":")
        log = os.path.join(self.cwd, f"{name}.log")
        argv = [self.sipp, address, "-sf", SIPP_REGISTER, "-s", "alice", "-au", "alice", "-ap", password,
                "-key", "domain", DOMAIN, "-m", "1", "-i", host, "-p", str(reserve_port(host)), "-nostdin",
                "-timeout", "15s", "-trace_logs", "-log_file", log, "-trace_msg", "-message_file",
                os.path.join(self.cwd, f"{name}.msg")]
        proc = start_process(self, argv, self.cwd, name)
        yield wait_until(process_exited(proc), 25, what="sipp to finish")
        return proc.returncode, read_text(log), read_text(os.path.join(self.cwd, f"{name}.msg"))

    @inlineCallbacks
    def test_register_with_authentication(self) -> Any:
        proxy = yield start_proxy(self, self.cwd, lambda: [f"udp:127.0.0.1:{reserve_port('127.0.0.1')}"],
                                  ["--registrar", "--domain", DOMAIN, "--users", "users"])
        address = proxy.legs[0].split(":", 1)[1]
        rc, log, messages = yield self.run_sipp(address, "wonderland", "good")
        self.assertEqual(rc, 0, messages[-3000:])
        self.assertIn("REGISTERED alice", log)
        self.assertIn("SIP/2.0 401 Unauthorized", messages)
        self.assertIn("SIP/2.0 200 OK", messages)
        self.assertIn("REGISTER sip:alice@office.test", proxy.log())
        rc, log, messages = yield self.run_sipp(address, "guess", "bad")
        self.assertEqual(rc, 0, messages[-3000:])
        self.assertIn("CHALLENGED AGAIN alice", log)
        self.assertNotIn("SIP/2.0 200 OK", messages)
        print("\nsipp REGISTER: right password -> 401 then 200; wrong password -> 401 then 401")


class TwoNodeRedisTests(_Phones, unittest.TestCase):
    timeout = 90

    @inlineCallbacks
    def setUp(self) -> Any:
        self.perl = require_net_sip()
        self.redis = RedisServer(self)
        yield self.redis.start()
        self.cwd = temp_dir(self)
        with open(os.path.join(self.cwd, "users"), "w") as f:
            f.write(USERS)

    @inlineCallbacks
    def test_register_through_node_1_and_be_called_through_node_2(self) -> Any:
        args = ["--registrar", "--domain", DOMAIN, "--users", "users", "--store", self.redis.url]
        node1 = yield start_proxy(self, self.cwd, lambda: [f"udp:127.0.0.1:{reserve_port('127.0.0.1')}"], args,
                                  name="node1")
        node2 = yield start_proxy(self, self.cwd, lambda: [f"udp:127.0.0.2:{reserve_port('127.0.0.2')}"], args,
                                  name="node2")
        address1 = node1.legs[0].split(":", 1)[1]
        address2 = node2.legs[0].split(":", 1)[1]
        out_alice, out_bob = yield self.call((address2, "alice", "wonderland", "127.0.0.1"),
                                             (address1, "bob", "b0bsecret", "127.0.0.1"), "2node")
        self.assertIn("REGISTER sip:bob@office.test", node1.log())
        self.assertNotIn("REGISTER sip:bob@office.test", node2.log())
        import redis

        client = redis.Redis.from_url(self.redis.url, decode_responses=True)
        self.addCleanup(client.close)
        keys = client.keys("sipproxy:b:{sip:bob@office.test}:*")
        self.assertEqual(len(keys), 1, keys)
        self.assertGreater(client.pttl(keys[0]), 0)
        print(f"\ntwo nodes, one Redis: bob registered via {address1}, alice called via {address2}: "
              f"caller [{_rtp_line(out_alice)}] callee [{_rtp_line(out_bob)}]")



