"""The README's promises that code can check: its commands and options."""
from __future__ import annotations

import os
import re

from twisted.trial.unittest import SynchronousTestCase

from sipproxy.app.tap import Options

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(*path: str) -> str:
    with open(os.path.join(ROOT, *path), encoding="utf-8") as f:
        return f.read()


def literal_after(text: str, marker: str) -> str:
    """The first line of the indented literal block after C{marker}."""
    rest = text[text.index(marker) + len(marker):]
    for line in rest.splitlines():
        if line.startswith("    ") and line.strip():
            return line.strip()
    raise AssertionError(f"no literal block after {marker!r}")


class ReadmeTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.readme = _read("README.rst")

    def test_ci_runs_the_readme_test_command(self) -> None:
        command = literal_after(self.readme, "From a checkout::")
        self.assertIn("pytest -n 2", command)
        self.assertIn("trial -j2 tests", command)
        self.assertIn(command, _read(".ci", "run").splitlines())

    def test_ci_runs_the_readme_pypy_test_command(self) -> None:
        command = literal_after(self.readme, "the same tests under PyPy")
        self.assertTrue(command.startswith("pypy3 -m venv"), command)
        self.assertIn(".venv-pypy/bin/trial -j2 tests", command)
        self.assertIn(command, _read(".ci", "run").splitlines())

    def test_install_command_installs_and_runs_the_plugin(self) -> None:
        lowest = re.search(r"python_requires = >=(\S+)", _read("setup.cfg")).group(1)
        for marker in (f"Python {lowest} or newer::", "(PyPy 7.3, Python 3.9)::"):
            command = literal_after(self.readme, marker)
            self.assertIn("pip install .", command)
            self.assertIn("twistd -n sipproxy --legs", command)

    def test_every_option_is_documented(self) -> None:
        options = Options()
        names = [flag[0] for flag in options.optFlags] + [param[0] for param in options.optParameters
                                                          if not param[3].startswith("(internal)")]
        names += [name[4:].replace("_", "-") for name in dir(options)
                  if name.startswith("opt_") and name not in ("opt_help", "opt_version")]
        missing = [name for name in names if f"``--{name}" not in self.readme]
        self.assertEqual(missing, [])
        self.assertTrue(re.search(r"``--legs ", self.readme))

    def test_layout_names_every_package_and_nothing_else(self) -> None:
        """Each folder of sipproxy/ has its line in the Layout section, and
        every folder named there exists (so the map cannot drift)."""
        section = self.readme[self.readme.index("Layout\n------"):]
        named = set(re.findall(r"``sipproxy/([a-z_]+)/``", section))
        package_dir = os.path.join(ROOT, "sipproxy")
        folders = {d for d in os.listdir(package_dir)
                   if os.path.isfile(os.path.join(package_dir, d, "__init__.py"))}
        self.assertEqual(named, folders)
        setup_packages = set(re.findall(r"^    (sipproxy(?:\.[a-z_]+)*)$", _read("setup.cfg"), re.M))
        walked = {os.path.relpath(folder, ROOT).replace(os.sep, ".")
                  for folder, _, files in os.walk(package_dir) if "__init__.py" in files}
        self.assertEqual(setup_packages, walked)
