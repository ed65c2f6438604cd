"""SDP offer/answer (RFC 3264): offers, answers to the usual and unusual
offers, hold, and reading what was agreed."""
from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from sipproxy.sip.offer_answer import (
    PCMA,
    PCMU,
    Codec,
    NoCommonCodec,
    SdpSession,
    answer_direction,
    remote_media,
)
from sipproxy.sip.sdp import SDPError, parse_sdp
from tests.util import count_urandom_reads


def sdp(*media: str, c: str = "IN IP4 198.51.100.7") -> bytes:
    lines = ["v=0", "o=peer 42 7 IN IP4 198.51.100.7", "s=call", f"c={c}", "t=0 0"]
    for block in media:
        lines += block.split("\n")
    return ("\r\n".join(lines) + "\r\n").encode()


PCMU_PCMA_DTMF = "m=audio 40000 RTP/AVP 0 8 96\na=rtpmap:96 telephone-event/8000\na=fmtp:96 0-16"


class OfferTests(SynchronousTestCase):
    def test_offer_lines(self) -> None:
        session = SdpSession("192.0.2.1", 30000, session_id=1234)
        text = session.offer().decode()
        self.assertEqual(text.split("\r\n"), [
            "v=0", "o=- 1234 0 IN IP4 192.0.2.1", "s=-", "c=IN IP4 192.0.2.1", "t=0 0",
            "m=audio 30000 RTP/AVP 0 8 101", "a=rtpmap:0 PCMU/8000", "a=rtpmap:8 PCMA/8000",
            "a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-15", "a=ptime:20", "a=sendrecv", ""])
        parsed = parse_sdp(text.encode())
        self.assertEqual(parsed.media[0].formats, ["0", "8", "101"])

    def test_version_rises_and_session_id_stays(self) -> None:
        session = SdpSession("192.0.2.1", 30000)
        first, second = parse_sdp(session.offer()), parse_sdp(session.offer("sendonly"))
        self.assertEqual(first.origin.session_id, second.origin.session_id)
        self.assertEqual(second.origin.session_version, first.origin.session_version + 1)
        self.assertEqual(second.media[0].direction, "sendonly")  # hold, RFC 3264 8.4
        self.assertEqual(second.media[0].address, "192.0.2.1")
        third = parse_sdp(session.answer(sdp(PCMU_PCMA_DTMF)))
        self.assertEqual(third.origin.session_version, first.origin.session_version + 2)

    def test_a_session_takes_its_id_without_a_system_call(self) -> None:
        # a UA makes one session per call: secrets.randbelow cost one or two
        # getrandom calls each; ids' pool reads 4 KiB for hundreds of them
        reads = count_urandom_reads(self)
        session_ids = {SdpSession("192.0.2.1", 30000).session_id for _ in range(200)}
        self.assertEqual(len(session_ids), 200)
        self.assertLessEqual(len(reads), 1)

    def test_ipv6_and_no_telephone_event(self) -> None:
        text = SdpSession("2001:db8::1", 4000, codecs=[PCMA], telephone_event=None).offer().decode()
        self.assertIn("c=IN IP6 2001:db8::1", text)
        self.assertIn("m=audio 4000 RTP/AVP 8\r\n", text)
        self.assertNotIn("telephone-event", text)

    def test_bad_direction(self) -> None:
        self.assertRaises(ValueError, SdpSession("192.0.2.1", 1).offer, "hold")
        self.assertRaises(ValueError, SdpSession, "192.0.2.1", 1, codecs=[])


class AnswerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.session = SdpSession("192.0.2.1", 30000)

    def answer(self, offer: bytes, **kw) -> object:
        return parse_sdp(self.session.answer(offer, **kw))

    def test_pcma_only_offer_gets_pcma(self) -> None:
        answer = self.answer(sdp("m=audio 40000 RTP/AVP 8"))
        media = answer.media[0]
        self.assertEqual((media.port, media.formats), (30000, ["8"]))
        self.assertEqual(media.attributes, ["rtpmap:8 PCMA/8000", "ptime:20", "sendrecv"])
        self.assertEqual(answer.connection.address, "192.0.2.1")

    def test_common_codecs_in_offerers_order_with_their_numbers_and_dtmf(self) -> None:
        offer = sdp("m=audio 40000 RTP/AVP 18 8 0 97\na=rtpmap:97 telephone-event/8000\na=fmtp:97 0-15")
        media = self.answer(offer).media[0]
        self.assertEqual(media.formats, ["8", "0", "97"])
        self.assertIn("rtpmap:97 telephone-event/8000", media.attributes)
        self.assertIn("fmtp:97 0-15", media.attributes)

    def test_dynamic_payload_type_matched_by_name(self) -> None:
        media = self.answer(sdp("m=audio 40000 RTP/AVP 120\na=rtpmap:120 pcmu/8000")).media[0]
        self.assertEqual(media.formats, ["120"])
        self.assertEqual(media.attributes[0], "rtpmap:120 PCMU/8000")

    def test_telephone_event_not_offered_not_answered(self) -> None:
        media = self.answer(sdp("m=audio 40000 RTP/AVP 0")).media[0]
        self.assertEqual(media.formats, ["0"])
        self.assertFalse(any("telephone-event" in a for a in media.attributes))
        wrong_rate = self.answer(sdp("m=audio 40000 RTP/AVP 0 101\na=rtpmap:101 telephone-event/16000"))
        self.assertEqual(wrong_rate.media[0].formats, ["0"])

    def test_no_common_codec(self) -> None:
        with self.assertRaises(NoCommonCodec) as caught:
            self.session.answer(sdp("m=audio 40000 RTP/AVP 18 96\na=rtpmap:96 telephone-event/8000"))
        self.assertEqual(caught.exception.status, 488)
        self.assertRaises(NoCommonCodec, self.session.answer, sdp("m=video 5000 RTP/AVP 31"))
        self.assertRaises(NoCommonCodec, self.session.answer, sdp("m=audio 5000 RTP/SAVP 0"))
        self.assertRaises(NoCommonCodec, self.session.answer, sdp())
        self.assertRaises(SDPError, self.session.answer, b"garbage")

    def test_same_count_and_order_other_streams_refused(self) -> None:
        offer = sdp("m=video 5000 RTP/AVP 31", "m=audio 0 RTP/AVP 0", "m=audio 40000 RTP/AVP 0",
                    "m=audio 40002 RTP/AVP 8")
        answer = self.answer(offer)
        self.assertEqual([(m.kind, m.port, m.formats) for m in answer.media], [
            ("video", 0, ["31"]), ("audio", 0, ["0"]), ("audio", 30000, ["0"]),
            ("audio", 0, ["8"])])

    def test_directions(self) -> None:
        for offered, answered in (("sendrecv", "sendrecv"), ("sendonly", "recvonly"),
                                  ("recvonly", "sendonly"), ("inactive", "inactive")):
            media = self.answer(sdp(f"m=audio 40000 RTP/AVP 0\na={offered}")).media[0]
            self.assertEqual(media.direction, answered, offered)
        session_level = sdp("m=audio 40000 RTP/AVP 0").replace(b"t=0 0\r\n", b"t=0 0\r\na=sendonly\r\n")
        self.assertEqual(self.answer(session_level).media[0].direction, "recvonly")
        self.assertEqual(self.answer(sdp("m=audio 40000 RTP/AVP 0"), direction="sendonly").media[0].direction,
                         "sendonly")
        self.assertEqual(self.answer(sdp("m=audio 40000 RTP/AVP 0\na=sendonly"), direction="sendonly")
                         .media[0].direction, "inactive")

    def test_legacy_hold_with_zero_address(self) -> None:
        held = sdp("m=audio 40000 RTP/AVP 0", c="IN IP4 0.0.0.0")
        self.assertEqual(self.answer(held).media[0].direction, "recvonly")
        params = remote_media(held)
        self.assertEqual((params.direction, params.send, params.receive), ("sendonly", False, True))

    def test_answer_direction_table(self) -> None:
        self.assertEqual(answer_direction("sendrecv", "recvonly"), "recvonly")
        self.assertEqual(answer_direction("recvonly", "recvonly"), "inactive")
        self.assertRaises(ValueError, answer_direction, "hold")


class RemoteMediaTests(SynchronousTestCase):
    def test_reads_an_answer(self) -> None:
        answer = sdp("m=audio 40000 RTP/AVP 8 0 96\na=rtpmap:96 telephone-event/8000\na=ptime:30\na=recvonly")
        params = remote_media(answer)
        self.assertEqual((params.address, params.port, params.payload_type, params.codec, params.rate),
                         ("198.51.100.7", 40000, 8, "PCMA", 8000))
        self.assertEqual((params.telephone_event, params.ptime, params.direction), (96, 30, "recvonly"))
        self.assertEqual((params.send, params.receive), (True, False))

    def test_media_level_connection_and_our_codec_choice(self) -> None:
        offer = sdp("m=audio 0 RTP/AVP 0", "m=audio 40000 RTP/AVP 18 0\nc=IN IP4 203.0.113.9")
        params = remote_media(offer, codecs=[PCMU])
        self.assertEqual((params.address, params.port, params.payload_type, params.telephone_event),
                         ("203.0.113.9", 40000, 0, None))
        self.assertEqual(params.ptime, 20)
        self.assertRaises(NoCommonCodec, remote_media, offer, [Codec(9, "G722")])

    def test_our_offer_read_back_and_answered_end_to_end(self) -> None:
        alice = SdpSession("192.0.2.1", 30000, codecs=[PCMA, PCMU])
        bob = SdpSession("192.0.2.2", 32000)
        offer = alice.offer()
        answer = bob.answer(offer)
        at_bob, at_alice = remote_media(offer, bob.codecs), remote_media(answer, alice.codecs)
        self.assertEqual((at_bob.address, at_bob.port, at_bob.codec), ("192.0.2.1", 30000, "PCMA"))
        self.assertEqual((at_alice.address, at_alice.port, at_alice.codec), ("192.0.2.2", 32000, "PCMA"))
        self.assertEqual((at_bob.telephone_event, at_alice.telephone_event), (101, 101))
        hold = alice.offer("sendonly")
        self.assertEqual(remote_media(bob.answer(hold)).direction, "recvonly")


class RememberedBodyTests(SynchronousTestCase):
    """A peer sends the same SDP body call after call: what is read from
    it is remembered per body, and answers the same as a fresh parse."""

    def setUp(self) -> None:
        from sipproxy.sip import offer_answer

        for cache in (offer_answer._BODIES, offer_answer._PARAMS, offer_answer._ANSWERS):
            cache.clear()
            self.addCleanup(cache.clear)

    def test_same_readings_every_time(self) -> None:
        body = sdp(PCMU_PCMA_DTMF)
        for codecs in ((PCMU, PCMA), (PCMA,), (PCMA, PCMU)):
            fresh = remote_media(parse_sdp(body), codecs)
            for _ in range(3):
                self.assertEqual(remote_media(body, codecs), fresh)
        for _ in range(2):
            ours = SdpSession("192.0.2.1", 30000, session_id=9, version=3)
            theirs = SdpSession("192.0.2.1", 30000, session_id=9, version=3)
            self.assertEqual(ours.answer(body, "sendonly"), theirs.answer(parse_sdp(body), "sendonly"))

    def test_remembered_answers_as_fresh(self) -> None:
        """An answer made from a remembered plan is byte for byte the one
        made from a fresh parse, for each port, codec list, telephone-event,
        ptime and direction, and the o= version still rises."""
        offers = [
            sdp(PCMU_PCMA_DTMF),
            sdp("m=video 5000 RTP/AVP 31", "m=audio 0 RTP/AVP 0", "m=audio 40000 RTP/AVP 8 0",
                "m=audio 40002 RTP/AVP 8", "m=image 6000/2 udptl t38"),
            sdp("m=audio 40000 RTP/AVP 0 101\na=rtpmap:101 telephone-event/16000\na=sendonly"),
            sdp("m=audio 40000 RTP/AVP 96 8\na=rtpmap:96 PCMU/8000\na=ptime:30", c="IN IP4 0.0.0.0"),
        ]
        profiles = [dict(), dict(codecs=(PCMA,)), dict(telephone_event=None), dict(ptime=30),
                    dict(codecs=(PCMA, PCMU), telephone_event=Codec(100, "telephone-event", fmtp="0-11"))]
        refused = 0
        for offer in offers:
            accepted = [m.port for m in parse_sdp(offer).media].index(40000)  # each offer's usable stream
            for profile in profiles:
                for port in (30000, 30002):
                    for direction in ("sendrecv", "sendonly", "inactive"):
                        ours = SdpSession("192.0.2.1", port, session_id=9, **profile)
                        fresh = SdpSession("192.0.2.1", port, session_id=9, **profile)
                        try:
                            expected = [fresh.answer(parse_sdp(offer), direction) for _ in range(2)]
                        except NoCommonCodec:
                            self.assertRaises(NoCommonCodec, ours.answer, offer, direction)
                            self.assertRaises(NoCommonCodec, ours.answer, offer, direction)
                            refused += 1
                            continue
                        for answer in expected:  # the second answer raises the version
                            self.assertEqual(ours.answer(offer, direction), answer)
                            self.assertEqual(parse_sdp(answer).media[accepted].port, port)
                        self.assertEqual(ours.version, 1)
        self.assertEqual(refused, 2 * 3)  # PCMA alone for the PCMU offer

    def test_refusals_every_time(self) -> None:
        from sipproxy.sip import offer_answer

        no_common = sdp("m=audio 40000 RTP/AVP 3")
        hostile = [b"", b"v=1\r\n", b"v=0\r\nm=audio 1 RTP/AVP 0\r\n", b"v=0\r\no=x\x00 1 1 IN IP4 a\r\n",
                   sdp("m=audio 99999999 RTP/AVP 0"), b"\xff\xfe" * 50]
        for _ in range(2):
            self.assertRaises(NoCommonCodec, remote_media, no_common)
            self.assertRaises(NoCommonCodec, SdpSession("192.0.2.1", 30000).answer, no_common)
            for body in hostile:
                self.assertRaises(SDPError, remote_media, body)
                self.assertRaises(SDPError, SdpSession("192.0.2.1", 30000).answer, body)
        for body in hostile:
            self.assertNotIn(body, offer_answer._BODIES)
        self.assertEqual(len(offer_answer._ANSWERS), 0)  # nothing remembered for a refusal

    def test_bounded(self) -> None:
        from sipproxy.sip import offer_answer

        for port in range(1000, 1000 + offer_answer._BODIES.max_entries + 5):
            remote_media(sdp(f"m=audio {port} RTP/AVP 0"))
        self.assertLessEqual(len(offer_answer._BODIES), offer_answer._BODIES.max_entries)
        self.assertLessEqual(len(offer_answer._PARAMS), offer_answer._PARAMS.max_entries)
        for port in range(1000, 1000 + offer_answer._ANSWERS.max_entries + 5):
            SdpSession("192.0.2.1", 30000).answer(sdp(f"m=audio {port} RTP/AVP 0"))
        self.assertLessEqual(len(offer_answer._ANSWERS), offer_answer._ANSWERS.max_entries)
        big = sdp(f"m=audio 4000 RTP/AVP 0\na=x-pad:{'p' * 5000}")
        self.assertEqual(remote_media(big).port, 4000)
        self.assertEqual(parse_sdp(SdpSession("192.0.2.1", 30000).answer(big)).media[0].port, 30000)
        self.assertFalse(any(key[0] == big for key in offer_answer._ANSWERS._table))
        self.assertNotIn(big, offer_answer._BODIES)
