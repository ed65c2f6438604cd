"""A proxy with a front door (registrar, auth, filters) on in-memory legs,
driven by a task.Clock: what the registrar, auth and receiver tests share."""
from __future__ import annotations

from typing import Any, Optional, Sequence

from twisted.internet.task import Clock

from sipproxy.access.digest_auth import digest_response, ha1, parse_credentials
from sipproxy.access.chain import ReceiveChain
from sipproxy.access.front_chain import FrontDoor
from sipproxy.proxy.stateless import StatelessProxy
from sipproxy.registrar.memory_store import MemoryStore
from sipproxy.testing import MemoryLeg, memory_dispatcher
from tests.sip import request

START = 1_800_000_000.0
PHONE = ("192.0.2.10", 5060)
OUTSIDE = ("203.0.113.5", 5060)
HOSTS = {"example.com": ["192.0.2.77"], "gw1.example.net": ["192.0.2.60"], "edge.example.net": ["192.0.2.50"]}


class FrontDoorHarness:
    """Mixin for SynchronousTestCase: C{self.leg} (192.0.2.1:5060) in front
    of a proxy with the receivers a L{FrontDoor} builds."""

    def make(self, store: Any = None, **options: Any) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.leg = MemoryLeg("192.0.2.1")
        self.dispatcher = memory_dispatcher([self.leg], hosts=HOSTS)
        self.store = store if store is not None else MemoryStore(self.clock)
        options.setdefault("secret", b"k" * 32)
        self.door = FrontDoor(self.clock, self.store, **options)
        # the registrar and the proxy share the secret and the clock, as twistd wires them
        self.proxy = StatelessProxy(self.dispatcher, secret=options["secret"], clock=self.clock)
        self.dispatcher.set_receiver(ReceiveChain([*self.door(self.dispatcher), self.proxy]))

    # sending and receiving ----------------------------------------------------------
    def send(self, data: bytes, source: tuple[str, int] = PHONE) -> list:
        self.leg.receive(data, source)
        return self.leg.take()

    def answer(self, data: bytes, source: tuple[str, int] = PHONE) -> Any:
        """Send, expect exactly one response back to the source."""
        sent = self.send(data, source)
        self.assertEqual(len(sent), 1, f"expected one message, got {sent!r}")  # type: ignore[attr-defined]
        message, addr = sent[0]
        self.assertFalse(hasattr(message, "uri"), f"expected a response, got {message!r}")  # type: ignore
        return message

    def forwarded(self, data: bytes, source: tuple[str, int] = PHONE) -> Any:
        """Send, expect exactly one forwarded request; (request, address)."""
        sent = self.send(data, source)
        self.assertEqual(len(sent), 1, f"expected one message, got {sent!r}")  # type: ignore[attr-defined]
        message, addr = sent[0]
        self.assertTrue(hasattr(message, "uri"), f"expected a request, got {message!r}")  # type: ignore
        return message, addr

    # REGISTER ---------------------------------------------------------------------------
    def register(self, user: str = "alice", domain: str = "example.com", contact: Optional[str] = None,
                 call_id: str = "reg-1", cseq: int = 1, headers: Sequence[tuple[str, str]] = (),
                 uri: Optional[str] = None, branch: Optional[str] = None) -> bytes:
        return request(
            "REGISTER", uri=uri or f"sip:{domain}", from_=f"<sip:{user}@{domain}>;tag=r{cseq}",
            to=f"<sip:{user}@{domain}>",
            contact=contact if contact is not None else f"<sip:{user}@192.0.2.10:5060>",
            call_id=call_id, cseq=cseq, headers=headers,
            via=f"SIP/2.0/UDP 192.0.2.10:5060;branch={branch or f'z9hG4bK{call_id}-{cseq}'}",
        )

    def invite(self, uri: str = "sip:alice@example.com", from_: str = "<sip:carol@example.org>;tag=c1",
               headers: Sequence[tuple[str, str]] = (), call_id: str = "call-1", cseq: int = 1,
               to: Optional[str] = None, method: str = "INVITE", branch: str = "z9hG4bKinv1") -> bytes:
        return request(method, uri=uri, from_=from_, to=to or f"<{uri}>", headers=headers, call_id=call_id,
                       cseq=cseq, via=f"SIP/2.0/UDP 203.0.113.5:5060;branch={branch}",
                       contact="<sip:carol@203.0.113.5>")


def credentials(challenge: str, user: str, password: str, method: str, uri: str, nc: int = 1,
                cnonce: str = "0a4f113b", algorithm: Optional[str] = None, realm: Optional[str] = None,
                response_for: Optional[str] = None, qop: Optional[str] = "auth", **extra: str) -> str:
    """The Authorization value a client answers C{challenge} with."""
    _, params = parse_credentials(challenge)
    algorithm = algorithm or params.get("algorithm", "MD5")
    realm = realm or params["realm"]
    nc_text = f"{nc:08x}"
    secret = ha1(user, realm, password, algorithm)
    response = digest_response(algorithm, secret, params["nonce"], method, response_for or uri, nc_text, cnonce, qop)
    value = (f'Digest username="{user}", realm="{realm}", nonce="{params["nonce"]}", uri="{uri}", '
             f'response="{response}", algorithm={algorithm}')
    if qop:
        value += f', qop={qop}, nc={nc_text}, cnonce="{cnonce}"'
    for name, v in extra.items():
        value += f', {name}="{v}"'
    return value
