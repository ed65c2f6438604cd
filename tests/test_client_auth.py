"""Answering digest challenges: checked against the server side
(sipproxy.access.digest_auth.Authorize), by hand against RFC 7616 formulas,
and for the cases where a client must give up."""
from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sipproxy.access.digest_auth import Authorize
from sipproxy.sip.client_auth import with_credentials
from sipproxy.sip.digest import digest_response, ha1, parse_challenge, parse_credentials
from sipproxy.sip.message import Request, Response
from sipproxy.sip.uac import new_request


class FakeDispatcher:
    """What Authorize calls: respond() and is_local()."""

    def __init__(self) -> None:
        self.responses: list[Response] = []

    def respond(self, packet: Request, code: int, reason: str, leg: Any, addr: Any, headers: Any = ()) -> None:
        self.responses.append(packet.create_response(code, reason, headers, to_tag="srv"))

    def is_local(self, host: str, port: Any = None) -> bool:
        return False


def register() -> Request:
    return new_request("REGISTER", "sip:example.com", "<sip:alice@example.com>", "<sip:alice@example.com>",
                       sent_by="192.0.2.1", cseq=1)


class AgainstAuthorizeTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dispatcher = FakeDispatcher()
        self.clock = Clock()
        self.clock.advance(1000)

    def server(self, proxy: bool = False, algorithms=("MD5", "SHA-256"), **kw: Any) -> Authorize:
        return Authorize(self.dispatcher, {"alice": "secret"}, realm="example.com", secret=b"s" * 32,
                         clock=self.clock, i_am_proxy=proxy, algorithms=algorithms, **kw)

    def challenge(self, auth: Authorize, request: Request) -> Response:
        self.assertTrue(auth.receive(request, None, ("192.0.2.1", 5060)))
        return self.dispatcher.responses.pop()

    def test_401_answered_and_accepted(self) -> None:
        auth = self.server()
        request = register()
        challenge = self.challenge(auth, request)
        self.assertEqual(challenge.code, 401)
        retry = with_credentials(request, challenge, ("alice", "secret"))
        self.assertEqual(retry.cseq, (2, "REGISTER"))
        self.assertNotEqual(retry.top_via().branch, request.top_via().branch)
        self.assertEqual(retry.call_id, request.call_id)
        self.assertEqual(retry.from_tag, request.from_tag)
        scheme, params = parse_credentials(retry.get("authorization"))
        self.assertEqual((params["algorithm"], params["qop"], params["nc"]), ("MD5", "auth", "00000001"))
        self.assertFalse(auth.receive(retry, None, ("192.0.2.1", 5060)))  # let through
        self.assertEqual(request.get("authorization"), None)  # the original is untouched

    def test_sha256_preferred_by_server_is_used(self) -> None:
        auth = self.server(algorithms=("SHA-256", "MD5"))
        request = register()
        retry = with_credentials(request, self.challenge(auth, request), {"example.com": ("alice", "secret")})
        self.assertEqual(parse_credentials(retry.get("authorization"))[1]["algorithm"], "SHA-256")
        self.assertFalse(auth.receive(retry, None, ("192.0.2.1", 5060)))

    def test_407_gives_proxy_authorization_with_opaque(self) -> None:
        auth = self.server(proxy=True, opaque="op1")
        request = new_request("INVITE", "sip:bob@example.com", "<sip:alice@example.com>", "<sip:bob@example.com>",
                              sent_by="192.0.2.1")
        challenge = self.challenge(auth, request)
        self.assertEqual(challenge.code, 407)
        retry = with_credentials(request, challenge, lambda realm: ("alice", "secret"))
        self.assertIsNone(retry.get("authorization"))
        self.assertEqual(parse_credentials(retry.get("proxy-authorization"))[1]["opaque"], "op1")
        self.assertFalse(auth.receive(retry, None, ("192.0.2.1", 5060)))

    def test_wrong_password_is_not_answered_twice(self) -> None:
        auth = self.server()
        request = register()
        retry = with_credentials(request, self.challenge(auth, request), ("alice", "guess"))
        again = self.challenge(auth, retry)
        self.assertEqual(again.code, 401)
        self.assertIsNone(with_credentials(retry, again, ("alice", "guess")))

    def test_stale_nonce_is_answered_again(self) -> None:
        auth = self.server()
        request = register()
        retry = with_credentials(request, self.challenge(auth, request), ("alice", "secret"))
        self.clock.advance(301)
        stale = self.challenge(auth, retry)
        self.assertIn("stale=true", stale.get("www-authenticate"))
        third = with_credentials(retry, stale, ("alice", "secret"))
        self.assertEqual(third.cseq[0], 3)
        self.assertEqual(len(third.get_all("authorization")), 1)
        self.assertFalse(auth.receive(third, None, ("192.0.2.1", 5060)))


class ByHandTests(SynchronousTestCase):
    def response(self, *challenges: str, code: int = 401) -> Response:
        name = "WWW-Authenticate" if code == 401 else "Proxy-Authenticate"
        return register().create_response(code, headers=[(name, c) for c in challenges])

    def test_rfc2069_without_qop(self) -> None:
        request = register()
        retry = with_credentials(request, self.response('Digest realm="r", nonce="n1"'), ("u", "p"))
        _, params = parse_credentials(retry.get("authorization"))
        self.assertNotIn("qop", params)
        self.assertNotIn("algorithm", params)
        self.assertEqual(params["uri"], "sip:example.com")
        self.assertEqual(params["response"],
                         digest_response("MD5", ha1("u", "r", "p"), "n1", "REGISTER", "sip:example.com"))

    def test_md5_sess(self) -> None:
        retry = with_credentials(register(), self.response(
            'Digest realm="r", nonce="n1", algorithm=MD5-sess, qop="auth-int,auth"'), ("u", "p"))
        _, params = parse_credentials(retry.get("authorization"))
        self.assertEqual((params["algorithm"], params["qop"]), ("MD5-sess", "auth"))
        import hashlib
        secret = hashlib.md5(f"{ha1('u', 'r', 'p')}:n1:{params['cnonce']}".encode()).hexdigest()
        expected = digest_response("MD5", secret, "n1", "REGISTER", "sip:example.com", "00000001",
                                   params["cnonce"], "auth")
        self.assertEqual(params["response"], expected)

    def test_unknown_realm_algorithm_or_auth_int_only_gives_none(self) -> None:
        creds = {"r": ("u", "p")}
        self.assertIsNone(with_credentials(register(), self.response('Digest realm="other", nonce="n"'), creds))
        self.assertIsNone(with_credentials(register(), self.response(
            'Digest realm="r", nonce="n", algorithm=SHA-512-256'), creds))
        self.assertIsNone(with_credentials(register(), self.response(
            'Digest realm="r", nonce="n", qop="auth-int"'), creds))
        self.assertIsNone(with_credentials(register(), self.response('Basic realm="r"'), creds))
        self.assertIsNone(with_credentials(register(), register().create_response(403), ("u", "p")))
        self.assertIsNone(with_credentials(register(), self.response('Digest realm="r", nonce="n"'),
                                           lambda realm: None))

    def test_first_speakable_algorithm_of_a_realm(self) -> None:
        retry = with_credentials(register(), self.response(
            'Digest realm="r", nonce="n", algorithm=SHA-512-256, qop="auth"',
            'Digest realm="r", nonce="n", algorithm=SHA-256, qop="auth"',
            'Digest realm="r", nonce="n", algorithm=MD5, qop="auth"'), ("u", "p"))
        values = retry.get_all("authorization")
        self.assertEqual(len(values), 1)
        self.assertEqual(parse_credentials(values[0])[1]["algorithm"], "SHA-256")

    def test_two_proxies_two_realms_and_kept_credentials(self) -> None:
        request = register()
        first = with_credentials(request, self.response('Digest realm="p1", nonce="a"', code=407), ("u", "p"))
        second = with_credentials(first, self.response('Digest realm="p2", nonce="b"', code=407), ("u", "p"))
        realms = [parse_credentials(v)[1]["realm"] for v in second.get_all("proxy-authorization")]
        self.assertEqual(realms, ["p1", "p2"])
        self.assertEqual(second.cseq[0], 3)
        self.assertIsNone(with_credentials(second, self.response('Digest realm="p2", nonce="c"', code=407),
                                           ("u", "p")))

    def test_quotes_in_user_are_escaped(self) -> None:
        retry = with_credentials(register(), self.response('Digest realm="r", nonce="n"'), ('a"b', "p"))
        self.assertEqual(parse_credentials(retry.get("authorization"))[1]["username"], 'a"b')

    def test_challenge_parser(self) -> None:
        scheme, params = parse_challenge('Digest realm="a, b", nonce="x\\"y", qop="auth,auth-int", stale=TRUE')
        self.assertEqual(scheme, "digest")
        self.assertEqual(params, {"realm": "a, b", "nonce": 'x"y', "qop": "auth,auth-int", "stale": "TRUE"})

    def test_ack_and_cancel_are_never_answered(self) -> None:
        request = register()
        request.method = "CANCEL"
        self.assertIsNone(with_credentials(request, self.response('Digest realm="r", nonce="n"'), ("u", "p")))


class ChainTests(SynchronousTestCase):
    """A proxy asking 407 in front of a server asking 401 (RFC 3261 22.3)."""

    def test_proxy_then_server_both_accept(self) -> None:
        clock = Clock()
        clock.advance(1000)
        proxy_side, server_side = FakeDispatcher(), FakeDispatcher()
        proxy = Authorize(proxy_side, {"alice": "pw1"}, realm="proxy", secret=b"p" * 32, clock=clock,
                          i_am_proxy=True)
        server = Authorize(server_side, {"alice": "pw2"}, realm="server", secret=b"s" * 32, clock=clock)
        creds = {"proxy": ("alice", "pw1"), "server": ("alice", "pw2")}
        addr = ("192.0.2.1", 5060)

        def through(request: Request) -> Response:
            if proxy.receive(request.copy(), None, addr):
                return proxy_side.responses.pop()
            self.assertTrue(server.receive(request.copy(), None, addr))
            return server_side.responses.pop()

        invite = new_request("INVITE", "sip:bob@example.com", "<sip:alice@example.com>", "<sip:bob@example.com>",
                             sent_by="192.0.2.1")
        first = through(invite)
        self.assertEqual(first.code, 407)
        retry = with_credentials(invite, first, creds)
        second = through(retry)
        self.assertEqual(second.code, 401)
        final = with_credentials(retry, second, creds)
        self.assertEqual(final.cseq[0], 3)
        kept = parse_credentials(final.get("proxy-authorization"))[1]
        self.assertEqual((kept["realm"], kept["nc"]), ("proxy", "00000002"))
        self.assertFalse(proxy.receive(final.copy(), None, addr))
        self.assertFalse(server.receive(final.copy(), None, addr))
