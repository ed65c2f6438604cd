"""Bencode, the encoding of rtpengine's "ng" control protocol.

Pure data, no I/O. Four types: byte strings, integers, lists and
dictionaries. Encoding sorts dictionary keys (as the format asks);
decoding accepts them in any order, because rtpengine and its clients do
not sort either. Strings decode to C{bytes}; dictionary keys decode to
C{str} (they are ASCII names in every ng message) so callers can write
C{message["call-id"]}.
"""
from __future__ import annotations

from typing import Any, Union

__all__ = ["BencodeError", "encode", "decode"]

#: Deeper nesting than this is refused (ng messages nest three levels).
MAX_DEPTH = 32

Value = Union[bytes, str, int, list, tuple, dict]


class BencodeError(ValueError):
    """Malformed bencode; the message says what and at which offset."""


def encode(value: Value) -> bytes:
    """Encode C{value}: C{str} is written as UTF-8, C{bool} is refused
    (ambiguous), dictionary keys must be C{str} or C{bytes}."""
    out: list[bytes] = []
    _encode(value, out, 0)
    return b"".join(out)


def _key(key: Any) -> bytes:
    if isinstance(key, str):
        return key.encode("utf-8")
    if isinstance(key, bytes):
        return key
    raise TypeError(f"bencode dictionary keys must be str or bytes, not {type(key).__name__}")


def _encode(value: Any, out: list[bytes], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ValueError("bencode value nested too deeply")
    if isinstance(value, bool):
        raise TypeError("bencode has no booleans; use 0/1 or a string")
    if isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        out.append(b"%d:" % len(data))
        out.append(data)
    elif isinstance(value, str):
        data = value.encode("utf-8")
        out.append(b"%d:" % len(data))
        out.append(data)
    elif isinstance(value, (list, tuple)):
        out.append(b"l")
        for item in value:
            _encode(item, out, depth + 1)
        out.append(b"e")
    elif isinstance(value, dict):
        out.append(b"d")
        for key, item in sorted((_key(k), v) for k, v in value.items()):
            out.append(b"%d:" % len(key))
            out.append(key)
            _encode(item, out, depth + 1)
        out.append(b"e")
    else:
        raise TypeError(f"cannot bencode {type(value).__name__}")


def decode(data: bytes) -> Any:
    """Decode one complete value; trailing bytes are an error.

    @raise BencodeError: for anything malformed or truncated.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("bencode input must be bytes")
    data = bytes(data)
    value, end = _decode(data, 0, 0)
    if end != len(data):
        raise BencodeError(f"trailing data at offset {end}")
    return value


def _decode(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    if depth > MAX_DEPTH:
        raise BencodeError(f"nested too deeply at offset {pos}")
    if pos >= len(data):
        raise BencodeError("truncated input")
    lead = data[pos]
    if lead == 0x69:  # i
        end = data.find(b"e", pos + 1)
        if end < 0:
            raise BencodeError(f"unterminated integer at offset {pos}")
        text = data[pos + 1:end]
        if not _valid_int(text):
            raise BencodeError(f"malformed integer {text[:20]!r} at offset {pos}")
        return int(text), end + 1
    if lead == 0x6C:  # l
        items = []
        pos += 1
        while True:
            if pos >= len(data):
                raise BencodeError("unterminated list")
            if data[pos] == 0x65:
                return items, pos + 1
            item, pos = _decode(data, pos, depth + 1)
            items.append(item)
    if lead == 0x64:  # d
        result: dict[str, Any] = {}
        pos += 1
        while True:
            if pos >= len(data):
                raise BencodeError("unterminated dictionary")
            if data[pos] == 0x65:
                return result, pos + 1
            if not 0x30 <= data[pos] <= 0x39:
                raise BencodeError(f"dictionary key at offset {pos} is not a string")
            key, pos = _string(data, pos)
            value, pos = _decode(data, pos, depth + 1)
            result[key.decode("utf-8", "replace")] = value
    if 0x30 <= lead <= 0x39:
        return _string(data, pos)
    raise BencodeError(f"unexpected byte {bytes([lead])!r} at offset {pos}")


def _string(data: bytes, pos: int) -> tuple[bytes, int]:
    colon = data.find(b":", pos, pos + 12)
    if colon < 0:
        raise BencodeError(f"malformed string length at offset {pos}")
    text = data[pos:colon]
    if not text.isdigit() or (len(text) > 1 and text[:1] == b"0"):
        raise BencodeError(f"malformed string length {text!r} at offset {pos}")
    start = colon + 1
    end = start + int(text)
    if end > len(data):
        raise BencodeError(f"string at offset {pos} runs past the end")
    return data[start:end], end


def _valid_int(text: bytes) -> bool:
    digits = text[1:] if text[:1] == b"-" else text
    if not digits.isdigit():
        return False
    if len(digits) > 1 and digits[:1] == b"0":
        return False
    return text != b"-0"
