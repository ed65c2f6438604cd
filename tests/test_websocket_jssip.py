"""Interop with JsSIP, the SIP library of browser softphones, run by node
(tests/jssip/client.js, its packages installed by `npm install` in
tests/jssip, as .ci/run does).

Over ws: and over wss:, JsSIP registers with sipproxy's registrar, takes a
MESSAGE that a UDP user agent (sipproxy's own) sends to its address of
record and answers with a MESSAGE, calls the UDP agent and hangs up, and
takes a call from it until the agent's BYE; and, with Perl's Net::SIP as
the UDP side (tests/jssip/netsip_message.pl), takes its MESSAGE and sends
one back. The calls carry a fixed SDP:
JsSIP in node has no WebRTC, so the script gives it a stand-in
RTCPeerConnection; everything SIP is JsSIP's own.

Skipped when node or the packages are missing; failed instead under
SIPPROXY_REQUIRE_INTEROP=1."""
from __future__ import annotations

import json
import os
import shutil
from typing import Any, Callable, Optional

from twisted.internet import protocol, reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial import unittest
from twisted.trial.unittest import FailTest, SkipTest

from tests.certs import make_certificates
from tests.test_websocket import DOMAIN, SDP, LogEvents, ProxyRig, _walk, udp_phone
from tests.util import REQUIRE_INTEROP, interop_required, reserve_port, temp_dir

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "jssip")
SCRIPT = os.path.join(HERE, "client.js")
WAIT = 30.0


def require_jssip() -> str:
    """node's path; skips (fails under SIPPROXY_REQUIRE_INTEROP=1) without
    node or without tests/jssip/node_modules."""
    node = shutil.which("node") or shutil.which("nodejs")
    reason = None
    if node is None:
        reason = "node is not installed (apt-get install nodejs npm)"
    else:
        for package in ("jssip", "jssip-node-websocket"):
            if not os.path.isdir(os.path.join(HERE, "node_modules", package)):
                reason = f"npm package {package} is missing (run: cd tests/jssip && npm install)"
                break
    if reason is None:
        return node  # type: ignore[return-value]
    if interop_required():
        raise FailTest(f"{reason}, and {REQUIRE_INTEROP}=1 requires it")
    raise SkipTest(reason)


class JsSIPProcess(protocol.ProcessProtocol):
    """The node process: its JSON lines, each handed to C{on_event}."""

    def __init__(self, on_event: Callable[[dict], Any]) -> None:
        self.on_event = on_event
        self.events: list[dict] = []
        self.stderr = b""
        self._partial = b""
        self.ended: Deferred = Deferred()

    def outReceived(self, data: bytes) -> None:
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            self.events.append(event)
            self.on_event(event)

    def errReceived(self, data: bytes) -> None:
        self.stderr = (self.stderr + data)[-20000:]

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(getattr(reason.value, "exitCode", None))

    def describe(self) -> str:
        return "events: " + json.dumps(self.events, indent=1) + "\nstderr: " + self.stderr.decode(errors="replace")


class JsSIPInteropTests(unittest.TestCase):
    timeout = 90

    @inlineCallbacks
    def run_jssip(self, proto: str) -> Any:
        node = require_jssip()
        extra: tuple[str, ...] = ()
        env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}
        if proto == "wss":
            paths = make_certificates(temp_dir(self))
            extra = ("--tls-cert", paths["cert"], "--tls-key", paths["key"])
            env["SIPPROXY_CA"] = paths["ca"]
        rig = ProxyRig(self, f"udp:127.0.0.1:0,{proto}:127.0.0.1:0", extra=extra)
        log = LogEvents(self)
        bob = udp_phone(self, rig)
        bob_leg = bob.dispatcher.legs[0]
        bob_uri = f"sip:bob@{bob_leg.host}:{bob_leg.port}"
        got_messages: list[bytes] = []

        def on_request(transaction: Any) -> bool:
            request = transaction.request
            if request.method != "MESSAGE":
                return False
            got_messages.append(request.body)
            transaction.respond(200)
            return True

        bob.listen(answer_after=0, on_request=on_request)
        leg = rig.legs[proto]
        env.update(SIPPROXY_WS_URL=f"{proto}://{leg.host}:{leg.port}", SIPPROXY_AOR=f"sip:alice@{DOMAIN}",
                   SIPPROXY_PEER=bob_uri)
        outcome: dict[str, Any] = {}

        def on_event(event: dict) -> None:
            name = event.get("event")
            if name == "registered":
                d = bob.message(f"sip:alice@{DOMAIN}", "ping from a UDP phone")
                d.addCallbacks(lambda r: outcome.setdefault("message", r.code),
                               lambda f: outcome.setdefault("message", f.getErrorMessage()))
            elif name == "waiting-call":
                d = bob.invite(f"sip:alice@{DOMAIN}", sdp=SDP)

                def established(call: Any) -> Any:
                    outcome["call-in"] = "established"
                    return call.bye()
                d.addCallback(established)
                d.addErrback(lambda f: outcome.setdefault("call-in", f.getErrorMessage()))

        process = JsSIPProcess(on_event)
        transport = reactor.spawnProcess(process, node, [node, SCRIPT], env=env, path=HERE)

        def kill() -> None:
            if transport.pid is not None:
                transport.signalProcess("KILL")
        self.addCleanup(kill)
        code = yield process.ended.addTimeout(WAIT, reactor)
        names = [e["event"] for e in process.events]
        self.assertEqual(code, 0, process.describe())
        by_name = {e["event"]: e for e in process.events}
        self.assertEqual(by_name["registered"]["status"], 200, process.describe())
        self.assertEqual(by_name["message-received"]["body"], "ping from a UDP phone")
        self.assertEqual(by_name["message-sent"]["status"], 200)
        self.assertEqual(got_messages, [b"pong from JsSIP"])
        self.assertEqual(outcome.get("message"), 200)
        self.assertEqual(outcome.get("call-in"), "established", process.describe())
        for step in ("call-out-confirmed", "call-out-ended", "call-in", "call-in-confirmed", "call-in-ended",
                     "unregistered"):
            self.assertIn(step, names, process.describe())
        self.assertEqual(by_name["call-in-ended"]["originator"], "remote")  # bob's BYE reached JsSIP
        self.assertTrue(any(f"transport={proto}" in r for r in by_name["call-in"]["record_route"]),
                        by_name["call-in"])
        self.assertEqual(log.failures(), [])
        # the transcript, for `pytest -rA` (what a closing note shows)
        print(f"JsSIP over {proto}:", " ".join(
            names[i] + (f"({process.events[i]['status']})" if "status" in process.events[i] else "")
            for i in range(len(names))))

    def test_jssip_over_ws(self) -> Any:
        return self.run_jssip("ws")

    def test_jssip_over_wss(self) -> Any:
        return self.run_jssip("wss")

    @inlineCallbacks
    def run_with_netsip(self, proto: str, digest: bool = False) -> Any:
        """The UDP side is Perl's Net::SIP: it sends JsSIP a MESSAGE through
        the proxy once JsSIP has registered, and takes JsSIP's answer. With
        C{digest}, the proxy has --users: JsSIP answers the 401 to its
        REGISTER and the 407 to its MESSAGE (Net::SIP's, from outside the
        domain, needs none)."""
        node = require_jssip()
        perl = require_netsip()
        extra: tuple[str, ...] = ()
        env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"), "SIPPROXY_CALLS": "0"}
        if proto == "wss":
            paths = make_certificates(temp_dir(self))
            extra = ("--tls-cert", paths["cert"], "--tls-key", paths["key"])
            env["SIPPROXY_CA"] = paths["ca"]
        if digest:
            users = os.path.join(temp_dir(self), "users")
            with open(users, "w") as f:
                f.write("alice:secret\n")
            extra += ("--users", users)
            env["SIPPROXY_PASSWORD"] = "secret"
        rig = ProxyRig(self, f"udp:127.0.0.1:0,{proto}:127.0.0.1:0", extra=extra)
        log = LogEvents(self)
        udp, leg = rig.legs["udp"], rig.legs[proto]
        perl_port = reserve_port("127.0.0.1")
        perl_uri = f"sip:carol@127.0.0.1:{perl_port}"
        env.update(SIPPROXY_WS_URL=f"{proto}://{leg.host}:{leg.port}", SIPPROXY_AOR=f"sip:alice@{DOMAIN}",
                   SIPPROXY_PEER=perl_uri)
        netsip = JsSIPProcess(lambda event: None)
        netsip_lines: list[str] = []
        started: list[Any] = []

        def on_event(event: dict) -> None:
            if event.get("event") == "registered" and not started:
                argv = [perl, os.path.join(HERE, "netsip_message.pl"), "--proxy", f"{udp.host}:{udp.port}",
                        "--leg", f"127.0.0.1:{perl_port}", "--from", perl_uri, "--to", f"sip:alice@{DOMAIN}"]
                started.append(reactor.spawnProcess(netsip, perl, argv, env=dict(os.environ), path=HERE))

        netsip.outReceived = lambda data: netsip_lines.extend(data.decode(errors="replace").splitlines())  # type: ignore
        process = JsSIPProcess(on_event)
        transport = reactor.spawnProcess(process, node, [node, SCRIPT], env=env, path=HERE)

        def kill() -> None:
            for child in [transport, *started]:
                if child.pid is not None:
                    child.signalProcess("KILL")
        self.addCleanup(kill)

        def late(failure: Any) -> Any:
            raise AssertionError(f"JsSIP did not finish in {WAIT} s\n{process.describe()}\nNet::SIP: {netsip_lines}"
                                 f"\n{netsip.stderr.decode(errors='replace')}\nproxy: {log.lines('sipproxy')}")
        code = yield process.ended.addTimeout(WAIT, reactor).addErrback(late)
        self.assertEqual(code, 0, process.describe() + f"\nproxy: {log.lines('sipproxy')}")
        self.assertTrue(started, process.describe())
        perl_code = yield netsip.ended.addTimeout(WAIT, reactor)
        self.assertEqual(perl_code, 0, netsip_lines + [netsip.stderr.decode(errors="replace")])
        by_name = {e["event"]: e for e in process.events}
        self.assertEqual(by_name["message-received"]["body"], "ping from Net::SIP")
        self.assertEqual(by_name["message-sent"]["status"], 200)
        self.assertIn("MESSAGE SENT code=200", netsip_lines)
        self.assertIn("MESSAGE RECEIVED body=pong from JsSIP", netsip_lines)
        self.assertEqual(log.failures(), [])
        if digest:  # the proxy challenged JsSIP, and JsSIP's answers passed
            from sipproxy.access.digest_auth import Authorize

            authorizers = [r for r in _walk(rig.service.dispatcher.receiver) if isinstance(r, Authorize)]
            self.assertEqual(sum(a.challenges for a in authorizers), 3, authorizers)  # REGISTER, MESSAGE, un-REGISTER
        print(f"JsSIP over {proto} with Net::SIP{' and digest' if digest else ''}:", " ".join(e["event"] for e in process.events), "|",
              " | ".join(netsip_lines))

    def test_jssip_over_ws_with_netsip(self) -> Any:
        return self.run_with_netsip("ws")

    def test_jssip_over_wss_with_netsip(self) -> Any:
        return self.run_with_netsip("wss")

    def test_jssip_over_wss_with_digest_authentication(self) -> Any:
        """The README's configuration: wss, --registrar, --users."""
        return self.run_with_netsip("wss", digest=True)


def require_netsip() -> str:
    """perl with Net::SIP (Debian's libnet-sip-perl); skips, or fails under
    SIPPROXY_REQUIRE_INTEROP=1, without it."""
    import subprocess

    perl = shutil.which("perl")
    reason = None
    if perl is None:
        reason = "perl is not installed"
    elif subprocess.run([perl, "-MNet::SIP", "-e", "1"], capture_output=True, timeout=20).returncode != 0:
        reason = "perl's Net::SIP is not installed (apt-get install libnet-sip-perl)"
    if reason is None:
        return perl  # type: ignore[return-value]
    if interop_required():
        raise FailTest(f"{reason}, and {REQUIRE_INTEROP}=1 requires it")
    raise SkipTest(reason)
