"""Audio helpers for media tests: test signals and the correlation of a
recording with what was sent, after finding the delay between them."""
from __future__ import annotations

import math
from array import array
from typing import Sequence


def tone(seconds: float, freq: float = 440.0, amplitude: int = 8000) -> bytes:
    """PCM16LE sine at 8 kHz."""
    return array("h", (int(amplitude * math.sin(2 * math.pi * freq * n / 8000))
                       for n in range(int(8000 * seconds)))).tobytes()


def chirp(seconds: float, low: float = 300.0, high: float = 3000.0, amplitude: int = 9000) -> bytes:
    """A sweep from C{low} to C{high} Hz: no period, so its correlation
    with a delayed copy has a single peak."""
    out = array("h")
    phase = 0.0
    count = int(8000 * seconds)
    for n in range(count):
        phase += 2 * math.pi * (low + (high - low) * n / count) / 8000
        out.append(int(amplitude * math.sin(phase)))
    return out.tobytes()


def samples(pcm16: bytes) -> list[int]:
    return list(array("h", pcm16[:len(pcm16) - len(pcm16) % 2]))


def correlation_at(reference: Sequence[int], recorded: Sequence[int], lag: int) -> float:
    """Normalised correlation of C{reference} with C{recorded[lag:]}."""
    part = recorded[lag:lag + len(reference)]
    if len(part) < len(reference) or lag < 0:
        return -1.0
    dot = sum(a * b for a, b in zip(reference, part))
    energy = math.sqrt(sum(x * x for x in reference) * sum(x * x for x in part)) or 1.0
    return dot / energy


def align(reference: Sequence[int], recorded: Sequence[int], max_lag: int, probe: int = 400,
          min_lag: int = 0) -> tuple[float, int]:
    """(correlation, lag): the delay of C{reference} inside C{recorded}
    (min_lag..max_lag samples), found with a C{probe}-sample piece of the
    reference (cheap in pure Python), then the correlation of the whole
    reference at that delay."""
    piece = reference[:probe]
    best, where = -2.0, 0
    for lag in range(max(min_lag, 0), max_lag + 1):
        value = correlation_at(piece, recorded, lag)
        if value > best:
            best, where = value, lag
    return correlation_at(reference, recorded, where), where
