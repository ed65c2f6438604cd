"""--config FILE: TOML keys for every option, the command line on top,
and one line (with the key and its line) for every mistake."""
from __future__ import annotations

import io
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

from twisted.trial import unittest

from sipproxy.app import config_file
from sipproxy.app.tap import Options
from tests.util import child_environment, run_process, temp_dir, twistd_command


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


class ConfigParsingTests(unittest.SynchronousTestCase):
    """The file parsed in process, through Options.parseOptions."""

    def setUp(self) -> None:
        self.dir = temp_dir(self)
        self.stderr = io.StringIO()
        self.patch(sys, "stderr", self.stderr)

    def write(self, text: str, name: str = "sipproxy.toml") -> str:
        path = os.path.join(self.dir, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def parse(self, text: str, *args: str) -> Options:
        options = Options()
        options.parseOptions(["--config", self.write(text), *args])
        return options

    def refused(self, text: str, *args: str) -> str:
        """The one line a bad file gives (exit status 2)."""
        with self.assertRaises(SystemExit) as caught:
            self.parse(text, *args)
        self.assertEqual(caught.exception.code, 2)
        lines = self.stderr.getvalue().splitlines()
        self.assertEqual(len(lines), 1, lines)
        self.assertTrue(lines[0].startswith("twistd sipproxy: "), lines)
        return lines[0]

    def test_every_option_is_a_key(self) -> None:
        """Every long option but help/version/config is a key of its
        kind; a file setting every flag and every parameter to its
        default parses and changes nothing."""
        options = Options()
        kinds = config_file.option_kinds(options)
        names = {spelled.rstrip("=") for spelled in options.longOpt} - {"help", "version", "config"}
        self.assertEqual(set(kinds), names)
        self.assertEqual(kinds["registrar"], config_file.FLAG)
        self.assertEqual(kinds["tcp-idle"], config_file.VALUE)
        self.assertEqual(kinds["legs"], config_file.REPEATABLE)
        lines = []
        for name, kind in sorted(kinds.items()):
            if kind == config_file.FLAG:
                lines.append(f"{name} = false")
            elif kind == config_file.VALUE and options.defaults.get(name) is not None:
                lines.append(f"{name} = {_toml_value(options.defaults[name])}")
        parsed = self.parse("\n".join(lines) + "\n")
        plain = Options()
        plain.parseOptions([])
        for name, kind in kinds.items():
            if kind != config_file.REPEATABLE:
                self.assertEqual(parsed[name], plain[name], name)
        self.assertGreaterEqual(len(lines), 40)

    def test_each_kind_of_value(self) -> None:
        options = self.parse(
            'legs = ["udp:127.0.0.1:5070", "tcp:127.0.0.1:5070"]\n'
            "registrar = true\n"
            "force-rewrite = false\n"
            "tcp-idle = 600\n"
            "nat-ping-interval = 12.5\n"
            'realm = "office"\n'
            'domain = "office.example"\n'
            'block = ["MESSAGE=405", "SUBSCRIBE=489 Bad Event"]\n'
            'drop-header = ["User-Agent=friendly-scanner"]\n')
        self.assertEqual(options["legs"], ["udp:127.0.0.1:5070", "tcp:127.0.0.1:5070"])
        self.assertTrue(options["registrar"])
        self.assertFalse(options["force-rewrite"])
        self.assertEqual(options["tcp-idle"], 600.0)
        self.assertEqual(options["nat-ping-interval"], 12.5)
        self.assertEqual(options["realm"], "office")
        self.assertEqual(options["domains"], ["office.example"])
        self.assertEqual(options["block"], {"MESSAGE": "405", "SUBSCRIBE": "489 Bad Event"})
        self.assertEqual(options["drop_headers"], {"User-Agent": "friendly-scanner"})

    def test_command_line_overrides_the_file(self) -> None:
        text = ('legs = ["udp:127.0.0.1:5070", "udp:127.0.0.2:5070"]\ntcp-idle = 600\n'
                'domain = ["a.example", "b.example"]\nmax-expires = 900\n')
        options = self.parse(text, "--tcp-idle", "5", "--legs", "udp:127.0.0.1:5080", "--domain=c.example")
        self.assertEqual(options["tcp-idle"], 5.0)
        # a repeatable option on the command line replaces the file's list
        self.assertEqual(options["legs"], ["udp:127.0.0.1:5080"])
        self.assertEqual(options["domains"], ["c.example"])
        self.assertEqual(options["max-expires"], 900)  # not on the command line: the file's
        # the file comes in wherever --config stands on the line
        options = Options()
        options.parseOptions(["--tcp-idle", "7", "--config", self.write(text)])
        self.assertEqual(options["tcp-idle"], 7.0)

    def test_unknown_key(self) -> None:
        line = self.refused("registrar = true\n\ntcp_idle = 30\n")
        self.assertIn("line 3", line)
        self.assertIn("tcp_idle", line)
        self.assertIn("unknown key", line)
        self.assertIn("did you mean 'tcp-idle'", line)
        self.assertIn("unknown key", self.refusal("[tables]\nlegs = 1\n"))
        self.assertIn("line 1", self.refusal("config = 'other.toml'\n"))

    def refusal(self, text: str) -> str:
        self.stderr.truncate(0)
        self.stderr.seek(0)
        return self.refused(text)

    def test_bad_values_name_key_and_line(self) -> None:
        cases = [
            ("# a comment\nregistrar = 1\n", "registrar", "line 2", "want true or false"),
            ('registrar = "yes"\n', "registrar", "line 1", "want true or false"),
            ("\n\ntcp-idle = \"soon\"\n", "tcp-idle", "line 3", "wants a number"),
            ("workers = 2.5\n", "workers", "line 1", "wants an integer"),
            ("tcp-idle = [1, 2]\n", "tcp-idle", "line 1", "a list"),
            ("realm = true\n", "realm", "line 1", "want a string or a number"),
            ('legs = ["udp:127.0.0.1:5070", true]\n', "legs", "line 1", "not true"),
            ('\nblock = "MESSAGE"\n', "block", "line 2", "want METHOD=CODE"),
            ('drop-header = "User-Agent=(("\n', "drop-header", "line 1", "bad regular expression"),
            ("min-expires = 100\nmax-expires = 50\n", "--min-expires", "line 1", "above"),
            ('users = "/nonexistent/users"\n', "--users", "line 1", "cannot read"),
        ]
        for text, key, where, reason in cases:
            with self.subTest(text=text):
                line = self.refusal(text)
                for expected in (key, where, reason, "--config "):
                    self.assertIn(expected, line)

    def test_bad_toml_and_unreadable_file(self) -> None:
        line = self.refusal('legs = ["udp:127.0.0.1:5070"\nregistrar = true\n')
        self.assertIn("bad TOML", line)
        self.assertIn("line", line)
        line = self.refusal("registrar = \n")
        self.assertIn("bad TOML", line)
        self.assertIn("line 1", line)
        line = self.refusal('realm = "office"\nlegs = ["udp:127.0.0.1:5070"\n')
        self.assertIn("(line 2)", line)  # tomllib says only "at end of document"
        with self.assertRaises(SystemExit):
            Options().parseOptions(["--config", os.path.join(self.dir, "missing.toml")])
        self.assertIn("cannot read it", self.stderr.getvalue())
        path = os.path.join(self.dir, "latin1.toml")
        with open(path, "wb") as f:
            f.write(b'realm = "caf\xe9"\n')
        self.stderr.truncate(0)
        self.stderr.seek(0)
        with self.assertRaises(SystemExit):
            Options().parseOptions(["--config", path])
        self.assertIn("not UTF-8", self.stderr.getvalue())

    def test_readme_example_loads(self) -> None:
        """The TOML in README's "Configuration file and reload" section
        parses, with its files made in a scratch directory."""
        text = readme_example()
        self.assertIn("users", text)
        for name in ("users", "cert.pem"):
            text = text.replace(f"/etc/sipproxy/{name}", os.path.join(self.dir, name))
        with open(os.path.join(self.dir, "users"), "w") as f:
            f.write("alice:secret\n")
        from tests.certs import make_certificates

        certs = make_certificates(self.dir)
        text = text.replace(os.path.join(self.dir, "cert.pem"), certs["cert"])
        text = text.replace("/var/lib/sipproxy/", self.dir + "/")
        options = self.parse(text)
        self.assertTrue(options["registrar"])
        self.assertEqual(len(options["credentials"]), 1)
        self.assertTrue(options["domains"])
        self.assertTrue(options["leg_specs"])


def readme_example() -> str:
    """The first TOML code block of README's config file section."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "README.rst"), encoding="utf-8") as f:
        readme = f.read()
    section = readme.split("Configuration file and reload\n", 1)[1]
    block = section.split(".. code-block:: toml\n", 1)[1]
    lines = []
    for line in block.splitlines()[1:]:
        if line and not line.startswith("   "):
            break
        lines.append(line[3:])
    return "\n".join(lines).strip() + "\n"


class ConfigCommandLineTests(unittest.SynchronousTestCase):
    """twistd sipproxy --config with a bad file: one line, exit 2."""

    def test_bad_files_exit_2_with_one_line(self) -> None:
        cwd = temp_dir(self)
        cases = {
            "unknown.toml": ("registrar = true\nlegz = []\n", ["legz", "line 2"]),
            "value.toml": ("tcp-idle = 'soon'\n", ["tcp-idle", "line 1"]),
            "syntax.toml": ("registrar = tru\n", ["bad TOML", "line 1"]),
            "flag.toml": ("\nnathelper = 'yes'\n", ["nathelper", "line 2"]),
        }
        for name, (text, _) in cases.items():
            with open(os.path.join(cwd, name), "w") as f:
                f.write(text)

        def run(name: str) -> object:
            argv: Sequence[str] = [*twistd_command(), "-n", "--pidfile=", "sipproxy", "--config", name]
            return run_process(argv, 20.0, cwd=cwd, env=child_environment())

        with ThreadPoolExecutor(max_workers=4) as pool:
            results = dict(zip(cases, pool.map(run, cases)))
        for name, (_, expected) in cases.items():
            result = results[name]
            with self.subTest(file=name):
                self.assertEqual(result.returncode, 2, result)
                lines = result.stderr.splitlines()
                self.assertEqual(len(lines), 1, result)
                for text in expected:
                    self.assertIn(text, lines[0], result)
                self.assertNotIn("Traceback", result.stdout + result.stderr)


class HostileConfigTests(unittest.SynchronousTestCase):
    """Mangled files: one line and exit 2, or a clean parse; never a
    traceback."""

    def test_mutated_files(self) -> None:
        import random

        cwd = temp_dir(self)
        base = ('legs = ["udp:127.0.0.1:5070"]\nregistrar = true\ntcp-idle = 600\n'
                'block = ["MESSAGE=405"]\ndomain = "example.com"\n"max-expires" = 900\n'
                'drop-header = "User-Agent=scan"\nrealm = "office"\n').encode()
        rng = random.Random(1234)
        pieces = [b"=", b"[", b"]", b'"', b"'", b"\n", b"\\", b"\xff", b"\x00", b"{", b"}", b",", b"true", b"1e999",
                  b"-", b"#", b'"\\n"', b"inf", b"nan", b"\xe2\x80\xa8"]
        path = os.path.join(cwd, "mangled.toml")
        outcomes = {"parsed": 0, "refused": 0}
        for _ in range(300):
            data = bytearray(base)
            for _ in range(rng.randint(1, 4)):
                at = rng.randrange(len(data))
                if rng.random() < 0.5:
                    data[at:at + rng.randint(0, 3)] = rng.choice(pieces)
                else:
                    del data[at:at + rng.randint(1, 5)]
            with open(path, "wb") as f:
                f.write(bytes(data))
            stderr = io.StringIO()
            self.patch(sys, "stderr", stderr)
            try:
                Options().parseOptions(["--config", path])
                outcomes["parsed"] += 1
            except SystemExit as e:
                self.assertEqual(e.code, 2, bytes(data))
                lines = stderr.getvalue().splitlines()
                self.assertEqual(len(lines), 1, (bytes(data), lines))
                outcomes["refused"] += 1
        self.assertGreater(outcomes["refused"], 100, outcomes)
        self.assertGreater(outcomes["parsed"], 5, outcomes)
