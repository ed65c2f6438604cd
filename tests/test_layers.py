"""The layering rules of DESIGN.md, checked: the message layer imports no
Twisted and nothing else of the package; the SIP logic never imports the
reactor (it is passed in)."""
from __future__ import annotations

import json
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

import sipproxy

MESSAGE_LAYER = ["sipproxy.message", "sipproxy.uri", "sipproxy.sdp", "sipproxy.bounded"]
SIP_LOGIC = ["sipproxy.proxy", "sipproxy.routing", "sipproxy.branch", "sipproxy.contact", "sipproxy.chain",
             "sipproxy.registrar", "sipproxy.auth", "sipproxy.policy", "sipproxy.receivers", "sipproxy.location",
             "sipproxy.frontdoor", "sipproxy.nat.sessions"]


def modules_after_import(names: list[str]) -> list[str]:
    """What a fresh interpreter has loaded after importing C{names}."""
    code = ("import json, sys\n" + "".join(f"import {name}\n" for name in names)
            + "print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


class LayerTests(SynchronousTestCase):
    def test_message_layer_is_pure(self) -> None:
        loaded = modules_after_import(MESSAGE_LAYER)
        self.assertEqual([m for m in loaded if m.startswith(("twisted", "zope"))], [])
        self.assertEqual(sorted(m for m in loaded if m.startswith("sipproxy")), ["sipproxy", *sorted(MESSAGE_LAYER)])

    def test_sip_logic_does_not_import_the_reactor(self) -> None:
        loaded = modules_after_import(SIP_LOGIC)
        self.assertNotIn("twisted.internet.reactor", loaded)
        for edge in ("sipproxy.legs", "sipproxy.dispatcher", "sipproxy.nat.relay", "sipproxy.nat.ng"):
            self.assertNotIn(edge, loaded)

    def test_top_level_names(self) -> None:
        for name in sipproxy.__all__:
            self.assertIsNotNone(getattr(sipproxy, name), name)
        with self.assertRaises(AttributeError):
            getattr(sipproxy, "NoSuchThing")
