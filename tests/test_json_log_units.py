"""The JSON and text log formatters, the fields of message lines, and how
the observer is wired into twistd: pure, in-process tests.

The observer tests publish through Twisted's global log publisher, so
under trial an observer that raised (and was disabled by Twisted) would
be reported as a logged error and fail the test.
"""
from __future__ import annotations

import io
import json
import math
import os
from typing import Any

from twisted.application import service
from twisted.logger import ILogObserver, Logger, LogLevel, LogPublisher, globalLogPublisher, textFileLogObserver
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from sipproxy.app.logging_setup import (check_log_options, json_line, log_observer, logged_service, observer_for,
                                        relayed_event, text_line, with_log_observer)
from sipproxy.app.tap import Options
from sipproxy.observe.logfields import host_port, message_fields
from sipproxy.observe.logsafe import SafeLogger
from sipproxy.sip.message import Request, Response, parse
from sipproxy.testing import MemoryLeg
from tests.util import temp_dir

UNDECODABLE = b"sip:\xff\xfe@example.test".decode("utf-8", "surrogateescape")


def event(**fields: Any) -> dict[str, Any]:
    base = {"log_format": "{what} from {source}", "log_level": LogLevel.info, "log_namespace": "test.ns",
            "log_time": 1764694330.25, "what": "x", "source": "192.0.2.1:5060"}
    base.update(fields)
    return base


class Unrepresentable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


class JSONLineTests(SynchronousTestCase):
    def record(self, **fields: Any) -> dict[str, Any]:
        line = json_line(event(**fields))
        self.assertTrue(line.endswith("\n"))
        self.assertEqual(line.count("\n"), 1)
        self.assertTrue(line.isascii())
        return json.loads(line)

    def test_core_keys_then_fields(self) -> None:
        record = self.record(call_id="abc@host", method="INVITE", leg="udp:192.0.2.9:5060")
        self.assertEqual(list(record)[:9], ["time", "level", "namespace", "text", "call_id", "method", "source",
                                            "leg", "what"])
        self.assertEqual(record["time"], "2025-12-02T16:52:10.250000+00:00")
        self.assertEqual((record["level"], record["namespace"], record["text"]), ("info", "test.ns",
                                                                                  "x from 192.0.2.1:5060"))

    def test_surrogates_bytes_and_odd_values_do_not_raise(self) -> None:
        fields = dict(what=UNDECODABLE, raw=b"\xff\x00", nan=math.nan, obj=Unrepresentable(),
                      nested={"a": [1, (2, UNDECODABLE)]}, level_value=LogLevel.warn)
        self.assertIn('"what": "sip:\\udcff\\udcfe@example.test"', json_line(event(**fields)))
        record = self.record(**fields)
        self.assertEqual(record["what"], UNDECODABLE)  # read back, the same text
        self.assertEqual(record["raw"], "\\xff\x00")
        self.assertEqual(record["nan"], "nan")
        self.assertIn("unrepresentable Unrepresentable", record["obj"])
        self.assertEqual(record["nested"], {"a": [1, [2, UNDECODABLE]]})
        self.assertEqual(record["level_value"], "warn")

    def test_colliding_field_names_are_kept_apart(self) -> None:
        record = self.record(time="noon", text="hello", level="high")
        self.assertEqual((record["field_time"], record["field_text"], record["field_level"]),
                         ("noon", "hello", "high"))
        self.assertEqual(record["level"], "info")

    def test_a_failure_becomes_a_traceback_field(self) -> None:
        try:
            1 / 0
        except ZeroDivisionError:
            failure = Failure()
        record = self.record(log_failure=failure)
        self.assertIn("ZeroDivisionError", record["traceback"])

    def test_legacy_events_lose_their_duplicate_keys(self) -> None:
        legacy = {"message": ("UDPLeg starting on 5060",), "isError": 0, "system": "-", "time": 1.0,
                  "log_format": "{log_text}", "log_text": "UDPLeg starting on 5060", "log_namespace": "log_legacy",
                  "log_level": LogLevel.info, "log_time": 1.0, "log_system": "-"}
        record = json.loads(json_line(legacy))
        self.assertEqual(set(record), {"time", "level", "namespace", "text", "system"})

    def test_a_circular_value_still_gives_a_line(self) -> None:
        loop: list[Any] = []
        loop.append(loop)
        record = self.record(loop=loop)
        self.assertIn("loop", record)

    def test_an_unformattable_event_still_gives_a_line(self) -> None:
        record = self.record(log_format="{missing}")
        self.assertIn("Unable to format event", record["text"])


class TextLineTests(SynchronousTestCase):
    def test_the_call_id_follows_the_system(self) -> None:
        line = text_line(event(call_id="a84b4c76e66710@pc33"))
        assert line is not None
        self.assertRegex(line, r"^\S+ \[test\.ns#info\] \[a84b4c76e66710@pc33\] x from 192\.0\.2\.1:5060\n$")

    def test_no_call_id_no_brackets(self) -> None:
        line = text_line(event())
        assert line is not None
        self.assertRegex(line, r"^\S+ \[test\.ns#info\] x from")

    def test_a_hostile_call_id_cannot_end_the_bracket_or_add_lines(self) -> None:
        line = text_line(event(call_id="x] auth failed: ip=1.2.3.4\n%" + UNDECODABLE[4:6]))
        assert line is not None
        self.assertIn("[x%5D%20auth%20failed:%20ip=1.2.3.4%0A%25%FF%FE] x from", line)
        self.assertEqual(line.count("\n"), 1)
        line.encode("utf-8")  # strict: writable to any UTF-8 log

    def test_undecodable_text_is_escaped(self) -> None:
        line = text_line(event(what=UNDECODABLE))
        assert line is not None
        self.assertIn("sip:\\udcff\\udcfe@example.test", line)


class ObserverTests(SynchronousTestCase):
    """Through a log publisher, which disables an observer that raises and
    says so in a "Temporarily disabling observer" event (the witness sees
    it). The SafeLogger test goes through the global publisher: under
    trial, an observer failure there is a logged error that fails it."""

    def observe(self, fmt: str) -> io.TextIOWrapper:
        out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")  # strict, as a log file is
        self.publisher = LogPublisher(log_observer(out, fmt))
        self.witnessed: list[dict[str, Any]] = []
        self.publisher.addObserver(self.witnessed.append)
        self.addCleanup(self.assert_not_disabled)
        return out

    def assert_not_disabled(self) -> None:
        self.assertEqual([e for e in self.witnessed if "log_failure" in e], [])

    def written(self, out: io.TextIOWrapper) -> list[str]:
        out.flush()
        return [line for line in out.buffer.getvalue().decode("utf-8").splitlines()  # type: ignore[attr-defined]
                if "test_json_log_units" in line]

    def test_json_observer_survives_undecodable_text_from_a_plain_logger(self) -> None:
        out = self.observe("json")
        log = Logger(namespace="tests.test_json_log_units", observer=self.publisher)
        log.info("refused {uri}", uri=UNDECODABLE, call_id=UNDECODABLE)
        log.info("and still {state}", state="logging", call_id="c2")
        records = [json.loads(line) for line in self.written(out)]
        self.assertEqual([r["text"] for r in records], [f"refused {UNDECODABLE}", "and still logging"])
        self.assertEqual(records[0]["call_id"], UNDECODABLE)

    def test_text_observer_survives_it_too(self) -> None:
        out = self.observe("text")
        log = Logger(namespace="tests.test_json_log_units", observer=self.publisher)
        log.info("refused {uri}", uri=UNDECODABLE, call_id=UNDECODABLE)
        log.info("and still {state}", state="logging")
        lines = self.written(out)
        self.assertEqual(len(lines), 2)
        self.assertIn("] [sip:%FF%FE@example.test] refused", lines[0])
        self.assertIn("refused sip:\\udcff\\udcfe@example.test", lines[0])

    def test_an_ascii_stream_gets_escapes_not_an_exception(self) -> None:
        out = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
        observer = log_observer(out, "text")
        observer(event(what="Müller"))
        out.flush()
        self.assertIn("M\\xfcller", out.buffer.getvalue().decode("ascii"))  # type: ignore[attr-defined]

    def test_a_plain_text_observer_would_be_disabled(self) -> None:
        """Why the witness works: Twisted's own text observer on a strict
        UTF-8 file raises on such text, and the publisher says so."""
        out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
        witnessed: list[dict[str, Any]] = []
        publisher = LogPublisher(textFileLogObserver(out), witnessed.append)
        Logger(observer=publisher).info("refused {uri}", uri=UNDECODABLE)
        self.assertTrue(any("log_failure" in e for e in witnessed))

    def test_safe_logger_lines_are_json_too(self) -> None:
        out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
        observer = log_observer(out, "json")
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        SafeLogger(namespace="tests.test_json_log_units").warn("bad {uri}", uri=UNDECODABLE)
        record = json.loads(self.written(out)[0])
        self.assertEqual(record["uri"], "sip:\\udcff\\udcfe@example.test")


def request(call_id: str = "c1@example.test") -> Request:
    return parse((f"INVITE sip:bob@example.test SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1\r\n"
                  f"From: <sip:alice@example.test>;tag=1\r\nTo: <sip:bob@example.test>\r\nCall-ID: {call_id}\r\n"
                  f"CSeq: 7 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode())  # type: ignore


class MessageFieldsTests(SynchronousTestCase):
    def test_a_request(self) -> None:
        leg = MemoryLeg("192.0.2.9", 5060)
        self.assertEqual(message_fields(request(), ("192.0.2.1", 5062), leg),
                         {"source": "192.0.2.1:5062", "leg": leg.key, "method": "INVITE", "call_id": "c1@example.test"})

    def test_a_response_takes_its_method_from_cseq(self) -> None:
        response = Response(486, headers=[("Call-ID", "c2"), ("CSeq", "3 INVITE")])
        self.assertEqual(message_fields(response, ("2001:db8::1", 5060)),
                         {"source": "[2001:db8::1]:5060", "status": 486, "method": "INVITE", "call_id": "c2"})

    def test_a_bad_cseq_or_none_is_no_exception(self) -> None:
        response = Response(200, headers=[("Call-ID", "c3"), ("CSeq", "x")])
        self.assertEqual(message_fields(response), {"status": 200, "method": None, "call_id": "c3"})
        self.assertEqual(message_fields(None, ("192.0.2.1", 1)), {"source": "192.0.2.1:1"})
        self.assertIsNone(host_port(None))


class WiringTests(SynchronousTestCase):
    def options(self, *args: str, twistd: dict[str, Any] | None = None) -> Options:
        options = Options()
        if twistd is not None:
            options.parent = twistd  # type: ignore[attr-defined]
        options.parseOptions(["--legs", "udp:127.0.0.1:0", *args])
        return options

    def test_the_observer_becomes_the_applications_component(self) -> None:
        out = io.StringIO()
        observer = log_observer(out, "json")
        inner = service.MultiService()
        application = service.Application("sipproxy")
        with_log_observer(inner, observer).setServiceParent(application)
        self.assertIs(application.getComponent(ILogObserver), observer)
        self.assertIs(inner.parent.parent, service.IServiceCollection(application))  # type: ignore[union-attr]

    def test_no_observer_leaves_the_service_alone(self) -> None:
        inner = service.MultiService()
        self.assertIs(with_log_observer(inner, None), inner)

    def test_where_the_log_goes(self) -> None:
        cwd = temp_dir(self)
        path = os.path.join(cwd, "proxy.log")
        self.assertIsNone(observer_for(self.options("--log-format", "json")))  # not under twistd
        self.assertIsNotNone(observer_for(self.options(twistd={"nodaemon": True, "logfile": None})))
        self.assertIsNone(observer_for(self.options(twistd={"logfile": "-", "nodaemon": False})))  # twistd refuses
        self.assertIsNone(observer_for(self.options(twistd={"syslog": True, "nodaemon": True})))
        self.assertIsNone(observer_for(self.options(twistd={"logger": "x.y", "nodaemon": True})))
        observer = observer_for(self.options("--log-format", "json", twistd={"logfile": path}))
        assert observer is not None
        observer(event(call_id="to-file"))
        with open(path) as f:
            self.assertEqual(json.loads(f.read())["call_id"], "to-file")

    def test_bad_values_are_usage_errors(self) -> None:
        with self.assertRaises(SystemExit) as exit:
            self.options("--log-format", "yaml")
        self.assertEqual(exit.exception.code, 2)
        options = {"log-format": "json"}
        parented = type("O", (dict,), {"parent": {"syslog": True}})(options)
        with self.assertRaises(usage.UsageError):
            check_log_options(parented)
        check_log_options(options)
        self.assertEqual(options["log-format"], "json")

    def test_log_messages_puts_the_trace_on_the_dispatcher(self) -> None:
        from sipproxy.app.service import ProxyService
        from sipproxy.transport.message_log import MessageLog

        proxy = ProxyService(None, ["udp:127.0.0.1:0"], secret=b"k" * 32)
        self.assertIsNone(proxy.dispatcher.message_log)
        self.assertIs(logged_service(proxy, {"log-messages": True, "log-format": "text"}), proxy)
        self.assertIsInstance(proxy.dispatcher.message_log, MessageLog)


class WorkerRelayTests(SynchronousTestCase):
    def test_a_workers_json_line_is_relayed_with_its_fields(self) -> None:
        line = json.loads(json_line(event(call_id="w1", method="BYE")))
        level, text, fields = relayed_event(json.dumps(line))  # type: ignore[misc]
        self.assertEqual((level, text), (LogLevel.info, "x from 192.0.2.1:5060"))
        self.assertEqual((fields["call_id"], fields["method"], fields["worker_namespace"]), ("w1", "BYE", "test.ns"))
        self.assertNotIn("level", fields)

    def test_other_lines_are_not(self) -> None:
        for line in ("2026-12-02 text", "{not json", "[1, 2]", ""):
            self.assertIsNone(relayed_event(line))
