"""Two user agents over real sockets on loopback (UDP and TCP, IPv4 and
IPv6): a call up and down, and a call through a registrar and a
stateless proxy that share their legs with a user agent."""
from __future__ import annotations

import socket
from typing import Any

from twisted.internet import defer, reactor
from twisted.trial.unittest import SkipTest, TestCase

from sipproxy.app.ua import Simple
from sipproxy.ua.endpoint import SIPError


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


class LoopbackCalls(TestCase):
    timeout = 30

    def agent(self, leg: str, **options: Any) -> Simple:
        ua = Simple(reactor, legs=[leg], **options)
        self.addCleanup(ua.cleanup)
        return ua

    @defer.inlineCallbacks
    def call_up_and_down(self, proto: str, host: str) -> Any:
        if ":" in host and not _has_ipv6():
            raise SkipTest("no IPv6 loopback here")
        leg = f"{proto}:[{host}]:0" if ":" in host else f"{proto}:{host}:0"
        bob = self.agent(leg, from_="bob")
        established: defer.Deferred = defer.Deferred()
        bob.listen(on_established=established.callback)
        alice = self.agent(leg, from_="alice")
        call = yield alice.invite(f"sip:bob@{bob.dispatcher.legs[0].sent_by}", ring_time=10)
        self.assertEqual(call.state, "established")
        bobs_call = yield established
        self.assertEqual(bobs_call.call_id, call.call_id)
        self.assertIsNotNone(call.remote_sdp)
        self.assertIsNotNone(bobs_call.remote_sdp)
        end = yield call.bye()
        self.assertEqual((end.by, end.code), ("local", 200))
        bobs_end = yield bobs_call.ended
        self.assertEqual((bobs_end.by, bobs_end.code), ("remote", 200))

    def test_udp_ipv4(self) -> Any:
        return self.call_up_and_down("udp", "127.0.0.1")

    def test_tcp_ipv4(self) -> Any:
        return self.call_up_and_down("tcp", "127.0.0.1")

    def test_udp_ipv6(self) -> Any:
        return self.call_up_and_down("udp", "::1")

    def test_tcp_ipv6(self) -> Any:
        return self.call_up_and_down("tcp", "::1")

    @defer.inlineCallbacks
    def test_tls_call(self) -> Any:
        import functools

        from sipproxy.app.ua import socket_transport
        from sipproxy.transport.legs import TLSOptions
        from tests.certs import make_certificates
        from tests.util import temp_dir

        certs = make_certificates(temp_dir(self))
        transport = functools.partial(socket_transport, tls=TLSOptions(certs["cert"], ca_file=certs["ca"]))
        bob = self.agent("tls:127.0.0.1:0", from_="bob", transport=transport)
        established: defer.Deferred = defer.Deferred()
        bob.listen(on_established=established.callback)
        alice = self.agent("tls:127.0.0.1:0", from_="alice", transport=transport)
        call = yield alice.invite(f"sips:bob@{bob.dispatcher.legs[0].sent_by}", ring_time=10)
        bobs_call = yield established
        self.assertTrue(bobs_call.dialog.remote_target.startswith("sips:"))
        end = yield call.bye()
        self.assertEqual(end.code, 200)

    @defer.inlineCallbacks
    def test_tcp_connection_refused_fails_the_call_at_once(self) -> Any:
        """RFC 3261 17.1.4: a transport error ends the transaction, not
        Timer B 32 s later (this test's timeout is shorter than that)."""
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            closed_port = s.getsockname()[1]  # nothing listens there once closed
        alice = self.agent("tcp:127.0.0.1:0", from_="alice")
        with self.assertRaises(SIPError) as caught:
            yield alice.invite(f"sip:bob@127.0.0.1:{closed_port};transport=tcp")
        self.assertEqual(caught.exception.code, 503)
        self.assertIn("cannot connect", caught.exception.reason)

    @defer.inlineCallbacks
    def test_refused_call_fails_with_the_code(self) -> Any:
        bob = self.agent("udp:127.0.0.1:0", from_="bob")
        bob.listen(on_create=lambda call, request: call.reject(486, "Busy Here") or True)
        alice = self.agent("udp:127.0.0.1:0", from_="alice")
        with self.assertRaises(SIPError) as caught:
            yield alice.invite(f"sip:bob@{bob.dispatcher.legs[0].sent_by}")
        self.assertEqual(caught.exception.code, 486)

    @defer.inlineCallbacks
    def test_call_through_registrar_and_proxy(self) -> Any:
        server = self.agent("udp:127.0.0.1:0", from_="operator")
        server.create_registrar(auth_users={"bob": "pw"}, min_expires=10)
        server.create_stateless_proxy()
        server_address = server.dispatcher.legs[0].sent_by
        bob = self.agent("udp:127.0.0.1:0", from_=f"sip:bob@{server_address}", auth=("bob", "pw"),
                         registrar=f"sip:{server_address}")
        granted = yield bob.register(expires=60)
        self.assertEqual(granted, 60)
        taken: defer.Deferred = defer.Deferred()
        bob.listen(on_established=taken.callback)
        alice = self.agent("udp:127.0.0.1:0", from_="alice", outgoing_proxy=server_address)
        call = yield alice.invite(f"sip:bob@{server_address}", ring_time=10)
        bobs_call = yield taken
        self.assertEqual(bobs_call.call_id, call.call_id)
        # the server's own user agent still answers what is addressed to it
        options_reply = yield self._options(alice, f"sip:operator@{server_address}")
        self.assertEqual(options_reply.code, 200)
        end = yield bobs_call.bye()
        self.assertEqual(end.code, 200)
        alices_end = yield call.ended
        self.assertEqual(alices_end.by, "remote")

    def _options(self, ua: Simple, uri: str) -> defer.Deferred:
        from sipproxy.sip.uac import new_request

        d = ua.endpoint.resolve(uri)

        def send(target: Any) -> Any:
            leg = target[0]
            request = new_request("OPTIONS", uri, ua.from_, f"<{uri}>", sent_by=leg.sent_by)
            return ua.endpoint.send_request(request, target).deferred

        return d.addCallback(send)
