"""The RFC 4475 torture messages against the message layer.

Every file in C{tests/rfc4475/} is handled by the class the manifest gives
it; on top of "accepted" or "refused", each test checks what the RFC 4475
section for the message says an element must read from it (or must not).
"""
from __future__ import annotations

import csv
import os
import re
from urllib.parse import unquote

from twisted.trial.unittest import SynchronousTestCase

from sipproxy.sip.message import ParseError, Request, Response, parse, parse_via
from sipproxy.sip.uri import URIError, parse_name_addr, parse_uri, uri_equal

TORTURE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rfc4475")


def _read_manifest() -> list[dict[str, str]]:
    with open(os.path.join(TORTURE_DIR, "MANIFEST.tsv"), newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t"))


MANIFEST = _read_manifest()
CLASS_OF = {row["file"]: row["class"] for row in MANIFEST}


def load(name: str) -> bytes:
    with open(os.path.join(TORTURE_DIR, name), "rb") as f:
        return f.read()


_CL_RE = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*([0-9]+)[ \t]*\r?$", re.I | re.M)


def framed(data: bytes) -> bytes:
    """The first message in C{data}, cut to its Content-Length: what a
    datagram element must read and forward (RFC 3261 18.3). Worked out
    here without the parser under test."""
    end = data.index(b"\r\n\r\n") + 4
    lengths = _CL_RE.findall(data[:end])
    if not lengths:
        return data
    return data[: end + int(lengths[0])]


def files_of(klass: str) -> list[str]:
    return [row["file"] for row in MANIFEST if row["class"] == klass]


def _stem(name: str) -> str:
    return name.rsplit(".", 1)[0]


class ManifestTests(SynchronousTestCase):
    """The vectors are all there, as the manifest describes them."""

    def test_forty_nine_messages(self) -> None:
        self.assertEqual(len(MANIFEST), 49)
        self.assertEqual(len({row["file"] for row in MANIFEST}), 49)
        on_disk = sorted(n for n in os.listdir(TORTURE_DIR) if n.endswith(".dat"))
        self.assertEqual(on_disk, sorted(CLASS_OF))

    def test_class_counts(self) -> None:
        counts: dict[str, int] = {}
        for row in MANIFEST:
            counts[row["class"]] = counts.get(row["class"], 0) + 1
        self.assertEqual(
            counts,
            {"valid": 13, "invalid": 14, "lenient": 5, "transaction": 1, "application": 15, "compat": 1},
        )

    def test_files_are_crlf_framed(self) -> None:
        """The vectors were copied byte for byte: CRLF line ends, no
        bare LF in any header block."""
        for name in CLASS_OF:
            data = load(name)
            head = data[: data.index(b"\r\n\r\n")]
            self.assertEqual(head.count(b"\n"), head.count(b"\r\n"), name)

    def test_readme_copied(self) -> None:
        with open(os.path.join(TORTURE_DIR, "README.md"), encoding="utf-8") as f:
            self.assertIn("RFC 4475", f.read())


# -- valid: accepted, and forwarded byte for byte ------------------------------
class ValidTortureTests(SynchronousTestCase):
    """3.1.1: every valid message is accepted and serialises back to the
    octets it arrived as (cut to Content-Length)."""

    def check_valid(self, name: str) -> None:
        data = load(name)
        message = parse(data)
        self.assertIsInstance(message, (Request, Response))
        self.assertEqual(bytes(message), framed(data))
        # and what we send parses back to the same thing
        again = parse(bytes(message))
        self.assertEqual(bytes(again), framed(data))
        self.assertEqual(again.header_names(), message.header_names())

    def check_valid_stream(self, name: str) -> None:
        """The same message framed by a stream transport parses too."""
        data = framed(load(name))
        message = parse(data, stream=True)
        self.assertEqual(bytes(message), data)


def _add_valid_tests() -> None:
    for name in files_of("valid"):
        def roundtrip(self: ValidTortureTests, name: str = name) -> None:
            self.check_valid(name)

        def stream(self: ValidTortureTests, name: str = name) -> None:
            self.check_valid_stream(name)

        setattr(ValidTortureTests, f"test_{_stem(name)}_round_trips", roundtrip)
        setattr(ValidTortureTests, f"test_{_stem(name)}_on_stream", stream)


_add_valid_tests()


# -- invalid: refused with a reason naming the fault ---------------------------
#: file -> (words one of which the reason must contain, status,
#: whether the headers were split so a response can be addressed)
INVALID = {
    "badinv01.dat": (("Via",), 400, True),
    "clerr.dat": (("Content-Length",), 400, True),
    "ncl.dat": (("Content-Length",), 400, True),
    "scalar02.dat": (("CSeq",), 400, True),
    "scalarlg.dat": (("CSeq",), 400, True),
    "quotbal.dat": (("To",), 400, True),
    "ltgtruri.dat": (("Request-URI",), 400, False),
    "lwsruri.dat": (("request line", "Request-URI"), 400, False),
    "lwsstart.dat": (("request line",), 400, False),
    "trws.dat": (("request line",), 400, False),
    "badvers.dat": (("version",), 505, True),
    "mismatch01.dat": (("CSeq",), 400, True),
    "mismatch02.dat": (("CSeq",), 400, True),
    "bigcode.dat": (("status code",), 400, False),
}


class InvalidTortureTests(SynchronousTestCase):
    """3.1.2: every invalid message is refused with a reason that names
    what is wrong, and (for requests) enough parsed to answer it."""

    def test_table_covers_manifest(self) -> None:
        self.assertEqual(sorted(INVALID), sorted(files_of("invalid")))

    def check_invalid(self, name: str) -> ParseError:
        words, status, addressable = INVALID[name]
        err = self.assertRaises(ParseError, parse, load(name))
        self.assertTrue(any(w in err.reason for w in words), f"{name}: {err.reason!r} names none of {words}")
        self.assertEqual(err.status, status)
        self.assertEqual(str(err), err.reason)
        if addressable:
            self.assertIsNotNone(err.message, name)
            if isinstance(err.message, Request):
                # the Via lines (and From, To, Call-ID, CSeq) go back as
                # they came, even where they are the fault
                response = err.message.create_response(status)
                self.assertEqual(response.code, status)
                self.assertEqual(response.raw_lines("via"), err.message.raw_lines("via"))
                self.assertTrue(bytes(response).startswith(b"SIP/2.0 %d " % status))
        return err

    def test_badinv01_names_empty_via_params(self) -> None:
        err = self.check_invalid("badinv01.dat")
        self.assertIsInstance(err.message, Request)

    def test_quotbal_shows_the_open_quote(self) -> None:
        err = self.check_invalid("quotbal.dat")
        self.assertIn('"Mr. J. User', err.reason)

    def test_clerr_shows_lengths(self) -> None:
        err = self.check_invalid("clerr.dat")
        self.assertIn("9999", err.reason)
        # a stream framer could not have delivered it either
        self.assertRaises(ParseError, parse, load("clerr.dat"), stream=True)

    def test_ncl_negative(self) -> None:
        err = self.check_invalid("ncl.dat")
        self.assertIn("-999", err.reason)

    def test_scalar02_is_refused_for_cseq(self) -> None:
        """RFC 4475 3.1.2.4: the 400 is due to the CSeq error, even
        though Max-Forwards and Expires are out of range as well."""
        err = self.check_invalid("scalar02.dat")
        self.assertIn("CSeq", err.reason)
        self.assertNotIn("Max-Forwards", err.reason)

    def test_scalarlg_response_refused(self) -> None:
        err = self.check_invalid("scalarlg.dat")
        self.assertIsInstance(err.message, Response)

    def test_badvers_505_addressable(self) -> None:
        """3.1.2.16: answered with 505, so the parse error carries the
        request with its Via."""
        err = self.check_invalid("badvers.dat")
        self.assertIn("SIP/7.0", err.reason)
        request = err.message
        self.assertIsInstance(request, Request)
        self.assertEqual(request.method, "OPTIONS")
        self.assertEqual(request.top_via().branch, "z9hG4bKkdjuw")
        response = request.create_response(505)
        self.assertTrue(bytes(response).startswith(b"SIP/2.0 505 Version Not Supported\r\n"))

    def test_mismatch01_cseq_method(self) -> None:
        err = self.check_invalid("mismatch01.dat")
        self.assertIn("INVITE", err.reason)
        self.assertIn("OPTIONS", err.reason)

    def test_mismatch02_unknown_method(self) -> None:
        err = self.check_invalid("mismatch02.dat")
        self.assertIn("NEWMETHOD", err.reason)
        self.assertEqual(err.message.method, "NEWMETHOD")

    def test_bigcode(self) -> None:
        err = self.check_invalid("bigcode.dat")
        self.assertIn("4294967301", err.reason)

    def test_request_line_faults(self) -> None:
        for name in ("ltgtruri.dat", "lwsruri.dat", "lwsstart.dat", "trws.dat"):
            self.check_invalid(name)


def _add_invalid_tests() -> None:
    for name in files_of("invalid"):
        def refused(self: InvalidTortureTests, name: str = name) -> None:
            self.check_invalid(name)

        setattr(InvalidTortureTests, f"test_{_stem(name)}_refused", refused)


_add_invalid_tests()


# -- lenient: accept and forward untouched, or refuse; never misread ----------
class LenientTortureTests(SynchronousTestCase):
    """3.1.2.11-15: refusing is right, being liberal is right; crashing
    or reading a wrong value is not."""

    def parse_or_none(self, name: str):
        data = load(name)
        try:
            message = parse(data)
        except ParseError as e:
            self.assertTrue(e.reason)
            self.assertEqual(e.status, 400)
            return None
        self.assertEqual(bytes(message), framed(data))
        return message

    def test_all_lenient_either_way(self) -> None:
        for name in files_of("lenient"):
            self.parse_or_none(name)

    def test_escruri_header_not_read_as_route(self) -> None:
        message = self.parse_or_none("escruri.dat")
        if message is None:
            return
        self.assertNotIn("route", message)
        self.assertIsNone(message.get("route"))
        # a proxy treats the escaped header as any other part of the URI
        self.assertEqual(message.uri, "sip:user@example.com?Route=%3Csip:example.com%3E")
        self.assertTrue(bytes(message).startswith(b"INVITE sip:user@example.com?Route=%3Csip:example.com%3E SIP/2.0\r\n"))
        uri = message.parsed_uri()
        self.assertEqual((uri.user, uri.host, uri.port), ("user", "example.com", None))
        self.assertEqual(str(uri), message.uri)

    def test_baddate_kept_verbatim(self) -> None:
        message = self.parse_or_none("baddate.dat")
        if message is None:
            return
        self.assertEqual(message.get("date"), "Fri, 01 Jan 2010 16:00:00 EST")
        self.assertEqual(message.get_all("date"), ["Fri, 01 Jan 2010 16:00:00 EST"])
        self.assertEqual(len(message.body), 150)

    def test_regbadct_contact_not_a_routable_binding(self) -> None:
        """3.1.2.13: the unbracketed Contact with an escaped Route header
        must not be read as a binding (nor as a Route header)."""
        message = self.parse_or_none("regbadct.dat")
        if message is None:
            return
        self.assertNotIn("route", message)
        self.assertEqual(message.get_all("contact"), ["sip:user@example.com?Route=%3Csip:sip.example.com%3E"])
        self.assertRaises(URIError, message.name_addr, "contact")
        # whereas the bracketed form (regescrt) is a legal binding
        self.assertEqual(
            parse_name_addr("<sip:user@example.com?Route=%3Csip:sip.example.com%3E>").uri.headers,
            [("Route", "%3Csip:sip.example.com%3E")],
        )

    def test_badaspec_spaces(self) -> None:
        message = self.parse_or_none("badaspec.dat")
        if message is None:
            return
        try:
            to = message.name_addr("to")
        except URIError:
            return
        self.assertEqual(str(to.uri), "sip:t.watson@example.org")
        self.assertEqual((to.uri.user, to.uri.host), ("t.watson", "example.org"))
        self.assertEqual(to.display, '"Watson, Thomas"')
        self.assertIsNone(to.tag)
        sender = message.name_addr("from")
        self.assertEqual((sender.display, sender.tag), ('"Bell, Alexander"', "433423"))

    def test_baddn_unquoted_display_names(self) -> None:
        message = self.parse_or_none("baddn.dat")
        if message is None:
            return
        # From and To are not lists: the comma does not split them
        self.assertEqual(message.get_all("to"), ["Watson, Thomas <sip:t.watson@example.org>"])
        self.assertEqual(message.get_all("from"), ["Bell, Alexander <sip:a.g.bell@example.com>;tag=43"])
        for name, uri, tag in (("from", "sip:a.g.bell@example.com", "43"), ("to", "sip:t.watson@example.org", None)):
            try:
                addr = message.name_addr(name)
            except URIError:
                continue
            self.assertEqual(str(addr.uri), uri)
            self.assertEqual(addr.tag, tag)
        self.assertEqual(message.top_via().host, "c.example.com")
        self.assertEqual(message.get("max-forwards"), "70")


# -- the values the valid messages carry -----------------------------------------
class ValidValueTests(SynchronousTestCase):
    """What RFC 4475 3.1.1 says an element reads from each valid message."""

    def test_wsinv(self) -> None:
        """3.1.1.1: folding, LWS, mixed case and compact names, leading
        zeros, an empty Subject, comma-joined and separate Vias."""
        m = parse(load("wsinv.dat"))
        self.assertEqual((m.method, m.uri), ("INVITE", "sip:vivekg@chair-dnrc.example.com;unknownparam"))
        self.assertEqual(m.parsed_uri().params, [("unknownparam", None)])
        to = m.name_addr("TO")
        self.assertEqual((str(to.uri), to.display, to.tag), ("sip:vivekg@chair-dnrc.example.com", None, "1918181833n"))
        sender = m.name_addr("from")
        self.assertEqual(sender.display, '"J Rosenberg \\\\\\""')
        self.assertEqual((str(sender.uri), sender.tag), ("sip:jdrosen@example.com", "98asjd8"))
        self.assertEqual(m.from_tag, "98asjd8")
        self.assertEqual(m.to_tag, "1918181833n")
        self.assertEqual(int(m.get("max-forwards")), 68)
        self.assertEqual(m.cseq, (9, "INVITE"))
        self.assertEqual(m.call_id, "wsinv.ndaksdj@192.0.2.1")
        self.assertEqual(m.get("content-length"), "150")
        self.assertEqual(len(m.body), 150)
        self.assertTrue(m.body.startswith(b"v=0\r\n"))
        vias = [parse_via(v) for v in m.get_all("via")]
        self.assertEqual(
            [(v.protocol, v.transport, v.host, v.port, v.branch) for v in vias],
            [
                ("SIP/2.0", "UDP", "192.0.2.2", None, "390skdjuw"),
                ("SIP/2.0", "TCP", "spindle.example.com", None, "z9hG4bK9ikj8"),
                ("SIP/2.0", "UDP", "192.168.255.111", None, "z9hG4bK30239"),
            ],
        )
        top = m.top_via()
        self.assertEqual(top.branch, "390skdjuw")
        self.assertFalse(top.rfc3261_branch)
        self.assertTrue(vias[1].rfc3261_branch)
        self.assertEqual(len(m.raw_lines("via")), 2)  # "Via  :" and "v:"
        self.assertIn("subject", m)
        self.assertEqual(m.get("s"), "")
        self.assertEqual(m.get("NewFangledHeader"), "newfangled value continued newfangled value")
        # unknown header: not split, not read as parameters
        self.assertEqual(m.get_all("unknownheaderwithunusualvalue"), [";;,,;;,;"])
        route = m.name_addr("route")
        self.assertEqual(route.uri.host, "services.example.com")
        self.assertEqual(route.uri.params, [("lr", None), ("unknownwith", "value"), ("unknown-no-value", None)])
        self.assertEqual(m.count("contact"), 1)
        contact = m.name_addr("m")
        self.assertEqual(contact.display, '"Quoted string \\"\\""')
        self.assertEqual(str(contact.uri), "sip:jdrosen@example.com")
        self.assertEqual(contact.params, [("newparam", "newvalue"), ("secondparam", None), ("q", "0.33")])
        self.assertEqual(contact.param("secondparam"), "")
        self.assertEqual(m.get("content-type"), "application/sdp")

    def test_intmeth(self) -> None:
        """3.1.1.2: token characters in the method; % is no escape there,
        nor in the branch or Call-ID; unusual user and password."""
        m = parse(load("intmeth.dat"))
        method = "!interesting-Method0123456789_*+`.%indeed'~"
        self.assertEqual(m.method, method)
        self.assertEqual(m.cseq, (139122385, method))
        uri = m.parsed_uri()
        self.assertEqual(uri.user, "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
        self.assertEqual(uri.password, "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)")
        self.assertEqual((uri.host, uri.params, uri.headers), ("example.com", [], []))
        self.assertEqual(m.top_via().branch, "z9hG4bK-.!%66*_+`'~")
        self.assertEqual(m.top_via().transport, "TCP")
        to = m.name_addr("to")
        self.assertEqual(to.display, '"BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f"')
        self.assertEqual(to.uri.user, "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
        sender = m.name_addr("from")
        self.assertEqual(sender.display, "token1~` token2'+_ token3*%!.-")
        self.assertEqual(sender.tag, "_token~1'+`*%!-.")
        self.assertEqual(sender.param("fromParam''~+*_!.-%"), '"\u0440\u0430\u0431\u043e\u0442\u0430\u044e\u0449\u0438\u0439"')
        self.assertEqual(m.call_id, "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{")
        self.assertEqual(m.get("max-forwards"), "255")
        self.assertEqual(m.get("extensionHeader-!.%*+_`'~"), "\ufeff\u5927\u505c\u96fb")
        self.assertIn("extensionheader-!.%*+_`'~", m.header_names())

    def test_esc01(self) -> None:
        """3.1.1.3: %HEX HEX in user parts and URI parameters means the
        character; unescaping is not recursive (value%41 is not valueA)."""
        m = parse(load("esc01.dat"))
        uri = m.parsed_uri()
        self.assertEqual(unquote(uri.user), "sips:user@example.com")
        self.assertEqual(uri.host, "example.net")
        self.assertIsNone(uri.password)
        self.assertEqual(unquote(m.name_addr("to").uri.user), "user")
        self.assertEqual(unquote(m.name_addr("from").uri.user), "I have spaces")
        self.assertEqual(m.from_tag, "938")
        contact = m.name_addr("contact").uri  # folded onto its own line
        self.assertEqual(unquote(contact.user), "caller")
        self.assertEqual([(unquote(n), v if v is None else unquote(v)) for n, v in contact.params],
                         [("lr", None), ("name", "value%41")])
        self.assertTrue(uri_equal(contact, parse_uri("sip:caller@host5.example.net;lr;name=value%2541")))
        self.assertFalse(uri_equal(contact, parse_uri("sip:caller@host5.example.net;name=valueA")))
        self.assertEqual(m.get("c"), "application/sdp")
        self.assertEqual(m.get("i"), "esc01.239409asdfakjkn23onasd0-3234")

    def test_escnull(self) -> None:
        """3.1.1.4: escaped NULs; the AOR is not cut short, and the two
        Contacts are two distinct bindings."""
        m = parse(load("escnull.dat"))
        to = m.name_addr("to").uri
        self.assertEqual(to.user, "null-%00-null")
        self.assertEqual(to.address_of_record, "sip:null-\x00-null@example.com")
        self.assertEqual(len(to.address_of_record), len("sip:null-X-null@example.com"))
        self.assertEqual(m.name_addr("from").uri.address_of_record, to.address_of_record)
        contacts = [parse_name_addr(v).uri for v in m.get_all("contact")]
        self.assertEqual([unquote(c.user) for c in contacts], ["\x00", "\x00\x00"])
        self.assertFalse(uri_equal(contacts[0], contacts[1]))
        self.assertNotEqual(contacts[0].address_of_record, contacts[1].address_of_record)
        self.assertEqual(m.get("l"), "0")
        self.assertEqual(m.body, b"")

    def test_esc02(self) -> None:
        """3.1.1.5: % that is not an escape: the method is not REGISTER,
        C%6Fntact is an unknown header, not a third Contact."""
        m = parse(load("esc02.dat"))
        self.assertEqual(m.method, "RE%47IST%45R")
        self.assertNotEqual(m.method, "REGISTER")
        self.assertEqual(m.cseq, (29344, "RE%47IST%45R"))
        self.assertEqual(m.name_addr("to").display, '"%Z%45"')
        self.assertEqual(m.top_via().branch, "z9hG4bK209%fzsnel234")
        self.assertEqual(m.top_via().transport, "TCP")
        self.assertEqual(m.get_all("contact"), ["<sip:alias1@host1.example.com>", "<sip:alias3@host3.example.com>"])
        self.assertEqual(m.get_all("C%6Fntact"), ["<sip:alias2@host2.example.com>"])
        self.assertIn("c%6fntact", m.header_names())

    def test_lwsdisp(self) -> None:
        """3.1.1.6: no LWS between display name and <."""
        m = parse(load("lwsdisp.dat"))
        sender = m.name_addr("from")
        self.assertEqual((sender.display, str(sender.uri), sender.tag), ("caller", "sip:caller@example.com", "323"))

    def test_longreq(self) -> None:
        """3.1.1.7: long display name, long parameter names and values, a
        long tag, a long Call-ID, 34 Via values under every spelling."""
        m = parse(load("longreq.dat"))
        to = m.name_addr("to")
        self.assertEqual(to.display, '"I have a user name of ' + "extreme" * 10 + ' proportion"')
        self.assertEqual((to.uri.user, to.uri.host, to.uri.port), ("user", "example.com", 6000))
        self.assertEqual(to.uri.param("unknownparam1"), "very" + "long" * 20 + "value")
        self.assertEqual(to.uri.param("longparam" + "name" * 25), "shortvalue")
        self.assertEqual(to.uri.param("very" + "long" * 25 + "ParameterNameWithNoValue"), "")
        self.assertIsNone(to.tag)
        sender = m.name_addr("f")
        self.assertEqual(sender.uri.user, "amazinglylongcallername" * 5)
        self.assertEqual(sender.tag, "1" + "298" * 50 + "2424")
        self.assertEqual(sender.param("unknownheaderparam" + "name" * 20), "unknowheaderparam" + "value" * 15)
        self.assertEqual(sender.param("unknownValueless" + "paramname" * 10), "")
        self.assertEqual(m.call_id, "longreq.one" + "really" * 20 + "longcallid")
        long_name = "Unknown-" + "Long" * 20 + "-Name"
        self.assertEqual(
            m.get(long_name),
            "unknown-" + "long" * 20 + "-value; unknown-" + "long" * 20 + "-parameter-name = unknown-"
            + "long" * 20 + "-parameter-value",
        )
        vias = [parse_via(v) for v in m.get_all("via")]
        self.assertEqual(len(vias), 34)
        self.assertEqual([v.host for v in vias[:33]], [f"sip{n}.example.com" for n in range(33, 0, -1)])
        self.assertEqual(m.top_via().host, "sip33.example.com")
        last = vias[-1]
        self.assertEqual(last.host, "host.example.com")
        self.assertEqual(last.param("received"), "192.0.2.5")
        self.assertEqual(last.branch, "very" + "long" * 50 + "branchvalue")
        self.assertEqual(m.name_addr("contact").uri.user, "amazinglylongcallername" * 5)
        self.assertEqual(m.cseq, (3882340, "INVITE"))
        self.assertEqual(len(m.body), 150)

    def test_dblreq(self) -> None:
        """3.1.1.8: the octets after the REGISTER are noise on UDP."""
        data = load("dblreq.dat")
        m = parse(data)
        self.assertEqual(m.method, "REGISTER")
        self.assertEqual(m.call_id, "dblreq.0ha0isndaksdj99sdfafnl3lk233412")  # compact "I:"
        self.assertEqual(m.body, b"")
        self.assertNotIn(b"INVITE", bytes(m))
        self.assertEqual(bytes(m), data[: data.index(b"\r\n\r\n") + 4])
        self.assertEqual(m.cseq, (8, "REGISTER"))

    def test_semiuri(self) -> None:
        """3.1.1.9: the user part is user;par=u@example.net."""
        m = parse(load("semiuri.dat"))
        uri = m.parsed_uri()
        self.assertEqual(unquote(uri.user), "user;par=u@example.net")
        self.assertEqual((uri.host, uri.params), ("example.com", []))
        self.assertEqual(
            m.get_all("accept"),
            ["application/sdp", "application/pkcs7-mime", "multipart/mixed", "multipart/signed",
             "message/sip", "message/sipfrag"],
        )

    def test_transports(self) -> None:
        """3.1.1.10: known and unknown transports in Via."""
        m = parse(load("transports.dat"))
        vias = [parse_via(v) for v in m.get_all("via")]
        self.assertEqual([v.transport for v in vias], ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"])
        self.assertEqual([v.host for v in vias], [f"t{n}.example.com" for n in range(1, 6)])
        self.assertEqual(m.call_id, "transports.kijh4akdnaqjkwendsasfdj")

    def test_mpart01(self) -> None:
        """3.1.1.11: a multipart body with binary octets, NULs included,
        framed by Content-Length and kept exact."""
        data = load("mpart01.dat")
        m = parse(data)
        self.assertEqual(m.method, "MESSAGE")
        self.assertEqual(len(m.body), 553)
        self.assertEqual(m.body, data[data.index(b"\r\n\r\n") + 4 :])
        self.assertIn(b"\x00", m.body)
        self.assertTrue(m.body.endswith(b"--7a9cbec02ceef655--\r\n"))
        self.assertEqual(m.get("content-type"), "multipart/mixed;boundary=7a9cbec02ceef655")
        via = m.top_via()
        self.assertEqual((via.host, via.port, via.param("rport")), ("127.0.0.1", 5070, ""))
        self.assertEqual(m.name_addr("route").uri.port, 5080)

    def test_unreason(self) -> None:
        """3.1.1.12: a reason phrase of UTF-8 and reserved characters."""
        data = load("unreason.dat")
        m = parse(data)
        self.assertIsInstance(m, Response)
        self.assertEqual(m.code, 200)
        self.assertEqual(
            m.reason,
            "= 2**3 * 5**2 \u043d\u043e \u0441\u0442\u043e \u0434\u0435\u0432\u044f\u043d\u043e\u0441\u0442\u043e "
            "\u0434\u0435\u0432\u044f\u0442\u044c - \u043f\u0440\u043e\u0441\u0442\u043e\u0435",
        )
        self.assertEqual(bytes(m).split(b"\r\n")[0], data.split(b"\r\n")[0])
        self.assertEqual(m.method, "INVITE")

    def test_noreason(self) -> None:
        """3.1.1.13: an empty reason phrase."""
        m = parse(load("noreason.dat"))
        self.assertEqual((m.code, m.reason), (100, ""))
        self.assertTrue(bytes(m).startswith(b"SIP/2.0 100 \r\n"))


# -- transaction, application and compatibility semantics ------------------------
class SemanticsTortureTests(SynchronousTestCase):
    """3.2-3.4: parse, then give the element what it needs to apply the
    semantics the RFC describes."""

    def test_badbranch(self) -> None:
        """3.2.1: the magic cookie and nothing else is no RFC 3261
        transaction id."""
        m = parse(load("badbranch.dat"))
        via = m.top_via()
        self.assertEqual(via.branch, "z9hG4bK")
        self.assertFalse(via.rfc3261_branch)
        self.assertEqual(bytes(m), load("badbranch.dat"))

    def test_insuf(self) -> None:
        """3.3.1: no Call-ID, From or To: refused, but with the request
        parsed far enough to send the 400."""
        err = self.assertRaises(ParseError, parse, load("insuf.dat"))
        self.assertEqual(err.status, 400)
        self.assertTrue(any(w in err.reason for w in ("From", "To", "Call-ID")), err.reason)
        self.assertIn("missing", err.reason)
        request = err.message
        self.assertIsInstance(request, Request)
        self.assertEqual(request.method, "INVITE")
        self.assertEqual(request.top_via().branch, "z9hG4bKkdj.insuf")
        response = request.create_response(400, err.reason)
        wire = bytes(response)
        self.assertTrue(wire.startswith(b"SIP/2.0 400 "))
        self.assertIn(b"\r\nVia: SIP/2.0/UDP 192.0.2.95;branch=z9hG4bKkdj.insuf\r\n", wire)
        self.assertIn(b"\r\nCSeq: 193942 INVITE\r\n", wire)

    def test_unkscm(self) -> None:
        """3.3.2: unknown Request-URI scheme: parsed, not SIP (416)."""
        m = parse(load("unkscm.dat"))
        uri = m.parsed_uri()
        self.assertEqual(uri.scheme, "nobodyknowsthisscheme")
        self.assertFalse(uri.is_sip)
        self.assertEqual(uri.opaque, "totallyopaquecontent")
        self.assertEqual(str(uri), "nobodyKnowsThisScheme:totallyopaquecontent")
        # the To header is SIP, but must not be used to route
        self.assertTrue(m.name_addr("to").uri.is_sip)

    def test_novelsc(self) -> None:
        """3.3.3: a registered but atypical scheme."""
        uri = parse(load("novelsc.dat")).parsed_uri()
        self.assertEqual(uri.scheme, "soap.beep")
        self.assertFalse(uri.is_sip)
        self.assertEqual(str(uri), "soap.beep://192.0.2.103:3002")

    def test_unksm2(self) -> None:
        """3.3.4: non-SIP schemes in To, From and Contact."""
        m = parse(load("unksm2.dat"))
        self.assertEqual(m.name_addr("to").uri.scheme, "isbn")
        self.assertEqual(str(m.name_addr("to").uri), "isbn:2983792873")
        sender = m.name_addr("from")
        self.assertEqual((sender.uri.scheme, sender.tag), ("http", "3234233"))
        contact = m.name_addr("contact").uri
        self.assertEqual((contact.scheme, contact.opaque), ("name", "John_Smith"))
        self.assertFalse(any(parse_name_addr(v).uri.is_sip for v in (m.get("to"), m.get("from"), m.get("contact"))))

    def test_bext01(self) -> None:
        """3.3.5: the Require and Proxy-Require option tags (420)."""
        m = parse(load("bext01.dat"))
        self.assertEqual(m.get_all("require"), ["nothingSupportsThis", "nothingSupportsThisEither"])
        self.assertEqual(m.get_all("proxy-require"), ["noProxiesSupportThis", "norDoAnyProxiesSupportThis"])
        self.assertEqual(m.top_via().transport, "TLS")

    def test_invut(self) -> None:
        """3.3.6: a body of unknown type, kept as is."""
        m = parse(load("invut.dat"))
        self.assertEqual(m.get("content-type"), "application/unknownformat")
        self.assertEqual(m.body, b'<audio>\r\n <pcmu port="443"/>\r\n</audio>\r\n')

    def test_regaut01(self) -> None:
        """3.3.7: an Authorization of unknown scheme is forwarded
        unmodified."""
        data = load("regaut01.dat")
        m = parse(data)
        self.assertEqual(m.get("authorization"), "NoOneKnowsThisScheme opaque-data=here")
        self.assertEqual(m.raw_lines("authorization"), [b"Authorization: NoOneKnowsThisScheme opaque-data=here"])
        self.assertEqual(m.get("content-length"), "0")  # "Content-Length:0"
        m.insert("via", "SIP/2.0/UDP proxy.example.net;branch=z9hG4bKadded")
        self.assertIn(b"\r\nAuthorization: NoOneKnowsThisScheme opaque-data=here\r\n", bytes(m))

    def test_multi01(self) -> None:
        """3.3.8: several values in single-valued fields: 400."""
        err = self.assertRaises(ParseError, parse, load("multi01.dat"))
        self.assertIn("conflicting", err.reason)
        self.assertTrue(any(w in err.reason for w in ("Call-ID", "CSeq", "From", "To", "Max-Forwards")), err.reason)
        self.assertIsInstance(err.message, Request)
        self.assertEqual(err.message.top_via().branch, "z9hG4bKkdjuw")

    def test_mcl01(self) -> None:
        """3.3.9: two different Content-Lengths cannot frame the message."""
        for stream in (False, True):
            err = self.assertRaises(ParseError, parse, load("mcl01.dat"), stream=stream)
            self.assertIn("Content-Length", err.reason)
            self.assertIsInstance(err.message, Request)

    def test_bcast(self) -> None:
        """3.3.10: a broadcast address in the second Via is read as such."""
        m = parse(load("bcast.dat"))
        self.assertIsInstance(m, Response)
        vias = [parse_via(v) for v in m.get_all("via")]
        self.assertEqual([v.host for v in vias], ["192.0.2.198", "255.255.255.255"])
        self.assertEqual(vias[1].branch, "z9hG4bK1saber23")
        self.assertEqual(m.method, "INVITE")

    def test_zeromf(self) -> None:
        """3.3.11: Max-Forwards 0 is valid (a proxy answers 483)."""
        m = parse(load("zeromf.dat"))
        self.assertEqual(m.get("max-forwards"), "0")

    def test_cparam01(self) -> None:
        """3.3.12: unbracketed Contact: unknownparam is a contact param."""
        contact = parse(load("cparam01.dat")).name_addr("contact")
        self.assertFalse(contact.bracketed)
        self.assertEqual(contact.uri.params, [])
        self.assertEqual(contact.params, [("unknownparam", None)])
        self.assertEqual(str(contact.uri), "sip:+19725552222@gw1.example.net")

    def test_cparam02(self) -> None:
        """3.3.13: bracketed Contact: unknownparam is a URI param."""
        contact = parse(load("cparam02.dat")).name_addr("contact")
        self.assertTrue(contact.bracketed)
        self.assertEqual(contact.uri.params, [("unknownparam", None)])
        self.assertEqual(contact.params, [])

    def test_regescrt(self) -> None:
        """3.3.14: a bracketed Contact URI with an escaped Route header is
        a legal binding that keeps its header."""
        m = parse(load("regescrt.dat"))
        self.assertNotIn("route", m)
        contact = m.name_addr("m")
        self.assertEqual(contact.uri.headers, [("Route", "%3Csip:sip.example.com%3E")])
        self.assertEqual(unquote(contact.uri.headers[0][1]), "<sip:sip.example.com>")
        self.assertEqual(str(contact.uri), "sip:user@example.com?Route=%3Csip:sip.example.com%3E")
        self.assertEqual(contact.uri.address_of_record, "sip:user@example.com")
        self.assertEqual(m.get("l"), "0")

    def test_sdp01(self) -> None:
        """3.3.15: an Accept without application/sdp."""
        m = parse(load("sdp01.dat"))
        self.assertEqual(m.get_all("accept"), ["text/nobodyKnowsThis"])
        self.assertEqual(m.get("content-type"), "application/sdp")
        self.assertEqual(len(m.body), 150)

    def test_inv2543(self) -> None:
        """3.4.1: RFC 2543 syntax: no branch, no From tag, no
        Max-Forwards, no Content-Length (the body is the rest of the
        datagram); accepted."""
        data = load("inv2543.dat")
        m = parse(data)
        via = m.top_via()
        self.assertIsNone(via.branch)
        self.assertFalse(via.rfc3261_branch)
        self.assertEqual(via.host, "iftgw.example.com")
        self.assertIsNone(m.from_tag)
        self.assertNotIn("max-forwards", m)
        self.assertNotIn("content-length", m)
        self.assertEqual(m.body, data[data.index(b"\r\n\r\n") + 4 :])
        self.assertEqual(m.name_addr("from").uri.param("user"), "phone")
        # forwarded with the length stated, everything else untouched
        self.assertEqual(bytes(m), data[: data.index(b"\r\n\r\n")] + b"\r\nContent-Length: %d\r\n\r\n" % len(m.body) + m.body)
        # a stream cannot frame it
        err = self.assertRaises(ParseError, parse, data, stream=True)
        self.assertIn("Content-Length", err.reason)


# -- the tally ------------------------------------------------------------------
class TallyTests(SynchronousTestCase):
    def test_tally(self) -> None:
        """All valid accepted, all invalid refused, nothing crashes."""
        accepted = refused = 0
        valid = files_of("valid")
        invalid = files_of("invalid")
        for name in valid:
            try:
                message = parse(load(name))
            except ParseError:
                continue
            if bytes(message) == framed(load(name)):
                accepted += 1
        for name in invalid:
            try:
                parse(load(name))
            except ParseError:
                refused += 1
        self.assertEqual((accepted, len(valid)), (13, 13))
        self.assertEqual((refused, len(invalid)), (14, 14))
        for name in files_of("lenient") + files_of("transaction") + files_of("application") + files_of("compat"):
            try:
                parse(load(name))
            except ParseError:
                pass
