"""The ng options that bridge a browser (WebRTC: ICE, DTLS-SRTP, rtcp-mux)
and a SIP phone (plain RTP) through rtpengine: what the proxy's ng client
asks for, per direction, for a call between a WebSocket leg and a UDP leg
(the ng requests are captured on a fake reactor and answered by the
project's own ng server, which ignores what it does not implement)."""
from __future__ import annotations

from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase, TestCase

from sipproxy.nat.ng import TO_BROWSER, TO_PHONE, encode_message, webrtc_options
from sipproxy.testing import MemoryLeg, memory_dispatcher
from sipproxy.proxy.stateless import StatelessProxy
from tests.nat_util import free_udp_block, sdp
from tests.test_nat_interop import _ng
from tests.util import UDPProbe, require_program, reserve_port, start_process, temp_dir, wait_until
from tests.sip import request
from tests.test_nat_ng import NG, SDP_TYPE, TO_TAGGED, ClientTestCase

BROWSER = ("127.0.0.1", 50123)
#: an offer as a browser makes it (trimmed): ICE, DTLS-SRTP, rtcp-mux
BROWSER_OFFER = (
    b"v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
    b"m=audio 50000 UDP/TLS/RTP/SAVPF 111 0\r\nc=IN IP4 127.0.0.1\r\na=rtcp:9 IN IP4 0.0.0.0\r\n"
    b"a=candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host generation 0\r\n"
    b"a=ice-ufrag:kIp1\r\na=ice-pwd:ELzh9YxGtSju1ziglxxkD9OE\r\na=ice-options:trickle\r\n"
    b"a=fingerprint:sha-256 CE:92:CC:D1:A4:28:4A:60:CD:13:00:2F:1C:50:E0:01:5D:25:73:53:F9:7E:8D:3A:F6:BB:04:7F:83:F1:43:FC\r\n"
    b"a=setup:actpass\r\na=mid:0\r\na=sendrecv\r\na=rtcp-mux\r\n"
    b"a=rtpmap:111 opus/48000/2\r\na=rtpmap:0 PCMU/8000\r\n")
BROWSER_VIA = "SIP/2.0/WS b7x.invalid;branch=z9hG4bKws1;received=127.0.0.1;rport=50123"


def _text(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list):
        return [_text(v) for v in value]
    return value


class OptionTests(SynchronousTestCase):
    def test_only_a_call_between_a_browser_and_a_phone_is_bridged(self) -> None:
        self.assertEqual(webrtc_options("ws", "udp")["ICE"], "remove")
        self.assertEqual(webrtc_options("tcp", "wss")["transport-protocol"], "UDP/TLS/RTP/SAVPF")
        self.assertEqual(webrtc_options("ws", "wss"), {})  # browser to browser: WebRTC both sides
        self.assertEqual(webrtc_options("udp", "tls"), {})


class BrowserCallTests(ClientTestCase):
    """A browser on a ws leg (127.0.0.1) and a phone on a UDP leg (127.0.0.2)."""

    def setUp(self) -> None:
        super().setUp()
        self.a = MemoryLeg("127.0.0.1", 8080, proto="ws")
        self.b = MemoryLeg("127.0.0.2")
        self.dispatcher = memory_dispatcher(
            [self.a, self.b], local_address=lambda ip: ip if ip.startswith("127.0.0.2") else "127.0.0.1")
        self.proxy = StatelessProxy(self.dispatcher, secret=b"s" * 32, nathelper=self.client)
        self.dispatcher.set_receiver(self.proxy)

    def ng(self, command: str) -> dict:
        found = [r for r in self.reactor.requests if r["command"] == command.encode()]
        self.assertEqual(len(found), 1, self.reactor.requests)
        return {k: _text(v) for k, v in found[0].items() if k != "sdp"}

    def assert_options(self, message: dict, wanted: dict) -> None:
        for name, value in wanted.items():
            if name == "flags":
                for flag in value:
                    self.assertIn(flag, message["flags"])
            else:
                self.assertEqual(message.get(name), value, (name, message))
        self.assertIn("trust-address", message["flags"])  # the configured flags stay

    def test_a_browser_calls_a_phone(self) -> None:
        self.a.receive(request(uri="sip:bob@127.0.0.2:5090", via=BROWSER_VIA, body=sdp("127.0.0.1", 40000),
                               headers=[SDP_TYPE], contact="<sip:k3@b7x.invalid;transport=ws>"), BROWSER)
        invite = self.take(self.b)
        offer = self.ng("offer")
        self.assert_options(offer, TO_PHONE)  # the phone gets plain RTP
        self.assertNotIn("generate-mid", offer["flags"])
        response = invite.create_response(200, to_tag="bob1", headers=[("Contact", "<sip:bob@127.0.0.2:5090>")],
                                          record_route=True)
        response.set_body(sdp("127.0.0.2", 40010).encode(), "application/sdp")
        self.b.receive(response, ("127.0.0.2", 5090))
        self.take(self.a)
        self.assert_options(self.ng("answer"), TO_BROWSER)  # the browser gets ICE and DTLS-SRTP

    def test_a_phone_calls_a_browser(self) -> None:
        self.b.receive(request(uri="sip:k3@127.0.0.1:50123;transport=ws", body=sdp("127.0.0.2", 40020),
                               headers=[SDP_TYPE], via="SIP/2.0/UDP 127.0.0.2:5090;branch=z9hG4bKph1",
                               contact="<sip:bob@127.0.0.2:5090>"), ("127.0.0.2", 5090))
        self.take(self.a)
        offer = self.ng("offer")
        self.assert_options(offer, TO_BROWSER)
        self.assertEqual(offer["rtcp-mux"], ["offer", "require"])


class RealRtpengineTests(TestCase):
    """The same options sent to the real rtpengine: a phone's RTP offer
    comes out as WebRTC for the browser, a browser's offer as plain RTP."""

    timeout = 30

    @inlineCallbacks
    def test_rtpengine_bridges_webrtc_and_rtp(self) -> Any:
        rtpengine = require_program("rtpengine")
        ng_port = reserve_port("127.0.0.1")
        low = free_udp_block("127.0.0.1", 100, low=31000, high=32000)
        start_process(self, [rtpengine, "--config-file=none", "--foreground", "--table=-1",
                             "--interface=127.0.0.1", f"--listen-ng=127.0.0.1:{ng_port}", f"--port-min={low}",
                             f"--port-max={low + 99}", "--delete-delay=0", "--log-stderr"],
                      temp_dir(self), "rtpengine")
        probe = UDPProbe("127.0.0.1", ng_port, lambda _: encode_message(b"p1", {"command": "ping"}), testcase=self)
        yield wait_until(probe, 10, what="rtpengine to answer ng ping")

        def offer(call_id: str, body: bytes, sender: str, receiver: str) -> str:
            message = {"command": "offer", "call-id": call_id, "from-tag": "f1", "sdp": body,
                       "flags": ["trust-address"]}
            options = webrtc_options(sender, receiver)
            message["flags"] += options.pop("flags", [])
            message.update(options)
            reply = _ng("127.0.0.1", ng_port, message, cookie=call_id.encode())  # rtpengine caches replies by cookie
            self.assertEqual(reply.get("result"), b"ok", reply)
            return reply["sdp"].decode()

        to_browser = offer("phone-to-browser", sdp("127.0.0.1", 40000).encode(), "udp", "ws")
        for line in ("UDP/TLS/RTP/SAVPF", "a=ice-ufrag:", "a=fingerprint:", "a=rtcp-mux", "a=mid:",
                     "typ host"):
            self.assertIn(line, to_browser)
        self.assertNotIn("a=crypto:", to_browser)
        # what a browser offers (ICE, DTLS, rtcp-mux), on its way to the phone
        browser_offer = BROWSER_OFFER
        to_phone = offer("browser-to-phone", browser_offer, "wss", "udp")
        self.assertIn("RTP/AVP", to_phone)
        for line in ("SAVPF", "a=ice-", "a=fingerprint:", "a=candidate:", "a=rtcp-mux"):
            self.assertNotIn(line, to_phone)
