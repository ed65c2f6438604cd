"""--log-format json|text against a real twistd on loopback.

Two of our user agents (C{sipproxy-ua}, separate processes) register with
C{twistd sipproxy --registrar --users} and call each other through it;
the proxy runs with C{--log-format json --log-messages}. The test reads
what twistd wrote and checks that every line is one JSON object (twistd's
own start-up and shut-down lines included), finds the call's lines by
Call-ID, and checks that each line about a message carries call_id,
method, status (responses), source and leg. C{jq}, the tool operators
read such logs with, is an interop peer: that check is skipped when jq is
missing and required in CI. A text-format run shows the Call-ID in
brackets. Everything is bounded in time and killed by PID.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest

from tests.uapeer import start_ua, wait_event, wait_exit
from tests.util import (PROJECT_ROOT, UDPProbe, sip_options, read_text, require_program, reserve_port, run_process, start_proxy,
                        stop_process, system_program_environment, temp_dir, twistd_command, child_environment, wait_until)

DOMAIN = "office.test"
USERS = {"alice": "wonderland", "bob": "b0bsecret"}
ADDRESS = re.compile(r"^127\.0\.0\.1:\d+$")
JSON_FILTER = os.path.join(PROJECT_ROOT, "contrib", "fail2ban", "filter.d", "sipproxy-json.conf")


def json_records(text: str, testcase: unittest.TestCase) -> list[dict]:
    """Every line of C{text} as a JSON object; fails on any other line."""
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            record = json.loads(line)
        except ValueError:
            testcase.fail(f"line {number} is not JSON: {line!r}")
        testcase.assertIsInstance(record, dict, line)
        records.append(record)
    return records


class JSONLogCallTests(unittest.TestCase):
    timeout = 90

    def setUp(self) -> None:
        self.cwd = temp_dir(self)
        with open(os.path.join(self.cwd, "users"), "w") as f:
            f.write("".join(f"{user}:{password}\n" for user, password in USERS.items()))

    def _identity(self, user: str) -> list[str]:
        return ["--from", f"sip:{user}@{DOMAIN}", "--auth-user", user, "--password", USERS[user]]

    @inlineCallbacks
    def _call_through(self, log_format: str) -> Any:
        """A registered bob called by alice through the proxy; returns the
        proxy's whole log (after it shut down), the call's Call-ID and the
        UAs' addresses."""
        proxy = yield start_proxy(self, self.cwd, lambda: [f"udp:127.0.0.1:{reserve_port()}"],
                                  ["--registrar", "--domain", DOMAIN, "--users", "users",
                                   "--log-format", log_format, "--log-messages"])
        uri = "sip:" + proxy.legs[0].split(":", 1)[1]
        callee = start_ua(self, self.cwd, "bob", "answer", "--leg", "udp:127.0.0.1:0", "--registrar", uri,
                          "--proxy", uri, *self._identity("bob"), "--expires", "300", "--timeout", "30")
        yield wait_event(callee, "registered", 15)
        caller = start_ua(self, self.cwd, "alice", "call", "--leg", "udp:127.0.0.1:0", "--proxy", uri,
                          *self._identity("alice"), "--timeout", "20", "--hangup-after", "0.3",
                          f"sip:bob@{DOMAIN}")
        rc = yield wait_exit(caller, 30)
        self.assertEqual(rc, 0, caller.describe() + proxy.describe())
        yield wait_exit(callee, 30)
        call_id = caller.events("established")[0]["call_id"]
        stop_process(proxy.proc)  # SIGTERM: twistd writes its shut-down lines
        return proxy.log(), call_id, proxy, caller, callee

    @inlineCallbacks
    def test_every_line_of_a_call_is_found_by_its_call_id(self) -> Any:
        log, call_id, proxy, caller, callee = yield self._call_through("json")
        records = json_records(log, self)
        texts = [r["text"] for r in records]
        self.assertIn("starting up", texts[0], proxy.describe())
        self.assertEqual(texts[-1], "Server Shut Down.", proxy.describe())
        self.assertTrue(any(r["namespace"] == "log_legacy" for r in records), "Twisted's legacy lines are JSON too")
        for record in records:
            self.assertEqual(set(record) >= {"time", "level", "namespace", "text"}, True, record)

        ours = [r for r in records if r.get("call_id") == call_id]
        # every line that mentions the call at all carries its Call-ID as a field
        mentioning = [r for r in records if call_id in json.dumps(r)]
        self.assertEqual(mentioning, ours)
        caller_address = f"127.0.0.1:{caller.leg()[2]}"
        callee_address = f"127.0.0.1:{callee.leg()[2]}"
        seen = set()
        for record in ours:
            self.assertEqual(record["leg"], proxy.legs[0], record)
            self.assertRegex(record["source"], ADDRESS)
            self.assertIn(record["method"], ("INVITE", "ACK", "BYE"), record)
            if record["text"].split(" ", 2)[1][:1].isdigit():  # "received 200 OK (INVITE) ..."
                self.assertIsInstance(record["status"], int, record)
            else:
                self.assertNotIn("status", record)
            peer = record["source"] if record["direction"] == "in" else record["destination"]
            seen.add((record["direction"], record["method"], record.get("status"),
                      {caller_address: "alice", callee_address: "bob"}.get(peer)))
        for expected in [("in", "INVITE", None, "alice"), ("out", "INVITE", 407, "alice"),
                         ("out", "INVITE", None, "bob"), ("in", "INVITE", 200, "bob"),
                         ("out", "INVITE", 200, "alice"), ("in", "ACK", None, "alice"),
                         ("out", "ACK", None, "bob"), ("in", "BYE", None, "alice"), ("out", "BYE", None, "bob"),
                         ("in", "BYE", 200, "bob"), ("out", "BYE", 200, "alice")]:
            self.assertIn(expected, seen, f"{expected} missing from the call's lines:\n" + "\n".join(
                json.dumps(r) for r in ours))
        # every other line about a message names its Call-ID too (bob's REGISTERs)
        for record in records:
            if "method" in record:
                self.assertTrue(record.get("call_id"), record)
                self.assertRegex(record["source"], ADDRESS)
        registers = [r for r in records if r["namespace"] == "sipproxy.registrar.registrar"]
        self.assertTrue(registers, log)
        self.assertEqual({r["method"] for r in registers}, {"REGISTER"})
        print("\n".join(json.dumps(r) for r in ours))

    @inlineCallbacks
    def test_jq_selects_the_lines_of_the_call(self) -> Any:
        jq = require_program("jq")
        log, call_id, proxy, _, _ = yield self._call_through("json")
        path = os.path.join(self.cwd, "proxy.json")
        with open(path, "w") as f:
            f.write(log)
        # the README's example command
        result = run_process([jq, "-c", "--arg", "id", call_id, 'select(.call_id == $id) | [.direction, .method, '
                              '.status, .source]', path], timeout=30)
        self.assertEqual(result.returncode, 0, result)
        lines = result.stdout.splitlines()
        expected = sum(1 for r in json_records(log, self) if r.get("call_id") == call_id)
        self.assertEqual(len(lines), expected)
        self.assertGreaterEqual(len(lines), 11)
        self.assertIn('["in","INVITE",null,', lines[0])

    @inlineCallbacks
    def test_the_text_log_shows_the_call_id_in_brackets(self) -> Any:
        log, call_id, proxy, _, _ = yield self._call_through("text")
        lines = [line for line in log.splitlines() if f"] [{call_id}] " in line]
        self.assertTrue(any("received INVITE sip:bob@office.test from 127.0.0.1:" in line for line in lines), log)
        self.assertTrue(any("sent 407 Proxy Authentication Required (INVITE) to 127.0.0.1:" in line
                            for line in lines), log)
        self.assertTrue(any("received BYE " in line for line in lines), log)
        self.assertFalse(log.lstrip().startswith("{"))
        self.assertIn("Server Shut Down.", log)


def options_request(call_id: bytes, uri: bytes = b"sip:nobody@elsewhere.test") -> Any:
    def payload(local_port: int) -> bytes:
        return (b"INVITE " + uri + b" SIP/2.0\r\n"
                b"Via: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bK-%s;rport\r\n" % (local_port, call_id.hex().encode())
                + b"Max-Forwards: 70\r\nFrom: <sip:mallory@elsewhere.test>;tag=1\r\n"
                b"To: <sip:nobody@elsewhere.test>\r\nCall-ID: " + call_id + b"\r\nCSeq: 1 INVITE\r\n"
                b"Contact: <sip:mallory@127.0.0.1:%d>\r\nContent-Length: 0\r\n\r\n" % local_port)

    return payload


class JSONLogHostileInputTests(unittest.TestCase):
    """Lines about hostile messages, and many of them, without --log-messages."""

    timeout = 60

    def setUp(self) -> None:
        self.cwd = temp_dir(self)

    @inlineCallbacks
    def test_a_refused_request_has_its_fields_and_undecodable_text_stays_json(self) -> Any:
        proxy = yield start_proxy(self, self.cwd, lambda: [f"udp:127.0.0.1:{reserve_port()}"],
                                  ["--domain", "example.com", "--log-format", "json"])
        port = int(proxy.legs[0].rsplit(":", 1)[1])
        # a served-domain check refuses it (403): one line, with the message's fields
        probe = UDPProbe("127.0.0.1", port, options_request(b"refused-1@mallory"), self)
        answer = yield wait_until(probe, 10, what="the 403")
        self.assertTrue(answer.startswith(b"SIP/2.0 403 "), answer)
        # undecodable bytes in the Request-URI reach the log as text with surrogate escapes
        probe = UDPProbe("127.0.0.1", port, options_request(b"refused-2@mallory", b"sip:\xff\xfe@elsewhere.test"),
                         self)
        answer = yield wait_until(probe, 10, what="the answer to the undecodable request")
        self.assertTrue(answer.startswith(b"SIP/2.0 "), answer)
        # and the observer is still on afterwards
        probe = UDPProbe("127.0.0.1", port, options_request(b"refused-3@mallory"), self)
        yield wait_until(probe, 10, what="the third answer")
        yield wait_until(lambda: "refused-3@mallory" in proxy.log(), 10, what="the third line")
        stop_process(proxy.proc)
        records = json_records(proxy.log(), self)
        self.assertNotIn("disabling observer", proxy.log())
        refused = {r["call_id"]: r for r in records if r.get("call_id", "").startswith("refused-")}
        self.assertEqual(sorted(refused), ["refused-1@mallory", "refused-2@mallory", "refused-3@mallory"])
        first = refused["refused-1@mallory"]
        self.assertEqual((first["method"], first["leg"], first["namespace"]),
                         ("INVITE", proxy.legs[0], "sipproxy.access.domains"))
        self.assertRegex(first["source"], ADDRESS)
        self.assertIn("\\udcff\\udcfe", refused["refused-2@mallory"]["text"])
        self.assertEqual(records[-1]["text"], "Server Shut Down.")

    @inlineCallbacks
    def test_malformed_input_stays_one_line_per_source_per_interval(self) -> Any:
        proxy = yield start_proxy(self, self.cwd, lambda: [f"udp:127.0.0.1:{reserve_port()}"],
                                  ["--log-format", "json"])
        port = int(proxy.legs[0].rsplit(":", 1)[1])
        bad = b"OPTIONS sip:x@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bK%d\r\n" \
              b"Call-ID: flood-%d\r\nCSeq: x OPTIONS\r\nContent-Length: 0\r\n\r\n"
        answers = 0
        for i in range(40):
            probe = UDPProbe("127.0.0.1", port, lambda local, i=i: bad % (local, i, i), self)
            answer = yield wait_until(probe, 10, what="a 400")
            answers += answer.startswith(b"SIP/2.0 400 ")
        self.assertEqual(answers, 40)
        stop_process(proxy.proc)
        records = json_records(proxy.log(), self)
        refused = [r for r in records if r.get("call_id", "").startswith("flood-")]
        self.assertGreaterEqual(len(refused), 1)
        # 40 sources (one port each) from one IP: the source log keys by IP
        self.assertLessEqual(len(refused), 1 + 4, "one line per source IP per 10 s interval")
        self.assertEqual(refused[0]["method"], "OPTIONS")
        self.assertRegex(refused[0]["source"], ADDRESS)


class JSONLogWorkerTests(unittest.TestCase):
    timeout = 60

    @inlineCallbacks
    def test_a_workers_lines_reach_the_parents_log_as_json_with_their_fields(self) -> Any:
        proxy = yield start_proxy(self, temp_dir(self), lambda: [f"udp:127.0.0.1:{reserve_port()}"],
                                  ["--workers", "2", "--log-format", "json", "--log-messages"])
        port = int(proxy.legs[0].rsplit(":", 1)[1])
        yield wait_until(lambda: proxy.log().count(f"listening on {proxy.legs[0]}") >= 2, 20,
                         what="the second worker to listen")
        # many source ports: the kernel spreads them over both processes
        for n in range(40):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.bind(("127.0.0.1", 0))
                sock.settimeout(2)
                sock.sendto(sip_options("127.0.0.1", port, sock.getsockname()[1], call_id=f"wk-{n}"),
                            ("127.0.0.1", port))
                data, _ = sock.recvfrom(65535)
                self.assertTrue(data.startswith(b"SIP/2.0 200 "), data)
        stop_process(proxy.proc)
        records = json_records(proxy.log(), self)
        received = [r for r in records if r.get("direction") == "in" and r.get("call_id", "").startswith("wk-")]
        self.assertEqual(len(received), 40, proxy.describe())
        by_worker = [r for r in received if r.get("worker") == 1]
        self.assertTrue(by_worker, "the kernel gave the worker none of 40 sources")
        for record in by_worker:
            self.assertEqual((record["method"], record["leg"], record["worker_namespace"]),
                             ("OPTIONS", proxy.legs[0], "sipproxy.messages"))
            self.assertRegex(record["source"], ADDRESS)
            self.assertTrue(record["text"].startswith("worker 1: received OPTIONS "), record)


class JSONFail2banTests(unittest.TestCase):
    """contrib/fail2ban/filter.d/sipproxy-json.conf against the real JSON log."""

    timeout = 60

    @inlineCallbacks
    def test_the_json_filter_finds_the_sender_of_each_failed_login(self) -> Any:
        from tests.test_fail2ban import bad_register

        fail2ban_regex = require_program("fail2ban-regex")
        cwd = temp_dir(self)
        with open(os.path.join(cwd, "users"), "w") as f:
            f.write("alice:secret\n")
        proxy = yield start_proxy(self, cwd, lambda: [f"udp:127.0.0.1:{reserve_port()}"],
                                  ["--registrar", "--domain", "example.com", "--users", "users",
                                   "--log-format", "json"])
        port = int(proxy.legs[0].rsplit(":", 1)[1])
        for user, call_id in (("alice", "f2bj-1"), ('x\\" ip=198.51.100.7 port=1', "f2bj-2"),
                              ("alice", 'q\\"x]"@y')):
            probe = UDPProbe("127.0.0.1", port, bad_register(user, call_id), self)
            answer = yield wait_until(probe, 10, what="an answer to a failed REGISTER")
            self.assertTrue(answer.startswith(b"SIP/2.0 401 "), answer)
        yield wait_until(lambda: proxy.log().count("auth failed:") >= 3, 10, what="three failure lines")
        path = os.path.join(cwd, "proxy.json")
        with open(path, "w") as f:
            f.write(proxy.log())
        json_records(proxy.log(), self)
        result = run_process([fail2ban_regex, "--out", "ip", path, JSON_FILTER], timeout=30,
                             env=system_program_environment())
        self.assertEqual(result.returncode, 0, result)
        self.assertEqual(result.stdout.split(), ["127.0.0.1"] * 3, proxy.describe())


class JSONLogOptionTests(unittest.TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.cwd = temp_dir(self)

    def _twistd(self, *args: str) -> Any:
        leg = f"udp:127.0.0.1:{reserve_port()}"
        return run_process([*twistd_command(), *args[:args.index("sipproxy")], "--pidfile=", "sipproxy", "--legs",
                            leg, *args[args.index("sipproxy") + 1:]], timeout=30, cwd=self.cwd,
                           env=child_environment())

    def test_a_bad_log_format_is_one_line_and_exit_2(self) -> None:
        result = self._twistd("-n", "sipproxy", "--log-format", "xml")
        self.assertEqual(result.returncode, 2, result)
        self.assertEqual(result.stderr.strip().splitlines(),
                         ["twistd sipproxy: --log-format 'xml': want text or json"])

    def test_json_to_syslog_is_refused(self) -> None:
        result = self._twistd("-n", "--syslog", "sipproxy", "--log-format", "json")
        self.assertEqual(result.returncode, 2, result)
        self.assertIn("--log-format json", result.stderr)
        self.assertNotIn("Traceback", result.stderr)

    def test_an_unwritable_log_file_is_one_line(self) -> None:
        result = self._twistd("-n", "--logfile", os.path.join(self.cwd, "missing", "dir", "log"), "sipproxy",
                              "--log-format", "json")
        self.assertEqual(result.returncode, 1, result)
        self.assertIn("cannot open the log file", result.stderr)
        self.assertNotIn("Traceback", result.stderr)

    @inlineCallbacks
    def test_a_daemon_writes_json_to_its_log_file(self) -> Any:
        port = reserve_port()
        leg = f"udp:127.0.0.1:{port}"
        pidfile = os.path.join(self.cwd, "twistd.pid")
        logfile = os.path.join(self.cwd, "proxy.log")
        result = run_process([*twistd_command(), f"--pidfile={pidfile}", f"--logfile={logfile}", "sipproxy",
                              "--legs", leg, "--log-format", "json"], timeout=30, cwd=self.cwd,
                             env=child_environment())
        self.assertEqual(result.returncode, 0, result)
        yield wait_until(lambda: read_text(pidfile).strip(), 40, what="the daemon's pid file")
        pid = int(read_text(pidfile).strip())
        self.addCleanup(_kill_quietly, pid)
        yield wait_until(lambda: f"listening on {leg}" in read_text(logfile), 40, what="the daemon to listen")
        # twistd starts the services (and logs "listening") before its
        # reactor runs and takes over SIGTERM: a signal sent in between
        # kills the daemon before it can log its shut-down. An answer to
        # OPTIONS comes from the running reactor, after that.
        probe = UDPProbe("127.0.0.1", port, lambda local: sip_options("127.0.0.1", port, local), self)
        yield wait_until(probe, 40, interval=0.1, what="the daemon to answer OPTIONS")
        os.kill(pid, signal.SIGTERM)
        yield wait_until(lambda: "Server Shut Down." in read_text(logfile), 40, what="the daemon to stop")
        records = json_records(read_text(logfile), self)
        self.assertIn("starting up", records[0]["text"])
        self.assertEqual(records[-1]["text"], "Server Shut Down.")


def _kill_quietly(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class READMETests(unittest.SynchronousTestCase):
    def test_the_readme_json_example_has_the_documented_fields(self) -> None:
        with open(os.path.join(PROJECT_ROOT, "README.rst"), encoding="utf-8") as f:
            readme = f.read()
        section = readme[readme.index("Logs\n----"):]
        section = section[:section.index("\n-----", 10)]
        examples = [json.loads(line.strip()) for line in section.splitlines() if line.strip().startswith("{")]
        self.assertGreaterEqual(len(examples), 3)
        for record in examples:
            self.assertTrue({"time", "level", "namespace", "text"} <= set(record), record)
        about_messages = [r for r in examples if "method" in r]
        self.assertTrue(about_messages)
        for record in about_messages:
            self.assertTrue({"call_id", "method", "source", "leg"} <= set(record), record)
        self.assertIn("--log-format json", section)
        self.assertIn("jq -c --arg id", section)
