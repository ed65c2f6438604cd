"""sipproxy-ua as a subprocess: register, call and answer on loopback, the
JSON event lines, the exit statuses, and one-line errors for bad options."""
from __future__ import annotations

import json
import os
import socket
import sys
from typing import Any

from twisted.internet import defer, error, protocol, reactor
from twisted.trial.unittest import TestCase

from sipproxy.app.ua import Simple

from tests.util import temp_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _Collect(protocol.ProcessProtocol):
    """Gathers a child's output; C{lines} fires with each JSON event as it
    comes (so a test can wait for C{listening})."""

    def __init__(self) -> None:
        self.out = b""
        self.err = b""
        self.events: list[dict] = []
        self.ended: defer.Deferred = defer.Deferred()
        self._waiting: list[tuple[str, defer.Deferred]] = []

    def outReceived(self, data: bytes) -> None:
        self.out += data
        while b"\n" in self.out:
            line, self.out = self.out.split(b"\n", 1)
            event = json.loads(line)
            self.events.append(event)
            for name, d in list(self._waiting):
                if event["event"] == name:
                    self._waiting.remove((name, d))
                    d.callback(event)

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def wait_for(self, name: str) -> defer.Deferred:
        for event in self.events:
            if event["event"] == name:
                return defer.succeed(event)
        d: defer.Deferred = defer.Deferred()
        self._waiting.append((name, d))
        return d

    def processEnded(self, reason: Any) -> None:
        code = reason.value.exitCode if isinstance(reason.value, error.ProcessTerminated) else 0
        self.ended.callback(code)


def run_cli(*args: str) -> _Collect:
    collect = _Collect()
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    reactor.spawnProcess(collect, sys.executable, [sys.executable, "-m", "sipproxy.ua.cli", *args], env=env,
                         path=ROOT)
    return collect


class CommandLineTests(TestCase):
    timeout = 60

    def names(self, collect: _Collect) -> list[str]:
        return [e["event"] for e in collect.events]

    @defer.inlineCallbacks
    def test_bad_options_give_one_line_and_status_2(self) -> Any:
        for args in (("call",), ("call", "--calls", "0", "sip:x@127.0.0.1"), ("frobnicate",),
                     ("register", "--leg", "udp:0.0.0.0:0", "--registrar", "sip:127.0.0.1"), ("register",), ("call", "sip:bob@[::1"), ("call", "--leg", "sctp:127.0.0.1", "sip:x@y"),
                     ("call", "--t1", "0", "sip:x@127.0.0.1"), ("call", "--t2", "61", "sip:x@127.0.0.1"),
                     ("call", "--timeout", "nan", "sip:x@127.0.0.1")):
            collect = run_cli(*args)
            code = yield collect.ended
            self.assertEqual(code, 2, args)
            lines = collect.err.decode().splitlines()
            self.assertEqual(len(lines), 1, (args, lines))
            self.assertTrue(lines[0].startswith("sipproxy-ua: "), lines)
            self.assertNotIn("Traceback", collect.err.decode())
            self.assertEqual(collect.events, [])

    @defer.inlineCallbacks
    def test_answer_and_call_talk_to_each_other(self) -> Any:
        answer = run_cli("answer", "--leg", "udp:127.0.0.1:0", "--from", "bob", "--calls", "2",
                         "--answer-after", "0.2", "--timeout", "40")
        listening = yield answer.wait_for("listening")
        leg = listening["legs"][0]
        self.assertTrue(leg.startswith("udp:127.0.0.1:"))
        target = f"sip:bob@{leg[4:]}"
        call = run_cli("call", "--leg", "udp:127.0.0.1:0", "--from", "alice", "--hangup-after", "0.2",
                       "--calls", "2", "--timeout", "40", target)
        code = yield call.ended
        self.assertEqual(code, 0, call.err.decode())
        self.assertEqual(self.names(call), ["listening", "ringing", "established", "media", "bye", "ringing",
                                            "established", "media", "bye", "done"])
        byes = [e for e in call.events if e["event"] == "bye"]
        self.assertEqual(byes[0], {"event": "bye", "by": "local", "code": 200})
        self.assertEqual(call.events[-1], {"event": "done", "ok": True})
        self.assertEqual(call.events[1], {"event": "ringing", "code": 180})
        code = yield answer.ended
        self.assertEqual(code, 0, answer.err.decode())
        self.assertEqual(self.names(answer), ["listening", "incoming", "established", "media", "bye", "incoming",
                                              "established", "media", "bye", "done"])
        self.assertIn("alice", answer.events[1]["from"])
        self.assertEqual(answer.events[4], {"event": "bye", "by": "remote", "code": 200})

    @defer.inlineCallbacks
    def test_ring_timeout_is_reported_as_cancelled_and_fails(self) -> Any:
        bob = Simple(reactor, legs=["udp:127.0.0.1:0"], from_="bob")
        self.addCleanup(bob.cleanup)
        bob.listen(answer_after=None)
        call = run_cli("call", "--leg", "udp:127.0.0.1:0", "--ring-time", "0.5", "--timeout", "20",
                       f"sip:bob@{bob.dispatcher.legs[0].sent_by}")
        code = yield call.ended
        self.assertEqual(code, 1)
        self.assertEqual(self.names(call), ["listening", "ringing", "cancelled", "done"])
        self.assertEqual(call.events[-1], {"event": "done", "ok": False})

    @defer.inlineCallbacks
    def test_answered_call_hung_up_before_its_ack_is_a_bye(self) -> Any:
        # the caller's ACK is lost and its BYE comes first (seen with sipp
        # -lost 10): the call was answered and ended normally
        callee = run_cli("answer", "--leg", "udp:127.0.0.1:0", "--calls", "1", "--timeout", "20")
        listening = yield callee.wait_for("listening")
        port = int(listening["legs"][0].rsplit(":", 1)[1])
        answers: defer.DeferredQueue = defer.DeferredQueue()

        class Phone(protocol.DatagramProtocol):
            def datagramReceived(self, data: bytes, addr: Any) -> None:
                answers.put(data.decode())

        phone = reactor.listenUDP(0, Phone(), interface="127.0.0.1")
        self.addCleanup(phone.stopListening)
        me = phone.getHost().port

        def request(method: str, cseq: int, to_tag: str = "", body: str = "") -> bytes:
            to = f"<sip:bob@127.0.0.1:{port}>" + (f";tag={to_tag}" if to_tag else "")
            head = (f"{method} sip:bob@127.0.0.1:{port} SIP/2.0\r\n"
                    f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK-{method}-{cseq}\r\n"
                    f"Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=a1\r\nTo: {to}\r\n"
                    f"Call-ID: early-bye-1\r\nCSeq: {cseq} {method}\r\nContact: <sip:alice@127.0.0.1:{me}>\r\n")
            if body:
                head += "Content-Type: application/sdp\r\n"
            return (head + f"Content-Length: {len(body)}\r\n\r\n{body}").encode()

        sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\n"
        phone.write(request("INVITE", 1, body=sdp), ("127.0.0.1", port))
        answer = ""
        while not answer.startswith("SIP/2.0 200"):
            answer = yield answers.get()
        to_tag = answer.split("\r\nTo: ")[1].split("\r\n")[0].split("tag=")[1].split(";")[0]
        phone.write(request("BYE", 2, to_tag), ("127.0.0.1", port))  # no ACK
        bye_answer = ""
        while "BYE" not in bye_answer:
            bye_answer = yield answers.get()
        self.assertTrue(bye_answer.startswith("SIP/2.0 200"), bye_answer)
        code = yield callee.ended
        self.assertEqual(code, 0, callee.events)
        self.assertIn({"event": "bye", "by": "remote", "code": 200}, callee.events)

    @defer.inlineCallbacks
    def test_refused_call_is_reported_with_its_code(self) -> Any:
        bob = Simple(reactor, legs=["udp:127.0.0.1:0"], from_="bob")
        self.addCleanup(bob.cleanup)
        bob.listen(on_create=lambda call, request: call.reject(486, "Busy Here") or True)
        call = run_cli("call", "--leg", "udp:127.0.0.1:0", "--timeout", "20",
                       f"sip:bob@{bob.dispatcher.legs[0].sent_by}")
        code = yield call.ended
        self.assertEqual(code, 1)
        self.assertEqual(call.events[1], {"event": "failed", "code": 486, "reason": "Busy Here"})

    @defer.inlineCallbacks
    def test_log_file_gets_the_log_and_stdout_only_events(self) -> Any:
        log = os.path.join(temp_dir(self), "ua.log")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            closed_port = s.getsockname()[1]
        call = run_cli("call", "--leg", "tcp:127.0.0.1:0", "--log", log, "--timeout", "20",
                       f"sip:bob@127.0.0.1:{closed_port};transport=tcp")
        self.assertEqual((yield call.ended), 1)
        self.assertEqual(call.events[1]["event"], "failed")
        self.assertEqual(call.events[1]["code"], 503)
        with open(log, encoding="utf-8") as f:
            self.assertIn("cannot connect", f.read())

    @defer.inlineCallbacks
    def test_register_with_auth_and_a_wrong_password(self) -> Any:
        server = Simple(reactor, legs=["udp:127.0.0.1:0"])
        self.addCleanup(server.cleanup)
        server.create_registrar(auth_users={"alice": "secret"}, min_expires=10, max_expires=120)
        address = server.dispatcher.legs[0].sent_by
        good = run_cli("register", "--registrar", f"sip:{address}", "--from", f"sip:alice@{address}",
                       "--password", "secret", "--expires", "600", "--timeout", "20")
        self.assertEqual((yield good.ended), 0, good.err.decode())
        self.assertEqual(good.events[1], {"event": "registered", "expires": 120})
        self.assertEqual(self.names(good), ["listening", "registered", "done"])
        bad = run_cli("register", "--registrar", f"sip:{address}", "--from", f"sip:alice@{address}",
                      "--auth-user", "alice", "--password", "wrong", "--timeout", "20")
        self.assertEqual((yield bad.ended), 1)
        self.assertEqual(bad.events[1]["event"], "register_failed")
        self.assertEqual(bad.events[1]["code"], 401)

    @defer.inlineCallbacks
    def test_t1_and_t2_set_the_retransmission_intervals(self) -> Any:
        """A REGISTER to a registrar that never answers is sent again after
        T1, 2*T1, ... capped at T2 until 64*T1 (RFC 3261 17.1.2.2): with
        T1 = 0.1 and T2 = 0.2 that is 1 + 32 copies in 6.4 s, against 7
        with T2 = 4."""
        class Silent(protocol.DatagramProtocol):
            received: list[bytes] = []

            def datagramReceived(self, data: bytes, addr: Any) -> None:
                self.received.append(data)

        silent = Silent()
        silent.received = []
        port = reactor.listenUDP(0, silent, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        address = f"127.0.0.1:{port.getHost().port}"
        register = run_cli("register", "--registrar", f"sip:{address}", "--from", f"sip:alice@{address}",
                           "--t1", "0.1", "--t2", "0.2", "--timeout", "30")
        self.assertEqual((yield register.ended), 1, register.err.decode())
        self.assertEqual(register.events[1]["event"], "register_failed")
        self.assertEqual(register.events[1]["code"], 408)
        copies = [d for d in silent.received if d.startswith(b"REGISTER ")]
        self.assertEqual(len({d for d in copies}), 1)  # the same request each time
        self.assertGreaterEqual(len(copies), 25)
        self.assertLessEqual(len(copies), 34)

    @defer.inlineCallbacks
    def test_answer_registered_and_called_through_a_proxy(self) -> Any:
        server = Simple(reactor, legs=["udp:127.0.0.1:0"], from_="operator")
        self.addCleanup(server.cleanup)
        server.create_registrar(min_expires=10)
        server.create_stateless_proxy()
        address = server.dispatcher.legs[0].sent_by
        answer = run_cli("answer", "--registrar", f"sip:{address}", "--from", f"sip:bob@{address}",
                         "--expires", "60", "--timeout", "30")
        registered = yield answer.wait_for("registered")
        self.assertEqual(registered["expires"], 60)
        call = run_cli("call", "--proxy", address, "--hangup-after", "0", "--timeout", "30", f"sip:bob@{address}")
        self.assertEqual((yield call.ended), 0, call.err.decode())
        self.assertEqual((yield answer.ended), 0, answer.err.decode())
        self.assertEqual(self.names(answer), ["listening", "registered", "incoming", "established", "media", "bye",
                                              "done"])
        # answer unregistered when it finished
        bindings = yield server._receivers[0].store.lookup(f"sip:bob@{address}")
        self.assertEqual(bindings, [])
