"""G.711 µ-law (PCMU) and A-law (PCMA) by table lookup, without C{audioop}.

C{audioop} is deprecated in 3.11 and gone in 3.13, and PyPy's copy is slow,
so the codec is plain tables built once at import from the integer
definition of ITU-T G.711 (the segment/mantissa layout of the classic
reference coders, which C{sox} uses too). Integer arithmetic only: the
tables, and so every encoded byte, are the same on CPython and PyPy.

Why tables and not arithmetic per sample:
  - decoding is a 256-entry table; PCM16LE output is built with two
    C{bytes.translate} calls (low bytes, high bytes) interleaved by slice
    assignment, so no Python code runs per sample;
  - encoding looks each 16-bit sample up in a 65536-entry C{bytes} table
    (the µ-law code depends on the top 14 bits, A-law on the top 13, so
    the full table is the small one stretched by slice assignment), all
    lookups of a frame in one C{operator.itemgetter} call.

Samples are signed 16-bit integers; "PCM16" byte strings are little
endian (as in WAV files), whatever the machine's byte order.
"""
from __future__ import annotations

import sys
from array import array
from operator import itemgetter
from typing import Callable, Iterable, NamedTuple

__all__ = [
    "ALAW_SILENCE", "ULAW_SILENCE", "Codec", "CODECS", "alaw_decode", "alaw_encode", "alaw_to_pcm16",
    "alaw_to_ulaw", "codec_for", "pcm16_to_alaw", "pcm16_to_ulaw", "ulaw_decode", "ulaw_encode",
    "ulaw_to_alaw", "ulaw_to_pcm16",
]

#: The code of a zero sample: what a silent 20 ms frame is made of.
ULAW_SILENCE = 0xFF
ALAW_SILENCE = 0xD5

_BIG_ENDIAN = sys.byteorder == "big"


def _ulaw_code(value14: int) -> int:
    """The µ-law code of a 14-bit sample (the 16-bit sample shifted right
    by two, floor): magnitude plus bias 33 (clipped at 8192), then the segment is the position
    of the highest set bit and the mantissa the four bits below it; all
    bits inverted on the wire (so a positive sample has the top bit set)."""
    if value14 < 0:
        # -v - 1 (that is, ~x >> 2 of the 16-bit x), as ITU-T G.191's
        # reference coder does: negative and positive samples then round
        # the same way (Sun's -v rounds negatives away from zero).
        magnitude, sign = -value14 - 1, 0x80
    else:
        magnitude, sign = value14, 0x00
    biased = min(magnitude, 8159) + 33
    segment = biased.bit_length() - 6  # 33..63 is segment 0, 64..127 is 1, ...
    if segment > 7:  # the clipped maximum, 8192, saturates
        return ~(sign | 0x7F) & 0xFF
    mantissa = (biased >> (segment + 1)) & 0x0F
    return ~(sign | (segment << 4) | mantissa) & 0xFF


def _ulaw_value(code: int) -> int:
    """The 16-bit sample a µ-law code stands for (the middle of its
    interval, scaled by four: +-32124 at full scale)."""
    code = ~code & 0xFF
    segment = (code >> 4) & 0x07
    magnitude = (((code & 0x0F) << 3) + 0x84) << segment
    return 0x84 - magnitude if code & 0x80 else magnitude - 0x84


def _alaw_code(value13: int) -> int:
    """The A-law code of a 13-bit sample (the 16-bit sample shifted right
    by three, floor): segments 0 and 1 are linear with the same step, the
    others double it; even bits are inverted on the wire (XOR 0x55)."""
    if value13 >= 0:
        magnitude, mask = value13, 0xD5
    else:
        magnitude, mask = -value13 - 1, 0x55
    if magnitude >= 0x1000:
        return 0x7F ^ mask
    segment = max(magnitude.bit_length() - 5, 0)
    mantissa = (magnitude >> (segment if segment > 1 else 1)) & 0x0F
    return ((segment << 4) | mantissa) ^ mask


def _alaw_value(code: int) -> int:
    """The 16-bit sample an A-law code stands for (+-8 near zero, +-32256
    at full scale)."""
    code ^= 0x55
    segment = (code >> 4) & 0x07
    magnitude = ((code & 0x0F) << 4) + (8 if segment == 0 else 0x108)
    if segment > 1:
        magnitude <<= segment - 1
    return magnitude if code & 0x80 else -magnitude


def _encode_table(code_of: Callable[[int], int], shift: int) -> bytes:
    """A 65536-entry table from an unsigned 16-bit sample to its code. The
    code depends only on C{sample >> shift}; that smaller table is built by
    calling C{code_of} and then stretched with slice assignment."""
    width = 16 - shift
    small = bytes(code_of(i - (1 << width) if i >= 1 << (width - 1) else i) for i in range(1 << width))
    table = bytearray(65536)
    for offset in range(1 << shift):
        table[offset::1 << shift] = small
    return bytes(table)


ULAW_DECODE: tuple[int, ...] = tuple(_ulaw_value(code) for code in range(256))
ALAW_DECODE: tuple[int, ...] = tuple(_alaw_value(code) for code in range(256))
ULAW_ENCODE: bytes = _encode_table(_ulaw_code, 2)
ALAW_ENCODE: bytes = _encode_table(_alaw_code, 3)

# bytes.translate tables giving the low and the high byte of each decoded
# sample; the PCM16LE output interleaves the two.
_ULAW_LOW = bytes(v & 0xFF for v in ULAW_DECODE)
_ULAW_HIGH = bytes((v >> 8) & 0xFF for v in ULAW_DECODE)
_ALAW_LOW = bytes(v & 0xFF for v in ALAW_DECODE)
_ALAW_HIGH = bytes((v >> 8) & 0xFF for v in ALAW_DECODE)
# Transcoding through the linear value (not G.711's own cross table, which
# differs in a few codes): one translate per payload.
_ULAW_TO_ALAW = bytes(ALAW_ENCODE[v & 0xFFFF] for v in ULAW_DECODE)
_ALAW_TO_ULAW = bytes(ULAW_ENCODE[v & 0xFFFF] for v in ALAW_DECODE)


def _interleave(low: bytes, high: bytes) -> bytes:
    out = bytearray(2 * len(low))
    out[0::2] = low
    out[1::2] = high
    return bytes(out)


def _unsigned_samples(pcm16: bytes) -> "memoryview | array":
    """The samples of little-endian PCM16 bytes as unsigned 16-bit
    integers (table indices)."""
    if len(pcm16) % 2:
        raise ValueError(f"PCM16 data has an odd length ({len(pcm16)} bytes)")
    if _BIG_ENDIAN:
        samples = array("H", pcm16)
        samples.byteswap()
        return samples
    return memoryview(pcm16).cast("B").cast("H")


def _signed_to_unsigned(samples: Iterable[int]) -> "memoryview":
    """Signed samples as unsigned 16-bit indices; a value outside the
    16-bit range raises C{OverflowError} (from C{array})."""
    signed = samples if isinstance(samples, array) and samples.typecode == "h" else array("h", samples)
    return memoryview(signed).cast("B").cast("H")


def _lookup(table: bytes, indices: "memoryview | array") -> bytes:
    """C{table[i]} for each index, as bytes. C{itemgetter(*indices)} does
    the lookups in C: twice as fast as C{map(table.__getitem__, ...)} on
    CPython, as fast on PyPy (it returns a bare value for one index)."""
    if len(indices) > 1:
        return bytes(itemgetter(*indices)(table))
    return bytes(map(table.__getitem__, indices))


def ulaw_decode(payload: bytes) -> array:
    """µ-law bytes to signed 16-bit samples (C{array('h')})."""
    return array("h", map(ULAW_DECODE.__getitem__, payload))


def alaw_decode(payload: bytes) -> array:
    """A-law bytes to signed 16-bit samples (C{array('h')})."""
    return array("h", map(ALAW_DECODE.__getitem__, payload))


def ulaw_encode(samples: Iterable[int]) -> bytes:
    """Signed 16-bit samples (a list or C{array('h')}) to µ-law bytes."""
    return _lookup(ULAW_ENCODE, _signed_to_unsigned(samples))


def alaw_encode(samples: Iterable[int]) -> bytes:
    """Signed 16-bit samples (a list or C{array('h')}) to A-law bytes."""
    return _lookup(ALAW_ENCODE, _signed_to_unsigned(samples))


def ulaw_to_pcm16(payload: bytes) -> bytes:
    """µ-law bytes to PCM16LE bytes (two translates, no per-sample Python)."""
    return _interleave(payload.translate(_ULAW_LOW), payload.translate(_ULAW_HIGH))


def alaw_to_pcm16(payload: bytes) -> bytes:
    """A-law bytes to PCM16LE bytes."""
    return _interleave(payload.translate(_ALAW_LOW), payload.translate(_ALAW_HIGH))


def pcm16_to_ulaw(pcm16: bytes) -> bytes:
    """PCM16LE bytes to µ-law bytes."""
    return _lookup(ULAW_ENCODE, _unsigned_samples(pcm16))


def pcm16_to_alaw(pcm16: bytes) -> bytes:
    """PCM16LE bytes to A-law bytes."""
    return _lookup(ALAW_ENCODE, _unsigned_samples(pcm16))


def ulaw_to_alaw(payload: bytes) -> bytes:
    """µ-law to A-law through the linear value."""
    return payload.translate(_ULAW_TO_ALAW)


def alaw_to_ulaw(payload: bytes) -> bytes:
    """A-law to µ-law through the linear value."""
    return payload.translate(_ALAW_TO_ULAW)


class Codec(NamedTuple):
    """What the RTP stream needs to know of a G.711 variant: its SDP name,
    static payload type (RFC 3551), how to get between PCM16LE and the
    payload, and the byte of a silent sample."""

    name: str
    payload_type: int
    encode: Callable[[bytes], bytes]
    decode: Callable[[bytes], bytes]
    silence: int


CODECS: dict[str, Codec] = {
    "PCMU": Codec("PCMU", 0, pcm16_to_ulaw, ulaw_to_pcm16, ULAW_SILENCE),
    "PCMA": Codec("PCMA", 8, pcm16_to_alaw, alaw_to_pcm16, ALAW_SILENCE),
}


def codec_for(name: str) -> Codec:
    """The codec named C{name} (C{"PCMU"} or C{"PCMA"}, case-insensitive,
    an optional C{/8000} rate allowed), or C{ValueError}."""
    key = name.upper()
    if key.endswith("/8000"):
        key = key[:-5]
    try:
        return CODECS[key]
    except KeyError:
        raise ValueError(f"unsupported codec {name!r} (PCMU and PCMA are supported)") from None
