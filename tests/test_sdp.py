"""Tests for L{sipproxy.sip.sdp}: parsing, serialising and media rewriting."""
from __future__ import annotations

import ipaddress
from typing import List, Optional

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from sipproxy.sip.sdp import (
    DIRECTIONS,
    Connection,
    Media,
    MediaTarget,
    Origin,
    SDPError,
    SessionDescription,
    parse_sdp,
)


def sdp(*lines: str) -> bytes:
    """An SDP body from its lines, CRLF-terminated."""
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def unspecified(address: Optional[str]) -> bool:
    """True for 0.0.0.0 and ::, the hold addresses."""
    try:
        return address is not None and ipaddress.ip_address(address).is_unspecified
    except ValueError:
        return False


def same_address(a: Optional[str], b: Optional[str]) -> bool:
    if a is None or b is None:
        return a is b
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return a.lower() == b.lower()


HEAD = (
    "v=0",
    "o=alice 2890844526 2890844526 IN IP4 192.0.2.10",
    "s=-",
)
BUMPED = "o=alice 2890844526 2890844527 IN IP4 192.0.2.10"

#: RFC 4566 5 example, with an unknown line and a session attribute.
RFC4566_EXAMPLE = sdp(
    "v=0",
    "o=jdoe 2890844526 2890842807 IN IP4 10.47.16.5",
    "s=SDP Seminar",
    "i=A Seminar on the session description protocol",
    "u=http://www.example.com/seminars/sdp.pdf",
    "e=j.doe@example.com (Jane Doe)",
    "c=IN IP4 224.2.17.12/127",
    "t=2873397496 2873404696",
    "a=recvonly",
    "m=audio 49170 RTP/AVP 0",
    "m=video 51372 RTP/AVP 99",
    "a=rtpmap:99 h263-1998/90000",
)

#: A WebRTC-style offer: many attributes, a=rtcp with address, IPv6.
WEBRTC_OFFER = sdp(
    "v=0",
    "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
    "s=-",
    "t=0 0",
    "a=group:BUNDLE 0 1",
    "a=msid-semantic: WMS stream",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111 103 0 8",
    "c=IN IP6 2001:db8::10",
    "a=rtcp:9 IN IP6 2001:db8::10",
    "a=ice-ufrag:EsAw",
    "a=ice-pwd:bP+XJMM09aR8AiX1jdukzR6Y",
    "a=fingerprint:sha-256 D2:FA:0E:C3:22:59:5E:14:95:69:92:3D:13:B4:84:24",
    "a=setup:actpass",
    "a=mid:0",
    "a=sendrecv",
    "a=rtcp-mux",
    "a=rtpmap:111 opus/48000/2",
    "a=fmtp:111 minptime=10;useinbandfec=1",
    "m=video 9 UDP/TLS/RTP/SAVPF 96",
    "c=IN IP6 2001:db8::10",
    "a=rtcp:9 IN IP6 2001:db8::10",
    "a=mid:1",
    "a=rtcp-fb:96 nack pli",
)


class RoundTripTests(SynchronousTestCase):
    """An SDP nobody changed serialises exactly as it came in."""

    def test_examples_round_trip(self) -> None:
        for body in (RFC4566_EXAMPLE, WEBRTC_OFFER):
            self.assertEqual(bytes(parse_sdp(body)), body)

    def test_str_input(self) -> None:
        self.assertEqual(bytes(parse_sdp(RFC4566_EXAMPLE.decode())), RFC4566_EXAMPLE)

    def test_lf_line_ends_are_written_as_crlf(self) -> None:
        lf = RFC4566_EXAMPLE.replace(b"\r\n", b"\n")
        self.assertEqual(bytes(parse_sdp(lf)), RFC4566_EXAMPLE)

    def test_mixed_line_ends(self) -> None:
        mixed = b"v=0\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\nt=0 0\r\n"
        self.assertEqual(bytes(parse_sdp(mixed)), mixed.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))

    def test_missing_final_line_end_is_added(self) -> None:
        body = sdp(*HEAD, "t=0 0")
        self.assertEqual(bytes(parse_sdp(body[:-2])), body)

    def test_trailing_empty_lines_kept(self) -> None:
        body = sdp(*HEAD, "t=0 0") + b"\r\n"
        self.assertEqual(bytes(parse_sdp(body)), body)

    def test_odd_spacing_kept(self) -> None:
        body = sdp(
            "v=0",
            "o=alice  1 2 IN IP4 192.0.2.10",
            "s= ",
            "c=in ip4 192.0.2.10",
            "t=0 0",
            "m=audio  49170  RTP/AVP 0",
            "a=rtcp:49171",
        )
        parsed = parse_sdp(body)
        self.assertEqual(bytes(parsed), body)
        self.assertEqual(parsed.connection.addrtype, "IP4")  # type: ignore[union-attr]
        self.assertEqual(parsed.media[0].port, 49170)

    def test_non_utf8_bytes_round_trip(self) -> None:
        body = sdp(*HEAD[:2], "s=caf\xe9", "a=charset:ISO-8859-1", "t=0 0").replace(
            "é".encode(), b"\xe9"
        )
        self.assertIn(b"\xe9", body)
        self.assertEqual(bytes(parse_sdp(body)), body)

    def test_reading_does_not_change_output(self) -> None:
        parsed = parse_sdp(WEBRTC_OFFER)
        for media in parsed.media:
            (media.address, media.rtcp, media.direction, media.port_range, media.connection)
        (parsed.origin.session_version, parsed.connection, parsed.attributes)
        self.assertEqual(bytes(parsed), WEBRTC_OFFER)


class ParseTests(SynchronousTestCase):
    """What the parser reads from a valid SDP."""

    def test_origin(self) -> None:
        origin = parse_sdp(RFC4566_EXAMPLE).origin
        self.assertEqual(
            (origin.username, origin.session_id, origin.session_version,
             origin.nettype, origin.addrtype, origin.address),
            ("jdoe", "2890844526", 2890842807, "IN", "IP4", "10.47.16.5"),
        )

    def test_origin_username_with_spaces(self) -> None:
        parsed = parse_sdp(sdp("v=0", "o=Some UA 1.0 42 7 IN IP4 192.0.2.1", "s=-"))
        self.assertEqual(parsed.origin.username, "Some UA 1.0")
        self.assertEqual(parsed.origin.session_id, "42")
        self.assertEqual(parsed.origin.session_version, 7)
        parsed.bump_version()
        self.assertEqual(parsed.lines[1], "o=Some UA 1.0 42 8 IN IP4 192.0.2.1")

    def test_version(self) -> None:
        self.assertEqual(parse_sdp(RFC4566_EXAMPLE).version, 0)

    def test_session_connection_multicast(self) -> None:
        conn = parse_sdp(RFC4566_EXAMPLE).connection
        assert conn is not None
        self.assertEqual(
            (conn.nettype, conn.addrtype, conn.address, conn.ttl, conn.count),
            ("IN", "IP4", "224.2.17.12", 127, None),
        )
        self.assertTrue(conn.is_ip)

    def test_connection_ttl_and_count(self) -> None:
        conn = Connection.parse("IN IP4 233.252.0.1/127/3")
        self.assertEqual((conn.ttl, conn.count), (127, 3))
        conn6 = Connection.parse("IN IP6 ff15::101/3")
        self.assertEqual((conn6.addrtype, conn6.ttl, conn6.count), ("IP6", None, 3))

    def test_connection_hostname(self) -> None:
        parsed = parse_sdp(sdp(*HEAD, "c=IN IP4 media.example.com", "t=0 0", "m=audio 4000 RTP/AVP 0"))
        conn = parsed.connection
        assert conn is not None
        self.assertEqual(conn.address, "media.example.com")
        self.assertFalse(conn.is_ip)
        self.assertEqual(parsed.media[0].address, "media.example.com")

    def test_media_list(self) -> None:
        media = parse_sdp(WEBRTC_OFFER).media
        self.assertEqual([m.kind for m in media], ["audio", "video"])
        self.assertEqual([m.port for m in media], [9, 9])
        self.assertEqual([m.proto for m in media], ["UDP/TLS/RTP/SAVPF"] * 2)
        self.assertEqual(media[0].formats, ["111", "103", "0", "8"])
        self.assertEqual(media[1].formats, ["96"])

    def test_port_count_and_range(self) -> None:
        parsed = parse_sdp(sdp(
            *HEAD, "c=IN IP4 192.0.2.10", "t=0 0",
            "m=audio 49170 RTP/AVP 0",
            "m=video 49180/2 RTP/AVP 31",
            "m=application 5000 udp wb",
            "m=application 6000/3 TCP/MSRP *",
            "m=audio 7000 rtp/savp 0",
        ))
        self.assertEqual([m.port_count for m in parsed.media], [1, 2, 1, 3, 1])
        self.assertEqual([m.is_rtp for m in parsed.media], [True, True, False, False, True])
        self.assertEqual([m.port_range for m in parsed.media], [2, 4, 1, 3, 2])

    def test_media_address_falls_back_to_session(self) -> None:
        parsed = parse_sdp(sdp(
            *HEAD, "c=IN IP4 192.0.2.10", "t=0 0",
            "m=audio 49170 RTP/AVP 0",
            "m=video 51372 RTP/AVP 31", "c=IN IP6 2001:db8::2",
        ))
        audio, video = parsed.media
        self.assertIsNone(audio.connection)
        self.assertEqual((audio.address, audio.address_family), ("192.0.2.10", "IP4"))
        self.assertEqual((video.address, video.address_family), ("2001:db8::2", "IP6"))

    def test_no_address_anywhere(self) -> None:
        media = parse_sdp(sdp(*HEAD, "t=0 0", "m=audio 49170 RTP/AVP 0")).media[0]
        self.assertIsNone(media.address)
        self.assertIsNone(media.address_family)

    def test_rtcp(self) -> None:
        parsed = parse_sdp(sdp(
            *HEAD, "c=IN IP4 192.0.2.10", "t=0 0",
            "m=audio 49170 RTP/AVP 0", "a=rtcp:53020",
            "m=audio 49172 RTP/AVP 0", "a=rtcp:53020 IN IP6 2001:db8::7",
            "m=audio 49174 RTP/AVP 0", "a=rtcp-mux", "a=rtcp-fb:* nack",
        ))
        self.assertEqual([m.rtcp for m in parsed.media], [(53020, None), (53020, "2001:db8::7"), None])

    def test_direction(self) -> None:
        parsed = parse_sdp(sdp(
            *HEAD, "c=IN IP4 192.0.2.10", "t=0 0", "a=sendonly",
            "m=audio 49170 RTP/AVP 0",
            "m=audio 49172 RTP/AVP 0", "a=recvonly",
            "m=audio 49174 RTP/AVP 0", "a=inactive",
        ))
        self.assertEqual([m.direction for m in parsed.media], ["sendonly", "recvonly", "inactive"])
        plain = parse_sdp(sdp(*HEAD, "t=0 0", "m=audio 1 RTP/AVP 0", "a=sendrecv", "m=audio 2 RTP/AVP 0"))
        self.assertEqual([m.direction for m in plain.media], ["sendrecv", "sendrecv"])
        self.assertEqual(DIRECTIONS[0], "sendrecv")

    def test_is_held_or_inactive(self) -> None:
        parsed = parse_sdp(sdp(
            *HEAD, "c=IN IP4 192.0.2.10", "t=0 0",
            "m=audio 49170 RTP/AVP 0",
            "m=audio 0 RTP/AVP 0",
            "m=audio 49174 RTP/AVP 0", "c=IN IP4 0.0.0.0",
            "m=audio 49176 RTP/AVP 0", "c=IN IP6 ::",
            "m=audio 49178 RTP/AVP 0", "a=inactive",
            "m=audio 49180 RTP/AVP 0", "a=sendonly",
        ))
        self.assertEqual([m.is_held_or_inactive for m in parsed.media], [False, True, True, True, True, False])
        held = parse_sdp(sdp(*HEAD, "c=IN IP4 0.0.0.0", "t=0 0", "m=audio 49170 RTP/AVP 0"))
        self.assertTrue(held.media[0].is_held_or_inactive)

    def test_attributes(self) -> None:
        parsed = parse_sdp(WEBRTC_OFFER)
        self.assertEqual(parsed.attributes, ["group:BUNDLE 0 1", "msid-semantic: WMS stream"])
        self.assertEqual(parsed.attribute("group"), "BUNDLE 0 1")
        self.assertIsNone(parsed.attribute("mid"))
        audio = parsed.media[0]
        self.assertEqual(audio.attribute("mid"), "0")
        self.assertEqual(audio.attribute("rtcp-mux"), "")
        self.assertEqual(audio.attribute("rtcp"), "9 IN IP6 2001:db8::10")
        self.assertIsNone(audio.attribute("ptime"))
        self.assertIn("rtpmap:111 opus/48000/2", audio.attributes)
        self.assertEqual(len(audio.attributes), 10)

    def test_lines(self) -> None:
        parsed = parse_sdp(RFC4566_EXAMPLE)
        self.assertEqual(parsed.session_lines[0], "v=0")
        self.assertEqual(parsed.session_lines[-1], "a=recvonly")
        self.assertEqual(parsed.media[1].lines, ["m=video 51372 RTP/AVP 99", "a=rtpmap:99 h263-1998/90000"])
        self.assertEqual("\r\n".join(parsed.lines) + "\r\n", RFC4566_EXAMPLE.decode())

    def test_unknown_lines_kept_in_order(self) -> None:
        body = sdp(
            *HEAD, "X=upper case type", "z=2882844526 -1h", "k=prompt", "c=IN IP4 192.0.2.10",
            "t=0 0", "r=604800 3600 0 90000", "y=unknown",
            "m=audio 49170 RTP/AVP 0", "b=AS:64", "q=what", "a=x-vendor:1 2 3",
        )
        parsed = parse_sdp(body)
        self.assertEqual(parsed.session_lines[3:6], ["X=upper case type", "z=2882844526 -1h", "k=prompt"])
        self.assertEqual(parsed.media[0].lines[1:], ["b=AS:64", "q=what", "a=x-vendor:1 2 3"])
        self.assertEqual(bytes(parsed), body)


class ParseErrorTests(SynchronousTestCase):
    """Every refusal is an L{SDPError} that says what and where."""

    def assertRefused(self, body: bytes, *words: str, line: Optional[int] = None) -> SDPError:
        err = self.assertRaises(SDPError, parse_sdp, body)
        self.assertIsInstance(err, ValueError)
        for word in words:
            self.assertIn(word, str(err))
        self.assertEqual(err.line, line)
        if line is not None:
            self.assertTrue(str(err).startswith(f"line {line}: "), str(err))
        return err

    def test_empty(self) -> None:
        self.assertRefused(b"", "empty")
        self.assertRefused(b"\r\n\r\n", "empty")

    def test_not_starting_with_v(self) -> None:
        self.assertRefused(sdp("o=- 1 1 IN IP4 192.0.2.1", "v=0"), "must start with v=", line=1)

    def test_unsupported_version(self) -> None:
        self.assertRefused(sdp("v=1", "o=- 1 1 IN IP4 192.0.2.1"), "version", line=1)

    def test_second_v(self) -> None:
        self.assertRefused(sdp(*HEAD, "v=0"), "first line", line=4)

    def test_line_without_type(self) -> None:
        self.assertRefused(sdp(*HEAD, "this is not sdp"), "x=value", line=4)
        self.assertRefused(sdp(*HEAD, " a=indented"), "x=value", line=4)
        self.assertRefused(sdp(*HEAD, "1=digit"), "x=value", line=4)

    def test_empty_line_in_the_middle(self) -> None:
        self.assertRefused(sdp(*HEAD, "", "t=0 0"), "empty line", line=4)

    def test_bare_cr_or_nul(self) -> None:
        self.assertRefused(b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\rs=-\r\n", "bare CR", line=2)
        self.assertRefused(b"v=0\x00\r\n", "NUL", line=1)

    def test_missing_origin(self) -> None:
        self.assertRefused(sdp("v=0", "s=-", "t=0 0"), "no o= line")

    def test_m_before_origin(self) -> None:
        self.assertRefused(
            sdp("v=0", "s=-", "m=audio 1 RTP/AVP 0", "o=- 1 1 IN IP4 192.0.2.1"), "m= before o=", line=3
        )

    def test_origin_in_media(self) -> None:
        self.assertRefused(sdp(*HEAD, "m=audio 1 RTP/AVP 0", "o=- 1 1 IN IP4 192.0.2.1"), "inside a media", line=5)

    def test_duplicate_origin(self) -> None:
        self.assertRefused(sdp(*HEAD, "o=- 1 1 IN IP4 192.0.2.1"), "more than one o=", line=4)

    def test_short_origin(self) -> None:
        self.assertRefused(sdp("v=0", "o=- 1 1 IN IP4"), "o= needs 6 fields", "got 5", line=2)

    def test_origin_version_not_a_number(self) -> None:
        self.assertRefused(sdp("v=0", "o=- 1 x2 IN IP4 192.0.2.1"), "session version 'x2'", line=2)
        self.assertRefused(sdp("v=0", "o=- 1 " + "9" * 65 + " IN IP4 192.0.2.1"), "session version", line=2)

    def test_m_port_not_a_number(self) -> None:
        self.assertRefused(sdp(*HEAD, "m=audio port RTP/AVP 0"), "m= port 'port' is not a number", line=4)
        self.assertRefused(sdp(*HEAD, "m=audio -1 RTP/AVP 0"), "m= port '-1'", line=4)

    def test_m_port_out_of_range(self) -> None:
        self.assertRefused(sdp(*HEAD, "m=audio 65536 RTP/AVP 0"), "65536 is out of range", line=4)
        self.assertRefused(sdp(*HEAD, "m=audio 123456 RTP/AVP 0"), "'123456' is not a number", line=4)

    def test_m_bad_count(self) -> None:
        self.assertRefused(sdp(*HEAD, "m=audio 4000/0 RTP/AVP 0"), "port count '0'", line=4)
        self.assertRefused(sdp(*HEAD, "m=audio 4000/x RTP/AVP 0"), "port count 'x'", line=4)

    def test_m_too_short(self) -> None:
        self.assertRefused(sdp(*HEAD, "m=audio 4000"), "m= needs", line=4)

    def test_c_wrong_types(self) -> None:
        self.assertRefused(sdp(*HEAD, "c=ATM NSAP 47.0091"), "only IN IP4, IN IP6", line=4)
        self.assertRefused(sdp(*HEAD, "c=IN IP5 192.0.2.1"), "only IN IP4, IN IP6", line=4)
        self.assertRefused(sdp(*HEAD, "c=IN IP4"), "c= needs", line=4)

    def test_c_bad_address(self) -> None:
        self.assertRefused(sdp(*HEAD, "c=IN IP4 192.0.2.256"), "invalid IP4 address '192.0.2.256'", line=4)
        self.assertRefused(sdp(*HEAD, "c=IN IP6 2001:db8::g"), "invalid IP6 address", line=4)
        self.assertRefused(sdp(*HEAD, "c=IN IP4 -bad-.example"), "invalid IP4 address", line=4)

    def test_c_address_of_the_other_family(self) -> None:
        self.assertRefused(sdp(*HEAD, "c=IN IP4 2001:db8::1"), "not an IP4 address", line=4)
        self.assertRefused(sdp(*HEAD, "c=IN IP6 192.0.2.1"), "not an IP6 address", line=4)

    def test_c_bad_ttl_or_count(self) -> None:
        self.assertRefused(sdp(*HEAD, "c=IN IP4 224.2.1.1/256"), "TTL 256", line=4)
        self.assertRefused(sdp(*HEAD, "c=IN IP4 224.2.1.1/x"), "is not a number", line=4)
        self.assertRefused(sdp(*HEAD, "c=IN IP4 224.2.1.1/1/2/3"), "too many", line=4)
        self.assertRefused(sdp(*HEAD, "c=IN IP6 ff15::1/1/2"), "too many", line=4)
        self.assertRefused(sdp(*HEAD, "c=IN IP4 224.2.1.1/1/0"), "at least 1", line=4)

    def test_two_session_connections(self) -> None:
        self.assertRefused(
            sdp(*HEAD, "c=IN IP4 192.0.2.1", "c=IN IP4 192.0.2.2"), "more than one c=", "session", line=5
        )

    def test_two_media_connections(self) -> None:
        self.assertRefused(
            sdp(*HEAD, "c=IN IP4 192.0.2.1", "m=audio 1 RTP/AVP 0", "c=IN IP4 192.0.2.2",
                "m=video 2 RTP/AVP 31", "c=IN IP4 192.0.2.3", "c=IN IP4 192.0.2.4"),
            "more than one c=", "media 2", line=9,
        )

    def test_rtcp_bad_port(self) -> None:
        self.assertRefused(sdp(*HEAD, "m=audio 1 RTP/AVP 0", "a=rtcp:abc"), "a=rtcp port 'abc'", line=5)
        self.assertRefused(sdp(*HEAD, "m=audio 1 RTP/AVP 0", "a=rtcp:70000"), "70000 is out of range", line=5)
        self.assertRefused(sdp(*HEAD, "m=audio 1 RTP/AVP 0", "a=rtcp:"), "no port", line=5)

    def test_rtcp_bad_address(self) -> None:
        self.assertRefused(sdp(*HEAD, "m=audio 1 RTP/AVP 0", "a=rtcp:5 IN IP4"), "a=rtcp: needs", line=5)
        self.assertRefused(sdp(*HEAD, "m=audio 1 RTP/AVP 0", "a=rtcp:5 IN IP4 ::1"), "not an IP4", line=5)

    def test_not_bytes(self) -> None:
        self.assertRaises(TypeError, parse_sdp, 42)


class ConnectionTests(SynchronousTestCase):
    """L{Connection} on its own."""

    def test_type_from_address(self) -> None:
        self.assertEqual(Connection("192.0.2.1").line, "c=IN IP4 192.0.2.1")
        self.assertEqual(Connection("2001:db8::1").line, "c=IN IP6 2001:db8::1")

    def test_hostname_needs_type(self) -> None:
        self.assertRaises(ValueError, Connection, "media.example.com")
        self.assertFalse(Connection("media.example.com", "IP4").is_ip)

    def test_unspecified(self) -> None:
        self.assertTrue(Connection("0.0.0.0").is_unspecified)
        self.assertTrue(Connection("::").is_unspecified)
        self.assertFalse(Connection("192.0.2.1").is_unspecified)
        self.assertFalse(Connection("example.com", "IP6").is_unspecified)

    def test_set_address(self) -> None:
        conn = Connection.parse("IN IP4 224.2.1.1/127/2")
        conn.set_address("2001:db8::1")
        self.assertEqual(str(conn), "IN IP6 2001:db8::1")

    def test_set_same_address_differently_spelled(self) -> None:
        conn = Connection.parse("IN IP6 2001:db8:0::1")
        conn.set_address("2001:db8::1")
        self.assertEqual(str(conn), "IN IP6 2001:db8:0::1")

    def test_equality(self) -> None:
        self.assertEqual(Connection.parse("IN IP4 192.0.2.1"), Connection("192.0.2.1"))
        self.assertNotEqual(Connection("192.0.2.1"), Connection("192.0.2.2"))
        self.assertNotEqual(Connection("192.0.2.1"), "IN IP4 192.0.2.1")

    def test_copy_renders_the_same(self) -> None:
        conn = Connection.parse("in ip4 192.0.2.1")
        self.assertEqual(str(conn.copy()), "in ip4 192.0.2.1")


class BuildTests(SynchronousTestCase):
    """Building a description without parsing one."""

    def test_minimal(self) -> None:
        desc = SessionDescription(Origin("-", "1", 1, "192.0.2.1"), Connection("192.0.2.1"))
        self.assertEqual(bytes(desc), sdp("v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", "c=IN IP4 192.0.2.1", "t=0 0"))
        self.assertEqual(bytes(parse_sdp(bytes(desc))), bytes(desc))

    def test_add_media(self) -> None:
        desc = SessionDescription(Origin("-", "1", 1, "192.0.2.1"))
        media = Media("audio", 4000, "RTP/AVP", ["0", "8"], port_count=2)
        media.connection = Connection("192.0.2.5")
        desc.media.append(media)
        self.assertEqual(desc.lines[-2:], ["m=audio 4000/2 RTP/AVP 0 8", "c=IN IP4 192.0.2.5"])
        self.assertEqual(media.port_range, 4)

    def test_session_connection_inserted_before_t(self) -> None:
        desc = parse_sdp(sdp(*HEAD, "t=0 0", "a=tool:x"))
        desc.connection = Connection("192.0.2.9")
        self.assertEqual(desc.session_lines[3:], ["c=IN IP4 192.0.2.9", "t=0 0", "a=tool:x"])
        desc.connection = None
        self.assertEqual(desc.session_lines[3:], ["t=0 0", "a=tool:x"])

    def test_bump_version(self) -> None:
        desc = parse_sdp(sdp(*HEAD, "t=0 0"))
        desc.bump_version()
        desc.bump_version()
        self.assertEqual(desc.origin.session_version, 2890844528)
        self.assertEqual(desc.lines[1], "o=alice 2890844526 2890844528 IN IP4 192.0.2.10")

    def test_bump_large_version(self) -> None:
        desc = parse_sdp(sdp("v=0", "o=- 1 18446744073709551615 IN IP4 192.0.2.1"))
        desc.bump_version()
        self.assertEqual(desc.lines[1], "o=- 1 18446744073709551616 IN IP4 192.0.2.1")


class ReplaceTests(SynchronousTestCase):
    """L{SessionDescription.replace_media_addresses}: pointing media at a relay."""

    def rewrite(self, before: bytes, targets: List[Optional[MediaTarget]], after: Optional[bytes]) -> None:
        """Rewrite C{before}; expect C{after}, or no change when None."""
        desc = parse_sdp(before)
        changed = desc.replace_media_addresses(targets)
        self.assertEqual(bytes(desc), after if after is not None else before)
        self.assertEqual(changed, after is not None)
        self.assertEqual(bytes(parse_sdp(bytes(desc))), bytes(desc))

    def test_session_connection_only(self) -> None:
        self.rewrite(
            sdp(*HEAD, "c=IN IP4 192.0.2.10", "t=0 0", "m=audio 49170 RTP/AVP 0 8", "a=rtpmap:0 PCMU/8000"),
            [MediaTarget("203.0.113.5", 30000)],
            sdp(HEAD[0], BUMPED, HEAD[2], "c=IN IP4 203.0.113.5", "t=0 0",
                "m=audio 30000 RTP/AVP 0 8", "a=rtpmap:0 PCMU/8000"),
        )

    def test_media_connection_only(self) -> None:
        self.rewrite(
            sdp(*HEAD, "t=0 0",
                "m=audio 49170 RTP/AVP 0", "c=IN IP4 192.0.2.10",
                "m=video 51372 RTP/AVP 31", "c=IN IP4 192.0.2.11"),
            [MediaTarget("203.0.113.5", 30000), MediaTarget("203.0.113.6", 30002)],
            sdp(HEAD[0], BUMPED, HEAD[2], "t=0 0",
                "m=audio 30000 RTP/AVP 0", "c=IN IP4 203.0.113.5",
                "m=video 30002 RTP/AVP 31", "c=IN IP4 203.0.113.6"),
        )

    def test_mixed_session_and_media_connection(self) -> None:
        self.rewrite(
            sdp(*HEAD, "c=IN IP4 192.0.2.10", "t=0 0",
                "m=audio 49170 RTP/AVP 0",
                "m=video 51372 RTP/AVP 31", "c=IN IP4 192.0.2.20"),
            [MediaTarget("203.0.113.5", 30000), MediaTarget("203.0.113.5", 30002)],
            sdp(HEAD[0], BUMPED, HEAD[2], "c=IN IP4 203.0.113.5", "t=0 0",
                "m=audio 30000 RTP/AVP 0",
                "m=video 30002 RTP/AVP 31", "c=IN IP4 203.0.113.5"),
        )

    def test_mixed_own_connection_keeps_its_own(self) -> None:
        # The media with its own c= does not vote on the session c=.
        self.rewrite(
            sdp(*HEAD, "c=IN IP4 192.0.2.10", "t=0 0",
                "m=audio 49170 RTP/AVP 0",
                "m=video 51372 RTP/AVP 31", "c=IN IP4 192.0.2.20"),
            [MediaTarget("203.0.113.5", 30000), MediaTarget("203.0.113.6", 30002)],
            sdp(HEAD[0], BUMPED, HEAD[2], "c=IN IP4 203.0.113.5", "t=0 0",
                "m=audio 30000 RTP/AVP 0",
                "m=video 30002 RTP/AVP 31", "c=IN IP4 203.0.113.6"),
        )

    def test_several_media_one_address(self) -> None:
        self.rewrite(
            sdp(*HEAD, "c=IN IP4 192.0.2.10", "t=0 0",
                "m=audio 49170 RTP/AVP 0", "m=video 51372 RTP/AVP 31", "m=text 11000 RTP/AVP 98"),
            [MediaTarget("203.0.113.5", 30000), MediaTarget("203.0.113.5", 30002),
             MediaTarget("203.0.113.5", 30004)],
            sdp(HEAD[0], BUMPED, HEAD[2], "c=IN IP4 203.0.113.5", "t=0 0",
                "m=audio 30000 RTP/AVP 0", "m=video 30002 RTP/AVP 31", "m=text 30004 RTP/AVP 98"),
        )

    def test_several_media_different_addresses(self) -> None:
        self.rewrite(
            sdp(*HEAD, "c=IN IP4 192.0.2.10", "t=0 0",
                "m=audio 49170 RTP/AVP 0", "i=voice", "i=second info", "b=AS:64", "a=ptime:20",
                "m=video 51372 RTP/AVP 31", "a=sendonly"),
            [MediaTarget("203.0.113.5", 30000), MediaTarget("203.0.113.6", 30002)],
            sdp(HEAD[0], BUMPED, HEAD[2], "t=0 0",
                "m=audio 30000 RTP/AVP 0", "i=voice", "i=second info", "c=IN IP4 203.0.113.5",
                "b=AS:64", "a=ptime:20",
                "m=video 30002 RTP/AVP 31", "c=IN IP4 203.0.113.6", "a=sendonly"),
        )

    def test_same_address_as_session_adds_no_connection(self) -> None:
        self.rewrite(
            sdp(*HEAD, "c=IN IP4 192.0.2.10", "t=0 0", "m=audio 49170 RTP/AVP 0"),
            [MediaTarget("192.0.2.10", 30000)],
            sdp(HEAD[0], BUMPED, HEAD[2], "c=IN IP4 192.0.2.10", "t=0 0", "m=audio 30000 RTP/AVP 0"),
        )

    def test_nothing_to_change(self) -> None:
        self.rewrite(
            sdp(*HEAD, "c=IN IP6 2001:db8:0:0::10", "t=0 0", "m=audio 49170 RTP/AVP 0", "a=rtcp:49171"),
            [MediaTarget("2001:db8::10", 49170)],
            None,
        )

    def test_ipv4_to_ipv6(self) -> None:
        self.rewrite(
            sdp(*HEAD, "c=IN IP4 192.0.2.10", "t=0 0", "m=audio 49170 RTP/AVP 0",
                "m=video 51372 RTP/AVP 31", "c=IN IP4 192.0.2.11"),
            [MediaTarget("2001:db8::5", 30000), MediaTarget("2001:db8::5", 30002)],
            sdp(HEAD[0], BUMPED, HEAD[2], "c=IN IP6 2001:db8::5", "t=0 0", "m=audio 30000 RTP/AVP 0",
                "m=video 30002 RTP/AVP 31", "c=IN IP6 2001:db8::5"),
        )

    def test_ipv6_to_ipv6_and_ipv4(self) -> None:
        self.rewrite(
            sdp(*HEAD, "c=IN IP6 2001:db8::10", "t=0 0", "m=audio 49170 RTP/AVP 0", "m=video 51372 RTP/AVP 31"),
            [MediaTarget("2001:db8::99", 30000), MediaTarget("203.0.113.5", 30002)],
            sdp(HEAD[0], BUMPED, HEAD[2], "t=0 0",
                "m=audio 30000 RTP/AVP 0", "c=IN IP6 2001:db8::99",
                "m=video 30002 RTP/AVP 31", "c=IN IP4 203.0.113.5"),
        )

    def test_webrtc_offer(self) -> None:
        desc = parse_sdp(WEBRTC_OFFER)
        self.assertTrue(desc.replace_media_addresses([MediaTarget("203.0.113.5", 40000), None]))
        audio, video = desc.media
        self.assertEqual(audio.lines[:3], ["m=audio 40000 UDP/TLS/RTP/SAVPF 111 103 0 8",
                                           "c=IN IP4 203.0.113.5", "a=rtcp:40001 IN IP4 203.0.113.5"])
        self.assertEqual(audio.lines[3:], parse_sdp(WEBRTC_OFFER).media[0].lines[3:])
        self.assertEqual(video.lines, parse_sdp(WEBRTC_OFFER).media[1].lines)
        self.assertEqual(desc.lines[1], "o=- 4611731400430051336 3 IN IP4 127.0.0.1")

    def test_rtcp_without_address(self) -> None:
        self.rewrite(
            sdp(*HEAD, "c=IN IP4 192.0.2.10", "t=0 0", "m=audio 49170 RTP/AVP 0", "a=rtcp:53020"),
            [MediaTarget("203.0.113.5", 30000)],
            sdp(HEAD[0], BUMPED, HEAD[2], "c=IN IP4 203.0.113.5", "t=0 0", "m=audio 30000 RTP/AVP 0",
                "a=rtcp:30001"),
        )

    def test_rtcp_explicit_port(self) -> None:
        self.rewrite(
            sdp(*HEAD, "c=IN IP4 192.0.2.10", "t=0 0", "m=audio 49170 RTP/AVP 0", "a=rtcp:53020"),
            [MediaTarget("203.0.113.5", 30000, 31000)],
            sdp(HEAD[0], BUMPED, HEAD[2], "c=IN IP4 203.0.113.5", "t=0 0", "m=audio 30000 RTP/AVP 0",
                "a=rtcp:31000"),
        )

    def test_rtcp_with_address(self) -> None:
        self.rewrite(
            sdp(*HEAD, "c=IN IP4 192.0.2.10", "t=0 0", "m=audio 49170 RTP/AVP 0",
                "a=rtcp:53020 IN IP4 192.0.2.77"),
            [MediaTarget("2001:db8::5", 30000)],
            sdp(HEAD[0], BUMPED, HEAD[2], "c=IN IP6 2001:db8::5", "t=0 0", "m=audio 30000 RTP/AVP 0",
                "a=rtcp:30001 IN IP6 2001:db8::5"),
        )

    def test_no_rtcp_added(self) -> None:
        desc = parse_sdp(sdp(*HEAD, "c=IN IP4 192.0.2.10", "t=0 0", "m=audio 49170 RTP/AVP 0"))
        desc.replace_media_addresses([MediaTarget("203.0.113.5", 30000, 30001)])
        self.assertIsNone(desc.media[0].rtcp)
        self.assertFalse(any(line.startswith("a=rtcp") for line in desc.lines))

    def test_port_count_kept(self) -> None:
        self.rewrite(
            sdp(*HEAD, "c=IN IP4 192.0.2.10", "t=0 0", "m=video 49170/2 RTP/AVP 31"),
            [MediaTarget("203.0.113.5", 30000)],
            sdp(HEAD[0], BUMPED, HEAD[2], "c=IN IP4 203.0.113.5", "t=0 0", "m=video 30000/2 RTP/AVP 31"),
        )

    def test_rejected_media_untouched(self) -> None:
        body = sdp(*HEAD, "c=IN IP4 192.0.2.10", "t=0 0", "m=audio 0 RTP/AVP 0", "c=IN IP4 192.0.2.11",
                   "a=rtcp:53020")
        self.rewrite(body, [MediaTarget("203.0.113.5", 30000)], None)

    def test_rejected_media_follows_session_connection(self) -> None:
        self.rewrite(
            sdp(*HEAD, "c=IN IP4 192.0.2.10", "t=0 0", "m=audio 49170 RTP/AVP 0", "m=video 0 RTP/AVP 31"),
            [MediaTarget("203.0.113.5", 30000), MediaTarget("203.0.113.5", 30002)],
            sdp(HEAD[0], BUMPED, HEAD[2], "c=IN IP4 203.0.113.5", "t=0 0",
                "m=audio 30000 RTP/AVP 0", "m=video 0 RTP/AVP 31"),
        )

    def test_rejected_media_keeps_old_address_when_session_connection_goes(self) -> None:
        self.rewrite(
            sdp(*HEAD, "c=IN IP4 192.0.2.10", "t=0 0", "m=audio 49170 RTP/AVP 0",
                "m=video 0 RTP/AVP 31", "m=audio 49172 RTP/AVP 0"),
            [MediaTarget("203.0.113.5", 30000), None, MediaTarget("203.0.113.6", 30002)],
            sdp(HEAD[0], BUMPED, HEAD[2], "t=0 0",
                "m=audio 30000 RTP/AVP 0", "c=IN IP4 203.0.113.5",
                "m=video 0 RTP/AVP 31", "c=IN IP4 192.0.2.10",
                "m=audio 30002 RTP/AVP 0", "c=IN IP4 203.0.113.6"),
        )

    def test_session_hold_untouched(self) -> None:
        body = sdp(*HEAD, "c=IN IP4 0.0.0.0", "t=0 0", "m=audio 49170 RTP/AVP 0", "a=rtcp:49171",
                   "m=video 51372 RTP/AVP 31")
        self.rewrite(body, [MediaTarget("203.0.113.5", 30000), MediaTarget("203.0.113.5", 30002)], None)

    def test_media_hold_untouched(self) -> None:
        self.rewrite(
            sdp(*HEAD, "c=IN IP4 192.0.2.10", "t=0 0",
                "m=audio 49170 RTP/AVP 0", "c=IN IP4 0.0.0.0", "a=sendonly",
                "m=video 51372 RTP/AVP 31"),
            [MediaTarget("203.0.113.5", 30000), MediaTarget("203.0.113.5", 30002)],
            sdp(HEAD[0], BUMPED, HEAD[2], "c=IN IP4 203.0.113.5", "t=0 0",
                "m=audio 49170 RTP/AVP 0", "c=IN IP4 0.0.0.0", "a=sendonly",
                "m=video 30002 RTP/AVP 31"),
        )

    def test_ipv6_hold_untouched(self) -> None:
        body = sdp(*HEAD, "t=0 0", "m=audio 49170 RTP/AVP 0", "c=IN IP6 ::")
        self.rewrite(body, [MediaTarget("2001:db8::5", 30000)], None)

    def test_none_target_keeps_media_and_its_address(self) -> None:
        self.rewrite(
            sdp(*HEAD, "c=IN IP4 192.0.2.10", "t=0 0", "m=audio 49170 RTP/AVP 0", "m=video 51372 RTP/AVP 31"),
            [None, MediaTarget("203.0.113.5", 30002)],
            sdp(HEAD[0], BUMPED, HEAD[2], "t=0 0",
                "m=audio 49170 RTP/AVP 0", "c=IN IP4 192.0.2.10",
                "m=video 30002 RTP/AVP 31", "c=IN IP4 203.0.113.5"),
        )

    def test_all_none(self) -> None:
        self.rewrite(sdp(*HEAD, "c=IN IP4 192.0.2.10", "t=0 0", "m=audio 49170 RTP/AVP 0"), [None], None)

    def test_direction_attributes_kept(self) -> None:
        self.rewrite(
            sdp(*HEAD, "c=IN IP4 192.0.2.10", "t=0 0", "a=recvonly",
                "m=audio 49170 RTP/AVP 0", "a=inactive", "m=audio 49172 RTP/AVP 0", "a=sendonly",
                "m=audio 49174 RTP/AVP 0"),
            [MediaTarget("203.0.113.5", 30000), MediaTarget("203.0.113.5", 30002),
             MediaTarget("203.0.113.5", 30004)],
            sdp(HEAD[0], BUMPED, HEAD[2], "c=IN IP4 203.0.113.5", "t=0 0", "a=recvonly",
                "m=audio 30000 RTP/AVP 0", "a=inactive", "m=audio 30002 RTP/AVP 0", "a=sendonly",
                "m=audio 30004 RTP/AVP 0"),
        )

    def test_unknown_lines_preserved(self) -> None:
        self.rewrite(
            sdp(*HEAD, "X=vendor thing", "c=IN IP4 192.0.2.10", "t=0 0", "k=prompt",
                "m=audio 49170 RTP/AVP 0", "y=odd", "a=x-foo:bar baz",
                "a=candidate:1 1 UDP 1 192.0.2.10 49170 typ host",
                "m=video 51372 RTP/AVP 31", "b=AS:512"),
            [MediaTarget("203.0.113.5", 30000), MediaTarget("203.0.113.6", 30002)],
            sdp(HEAD[0], BUMPED, HEAD[2], "X=vendor thing", "t=0 0", "k=prompt",
                "m=audio 30000 RTP/AVP 0", "c=IN IP4 203.0.113.5", "y=odd", "a=x-foo:bar baz",
                "a=candidate:1 1 UDP 1 192.0.2.10 49170 typ host",
                "m=video 30002 RTP/AVP 31", "c=IN IP4 203.0.113.6", "b=AS:512"),
        )

    def test_multicast_ttl_dropped(self) -> None:
        self.rewrite(
            sdp(*HEAD, "c=IN IP4 224.2.17.12/127", "t=0 0", "m=audio 49170 RTP/AVP 0"),
            [MediaTarget("203.0.113.5", 30000)],
            sdp(HEAD[0], BUMPED, HEAD[2], "c=IN IP4 203.0.113.5", "t=0 0", "m=audio 30000 RTP/AVP 0"),
        )

    def test_hostname_replaced(self) -> None:
        self.rewrite(
            sdp(*HEAD, "t=0 0", "m=audio 49170 RTP/AVP 0", "c=IN IP4 media.example.com"),
            [MediaTarget("203.0.113.5", 30000)],
            sdp(HEAD[0], BUMPED, HEAD[2], "t=0 0", "m=audio 30000 RTP/AVP 0", "c=IN IP4 203.0.113.5"),
        )

    def test_no_connection_anywhere(self) -> None:
        self.rewrite(
            sdp(*HEAD, "t=0 0", "m=audio 49170 RTP/AVP 0", "m=video 51372 RTP/AVP 31"),
            [MediaTarget("203.0.113.5", 30000), None],
            sdp(HEAD[0], BUMPED, HEAD[2], "t=0 0", "m=audio 30000 RTP/AVP 0", "c=IN IP4 203.0.113.5",
                "m=video 51372 RTP/AVP 31"),
        )

    def test_version_bumped_once(self) -> None:
        desc = parse_sdp(sdp(*HEAD, "c=IN IP4 192.0.2.10", "t=0 0",
                             "m=audio 49170 RTP/AVP 0", "m=video 51372 RTP/AVP 31", "c=IN IP4 192.0.2.11"))
        targets = [MediaTarget("203.0.113.5", 30000), MediaTarget("2001:db8::5", 30002)]
        self.assertTrue(desc.replace_media_addresses(targets))
        self.assertEqual(desc.origin.session_version, 2890844527)
        once = bytes(desc)
        self.assertFalse(desc.replace_media_addresses(targets))
        self.assertEqual(desc.origin.session_version, 2890844527)
        self.assertEqual(bytes(desc), once)

    def test_origin_address_left_alone(self) -> None:
        desc = parse_sdp(sdp(*HEAD, "c=IN IP4 192.0.2.10", "t=0 0", "m=audio 49170 RTP/AVP 0"))
        desc.replace_media_addresses([MediaTarget("2001:db8::5", 30000)])
        self.assertEqual((desc.origin.addrtype, desc.origin.address), ("IP4", "192.0.2.10"))

    def test_read_back(self) -> None:
        desc = parse_sdp(WEBRTC_OFFER)
        desc.replace_media_addresses([MediaTarget("203.0.113.5", 40000, 40003), MediaTarget("2001:db8::1", 40010)])
        audio, video = parse_sdp(bytes(desc)).media
        self.assertEqual((audio.address, audio.address_family, audio.port, audio.rtcp),
                         ("203.0.113.5", "IP4", 40000, (40003, "203.0.113.5")))
        self.assertEqual((video.address, video.address_family, video.port, video.rtcp),
                         ("2001:db8::1", "IP6", 40010, (40011, "2001:db8::1")))

    def test_bad_targets(self) -> None:
        body = sdp(*HEAD, "c=IN IP4 192.0.2.10", "t=0 0", "m=audio 49170 RTP/AVP 0", "a=rtcp:49171",
                   "m=video 51372 RTP/AVP 31")
        good = MediaTarget("203.0.113.5", 30000)
        cases = [
            ([good], ValueError, "1 targets for 2 media"),
            ([good, good, good], ValueError, "3 targets"),
            ([good, MediaTarget("relay.example.com", 30002)], ValueError, "not an IPv4 or IPv6"),
            ([good, MediaTarget("[2001:db8::1]", 30002)], ValueError, "not an IPv4 or IPv6"),
            ([good, MediaTarget("203.0.113.5", 0)], ValueError, "port 0"),
            ([good, MediaTarget("203.0.113.5", 65536)], ValueError, "port 65536"),
            ([good, MediaTarget("203.0.113.5", True)], ValueError, "port True"),  # type: ignore[arg-type]
            ([good, MediaTarget("203.0.113.5", 30002, 0)], ValueError, "rtcp_port 0"),
            ([MediaTarget("203.0.113.5", 65535), None], ValueError, "port + 1"),
            ([good, ("203.0.113.5", 30002)], TypeError, "MediaTarget"),
        ]
        for targets, error, words in cases:
            desc = parse_sdp(body)
            err = self.assertRaises(error, desc.replace_media_addresses, targets)
            self.assertIn(words, str(err))
            self.assertEqual(bytes(desc), body)
        desc = parse_sdp(body)
        self.assertTrue(desc.replace_media_addresses([MediaTarget("203.0.113.5", 65535, 1000), None]))
        self.assertEqual(desc.media[0].rtcp, (1000, None))


# -- properties -------------------------------------------------------------

TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x00"), max_size=12
)
ADDRESSES = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
    st.sampled_from(["0.0.0.0", "::", "192.0.2.10", "2001:db8::10"]),
)
SESSION_EXTRAS = [
    "i=session info", "u=http://example.com/x", "e=a@example.com", "b=CT:128", "X=vendor",
    "a=tool:test 1.0", "a=sendonly", "a=recvonly", "a=group:BUNDLE 0 1", "k=prompt",
]
MEDIA_EXTRAS = [
    "a=rtpmap:0 PCMU/8000", "a=ptime:20", "a=sendonly", "a=inactive", "a=recvonly", "a=rtcp-mux",
    "a=rtcp-fb:* nack", "a=x-foo:bar baz", "b=AS:64", "k=clear:x", "y=unknown",
    "a=candidate:1 1 UDP 1 10.0.0.1 9 typ host",
]


def connection_line(address: str) -> str:
    return f"c=IN {'IP6' if ':' in address else 'IP4'} {address}"


@st.composite
def media_sections(draw: st.DrawFn) -> List[str]:
    kind = draw(st.sampled_from(["audio", "video", "application", "text"]))
    port = 0 if draw(st.integers(0, 4)) == 2 else draw(st.integers(1, 65535))
    count = draw(st.sampled_from(["", "/1", "/2", "/3"]))
    proto = draw(st.sampled_from(["RTP/AVP", "RTP/SAVP", "rtp/avpf", "UDP/TLS/RTP/SAVPF", "udp", "TCP/MSRP"]))
    formats = draw(st.lists(st.integers(0, 127).map(str), min_size=1, max_size=4))
    lines = [f"m={kind} {port}{count} {proto} {' '.join(formats)}"]
    if draw(st.booleans()):
        lines.append("i=" + draw(TEXT))
    if draw(st.integers(0, 2)) == 0:  # most media rely on the session c=
        lines.append(connection_line(draw(ADDRESSES)))
    extras = draw(st.lists(st.sampled_from(MEDIA_EXTRAS), max_size=4))
    if draw(st.booleans()):
        rtcp = f"a=rtcp:{draw(st.integers(1, 65535))}"
        rtcp_address = draw(st.one_of(st.none(), ADDRESSES))
        if rtcp_address is not None:
            rtcp += " " + connection_line(rtcp_address)[2:]
        extras.insert(draw(st.integers(0, len(extras))), rtcp)
    return lines + extras


@st.composite
def sdp_texts(draw: st.DrawFn) -> str:
    username = draw(st.sampled_from(["-", "alice", "Some UA"]))
    session_id = draw(st.integers(0, 2**64))
    version = draw(st.integers(0, 2**64))
    origin_address = draw(ADDRESSES)
    lines = [
        "v=0",
        f"o={username} {session_id} {version} IN {'IP6' if ':' in origin_address else 'IP4'} {origin_address}",
        "s=" + draw(TEXT),
    ]
    extras = draw(st.lists(st.sampled_from(SESSION_EXTRAS), max_size=3))
    lines.extend(e for e in extras if e[0] in "iue")
    session_address = draw(st.one_of(st.none(), ADDRESSES, st.just("media.example.com")))
    if session_address is not None:
        lines.append(connection_line(session_address))
    lines.append("t=0 0")
    lines.extend(e for e in extras if e[0] not in "iue")
    for section in draw(st.lists(media_sections(), min_size=1, max_size=4)):
        lines.extend(section)
    return "\r\n".join(lines) + "\r\n"


def targets_for(desc: SessionDescription) -> st.SearchStrategy[List[Optional[MediaTarget]]]:
    target = st.builds(
        MediaTarget,
        st.sampled_from(["203.0.113.5", "203.0.113.6", "2001:db8::5", "192.0.2.10", "2001:db8::10"]),
        st.integers(1, 65534),
        st.one_of(st.none(), st.integers(1, 65535)),
    )
    some = st.integers(0, 4).flatmap(lambda n: st.none() if n == 2 else target)
    return st.lists(some, min_size=len(desc.media), max_size=len(desc.media))


#: Lines that keep the fuzzer near the interesting paths: mostly valid ones.
VALID_SOUP = st.sampled_from([
    "c=IN IP4 192.0.2.1", "c=IN IP6 ::1", "c=IN IP4 0.0.0.0", "c=IN IP4 224.2.1.1/3/2",
    "c=IN IP4 host.example", "m=audio 4000 RTP/AVP 0", "m=video 0 RTP/AVP 31", "m=audio 4000/2 udp 0",
    "m=audio 65535 RTP/AVP 0", "a=rtcp:4001", "a=rtcp:4001 IN IP6 ::2", "a=inactive", "s=-", "t=0 0",
    "i=info", "b=AS:64", "a=sendonly",
])
BAD_LINES = st.one_of(
    st.sampled_from(["", "v=0", "m=audio 70000 RTP/AVP 0", "a=rtcp:x", "c=IN IP4 1.2.3"]), TEXT
)


@st.composite
def soup_sdps(draw: st.DrawFn) -> str:
    """v=0, then valid lines with an o= and maybe one bad line among them."""
    lines = draw(st.lists(VALID_SOUP, max_size=12))
    lines.insert(draw(st.integers(0, len(lines) // 3)), "o=- 1 1 IN IP4 192.0.2.1")
    bad = draw(st.one_of(st.none(), BAD_LINES))
    if bad is not None:
        lines.insert(draw(st.integers(0, len(lines))), bad)
    return "\r\n".join(["v=0", *lines]) + "\r\n"


PROPERTY_SETTINGS = settings(max_examples=200, deadline=None, database=None)


class PropertyTests(SynchronousTestCase):
    """Generated SDPs: round trips and rewriting read back."""

    @PROPERTY_SETTINGS
    @given(sdp_texts())
    def test_round_trip(self, text: str) -> None:
        self.assertEqual(bytes(parse_sdp(text.encode())), text.encode())
        self.assertEqual(bytes(parse_sdp(text.replace("\r\n", "\n"))), text.encode())

    @PROPERTY_SETTINGS
    @given(sdp_texts())
    def test_parsed_media_match_text(self, text: str) -> None:
        desc = parse_sdp(text)
        mlines = [line for line in text.split("\r\n") if line.startswith("m=")]
        self.assertEqual(len(desc.media), len(mlines))
        for media, mline in zip(desc.media, mlines):
            kind, port, proto, *formats = mline[2:].split(" ")
            self.assertEqual((media.kind, media.proto, media.formats), (kind, proto, formats))
            self.assertEqual(f"{media.port}/{media.port_count}", port if "/" in port else f"{port}/1")
            self.assertEqual(media.port_range, media.port_count * (2 if proto.upper().startswith("RTP/") else 1))

    @PROPERTY_SETTINGS
    @given(sdp_texts(), st.data())
    def test_rewrite_reads_back(self, text: str, data: st.DataObject) -> None:
        desc = parse_sdp(text)
        old = parse_sdp(text)
        targets = data.draw(targets_for(desc))
        changed = desc.replace_media_addresses(targets)
        new = parse_sdp(bytes(desc))
        self.assertEqual(bytes(new), bytes(desc))

        self.assertEqual(new.origin.session_version, old.origin.session_version + (1 if changed else 0))
        self.assertEqual(changed, new.lines[:1] + new.lines[2:] != old.lines[:1] + old.lines[2:])
        if not changed:
            self.assertEqual(bytes(desc), text.encode())

        def kept(d: SessionDescription) -> List[str]:
            return [line for line in d.lines if line[0] not in "cmo" and not line.startswith("a=rtcp:")]
        self.assertEqual(kept(new), kept(old))

        for before, after, target in zip(old.media, new.media, targets):
            self.assertEqual(after.direction, before.direction)
            self.assertEqual(after.port_count, before.port_count)
            if target is None or before.port == 0 or unspecified(before.address):
                self.assertEqual(after.lines[0], before.lines[0])
                self.assertEqual(after.rtcp, before.rtcp)
                if before.port != 0:
                    self.assertTrue(same_address(after.address, before.address), (after.address, before.address))
            else:
                self.assertEqual(after.port, target.port)
                self.assertTrue(same_address(after.address, target.address), (after.address, target.address))
                self.assertEqual(after.address_family, "IP6" if ":" in target.address else "IP4")
                if before.rtcp is None:
                    self.assertIsNone(after.rtcp)
                else:
                    assert after.rtcp is not None
                    rtcp_port = target.rtcp_port if target.rtcp_port is not None else target.port + 1
                    self.assertEqual(after.rtcp[0], rtcp_port)
                    rtcp_address = None if before.rtcp[1] is None else target.address
                    self.assertTrue(same_address(after.rtcp[1], rtcp_address))
            if before.address is not None:
                self.assertIsNotNone(after.address)

        self.assertFalse(desc.replace_media_addresses(targets))
        self.assertEqual(bytes(desc), bytes(new))

    @PROPERTY_SETTINGS
    @given(st.one_of(st.binary(max_size=200), soup_sdps()))
    def test_anything_parses_or_is_refused(self, data: object) -> None:
        try:
            desc = parse_sdp(data)  # type: ignore[arg-type]
        except SDPError as err:
            self.assertTrue(str(err))
            return
        out = bytes(desc)
        self.assertEqual(bytes(parse_sdp(out)), out)
        desc_before = parse_sdp(out)
        targets = [MediaTarget("2001:db8::5", 30000 + 2 * i) for i in range(len(desc.media))]
        desc.replace_media_addresses(targets)
        moved = parse_sdp(bytes(desc))
        for i, (before, after) in enumerate(zip(desc_before.media, moved.media)):
            if before.port == 0 or unspecified(before.address):
                self.assertEqual(after.lines[0], before.lines[0])
            else:
                self.assertEqual(after.port, 30000 + 2 * i)
                self.assertTrue(same_address(after.address, "2001:db8::5"), bytes(desc))
