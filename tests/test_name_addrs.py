"""The remembered readings of From/To/Contact values
(L{sipproxy.sip.name_addrs}): the same answers as parsing each time, for
the first read and every later one, and hostile values refused every
time without being remembered."""
from __future__ import annotations

from typing import Optional

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from sipproxy.sip import name_addrs
from sipproxy.sip.dialog import Dialog
from sipproxy.sip.message import tag_of
from sipproxy.sip.uac import new_request
from sipproxy.sip.uri import URIError, parse_name_addr

VALUES = [
    "<sip:alice@atlanta.example.com>",
    "sip:alice@atlanta.example.com",
    "sip:alice@atlanta.example.com;tag=1928301774",
    "Alice <sip:alice@atlanta.example.com>;tag=88sja8x",
    '"Bob, Jr." <sip:bob@biloxi.example.com;transport=tcp>;tag=a6c85cf;x=y',
    "<sip:bob@192.0.2.4;lr>;TAG=Upper;other",
    "<sips:[2001:db8::1]:5061>;tag=",
    "<sip:carol@chicago.example.com>;tag",
    "sip:carol@chicago.example.com;tag=a;tag=b",
    " <sip:space@example.com> ;tag=t ",
]

HOSTILE = ["<sip:alice@atlanta.example.com", '"unterminated <sip:a@b>', "<sip:a@b> junk", "<sip:a@b>;=x", "",
           "<sip:a@b:99999>", "<>"]


def _parsed_untagged(value: str, tag: Optional[str]) -> tuple[str, str]:
    """What dialog._split_tag computed before the readings were kept."""
    addr = parse_name_addr(value)
    bare = addr.replace(params=[(n, v) for n, v in addr.params if n.lower() != "tag"])
    tagged = bare.with_param("tag", tag) if tag else bare
    return str(bare), str(tagged.replace(bracketed=True))


class ReadingTests(SynchronousTestCase):
    def setUp(self) -> None:
        name_addrs.READINGS.clear()
        self.addCleanup(name_addrs.READINGS.clear)

    def test_same_as_parsing(self) -> None:
        for value in VALUES:
            for _ in range(2):  # the first read parses, the second is remembered
                addr = parse_name_addr(value)
                self.assertEqual(name_addrs.tag_of(value), addr.tag, value)
                self.assertEqual(tag_of(value), addr.tag, value)
                self.assertEqual(name_addrs.uri_text(value), str(addr.uri), value)
                for tag in (None, "", "ours"):
                    self.assertEqual(name_addrs.untagged(value, tag), _parsed_untagged(value, tag), (value, tag))
            self.assertIn(value, name_addrs.READINGS)

    def assert_reads_as_parsed(self, text: str, context: object) -> None:
        """Every reading of C{text} (remembered or not) is what parsing it gives."""
        parsed = parse_name_addr(text)
        self.assertEqual(name_addrs.tag_of(text), parsed.tag, context)
        self.assertEqual(name_addrs.uri_text(text), str(parsed.uri), context)
        for other in (None, "ours"):
            self.assertEqual(name_addrs.untagged(text, other), _parsed_untagged(text, other), context)

    def test_written_from_reads_as_parsed(self) -> None:
        """with_new_tag: the From we write, rendered as before, and its
        remembered reading (no parse) the same as parsing it."""
        for value in VALUES:
            for tag in ("abc123", "a.b-c", "we ird", "x;y=z"):
                name_addrs.READINGS.clear()
                text = name_addrs.with_new_tag(value, tag)
                self.assertEqual(text, str(parse_name_addr(value).with_param("tag", tag).replace(bracketed=True)))
                self.assert_reads_as_parsed(text, (value, tag))
        self.assertRaises(ValueError, name_addrs.with_new_tag, VALUES[0], "")
        for value in HOSTILE:
            self.assertRaises(URIError, name_addrs.with_new_tag, value, "t")

    def test_tagged_to_reads_as_parsed(self) -> None:
        """tagged: the To of our responses is the request's To with the tag
        appended as it is, and its remembered reading (no parse) is the
        same as parsing it; a To that has a tag parameter already, even an
        empty one, is not remembered with a second one."""
        for value in VALUES + [" <sip:space@example.com> ", "Bob <sip:bob@b.example.com;user=phone>;x=y"]:
            for tag in ("abc123", "a.b-c", "we ird"):
                name_addrs.READINGS.clear()
                text = name_addrs.tagged(value, tag)
                self.assertEqual(text, f"{value};tag={tag}")
                remembered = text in name_addrs.READINGS
                self.assertEqual(remembered, tag != "we ird" and "tag" not in value.lower(), (value, tag))
                self.assert_reads_as_parsed(text, (value, tag))
        self.assertRaises(ValueError, name_addrs.tagged, VALUES[0], "")
        for value in HOSTILE:
            self.assertRaises(URIError, name_addrs.tagged, value, "t")
            self.assertNotIn(f"{value};tag=t", name_addrs.READINGS)
        # too long to keep (a peer's 600-character To): read right, remembered neither way
        long_value = f"<sip:{'a' * name_addrs.READINGS.max_key}@example.com>"
        name_addrs.READINGS.clear()
        text = name_addrs.tagged(long_value, "t1")
        self.assertEqual(text, f"{long_value};tag=t1")
        self.assertEqual(len(name_addrs.READINGS), 0)
        self.assert_reads_as_parsed(text, "long")
        self.assertEqual(name_addrs.tag_of(text), "t1")

    def test_response_to_tag_is_remembered(self) -> None:
        """create_response tags the To through L{name_addrs.tagged}: the ACK
        and BYE that echo it find it read already."""
        request = new_request("INVITE", "sip:b@example.com", "<sip:a@example.com>", "Bob <sip:b@example.com>",
                              from_tag="ft")
        response = request.create_response(200, to_tag="tt")
        self.assertEqual(response.get("to"), "Bob <sip:b@example.com>;tag=tt")
        self.assertIn("Bob <sip:b@example.com>;tag=tt", name_addrs.READINGS)
        self.assertEqual(response.to_tag, "tt")
        self.assertEqual(request.create_response(100, to_tag="tt").get("to"), "Bob <sip:b@example.com>")
        tagged = new_request("BYE", "sip:b@example.com", "<sip:a@example.com>", "<sip:b@example.com>;tag=old",
                             from_tag="ft")
        self.assertEqual(tagged.create_response(200, to_tag="tt").get("to"), "<sip:b@example.com>;tag=old")

    def test_hostile_values_raise_every_time_and_are_not_kept(self) -> None:
        for value in HOSTILE:
            for _ in range(2):
                self.assertRaises(URIError, parse_name_addr, value)
                self.assertRaises(URIError, name_addrs.tag_of, value)
                self.assertRaises(URIError, name_addrs.untagged, value, "t")
                self.assertRaises(URIError, name_addrs.uri_text, value)
            self.assertNotIn(value, name_addrs.READINGS)

    def test_bounded(self) -> None:
        cache = name_addrs.READINGS
        for i in range(cache.max_entries + 10):
            name_addrs.tag_of(f"<sip:u{i}@example.com>;tag={i}")
        self.assertLessEqual(len(cache), cache.max_entries)
        long_value = f"<sip:{'a' * cache.max_key}@example.com>"
        self.assertIsNone(name_addrs.tag_of(long_value))
        self.assertNotIn(long_value, cache)

    def test_readings_are_not_shared_objects(self) -> None:
        """Only strings leave the table: changing what a caller got
        cannot change a later answer."""
        value = "Alice <sip:alice@atlanta.example.com>;tag=x"
        first = name_addrs.untagged(value, "t")
        self.assertIsInstance(first, tuple)
        self.assertTrue(all(isinstance(text, str) for text in first))
        self.assertEqual(name_addrs.untagged(value, "t"), first)

    def test_new_request_from_tag(self) -> None:
        """A From without a tag gets one (the URI bracketed), every time
        alike; one with a tag keeps it."""
        for from_ in ("sip:alice@example.com;transport=tcp", "Alice <sip:alice@example.com>;x=1;tag="):
            for _ in range(2):
                request = new_request("OPTIONS", "sip:b@example.com", from_, "<sip:b@example.com>", from_tag="ft")
                expected = str(parse_name_addr(from_).with_param("tag", "ft").replace(bracketed=True))
                self.assertEqual(request.get("from"), expected)
        request = new_request("OPTIONS", "sip:b@example.com", "<sip:a@example.com>;tag=keep", "<sip:b@x>")
        self.assertEqual(request.get("from"), "<sip:a@example.com>;tag=keep")

    def test_dialog_from_a_remembered_value(self) -> None:
        """Two dialogs from the same From/To values (the second from the
        remembered readings) carry the same From and To."""
        built = []
        for call in range(2):
            invite = new_request("INVITE", "sip:bob@example.com", "Alice <sip:alice@example.com>",
                                 "Bob <sip:bob@example.com>;x=1", sent_by="192.0.2.1", call_id=f"c{call}",
                                 from_tag="atag", contact="<sip:alice@192.0.2.1>")
            ok = invite.create_response(200, to_tag="btag", headers=[("Contact", "<sip:bob@192.0.2.4;ob>")])
            dialog = Dialog.from_uac(invite, ok)
            bye = dialog.new_request("BYE")
            built.append((dialog.local_uri, dialog.remote_uri, dialog.remote_target, bye.get("from"),
                           bye.get("to")))
        self.assertEqual(built[0], built[1])
        self.assertEqual(built[0], ("Alice <sip:alice@example.com>", "Bob <sip:bob@example.com>;x=1",
                                    "sip:bob@192.0.2.4;ob", "Alice <sip:alice@example.com>;tag=atag",
                                    "Bob <sip:bob@example.com>;x=1;tag=btag"))

    def test_malformed_contact_is_no_target(self) -> None:
        invite = new_request("INVITE", "sip:bob@example.com", "<sip:alice@example.com>", "<sip:bob@example.com>",
                             sent_by="192.0.2.1", contact="<sip:alice@192.0.2.1>")
        ok = invite.create_response(200, to_tag="btag", headers=[("Contact", "<sip:broken")])
        for _ in range(2):
            self.assertEqual(Dialog.from_uac(invite, ok).remote_target, "sip:bob@example.com")


class UsualShapeTests(SynchronousTestCase):
    """The From and To most user agents send are read without a parse
    (L{name_addrs._usual_reading}); on those, and on every value that comes
    near their shape, the readings are the parser's, and a value the
    parser refuses is refused."""

    def setUp(self) -> None:
        name_addrs.READINGS.clear()
        self.addCleanup(name_addrs.READINGS.clear)

    def test_the_usual_values_skip_the_parser(self) -> None:
        for value in ("sipp <sip:sipp@127.0.0.1:5090>;tag=16SIPpTag0116", "<sip:alice@atlanta.example.com>;tag=a1",
                      "Bob B <sips:bob@biloxi.example.com:5061>;tag=x.y-z"):
            self.assertIsNotNone(name_addrs._usual_reading(value), value)
        for value in ('"Bob" <sip:bob@h>;tag=1', "<sip:bob@h>;tag=1;x=2", "<sip:bob@h;lr>;tag=1", "<sip:h>;tag=1",
                      "<sip:bob@h>", "<sip:bob@h:99999>;tag=1", "<sip:bob@" + "a" * 64 + ">;tag=1",
                      "<sip:bob@a..b>;tag=1", "<sip:bob@.b>;tag=1", "<SIP:bob@h>;tag=1", "x  <sip:bob@h>;tag=1"):
            self.assertIsNone(name_addrs._usual_reading(value), value)

    def test_overlong_and_endless_values(self) -> None:
        """Hostile values near the usual shape (50,000 display tokens, with
        and without a closing URI; 100 KB user, host, port or tag; an
        endless run of user@) read as the parser reads them or are refused
        like it, and none is kept: they are over the cache's key limit."""
        values = ["a " * 50_000 + "<sip:a@h>;tag=1", "a " * 50_000, "<sip:" + "u" * 100_000 + "@h>;tag=1",
                  "<sip:u@" + "h" * 100_000 + ">;tag=1", "<sip:u@h>;tag=" + "t" * 100_000,
                  "<sip:u@h:" + "9" * 100_000 + ">;tag=1", "<sip:" + "u@" * 50_000 + "h>;tag=1"]
        for value in values:
            try:
                parsed = parse_name_addr(value)
            except URIError:
                self.assertRaises(URIError, name_addrs.reading, value)
            else:
                self.assertEqual(name_addrs.tag_of(value), parsed.tag, value[:40])
                self.assertEqual(name_addrs.uri_text(value), str(parsed.uri), value[:40])
                self.assertEqual(name_addrs.untagged(value), _parsed_untagged(value, None), value[:40])
            self.assertNotIn(value, name_addrs.READINGS)
        self.assertEqual(len(name_addrs.READINGS), 0)

    @settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
    @given(st.tuples(
        st.sampled_from(["", "sipp ", "A B ", "x  ", '"Q" ', "a,b ", " "]),
        st.sampled_from(["sip", "sips", "SIP", "tel"]),
        st.sampled_from(["alice", "a.b-c_d~!$&'()*+,=", "a;b", "a?b", "", "a%41", "a b"]),
        st.sampled_from(["127.0.0.1", "atlanta.example.com", "a" * 63, "a" * 64, "a..b", ".b", "b.", "-",
                         "[2001:db8::1]", "h_1"]),
        st.sampled_from(["", ":5060", ":0", ":65535", ":65536", ":99999", ":", ":x"]),
        st.sampled_from([";tag=t1", ";tag=", ";TAG=u", ";tag=a;x=y", ";tag=a b", ";tag=\"q\"", "", ";tag=a;",
                         " ;tag=t", ";tag=t "]),
    ))
    def test_readings_are_the_parsers(self, parts: tuple[str, ...]) -> None:
        display, scheme, user, host, port, params = parts
        value = f"{display}<{scheme}:{user}@{host}{port}>{params}"
        name_addrs.READINGS.clear()
        try:
            parsed = parse_name_addr(value)
        except URIError:
            self.assertRaises(URIError, name_addrs.reading, value)
            self.assertNotIn(value, name_addrs.READINGS)
            return
        for _ in range(2):  # read, then remembered
            self.assertEqual(name_addrs.tag_of(value), parsed.tag, value)
            self.assertEqual(name_addrs.uri_text(value), str(parsed.uri), value)
            for tag in (None, "ours"):
                self.assertEqual(name_addrs.untagged(value, tag), _parsed_untagged(value, tag), (value, tag))
