"""C{twistd sipproxy}: its options, in process and through a real twistd
subprocess (with hard timeouts), and a real run: start, answer OPTIONS,
forward a request, shut down cleanly on SIGTERM."""
from __future__ import annotations

import io
import os
import signal
import socket
import stat
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

from twisted.application.service import IService, MultiService
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest

from sipproxy.proxy.branch import BranchMaker
from sipproxy.transport.legs import DEFAULT_BUFFER, StreamLeg, UDPLeg
from sipproxy.transport.legspec import LegSpec
from sipproxy.app.service import LegService
from sipproxy.app.tap import Options, makeService
from sipproxy.sip.uri import URI
from tests.util import (
    ProcessResult,
    UDPProbe,
    child_environment,
    process_exited,
    read_text,
    reserve_port,
    run_process,
    sip_options,
    start_proxy,
    twistd_command,
    temp_dir,
    wait_until,
)

RUN_TIMEOUT = 20.0  # hard limit for one short twistd run (--help, a bad option)


def twistd(args: Sequence[str], cwd: str) -> ProcessResult:
    """Run C{twistd <args>} to completion (hard timeout)."""
    return run_process([*twistd_command(), *args], RUN_TIMEOUT, cwd=cwd, env=child_environment())


def sipproxy(args: Sequence[str], cwd: str) -> ProcessResult:
    return twistd(["-n", "--pidfile=", "sipproxy", *args], cwd)


def _parse(args: Sequence[str]) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options


class OptionsTests(unittest.SynchronousTestCase):
    """The Options class, parsed in process."""

    def test_defaults(self) -> None:
        options = _parse([])
        self.assertEqual(options["leg_specs"], [LegSpec("udp", "127.0.0.1", 5060)])
        self.assertEqual(options["domain2proxy"], {})
        self.assertIsNone(options["outgoing_proxy"])
        self.assertEqual(options["secret-file"], "sipproxy.secret")
        self.assertEqual(options["udp-buffer"], DEFAULT_BUFFER)
        self.assertEqual(options["tcp-idle"], 180.0)
        self.assertFalse(options["force-rewrite"])

    def test_legs_comma_list_and_repeated(self) -> None:
        options = _parse(["--legs", "udp:127.0.0.1:5070, tcp:127.0.0.2:5071", "--legs=[::1]:5072",
                          "--legs", "127.0.0.3"])
        self.assertEqual(options["leg_specs"], [
            LegSpec("udp", "127.0.0.1", 5070),
            LegSpec("tcp", "127.0.0.2", 5071),
            LegSpec("udp", "::1", 5072),
            LegSpec("udp", "127.0.0.3", 5060),
        ])

    def test_domain2proxy(self) -> None:
        options = _parse(["--domain2proxy", "example.com=127.0.0.1:5080,*.example.org=sip:10.0.0.1;transport=tcp",
                          "--domain2proxy", "*=192.0.2.7", "--domain2proxy", "Example.NET = 192.0.2.8:5090"])
        table = options["domain2proxy"]
        self.assertEqual(sorted(table), ["*", "*.example.org", "example.com", "example.net"])
        self.assertIsInstance(table["example.com"], URI)
        self.assertEqual(str(table["example.com"]), "sip:127.0.0.1:5080")
        self.assertEqual(str(table["*.example.org"]), "sip:10.0.0.1;transport=tcp")
        self.assertEqual(str(table["*"]), "sip:192.0.2.7")
        self.assertEqual(str(table["example.net"]), "sip:192.0.2.8:5090")

    def test_outgoing_proxy(self) -> None:
        options = _parse(["--outgoing-proxy", "192.0.2.9:5062"])
        self.assertIsInstance(options["outgoing_proxy"], URI)
        self.assertEqual(str(options["outgoing_proxy"]), "sip:192.0.2.9:5062")

    def test_numbers_and_flags(self) -> None:
        options = _parse(["--udp-buffer", "65536", "--tcp-idle", "2.5", "--force-rewrite",
                          "--secret-file", "/tmp/x.secret"])
        self.assertEqual(options["udp-buffer"], 65536)
        self.assertEqual(options["tcp-idle"], 2.5)
        self.assertTrue(options["force-rewrite"])
        self.assertEqual(options["secret-file"], "/tmp/x.secret")

    def test_bad_option_in_process(self) -> None:
        """One line on stderr, exit status 2 (twistd would print its usage
        text otherwise)."""
        stderr = io.StringIO()
        self.patch(sys, "stderr", stderr)
        with self.assertRaises(SystemExit) as caught:
            _parse(["--legs", "udp:not-an-ip:5060"])
        self.assertEqual(caught.exception.code, 2)
        self.assertEqual(len(stderr.getvalue().splitlines()), 1)
        self.assertIn("must be an IP address", stderr.getvalue())

    def test_every_option_documented(self) -> None:
        options = Options()
        for name in options.longOpt:
            name = name.rstrip("=")
            self.assertTrue((options.docs.get(name) or "").strip(), f"--{name} has no help text")


class CommandLineTests(unittest.SynchronousTestCase):
    """C{twistd ... sipproxy ...} as a user runs it (subprocesses)."""

    def setUp(self) -> None:
        self.cwd = temp_dir(self)

    def test_twistd_help_lists_plugin(self) -> None:
        result = twistd(["--help"], self.cwd)
        self.assertEqual(result.returncode, 0, result)
        lines = [line.split() for line in result.stdout.splitlines()]
        self.assertIn("sipproxy", [words[0] for words in lines if words], result)

    def test_plugin_help_documents_every_option(self) -> None:
        result = sipproxy(["--help"], self.cwd)
        self.assertEqual(result.returncode, 0, result)
        for name in Options().longOpt:
            self.assertIn(f"--{name.rstrip('=')}", result.stdout, result)
        self.assertIn("[proto:]host[:port]", result.stdout)
        self.assertNotIn("Traceback", result.stdout + result.stderr)

    def test_bad_values_exit_2_with_one_line(self) -> None:
        cases = [
            (["--legs", "bogus:127.0.0.1:5060"], "unknown transport 'bogus'"),
            (["--legs", "proxy.example.com"], "must be an IP address"),
            (["--legs", "0.0.0.0:5060"], "wildcard"),
            (["--legs", "udp:127.0.0.1:99999"], "99999"),
            (["--legs", "udp:127.0.0.1:5070", "--legs", "127.0.0.1:5070"], "given twice"),
            (["--legs", "tls:127.0.0.1"], "a TLS leg needs --tls-cert"),
            (["--legs", ""], "legs"),
            (["--domain2proxy", "example.com"], "want DOMAIN=PROXY"),
            (["--domain2proxy", "example.com=sip:"], "--domain2proxy"),
            (["--outgoing-proxy", "sip:"], "--outgoing-proxy"),
            (["--udp-buffer", "-1"], "--udp-buffer"),
            (["--udp-buffer", "lots"], "--udp-buffer"),
            (["--tcp-idle", "0"], "--tcp-idle"),
            (["--tcp-idle", "soon"], "--tcp-idle"),
            (["--no-such-option"], "no-such-option"),
        ]
        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(lambda case: sipproxy(case[0], self.cwd), cases))
        for (args, expected), result in zip(cases, results):
            with self.subTest(args=args):
                self.assertFalse(result.timed_out, result)
                self.assertEqual(result.returncode, 2, result)
                lines = result.stderr.splitlines()
                self.assertEqual(len(lines), 1, result)
                self.assertIn(expected, lines[0], result)
                self.assertTrue(lines[0].startswith("twistd sipproxy: "), result)
                self.assertNotIn("Traceback", result.stdout + result.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.cwd, "sipproxy.secret")))

    def _assert_exit_1(self, result: ProcessResult, expected: str) -> None:
        self.assertFalse(result.timed_out, result)
        self.assertEqual(result.returncode, 1, result)
        lines = result.stderr.splitlines()
        self.assertEqual(len(lines), 1, result)
        self.assertIn(expected, lines[0], result)
        self.assertNotIn("Traceback", result.stdout + result.stderr)

    def test_udp_leg_in_use(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
            taken.bind(("127.0.0.1", 0))
            port = taken.getsockname()[1]
            result = sipproxy(["--legs", f"udp:127.0.0.1:{port}"], self.cwd)
        self._assert_exit_1(result, f"cannot listen on udp:127.0.0.1:{port}: address already in use")

    def test_tcp_leg_in_use(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            # the first leg is free, the second is not
            free = reserve_port("127.0.0.1")
            result = sipproxy(["--legs", f"udp:127.0.0.1:{free},tcp:127.0.0.1:{port}"], self.cwd)
        self._assert_exit_1(result, f"cannot listen on tcp:127.0.0.1:{port}: address already in use")

    def test_leg_not_local(self) -> None:
        result = sipproxy(["--legs", "udp:192.0.2.1:5060"], self.cwd)
        self._assert_exit_1(result, "not an address of this host")

    def test_unusable_secret_file(self) -> None:
        missing_dir = os.path.join(self.cwd, "no", "such", "dir", "secret")
        port = reserve_port("127.0.0.1")
        result = sipproxy(["--legs", f"udp:127.0.0.1:{port}", "--secret-file", missing_dir], self.cwd)
        self._assert_exit_1(result, "cannot create secret file")
        garbage = os.path.join(self.cwd, "garbage.secret")
        with open(garbage, "w") as f:
            f.write("not hex at all\n")
        result = sipproxy(["--legs", f"udp:127.0.0.1:{port}", "--secret-file", garbage], self.cwd)
        self._assert_exit_1(result, "does not hold a hex secret")


class RunTests(unittest.TestCase):
    """A real C{twistd -n --pidfile= sipproxy} subprocess."""

    timeout = 45

    def setUp(self) -> None:
        self.cwd = temp_dir(self)
        self.port = 0

    def _legs(self) -> list[str]:
        if not self.port:
            self.port = reserve_port("127.0.0.1")
        return [f"udp:127.0.0.1:{self.port}"]

    def _new_legs(self) -> list[str]:
        self.port = 0
        return self._legs()

    @inlineCallbacks
    def _options_ping(self, port: int) -> Any:
        probe = UDPProbe("127.0.0.1", port, lambda local: sip_options("127.0.0.1", port, local), self)
        answer = yield wait_until(probe, 10, interval=0.2, what="an answer to OPTIONS")
        return answer

    @inlineCallbacks
    def _forwarded_branch(self, port: int) -> Any:
        """Send a request through the proxy to a UDP socket of ours; the
        Via branch the proxy added."""
        target = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(target.close)
        target.bind(("127.0.0.1", 0))
        target.setblocking(False)
        target_port = target.getsockname()[1]
        uri = f"sip:someone@127.0.0.1:{target_port}"

        probe = UDPProbe("127.0.0.1", port, lambda local: sip_options("127.0.0.1", port, local, target=uri,
                                                                      call_id="fwd-1"), self)

        def forwarded() -> Any:
            try:
                return target.recvfrom(65535)[0]
            except BlockingIOError:
                probe()  # (re)send the request through the proxy
                return None

        data = yield wait_until(forwarded, 10, interval=0.2, what="the forwarded request")
        top_via = [line for line in data.split(b"\r\n") if line.lower().startswith(b"via:")][0]
        self.assertIn(f"SIP/2.0/UDP 127.0.0.1:{port};branch=".encode(), top_via)
        return top_via.split(b"branch=")[1].split(b";")[0].decode()

    @inlineCallbacks
    def _stop(self, proxy: Any) -> Any:
        os.kill(proxy.pid, signal.SIGTERM)
        yield wait_until(process_exited(proxy.proc), 10, what="twistd to exit after SIGTERM")
        # A clean stop. twistd then re-raises the signal so that its exit
        # status says what stopped it (twisted/twisted#7225, since 2017):
        # -SIGTERM (143 in a shell), not 0; accept 0 as well should that change.
        self.assertIn(proxy.proc.returncode, (0, -signal.SIGTERM), proxy.describe())
        log = proxy.log()
        self.assertIn("Received SIGTERM, shutting down.", log)
        self.assertIn(f"(UDP Port {self.port} Closed)", log)
        self.assertIn("Server Shut Down.", log)
        self.assertNotIn("Traceback", log + proxy.errors())
        self.assertNotIn("Unhandled", log)

    @inlineCallbacks
    def test_answers_options_and_stops_on_sigterm(self) -> Any:
        proxy = yield start_proxy(self, self.cwd, self._new_legs)
        answer = yield self._options_ping(self.port)
        self.assertTrue(answer.startswith(b"SIP/2.0 200 OK\r\n"), answer[:60])
        self.assertIn(b"Call-ID: probe-1\r\n", answer)
        self.assertIn(b"\r\nAllow: ", answer)
        started = reactor.seconds()
        yield self._stop(proxy)
        self.assertLess(reactor.seconds() - started, 5.0, "twistd took long to stop")

    @inlineCallbacks
    def test_secret_file_created_and_reused(self) -> Any:
        path = os.path.join(self.cwd, "sipproxy.secret")
        self.assertFalse(os.path.exists(path))
        proxy = yield start_proxy(self, self.cwd, self._new_legs, name="first")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        secret_text = read_text(path)
        secret = bytes.fromhex(secret_text.strip())
        self.assertGreaterEqual(len(secret), 16)
        prefix = BranchMaker(secret).prefix
        branch = yield self._forwarded_branch(self.port)
        self.assertTrue(branch.startswith(prefix), (branch, prefix))  # the proxy uses the file's secret
        yield self._stop(proxy)

        # a restart (on the same port when it is still free) reads the same file
        proxy = yield start_proxy(self, self.cwd, self._legs, name="second")
        self.assertEqual(read_text(path), secret_text)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        again = yield self._forwarded_branch(self.port)
        self.assertTrue(again.startswith(prefix), (again, prefix))
        yield self._stop(proxy)


class MakeServiceTests(unittest.TestCase):
    timeout = 10

    def _service(self, legs: str) -> MultiService:
        secret = os.path.join(temp_dir(self), "sipproxy.secret")
        return makeService(_parse(["--legs", legs, "--secret-file", secret, "--tcp-idle", "30", "--control", "off"]))

    def test_one_child_per_leg(self) -> None:
        service = self._service("udp:127.0.0.1:0,tcp:127.0.0.1:0,udp:127.0.0.2:0")
        self.assertIsInstance(service, MultiService)
        children = [child for child in service if child.name != "reload"]  # the SIGHUP handler
        self.assertEqual(len(children), 3)
        for child in children:
            self.assertIsInstance(child, LegService)
            self.assertTrue(IService.providedBy(child))
        self.assertEqual([type(child.leg) for child in children], [UDPLeg, StreamLeg, UDPLeg])
        self.assertEqual([child.leg.host for child in children], ["127.0.0.1", "127.0.0.1", "127.0.0.2"])
        self.assertEqual(children[1].leg.idle_timeout, 30.0)
        self.assertEqual(service.dispatcher.legs, [child.leg for child in children])

    def test_service_without_gc_freeze(self) -> None:
        """PyPy's gc module has no freeze(): the service is still made,
        and nothing is collected for it."""
        from types import SimpleNamespace

        from sipproxy.app import tap

        collected: list[int] = []
        self.patch(tap, "gc", SimpleNamespace(collect=lambda: collected.append(1)))
        service = self._service("udp:127.0.0.1:0")
        self.assertEqual(len([child for child in service if isinstance(child, LegService)]), 1)
        self.assertEqual(collected, [])

    def test_startup_objects_frozen_where_gc_can(self) -> None:
        from types import SimpleNamespace

        from sipproxy.app import tap

        calls: list[str] = []
        self.patch(tap, "gc", SimpleNamespace(collect=lambda: calls.append("collect"),
                                              freeze=lambda: calls.append("freeze")))
        self._service("udp:127.0.0.1:0")
        self.assertEqual(calls, ["collect", "freeze"])

    @inlineCallbacks
    def test_start_binds_and_stop_releases(self) -> Any:
        service = self._service("udp:127.0.0.1:0,tcp:127.0.0.1:0")
        service.startService()
        legs = list(service.legs)
        try:
            self.assertTrue(all(leg.port != 0 for leg in legs), legs)
            self.assertEqual(service.dispatcher.legs_at("127.0.0.1", legs[0].port), [legs[0]])
        finally:
            yield service.stopService()
        # released: the same ports can be bound again
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", legs[0].port))
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp.bind(("127.0.0.1", legs[1].port))
