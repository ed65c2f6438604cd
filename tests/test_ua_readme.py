"""The README's two user-agent scripts, run against each other and a
registrar on loopback (so the README cannot drift from the API)."""
from __future__ import annotations

import os
import re
from typing import Any

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

import sipproxy.app.ua
from sipproxy.app.ua import Simple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def readme_blocks(section: str) -> list[str]:
    """The python code blocks of one README section, dedented."""
    with open(os.path.join(ROOT, "README.rst"), encoding="utf-8") as f:
        text = f.read()
    start = text.index(f"{section}\n{'-' * len(section)}\n")
    end = text.index("\n----", start + len(section) + len(section) + 2)
    body = text[start:end]
    blocks = []
    for match in re.finditer(r"\.\. code-block:: python\n\n((?:    .*\n|\n)+)", body):
        lines = [line[4:] for line in match.group(1).splitlines()]
        blocks.append("\n".join(lines).strip() + "\n")
    return blocks


class ReadmeUserAgentTests(TestCase):
    timeout = 30

    def run_block(self, code: str, printed: list) -> dict:
        namespace: dict[str, Any] = {"__name__": "readme", "print": lambda *a: printed.append(" ".join(map(str, a)))}
        exec(compile(code, "README.rst", "exec"), namespace)
        return namespace

    @defer.inlineCallbacks
    def test_register_call_hang_up_and_answer(self) -> Any:
        caller_code, answer_code = readme_blocks("User agent")
        self.assertIn("async def main", caller_code)
        self.assertIn("async def answer", answer_code)
        self.assertLessEqual(len(caller_code.split("async def main")[1].split("\n\n")[0].splitlines()), 10)

        registrar = Simple(reactor, legs=["udp:127.0.0.1:0"])
        registrar.create_registrar(auth_users={"alice": "secret"}, min_expires=10)
        self.addCleanup(registrar.cleanup)
        registrar_uri = f"sip:{registrar.dispatcher.legs[0].sent_by}"

        made: list[Any] = []

        class Recording(Simple):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                made.append(self)

        self.patch(sipproxy.app.ua, "Simple", Recording)
        printed: list[str] = []
        answering = defer.ensureDeferred(self.run_block(answer_code, printed)["answer"](
            reactor, legs=("udp:127.0.0.1:0",)))
        callee = f"sip:bob@{made[0].dispatcher.legs[0].sent_by}"
        main = self.run_block(caller_code, printed)["main"]
        yield defer.ensureDeferred(main(reactor, registrar=registrar_uri, callee=callee))
        yield answering
        self.assertEqual(len(printed), 3, printed)
        self.assertEqual(printed[0], "registered for 300 seconds")
        self.assertIn("hung up: CallEnd(by='local', code=200, reason='OK')", printed)
        answered = [line for line in printed if line.startswith("call from")]
        self.assertRegex(answered[0], r"^call from <sip:alice@127\.0\.0\.1>;tag=\S+ ended by remote 200$")
        # alice unregistered in cleanup()
        bindings = yield registrar._receivers[0].receivers[1].store.lookup("sip:alice@127.0.0.1")
        self.assertEqual(bindings, [])
