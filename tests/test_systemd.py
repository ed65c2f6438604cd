"""contrib/sipproxy.service: what the issue asks of it, checked by
C{systemd-analyze verify} (it works in a container: it parses the unit
and checks its programs, without a running systemd), and its twistd
command line accepted by our own option parser.

systemd-analyze is a third-party tool: the test skips when it is missing,
and fails instead under SIPPROXY_REQUIRE_INTEROP=1.
"""
from __future__ import annotations

import os
import shlex

from twisted.trial import unittest

from tests.util import PROJECT_ROOT, require_program, run_process, temp_dir, twistd_command

UNIT = os.path.join(PROJECT_ROOT, "contrib", "sipproxy.service")


def unit_text() -> str:
    with open(UNIT) as f:
        return f.read()


def plugin_index(argv: list[str]) -> int:
    """Where the plugin name is in a twistd command line (not the value of --uid/--gid)."""
    return next(i for i, arg in enumerate(argv) if arg == "sipproxy" and argv[i - 1] not in ("--uid", "--gid"))


def settings(text: str) -> dict[str, list[str]]:
    """Key to values, with continuation lines joined, comments dropped."""
    out: dict[str, list[str]] = {}
    logical = text.replace("\\\n", " ")
    for line in logical.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key.strip(), []).append(value.strip())
    return out


class UnitTests(unittest.SynchronousTestCase):
    def test_what_the_issue_asks(self) -> None:
        unit = settings(unit_text())
        (start,) = unit["ExecStart"]
        argv = shlex.split(start)
        twistd_args = argv[1:plugin_index(argv)]
        self.assertIn("-n", twistd_args)  # stays in the foreground: systemd watches the process
        self.assertIn("--logfile=-", twistd_args)  # logs to standard output, into the journal
        self.assertEqual(twistd_args[twistd_args.index("--uid") + 1], "sipproxy")  # after binding
        self.assertEqual(twistd_args[twistd_args.index("--gid") + 1], "sipproxy")
        self.assertEqual(unit["Restart"], ["on-failure"])
        self.assertEqual(unit["ExecReload"], ["/bin/kill -HUP $MAINPID"])
        self.assertEqual(unit["StandardOutput"], ["journal"])
        self.assertNotIn("User", unit)  # root at start, so it can bind port 5060 before --uid

    def test_its_sipproxy_options_parse(self) -> None:
        """The plugin options of ExecStart, with its files made here."""
        from sipproxy.app.tap import Options

        argv = shlex.split(settings(unit_text())["ExecStart"][0])
        args = argv[plugin_index(argv) + 1:]
        cwd = temp_dir(self)
        users = os.path.join(cwd, "users")
        with open(users, "w") as f:
            f.write("alice:secret\n")
        args = [a.replace("/etc/sipproxy/users", users).replace("/var/lib/sipproxy", cwd) for a in args]
        options = Options()
        options.parseOptions(args)
        self.assertTrue(options["registrar"])
        self.assertEqual(options["control_path"], os.path.join(cwd, "sipproxy.ctl"))


class VerifyTests(unittest.SynchronousTestCase):
    def verify(self, text: str) -> tuple[int, str]:
        """systemd-analyze verify of C{text} as a unit file, with ExecStart's
        twistd pointed at the one of these tests (verify checks that the
        programs exist)."""
        tool = require_program("systemd-analyze")
        text = text.replace("/opt/sipproxy/bin/twistd", twistd_command()[0])
        path = os.path.join(temp_dir(self), "sipproxy.service")
        with open(path, "w") as f:
            f.write(text)
        result = run_process([tool, "verify", path], 60)
        self.assertFalse(result.timed_out, result)
        return result.returncode, result.stdout + result.stderr

    def test_systemd_analyze_verify(self) -> None:
        code, output = self.verify(unit_text())
        self.assertEqual((code, output), (0, ""))

    def test_verify_sees_a_broken_unit(self) -> None:
        """The check above can fail: a bad setting is reported."""
        code, output = self.verify(unit_text().replace("Restart=on-failure", "Restart=sometimes"))
        self.assertIn("restart specifier, ignoring: sometimes", output)
