"""TLS legs from the command line: certificates, verification, errors."""
from __future__ import annotations

import os
import socket
import ssl

from twisted.internet import defer, threads
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
