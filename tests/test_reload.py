"""Reload on SIGHUP, over a real C{twistd -n sipproxy} on loopback: each
reloadable item changes what the proxy answers, a failed reload keeps
the running configuration and says why in one line, and registrations,
TLS connections and counts survive."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
from typing import Any, Callable, Optional

from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest

from sipproxy.sip.message import Response, parse
from tests.registrar_harness import credentials
from tests.sip import request
from tests.util import ProxyProcess, reserve_port, start_proxy, temp_dir, wait_until

HOST = "127.0.0.1"
RELOAD_LINES = ("[sipproxy.app.reload#info]", "[sipproxy.app.reload#error]")


def reload_lines(proxy: ProxyProcess) -> list[str]:
    """The reload lines of the first process (not those it relays from
    its workers)."""
    return [line for line in proxy.log().splitlines()
            if any(tag in line for tag in RELOAD_LINES) and "] worker " not in line]


@inlineCallbacks
def sighup(proxy: ProxyProcess) -> Any:
    """SIGHUP the proxy; fires with the one reload line it logs."""
    before = len(reload_lines(proxy))
    os.kill(proxy.pid, signal.SIGHUP)
    yield wait_until(lambda: len(reload_lines(proxy)) > before or proxy.proc.poll() is not None, 10,
                     what="the reload line")
    lines = reload_lines(proxy)[before:]
    assert proxy.proc.poll() is None, "twistd exited on SIGHUP\n" + proxy.describe()
    assert len(lines) == 1, lines
    return lines[0]


class SipSocket:
    """A UDP phone: sends requests, collects responses by Call-ID."""

    def __init__(self, testcase: unittest.TestCase) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.received: list[Response] = []
        testcase.addCleanup(self.sock.close)

    def drain(self) -> None:
        while True:
            try:
                data, _ = self.sock.recvfrom(65535)
            except (BlockingIOError, ConnectionRefusedError):
                return
            message = parse(data)
            if isinstance(message, Response):
                self.received.append(message)

    def answers(self, call_id: str) -> list[Response]:
        self.drain()
        return [m for m in self.received if m.call_id == call_id]

    def ask(self, target: tuple[str, int], data: bytes, call_id: str, cseq: int = 1,
            resend: bool = True) -> Any:
        """Send (again every second when C{resend}) until a final
        response to C{call_id}/C{cseq} arrives; fires with it."""
        sent = [0.0]
        from twisted.internet import reactor

        def poll() -> Optional[Response]:
            for message in self.answers(call_id):
                if message.code >= 200 and int(message.cseq[0]) == cseq:
                    return message
            now = reactor.seconds()
            if not sent[0] or (resend and now - sent[0] >= 1.0):
                sent[0] = now
                self.sock.sendto(data, target)
            return None

        return wait_until(poll, 10, what=f"an answer to {call_id}")


def options_to(port: int, local_port: int, call_id: str, user_agent: str = "test") -> bytes:
    return request("OPTIONS", uri=f"sip:{HOST}:{port}", via=f"SIP/2.0/UDP {HOST}:{local_port};branch=z9hG4bK{call_id}",
                   from_=f"<sip:probe@{HOST}>;tag=p-{call_id}", to=f"<sip:{HOST}:{port}>", call_id=call_id,
                   contact=None, headers=[("User-Agent", user_agent)])


class ReloadTests(unittest.TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.cwd = temp_dir(self)
        self.config = os.path.join(self.cwd, "sipproxy.toml")
        self.users = os.path.join(self.cwd, "users")

    def write(self, path: str, text: str) -> None:
        with open(path + ".new", "w") as f:
            f.write(text)
        os.replace(path + ".new", path)  # as an editor or a deployment tool would

    def start(self, *args: str, proto: str = "udp", wss: bool = False) -> Any:
        self.port = self.wss_port = 0

        def legs() -> list[str]:
            self.port = reserve_port(HOST)
            if not wss:
                return [f"{proto}:{HOST}:{self.port}"]
            self.wss_port = reserve_port(HOST, kind=socket.SOCK_STREAM)
            return [f"{proto}:{HOST}:{self.port}", f"wss:{HOST}:{self.wss_port}"]

        return start_proxy(self, self.cwd, legs, ["--config", self.config, *args])

    # -- users ------------------------------------------------------------------------
    @inlineCallbacks
    def register(self, phone: SipSocket, user: str, password: str, call_id: str, contact: bool = True) -> Any:
        """REGISTER, answer the 401, fire with the final answer."""
        target = (HOST, self.port)

        def make(cseq: int, auth: Optional[str]) -> bytes:
            headers = [("Authorization", auth)] if auth else []
            return request("REGISTER", uri="sip:example.com",
                           via=f"SIP/2.0/UDP {HOST}:{phone.port};branch=z9hG4bK{call_id}-{cseq}",
                           from_=f"<sip:{user}@example.com>;tag={call_id}", to=f"<sip:{user}@example.com>",
                           call_id=call_id, cseq=cseq, headers=[*headers, ("Expires", "300")],
                           contact=f"<sip:{user}@{HOST}:{phone.port}>" if contact else None)

        challenge = yield phone.ask(target, make(1, None), call_id, 1)
        self.assertEqual(challenge.code, 401, challenge)
        auth = credentials(challenge.get("www-authenticate"), user, password, "REGISTER", "sip:example.com")
        answer = yield phone.ask(target, make(2, auth), call_id, 2)
        return answer

    @inlineCallbacks
    def test_users_file(self) -> Any:
        """A user added to the users file authenticates after SIGHUP; a
        broken users file keeps the old users (one log line) and the
        registrations stay."""
        self.write(self.users, "alice:secret\n")
        self.write(self.config, f'registrar = true\ndomain = "example.com"\nusers = "{self.users}"\n')
        proxy = yield self.start()
        phone = SipSocket(self)
        answer = yield self.register(phone, "bob", "bobpw", "reg-bob-1")
        self.assertEqual(answer.code, 401, "bob is not a user yet")

        self.write(self.users, "alice:secret\nbob:bobpw\n")
        line = yield sighup(proxy)
        self.assertIn("reload: reloaded users 2", line)
        answer = yield self.register(phone, "bob", "bobpw", "reg-bob-2")
        self.assertEqual(answer.code, 200, answer)
        contact = f"sip:bob@{HOST}:{phone.port}"
        self.assertIn(contact, answer.get("contact"))

        self.write(self.users, "alice:secret\nbob:bobpw\ncarol\n")
        line = yield sighup(proxy)
        self.assertIn("reload failed, the running configuration is kept", line)
        self.assertIn(f"--users {self.users}, line 3", line)
        self.assertIn(self.config, line)  # the file that named the users file
        self.assertEqual(len([l for l in proxy.log().splitlines() if "line 3" in l]), 1)
        # the old users still authenticate; bob's binding is still there
        answer = yield self.register(phone, "bob", "bobpw", "reg-bob-3", contact=False)
        self.assertEqual(answer.code, 200, answer)
        self.assertIn(contact, answer.get("contact"))
        answer = yield self.register(phone, "alice", "secret", "reg-alice-1")
        self.assertEqual(answer.code, 200, answer)

        # a user removed from the file is refused after the next reload
        self.write(self.users, "alice:secret\n")
        line = yield sighup(proxy)
        self.assertIn("users 1", line)
        answer = yield self.register(phone, "bob", "bobpw", "reg-bob-4")
        self.assertEqual(answer.code, 401, answer)

    # -- domains, blocks, drop rules, non-reloadable options ----------------------------
    @inlineCallbacks
    def test_config_file_domains_blocks_drop_rules(self) -> Any:
        self.write(self.config, 'registrar = true\ndomain = "example.com"\nblock = "MESSAGE=405"\n'
                                "max-expires = 3600\n")
        proxy = yield self.start()
        phone = SipSocket(self)
        target = (HOST, self.port)

        def invite(call_id: str) -> bytes:
            return request("INVITE", uri="sip:dave@other.example", from_=f"<sip:carol@example.org>;tag={call_id}",
                           to="<sip:dave@other.example>", call_id=call_id,
                           via=f"SIP/2.0/UDP {HOST}:{phone.port};branch=z9hG4bK{call_id}",
                           contact=f"<sip:carol@{HOST}:{phone.port}>")

        def message(call_id: str) -> bytes:
            return request("MESSAGE", uri="sip:alice@example.com", from_=f"<sip:carol@example.org>;tag={call_id}",
                           to="<sip:alice@example.com>", call_id=call_id, contact=None,
                           via=f"SIP/2.0/UDP {HOST}:{phone.port};branch=z9hG4bK{call_id}")

        answer = yield phone.ask(target, invite("inv-1"), "inv-1")
        self.assertEqual(answer.code, 403, "other.example is not served yet")
        answer = yield phone.ask(target, message("msg-1"), "msg-1")
        self.assertEqual(answer.code, 405)
        answer = yield phone.ask(target, options_to(self.port, phone.port, "opt-1", "friendly-scanner"), "opt-1")
        self.assertEqual(answer.code, 200, "no drop rule yet")

        self.write(self.config, 'registrar = true\ndomain = ["example.com", "other.example"]\n'
                                'block = ["MESSAGE=488 Not Here"]\ndrop-header = "User-Agent=friendly-scanner"\n'
                                "max-expires = 600\n")
        line = yield sighup(proxy)
        self.assertIn("domains example.com,other.example, blocks 1, drop rules 1", line)
        self.assertIn("needing a restart (kept as they were): max-expires", line)

        answer = yield phone.ask(target, invite("inv-2"), "inv-2")
        self.assertEqual(answer.code, 404, "other.example is served now: an unknown user")
        answer = yield phone.ask(target, message("msg-2"), "msg-2")
        self.assertEqual((answer.code, answer.reason), (488, "Not Here"))
        # the scanner's OPTIONS is dropped: the plain one sent after it is
        # answered, and nothing came for the scanner's
        phone.sock.sendto(options_to(self.port, phone.port, "opt-2", "friendly-scanner"), target)
        answer = yield phone.ask(target, options_to(self.port, phone.port, "opt-3"), "opt-3")
        self.assertEqual(answer.code, 200)
        self.assertEqual(phone.answers("opt-2"), [])

    # -- rate limits ------------------------------------------------------------------
    @inlineCallbacks
    def test_rate_limit_new_limit_same_counts(self) -> Any:
        self.write(self.config, 'rate-limit = "3/600"\n')
        proxy = yield self.start()
        phone = SipSocket(self)
        target = (HOST, self.port)

        @inlineCallbacks
        def dropped(call_id: str) -> Any:
            """Send once from C{phone}; true when it was dropped (a probe
            from a fresh socket, sent after it, is answered first)."""
            phone.sock.sendto(options_to(self.port, phone.port, call_id), target)
            check, other = f"{call_id}-check", SipSocket(self)
            yield other.ask(target, options_to(self.port, other.port, check), check, resend=False)
            return not phone.answers(call_id)

        seen = []
        for i in range(1, 5):
            seen.append((yield dropped(f"a{i}")))
        self.assertEqual(seen, [False, False, True, True])
        self.write(self.config, 'rate-limit = "6/600"\n')
        line = yield sighup(proxy)
        self.assertIn("rate limit 6/600", line)
        # the four packets counted so far still count: the fifth passes, the sixth not
        seen = []
        for i in range(1, 3):
            seen.append((yield dropped(f"b{i}")))
        self.assertEqual(seen, [False, True])

    # -- TLS ----------------------------------------------------------------------------
    @inlineCallbacks
    def test_tls_certificate(self) -> Any:
        """New connections get the new certificate, on tls: and wss: legs;
        one opened before the reload keeps working with the old one."""
        from tests.certs import make_certificates

        for name in ("a", "b"):
            os.makedirs(os.path.join(self.cwd, name))
        first, second = (make_certificates(os.path.join(self.cwd, name)) for name in ("a", "b"))
        cert = os.path.join(self.cwd, "cert.pem")
        shutil.copy(first["cert"], cert)
        self.write(self.config, f'tls-cert = "{cert}"\n')
        proxy = yield self.start(proto="tls", wss=True)

        def connect(port: Optional[int] = None) -> ssl.SSLSocket:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            raw = socket.create_connection((HOST, port or self.port), timeout=5)
            conn = context.wrap_socket(raw)
            self.addCleanup(conn.close)
            return conn

        def pem_of(conn: ssl.SSLSocket) -> str:
            return ssl.DER_cert_to_PEM_cert(conn.getpeercert(binary_form=True))

        def leaf(path: str) -> str:
            with open(path) as f:
                text = f.read()
            return text[: text.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")]

        def same(a: str, b: str) -> bool:
            return ssl.PEM_cert_to_DER_cert(a) == ssl.PEM_cert_to_DER_cert(b)

        before = connect()
        self.assertTrue(same(pem_of(before), leaf(first["cert"])))
        self.assertTrue(same(pem_of(connect(self.wss_port)), leaf(first["cert"])))
        shutil.copy(second["cert"], cert + ".new")
        os.replace(cert + ".new", cert)
        line = yield sighup(proxy)
        self.assertIn("TLS certificate", line)
        after = connect()
        self.assertTrue(same(pem_of(after), leaf(second["cert"])))
        self.assertTrue(same(pem_of(connect(self.wss_port)), leaf(second["cert"])))
        # the connection opened before the reload still carries requests
        local_port = before.getsockname()[1]
        before.sendall(options_to(self.port, local_port, "tls-1").replace(b"SIP/2.0/UDP", b"SIP/2.0/TLS"))
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = before.recv(65535)
            self.assertTrue(chunk, "the old TLS connection was closed")
            data += chunk
        self.assertTrue(data.startswith(b"SIP/2.0 200"), data)

        # a certificate that does not load: the reload fails, the last good one stays
        self.write(cert, "not a certificate\n")
        line = yield sighup(proxy)
        self.assertIn("reload failed", line)
        self.assertIn("cannot load the certificates", line)
        self.assertTrue(same(pem_of(connect()), leaf(second["cert"])))

    # -- workers ------------------------------------------------------------------------
    @inlineCallbacks
    def test_workers_get_the_sighup(self) -> Any:
        self.write(self.users, "alice:secret\n")
        self.write(self.config, f'users = "{self.users}"\nworkers = 2\n')
        proxy = yield self.start()
        yield wait_until(lambda: "worker 1:" in proxy.log() and "listening on" in proxy.log().split("worker 1:", 1)[1],
                         15, what="worker 1 to listen")
        self.write(self.users, "alice:secret\nbob:pw\n")
        line = yield sighup(proxy)
        self.assertIn("users 2", line)
        self.assertIn("passed on to 1 worker(s)", line)
        yield wait_until(lambda: any("worker 1:" in l and "reload: reloaded users 2" in l
                                     for l in proxy.log().splitlines()), 10, what="worker 1's reload line")


class ReloadInProcessTests(unittest.SynchronousTestCase):
    """C{service.reload()} as the control socket calls it, and the chain
    swap, without a running reactor."""

    def setUp(self) -> None:
        self.cwd = temp_dir(self)

    def test_service_reload_answers_ok_and_message(self) -> None:
        from sipproxy.app.tap import Options, makeService

        users = os.path.join(self.cwd, "users")
        with open(users, "w") as f:
            f.write("alice:secret\n")
        options = Options()
        options.parseOptions(["--legs", f"udp:{HOST}:0", "--users", users, "--domain", "example.com",
                              "--secret-file", os.path.join(self.cwd, "secret")])
        service = makeService(options)
        chain = service.chain
        old_auth = [r for r in chain.receivers if type(r).__name__ == "ReceiveChain"]
        with open(users, "w") as f:
            f.write("alice:secret\nbob:pw\n")
        result = service.reload()
        self.assertEqual(result["ok"], True, result)
        self.assertIn("users 2", result["message"])
        self.assertIs(service.chain, chain)  # the same chain, new receivers
        self.assertIs(chain.receivers[-1], service.proxy)
        new_auth = [r for r in chain.receivers if type(r).__name__ == "ReceiveChain"]
        self.assertNotEqual([id(r) for r in new_auth], [id(r) for r in old_auth])
        self.assertIn("bob", new_auth[0].receivers[0].users)
        # the nonces live on: a challenge from before is answerable after
        self.assertIs(new_auth[0].receivers[0].nonces, old_auth[0].receivers[0].nonces)

        with open(users, "w") as f:
            f.write("alice\n")
        receivers = list(chain.receivers)
        result = service.reload()
        self.assertEqual(result["ok"], False, result)
        self.assertIn(f"--users {users}, line 1", result["message"])
        self.assertEqual(chain.receivers, receivers)
        reloader = service.getServiceNamed("reload")
        self.assertEqual((reloader.reloads, reloader.failures), (1, 1))

    def test_chain_replace_finishes_a_waiting_packet_on_the_old_receivers(self) -> None:
        from twisted.internet.defer import Deferred

        from sipproxy.access.chain import ReceiveChain

        seen: list[str] = []
        waiting: Deferred = Deferred()

        class Receiver:
            def __init__(self, name: str, result: Any = False) -> None:
                self.name, self.result = name, result

            def receive(self, packet: Any, leg: Any, addr: Any) -> Any:
                seen.append(self.name)
                return self.result

        chain = ReceiveChain([Receiver("old-1", waiting), Receiver("old-2", True)])
        outcome = chain.receive(object(), None, (HOST, 5060))
        chain.replace([Receiver("new-1"), Receiver("new-2"), Receiver("new-3", True)])
        waiting.callback(False)
        self.assertEqual(self.successResultOf(outcome), True)
        self.assertEqual(seen, ["old-1", "old-2"])
        chain.receive(object(), None, (HOST, 5060))
        self.assertEqual(seen, ["old-1", "old-2", "new-1", "new-2", "new-3"])


class WorkerSighupMaskTests(unittest.SynchronousTestCase):
    """A SIGHUP passed on to a worker that has not yet installed its
    handler must wait, not kill it (SIGHUP's default action): workers are
    spawned with SIGHUP blocked, and the Reloader unblocks it once its
    handler is in place."""

    def setUp(self) -> None:
        if not hasattr(signal, "pthread_sigmask"):
            raise unittest.SkipTest("no pthread_sigmask on this platform")
        before = signal.pthread_sigmask(signal.SIG_BLOCK, set())
        self.addCleanup(signal.pthread_sigmask, signal.SIG_SETMASK, before)
        handler = signal.getsignal(signal.SIGHUP)
        self.addCleanup(signal.signal, signal.SIGHUP, handler)

    def test_workers_are_spawned_with_sighup_blocked_and_the_parent_mask_restored(self) -> None:
        from sipproxy.app.workers import WorkerPool

        seen: list[bool] = []

        class Transport:
            pid = 4242

        class FakeReactor:
            def spawnProcess(self, proto: Any, executable: str, argv: Any, env: Any = None,
                             childFDs: Any = None) -> Transport:
                seen.append(signal.SIGHUP in signal.pthread_sigmask(signal.SIG_BLOCK, set()))
                return Transport()

        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
        pool = WorkerPool(FakeReactor(), ["twistd", "sipproxy", "--workers", "2"], 2)
        pool._start_workers()
        self.assertEqual(seen, [True, True])
        self.assertNotIn(signal.SIGHUP, signal.pthread_sigmask(signal.SIG_BLOCK, set()))

    def test_the_reloader_unblocks_sighup_once_its_handler_is_installed(self) -> None:
        from twisted.python import usage

        from sipproxy.app.reload import Reloader

        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
        reloader = Reloader(None, usage.Options())  # type: ignore[arg-type]
        reloader.startService()
        self.addCleanup(reloader.stopService)
        self.assertEqual(signal.getsignal(signal.SIGHUP), reloader._on_signal)
        self.assertNotIn(signal.SIGHUP, signal.pthread_sigmask(signal.SIG_BLOCK, set()))
