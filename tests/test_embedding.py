"""The README's embedding example, taken from the README and run as is
(with free ports): the proxy shares the reactor with a web page."""
from __future__ import annotations

import os
import re
import sys
import urllib.request

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from tests.util import (PROJECT_ROOT, UDPProbe, child_environment, reserve_port, sip_options, start_process,
                        temp_dir, wait_until)


def readme_example() -> str:
    """The first Python code block after the 'Embedding' heading."""
    with open(os.path.join(PROJECT_ROOT, "README.rst"), encoding="utf-8") as f:
        text = f.read()
    section = text[text.index("\nEmbedding\n"):]
    block = section[section.index(".. code-block:: python"):].split("\n")[2:]
    lines = []
    for line in block:
        if line and not line.startswith("    "):
            break
        lines.append(line[4:])
    return "\n".join(lines).strip() + "\n"


class EmbeddingExampleTests(TestCase):
    timeout = 30

    def test_example_is_a_whole_program(self) -> None:
        code = readme_example()
        self.assertIn("ProxyService(reactor", code)
        self.assertIn("reactor.run()", code)
        self.assertLessEqual(len([line for line in code.splitlines() if line.strip()]), 15)

    @defer.inlineCallbacks
    def test_example_serves_sip_and_http(self):
        sip_port = reserve_port("127.0.0.1", also=["127.0.0.2"])
        http_port = reserve_port("127.0.0.1")
        code = readme_example().replace(":5060", f":{sip_port}").replace("8080", str(http_port))
        self.assertIn(f"udp:127.0.0.2:{sip_port}", code)
        cwd = temp_dir(self)
        with open(os.path.join(cwd, "example.py"), "w") as f:
            f.write(code)
        proc = start_process(self, [sys.executable, "example.py"], cwd, "example", env=child_environment())
        probe = UDPProbe("127.0.0.1", sip_port, lambda local: sip_options("127.0.0.1", sip_port, local), self)
        answer = yield wait_until(probe, timeout=15, interval=0.2, what="a SIP answer from the example")
        self.assertTrue(answer.startswith(b"SIP/2.0 200 "), answer[:80])
        body = yield wait_until(lambda: _fetch(f"http://127.0.0.1:{http_port}/"), timeout=5, what="the web page")
        self.assertEqual(body, b"ok\n")
        self.assertTrue(os.path.exists(os.path.join(cwd, "sipproxy.secret")))
        self.assertIsNone(proc.poll())
        with open(os.path.join(cwd, "example.err")) as f:
            self.assertFalse(re.search("Traceback", f.read()))


def _fetch(url: str) -> bytes:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no HTTP proxy
    try:
        with opener.open(url, timeout=1) as response:
            return response.read()
    except OSError:
        return b""
