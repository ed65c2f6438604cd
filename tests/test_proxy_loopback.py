"""A whole call through a real ProxyService over real sockets (loopback,
IPv4 and IPv6, UDP and TCP), with our own small endpoints on both ends."""
from __future__ import annotations

import socket
import tempfile

from twisted.internet import defer, protocol, reactor
from twisted.trial.unittest import SkipTest, TestCase

from sipproxy.transport.legs import TLSOptions
from sipproxy.sip.message import Request, parse
from sipproxy.app.service import ProxyService
from tests.certs import make_certificates
from tests.sip import SDP_OFFER, request


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


class UDPEndpoint(protocol.DatagramProtocol):
    """Records datagrams and hands the next one to whoever waits."""

    def __init__(self) -> None:
        self.waiting: list[defer.Deferred] = []
        self.queue: list[tuple[bytes, tuple]] = []

    def datagramReceived(self, data, addr):
        if self.waiting:
            self.waiting.pop(0).callback((parse(data), addr))
        else:
            self.queue.append((data, addr))

    def next(self) -> defer.Deferred:
        if self.queue:
            data, addr = self.queue.pop(0)
            return defer.succeed((parse(data), addr))
        d = defer.Deferred()
        self.waiting.append(d)
        return d

    def send(self, data: bytes, addr) -> None:
        self.transport.write(data, addr)


class StreamEndpoint(protocol.Protocol):
    """One TCP connection; frames by Content-Length the simple way."""

    def __init__(self) -> None:
        self.buffer = b""
        self.waiting: list[defer.Deferred] = []
        self.queue: list = []

    def dataReceived(self, data):
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, _, rest = self.buffer.partition(b"\r\n\r\n")
            length = _content_length(head)
            if len(rest) < length:
                return
            message, self.buffer = head + b"\r\n\r\n" + rest[:length], rest[length:]
            item = (parse(message), self.transport.getPeer())
            if self.waiting:
                self.waiting.pop(0).callback(item)
            else:
                self.queue.append(item)

    def next(self) -> defer.Deferred:
        if self.queue:
            return defer.succeed(self.queue.pop(0))
        d = defer.Deferred()
        self.waiting.append(d)
        return d

    def send(self, data: bytes, addr=None) -> None:
        self.transport.write(data)


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() in (b"content-length", b"l"):
            return int(value.strip())
    return 0


class _CallThroughProxy:
    """Mixin: one INVITE/180/200/ACK/BYE/200 dialog through two legs."""

    host_a = "127.0.0.1"
    host_b = "127.0.0.2"
    timeout = 10

    two_legs = True

    def start_proxy(self, proto: str) -> ProxyService:
        hosts = (self.host_a, self.host_b) if self.two_legs else (self.host_a,)
        legs = [f"{proto}:[{h}]:0" if ":" in h else f"{proto}:{h}:0" for h in hosts]
        tls = None
        if proto == "tls":
            self.certs = make_certificates(tempfile.mkdtemp(prefix="sipproxy-tls-"), tuple(dict.fromkeys(hosts)))
            tls = TLSOptions(self.certs["cert"], ca_file=self.certs["ca"], verify_peers=True)
        service = ProxyService(reactor, legs, secret=b"L" * 32, tls=tls)
        service.startService()
        self.addCleanup(service.stopService)
        return service

    @defer.inlineCallbacks
    def run_call(self, proto: str):
        service = self.start_proxy(proto)
        leg_a, leg_b = service.legs if self.two_legs else service.legs * 2
        via_proto = proto.upper()
        uac, uas, uac_addr, uas_addr = yield self.endpoints(proto, leg_a)
        host_b = f"[{self.host_b}]" if ":" in self.host_b else self.host_b
        host_a = f"[{self.host_a}]" if ":" in self.host_a else self.host_a
        transport = {"udp": "", "tcp": ";transport=tcp", "tls": ";transport=tls"}[proto]
        invite = request(
            uri=f"sip:bob@{host_b}:{uas_addr[1]}{transport}",
            via=f"SIP/2.0/{via_proto} {host_a}:{uac_addr[1]};branch=z9hG4bKloop1",
            contact=f"<sip:alice@{host_a}:{uac_addr[1]}{transport}>",
            headers=[("Content-Type", "application/sdp")], body=SDP_OFFER,
        )
        uac.send(invite, (leg_a.host, leg_a.port))
        got, _ = yield uas.next()
        self.assertEqual(got.method, "INVITE")
        self.assertEqual(got.top_via().sent_by, leg_b.sent_by)
        self.assertEqual(got.body, SDP_OFFER.encode())
        self.assertEqual(len(got.get_all("record-route")), 2 if self.two_legs else 1)
        reply_to = (leg_b.host, leg_b.port)
        for code in (180, 200):
            response = got.create_response(code, to_tag="bob1", record_route=True,
                                           headers=[("Contact", f"<sip:bob@{host_b}:{uas_addr[1]}{transport}>")])
            uas.send(bytes(response), reply_to)
            answer, _ = yield uac.next()
            self.assertEqual(answer.code, code)
            self.assertEqual(answer.get_all("via"), [f"SIP/2.0/{via_proto} {host_a}:{uac_addr[1]};branch=z9hG4bKloop1"])
        # the caller's BYE follows the route set (reversed Record-Route)
        route = ", ".join(reversed(answer.get_all("record-route")))
        remote = answer.name_addr("contact").uri
        if self.two_legs:  # tokenised, pointing at the proxy
            self.assertEqual(remote.host.strip("[]"), leg_a.host)
        bye = Request("BYE", str(remote), [
            ("Via", f"SIP/2.0/{via_proto} {host_a}:{uac_addr[1]};branch=z9hG4bKloop2"),
            ("Route", route), ("Max-Forwards", "70"), ("From", answer.get("from")),
            ("To", answer.get("to")), ("Call-ID", answer.call_id), ("CSeq", "2 BYE"),
        ])
        uac.send(bytes(bye), (leg_a.host, leg_a.port))
        got_bye, _ = yield uas.next()
        self.assertEqual(got_bye.method, "BYE")
        self.assertEqual(got_bye.uri, f"sip:bob@{host_b}:{uas_addr[1]}{transport}")
        self.assertEqual(got_bye.get_all("route"), [])
        uas.send(bytes(got_bye.create_response(200)), reply_to)
        done, _ = yield uac.next()
        self.assertEqual((done.code, done.cseq_method), (200, "BYE"))

    @defer.inlineCallbacks
    def endpoints(self, proto: str, leg_a):
        if proto == "udp":
            uac, uas = UDPEndpoint(), UDPEndpoint()
            port_a = reactor.listenUDP(0, uac, interface=self.host_a)
            port_b = reactor.listenUDP(0, uas, interface=self.host_b)
            self.addCleanup(port_a.stopListening)
            self.addCleanup(port_b.stopListening)
            return uac, uas, (self.host_a, port_a.getHost().port), (self.host_b, port_b.getHost().port)
        # TCP: the UAS listens, the UAC connects to the proxy
        uas_holder: list = []
        factory = protocol.Factory.forProtocol(StreamEndpoint)
        original = factory.buildProtocol

        def build(addr):
            proto_ = original(addr)
            uas_holder.append(proto_)
            return proto_

        factory.buildProtocol = build
        if proto == "tls":  # the endpoints use the proxy's certificates: the proxy verifies them
            options = TLSOptions(self.certs["cert"], ca_file=self.certs["ca"], verify_peers=True)
            port_b = reactor.listenSSL(0, factory, options.server, interface=self.host_b)
            uac = yield protocol.ClientCreator(reactor, StreamEndpoint).connectSSL(leg_a.host, leg_a.port,
                                                                                   options.client)
        else:
            port_b = reactor.listenTCP(0, factory, interface=self.host_b)
            uac = yield protocol.ClientCreator(reactor, StreamEndpoint).connectTCP(leg_a.host, leg_a.port)
        self.addCleanup(port_b.stopListening)
        self.addCleanup(uac.transport.loseConnection)
        uas = _LazyStream(uas_holder)
        self.addCleanup(uas.close)
        return uac, uas, (self.host_a, uac.transport.getHost().port), (self.host_b, port_b.getHost().port)


class _LazyStream:
    """The UAS side of TCP exists once the proxy connects to it."""

    def __init__(self, holder: list) -> None:
        self.holder = holder

    def next(self) -> defer.Deferred:
        if self.holder:
            return self.holder[0].next()
        d = defer.Deferred()
        poll = reactor.callLater(0.01, lambda: self.next().chainDeferred(d))
        d.addBoth(lambda r: (poll.active() and poll.cancel(), r)[1])
        return d

    def send(self, data: bytes, addr=None) -> None:
        self.holder[0].send(data)

    def close(self) -> None:
        for p in self.holder:
            p.transport.loseConnection()


class IPv4CallTests(_CallThroughProxy, TestCase):
    def test_udp_call_between_two_legs(self):
        return self.run_call("udp")

    def test_tcp_call_between_two_legs(self):
        return self.run_call("tcp")

    def test_tls_call_between_two_legs(self):
        return self.run_call("tls")


class IPv6CallTests(_CallThroughProxy, TestCase):
    host_a = "::1"
    host_b = "::1"
    two_legs = False  # the host has one IPv6 loopback address

    def setUp(self):
        if not _has_ipv6():
            raise SkipTest("this host has no IPv6 loopback")

    def test_udp_call_over_ipv6(self):
        return self.run_call("udp")

    def test_tcp_call_over_ipv6(self):
        return self.run_call("tcp")


class OneLegTests(_CallThroughProxy, TestCase):
    two_legs = False
    host_b = "127.0.0.1"

    def test_udp_call_through_one_leg(self):
        return self.run_call("udp")
