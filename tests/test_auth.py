"""Digest authentication: challenges, MD5 and SHA-256 with qop=auth, nonce
checking (forged, stale, replayed nc), realms, filters, and the users
file."""
from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sipproxy.access.digest_auth import Authorize, Nonces, Users, UsersFileError, ha1, parse_credentials
from sipproxy.access.chain import ReceiveChain
from sipproxy.proxy.stateless import StatelessProxy
from sipproxy.testing import MemoryLeg, memory_dispatcher
from tests.registrar_harness import OUTSIDE, PHONE, FrontDoorHarness, credentials

MD5_ALICE = ha1("alice", "example.com", "secret", "MD5")


class RegistrarAuthTests(FrontDoorHarness, SynchronousTestCase):
    """401 with WWW-Authenticate in front of the registrar."""

    def setUp(self) -> None:
        self.make(registrar=True, domains=["example.com"], users=Users({"alice": "secret", "bob": "b0b"}))

    def challenge(self, **kw: Any) -> Any:
        response = self.answer(self.register(**kw))
        self.assertEqual(response.code, 401)
        return response

    def authed(self, challenge: str, password: str = "secret", cseq: int = 2, user: str = "alice", **kw: Any) -> Any:
        auth = credentials(challenge, user, password, "REGISTER", "sip:example.com", **kw)
        return self.answer(self.register(cseq=cseq, user=user, headers=[("Authorization", auth)]))

    def test_challenge_offers_md5_and_sha256_with_qop(self) -> None:
        response = self.challenge()
        values = response.get_all("www-authenticate")
        self.assertEqual([parse_credentials(v)[1]["algorithm"] for v in values], ["MD5", "SHA-256"])
        for value in values:
            scheme, params = parse_credentials(value)
            self.assertEqual((scheme, params["realm"], params["qop"]), ("digest", "example.com", "auth"))
            self.assertNotIn("stale", params)
        self.assertEqual(response.get("proxy-authenticate"), None)

    def test_md5_registers(self) -> None:
        challenge = self.challenge().get_all("www-authenticate")[0]
        response = self.authed(challenge)
        self.assertEqual(response.code, 200)
        self.assertEqual(response.get_all("contact"), ["<sip:alice@192.0.2.10:5060>;expires=3600"])

    def test_sha256_registers(self) -> None:
        challenge = self.challenge().get_all("www-authenticate")[1]
        self.assertIn("SHA-256", challenge)
        self.assertEqual(self.authed(challenge).code, 200)

    def test_wrong_password_is_challenged_again_and_not_registered(self) -> None:
        challenge = self.challenge().get_all("www-authenticate")[0]
        response = self.authed(challenge, password="guess")
        self.assertEqual(response.code, 401)
        self.assertNotIn("stale", response.get("www-authenticate"))
        self.assertEqual(self.store.lookup("sip:alice@example.com").result, [])

    def test_unknown_user_is_challenged(self) -> None:
        challenge = self.challenge().get_all("www-authenticate")[0]
        self.assertEqual(self.authed(challenge, user="mallory", password="x").code, 401)

    def test_forged_nonce_is_challenged(self) -> None:
        challenge = self.challenge().get_all("www-authenticate")[0]
        forged = challenge.replace('nonce="', 'nonce="A')
        self.assertEqual(self.authed(forged).code, 401)
        other_key = Nonces(b"z" * 32, self.clock).make("example.com")
        self.assertEqual(self.authed(f'Digest realm="example.com", nonce="{other_key}", algorithm=MD5').code, 401)

    def test_stale_nonce_with_right_password_gets_stale_true(self) -> None:
        challenge = self.challenge().get_all("www-authenticate")[0]
        self.clock.advance(301)
        response = self.authed(challenge)
        self.assertEqual(response.code, 401)
        self.assertTrue(all("stale=true" in v for v in response.get_all("www-authenticate")))
        fresh = response.get_all("www-authenticate")[0]
        self.assertEqual(self.authed(fresh, cseq=3).code, 200)

    def test_stale_nonce_with_wrong_password_is_not_stale(self) -> None:
        challenge = self.challenge().get_all("www-authenticate")[0]
        self.clock.advance(301)
        self.assertNotIn("stale", self.authed(challenge, password="guess").get("www-authenticate"))

    def test_replayed_nc_is_refused_but_retransmission_and_next_nc_pass(self) -> None:
        challenge = self.challenge().get_all("www-authenticate")[0]
        auth = credentials(challenge, "alice", "secret", "REGISTER", "sip:example.com", nc=1)
        first = self.register(cseq=2, headers=[("Authorization", auth)])
        self.assertEqual(self.answer(first).code, 200)
        # the same datagram again (a retransmission): answered the same
        self.assertEqual(self.answer(first).code, 200)
        # the same credentials on a new request (new branch, CSeq): a replay
        replay = self.register(cseq=3, headers=[("Authorization", auth)])
        response = self.answer(replay)
        self.assertEqual(response.code, 401)
        self.assertNotIn("stale", response.get("www-authenticate"))
        # the client's next nc with the same nonce is fine
        auth2 = credentials(challenge, "alice", "secret", "REGISTER", "sip:example.com", nc=2)
        self.assertEqual(self.answer(self.register(cseq=4, headers=[("Authorization", auth2)])).code, 200)

    def test_answer_without_qop_is_refused(self) -> None:
        challenge = self.challenge().get_all("www-authenticate")[0]
        self.assertEqual(self.authed(challenge, qop=None).code, 401)

    def test_digest_uri_must_be_the_request_uri_or_us(self) -> None:
        challenge = self.challenge().get_all("www-authenticate")[0]
        auth = credentials(challenge, "alice", "secret", "REGISTER", "sip:elsewhere.example.org")
        self.assertEqual(self.answer(self.register(cseq=2, headers=[("Authorization", auth)])).code, 400)
        auth = credentials(challenge, "alice", "secret", "REGISTER", "sip:192.0.2.1:5060")  # sipp does this
        self.assertEqual(self.answer(self.register(cseq=3, headers=[("Authorization", auth)])).code, 200)

    def test_user_may_only_register_itself(self) -> None:
        challenge = self.challenge(user="bob").get_all("www-authenticate")[0]
        # bob's password, alice's address-of-record
        auth = credentials(challenge, "bob", "b0b", "REGISTER", "sip:example.com")
        response = self.answer(self.register(cseq=2, user="alice", headers=[("Authorization", auth)]))
        self.assertEqual(response.code, 403)

    def test_ack_to_our_challenge_is_swallowed(self) -> None:
        self.make(users=Users({"alice": "secret"}))
        response = self.answer(self.invite(), OUTSIDE)
        self.assertEqual(response.code, 407)
        ack = self.invite(method="ACK", to=response.get("to"))
        self.assertEqual(self.send(ack, OUTSIDE), [])


class ProxyAuthTests(FrontDoorHarness, SynchronousTestCase):
    """407 with Proxy-Authenticate before forwarding."""

    def setUp(self) -> None:
        self.make(registrar=True, domains=["example.com"], users=Users({"alice": "secret"}))
        self.answer(self.register(user="bob", call_id="bob"))  # 401: bob is not a user; nothing registered

    def from_alice(self, uri: str = "sip:carol@192.0.2.20", **kw: Any) -> bytes:
        return self.invite(uri=uri, from_="<sip:alice@example.com>;tag=a1", **kw)

    def test_request_from_served_domain_needs_407(self) -> None:
        response = self.answer(self.from_alice(), PHONE)
        self.assertEqual(response.code, 407)
        self.assertEqual(len(response.get_all("proxy-authenticate")), 2)
        self.assertEqual(response.get("www-authenticate"), None)

    def test_authenticated_request_is_forwarded_without_our_credentials(self) -> None:
        challenge = self.answer(self.from_alice(), PHONE).get_all("proxy-authenticate")[1]
        ours = credentials(challenge, "alice", "secret", "INVITE", "sip:carol@192.0.2.20")
        theirs = 'Digest username="a", realm="carrier.example.net", nonce="n", uri="sip:x", response="00"'
        request, addr = self.forwarded(self.from_alice(cseq=2, branch="z9hG4bKinv2", headers=[
            ("Proxy-Authorization", theirs), ("Proxy-Authorization", ours)]), PHONE)
        self.assertEqual(addr, ("192.0.2.20", 5060))
        self.assertEqual(request.get_all("proxy-authorization"), [theirs])

    def test_credentials_for_another_realm_only_get_a_challenge(self) -> None:
        theirs = 'Digest username="alice", realm="carrier.example.net", nonce="n", uri="sip:x", response="00"'
        response = self.answer(self.from_alice(headers=[("Proxy-Authorization", theirs)]), PHONE)
        self.assertEqual(response.code, 407)

    def test_from_user_must_be_the_auth_user(self) -> None:
        challenge = self.answer(self.from_alice(), PHONE).get_all("proxy-authenticate")[0]
        auth = credentials(challenge, "alice", "secret", "INVITE", "sip:carol@192.0.2.20")
        spoofed = self.invite(uri="sip:carol@192.0.2.20", from_="<sip:boss@example.com>;tag=b", cseq=2,
                              headers=[("Proxy-Authorization", auth)])
        self.assertEqual(self.answer(spoofed, PHONE).code, 403)

    def test_incoming_call_from_outside_needs_no_credentials(self) -> None:
        self.make(registrar=True, domains=["example.com"], users=Users({"alice": "secret"}))
        challenge = self.answer(self.register()).get_all("www-authenticate")[0]
        auth = credentials(challenge, "alice", "secret", "REGISTER", "sip:example.com")
        self.assertEqual(self.answer(self.register(cseq=2, headers=[("Authorization", auth)])).code, 200)
        request, addr = self.forwarded(self.invite(), OUTSIDE)
        self.assertEqual((request.uri, addr), ("sip:alice@192.0.2.10:5060", PHONE))

    def test_cancel_and_in_dialog_requests_are_not_challenged(self) -> None:
        request, _ = self.forwarded(self.from_alice(method="CANCEL"), PHONE)
        self.assertEqual(request.method, "CANCEL")
        bye = self.from_alice(method="BYE", to="<sip:carol@192.0.2.20>;tag=x", headers=[
            ("Route", "<sip:192.0.2.1:5060;lr>")])
        request, _ = self.forwarded(bye, PHONE)
        self.assertEqual(request.method, "BYE")

    def test_options_to_the_proxy_itself_is_not_challenged(self) -> None:
        response = self.answer(self.from_alice(uri="sip:192.0.2.1", method="OPTIONS"), PHONE)
        self.assertEqual(response.code, 200)

    def test_without_domains_every_new_request_is_challenged(self) -> None:
        self.make(users=Users({"alice": "secret"}))
        self.assertEqual(self.answer(self.invite(), OUTSIDE).code, 407)
        self.assertEqual(self.answer(self.register()).code, 407)  # no registrar: REGISTER is proxied

    def test_without_domains_register_gets_401(self) -> None:
        self.make(registrar=True, users=Users({"alice": "secret"}))
        self.assertEqual(self.answer(self.register()).code, 401)
        self.assertEqual(self.answer(self.invite(), OUTSIDE).code, 407)


class FilterTests(SynchronousTestCase):
    """Net::SIP's filters, on an Authorize used on its own."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.leg = MemoryLeg("192.0.2.1")
        self.dispatcher = memory_dispatcher([self.leg])

    def run_with(self, filter: Any, from_: str, to: str) -> int:
        auth = Authorize(self.dispatcher, {"alice": "secret"}, realm="example.com", clock=self.clock,
                         filter=filter, secret=b"f" * 32)
        self.dispatcher.set_receiver(ReceiveChain([auth, StatelessProxy(self.dispatcher, secret=b"p" * 32)]))
        from tests.sip import request

        def send(headers: Any, cseq: int) -> Any:
            self.leg.receive(request("MESSAGE", uri="sip:carol@192.0.2.20", from_=from_, to=to, cseq=cseq,
                                     headers=headers, via=f"SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK{cseq}"), PHONE)
            (message, _), = self.leg.take()
            return message

        challenge = send([], 1).get_all("www-authenticate")[0]
        answer = send([("Authorization", credentials(challenge, "alice", "secret", "MESSAGE",
                                                     "sip:carol@192.0.2.20"))], 2)
        return getattr(answer, "code", 0)  # 0: forwarded

    def test_no_filter(self) -> None:
        self.assertEqual(self.run_with(None, "<sip:x@elsewhere.org>;tag=1", "<sip:y@z>"), 0)

    def test_named_filters(self) -> None:
        self.assertEqual(self.run_with({"MESSAGE": "FromIsRealm"}, "<sip:x@sub.example.com>;tag=1", "<sip:y@z>"), 0)
        self.assertEqual(self.run_with({"MESSAGE": "FromIsRealm"}, "<sip:x@badexample.com>;tag=1", "<sip:y@z>"), 403)
        self.assertEqual(self.run_with({"MESSAGE": "FromIsAuthUser"}, "<sip:ALICE@a.b>;tag=1", "<sip:y@z>"), 0)
        self.assertEqual(self.run_with({"MESSAGE": "ToIsFrom"}, "<sip:a@b>;tag=1", "<sip:A@B>"), 0)
        self.assertEqual(self.run_with({"MESSAGE": "ToIsFrom"}, "<sip:a@b>;tag=1", "<sip:c@b>"), 403)

    def test_or_of_ands_and_callables(self) -> None:
        calls = []

        def deny(packet: Any, leg: Any, addr: Any, user: str, realm: str) -> bool:
            calls.append((user, realm))
            return False

        chain = {"MESSAGE": [["FromIsAuthUser", deny], ["ToIsFrom"]]}
        self.assertEqual(self.run_with(chain, "<sip:alice@b>;tag=1", "<sip:c@b>"), 403)
        self.assertEqual(calls, [("alice", "example.com")])
        self.assertEqual(self.run_with(chain, "<sip:alice@b>;tag=1", "<sip:alice@b>"), 0)

    def test_filter_only_for_its_method_or_star(self) -> None:
        self.assertEqual(self.run_with({"INVITE": "ToIsFrom"}, "<sip:a@b>;tag=1", "<sip:c@d>"), 0)
        self.assertEqual(self.run_with({"*": "ToIsFrom"}, "<sip:a@b>;tag=1", "<sip:c@d>"), 403)

    def test_unknown_filter_name(self) -> None:
        self.assertRaises(ValueError, Authorize, self.dispatcher, {}, filter={"INVITE": "FromIsMars"})


class NonceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.nonces = Nonces(b"n" * 32, self.clock, lifetime=60, max_tracked=3)

    def test_issued_only_for_our_nonces_and_realm(self) -> None:
        nonce = self.nonces.make("r")
        self.assertEqual(self.nonces.issued(nonce, "r"), 1_800_000_000)
        self.assertIsNone(self.nonces.issued(nonce, "other"))
        self.assertIsNone(Nonces(b"m" * 32, self.clock).issued(nonce, "r"))
        self.assertIsNone(self.nonces.issued("!!", "r"))
        self.assertNotEqual(nonce, self.nonces.make("r"))

    def test_overflowing_memory_makes_old_nonces_stale(self) -> None:
        old = self.nonces.make("r")
        self.assertIsNone(self.nonces.use(old, self.nonces.issued(old, "r"), 1, "a"))
        self.clock.advance(1)
        for i in range(3):
            n = self.nonces.make("r")
            self.assertIsNone(self.nonces.use(n, self.nonces.issued(n, "r"), 1, f"b{i}"))
        self.assertEqual(len(self.nonces), 3)
        self.assertEqual(self.nonces.use(old, self.nonces.issued(old, "r"), 2, "c"), "stale")

    def test_memory_expires_with_the_lifetime(self) -> None:
        n = self.nonces.make("r")
        self.nonces.use(n, self.nonces.issued(n, "r"), 1, "a")
        self.clock.advance(61)
        self.nonces.make("r")
        self.nonces.use(self.nonces.make("r"), self.clock.seconds(), 1, "b")
        self.assertEqual(len(self.nonces), 1)


class UsersFileTests(SynchronousTestCase):
    def test_passwords_and_htdigest_lines(self) -> None:
        sha = ha1("carol", "example.com", "pw3", "SHA-256")
        users = Users.parse(["# comment", "", "alice:secret", f"bob:example.com:{ha1('bob', 'example.com', 'pw2')}",
                             f"carol:example.com:{sha}", "dave:pass:with:colons"], realm="example.com")
        self.assertEqual(users.get_ha1("alice", "example.com", "MD5"), MD5_ALICE)
        self.assertEqual(users.get_ha1("bob", "example.com", "MD5"), ha1("bob", "example.com", "pw2"))
        self.assertIsNone(users.get_ha1("bob", "example.com", "SHA-256"))
        self.assertEqual(users.get_ha1("carol", "example.com", "SHA-256"), sha)
        self.assertEqual(users.get_ha1("dave", "example.com", "MD5"), ha1("dave", "example.com", "pass:with:colons"))
        self.assertIsNone(users.get_ha1("eve", "example.com", "MD5"))
        self.assertEqual(len(users), 4)

    def test_errors_name_the_line(self) -> None:
        cases = [
            (["alice:secret", "justaname"], 2, "want user:password"),
            (["alice:"], 1, "empty password"),
            (["# x", "alice:example.com:0123456789abcdef"], 2, "hex digits"),
            (["alice:other.realm:" + "0" * 32], 1, "realm 'other.realm'"),
            (["alice:a", "bob:b", "alice:c"], 3, "first on line 1"),
            ([":nouser"], 1, "bad user name"),
            ([" alice:secret"], 1, "white space"),
        ]
        for lines, number, text in cases:
            with self.assertRaises(UsersFileError) as caught:
                Users.parse(lines, realm="example.com", source="users.txt")
            self.assertEqual(caught.exception.line, number, lines)
            self.assertIn(text, str(caught.exception))
            self.assertTrue(str(caught.exception).startswith(f"users.txt, line {number}: "))

    def test_missing_file(self) -> None:
        with self.assertRaises(UsersFileError) as caught:
            Users.from_file("/nonexistent/users")
        self.assertIn("cannot read", str(caught.exception))
