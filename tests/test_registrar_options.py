"""The registrar, auth and filter options of C{twistd sipproxy}: parsing,
one-line errors with exit status 2, users-file errors with their line
number, and the service they build."""
from __future__ import annotations

import io
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

from twisted.trial import unittest

from sipproxy.app.tap import Options
from tests.util import child_environment, run_process, temp_dir, twistd_command


def _parse(args: Sequence[str]) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options


class RegistrarOptionsTests(unittest.SynchronousTestCase):
    def setUp(self) -> None:
        self.cwd = temp_dir(self)

    def users(self, text: str) -> str:
        path = os.path.join(self.cwd, "users")
        with open(path, "w") as f:
            f.write(text)
        return path

    def refused(self, args: Sequence[str]) -> str:
        stderr = io.StringIO()
        self.patch(sys, "stderr", stderr)
        with self.assertRaises(SystemExit) as caught:
            _parse(args)
        self.assertEqual(caught.exception.code, 2)
        lines = stderr.getvalue().splitlines()
        self.assertEqual(len(lines), 1, lines)
        self.assertTrue(lines[0].startswith("twistd sipproxy: "))
        return lines[0]

    def test_defaults_suit_a_small_office(self) -> None:
        options = _parse([])
        self.assertEqual((options["registrar"], options["min-expires"], options["max-expires"], options["store"]),
                         (0, 60, 3600, "memory"))
        self.assertEqual((options["domains"], options["block"], options["rate_limit"], options["credentials"]),
                         ([], {}, None, None))
        self.assertEqual(options["realm"], "sipproxy")

    def test_values(self) -> None:
        users = self.users("alice:secret\n")
        options = _parse(["--registrar", "--domain", "office.example,branch.example", "--domain", "10.0.0.5",
                          "--min-expires", "30", "--max-expires", "600", "--store", "sqlite:/tmp/x.db",
                          "--users", users, "--block", "MESSAGE=405", "--block", "subscribe=489 Bad Event",
                          "--rate-limit", "50/10", "--drop-header", "User-Agent=friendly-scanner"])
        self.assertEqual(options["domains"], ["office.example", "branch.example", "10.0.0.5"])
        self.assertEqual(options["realm"], "office.example")
        self.assertEqual(options["block"], {"MESSAGE": "405", "SUBSCRIBE": "489 Bad Event"})
        self.assertEqual(options["rate_limit"], (50, 10.0))
        self.assertEqual(options["drop_headers"], {"User-Agent": "friendly-scanner"})
        self.assertEqual(options["credentials"].get_ha1("alice", "office.example", "MD5") is not None, True)
        self.assertEqual(_parse(["--redirect"])["registrar"], True)
        self.assertEqual(_parse(["--realm", "r1", "--domain", "d"])["realm"], "r1")

    def test_bad_values(self) -> None:
        cases = [
            (["--min-expires", "-1"], "--min-expires"),
            (["--min-expires", "soon"], "--min-expires"),
            (["--max-expires", "0"], "--max-expires"),
            (["--min-expires", "700", "--max-expires", "600"], "above --max-expires"),
            (["--store", "mongo://x"], "unknown store"),
            (["--store", "redis://h:port/0", "--registrar"], "bad port"),
            (["--store", "sqlite:/tmp/x.db"], "needs --registrar"),
            (["--block", "INVITE"], "want METHOD=CODE"),
            (["--block", "INVITE=200"], "300-699"),
            (["--rate-limit", "fast"], "ATTEMPTS/SECONDS"),
            (["--rate-limit", "0/10"], "ATTEMPTS/SECONDS"),
            (["--rate-limit-db", "x.json"], "needs --rate-limit"),
            (["--drop-header", "User-Agent=("], "bad regular expression"),
            (["--domain", "user@example.com"], "--domain"),
            (["--realm", 'a"b'], "--realm"),
            (["--users", "/nonexistent/users"], "cannot read"),
            (["--nat-ping-interval", "-5"], "--nat-ping-interval"),
            (["--nat-ping-interval", "often"], "--nat-ping-interval"),
            (["--nat-ping-interval", "1e400x"], "--nat-ping-interval"),
            (["--nat-ping-failures", "0"], "--nat-ping-failures"),
            (["--nat-ping-failures", "9" * 400 + "x"], "--nat-ping-failures"),
        ]
        for args, expected in cases:
            with self.subTest(args=args):
                self.assertIn(expected, self.refused(args))

    def test_users_file_error_names_the_line(self) -> None:
        users = self.users("# office phones\nalice:secret\n\nbob\ncarol:pw\n")
        line = self.refused(["--users", users])
        self.assertIn(f"{users}, line 4: want user:password or user:realm:HA1", line)

    def test_empty_users_file(self) -> None:
        self.assertIn("no users", self.refused(["--users", self.users("# nobody\n")]))


class RegistrarCommandLineTests(unittest.SynchronousTestCase):
    """Through a real twistd (subprocesses, hard timeouts)."""

    def test_errors_exit_non_zero_with_one_line(self) -> None:
        cwd = temp_dir(self)
        users = os.path.join(cwd, "users")
        with open(users, "w") as f:
            f.write("alice:secret\nbob:sipproxy:0123456789\n")
        cases = [
            (["--users", users], 2, "line 2: HA1 has 10 hex digits"),
            (["--registrar", "--store", os.path.join(cwd, "nope")], 2, "unknown store"),
            (["--registrar", "--store", f"sqlite:{cwd}/missing/dir/x.db"], 1, "--store sqlite:"),
        ]

        def run(args: list[str]) -> Any:
            return run_process([*twistd_command(), "-n", "--pidfile=", "sipproxy", "--legs", "udp:127.0.0.1:0",
                                *args], 20, cwd=cwd, env=child_environment())

        with ThreadPoolExecutor(max_workers=3) as pool:
            results = list(pool.map(run, [c[0] for c in cases]))
        for (args, code, expected), result in zip(cases, results):
            with self.subTest(args=args):
                self.assertFalse(result.timed_out, result)
                self.assertEqual(result.returncode, code, result)
                lines = result.stderr.splitlines()
                self.assertEqual(len(lines), 1, result)
                self.assertIn(expected, lines[0], result)


class ServiceTests(unittest.TestCase):
    """makeService with the registrar options builds the chain and closes
    the store on stop."""

    def test_chain_and_store_service(self) -> Any:
        from sipproxy.app.tap import makeService

        cwd = temp_dir(self)
        with open(os.path.join(cwd, "users"), "w") as f:
            f.write("alice:secret\n")
        options = _parse(["--legs", "udp:127.0.0.1:0", "--registrar", "--domain", "example.com", "--users",
                          os.path.join(cwd, "users"), "--store", f"sqlite:{cwd}/reg.db", "--secret-file",
                          os.path.join(cwd, "secret")])
        service = makeService(options)
        names = [type(r).__name__ for r in service.dispatcher.receiver.receivers]
        self.assertEqual(names, ["OwnAcks", "RelayGuard", "ReceiveChain", "ReceiveChain", "FlowKeeper",
                                 "Registrar", "StatelessProxy"])
        store_service = service.getServiceNamed("location-store")
        service.startService()
        d = service.stopService()
        self.assertTrue(os.path.exists(os.path.join(cwd, "reg.db")))
        self.assertIsNotNone(store_service)
        return d

    def test_plain_proxy_has_no_front_door(self) -> None:
        from sipproxy.app.tap import makeService

        cwd = temp_dir(self)
        service = makeService(_parse(["--legs", "udp:127.0.0.1:0", "--secret-file", os.path.join(cwd, "s")]))
        self.assertEqual(type(service.dispatcher.receiver).__name__, "StatelessProxy")


class SecurityOptionsTests(unittest.SynchronousTestCase):
    """--max-contacts, --register-any-aor, --auth-fail-limit, --token-lifetime."""

    def refused(self, args: Sequence[str]) -> str:
        return RegistrarOptionsTests.refused(self, args)  # type: ignore[arg-type]

    def test_defaults(self) -> None:
        options = _parse([])
        self.assertEqual((options["max-contacts"], options["register-any-aor"], options["auth_failure_limit"],
                          options["token-lifetime"]), (10, 0, (10, 60.0, 600.0), 43200))

    def test_values(self) -> None:
        options = _parse(["--max-contacts", "0", "--register-any-aor", "--auth-fail-limit", "5/30",
                          "--token-lifetime", "86400"])
        self.assertEqual((options["max-contacts"], options["register-any-aor"], options["auth_failure_limit"],
                          options["token-lifetime"]), (0, 1, (5, 30.0, 300.0), 86400))
        self.assertIsNone(_parse(["--auth-fail-limit", "off"])["auth_failure_limit"])

    def test_bad_values_are_one_line(self) -> None:
        self.assertIn("--auth-fail-limit", self.refused(["--auth-fail-limit", "lots"]))
        self.assertIn("--max-contacts", self.refused(["--max-contacts", "-1"]))
        self.assertIn("--token-lifetime", self.refused(["--token-lifetime", "5"]))
