"""The control socket in process: JSON-RPC framing and errors, hostile
input, permissions, stale and busy socket files, and the option checks.
Real UNIX sockets in a temporary directory; a client made of Twisted
parts, so the reactor is never blocked.
"""
from __future__ import annotations

import json
import os
import socket
import stat
from typing import Any, Optional

from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import UNIXClientEndpoint, connectProtocol
from twisted.logger import globalLogPublisher
from twisted.python import usage
from twisted.trial import unittest

from sipproxy.app import control
from sipproxy.app.control import (ControlCommands, ControlService, INVALID_PARAMS, INVALID_REQUEST,
                                  METHOD_NOT_FOUND, PARSE_ERROR, UNAVAILABLE, check_control_options,
                                  control_path_problem)
from sipproxy.registrar.location import Binding
from sipproxy.registrar.memory_store import MemoryStore
from tests.util import temp_dir


class _Client(protocol.Protocol):
    """Collects answer lines; C{closed} fires when the server hangs up."""

    def __init__(self) -> None:
        self.data = b""
        self.closed: defer.Deferred = defer.Deferred()
        self.waiting: list[tuple[int, defer.Deferred]] = []

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        self._check()

    def lines(self) -> list[Any]:
        return [json.loads(line) for line in self.data.split(b"\n") if line]

    def wait_lines(self, count: int) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self.waiting.append((count, d))
        self._check()
        return d.addTimeout(10, reactor)

    def _check(self) -> None:
        done = len(self.lines()) if self.data.endswith(b"\n") else len(self.lines()) - 1
        for item in list(self.waiting):
            if done >= item[0]:
                self.waiting.remove(item)
                item[1].callback(self.lines())

    def connectionLost(self, reason: Any = None) -> None:
        self.closed.callback(None)


class ControlSocketTests(unittest.TestCase):
    timeout = 20

    def setUp(self) -> None:
        self.dir = temp_dir(self)
        self.path = os.path.join(self.dir, "sipproxy.ctl")
        self.store = MemoryStore(reactor)
        self.logged: list[dict] = []
        globalLogPublisher.addObserver(self.logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.logged.append)

    def start(self, mode: int = 0o600, **parts: Any) -> ControlService:
        commands = ControlCommands(reactor, store=self.store, **parts)
        service = ControlService(reactor, self.path, commands, mode=mode)
        service.startService()
        self.addCleanup(service.stopService)
        return service

    @defer.inlineCallbacks
    def connect(self) -> Any:
        client = _Client()
        yield connectProtocol(UNIXClientEndpoint(reactor, self.path), client)
        self.addCleanup(lambda: client.transport.loseConnection())
        return client

    @defer.inlineCallbacks
    def ask(self, *lines: bytes, expect: Optional[int] = None) -> Any:
        client = yield self.connect()
        client.transport.write(b"".join(line + b"\n" for line in lines))
        answers = yield client.wait_lines(len(lines) if expect is None else expect)
        return answers

    def control_lines(self, level: str) -> list[dict]:
        return [e for e in self.logged if e.get("log_namespace") == "sipproxy.app.control"
                and e["log_level"].name == level]

    @defer.inlineCallbacks
    def test_socket_mode_is_0600_from_the_start(self) -> Any:
        seen: list[int] = []
        real = control._ControlPort.startListening

        def spy(port: Any) -> None:  # the umask is in force while the socket is made
            seen.append(os.umask(0o022))
            os.umask(seen[-1])
            real(port)

        self.patch(control._ControlPort, "startListening", spy)
        self.start()
        self.assertEqual(seen, [0o177])
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)
        self.assertEqual(os.umask(0o022) & 0o777, os.umask(0o022) & 0o777)
        answers = yield self.ask(b'{"jsonrpc":"2.0","method":"system.listMethods","id":1}')
        self.assertIn("registrations", answers[0]["result"])

    def test_control_mode_option(self) -> None:
        self.start(mode=0o660)
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o660)

    @defer.inlineCallbacks
    def test_registrations_and_unregister(self) -> Any:
        binding = Binding(contact="sip:alice@192.0.2.1:5070", call_id="c1", cseq=1, source="udp:192.0.2.1:5070")
        yield self.store.update("sip:alice@example.org", "c1", 1, [(binding.key, binding, 300)])
        self.start()
        answers = yield self.ask(
            b'{"jsonrpc":"2.0","method":"registrations","id":1}',
            b'{"jsonrpc":"2.0","method":"registrations","params":{"aor":"alice@EXAMPLE.org"},"id":"two"}',
            b'{"jsonrpc":"2.0","method":"stats","id":3}',
            b'{"jsonrpc":"2.0","method":"unregister","params":["sip:alice@example.org"],"id":4}',
            b'{"jsonrpc":"2.0","method":"registrations","id":5}')
        listed, one, stats, removed, after = answers
        self.assertEqual([a["id"] for a in answers], [1, "two", 3, 4, 5])
        self.assertEqual([e["aor"] for e in listed["result"]["aors"]], ["sip:alice@example.org"])
        self.assertEqual(one["result"]["aors"][0]["bindings"][0]["contact"], "sip:alice@192.0.2.1:5070")
        self.assertEqual(stats["result"]["registrations"], {"aors": 1, "bindings": 1})
        self.assertEqual(removed["result"], {"aor": "sip:alice@example.org", "removed": 1})
        self.assertEqual(after["result"], {"aors": [], "truncated": False})

    @defer.inlineCallbacks
    def test_errors(self) -> Any:
        self.start()
        cases = [
            (b'{"jsonrpc":"2.0","method":"nope","id":1}', METHOD_NOT_FOUND),
            (b'{"jsonrpc":"1.0","method":"stats","id":1}', INVALID_REQUEST),
            (b'{"method":"stats","id":1}', INVALID_REQUEST),
            (b'{"jsonrpc":"2.0","method":"unregister","id":1}', INVALID_PARAMS),
            (b'{"jsonrpc":"2.0","method":"unregister","params":[7],"id":1}', INVALID_PARAMS),
            (b'{"jsonrpc":"2.0","method":"unregister","params":["sip:"],"id":1}', INVALID_PARAMS),
            (b'{"jsonrpc":"2.0","method":"registrations","params":{"who":"x"},"id":1}', INVALID_PARAMS),
            (b'{"jsonrpc":"2.0","method":"stats","params":"x","id":1}', INVALID_REQUEST),
            (b'{"jsonrpc":"2.0","method":"stats","id":{"a":1}}', INVALID_REQUEST),
            (b'{"jsonrpc":"2.0","method":"relay.sessions","id":1}', UNAVAILABLE),
            (b'{"jsonrpc":"2.0","method":"reload","id":1}', UNAVAILABLE),
            (b'[]', INVALID_REQUEST),
            (b'42', INVALID_REQUEST),
            (b'{"jsonrpc":', PARSE_ERROR),
            (b'\xff\xfe{}', PARSE_ERROR),
            (b'[' * 20000 + b']' * 20000, PARSE_ERROR),
        ]
        answers = yield self.ask(*(line for line, _ in cases))
        self.assertEqual([a["error"]["code"] for a in answers], [code for _, code in cases])
        self.assertTrue(all(a["jsonrpc"] == "2.0" and "result" not in a for a in answers))
        self.assertIn("reload is unavailable", answers[10]["error"]["message"])
        # one warning line per bad request, no traceback (trial fails a test that logs one)
        self.assertEqual(len(self.control_lines("warn")), len(cases))
        self.assertEqual(self.control_lines("error") + self.control_lines("critical"), [])

    @defer.inlineCallbacks
    def test_batch_and_notifications(self) -> Any:
        self.start()
        answers = yield self.ask(
            b'[{"jsonrpc":"2.0","method":"stats","id":1},{"jsonrpc":"2.0","method":"stats"},'
            b'{"jsonrpc":"2.0","method":"nope","id":2}]',
            b'{"jsonrpc":"2.0","method":"stats"}',  # a notification: no answer
            b'{"jsonrpc":"2.0","method":"system.listMethods","id":9}', expect=2)
        self.assertEqual(len(answers), 2)
        batch, listed = answers
        self.assertEqual([a["id"] for a in batch], [1, 2])
        self.assertEqual(batch[1]["error"]["code"], METHOD_NOT_FOUND)
        self.assertEqual(listed["id"], 9)

    @defer.inlineCallbacks
    def test_overlong_request_is_refused_and_the_connection_closed(self) -> Any:
        self.start()
        client = yield self.connect()
        client.transport.write(b'{"x":"' + b"a" * (control.MAX_REQUEST + 10))  # no newline ever
        yield client.closed
        (answer,) = client.lines()
        self.assertEqual(answer["error"]["code"], INVALID_REQUEST)
        self.assertEqual(len(self.control_lines("warn")), 1)
        # the server still answers others
        answers = yield self.ask(b'{"jsonrpc":"2.0","method":"stats","id":1}')
        self.assertEqual(answers[0]["result"]["pid"], os.getpid())

    @defer.inlineCallbacks
    def test_too_many_clients(self) -> Any:
        self.patch(control, "MAX_CONNECTIONS", 2)
        self.start()
        first, second = (yield self.connect()), (yield self.connect())
        third = yield self.connect()
        yield third.closed
        self.assertEqual(third.lines()[0]["error"]["code"], control.BUSY)
        first.transport.write(b'{"jsonrpc":"2.0","method":"stats","id":1}\n')
        answers = yield first.wait_lines(1)
        self.assertEqual(answers[0]["id"], 1)
        del second

    @defer.inlineCallbacks
    def test_store_failure_is_an_error_answer(self) -> Any:
        from sipproxy.registrar.location import StoreUnavailable

        self.patch(self.store, "lookup", lambda aor: defer.fail(StoreUnavailable("redis down")))
        self.start()
        answers = yield self.ask(b'{"jsonrpc":"2.0","method":"registrations","params":["a@b"],"id":1}')
        self.assertEqual(answers[0]["error"]["code"], control.STORE_ERROR)
        self.assertIn("redis down", answers[0]["error"]["message"])

    @defer.inlineCallbacks
    def test_reload_calls_the_nearest_service_with_reload(self) -> Any:
        """twistd puts the service makeService returned under an application
        service of its own: reload() is looked for on the way up."""
        from twisted.application.service import MultiService

        application, proxy = MultiService(), MultiService()
        proxy.setServiceParent(application)
        calls: list[int] = []
        proxy.reload = lambda: calls.append(1) or {"ok": True, "message": "reloaded"}  # type: ignore[attr-defined]
        service = self.start()
        service.setServiceParent(proxy)
        service.factory.commands.root = control._root(service)
        answers = yield self.ask(b'{"jsonrpc":"2.0","method":"reload","id":1}')
        self.assertEqual(answers[0]["result"], {"ok": True, "message": "reloaded"})
        self.assertEqual(calls, [1])

    @defer.inlineCallbacks
    def test_stop_removes_the_socket(self) -> Any:
        service = self.start()
        yield service.stopService()
        self.assertFalse(os.path.exists(self.path))


class PathTests(unittest.SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = temp_dir(self)
        self.path = os.path.join(self.dir, "sipproxy.ctl")

    def test_stale_socket_is_removed(self) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
            dead.bind(self.path)  # bound, never listening: nobody accepts
        self.assertIsNone(control_path_problem(self.path))
        self.assertFalse(os.path.exists(self.path))

    def test_live_socket_is_refused(self) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as live:
            live.bind(self.path)
            live.listen(1)
            self.assertEqual(control_path_problem(self.path),
                             f"--control {self.path}: another process is answering on it")
        self.assertTrue(os.path.exists(self.path))

    def test_other_file_is_refused(self) -> None:
        open(self.path, "w").close()
        self.assertEqual(control_path_problem(self.path), f"--control {self.path}: exists and is not a socket")

    def test_missing_directory(self) -> None:
        path = os.path.join(self.dir, "no", "x.ctl")
        self.assertIn("no directory", control_path_problem(path) or "")


class OptionTests(unittest.SynchronousTestCase):
    def check(self, control_value: Optional[str], mode: str = "0600", index: int = 0) -> dict:
        options = {"control": control_value, "control-mode": mode, "worker-index": index}
        check_control_options(options)
        return options

    def test_default_and_workers(self) -> None:
        options = self.check(None)
        self.assertEqual(options["control_path"], os.path.abspath("sipproxy.ctl"))
        self.assertFalse(options["control_explicit"])
        self.assertEqual(self.check("/run/x.ctl", index=3)["control_path"], "/run/x.ctl.3")
        self.assertIsNone(self.check("off")["control_path"])
        self.assertEqual(self.check("/run/x.ctl", "660")["control_mode"], 0o660)

    def test_bad_values(self) -> None:
        for value, mode, expected in [
            ("/run/x.ctl", "rw", "--control-mode 'rw': want octal"),
            ("/run/x.ctl", "0400", "--control-mode 0400: the owner needs read and write"),
            ("/run/x.ctl", "01777", "--control-mode '01777': want octal"),
            ("/" + "d" * 120, "0600", "too long for a UNIX socket"),
        ]:
            with self.assertRaises(usage.UsageError) as caught:
                self.check(value, mode)
            self.assertIn(expected, str(caught.exception))

    def test_twistd_refuses_a_bad_mode_in_one_line(self) -> None:
        from tests.util import child_environment, run_process, twistd_command

        cwd = temp_dir(self)
        result = run_process([*twistd_command(), "-n", "--pidfile=", "sipproxy", "--legs", "udp:127.0.0.1:0",
                              "--control-mode", "777x"], 30, cwd=cwd, env=child_environment())
        self.assertEqual(result.returncode, 2, result)
        self.assertEqual(result.stderr, "twistd sipproxy: --control-mode '777x': want octal permissions such as "
                                        "0600 or 0660\n")

    def test_twistd_refuses_a_named_socket_in_use(self) -> None:
        from tests.util import child_environment, run_process, twistd_command

        cwd = temp_dir(self)
        path = os.path.join(cwd, "busy.ctl")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as live:
            live.bind(path)
            live.listen(1)
            result = run_process([*twistd_command(), "-n", "--pidfile=", "sipproxy", "--legs", "udp:127.0.0.1:0",
                                  "--control", path], 30, cwd=cwd, env=child_environment())
        self.assertEqual(result.returncode, 1, result)
        self.assertEqual(result.stderr, f"twistd sipproxy: --control {path}: another process is answering on it\n")


class ConsoleScriptTests(unittest.SynchronousTestCase):
    def test_setup_cfg_installs_sipproxy_ctl(self) -> None:
        import configparser

        from sipproxy.app import ctl
        from tests.util import PROJECT_ROOT

        parser = configparser.ConfigParser()
        parser.read(os.path.join(PROJECT_ROOT, "setup.cfg"))
        scripts = dict(line.split(" = ") for line in
                       parser["options.entry_points"]["console_scripts"].strip().splitlines())
        self.assertEqual(scripts["sipproxy-ctl"], "sipproxy.app.ctl:main")
        self.assertTrue(callable(ctl.main))

    def test_default_socket_is_the_proxys(self) -> None:
        from sipproxy.app import ctl

        self.patch(os, "environ", {})
        self.assertEqual(ctl.socket_path(None), control.DEFAULT_CONTROL)
        self.assertEqual(ctl.socket_path(None, 2), control.DEFAULT_CONTROL + ".2")
        self.patch(os, "environ", {"SIPPROXY_CONTROL": "/run/sipproxy/x.ctl"})
        self.assertEqual(ctl.socket_path(None), "/run/sipproxy/x.ctl")
        self.assertEqual(ctl.socket_path("/tmp/y.ctl"), "/tmp/y.ctl")


class WiringTests(unittest.SynchronousTestCase):
    """What makeService gives the control socket to answer from."""

    def make(self, *args: str) -> Any:
        from sipproxy.app.tap import Options, makeService

        cwd = temp_dir(self)
        options = Options()
        options.parseOptions(["--secret-file", os.path.join(cwd, "secret"), "--control",
                              os.path.join(cwd, "c.ctl"), *args])
        service = makeService(options)
        (found,) = [child for child in service if isinstance(child, ControlService)]
        return service, found.factory.commands

    def test_relay_only_process_answers_relay_sessions(self) -> None:
        from sipproxy.nat.relay import LocalRelay
        from tests.util import reserve_port

        service, commands = self.make("--relay-only", "--ng", f"udp:127.0.0.1:{reserve_port()}")
        self.assertIsInstance(commands.relay, LocalRelay)
        self.assertIsNone(commands.store)
        self.assertEqual(commands.relay_sessions(None), {"sessions": []})
        self.assertEqual(self.successResultOf(defer.maybeDeferred(commands.stats, None))["relay"]["sessions"], 0)

    def test_proxy_with_registrar_and_tcp(self) -> None:
        service, commands = self.make("--legs", "udp:127.0.0.1:0,tcp:127.0.0.1:0", "--registrar",
                                      "--domain", "office.test", "--nathelper")
        self.assertIs(commands.relay, service.proxy.nathelper)
        self.assertIs(commands.guard, service.stream_guard)
        self.assertEqual(commands.legs, service.legs)
        self.assertEqual(commands.aor("alice@OFFICE.test"), "sip:alice@office.test")
        self.assertIsNotNone(commands.store)


class UnusablePathTests(unittest.SynchronousTestCase):
    def test_a_directory_we_cannot_write_is_found_at_start(self) -> None:
        if os.geteuid() == 0:
            path = "/proc/sipproxy-test.ctl"  # root may write anywhere but here
        else:
            path = os.path.join("/", "sipproxy-test.ctl")
        problem = control_path_problem(path)
        self.assertIsNotNone(problem)
        self.assertTrue(problem.startswith(f"--control {path}: "), problem)
        self.assertFalse(os.path.exists(path))

    def test_a_socket_that_cannot_be_made_at_start_is_one_error_line(self) -> None:
        logged: list[dict] = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        service = ControlService(reactor, "/proc/sipproxy-test.ctl", ControlCommands(reactor))
        service.privilegedStartService()
        self.assertIs(service.port, False)
        errors = [e for e in logged if e["log_level"].name == "error"]
        self.assertEqual(len(errors), 1)
        self.assertIn("no control socket", errors[0]["log_format"])
        self.flushLoggedErrors()
        service.stopService()
