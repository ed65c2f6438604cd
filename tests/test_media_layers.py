"""The pure media modules import no Twisted and nothing of sipproxy beyond
the media package itself (DESIGN.md: sipproxy/ua/media is pure logic driven
by one edge module, stream)."""
from __future__ import annotations

import json
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

PURE_MEDIA = ["sipproxy.ua.media.g711", "sipproxy.ua.media.rtp", "sipproxy.ua.media.rtcp"]
OPTIONAL = ["sipproxy.ua.media.dtmf", "sipproxy.ua.media.audiofile", "sipproxy.ua.media.pacing"]
PACKAGES = {"sipproxy", "sipproxy.ua", "sipproxy.ua.media"}


def loaded_after_import(names: list[str]) -> list[str]:
    code = ("import importlib, json, sys\n"
            f"for name in {names!r}:\n"
            "    try:\n        importlib.import_module(name)\n    except ModuleNotFoundError:\n        pass\n"
            "print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    return json.loads(out.stdout)


class MediaLayerTests(SynchronousTestCase):
    def test_pure_media_imports_no_twisted(self) -> None:
        loaded = loaded_after_import(PURE_MEDIA + OPTIONAL)
        self.assertEqual([m for m in loaded if m.startswith(("twisted", "zope"))], [])
        ours = {m for m in loaded if m.startswith("sipproxy")}
        self.assertTrue(set(PURE_MEDIA) <= ours)
        self.assertEqual(sorted(m for m in ours - PACKAGES if not m.startswith("sipproxy.ua.media.")), [])
