"""G.711 tables: ITU reference points, sign handling, round trips, the
bytes helpers against the sample helpers, and sox's own conversion of a
file (when sox is installed)."""
from __future__ import annotations

import bisect
import hashlib
import os
import shutil
import struct
import subprocess
import tempfile
import wave
from array import array

from hypothesis import given, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from sipproxy.ua.media import g711
from tests.util import require_program

ALL_SAMPLES = array("h", range(-32768, 32768))


class ReferencePointTests(SynchronousTestCase):
    def test_ulaw_decode_reference_points(self) -> None:
        # G.711 table 2a: 0xFF and 0x7F are +0 and -0, 0x80 and 0x00 the
        # largest magnitudes (8031 in 14-bit units, 32124 scaled to 16 bits)
        self.assertEqual(g711.ULAW_DECODE[0xFF], 0)
        self.assertEqual(g711.ULAW_DECODE[0x7F], 0)
        self.assertEqual(g711.ULAW_DECODE[0x80], 32124)
        self.assertEqual(g711.ULAW_DECODE[0x00], -32124)
        # the first step of segment 0 is 2 units (8 in 16-bit)
        self.assertEqual(g711.ULAW_DECODE[0xFE], 8)
        self.assertEqual(g711.ULAW_DECODE[0x7E], -8)

    def test_alaw_decode_reference_points(self) -> None:
        # G.711 table 1a: 0xD5 / 0x55 are the smallest positive / negative
        # values (1 in 12-bit units = 8), 0xAA / 0x2A the largest (4032 = 32256)
        self.assertEqual(g711.ALAW_DECODE[0xD5], 8)
        self.assertEqual(g711.ALAW_DECODE[0x55], -8)
        self.assertEqual(g711.ALAW_DECODE[0xAA], 32256)
        self.assertEqual(g711.ALAW_DECODE[0x2A], -32256)

    def test_encode_reference_points(self) -> None:
        self.assertEqual(g711.ulaw_encode([0, 32767, -32768, -1]), bytes([0xFF, 0x80, 0x00, 0x7F]))
        self.assertEqual(g711.alaw_encode([0, 32767, -32768, -1]), bytes([0xD5, 0xAA, 0x2A, 0x55]))

    def test_silence_bytes(self) -> None:
        self.assertEqual(g711.ULAW_DECODE[g711.ULAW_SILENCE], 0)
        self.assertEqual(g711.ulaw_encode([0]), bytes([g711.ULAW_SILENCE]))
        self.assertEqual(g711.alaw_encode([0]), bytes([g711.ALAW_SILENCE]))

    def test_sign_symmetry(self) -> None:
        # x and ~x (= -x - 1) land on codes differing only in the sign bit
        for x in range(0, 32768, 37):
            u_pos, u_neg = g711.ulaw_encode([x, ~x])
            self.assertEqual(u_pos ^ u_neg, 0x80, x)
            a_pos, a_neg = g711.alaw_encode([x, ~x])
            self.assertEqual(a_pos ^ a_neg, 0x80, x)
        for code in range(128):
            self.assertEqual(g711.ULAW_DECODE[code], -g711.ULAW_DECODE[code | 0x80])
            self.assertEqual(g711.ALAW_DECODE[code], -g711.ALAW_DECODE[code | 0x80])

    def test_decode_is_monotonic(self) -> None:
        # µ-law codes 0xFF..0x80 rise from 0 to the maximum
        positive = [g711.ULAW_DECODE[code] for code in range(0xFF, 0x7F, -1)]
        self.assertEqual(positive, sorted(positive))
        self.assertEqual(len(set(positive)), 128)

    def test_code_round_trip(self) -> None:
        # decoding then encoding a code gives it back (µ-law -0 becomes +0)
        for code in range(256):
            expected = 0xFF if code == 0x7F else code
            self.assertEqual(g711.ulaw_encode([g711.ULAW_DECODE[code]])[0], expected)
            self.assertEqual(g711.alaw_encode([g711.ALAW_DECODE[code]])[0], code)

    def test_encoder_picks_a_neighbouring_level(self) -> None:
        # for every 16-bit sample, no quantisation level lies strictly
        # between the sample and its decoded value: the coder picked one
        # of the two levels around it (or the end level beyond full scale)
        for encode, decode, table in ((g711.ulaw_encode, g711.ulaw_decode, g711.ULAW_DECODE),
                                      (g711.alaw_encode, g711.alaw_decode, g711.ALAW_DECODE)):
            levels = sorted(set(table))
            back = decode(encode(ALL_SAMPLES))
            for x, y in zip(ALL_SAMPLES, back):
                low, high = min(x, y), max(x, y)
                between = max(bisect.bisect_left(levels, high) - bisect.bisect_right(levels, low), 0)
                self.assertEqual(between, 0, (x, y))

    def test_tables_are_the_same_on_every_runtime(self) -> None:
        """The digest of all four tables, as computed on CPython 3.11 and
        PyPy 3.9 (integer arithmetic only: any runtime must agree)."""
        digest = hashlib.sha256()
        for part in (g711.ULAW_ENCODE, g711.ALAW_ENCODE, struct.pack("<256h", *g711.ULAW_DECODE),
                     struct.pack("<256h", *g711.ALAW_DECODE)):
            digest.update(part)
        self.assertEqual(digest.hexdigest(), "92cd02482b2bbcdbda8b7f333bfca3007f811d8fc6877605c4fcc350f9f38957")

    def test_empty_and_single_sample(self) -> None:
        self.assertEqual(g711.ulaw_encode([]), b"")
        self.assertEqual(g711.pcm16_to_alaw(b""), b"")
        self.assertEqual(g711.pcm16_to_ulaw(b"\x00\x80"), b"\x00")
        self.assertEqual(g711.ulaw_to_pcm16(b""), b"")

    def test_encode_refuses_out_of_range(self) -> None:
        self.assertRaises(OverflowError, g711.ulaw_encode, [40000])

    def test_odd_pcm_length(self) -> None:
        self.assertRaises(ValueError, g711.pcm16_to_ulaw, b"\x00\x01\x02")


class BytesHelperTests(SynchronousTestCase):
    def test_pcm16_helpers_agree_with_sample_helpers(self) -> None:
        pcm = ALL_SAMPLES.tobytes()
        self.assertEqual(g711.pcm16_to_ulaw(pcm), g711.ulaw_encode(ALL_SAMPLES))
        self.assertEqual(g711.pcm16_to_alaw(pcm), g711.alaw_encode(ALL_SAMPLES))
        codes = bytes(range(256))
        self.assertEqual(g711.ulaw_to_pcm16(codes), g711.ulaw_decode(codes).tobytes())
        self.assertEqual(g711.alaw_to_pcm16(codes), g711.alaw_decode(codes).tobytes())

    def test_pcm16_is_little_endian(self) -> None:
        self.assertEqual(g711.ulaw_to_pcm16(bytes([0x80])), (32124).to_bytes(2, "little", signed=True))
        self.assertEqual(g711.pcm16_to_ulaw((32124).to_bytes(2, "little", signed=True)), bytes([0x80]))

    def test_transcoding(self) -> None:
        codes = bytes(range(256))
        self.assertEqual(g711.ulaw_to_alaw(codes), g711.alaw_encode(g711.ulaw_decode(codes)))
        self.assertEqual(g711.alaw_to_ulaw(codes), g711.ulaw_encode(g711.alaw_decode(codes)))

    def test_codec_for(self) -> None:
        self.assertEqual(g711.codec_for("pcmu/8000").payload_type, 0)
        self.assertEqual(g711.codec_for("PCMA").payload_type, 8)
        self.assertRaises(ValueError, g711.codec_for, "G729")

    @given(st.lists(st.integers(-32768, 32767), max_size=400))
    def test_bytes_round_trip_is_idempotent(self, samples: list[int]) -> None:
        # one pass of quantisation is final: coding the decoded signal again
        # changes nothing (µ-law's -0 may become +0, both decode to 0)
        for codec in g711.CODECS.values():
            once = codec.decode(codec.encode(array("h", samples).tobytes()))
            self.assertEqual(codec.decode(codec.encode(once)), once)


class SoxTests(SynchronousTestCase):
    """sox (libsox's g711.c) as an independent coder."""

    def setUp(self) -> None:
        self.sox = require_program("sox")
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir)

    def sox_encode(self, samples: array, encoding: str) -> bytes:
        source = os.path.join(self.dir, "in.wav")
        with wave.open(source, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(8000)
            w.writeframes(samples.tobytes())
        target = os.path.join(self.dir, "out.raw")
        # -D: no dither, so sox quantises exactly
        subprocess.run([self.sox, "-D", "-V1", source, "-t", "raw", "-e", encoding, "-b", "8", target],
                       check=True, timeout=60)
        with open(target, "rb") as f:
            return f.read()

    def sox_decode(self, codes: bytes, encoding: str) -> bytes:
        source = os.path.join(self.dir, "in.raw")
        with open(source, "wb") as f:
            f.write(codes)
        target = os.path.join(self.dir, "out.raw")
        subprocess.run([self.sox, "-V1", "-t", "raw", "-r", "8000", "-c", "1", "-e", encoding, "-b", "8", source,
                        "-t", "raw", "-e", "signed", "-b", "16", "-L", target], check=True, timeout=60)
        with open(target, "rb") as f:
            return f.read()

    def test_decode_matches_sox(self) -> None:
        codes = bytes(range(256))
        self.assertEqual(g711.ulaw_to_pcm16(codes), self.sox_decode(codes, "u-law"))
        self.assertEqual(g711.alaw_to_pcm16(codes), self.sox_decode(codes, "a-law"))

    def test_encode_matches_sox_but_at_decision_edges(self) -> None:
        """sox rounds a 16-bit sample to 14 (13) bits before coding; the
        ITU G.191 reference coder, as ours, truncates symmetrically. They
        can differ only for samples within a few LSBs of a decision
        threshold, and then by one code, the two codes' values bracketing
        the sample."""
        for encoding, encode, table in (("u-law", g711.ulaw_encode, g711.ULAW_DECODE),
                                        ("a-law", g711.alaw_encode, g711.ALAW_DECODE)):
            theirs = self.sox_encode(ALL_SAMPLES, encoding)
            ours = encode(ALL_SAMPLES)
            self.assertEqual(len(theirs), len(ours))
            # (µ-law's +0 and -0 codes both mean 0: not a difference)
            differ = [i for i in range(len(ours)) if table[ours[i]] != table[theirs[i]]]
            self.assertLess(len(differ), len(ours) // 50, encoding)
            for i in differ:
                x = ALL_SAMPLES[i]
                a, b = sorted((table[ours[i]], table[theirs[i]]))
                self.assertTrue(a <= x <= b or abs(x) > 32000, (encoding, x, a, b))
                self.assertLessEqual(abs(x - table[ours[i]]), b - a, (encoding, x))

    def test_sox_file_of_speechlike_audio(self) -> None:
        """A file sox synthesises and codes (a chord with noise): our coding
        of its PCM is sox's for nearly every sample."""
        pcm_path = os.path.join(self.dir, "chord.wav")
        subprocess.run([self.sox, "-V1", "-n", "-r", "8000", "-b", "16", "-c", "1", pcm_path, "synth", "1",
                        "sin", "220", "sin", "330", "sin", "1100", "whitenoise", "remix", "-", "gain", "-3"],
                       check=True, timeout=60)
        with wave.open(pcm_path, "rb") as w:
            pcm = w.readframes(w.getnframes())
        ulaw_path = os.path.join(self.dir, "chord.ul")
        subprocess.run([self.sox, "-D", "-V1", pcm_path, "-t", "raw", "-e", "u-law", "-b", "8", ulaw_path],
                       check=True, timeout=60)
        with open(ulaw_path, "rb") as f:
            theirs = f.read()
        ours = g711.pcm16_to_ulaw(pcm)
        self.assertEqual(len(ours), 8000)
        same = sum(1 for a, b in zip(ours, theirs) if g711.ULAW_DECODE[a] == g711.ULAW_DECODE[b])
        self.assertGreater(same, 0.97 * len(ours))
        self.assertTrue(all(abs(g711.ULAW_DECODE[a] - g711.ULAW_DECODE[b]) <= 1024 for a, b in zip(ours, theirs)))
