"""WebSocket legs (RFC 7118) on loopback: a browser-like autobahn client
registers over ws/wss, calls a UDP user agent through the proxy and is
called from it; in-dialog requests follow Record-Route back over the
WebSocket; a closed WebSocket's flow gets 430; hostile handshakes and
frames close the connection with one log line per source and no
traceback. Waiting is on Deferreds with timeouts; nothing is timed."""
from __future__ import annotations

import os
import secrets
import struct
from typing import Any, Optional

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import defer, protocol, reactor, ssl
from twisted.internet.defer import Deferred, DeferredQueue, inlineCallbacks
from twisted.logger import globalLogPublisher
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial import unittest

from sipproxy import Simple
from sipproxy.app.service import ProxyService
from sipproxy.app.tap import Options, _front_door, _tls_options
from sipproxy.sip.message import ParseError, Request, Response, parse
from sipproxy.transport.legspec import LegSpecError, parse_leg_spec
from sipproxy.transport.stream_guard import StreamLimits
from sipproxy.transport.websocket import MAX_MESSAGE, _cancel_timeouts, _Timer
from sipproxy.ua.endpoint import SIPError
from tests.certs import make_certificates
from tests.util import temp_dir, wait_until

WAIT = 10.0
DOMAIN = "example.test"
SDP = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       b"m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


def _timeout(d: Deferred, what: str) -> Deferred:
    def late(failure: Any) -> Any:
        if failure.check(defer.TimeoutError, defer.CancelledError):
            raise AssertionError(f"timed out waiting for {what}")
        return failure
    return d.addTimeout(WAIT, reactor).addErrback(late)


class LogEvents:
    """Every log event while the test runs (all namespaces: autobahn's too)."""

    def __init__(self, testcase: unittest.TestCase) -> None:
        self.events: list[dict] = []
        globalLogPublisher.addObserver(self)
        testcase.addCleanup(globalLogPublisher.removeObserver, self)

    def __call__(self, event: dict) -> None:
        self.events.append(event)

    def failures(self) -> list[dict]:
        return [e for e in self.events if "log_failure" in e or "Traceback" in str(e.get("log_format", ""))]

    def lines(self, namespace: str) -> list[str]:
        from twisted.logger import formatEvent
        return [formatEvent(e) for e in self.events if str(e.get("log_namespace", "")).startswith(namespace)]

    def about(self, text: str) -> list[dict]:
        from twisted.logger import formatEvent
        return [e for e in self.events if text in (formatEvent(e) or "")]


# -- a browser, as far as SIP goes -----------------------------------------------------------------
class Browser(WebSocketClientProtocol):
    """What a WebRTC softphone does on its WebSocket: text frames with SIP
    in them, a Via and Contact naming an invented .invalid host."""

    def onConnect(self, response: Any) -> None:
        self.factory.accepted_protocol = response.protocol

    def onOpen(self) -> None:
        self.factory.opened.callback(self)

    def onPing(self, payload: bytes) -> None:
        super().onPing(payload)  # autobahn answers with a pong
        self.factory.messages.put("ping")

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if not payload.strip():
            self.factory.messages.put(payload)  # a keep-alive answer
            return
        try:
            message = parse(payload)
        except ParseError as e:  # the 400 to a request without From is without From, too
            message = e.message
        self.factory.messages.put(message)

    def connectionLost(self, reason: Any = None) -> None:
        _cancel_timeouts(self)
        super().connectionLost(reason)

    def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
        if not self.factory.opened.called:
            self.factory.opened.errback(ConnectionError(f"WebSocket refused: {reason}"))
        self.factory.closed.callback(code)


class BrowserFactory(WebSocketClientFactory):
    protocol = Browser

    def __init__(self, url: str, protocols: Optional[list[str]]) -> None:
        super().__init__(url, protocols=protocols or [])
        self._batched_timer = _Timer(reactor)  # no timer left behind after the test
        self.opened: Deferred = Deferred()
        self.closed: Deferred = Deferred()
        self.messages: DeferredQueue = DeferredQueue()
        self.accepted_protocol: Optional[str] = None

    def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
        self.opened.errback(reason)


class Phone:
    """A browser phone's SIP state: builds requests and answers."""

    def __init__(self, browser: Browser, factory: BrowserFactory, proto: str = "WS") -> None:
        self.ws = browser
        self.factory = factory
        self.proto = proto
        self.host = secrets.token_hex(5) + ".invalid"
        self.user = secrets.token_hex(4)
        self.contact = f"<sip:{self.user}@{self.host};transport=ws>"
        self.cseq = 0

    def send(self, text: str, body: bytes = b"") -> None:
        data = text.replace("\n", "\r\n").encode() + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
        self.ws.sendMessage(data, isBinary=False)

    def next(self, what: str) -> Deferred:
        return _timeout(self.factory.messages.get(), what)

    def via(self, branch: Optional[str] = None) -> str:
        return f"Via: SIP/2.0/{self.proto} {self.host};branch=z9hG4bK{branch or secrets.token_hex(6)}\n"

    def register(self, aor: str, expires: int = 600) -> None:
        self.cseq += 1
        self.send(f"REGISTER sip:{DOMAIN} SIP/2.0\n{self.via()}Max-Forwards: 70\n"
                  f"From: <{aor}>;tag=r{self.user}\nTo: <{aor}>\nCall-ID: reg-{self.user}\n"
                  f"CSeq: {self.cseq} REGISTER\nContact: {self.contact};expires={expires}\n")

    def answer(self, request: Request, code: int, reason: str, body: bytes = b"", tag: str = "b") -> None:
        lines = [f"SIP/2.0 {code} {reason}"]
        for name in ("via", "record-route", "from", "call-id", "cseq"):
            lines += [f"{name.title()}: {v}" for v in request.get_all(name)]
        to = request.get("to") or ""
        lines.append(f"To: {to}" + ("" if "tag=" in to else f";tag={tag}"))
        if request.method == "INVITE":
            lines.append(f"Contact: {self.contact}")
        if body:
            lines.append("Content-Type: application/sdp")
        self.send("\n".join(lines) + "\n", body)


def _options(extra: list[str], workdir: str) -> Options:
    options = Options()
    options.parseOptions([*extra, "--registrar", "--domain", DOMAIN, "--secret-file",
                          os.path.join(workdir, "secret")])
    return options


class ProxyRig:
    """sipproxy --registrar on udp + ws (+ wss) legs, in this process."""

    def __init__(self, testcase: unittest.TestCase, legs: str, limits: Optional[StreamLimits] = None,
                 extra: tuple[str, ...] = ()) -> None:
        workdir = temp_dir(testcase)
        options = _options(["--legs", legs, *extra], workdir)
        tls = _tls_options(options)
        secret = b"w" * 32
        door, self.store = _front_door(options, reactor, secret)
        self.service = ProxyService(reactor, options["leg_specs"], receivers=[door], secret=secret,
                                    tcp_limits=limits or options["tcp_limits"], tls=tls)
        self.service.startService()
        testcase.addCleanup(self.stop)
        self.legs = {leg.proto: leg for leg in self.service.legs}

    def stop(self) -> Any:
        from sipproxy.registrar.flow_keeper import FlowKeeper

        for receiver in _walk(self.service.dispatcher.receiver):
            if isinstance(receiver, FlowKeeper):
                receiver.stop()
        return self.service.stopService()

    def url(self, proto: str = "ws") -> str:
        leg = self.legs[proto]
        return f"{proto}://{leg.host}:{leg.port}/"


def _walk(receiver: Any, depth: int = 0) -> list[Any]:
    """Every receiver in a (nested) chain."""
    out = [receiver]
    if depth < 5:
        for inner in getattr(receiver, "receivers", None) or []:
            out += _walk(inner, depth + 1)
        for name in ("keeper", "registrar"):
            inner = getattr(receiver, name, None)
            if inner is not None:
                out += _walk(inner, depth + 1)
    return out


@inlineCallbacks
def open_browser(testcase: unittest.TestCase, url: str, protocols: Optional[list[str]] = None,
                 tls: bool = False) -> Any:
    factory = BrowserFactory(url, ["sip"] if protocols is None else protocols)
    host, port = url.split("//")[1].rstrip("/").rsplit(":", 1)
    if tls:
        wrapped = TLSMemoryBIOFactory(ssl.CertificateOptions(verify=False), True, factory)
        connector = reactor.connectTCP(host, int(port), wrapped)
    else:
        connector = reactor.connectTCP(host, int(port), factory)
    testcase.addCleanup(connector.disconnect)
    browser = yield _timeout(factory.opened, f"the WebSocket to {url} to open")
    return Phone(browser, factory, "WSS" if tls else "WS")


def udp_phone(testcase: unittest.TestCase, rig: ProxyRig, user: str = "bob") -> Simple:
    udp = rig.legs["udp"]
    phone = Simple(reactor, legs=["udp:127.0.0.1:0"], outgoing_proxy=f"{udp.host}:{udp.port}",
                   from_=f"sip:{user}@{DOMAIN}")
    testcase.addCleanup(phone.cleanup)
    return phone


class WebSocketCallTests(unittest.TestCase):
    timeout = 60

    @inlineCallbacks
    def call_both_ways(self, proto: str) -> Any:
        extra: tuple[str, ...] = ()
        if proto == "wss":
            paths = make_certificates(temp_dir(self))
            extra = ("--tls-cert", paths["cert"], "--tls-key", paths["key"])
        rig = ProxyRig(self, f"udp:127.0.0.1:0,{proto}:127.0.0.1:0", extra=extra)
        log = LogEvents(self)
        alice = yield open_browser(self, rig.url(proto), tls=proto == "wss")
        self.assertEqual(alice.factory.accepted_protocol, "sip")
        bob = udp_phone(self, rig)
        bob.listen(answer_after=0)

        # REGISTER over the WebSocket: the answer comes back over it, with rport forced
        alice.register(f"sip:alice@{DOMAIN}")
        ok = yield alice.next("the 200 to REGISTER")
        self.assertEqual(ok.code, 200, ok)
        via = ok.top_via()
        self.assertEqual((via.param("received"), via.param("rport")),
                         ("127.0.0.1", str(alice.ws.transport.getHost().port)))

        # alice calls bob (UDP): the proxy's Record-Route names both legs
        call_id = "c-" + secrets.token_hex(4)
        bob_uri = f"sip:bob@{bob.dispatcher.legs[0].host}:{bob.dispatcher.legs[0].port}"
        alice.cseq += 1
        invite_cseq = alice.cseq
        alice.send(f"INVITE {bob_uri} SIP/2.0\n{alice.via()}Max-Forwards: 70\n"
                   f"From: <sip:alice@{DOMAIN}>;tag=a1\nTo: <{bob_uri}>\nCall-ID: {call_id}\n"
                   f"CSeq: {invite_cseq} INVITE\nContact: {alice.contact}\nContent-Type: application/sdp\n", SDP)
        final = None
        while final is None:
            answer = yield alice.next("bob's answer")
            if answer.code >= 200:
                final = answer
        self.assertEqual(final.code, 200, final)
        routes = final.get_all("record-route")
        leg = rig.legs[proto]
        self.assertIn(f"<sip:{leg.host}:{leg.port};transport={proto};lr>", routes)
        # alice's in-dialog requests: Route = the Record-Route set reversed (UAC)
        route_lines = "".join(f"Route: {r}\n" for r in reversed(routes))
        target = final.get("contact").strip("<>").split(">")[0]
        to = final.get("to")
        alice.send(f"ACK {target} SIP/2.0\n{alice.via()}{route_lines}Max-Forwards: 70\n"
                   f"From: <sip:alice@{DOMAIN}>;tag=a1\nTo: {to}\nCall-ID: {call_id}\nCSeq: {invite_cseq} ACK\n")
        alice.send(f"BYE {target} SIP/2.0\n{alice.via()}{route_lines}Max-Forwards: 70\n"
                   f"From: <sip:alice@{DOMAIN}>;tag=a1\nTo: {to}\nCall-ID: {call_id}\nCSeq: {invite_cseq + 1} BYE\n")
        bye_ok = yield alice.next("the 200 to BYE")
        self.assertEqual((bye_ok.code, bye_ok.get("cseq").split()[1]), (200, "BYE"))

        # bob calls alice: the registrar's flow leads over alice's WebSocket
        calling = bob.invite(f"sip:alice@{DOMAIN}", sdp=SDP)
        invite = yield alice.next("the INVITE from bob")
        self.assertEqual(invite.method, "INVITE")
        self.assertEqual(invite.uri, alice.contact.strip("<>"))
        self.assertTrue(any(f";transport={proto}" in r for r in invite.get_all("record-route")),
                        invite.get_all("record-route"))
        alice.answer(invite, 200, "OK", SDP)
        call = yield _timeout(calling, "bob's call to be answered")
        ack = yield alice.next("bob's ACK")
        self.assertEqual(ack.method, "ACK")
        ending = call.bye()
        bye = yield alice.next("bob's BYE")
        self.assertEqual(bye.method, "BYE")
        alice.answer(bye, 200, "OK")
        yield _timeout(ending, "the 200 to bob's BYE")

        # the WebSocket goes: a call to alice now fails at once with 430 (her flow is gone)
        alice.ws.sendClose(1000)
        yield _timeout(alice.factory.closed, "the WebSocket to close")
        yield _timeout(_until_closed(leg), "the leg to forget the connection")
        error = yield self.assertFailure(_timeout(bob.invite(f"sip:alice@{DOMAIN}", sdp=SDP), "the refused call"),
                                         SIPError)
        self.assertEqual(error.code, 430, error)
        self.assertEqual(log.failures(), [])

    def test_ws_register_and_calls_both_ways(self) -> Any:
        return self.call_both_ways("ws")

    def test_wss_register_and_calls_both_ways(self) -> Any:
        return self.call_both_ways("wss")

    @inlineCallbacks
    def test_the_proxy_connects_to_a_websocket_server(self) -> Any:
        """A target with transport=ws and no connection: the leg opens one
        as a WebSocket client (here to a user agent with a ws leg, a
        WebSocket server), and the dialog stays on it."""
        rig = ProxyRig(self, "udp:127.0.0.1:0,ws:127.0.0.1:0")
        log = LogEvents(self)
        carol = Simple(reactor, legs=["ws:127.0.0.1:0"], from_=f"sip:carol@{DOMAIN}")
        self.addCleanup(carol.cleanup)
        established: list[Any] = []
        carol.listen(answer_after=0, on_established=established.append)
        carol_leg = carol.dispatcher.legs[0]
        bob = udp_phone(self, rig)
        call = yield _timeout(bob.invite(f"sip:carol@{carol_leg.host}:{carol_leg.port};transport=ws", sdp=SDP),
                              "carol to answer over the proxy's outbound WebSocket")
        yield wait_until(lambda: established, WAIT, what="carol to see the ACK")
        proxy_ws = rig.legs["ws"]
        self.assertEqual([c.outbound for c in proxy_ws.connections.values()], [True])
        yield _timeout(call.bye(), "the BYE over the same WebSocket")
        self.assertEqual(len(proxy_ws.connections), 1)  # no second connection was opened
        self.assertEqual(log.failures(), [])

    @inlineCallbacks
    def test_a_browser_is_challenged_with_md5_alone(self) -> Any:
        """JsSIP and SIP.js know only MD5, and JsSIP reads the last
        challenge: over a WebSocket the proxy offers MD5 alone (UDP phones
        still get MD5 and SHA-256)."""
        users = os.path.join(temp_dir(self), "users")
        with open(users, "w") as f:
            f.write("alice:secret\n")
        rig = ProxyRig(self, "udp:127.0.0.1:0,ws:127.0.0.1:0", extra=("--users", users))
        alice = yield open_browser(self, rig.url())
        alice.register(f"sip:alice@{DOMAIN}")
        challenge = yield alice.next("the 401 to REGISTER")
        self.assertEqual(challenge.code, 401)
        offered = challenge.get_all("www-authenticate")
        self.assertEqual(len(offered), 1, offered)
        self.assertIn("algorithm=MD5", offered[0])


def _until_closed(leg: Any) -> Deferred:
    return wait_until(lambda: not leg.connections, WAIT, what="the WebSocket to be forgotten")


# -- hostile peers ----------------------------------------------------------------------------------
def handshake(host: str, port: int, protocols: Optional[str] = "sip", padding: int = 0) -> bytes:
    lines = [f"GET / HTTP/1.1", f"Host: {host}:{port}", "Upgrade: websocket", "Connection: Upgrade",
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13"]
    if protocols is not None:
        lines.append(f"Sec-WebSocket-Protocol: {protocols}")
    if padding:
        lines.append("X-Padding: " + "a" * padding)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def frame(payload: bytes, opcode: int = 1, length: Optional[int] = None) -> bytes:
    """One masked client frame; C{length} may lie about the payload."""
    size = len(payload) if length is None else length
    if size < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
    elif size < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class RawPeer(protocol.Protocol):
    """A TCP peer that writes what the test says and keeps what comes back."""

    def __init__(self) -> None:
        self.received = b""
        self.ready: Deferred = Deferred()
        self.lost: Deferred = Deferred()

    def connectionMade(self) -> None:
        self.ready.callback(self)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback(None)


@inlineCallbacks
def raw_peer(testcase: unittest.TestCase, leg: Any) -> Any:
    peer = RawPeer()
    factory = protocol.ClientFactory()
    factory.protocol = lambda: peer  # type: ignore[assignment]
    connector = reactor.connectTCP(leg.host, leg.port, factory)
    testcase.addCleanup(connector.disconnect)
    yield _timeout(peer.ready, "a TCP connection")
    return peer


class WebSocketHostileTests(unittest.TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.log = LogEvents(self)
        self.rig = ProxyRig(self, "udp:127.0.0.1:0,ws:127.0.0.1:0",
                            limits=StreamLimits(max_per_ip=4, idle_timeout=2.0, read_timeout=1.0))
        self.leg = self.rig.legs["ws"]

    def assert_no_traceback(self) -> None:
        self.assertEqual(self.log.failures(), [])
        # the proxy's side only (the test's own autobahn clients may complain)
        noisy = [e for e in self.events_of("autobahn") if "Server" in str(e.get("log_namespace"))
                 and e.get("log_level") is not None and e["log_level"].name in ("warn", "error", "critical")]
        self.assertEqual(noisy, [])

    def events_of(self, namespace: str) -> list[dict]:
        return [e for e in self.log.events if str(e.get("log_namespace", "")).startswith(namespace)]

    @inlineCallbacks
    def assert_still_serving(self) -> Any:
        phone = yield open_browser(self, self.rig.url())
        phone.send(f"OPTIONS sip:{self.leg.host}:{self.leg.port};transport=ws SIP/2.0\n{phone.via()}"
                   f"Max-Forwards: 70\nFrom: <sip:x@{DOMAIN}>;tag=1\nTo: <sip:{self.leg.host}>\n"
                   f"Call-ID: ping-{phone.user}\nCSeq: 1 OPTIONS\n")
        answer = yield phone.next("the 200 to OPTIONS")
        self.assertEqual(answer.code, 200)

    @inlineCallbacks
    def test_a_handshake_without_the_sip_subprotocol_is_refused(self) -> Any:
        peer = yield raw_peer(self, self.leg)
        peer.transport.write(handshake(self.leg.host, self.leg.port, protocols=None))
        yield _timeout(peer.lost, "the refused handshake to close")
        self.assertTrue(peer.received.startswith(b"HTTP/1.1 400"), peer.received[:200])
        self.assertIn(b"subprotocol 'sip' is required", peer.received)
        # an autobahn client offering another subprotocol is refused as well
        factory = BrowserFactory(self.rig.url(), ["chat"])
        connector = reactor.connectTCP(self.leg.host, self.leg.port, factory)
        self.addCleanup(connector.disconnect)
        yield self.assertFailure(_timeout(factory.opened, "the refusal"), ConnectionError)
        yield self.assert_still_serving()
        self.assert_no_traceback()

    @inlineCallbacks
    def test_garbage_frames_close_the_connection_with_one_line_per_source(self) -> Any:
        garbage = [b"\xff" * 64,  # reserved bits and opcode
                   frame(b"x", opcode=3),  # a reserved opcode
                   frame(b"abc", length=MAX_MESSAGE + 1),  # a message larger than the limit
                   frame(b"\xc3\x28\xa0\xa1", opcode=1),  # text that is not UTF-8
                   frame(b"", opcode=8, length=1) + b"\x00"]  # a close frame with a one-octet code
        for data in garbage:
            peer = yield raw_peer(self, self.leg)
            peer.transport.write(handshake(self.leg.host, self.leg.port))
            yield wait_until(lambda: b"\r\n\r\n" in peer.received, WAIT, what="the handshake answer")
            self.assertTrue(peer.received.startswith(b"HTTP/1.1 101"), peer.received[:100])
            peer.transport.write(data)
            yield _timeout(peer.lost, f"the connection sending {data[:8]!r} to close")
        lines = [e for e in self.events_of("sipproxy.transport") if e.get("source") == "127.0.0.1"]
        self.assertEqual(len(lines), 1, [e.get("log_format") for e in lines])
        yield self.assert_still_serving()
        self.assert_no_traceback()

    @inlineCallbacks
    def test_garbage_sip_in_a_good_frame_keeps_the_connection(self) -> Any:
        phone = yield open_browser(self, self.rig.url())
        phone.ws.sendMessage(b"\x00\x01 this is not SIP \r\n\r\n", isBinary=True)
        phone.ws.sendMessage(b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/WS a.invalid;branch=z9hG4bKq\r\n"
                             b"CSeq: 1 OPTIONS\r\n\r\n", isBinary=False)  # no From, To, Call-ID: 400
        answer = yield phone.next("the 400 to a malformed request")
        self.assertEqual(answer.code, 400)
        yield self.assert_still_serving()
        self.assertEqual(len(self.leg.connections), 2)
        self.assert_no_traceback()

    @inlineCallbacks
    def test_keep_alives_both_ways(self) -> Any:
        """A client's CRLF ping gets a CRLF pong (RFC 5626 over a WebSocket,
        as SIP.js sends them); the flow keeper's CRLF ping goes out as a
        WebSocket ping, which browsers answer by themselves."""
        phone = yield open_browser(self, self.rig.url())
        phone.ws.sendMessage(b"\r\n\r\n", isBinary=False)
        pong = yield phone.next("the CRLF pong")
        self.assertEqual(pong, b"\r\n")
        (address,) = self.leg.connections
        self.leg.send(b"\r\n\r\n", address)
        ping = yield phone.next("a WebSocket ping")
        self.assertEqual(ping, "ping")
        self.assertTrue(self.leg.has_flow(address))
        self.assertFalse(self.leg.has_flow(("127.0.0.1", 9)))

    @inlineCallbacks
    def test_an_endless_handshake_is_cut(self) -> Any:
        peer = yield raw_peer(self, self.leg)
        peer.transport.write(handshake(self.leg.host, self.leg.port, padding=20000)[:-4])
        yield _timeout(peer.lost, "the oversized handshake to be cut")
        self.assertEqual(peer.received, b"")
        self.assert_no_traceback()

    @inlineCallbacks
    def test_a_silent_peer_is_cut_and_connections_per_address_are_capped(self) -> Any:
        peers = []
        for _ in range(6):
            peer = yield raw_peer(self, self.leg)
            peers.append(peer)
        # the limit is 4 per address: the 5th and 6th are closed at once, before any handshake
        yield _timeout(defer.DeferredList([p.lost for p in peers[4:]]), "the connections over the limit to close")
        self.assertEqual(self.leg.refused, 2)
        # the first four never send a handshake: cut at the read timeout
        yield _timeout(defer.DeferredList([p.lost for p in peers[:4]]), "silent connections to be cut")
        self.assertEqual(self.leg.guard.per_ip.get("127.0.0.1", 0), 0)
        yield self.assert_still_serving()
        self.assert_no_traceback()


# -- the README's example -----------------------------------------------------------------------------
class ReadmeExampleTests(unittest.SynchronousTestCase):
    """The WebSocket section's command lines parse as written (with this
    machine's files and address), and it names the ng options the client
    really sends."""

    def section(self) -> str:
        from tests.util import PROJECT_ROOT

        with open(os.path.join(PROJECT_ROOT, "README.rst"), encoding="utf-8") as f:
            text = f.read()
        import re

        start = text.index("WebSocket (browsers)\n----")
        following = re.compile(r"\n\n[^\n]+\n-{3,}\n").search(text, start + 30)  # the next section's heading
        return text[start:following.start() if following else len(text)]

    def commands(self) -> dict[str, list[str]]:
        import shlex

        lines = self.section().replace("\\\n", " ").splitlines()
        found = {}
        for line in lines:
            words = shlex.split(line.strip()) if line.startswith("    ") else []
            if words and words[0] in ("twistd", "rtpengine"):
                found[words[0]] = words
        return found

    def test_the_twistd_command_parses(self) -> None:
        commands = self.commands()
        argv = commands["twistd"]
        args = argv[argv.index("sipproxy") + 1:]
        workdir = temp_dir(self)
        paths = make_certificates(workdir)
        users = os.path.join(workdir, "users")
        with open(users, "w") as f:
            f.write("alice:secret\n")
        files = {"/etc/sipproxy/cert.pem": paths["cert"], "/etc/sipproxy/key.pem": paths["key"],
                 "/etc/sipproxy/users": users}
        args = [files.get(a, a.replace("203.0.113.10", "127.0.0.1")) for a in args]
        options = _options(args, workdir)
        self.assertEqual([s.proto for s in options["leg_specs"]], ["udp", "wss"])
        self.assertIsNotNone(_tls_options(options))
        # rtpengine listens where the proxy sends ng
        ng = [a for a in commands["rtpengine"] if a.startswith("--listen-ng=")][0].split("=", 1)[1]
        self.assertEqual(argv[argv.index("--nathelper-ng") + 1], f"udp:{ng}")

    def test_the_ng_options_are_those_sent(self) -> None:
        from sipproxy.nat.ng import TO_BROWSER, TO_PHONE

        text = " ".join(self.section().split())
        for options in (TO_BROWSER, TO_PHONE):
            for name, value in options.items():
                if name == "flags":
                    for flag in value:
                        self.assertIn(f"``{flag}``", text)
                elif isinstance(value, list):
                    self.assertIn(f"``{name}=[{', '.join(value)}]``", text)
                else:
                    self.assertIn(f"``{name}={value}``", text)


class LegOptionTests(unittest.SynchronousTestCase):
    def parse_fails(self, *args: str) -> str:
        import io
        import sys

        stderr = io.StringIO()
        self.patch(sys, "stderr", stderr)
        with self.assertRaises(SystemExit) as caught:
            Options().parseOptions(list(args))
        self.assertEqual(caught.exception.code, 2)
        lines = stderr.getvalue().splitlines()
        self.assertEqual(len(lines), 1, lines)
        return lines[0]

    def test_specifications(self) -> None:
        self.assertEqual(str(parse_leg_spec("ws:127.0.0.1")), "ws:127.0.0.1:80")
        self.assertEqual(str(parse_leg_spec("WSS:[::1]:7443")), "wss:[::1]:7443")
        with self.assertRaises(LegSpecError) as caught:
            parse_leg_spec("wx:127.0.0.1:80")
        self.assertIn("use udp, tcp, tls, ws or wss", str(caught.exception))

    def test_a_wss_leg_needs_a_certificate(self) -> None:
        line = self.parse_fails("--legs", "wss:127.0.0.1:7443")
        self.assertIn("a WSS leg needs --tls-cert", line)

    def test_a_bad_websocket_leg_is_one_line(self) -> None:
        self.assertIn("must be an IP address", self.parse_fails("--legs", "ws:browser.example:8080"))


class SendRefusedTests(unittest.TestCase):
    timeout = 30

    @inlineCallbacks
    def test_a_message_too_large_to_send_is_one_line_not_a_traceback(self) -> Any:
        log = LogEvents(self)
        rig = ProxyRig(self, "udp:127.0.0.1:0,ws:127.0.0.1:0")
        leg = rig.legs["ws"]
        phone = yield open_browser(self, rig.url())
        (address,) = leg.connections
        leg.send(b"OPTIONS sip:x SIP/2.0\r\n" + b"X: " + b"y" * MAX_MESSAGE + b"\r\n\r\n", address)
        self.assertEqual(len(log.about("cannot send")), 1)
        self.assertEqual(log.failures(), [])
        self.assertTrue(leg.has_flow(address))  # the connection stays
        del phone
