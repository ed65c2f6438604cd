"""Audio files for calls: WAV in and out, Net::SIP's raw payload files,
and the frame sources and sinks an RTP stream reads and writes.

WAV (stdlib C{wave}): PCM files of any rate, 8 to 32 bits, mono or
stereo, are turned into 8 kHz mono 16-bit audio when opened (downmixed,
the width cut to 16 bits, resampled: a box filter then linear
interpolation, enough for telephone speech). What cannot be played --
not a WAV, A-law/µ-law/float WAVs, an unreadable or empty file -- raises
L{AudioFileError}, whose one line names the file and what is wrong:
C{"x.wav: A-law WAV (format 6), need PCM"}. Files are read whole when the
source is made, so a bad file fails when the call is set up, not in the
middle of it, and no disk read happens on the reactor during the call.

Raw payload files are Net::SIP's C{media_send_recv} files: G.711 payload
bytes, sent in chunks of the packet size (160 bytes for 20 ms); as in
Net::SIP, a last chunk shorter than a packet is not sent, and a repeat
count <= 0 means forever.

A frame source (L{FrameSource}) hands out one 20 ms frame at a time:
PCM16LE frames (C{encoding} None) or ready payloads (C{encoding} the codec
name). Sinks take frames: L{WavSink} records PCM16 to a WAV file,
L{RawPayloadSink} payloads to a raw file.
"""
from __future__ import annotations

import io
import itertools
import os
import struct
import sys
import wave
from array import array
from typing import Iterator, Optional, Protocol

__all__ = [
    "AudioFileError", "FrameListSource", "FrameSource", "PcmSource", "RawPayloadSink", "RawPayloadSource", "WavSink", "WavSource",
    "read_raw_payload", "read_wav", "resample", "write_wav",
]

RATE = 8000
FRAME_SAMPLES = 160
#: Longest file read into memory (at 8 kHz, 16-bit: 57.6 MB an hour).
MAX_SECONDS = 3600

_BIG_ENDIAN = sys.byteorder == "big"
_EXTENSIBLE = 0xFFFE
_FORMATS = {3: "IEEE float", 6: "A-law", 7: "µ-law", 0xFFFE: "WAVE_FORMAT_EXTENSIBLE", 0x11: "IMA ADPCM",
            2: "MS ADPCM", 0x55: "MP3", 0x31: "GSM 6.10"}


class AudioFileError(Exception):
    """An audio file that cannot be used; C{str()} is one line naming the
    file and what is wrong with it."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class FrameSource(Protocol):
    """What an RTP stream sends from."""

    #: None: frames are PCM16LE; else the codec name of ready payloads
    encoding: Optional[str]

    def next_frame(self) -> Optional[bytes]:
        """The next frame, or None when the source is exhausted."""


def _to_native(samples: array) -> array:
    if _BIG_ENDIAN:
        samples.byteswap()
    return samples


def _pcm16_bytes(samples: array) -> bytes:
    if _BIG_ENDIAN:
        samples = array("h", samples)
        samples.byteswap()
    return samples.tobytes()


def _to_16_bits(data: bytes, width: int) -> array:
    """Little-endian PCM of C{width} bytes per sample as 16-bit samples:
    8-bit WAV is unsigned (centre 128), wider samples keep their top two
    bytes."""
    if width == 2:
        return _to_native(array("h", data))
    if width == 1:
        return array("h", ((b - 128) << 8 for b in data))
    out = bytearray(2 * (len(data) // width))
    out[0::2] = data[width - 2::width]
    out[1::2] = data[width - 1::width]
    return _to_native(array("h", bytes(out)))


def _downmix(samples: array, channels: int) -> array:
    if channels == 1:
        return samples
    columns = [samples[i::channels] for i in range(channels)]
    return array("h", (sum(frame) // channels for frame in zip(*columns)))


def resample(samples: array, rate_in: int, rate_out: int = RATE) -> array:
    """C{samples} at C{rate_in} as samples at C{rate_out}.

    Downsampling first averages over C{rate_in / rate_out} samples (a box
    filter: cheap with running sums, and it puts its first null at the new
    rate, which keeps the worst of the aliasing out), then both directions
    interpolate linearly. Meant for prompts and hold music, not hi-fi."""
    if rate_in == rate_out or not samples:
        return array("h", samples)
    count = len(samples) * rate_out // rate_in
    source: "list[float] | array" = samples
    if rate_in > rate_out:
        width = max(int(round(rate_in / rate_out)), 1)
        if width > 1:
            sums = [0, *itertools.accumulate(samples)]
            last = len(samples)
            half = width // 2
            source = [(sums[min(i + width - half, last)] - sums[max(i - half, 0)])
                      / (min(i + width - half, last) - max(i - half, 0)) for i in range(last)]
    step = rate_in / rate_out
    top = len(source) - 1
    out = array("h", bytes(2 * count))
    for k in range(count):
        position = k * step
        i = int(position)
        if i >= top:
            value = source[top]
        else:
            fraction = position - i
            value = source[i] + (source[i + 1] - source[i]) * fraction
        out[k] = max(-32768, min(32767, int(round(value))))
    return out


def read_wav(path: str, rate: int = RATE, max_seconds: float = MAX_SECONDS) -> bytes:
    """The audio of a PCM WAV file as PCM16LE mono at C{rate}; raises
    L{AudioFileError}."""
    with _open_wav(path) as reader:
        channels, width, file_rate, frames = (reader.getnchannels(), reader.getsampwidth(), reader.getframerate(),
                                              reader.getnframes())
        if width not in (1, 2, 3, 4):
            raise AudioFileError(path, f"{8 * width}-bit samples, need 8 to 32-bit PCM")
        if not 1 <= channels <= 8:
            raise AudioFileError(path, f"{channels} channels")
        if not 1000 <= file_rate <= 384000:
            raise AudioFileError(path, f"sample rate {file_rate} Hz out of range")
        if frames == 0:
            raise AudioFileError(path, "no audio (0 samples)")
        if frames > max_seconds * file_rate:
            raise AudioFileError(path, f"{frames / file_rate:.0f} s long, more than the {max_seconds:.0f} s limit")
        try:
            data = reader.readframes(frames)
        except (OSError, EOFError, wave.Error) as e:
            raise AudioFileError(path, f"cannot read audio: {e}") from None
    data = data[:len(data) - len(data) % (width * channels)]
    if not data:
        raise AudioFileError(path, "no audio (data chunk empty)")
    samples = _downmix(_to_16_bits(data, width), channels)
    return _pcm16_bytes(resample(samples, file_rate, rate))


def _open_wav(path: str) -> wave.Wave_read:
    try:
        return wave.open(path, "rb")
    except OSError as e:
        raise AudioFileError(path, f"cannot open: {e.strerror or e}") from None
    except EOFError:
        raise AudioFileError(path, "truncated WAV header") from None
    except wave.Error as e:
        if str(e).strip() != f"unknown format: {_EXTENSIBLE}":
            raise AudioFileError(path, _wave_error(str(e))) from None
    # WAVE_FORMAT_EXTENSIBLE (what sox and ffmpeg write for 24-bit or more
    # than two channels): C{wave} reads it from Python 3.12 on only. When
    # its sub-format is PCM, the same file with a plain PCM tag is read.
    try:
        with open(path, "rb") as f:
            data = bytearray(f.read())
    except OSError as e:
        raise AudioFileError(path, f"cannot open: {e.strerror or e}") from None
    offset = 12
    while offset + 8 <= len(data):
        size = int.from_bytes(data[offset + 4:offset + 8], "little")
        if data[offset:offset + 4] == b"fmt ":
            if size < 40 or offset + 8 + 40 > len(data):
                break
            subformat = int.from_bytes(data[offset + 32:offset + 34], "little")
            if subformat != 1:
                name = _FORMATS.get(subformat, "compressed")
                raise AudioFileError(path, f"{name} WAV (extensible, sub-format {subformat}), need PCM: "
                                           "convert it with sox FILE -e signed -b 16 OUT.wav")
            data[offset + 8:offset + 10] = b"\x01\x00"
            try:
                return wave.open(io.BytesIO(bytes(data)), "rb")
            except (EOFError, wave.Error) as e:
                raise AudioFileError(path, _wave_error(str(e))) from None
        offset += 8 + size + (size & 1)
    raise AudioFileError(path, "broken WAV file (no usable fmt chunk)")


def _wave_error(message: str) -> str:
    """The C{wave} module's complaint as a reason a user can act on."""
    if message.startswith("unknown format:"):
        try:
            code = int(message.split(":", 1)[1])
        except ValueError:
            code = -1
        name = _FORMATS.get(code, "compressed")
        return f"{name} WAV (format {code}), need PCM: convert it with sox FILE -e signed -b 16 OUT.wav"
    if "RIFF" in message:
        return "not a WAV file (no RIFF header)"
    if "WAVE" in message:
        return "not a WAV file (RIFF, but not WAVE)"
    if "chunk" in message:
        return "broken WAV file (fmt or data chunk missing)"
    return f"unreadable WAV file ({message})"


def write_wav(path: str, pcm16: bytes, rate: int = RATE) -> None:
    """Write PCM16LE mono audio as a WAV file."""
    sink = WavSink(path, rate)
    try:
        sink.write(pcm16)
    finally:
        sink.close()


def read_raw_payload(path: str, packet_size: int = FRAME_SAMPLES, max_seconds: float = MAX_SECONDS) -> bytes:
    """The whole packets of a raw payload file; raises L{AudioFileError}."""
    try:
        size = os.path.getsize(path)
        if size > max_seconds * 50 * packet_size:
            raise AudioFileError(path, f"{size} bytes, more than the {max_seconds:.0f} s limit")
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise AudioFileError(path, f"cannot open: {e.strerror or e}") from None
    usable = len(data) - len(data) % packet_size
    if usable == 0:
        raise AudioFileError(path, f"{len(data)} bytes, shorter than one {packet_size}-byte packet")
    return data[:usable]


class FrameListSource:
    """Frames in memory, played C{repeat} times (<= 0: forever)."""

    def __init__(self, frames: list[bytes], repeat: int = 1, encoding: Optional[str] = None) -> None:
        if not frames:
            raise ValueError("no frames")
        self._frames = frames
        self._repeat = repeat
        self._index = 0
        self.encoding = encoding
        #: complete plays so far
        self.plays = 0

    @property
    def frame_count(self) -> int:
        return len(self._frames)

    def next_frame(self) -> Optional[bytes]:
        if self._index == len(self._frames):
            self.plays += 1
            if 0 < self._repeat <= self.plays:
                return None
            self._index = 0
        frame = self._frames[self._index]
        self._index += 1
        return frame

    def __iter__(self) -> Iterator[bytes]:
        while True:
            frame = self.next_frame()
            if frame is None:
                return
            yield frame


class PcmSource(FrameListSource):
    """PCM16LE audio as 20 ms frames, the last one padded with silence."""

    def __init__(self, pcm16: bytes, repeat: int = 1, frame_samples: int = FRAME_SAMPLES) -> None:
        if len(pcm16) % 2:
            raise ValueError("PCM16 audio has an odd number of bytes")
        size = 2 * frame_samples
        padded = pcm16 + bytes(-len(pcm16) % size)
        super().__init__([padded[i:i + size] for i in range(0, len(padded), size)], repeat, None)


class WavSource(PcmSource):
    """A WAV file as 8 kHz PCM16 frames (read and converted at once)."""

    def __init__(self, path: str, repeat: int = 1, frame_samples: int = FRAME_SAMPLES,
                 max_seconds: float = MAX_SECONDS) -> None:
        self.path = path
        super().__init__(read_wav(path, RATE, max_seconds), repeat, frame_samples)


class RawPayloadSource(FrameListSource):
    """Net::SIP's raw payload file: chunks of C{packet_size} payload bytes
    in codec C{encoding} (C{"PCMU"} by default, as Net::SIP assumes)."""

    def __init__(self, path: str, repeat: int = 1, packet_size: int = FRAME_SAMPLES, encoding: str = "PCMU",
                 max_seconds: float = MAX_SECONDS) -> None:
        self.path = path
        data = read_raw_payload(path, packet_size, max_seconds)
        super().__init__([data[i:i + packet_size] for i in range(0, len(data), packet_size)], repeat, encoding)


#: RIFF/WAVE header of 16-bit mono PCM (RIFF size, rate, byte rate, data size)
_WAV_HEADER = struct.Struct("<4sI4s4sIHHIIHH4sI")
_RIFF_SIZE_AT, _DATA_SIZE_AT = 4, 40


class WavSink:
    """Records PCM16LE frames to an 8 kHz mono WAV file, as they come.

    It writes the 44-byte header itself: a frame is one buffered write,
    with no Python of the C{wave} module on the media path."""

    def __init__(self, path: str, rate: int = RATE) -> None:
        self.path = path
        try:
            self._file: Optional[io.BufferedWriter] = open(path, "wb")
        except OSError as e:
            raise AudioFileError(path, f"cannot create: {e.strerror or e}") from None
        self._file.write(_WAV_HEADER.pack(b"RIFF", 36, b"WAVE", b"fmt ", 16, 1, 1, rate, 2 * rate, 2, 16,
                                          b"data", 0))
        self._bytes = 0
        self.frames = 0

    #: frames between updates of the header's lengths (1 s of 20 ms
    #: frames): a recording cut short by a crash is still a valid file,
    #: missing at most its last second, and a frame costs one buffered
    #: write instead of a flush and three seeks
    header_every = 50

    def write(self, pcm16: bytes) -> None:
        file = self._file
        if file is not None:
            file.write(pcm16)
            self._bytes += len(pcm16)
            self.frames += 1
            if not self.frames % self.header_every:
                self._update_header(file)

    def _update_header(self, file: io.BufferedWriter) -> None:
        """The RIFF and data lengths of what was written so far (a data
        chunk of odd length would need a pad byte: PCM16 never has one)."""
        size = self._bytes - self._bytes % 2
        file.seek(_RIFF_SIZE_AT)
        file.write(struct.pack("<I", 36 + size))
        file.seek(_DATA_SIZE_AT)
        file.write(struct.pack("<I", size))
        file.seek(0, os.SEEK_END)
        file.flush()

    def close(self) -> None:
        """Finish the file (its header gets the final length)."""
        if self._file is not None:
            file, self._file = self._file, None
            try:
                self._update_header(file)
            finally:
                file.close()


class RawPayloadSink:
    """Net::SIP's C{writeto} file: the payload bytes of every packet."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self._file = open(path, "wb")
        except OSError as e:
            raise AudioFileError(path, f"cannot create: {e.strerror or e}") from None
        self.frames = 0

    def write(self, payload: bytes) -> None:
        if not self._file.closed:
            self._file.write(payload)
            self.frames += 1

    def close(self) -> None:
        self._file.close()
