"""Audio files: WAV reading with conversion, one-line errors, Net::SIP raw
payload files, frame sources and sinks."""
from __future__ import annotations

import math
import os
import shutil
import subprocess
import tempfile
import wave
from array import array

from twisted.trial.unittest import SynchronousTestCase

from sipproxy.ua.media.audiofile import (AudioFileError, PcmSource, RawPayloadSink, RawPayloadSource, WavSink,
                                         WavSource, read_wav, resample, write_wav)
from tests.util import require_program


def sine(freq: float, rate: int, seconds: float, amplitude: float = 10000.0) -> array:
    return array("h", (int(amplitude * math.sin(2 * math.pi * freq * n / rate)) for n in range(int(rate * seconds))))


def level(samples, freq: float, rate: int = 8000) -> float:
    """Amplitude of the C{freq} component (Goertzel, rectangular)."""
    c = 2 * math.cos(2 * math.pi * freq / rate)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + c * s1 - s2, s1
    return 2 * math.sqrt(max(s1 * s1 + s2 * s2 - c * s1 * s2, 0.0)) / len(samples)


class TempDirTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir)

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def wav(self, name: str, data: bytes, channels: int = 1, width: int = 2, rate: int = 8000) -> str:
        path = self.path(name)
        with wave.open(path, "wb") as w:
            w.setnchannels(channels)
            w.setsampwidth(width)
            w.setframerate(rate)
            w.writeframes(data)
        return path

    def assertRefused(self, path: str, reason: str) -> AudioFileError:
        with self.assertRaises(AudioFileError) as caught:
            read_wav(path)
        message = str(caught.exception)
        self.assertTrue(message.startswith(path + ": "), message)
        self.assertIn(reason, message)
        self.assertNotIn("\n", message)
        return caught.exception


class ReadWavTests(TempDirTestCase):
    def test_8khz_mono_is_read_as_is(self) -> None:
        samples = sine(440, 8000, 0.5)
        self.assertEqual(read_wav(self.wav("a.wav", samples.tobytes())), samples.tobytes())
        write_wav(self.path("b.wav"), samples.tobytes())
        self.assertEqual(read_wav(self.path("b.wav")), samples.tobytes())
        self.assertRaises(AudioFileError, write_wav, self.path("no/b.wav"), b"")

    def test_stereo_is_downmixed(self) -> None:
        frames = array("h", [1000, 3000, -2000, -4000] * 50)
        self.assertEqual(array("h", read_wav(self.wav("s.wav", frames.tobytes(), channels=2))).tolist(),
                         [2000, -3000] * 50)

    def test_8_bit_unsigned_is_widened(self) -> None:
        data = bytes([128, 255, 0, 192])
        self.assertEqual(array("h", read_wav(self.wav("u8.wav", data, width=1))).tolist(),
                         [0, 127 << 8, -32768, 64 << 8])

    def test_24_and_32_bit_keep_the_top_16_bits(self) -> None:
        value = 0x123456
        self.assertEqual(array("h", read_wav(self.wav("24.wav", value.to_bytes(3, "little"), width=3))).tolist(),
                         [0x1234])
        negative = (-0x12345678) & 0xFFFFFFFF
        self.assertEqual(array("h", read_wav(self.wav("32.wav", negative.to_bytes(4, "little"), width=4))).tolist(),
                         [-0x1235])

    def test_16khz_is_resampled(self) -> None:
        pcm = read_wav(self.wav("16k.wav", sine(1000, 16000, 1.0).tobytes(), rate=16000))
        samples = array("h", pcm)
        self.assertEqual(len(samples), 8000)
        self.assertLess(abs(level(samples, 1000) - 10000), 800)
        self.assertLess(level(samples, 2000), 200)

    def test_upsampling(self) -> None:
        samples = array("h", read_wav(self.wav("6k.wav", sine(500, 6000, 1.0).tobytes(), rate=6000)))
        self.assertEqual(len(samples), 8000)
        self.assertLess(abs(level(samples, 500) - 10000), 500)

    def test_refusals(self) -> None:
        with open(self.path("text.wav"), "w") as f:
            f.write("this is not audio at all, just words\n")
        self.assertRefused(self.path("text.wav"), "not a WAV file")
        self.assertRefused(self.path("missing.wav"), "cannot open: No such file or directory")
        self.assertRefused(self.dir, "cannot open")
        self.assertRefused(self.wav("empty.wav", b""), "no audio")
        good = self.wav("good.wav", sine(440, 8000, 0.1).tobytes())
        with open(good, "rb") as f:
            head = f.read(20)
        with open(self.path("cut.wav"), "wb") as f:
            f.write(head)
        error = self.assertRefused(self.path("cut.wav"), "")
        self.assertTrue(error.reason)

    def test_length_limit(self) -> None:
        path = self.wav("long.wav", bytes(16000 * 3))
        self.assertEqual(len(read_wav(path, max_seconds=5)), 48000)
        with self.assertRaises(AudioFileError) as caught:
            read_wav(path, max_seconds=2)
        self.assertIn("3 s long", str(caught.exception))


class SoxWavTests(TempDirTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.sox_path = require_program("sox")

    def make(self, name: str, *options: str, effect=("synth", "0.5", "sin", "1000")) -> str:
        path = self.path(name)
        subprocess.run([self.sox_path, "-R", "-V1", "-n", *options, path, *effect], check=True, timeout=60)
        return path

    def test_alaw_mulaw_and_float_wavs_are_refused_by_name(self) -> None:
        self.assertRefused(self.make("a.wav", "-r", "8000", "-e", "a-law"), "A-law WAV (format 6), need PCM")
        self.assertRefused(self.make("u.wav", "-r", "8000", "-e", "u-law"), "µ-law WAV (format 7)")
        self.assertRefused(self.make("f.wav", "-r", "8000", "-e", "floating-point", "-b", "32"), "float")

    def test_44k1_stereo_24_bit(self) -> None:
        path = self.make("cd.wav", "-r", "44100", "-c", "2", "-b", "24",
                         effect=("synth", "1", "sin", "1000", "sin", "1000", "gain", "-6"))
        samples = array("h", read_wav(path))
        self.assertEqual(len(samples), 8000)
        self.assertLess(abs(level(samples[800:7200], 1000) - 16384), 1500)

    def test_downsampling_attenuates_aliases(self) -> None:
        """A 6 kHz tone at 48 kHz would fold to 2 kHz at 8 kHz; the box
        filter takes at least 8 dB off it."""
        path = self.make("hi.wav", "-r", "48000", "-b", "16", effect=("synth", "1", "sin", "6000", "gain", "-6"))
        samples = array("h", read_wav(path))
        self.assertLess(level(samples[800:7200], 2000), 16384 * 10 ** (-8 / 20))

    def test_sox_reads_our_recording(self) -> None:
        sink = WavSink(self.path("rec.wav"))
        for frame in PcmSource(sine(440, 8000, 1.0).tobytes()):
            sink.write(frame)
        sink.close()
        out = subprocess.run(["soxi", "-s", self.path("rec.wav")], capture_output=True, text=True, timeout=60)
        if out.returncode == 0:
            self.assertEqual(out.stdout.strip(), "8000")
        self.assertEqual(read_wav(self.path("rec.wav")), sine(440, 8000, 1.0).tobytes())


class ResampleTests(SynchronousTestCase):
    def test_identity_and_empty(self) -> None:
        samples = array("h", [1, 2, 3])
        self.assertEqual(resample(samples, 8000, 8000), samples)
        self.assertEqual(resample(array("h"), 16000, 8000), array("h"))

    def test_lengths(self) -> None:
        self.assertEqual(len(resample(array("h", bytes(2 * 44100)), 44100, 8000)), 8000)
        self.assertEqual(len(resample(array("h", bytes(2 * 11025)), 11025, 8000)), 8000)

    def test_clipping(self) -> None:
        self.assertEqual(max(resample(array("h", [32767, -32768] * 100), 8000, 16000)), 32767)


class SourceTests(TempDirTestCase):
    def test_pcm_frames_padded_and_repeated(self) -> None:
        pcm = array("h", range(200)).tobytes()
        source = PcmSource(pcm, repeat=2)
        frames = list(source)
        self.assertEqual(len(frames), 4)
        self.assertEqual(frames[1][80:], bytes(240))
        self.assertEqual(frames[2], frames[0])
        self.assertIsNone(source.next_frame())
        self.assertIsNone(source.encoding)

    def test_forever(self) -> None:
        source = PcmSource(bytes(320), repeat=0)
        self.assertEqual(sum(1 for _ in zip(range(500), source)), 500)

    def test_wav_source(self) -> None:
        source = WavSource(self.wav("x.wav", sine(300, 16000, 0.5).tobytes(), rate=16000))
        self.assertEqual(source.frame_count, 25)
        self.assertRaises(AudioFileError, WavSource, self.path("nothing.wav"))

    def test_raw_payload_file_as_net_sip(self) -> None:
        with open(self.path("x.raw"), "wb") as f:
            f.write(bytes(range(256)) * 3 + bytes(232))  # 1000 bytes: 6 packets and 40 bytes
        source = RawPayloadSource(self.path("x.raw"), repeat=2)
        frames = list(source)
        self.assertEqual(len(frames), 12)
        self.assertEqual({len(f) for f in frames}, {160})
        self.assertEqual(frames[0], bytes(range(160)))
        self.assertEqual(frames[6], frames[0])
        self.assertEqual(source.encoding, "PCMU")
        forever = RawPayloadSource(self.path("x.raw"), repeat=0, encoding="PCMA")
        self.assertEqual(sum(1 for _ in zip(range(100), forever)), 100)
        self.assertEqual(forever.encoding, "PCMA")

    def test_raw_payload_refusals(self) -> None:
        with open(self.path("short.raw"), "wb") as f:
            f.write(bytes(100))
        with self.assertRaises(AudioFileError) as caught:
            RawPayloadSource(self.path("short.raw"))
        self.assertEqual(str(caught.exception), f"{self.path('short.raw')}: 100 bytes, shorter than one 160-byte packet")
        self.assertRaises(AudioFileError, RawPayloadSource, self.path("none.raw"))

    def test_sources_refuse_nothing(self) -> None:
        self.assertRaises(ValueError, PcmSource, b"")
        self.assertRaises(ValueError, PcmSource, b"\x00")


class SinkTests(TempDirTestCase):
    def test_wav_sink_is_valid_while_recording(self) -> None:
        """Before close, the file is a valid WAV holding every whole
        second recorded so far (the header is brought up to date once a
        second); close adds the rest."""
        sink = WavSink(self.path("r.wav"))
        frame = sine(1000, 8000, 0.02).tobytes()
        for _ in range(60):
            sink.write(frame)
        with wave.open(self.path("r.wav"), "rb") as r:
            self.assertEqual(r.getnframes(), 8000)
        self.assertEqual(read_wav(self.path("r.wav")), frame * 50)
        sink.close()
        sink.close()
        sink.write(frame)  # after close: ignored
        self.assertEqual(read_wav(self.path("r.wav")), frame * 60)
        self.assertEqual(sink.frames, 60)

    def test_raw_sink(self) -> None:
        sink = RawPayloadSink(self.path("r.raw"))
        sink.write(b"\xff" * 160)
        sink.write(b"\x7f" * 160)
        sink.close()
        with open(self.path("r.raw"), "rb") as f:
            self.assertEqual(f.read(), b"\xff" * 160 + b"\x7f" * 160)

    def test_sink_refuses_unwritable(self) -> None:
        self.assertRaises(AudioFileError, WavSink, os.path.join(self.dir, "no", "such", "dir.wav"))
        self.assertRaises(AudioFileError, RawPayloadSink, os.path.join(self.dir, "no", "x.raw"))

