"""Interop: sipproxy's user agent (C{sipproxy.Simple}, in this process on
the real reactor) against Perl's Net::SIP::Simple (tests/perl/simple_ua.pl,
a subprocess), over UDP on loopback.

- each side calls the other;
- each side puts the other on hold with a re-INVITE (ours offers
  a=sendonly, Net::SIP's offers c=0.0.0.0);
- a MESSAGE each way inside the dialog, and a MESSAGE each way outside
  any dialog;
- BYE from the caller and from the callee, on either side.

The Perl side prints one JSON event per line; the test reads them back and
checks ours against theirs. Skipped when perl's Net::SIP is missing,
unless SIPPROXY_REQUIRE_INTEROP=1 (then it fails).
"""
from __future__ import annotations

import json
import os
import subprocess
from typing import Any, Optional

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial import unittest
from twisted.trial.unittest import FailTest, SkipTest

from tests.util import (
    REQUIRE_INTEROP,
    WaitTimeout,
    interop_required,
    read_text,
    require_program,
    reserve_port,
    start_process,
    temp_dir,
    wait_until,
)

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "perl", "simple_ua.pl")
PERL_TIMEOUT = 20

_NET_SIP: Optional[str] = None


def require_net_sip() -> str:
    """perl with Net::SIP, else skip (or fail under SIPPROXY_REQUIRE_INTEROP=1)."""
    global _NET_SIP
    perl = require_program("perl")
    if _NET_SIP is None:
        probe = subprocess.run([perl, "-MNet::SIP", "-MJSON::PP", "-e", "1"], capture_output=True, timeout=20)
        _NET_SIP = "" if probe.returncode == 0 else "perl module Net::SIP is not installed (Debian: libnet-sip-perl)"
    if _NET_SIP:
        if interop_required():
            raise FailTest(f"{_NET_SIP}, and {REQUIRE_INTEROP}=1 requires it")
        raise SkipTest(_NET_SIP)
    return perl


class PerlUA:
    """tests/perl/simple_ua.pl running as a subprocess."""

    def __init__(self, testcase: Any, perl: str, cwd: str, name: str, mode: str, *args: str) -> None:
        self.port = reserve_port()
        self.name = name
        self.cwd = cwd
        argv = [perl, SCRIPT, "--mode", mode, "--leg", f"udp:127.0.0.1:{self.port}",
                "--timeout", str(PERL_TIMEOUT), *args]
        self.proc = start_process(testcase, argv, cwd, name)
        self.uri = f"sip:netsip@127.0.0.1:{self.port}"

    def events(self, kind: Optional[str] = None) -> list[dict]:
        found = []
        for line in read_text(os.path.join(self.cwd, self.name + ".out")).splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if kind is None or event.get("event") == kind:
                found.append(event)
        return found

    def describe(self) -> str:
        return (f"--- {self.name} rc={self.proc.poll()}\n{read_text(os.path.join(self.cwd, self.name + '.out'))}"
                f"{read_text(os.path.join(self.cwd, self.name + '.err'))[-2000:]}")

    def ready(self) -> Deferred:
        return wait_until(lambda: self.events("ready") or self.proc.poll() is not None, 15,
                          what=f"{self.name} to start")

    @inlineCallbacks
    def finished(self) -> Any:
        yield wait_until(lambda: self.proc.poll() is not None, PERL_TIMEOUT + 10, what=f"{self.name} to exit")
        return self.proc.returncode


def send_message(ua: Any, uri: str, body: bytes) -> Deferred:
    """A MESSAGE outside any dialog, through the UA's endpoint (as
    Net::SIP's C{$ua->{endpoint}->new_request('MESSAGE', ...)}); fires
    with the final response."""
    from sipproxy.sip.uac import new_request

    def send(target: Any) -> Deferred:
        leg = target[0]
        request = new_request("MESSAGE", uri, ua.from_, f"<{uri}>", sent_by=leg.sent_by,
                              transport=leg.proto.upper(), body=body, content_type="text/plain")
        return ua.endpoint.send_request(request, target).deferred

    return ua.endpoint.resolve(uri).addCallback(send)


def _event(call: Any, name: str) -> Deferred:
    """A Deferred firing with the payload of the call's next C{name} event."""
    d: Deferred = Deferred()
    call.on(name, lambda payload: None if d.called else d.callback(payload))
    return d


def _with_timeout(d: Deferred, seconds: float, what: str) -> Deferred:
    def timed_out(result: Any, timeout: float) -> Any:
        raise AssertionError(f"no {what} within {timeout} s")

    return d.addTimeout(seconds, reactor, onTimeoutCancel=timed_out)


class NetSIPUATests(unittest.TestCase):
    timeout = 60

    def setUp(self) -> Any:
        self.perl = require_net_sip()
        self.cwd = temp_dir(self)
        from sipproxy import Simple

        self.ua = Simple(reactor, legs=["udp:127.0.0.1:0"], from_="sip:ours@127.0.0.1")
        self.addCleanup(self.ua.cleanup)
        leg = self.ua.dispatcher.legs[0]
        self.uri = f"sip:ours@127.0.0.1:{leg.port}"
        self.messages: list[tuple[bool, bytes]] = []  # (in dialog, body)

    def _answer_messages(self, call: Any) -> None:
        """Take MESSAGE in the dialog: 200, and remember the body."""

        def taken(transaction: Any) -> None:
            if transaction.request.method == "MESSAGE":
                self.messages.append((True, transaction.request.body))
                transaction.respond(200)

        call.on("request", taken)

    @inlineCallbacks
    def _wait_message(self, body: bytes, in_dialog: bool, perl: "PerlUA") -> Any:
        try:
            yield wait_until(lambda: (in_dialog, body) in self.messages, 10, what=f"MESSAGE {body!r}")
        except WaitTimeout:
            raise AssertionError(f"no MESSAGE {body!r} (we got {self.messages})\n{perl.describe()}")

    # -- we call Net::SIP ---------------------------------------------------------------------------
    @inlineCallbacks
    def test_we_call_hold_and_message_both_ways_we_hang_up(self) -> Any:
        perl = PerlUA(self, self.perl, self.cwd, "netsip-callee", "answer",
                      "--do", "waitreinvite,waitmessage,message:pong,hold,waitbye")
        yield perl.ready()
        call = yield self.ua.invite(perl.uri)
        self._answer_messages(call)
        their_hold = _event(call, "reinvite")
        response = yield call.hold()
        self.assertEqual(response.code, 200)
        response = yield call.request("MESSAGE", b"ping", "text/plain")
        self.assertEqual(response.code, 200)
        yield self._wait_message(b"pong", True, perl)
        request = yield _with_timeout(their_hold, 10, "re-INVITE from Net::SIP")
        self.assertIn(b"c=IN IP4 0.0.0.0", request.body)
        end = yield call.bye()
        self.assertEqual((end.by, end.code), ("local", 200))
        rc = yield perl.finished()
        self.assertEqual(rc, 0, perl.describe())
        self.assertEqual(perl.events("reinvite"), [{"event": "reinvite", "hold": 1}], perl.describe())
        self.assertEqual([e["body"] for e in perl.events("message")], ["ping"], perl.describe())
        self.assertEqual(perl.events("hold"), [{"event": "hold", "code": 200}], perl.describe())
        self.assertEqual(perl.events("bye"), [{"event": "bye", "by": "peer"}], perl.describe())
        print(f"Net::SIP callee: {[e['event'] for e in perl.events()]}")

    @inlineCallbacks
    def test_we_call_net_sip_hangs_up(self) -> Any:
        perl = PerlUA(self, self.perl, self.cwd, "netsip-callee", "answer", "--do", "sleep:0.3,bye")
        yield perl.ready()
        call = yield self.ua.invite(perl.uri)
        end = yield _with_timeout(call.ended, 10, "BYE from Net::SIP")
        self.assertEqual((end.by, end.code), ("remote", 200))
        rc = yield perl.finished()
        self.assertEqual(rc, 0, perl.describe())
        self.assertEqual(perl.events("bye"), [{"event": "bye", "by": "us"}], perl.describe())

    # -- Net::SIP calls us --------------------------------------------------------------------------
    def _listen(self) -> Deferred:
        """Take calls; fires with the first one established."""
        established: Deferred = Deferred()
        self.ua.listen(on_established=lambda call: None if established.called else established.callback(call))
        return established

    @inlineCallbacks
    def test_net_sip_calls_hold_and_message_both_ways_it_hangs_up(self) -> Any:
        established = self._listen()
        perl = PerlUA(self, self.perl, self.cwd, "netsip-caller", "call", "--to", self.uri,
                      "--do", "sleep:0.2,hold,message:ping,waitmessage,waitreinvite,bye")
        call = yield _with_timeout(established, 15, "the call from Net::SIP")
        self._answer_messages(call)
        their_hold = _event(call, "reinvite")
        request = yield _with_timeout(their_hold, 10, "re-INVITE from Net::SIP")
        self.assertIn(b"c=IN IP4 0.0.0.0", request.body)
        yield self._wait_message(b"ping", True, perl)
        response = yield call.request("MESSAGE", b"pong", "text/plain")
        self.assertEqual(response.code, 200)
        response = yield call.hold()
        self.assertEqual(response.code, 200)
        end = yield _with_timeout(call.ended, 10, "BYE from Net::SIP")
        self.assertEqual((end.by, end.code), ("remote", 200))
        rc = yield perl.finished()
        self.assertEqual(rc, 0, perl.describe())
        self.assertEqual([e["event"] for e in perl.events()],
                         ["ready", "established", "hold", "message_sent", "message", "reinvite", "bye", "done"],
                         perl.describe())
        self.assertEqual(perl.events("reinvite"), [{"event": "reinvite", "hold": 1}], perl.describe())
        print(f"Net::SIP caller: {[e['event'] for e in perl.events()]}")

    @inlineCallbacks
    def test_net_sip_calls_we_hang_up(self) -> Any:
        established = self._listen()
        perl = PerlUA(self, self.perl, self.cwd, "netsip-caller", "call", "--to", self.uri, "--do", "waitbye")
        call = yield _with_timeout(established, 15, "the call from Net::SIP")
        end = yield call.bye()
        self.assertEqual((end.by, end.code), ("local", 200))
        rc = yield perl.finished()
        self.assertEqual(rc, 0, perl.describe())
        self.assertEqual(perl.events("bye"), [{"event": "bye", "by": "peer"}], perl.describe())

    # -- MESSAGE outside a dialog -------------------------------------------------------------------
    @inlineCallbacks
    def test_message_outside_a_dialog_both_ways(self) -> Any:
        received: list[bytes] = []

        def take(transaction: Any) -> bool:
            if transaction.request.method != "MESSAGE":
                return False
            received.append(transaction.request.body)
            transaction.respond(200)
            return True

        self.ua.endpoint.on_request = take
        perl = PerlUA(self, self.perl, self.cwd, "netsip-sender", "message", "--to", self.uri, "--text", "hello")
        rc = yield perl.finished()
        self.assertEqual(rc, 0, perl.describe())
        self.assertEqual(received, [b"hello"])
        self.assertEqual(perl.events("message_sent"), [{"event": "message_sent", "in_dialog": 0, "code": 200}])

        perl = PerlUA(self, self.perl, self.cwd, "netsip-receiver", "answer", "--calls", "0", "--do", "waitmessage")
        yield perl.ready()
        response = yield send_message(self.ua, perl.uri, b"hi there")
        self.assertEqual(response.code, 200)
        rc = yield perl.finished()
        self.assertEqual(rc, 0, perl.describe())
        self.assertEqual([(e["in_dialog"], e["body"]) for e in perl.events("message")], [(0, "hi there")])
