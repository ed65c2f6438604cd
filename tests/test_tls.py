"""TLS legs from the command line: certificates, verification, errors."""
from __future__ import annotations

import os
import socket
import ssl

from twisted.internet import defer, reactor, task, threads
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.certs import make_certificates
from tests.util import child_environment, reserve_port, run_process, sip_options, start_proxy, temp_dir, \
    twistd_command


def _options_over_tls(port: int, context: ssl.SSLContext) -> bytes:
    """Send an OPTIONS for the proxy itself over TLS; the answer's first
    line (blocking: run it in a thread)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw) as tls:
            local = tls.getsockname()[1]
            tls.sendall(sip_options("127.0.0.1", port, local, proto="TLS",
                                    target=f"sips:127.0.0.1:{port}"))
            data = b""
            while b"\r\n" not in data:
                chunk = tls.recv(4096)
                if not chunk:
                    break
                data += chunk
    return data.split(b"\r\n", 1)[0]


def _client_context(certs: dict, with_certificate: bool) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(certs["ca"])
    if with_certificate:
        context.load_cert_chain(certs["cert"])
    return context


class TLSOptionErrorTests(SynchronousTestCase):
    def run_twistd(self, *args: str):
        return run_process([*twistd_command(), "-n", "--pidfile=", "sipproxy", *args], timeout=30,
                           env=child_environment())

    def test_tls_leg_without_certificate(self) -> None:
        result = self.run_twistd("--legs", "tls:127.0.0.1:5099")
        self.assertEqual(result.returncode, 2, result)
        self.assertIn("--tls-cert", result.stderr)
        self.assertEqual(len(result.stderr.strip().splitlines()), 1, result)

    def test_unreadable_certificate(self) -> None:
        result = self.run_twistd("--legs", "tls:127.0.0.1:5099", "--tls-cert", "/nonexistent/cert.pem")
        self.assertEqual(result.returncode, 2, result)
        self.assertIn("cannot read", result.stderr)

    def test_garbage_certificate(self) -> None:
        path = os.path.join(temp_dir(self), "junk.pem")
        with open(path, "w") as f:
            f.write("not a certificate\n")
        result = self.run_twistd("--legs", f"tls:127.0.0.1:{reserve_port(kind=socket.SOCK_STREAM)}",
                                 "--tls-cert", path)
        self.assertEqual(result.returncode, 1, result)
        self.assertIn("cannot load the certificates", result.stderr)
        self.assertNotIn("Traceback", result.stderr)


class TLSLegTests(TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def start(self, *extra: str):
        cwd = temp_dir(self)
        self.certs = make_certificates(cwd)
        self.port = None

        def legs():
            self.port = reserve_port("127.0.0.1", kind=socket.SOCK_STREAM)
            return [f"tls:127.0.0.1:{self.port}"]

        proxy = yield start_proxy(self, cwd, legs, args=["--tls-cert", self.certs["cert"],
                                                         "--tls-ca", self.certs["ca"], *extra])
        return proxy

    @defer.inlineCallbacks
    def test_answers_over_tls(self):
        yield self.start()
        line = yield threads.deferToThread(_options_over_tls, self.port, _client_context(self.certs, False))
        self.assertTrue(line.startswith(b"SIP/2.0 200 "), line)

    @defer.inlineCallbacks
    def test_verify_refuses_a_client_without_certificate(self):
        yield self.start("--tls-verify")
        line = yield threads.deferToThread(_options_over_tls, self.port, _client_context(self.certs, True))
        self.assertTrue(line.startswith(b"SIP/2.0 200 "), line)
        try:
            refused = yield threads.deferToThread(_options_over_tls, self.port, _client_context(self.certs, False))
        except (ssl.SSLError, OSError):
            refused = b""
        self.assertEqual(refused, b"")


def _raw_connection_closed(port: int, payload: bytes = b"", timeout: float = 10.0) -> bool:
    """Open a plain TCP connection to a TLS leg, send C{payload} and wait
    (blocking: run it in a thread) for the proxy to close it; True if it
    did within C{timeout} seconds."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
        if payload:
            raw.sendall(payload)
        try:
            while raw.recv(4096):
                pass
        except socket.timeout:
            return False
        except OSError:
            pass
    return True


class TLSLimitTests(TestCase):
    """The TCP limits hold for TLS legs, before and after the handshake."""

    timeout = 40

    @defer.inlineCallbacks
    def start(self, *extra: str):
        cwd = temp_dir(self)
        self.certs = make_certificates(cwd)

        def legs():
            self.port = reserve_port("127.0.0.1", kind=socket.SOCK_STREAM)
            return [f"tls:127.0.0.1:{self.port}"]

        proxy = yield start_proxy(self, cwd, legs, args=["--tls-cert", self.certs["cert"], *extra])
        return proxy

    @defer.inlineCallbacks
    def test_connections_per_address_are_capped_before_the_handshake(self):
        proxy = yield self.start("--tcp-accept-iplimit", "2")
        held = [socket.create_connection(("127.0.0.1", self.port), timeout=5) for _ in range(2)]
        self.addCleanup(lambda: [s.close() for s in held])
        context = _client_context(self.certs, False)
        try:
            refused = yield threads.deferToThread(_options_over_tls, self.port, context)
        except (ssl.SSLError, OSError):
            refused = b""
        self.assertEqual(refused, b"")
        self.assertIn("refused a connection from", proxy.log())
        held.pop().close()
        line = b""
        for _ in range(50):  # until the proxy has seen the close: at most 50 tries, 5 s
            try:
                line = yield threads.deferToThread(_options_over_tls, self.port, context)
                break
            except (ssl.SSLError, OSError):
                yield task.deferLater(reactor, 0.1, lambda: None)
        self.assertTrue(line.startswith(b"SIP/2.0 200 "), line)

    @defer.inlineCallbacks
    def test_a_handshake_that_never_comes_is_cut_at_the_read_timeout(self):
        proxy = yield self.start("--tcp-msg-read-timeout", "1")
        closed = yield threads.deferToThread(_raw_connection_closed, self.port)
        self.assertTrue(closed, "a silent connection to the TLS leg stayed open")
        self.assertIn("no whole message within 1 s", proxy.log())


class TLSWriteQueueTests(TestCase):
    """A TLS peer that never reads is aborted like a TCP one."""

    timeout = 30

    @defer.inlineCallbacks
    def test_peer_that_never_reads_is_aborted(self):
        from twisted.internet import endpoints, ssl as tssl

        from sipproxy.transport.legs import TLSLeg, TLSOptions
        from tests.test_legs_loopback import Recorder, RecordingDispatcher, TCPPeer
        from tests.util import wait_until

        certs = make_certificates(temp_dir(self))
        leg = TLSLeg("127.0.0.1", 0, tls=TLSOptions(certs["cert"]))
        RecordingDispatcher(reactor, legs=[leg], receiver=Recorder()).reindex()
        leg.listen(reactor)
        self.addCleanup(leg.stop)
        endpoint = endpoints.wrapClientTLS(
            tssl.optionsForClientTLS("127.0.0.1", trustRoot=tssl.Certificate.loadPEM(open(certs["ca"], "rb").read())),
            endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", leg.port, timeout=5))
        peer = yield endpoints.connectProtocol(endpoint, TCPPeer())
        self.addCleanup(peer.close)
        peer.transport.write(b"\r\n\r\n")  # a ping: the handshake completes, and a pong comes back
        yield peer.wait_data(lambda d: d == b"\r\n")
        address = (peer.transport.getHost().host, peer.transport.getHost().port)
        peer.transport.pauseProducing()  # never read again
        sent = 0
        for _ in range(256):  # at most 16 MiB
            if address not in leg.connections:
                break
            leg.send(b"y" * 65536, address)
            sent += 65536
            yield task.deferLater(reactor, 0, lambda: None)
        self.assertNotIn(address, leg.connections, f"still open after {sent} octets")
        self.assertLessEqual(sent, 12 * 1024 * 1024)  # the kernel's buffers, then 64 KiB + 128 KiB
