"""RFC 4475 through the stateless proxy: what each torture message makes a
proxy do (forward unchanged but for its own additions, answer, or drop)."""
from __future__ import annotations

import csv
import os

from twisted.trial.unittest import SynchronousTestCase

from sipproxy.transport.dispatcher import stamp_via
from sipproxy.sip.message import parse
from sipproxy.proxy.stateless import StatelessProxy
from sipproxy.proxy.routing import parse_proxy
from sipproxy.testing import MemoryLeg, memory_dispatcher

HERE = os.path.join(os.path.dirname(__file__), "rfc4475")
SOURCE = ("192.0.2.50", 5060)
NEXT_HOP = ("192.0.2.99", 5060)


def torture(name: str) -> bytes:
    with open(os.path.join(HERE, name), "rb") as f:
        return f.read()


def manifest() -> dict[str, str]:
    with open(os.path.join(HERE, "MANIFEST.tsv"), newline="") as f:
        return {row["file"]: row["class"] for row in csv.DictReader(f, delimiter="\t")}


class TortureThroughProxyTests(SynchronousTestCase):
    def run_through(self, name: str) -> list[tuple[bytes, tuple[str, int]]]:
        """Send one torture file to a one-leg proxy that forwards every
        domain to NEXT_HOP; return what it sent."""
        self.leg = MemoryLeg("192.0.2.1")
        dispatcher = memory_dispatcher([self.leg], domain2proxy={"*": parse_proxy("192.0.2.99")})
        dispatcher.set_receiver(StatelessProxy(dispatcher, secret=b"k" * 32))
        self.leg.receive(torture(name), SOURCE)
        return list(self.leg.sent)

    def answered(self, name: str, code: int) -> bytes:
        sent = self.run_through(name)
        self.assertEqual(len(sent), 1, f"{name}: {sent!r}")
        data, addr = sent[0]
        self.assertTrue(data.startswith(f"SIP/2.0 {code} ".encode()), f"{name}: {data[:80]!r}")
        self.assertEqual(addr, SOURCE, name)
        return data

    def assert_forwarded_unchanged(self, name: str) -> None:
        """The proxy adds its Via (and a Record-Route on initial requests),
        stamps received= on the sender's Via (RFC 3261 18.2.1), lowers
        Max-Forwards (or adds it) and Content-Length if missing, and leaves
        every other octet as it was."""
        message = parse(torture(name))
        stamp_via(message, SOURCE)
        mf = message.get("max-forwards")
        if mf is None:
            message.add("max-forwards", "70")
        else:
            message.replace_first("max-forwards", str(int(mf) - 1))
        expected = bytes(message).split(b"\r\n")
        sent = self.run_through(name)
        self.assertEqual(len(sent), 1, f"{name}: {sent!r}")
        data, addr = sent[0]
        self.assertEqual(addr, NEXT_HOP, name)
        out = data.split(b"\r\n")
        self.assertEqual(out[0], expected[0], name)
        self.assertTrue(out[1].startswith(b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK"), name)
        rest = out[2:]
        if rest[0].startswith(b"Record-Route: "):
            self.assertEqual(rest[0], b"Record-Route: <sip:192.0.2.1:5060;lr>")
            rest = rest[1:]
        self.assertEqual(rest, expected[1:], name)

    def test_valid_requests_are_forwarded_unchanged(self) -> None:
        for name, kind in manifest().items():
            if kind == "valid" and not torture(name).startswith(b"SIP/2.0"):
                self.assert_forwarded_unchanged(name)

    def test_foreign_valid_responses_are_dropped(self) -> None:
        for name in ("unreason.dat", "noreason.dat"):
            self.assertEqual(self.run_through(name), [], name)

    def test_invalid_requests_are_answered_and_never_forwarded(self) -> None:
        for name, kind in manifest().items():
            if kind != "invalid":
                continue
            sent = self.run_through(name)
            self.assertFalse(any(addr == NEXT_HOP for _, addr in sent), name)
            for data, addr in sent:
                self.assertRegex(data[:12].decode(), r"SIP/2\.0 (400|505) ", name)
                self.assertEqual(addr, SOURCE)

    def test_addressable_invalid_requests_get_400(self) -> None:
        for name in ("badinv01.dat", "clerr.dat", "ncl.dat", "scalar02.dat", "quotbal.dat",
                     "mismatch01.dat", "mismatch02.dat",
                     # a broken request line, headers still readable
                     "ltgtruri.dat", "lwsruri.dat", "lwsstart.dat", "trws.dat"):
            self.answered(name, 400)
        self.assertIn(b"CSeq", self.answered("scalar02.dat", 400).split(b"\r\n")[0])

    def test_unknown_version_gets_505(self) -> None:
        self.answered("badvers.dat", 505)

    def test_invalid_responses_are_dropped(self) -> None:
        for name in ("scalarlg.dat", "bigcode.dat"):
            self.assertEqual(self.run_through(name), [], name)

    def test_lenient_messages_are_forwarded_unchanged(self) -> None:
        for name, kind in manifest().items():
            if kind == "lenient":
                self.assert_forwarded_unchanged(name)

    def test_missing_transaction_id_is_forwarded(self) -> None:
        self.assert_forwarded_unchanged("badbranch.dat")

    # 3.3.x: what RFC 4475 says a proxy does with each
    def test_insufficient_headers_get_400(self) -> None:
        self.assertIn(b"missing", self.answered("insuf.dat", 400))

    def test_unknown_scheme_gets_416(self) -> None:
        self.answered("unkscm.dat", 416)
        self.answered("novelsc.dat", 416)

    def test_unknown_schemes_in_headers_are_forwarded(self) -> None:
        self.assert_forwarded_unchanged("unksm2.dat")

    def test_proxy_require_gets_420_with_unsupported(self) -> None:
        data = self.answered("bext01.dat", 420)
        self.assertEqual(parse(data).get_all("unsupported"), ["noProxiesSupportThis", "norDoAnyProxiesSupportThis"])

    def test_unknown_content_type_and_accept_are_the_uas_business(self) -> None:
        self.assert_forwarded_unchanged("invut.dat")
        self.assert_forwarded_unchanged("sdp01.dat")

    def test_unknown_authorization_scheme_is_forwarded(self) -> None:
        self.assert_forwarded_unchanged("regaut01.dat")

    def test_multiple_single_values_get_400(self) -> None:
        self.answered("multi01.dat", 400)
        self.answered("mcl01.dat", 400)

    def test_broadcast_response_is_not_sent(self) -> None:
        self.assertEqual(self.run_through("bcast.dat"), [])

    def test_max_forwards_zero_gets_483(self) -> None:
        self.answered("zeromf.dat", 483)

    def test_registrations_are_forwarded_to_the_registrar(self) -> None:
        for name in ("cparam01.dat", "cparam02.dat", "regescrt.dat"):
            self.assert_forwarded_unchanged(name)

    def test_rfc2543_invite_is_forwarded(self) -> None:
        self.assert_forwarded_unchanged("inv2543.dat")
