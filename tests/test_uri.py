"""Unit tests of sipproxy.sip.uri: URIs, name-addr values, and RFC 3261
19.1.4 comparison."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from sipproxy.sip.uri import (
    URI,
    NameAddr,
    URIError,
    format_host_port,
    format_params,
    is_ip_address,
    parse_name_addr,
    parse_params,
    parse_uri,
    split_host_port,
    uri_equal,
)


class SipURITests(SynchronousTestCase):
    def test_all_parts(self) -> None:
        text = "sip:alice:secret@atlanta.com:5070;transport=tcp;lr?subject=project%20x&priority=urgent"
        uri = parse_uri(text)
        self.assertEqual((uri.scheme, uri.user, uri.password, uri.host, uri.port),
                         ("sip", "alice", "secret", "atlanta.com", 5070))
        self.assertEqual(uri.params, [("transport", "tcp"), ("lr", None)])
        self.assertEqual(uri.headers, [("subject", "project%20x"), ("priority", "urgent")])
        self.assertIsNone(uri.opaque)
        self.assertTrue(uri.is_sip)
        self.assertEqual(str(uri), text)
        self.assertEqual(repr(uri), f"URI({text!r})")
        self.assertEqual(uri.host_port, "atlanta.com:5070")

    def test_minimal(self) -> None:
        uri = parse_uri("sip:example.com")
        self.assertEqual((uri.user, uri.password, uri.host, uri.port, uri.params, uri.headers),
                         (None, None, "example.com", None, [], []))

    def test_sips_and_case(self) -> None:
        uri = parse_uri("SIPS:Bob@Biloxi.COM")
        self.assertEqual((uri.scheme, uri.user, uri.host), ("sips", "Bob", "Biloxi.COM"))
        self.assertEqual(str(uri), "SIPS:Bob@Biloxi.COM")  # the original text, spelling and all

    def test_params(self) -> None:
        uri = parse_uri("sip:a@b.example.com;Transport=TCP;maddr=239.255.255.1;ttl=15;lr;user=phone")
        self.assertEqual(uri.param("transport"), "TCP")
        self.assertEqual(uri.param("TRANSPORT"), "TCP")
        self.assertEqual(uri.transport, "tcp")
        self.assertEqual(uri.maddr, "239.255.255.1")
        self.assertEqual(uri.param("lr"), "")
        self.assertTrue(uri.has_param("LR"))
        self.assertFalse(uri.has_param("method"))
        self.assertIsNone(uri.param("method"))
        self.assertIsNone(parse_uri("sip:a@b").transport)
        self.assertIsNone(parse_uri("sip:a@b;maddr").maddr)

    def test_user_part_characters(self) -> None:
        uri = parse_uri("sip:+1-212-555-1212;isub=1411;postd=pp22@gateway.com;user=phone")
        self.assertEqual(uri.user, "+1-212-555-1212;isub=1411;postd=pp22")
        self.assertEqual(uri.params, [("user", "phone")])
        uri = parse_uri("sip:%61lice%20x@atlanta.com")
        self.assertEqual(uri.user, "%61lice%20x")  # kept escaped; compare or AOR to unescape

    def test_ipv6(self) -> None:
        uri = parse_uri("sip:[2001:db8::10]")
        self.assertEqual((uri.host, uri.port, uri.host_port), ("2001:db8::10", None, "[2001:db8::10]"))
        self.assertEqual(str(uri), "sip:[2001:db8::10]")
        uri = parse_uri("sip:alice@[2001:db8::10]:5070;maddr=[2001:db8::1];transport=udp")
        self.assertEqual((uri.user, uri.host, uri.port), ("alice", "2001:db8::10", 5070))
        self.assertEqual(uri.maddr, "[2001:db8::1]")
        self.assertEqual(uri.host_port, "[2001:db8::10]:5070")
        self.assertEqual(parse_uri("sips:[::1]").effective_port, 5061)
        self.assertEqual(str(parse_uri("sip:[::1]:5060").replace(port=5070)), "sip:[::1]:5070")

    def test_ipv4(self) -> None:
        uri = parse_uri("sip:192.0.2.4:5062")
        self.assertEqual((uri.host, uri.port), ("192.0.2.4", 5062))

    def test_malformed(self) -> None:
        for text in ("", "sip:", "sip:@host.com", "sip:user@", "sip:host.com:", "sip:host.com:70000",
                     "sip:host.com:-1", "sip:host.com:5o60", "sip:ho st.com", "sip:<host.com>", "sip:host.com>",
                     'sip:"host"', "no-scheme", "1sip:host", "sip:host.com;=x", "sip:host.com;a;;b",
                     "sip:[2001:db8::1", "sip:[2001:db8::zz]", "sip:[1:2:3:4]", "sip:[::1]x", "sip:host.com?",
                     "sip:host.com?=v", "sip:a@b@c.com", "sip:ho/st", "tel:", "urn:with space", "http:"):
            self.assertRaises(URIError, parse_uri, text)

    def test_surrounding_whitespace(self) -> None:
        uri = parse_uri("  sip:a@b.com\t")
        self.assertEqual(str(uri), "sip:a@b.com")

    def test_effective_port(self) -> None:
        self.assertEqual(parse_uri("sip:a@b").effective_port, 5060)
        self.assertEqual(parse_uri("sips:a@b").effective_port, 5061)
        self.assertEqual(parse_uri("sip:a@b;transport=TLS").effective_port, 5061)
        self.assertEqual(parse_uri("sip:a@b;transport=tcp").effective_port, 5060)
        self.assertEqual(parse_uri("sip:a@b:5080").effective_port, 5080)
        self.assertEqual(parse_uri("sips:a@b:5080").effective_port, 5080)

    def test_address_of_record(self) -> None:
        cases = {
            "sip:Alice@AtLanta.COM:5070;transport=tcp;user=phone?x=y": "sip:Alice@atlanta.com:5070",
            "sip:%61lice@atlanta.com": "sip:alice@atlanta.com",
            "SIPS:bob@Biloxi.com;lr": "sips:bob@biloxi.com",
            "sip:Example.COM;lr": "sip:example.com",
            "sip:alice:secret@atlanta.com": "sip:alice@atlanta.com",
            "sip:alice@[2001:DB8::1]:5060": "sip:alice@[2001:db8::1]:5060",
            "tel:+1-201-555-0123;phone-context=example.com": "tel:+1-201-555-0123",
        }
        for text, aor in cases.items():
            self.assertEqual(parse_uri(text).address_of_record, aor, text)
        # the user part is case-sensitive, the host is not
        self.assertNotEqual(parse_uri("sip:Bob@h").address_of_record, parse_uri("sip:bob@h").address_of_record)
        self.assertEqual(parse_uri("sip:bob@H").address_of_record, parse_uri("sip:bob@h").address_of_record)

    def test_with_param(self) -> None:
        uri = parse_uri("sip:a@b.com;transport=udp;lr")
        changed = uri.with_param("TRANSPORT", "tcp")
        self.assertEqual(str(changed), "sip:a@b.com;lr;TRANSPORT=tcp")
        self.assertEqual(changed.transport, "tcp")
        self.assertEqual(str(uri), "sip:a@b.com;transport=udp;lr")  # original untouched
        self.assertEqual(uri.params, [("transport", "udp"), ("lr", None)])
        self.assertEqual(str(parse_uri("sip:a@b.com").with_param("lr")), "sip:a@b.com;lr")
        self.assertEqual(str(parse_uri("sip:a@b.com?h=1").with_param("x", "1")), "sip:a@b.com;x=1?h=1")

    def test_without_params(self) -> None:
        uri = parse_uri("sip:a@b.com:5070;transport=udp;LR;maddr=m.example.com?h=1")
        self.assertEqual(str(uri.without_params("lr", "maddr")), "sip:a@b.com:5070;transport=udp?h=1")
        self.assertEqual(str(uri.without_params()), "sip:a@b.com:5070")
        self.assertEqual(str(uri), "sip:a@b.com:5070;transport=udp;LR;maddr=m.example.com?h=1")

    def test_replace_and_copy(self) -> None:
        uri = parse_uri("sip:a@b.com;lr")
        self.assertEqual(str(uri.replace(user="c", host="d.com", port=5070)), "sip:c@d.com:5070;lr")
        self.assertEqual(str(uri.replace(user=None)), "sip:b.com;lr")
        self.assertRaises(TypeError, uri.replace, colour="red")
        self.assertRaises(TypeError, uri.replace, _text="x")
        copy = uri.copy()
        copy.params.append(("x", "1"))
        self.assertEqual(uri.params, [("lr", None)])
        self.assertEqual(str(uri), "sip:a@b.com;lr")

    def test_build(self) -> None:
        uri = URI("SIP", user="bob", host="2001:db8::1", port=5060, params=[("transport", "tcp")],
                  headers=[("subject", "hi")], password="pw")
        self.assertEqual(str(uri), "sip:bob:pw@[2001:db8::1]:5060;transport=tcp?subject=hi")
        self.assertEqual(parse_uri(str(uri)), uri)


class OtherSchemeTests(SynchronousTestCase):
    def test_tel(self) -> None:
        uri = parse_uri("tel:+1-201-555-0123;phone-context=example.com")
        self.assertEqual((uri.scheme, uri.user, uri.host, uri.opaque), ("tel", "+1-201-555-0123", "", None))
        self.assertEqual(uri.param("phone-context"), "example.com")
        self.assertFalse(uri.is_sip)
        self.assertEqual(str(uri), "tel:+1-201-555-0123;phone-context=example.com")
        self.assertEqual(str(URI("tel", user="+4930123", params=[("ext", "7")])), "tel:+4930123;ext=7")

    def test_unknown_schemes(self) -> None:
        for text, scheme, opaque in (("urn:service:sos", "urn", "service:sos"),
                                     ("http://www.example.com/x?y=1", "http", "//www.example.com/x?y=1"),
                                     ("nobodyKnowsThisScheme:totallyopaquecontent", "nobodyknowsthisscheme",
                                      "totallyopaquecontent"),
                                     ("soap.beep://192.0.2.103:3002", "soap.beep", "//192.0.2.103:3002")):
            uri = parse_uri(text)
            self.assertEqual((uri.scheme, uri.opaque), (scheme, opaque))
            self.assertFalse(uri.is_sip)
            self.assertEqual(str(uri), text)
            self.assertEqual(uri.params, [])

    def test_unknown_scheme_comparison(self) -> None:
        self.assertEqual(parse_uri("URN:service:sos"), parse_uri("urn:service:sos"))
        self.assertNotEqual(parse_uri("urn:service:sos"), parse_uri("urn:service:police"))
        self.assertNotEqual(parse_uri("urn:x"), parse_uri("sip:x"))


class HelperTests(SynchronousTestCase):
    def test_split_host_port(self) -> None:
        self.assertEqual(split_host_port("example.com"), ("example.com", None))
        self.assertEqual(split_host_port("example.com:5070"), ("example.com", 5070))
        self.assertEqual(split_host_port("[2001:db8::1]:5070"), ("2001:db8::1", 5070))
        self.assertEqual(split_host_port("[2001:db8::1]"), ("2001:db8::1", None))
        self.assertEqual(split_host_port("2001:db8::1"), ("2001:db8::1", None))
        for bad in ("h:", "h:99999", "[::1", "[::1]5060", "h:x"):
            self.assertRaises(URIError, split_host_port, bad)

    def test_format_host_port(self) -> None:
        self.assertEqual(format_host_port("2001:db8::1", 5060), "[2001:db8::1]:5060")
        self.assertEqual(format_host_port("[2001:db8::1]"), "[2001:db8::1]")
        self.assertEqual(format_host_port("example.com"), "example.com")
        self.assertEqual(format_host_port("192.0.2.1", 0), "192.0.2.1:0")

    def test_is_ip_address(self) -> None:
        for yes in ("192.0.2.1", "::1", "[2001:db8::1]", "255.255.255.255"):
            self.assertTrue(is_ip_address(yes), yes)
        for no in ("example.com", "192.0.2", "[example.com]", "", "1.2.3.256"):
            self.assertFalse(is_ip_address(no), no)

    def test_parse_params(self) -> None:
        self.assertEqual(parse_params(" ; a = 1 ; b ; c=\"x;y\" ;D=Z"),
                         [("a", "1"), ("b", None), ("c", '"x;y"'), ("D", "Z")])
        self.assertEqual(parse_params("a=1"), [("a", "1")])
        self.assertEqual(parse_params(""), [])
        self.assertEqual(parse_params("a="), [("a", "")])
        for bad in (";;a", "a;;b", "a;", ";=1", ";a b=1", ';a="open'):
            self.assertRaises(URIError, parse_params, bad)
        self.assertEqual(parse_params("a;;b;=x", strict=False), [("a", None), ("b", None)])

    def test_format_params(self) -> None:
        self.assertEqual(format_params([("a", "1"), ("lr", None), ("b", "")]), ";a=1;lr;b=")
        self.assertEqual(format_params([]), "")


class NameAddrTests(SynchronousTestCase):
    def test_quoted_display(self) -> None:
        addr = parse_name_addr('"Alice Smith" <sip:alice@atlanta.com>;tag=1928301774')
        self.assertEqual(addr.display, '"Alice Smith"')
        self.assertEqual(str(addr.uri), "sip:alice@atlanta.com")
        self.assertEqual(addr.params, [("tag", "1928301774")])
        self.assertEqual(addr.tag, "1928301774")
        self.assertTrue(addr.bracketed)

    def test_quoted_display_with_escapes_commas_and_brackets(self) -> None:
        addr = parse_name_addr('"a \\"quoted\\" <name>, too" <sip:a@b.com>')
        self.assertEqual(addr.display, '"a \\"quoted\\" <name>, too"')
        self.assertEqual(str(addr.uri), "sip:a@b.com")

    def test_token_display(self) -> None:
        for text, display in (("Bob <sip:bob@b.com>", "Bob"), ("Bob  Builder <sip:bob@b.com>", "Bob  Builder"),
                              ("caller<sip:caller@example.com>", "caller"), ("<sip:bob@b.com>", None),
                              ("  <sip:bob@b.com>", None)):
            addr = parse_name_addr(text)
            self.assertEqual(addr.display, display, text)
            self.assertEqual(str(addr.uri), text[text.index("<") + 1 : text.index(">")])
            self.assertEqual(addr.params, [])

    def test_bracketed_params_split(self) -> None:
        addr = parse_name_addr("<sip:a@b.com;transport=tcp?h=v>;expires=60;q=0.5")
        self.assertEqual(addr.uri.params, [("transport", "tcp")])
        self.assertEqual(addr.uri.headers, [("h", "v")])
        self.assertEqual(addr.params, [("expires", "60"), ("q", "0.5")])
        self.assertEqual(addr.param("EXPIRES"), "60")
        self.assertIsNone(addr.tag)

    def test_no_brackets_params_belong_to_header(self) -> None:
        """RFC 3261 20.10: without <>, every ;param is a header param."""
        addr = parse_name_addr("sip:alice@atlanta.com;transport=tcp;tag=88sja8x")
        self.assertEqual(str(addr.uri), "sip:alice@atlanta.com")
        self.assertEqual(addr.uri.params, [])
        self.assertEqual(addr.params, [("transport", "tcp"), ("tag", "88sja8x")])
        self.assertEqual(addr.tag, "88sja8x")
        self.assertFalse(addr.bracketed)
        self.assertIsNone(addr.display)
        spaced = parse_name_addr("sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n")
        self.assertEqual((str(spaced.uri), spaced.tag), ("sip:vivekg@chair-dnrc.example.com", "1918181833n"))

    def test_tags(self) -> None:
        self.assertIsNone(parse_name_addr("<sip:a@b>;tag").tag)
        self.assertIsNone(parse_name_addr("<sip:a@b>;tag=").tag)
        self.assertEqual(parse_name_addr("<sip:a@b>;TAG=x").tag, "x")
        self.assertIsNone(parse_name_addr("<sip:a@b;tag=inside>").tag)  # a URI param is not the tag

    def test_other_schemes(self) -> None:
        self.assertEqual(parse_name_addr("<tel:+1234>;x").uri.scheme, "tel")
        self.assertEqual(parse_name_addr("isbn:2983792873").uri.opaque, "2983792873")

    def test_str_gives_original(self) -> None:
        for text in ('"A"   <sip:a@b.com> ; tag = 1', "Bob<sip:b@c.com>", "sip:a@b.com ; tag = 7", '"x"<sip:y@z>'):
            self.assertEqual(str(parse_name_addr(text)), text)
        self.assertEqual(str(parse_name_addr("  <sip:a@b>  ")), "<sip:a@b>")

    def test_with_param_and_replace(self) -> None:
        addr = parse_name_addr('"A" <sip:a@b.com>;tag=1')
        self.assertEqual(str(addr.with_param("tag", "2")), '"A" <sip:a@b.com>;tag=2')
        self.assertEqual(str(addr), '"A" <sip:a@b.com>;tag=1')
        self.assertEqual(str(addr.replace(display=None)), "<sip:a@b.com>;tag=1")
        self.assertRaises(TypeError, addr.replace, tag="x")
        unbracketed = parse_name_addr("sip:a@b.com")
        self.assertEqual(str(unbracketed.with_param("tag", "9")), "sip:a@b.com;tag=9")
        self.assertEqual(parse_name_addr(str(unbracketed.with_param("tag", "9"))).tag, "9")

    def test_build_brackets_when_needed(self) -> None:
        self.assertEqual(str(NameAddr(parse_uri("sip:a@b;lr"))), "<sip:a@b;lr>")
        # params on the URI force brackets, or they would turn into header params
        self.assertEqual(str(NameAddr(parse_uri("sip:a@b;lr"), bracketed=False)), "<sip:a@b;lr>")
        self.assertEqual(str(NameAddr(parse_uri("sip:a@b?h=1"), bracketed=False)), "<sip:a@b?h=1>")
        self.assertEqual(str(NameAddr(parse_uri("sip:a@b"), bracketed=False, params=[("tag", "1")])), "sip:a@b;tag=1")
        self.assertEqual(str(NameAddr(parse_uri("sip:a@b"), display='"A"', params=[("tag", "1")])), '"A" <sip:a@b>;tag=1')
        for addr in (NameAddr(parse_uri("sip:a@b;lr"), bracketed=False),
                     NameAddr(parse_uri("sip:a@b;maddr=x"), display="Me", params=[("expires", "1")])):
            again = parse_name_addr(str(addr))
            self.assertEqual(again.uri.params, addr.uri.params)
            self.assertEqual(again.params, addr.params)
        self.assertEqual(repr(NameAddr(parse_uri("sip:a@b"))), "NameAddr('<sip:a@b>')")

    def test_malformed(self) -> None:
        for text in ('"unterminated <sip:a@b>', "<sip:a@b", "sip:a@b>", '"x" sip:a@b', '"x"', "Bob <sip:a@b> junk",
                     "<sip:a@b>tag=1", "<sip:a@b>;;", "*", "", "Mr \"X <sip:a@b>", "<>", "<sip:a@b> <sip:c@d>",
                     "sip:user@example.com?Route=%3Csip:sip.example.com%3E",
                     "sip:user@example.com?Route=%3Csip:x%3E;tag=1"):
            self.assertRaises(URIError, parse_name_addr, text)


# -- RFC 3261 19.1.4 -------------------------------------------------------------------------------
#: The sets the RFC lists as equivalent.
EQUIVALENT = [
    ["sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"],
    ["sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5", "sip:carol@chicago.com;security=on"],
    ["sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
     "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com"],
    ["sip:alice@atlanta.com?subject=project%20x&priority=urgent",
     "sip:alice@atlanta.com?priority=urgent&subject=project%20x"],
]

#: The pairs the RFC lists as not equivalent, with its reasons.
NOT_EQUIVALENT = [
    ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"),  # different usernames
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),  # can resolve to different ports
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),  # can resolve to different transports
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:6000;transport=tcp"),  # different port and transport
    ("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting"),  # different header component
    ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),  # even if that is what the name resolves to
]


class ComparisonTests(SynchronousTestCase):
    def test_rfc_equivalent_sets(self) -> None:
        for group in EQUIVALENT:
            for a in group:
                for b in group:
                    ua, ub = parse_uri(a), parse_uri(b)
                    self.assertTrue(uri_equal(ua, ub), f"{a} == {b}")
                    self.assertEqual(ua, ub)
                    self.assertEqual(hash(ua), hash(ub))

    def test_rfc_not_equivalent_pairs(self) -> None:
        for a, b in NOT_EQUIVALENT:
            ua, ub = parse_uri(a), parse_uri(b)
            self.assertFalse(uri_equal(ua, ub), f"{a} != {b}")
            self.assertFalse(uri_equal(ub, ua), f"{b} != {a}")
            self.assertNotEqual(ua, ub)

    def test_not_transitive(self) -> None:
        """The RFC's example: on and off each match the bare URI, but not
        each other."""
        bare = parse_uri("sip:carol@chicago.com")
        on = parse_uri("sip:carol@chicago.com;security=on")
        off = parse_uri("sip:carol@chicago.com;security=off")
        self.assertTrue(uri_equal(bare, on))
        self.assertTrue(uri_equal(bare, off))
        self.assertFalse(uri_equal(on, off))

    def test_must_match_params(self) -> None:
        """user, ttl, method and maddr (and transport) in one URI only
        never match, even with the default value."""
        for param in ("user=phone", "ttl=1", "method=INVITE", "maddr=239.255.255.1", "transport=udp"):
            self.assertFalse(uri_equal(parse_uri("sip:a@b.com"), parse_uri(f"sip:a@b.com;{param}")), param)
            self.assertTrue(uri_equal(parse_uri(f"sip:a@b.com;{param}"), parse_uri(f"sip:a@b.com;{param.upper()}")))

    def test_userinfo_case_sensitive_and_escapes(self) -> None:
        self.assertFalse(uri_equal(parse_uri("sip:alice@a.com"), parse_uri("sip:Alice@a.com")))
        self.assertFalse(uri_equal(parse_uri("sip:a:pw@a.com"), parse_uri("sip:a:PW@a.com")))
        self.assertFalse(uri_equal(parse_uri("sip:a:pw@a.com"), parse_uri("sip:a@a.com")))
        self.assertFalse(uri_equal(parse_uri("sip:a.com"), parse_uri("sip:a@a.com")))
        self.assertTrue(uri_equal(parse_uri("sip:%61%6c%69ce@a.com"), parse_uri("sip:alice@a.com")))
        self.assertTrue(uri_equal(parse_uri("sip:a%3Bb@h"), parse_uri("sip:a%3bb@h")))
        # a reserved character is not equivalent to its escape
        self.assertFalse(uri_equal(parse_uri("sip:a%3Bb@h"), parse_uri("sip:a;b@h")))
        self.assertFalse(uri_equal(parse_uri("sip:a%2Bb@h"), parse_uri("sip:a+b@h")))
        # and unescaping is one level deep (RFC 4475 3.1.1.3)
        self.assertFalse(uri_equal(parse_uri("sip:a%2541@h"), parse_uri("sip:aA@h")))
        self.assertFalse(uri_equal(parse_uri("sip:a%2541@h"), parse_uri("sip:a%41@h")))

    def test_escaped_param_names(self) -> None:
        contact = parse_uri("sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31")
        self.assertTrue(uri_equal(contact, parse_uri("sip:caller@host5.example.net;lr;name=value%2541")))
        self.assertFalse(uri_equal(contact, parse_uri("sip:caller@host5.example.net;name=valueA")))
        self.assertFalse(uri_equal(parse_uri("sip:a@h;%74ransport=tcp"), parse_uri("sip:a@h")))
        self.assertTrue(uri_equal(parse_uri("sip:a@h;%74ransport=tcp"), parse_uri("sip:a@h;transport=TCP")))

    def test_headers_never_ignored(self) -> None:
        self.assertFalse(uri_equal(parse_uri("sip:a@h?x=1"), parse_uri("sip:a@h?x=2")))
        self.assertFalse(uri_equal(parse_uri("sip:a@h?x=1&y=2"), parse_uri("sip:a@h?x=1")))
        self.assertTrue(uri_equal(parse_uri("sip:a@h?X=1"), parse_uri("sip:a@h?x=1")))

    def test_scheme_and_host(self) -> None:
        self.assertFalse(uri_equal(parse_uri("sip:a@h"), parse_uri("sips:a@h")))
        self.assertTrue(uri_equal(parse_uri("SIP:a@H.COM"), parse_uri("sip:a@h.com")))
        self.assertFalse(uri_equal(parse_uri("sip:a@h.com"), parse_uri("sip:a@h.org")))

    def test_ipv6_hosts_compare_as_addresses(self) -> None:
        a = parse_uri("sip:alice@[2001:db8::1]:5060")
        b = parse_uri("sip:alice@[2001:DB8:0:0:0:0:0:1]:5060")
        self.assertTrue(uri_equal(a, b))
        self.assertEqual(hash(a), hash(b))
        self.assertEqual(len({a, b}), 1)
        self.assertFalse(uri_equal(a, parse_uri("sip:alice@[2001:db8::2]:5060")))

    def test_eq_with_other_types(self) -> None:
        uri = parse_uri("sip:a@b")
        self.assertFalse(uri == "sip:a@b")
        self.assertTrue(uri != "sip:a@b")
        self.assertEqual({uri: 1}[parse_uri("SIP:a@B")], 1)

    def test_tel_comparison(self) -> None:
        self.assertTrue(uri_equal(parse_uri("tel:+1234;phone-context=x"), parse_uri("TEL:+1234;PHONE-CONTEXT=X")))
        self.assertFalse(uri_equal(parse_uri("tel:+1234"), parse_uri("tel:+1235")))


# -- properties ---------------------------------------------------------------------------------------
_UNRESERVED = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!~*'()"
_escape = st.sampled_from(["%20", "%3B", "%3b", "%40", "%61", "%00", "%25", "%C3%A9"])


def _chars(extra: str, min_size: int = 1, max_size: int = 10):
    return st.lists(st.sampled_from(list(_UNRESERVED + extra)) | _escape, min_size=min_size, max_size=max_size).map("".join)


_user = _chars("&=+$,;?/")
_password = _chars("&=+$,", min_size=0)
_label = st.from_regex(r"\A[a-zA-Z0-9]([a-zA-Z0-9-]{0,6}[a-zA-Z0-9])?\Z")
_domain = st.lists(_label, min_size=1, max_size=4).map(".".join)
_ipv4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
_ipv6 = st.ip_addresses(v=6).map(lambda a: f"[{a}]")
_host = st.one_of(_domain, _ipv4, _ipv6)
_pname = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~", min_size=1, max_size=8)
_param = st.tuples(_pname, st.none() | _chars("[]/:&+$", min_size=0))
_header = st.tuples(_chars("[]/?:+$"), _chars("[]/?:+$", min_size=0))


@st.composite
def sip_uri_parts(draw):
    return {
        "scheme": draw(st.sampled_from(["sip", "sips", "SIP", "Sips"])),
        "user": draw(st.none() | _user),
        "password": draw(st.none() | _password),
        "host": draw(_host),
        "port": draw(st.none() | st.integers(0, 65535)),
        "params": draw(st.lists(_param, max_size=4)),
        "headers": draw(st.lists(_header, max_size=3)),
    }


def _text_of(p) -> str:
    userinfo = ""
    if p["user"] is not None:
        userinfo = p["user"] + (":" + p["password"] if p["password"] is not None else "") + "@"
    text = f"{p['scheme']}:{userinfo}{p['host']}" + (f":{p['port']}" if p["port"] is not None else "")
    text += "".join(f";{n}" if v is None else f";{n}={v}" for n, v in p["params"])
    if p["headers"]:
        text += "?" + "&".join(f"{n}={v}" for n, v in p["headers"])
    return text


class URIPropertyTests(SynchronousTestCase):
    @settings(max_examples=400, deadline=None)
    @given(sip_uri_parts())
    def test_parse_round_trip(self, parts) -> None:
        text = _text_of(parts)
        uri = parse_uri(text)
        self.assertEqual(str(uri), text)
        self.assertEqual(uri.scheme, parts["scheme"].lower())
        self.assertEqual(uri.user, parts["user"])
        self.assertEqual(uri.password, parts["password"] if parts["user"] is not None else None)
        self.assertEqual(uri.host, parts["host"].strip("[]"))
        self.assertEqual(uri.port, parts["port"])
        self.assertEqual(uri.params, parts["params"])
        self.assertEqual(uri.headers, parts["headers"])
        # rebuilt from its parts it says the same, in canonical spelling
        rebuilt = uri.replace()
        self.assertEqual(str(rebuilt), parts["scheme"].lower() + text[len(parts["scheme"]):])
        self.assertTrue(uri_equal(rebuilt, uri))
        self.assertTrue(uri_equal(uri, uri))
        self.assertEqual(hash(rebuilt), hash(uri))

    @settings(max_examples=300, deadline=None)
    @given(sip_uri_parts(), st.randoms(use_true_random=False))
    def test_equal_under_case_and_order(self, parts, rnd) -> None:
        """Scheme and host case, parameter and header order do not
        matter (19.1.4); the comparison is symmetric and hash-stable."""
        names = [n.lower() for n, _ in parts["params"]]
        hnames = [n.lower() for n, _ in parts["headers"]]
        if len(set(names)) != len(names) or len(set(hnames)) != len(hnames):
            return  # duplicate names make "the" value ambiguous
        a = parse_uri(_text_of(parts))
        other = dict(parts)
        other["scheme"] = parts["scheme"].swapcase()
        other["host"] = parts["host"].upper() if not parts["host"].startswith("[") else parts["host"]
        other["params"] = rnd.sample(parts["params"], len(parts["params"]))
        other["headers"] = rnd.sample(parts["headers"], len(parts["headers"]))
        b = parse_uri(_text_of(other))
        self.assertTrue(uri_equal(a, b))
        self.assertTrue(uri_equal(b, a))
        self.assertEqual(hash(a), hash(b))
        self.assertEqual(a.address_of_record.lower(), b.address_of_record.lower())

    @settings(max_examples=300, deadline=None)
    @given(sip_uri_parts(), st.none() | st.text(" abcXYZ,;:<>@\\\"", max_size=12) | _chars(""),
           st.lists(_param, max_size=3))
    def test_name_addr_round_trip(self, parts, display, params) -> None:
        uri_text = _text_of(parts)
        if display is None:
            head = f"<{uri_text}>"
        elif display and set(display) <= set(_UNRESERVED + "%"):
            head = f"{display} <{uri_text}>"
        else:
            quoted = '"' + display.replace("\\", "\\\\").replace('"', '\\"') + '"'
            head = f"{quoted} <{uri_text}>"
        text = head + "".join(f";{n}" if v is None else f";{n}={v}" for n, v in params)
        addr = parse_name_addr(text)
        self.assertEqual(str(addr), text)
        self.assertEqual(str(addr.uri), uri_text)
        self.assertEqual(addr.params, params)
        self.assertTrue(addr.bracketed)
        if display is None:
            self.assertIsNone(addr.display)
        rebuilt = parse_name_addr(str(NameAddr(addr.uri.replace(), addr.display, list(addr.params))))
        self.assertTrue(uri_equal(rebuilt.uri, addr.uri))
        self.assertEqual(rebuilt.params, addr.params)

    @settings(max_examples=300, deadline=None)
    @given(st.text(max_size=60))
    def test_arbitrary_text(self, text: str) -> None:
        """Only URIError, whatever the input."""
        for parser in (parse_uri, parse_name_addr):
            try:
                result = parser(text)
            except URIError:
                continue
            self.assertEqual(str(result), text.strip(" \t\r\n"))
