"""The pure media modules import no Twisted and nothing of sipproxy beyond
the media package itself (DESIGN.md: sipproxy/ua/media is pure logic driven
by its edge modules: C{stream}, the sockets, and C{clock}, the reactor
timer of their send deadlines). Every module of the folder but the edges
is found by listing it, so a new module is checked the day it is added."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

import sipproxy.ua.media

EDGE_MODULES = {"stream", "clock"}
PACKAGES = {"sipproxy", "sipproxy.ua", "sipproxy.ua.media"}


def pure_media_modules() -> list[str]:
    folder = os.path.dirname(os.path.abspath(sipproxy.ua.media.__file__))
    return sorted(f"sipproxy.ua.media.{name[:-3]}" for name in os.listdir(folder)
                  if name.endswith(".py") and name != "__init__.py" and name[:-3] not in EDGE_MODULES)


def loaded_after_import(names: list[str]) -> list[str]:
    code = "import json, sys\n" + "".join(f"import {n}\n" for n in names) + "print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    return json.loads(out.stdout)


class MediaLayerTests(SynchronousTestCase):
    def test_the_pure_modules_are_found(self) -> None:
        modules = pure_media_modules()
        for name in ("g711", "rtp", "rtcp", "dtmf"):
            self.assertIn(f"sipproxy.ua.media.{name}", modules)

    def test_pure_media_imports_no_twisted_and_nothing_else_of_sipproxy(self) -> None:
        modules = pure_media_modules()
        loaded = loaded_after_import(modules)
        self.assertEqual([m for m in loaded if m.startswith(("twisted", "zope"))], [])
        ours = {m for m in loaded if m == "sipproxy" or m.startswith("sipproxy.")}
        self.assertTrue(set(modules) <= ours)
        self.assertEqual(sorted(ours - PACKAGES - set(modules)), [])
