"""DTMF both ways: RFC 4733 telephone-events and in-band tones.

RFC 4733 (the successor of RFC 2833):
  - L{encode_event} / L{decode_event}: the 4-byte payload (event, end bit,
    volume, duration); decoding untrusted payloads raises
    L{TelephoneEventError} with a reason.
  - L{EventPackets}: the payloads of one key press, tick by tick (one
    packet per packet interval, all with the press's start timestamp; the
    last tick sends the end packet three times, RFC 4733 2.5.1.4).
  - L{EventReceiver}: turns the packets of a peer into one report per key
    press, whatever arrives: end packets repeated, the start packets
    lost (the first packet seen already carries a long duration or the
    end bit), redundant updates, and a new timestamp (a new press) before
    the old one's end was seen. Events are told apart by their RTP
    timestamp, as the RFC says, not by the marker bit, which is lost with
    the first packet.

In-band (audio):
  - L{tone_frames}: the two sines of a key (ITU-T Q.23 row and column
    frequencies) as PCM16 frames, phase continuous.
  - L{ToneDetector}: Goertzel filters at the eight frequencies over
    Hann-windowed 40 ms windows, one every 20 ms. A window holds a digit
    when one row and one column tone carry most (85 %) of its energy, each
    10 dB above the other tones of its group, within 8 dB of each other
    (twist), and the window's two halves have similar energy (the window
    is not straddling a start or an end). A press is confirmed by two
    such windows in a row and reported once when it ends, with its
    duration (to 20 ms). Presses of 70 ms and more are found wherever the
    frames cut them (Net::SIP sends 100 ms). Net::SIP's detector (Blackman window over 60 ms, the two
    strongest of eight frequencies five times above the third) is the
    behaviour this refines: the energy share is what rejects speech,
    noise and single tones.

L{dtmf_plan} turns a key string into presses and pauses as Net::SIP's
C{Call::dtmf} does. Pure: no clock, no sockets; times are passed in.
"""
from __future__ import annotations

import math
import struct
from array import array
from collections import deque
from typing import Iterable, NamedTuple, Optional, Sequence

__all__ = [
    "DIGITS", "DtmfDigit", "EventPackets", "EventReceiver", "TelephoneEvent", "TelephoneEventError",
    "ToneDetector", "decode_event", "dtmf_plan", "encode_event", "event_code", "tone_frames", "tone_pair",
]

#: The sixteen keys in RFC 4733 event-code order (0-9, *, #, A-D).
DIGITS = "0123456789*#ABCD"
ROWS = (697.0, 770.0, 852.0, 941.0)
COLUMNS = (1209.0, 1336.0, 1477.0, 1633.0)
_KEYPAD = ("123A", "456B", "789C", "*0#D")
_PAIRS = {key: (ROWS[r], COLUMNS[c]) for r, line in enumerate(_KEYPAD) for c, key in enumerate(line)}

#: Net::SIP's defaults: 100 ms presses, volume 10 (-10 dBm0).
DEFAULT_DURATION_MS = 100
DEFAULT_VOLUME = 10


class DtmfDigit(NamedTuple):
    """One key press as reported: the key, how long it lasted, and how it
    came (C{"rfc4733"} or C{"audio"})."""

    digit: str
    duration_ms: int
    method: str


def event_code(digit: str) -> int:
    """The RFC 4733 event code of a key (C{"0"}-C{"9"}, C{"*"}, C{"#"},
    C{"A"}-C{"D"}, case-insensitive); C{ValueError} otherwise."""
    code = DIGITS.find(digit.upper()) if len(digit) == 1 else -1
    if code < 0:
        raise ValueError(f"{digit!r} is not a DTMF key (0-9 * # A-D)")
    return code


def tone_pair(digit: str) -> tuple[float, float]:
    """The row and column frequencies (Hz) of a key."""
    try:
        return _PAIRS[digit.upper()]
    except KeyError:
        raise ValueError(f"{digit!r} is not a DTMF key (0-9 * # A-D)") from None


def dtmf_plan(keys: str, duration_ms: int = DEFAULT_DURATION_MS) -> list[tuple[Optional[str], int]]:
    """Presses and pauses for a key string, as (key or None, ms). As in
    Net::SIP: a pause separates consecutive keys (100 ms before the same key
    again, 50 ms before another, so a receiver sees two presses), and any
    other character is a pause of C{duration_ms}."""
    plan: list[tuple[Optional[str], int]] = []
    last: Optional[str] = None
    for char in keys:
        key = char.upper()
        if len(key) == 1 and key in DIGITS:
            if last is not None:
                plan.append((None, 100 if key == last else 50))
            plan.append((key, duration_ms))
            last = key
        else:
            plan.append((None, duration_ms))
            last = None
    return plan


# -- RFC 4733 payloads ----------------------------------------------------------------

class TelephoneEventError(ValueError):
    """A payload that is not an RFC 4733 event; C{reason} says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TelephoneEvent(NamedTuple):
    event: int
    end: bool
    volume: int  # 0..63, -dBm0
    duration: int  # timestamp units since the event's start

    @property
    def digit(self) -> Optional[str]:
        return DIGITS[self.event] if self.event < 16 else None


_EVENT = struct.Struct("!BBH")


def encode_event(event: int, end: bool, volume: int, duration: int) -> bytes:
    if not 0 <= event <= 255 or not 0 <= volume <= 63 or not 0 <= duration <= 0xFFFF:
        raise ValueError(f"event {event}, volume {volume} or duration {duration} out of range")
    return _EVENT.pack(event, (0x80 if end else 0) | volume, duration)


def decode_event(payload: bytes) -> TelephoneEvent:
    """The first event of a telephone-event payload. Longer payloads (RFC
    4733 allows several events, e.g. with RFC 2198 redundancy elsewhere)
    must be a multiple of four bytes; only the first block is read."""
    if len(payload) < 4:
        raise TelephoneEventError(f"telephone-event payload of {len(payload)} bytes, need 4")
    if len(payload) % 4:
        raise TelephoneEventError(f"telephone-event payload of {len(payload)} bytes is not a multiple of 4")
    event, flags, duration = _EVENT.unpack_from(payload)
    return TelephoneEvent(event, bool(flags & 0x80), flags & 0x3F, duration)


class EventPackets:
    """The RFC 4733 payloads of one key press, one tick per packet
    interval. C{ticks[i]} is the list of payloads to send at tick i: one
    update (duration so far, counted to the end of the tick) per tick, and
    at the last tick the final duration with the end bit, three times.
    All are sent with the press's start timestamp; the first carries the
    marker bit. The press lasts C{len(ticks) * samples_per_tick} samples of
    the stream's clock."""

    def __init__(self, digit: str, duration_ms: int = DEFAULT_DURATION_MS, *, volume: int = DEFAULT_VOLUME,
                 samples_per_tick: int = 160, clock_rate: int = 8000) -> None:
        self.digit = digit.upper()
        code = event_code(digit)
        if duration_ms <= 0:
            raise ValueError("a key press lasts at least one tick")
        total = min(max(duration_ms * clock_rate // 1000, samples_per_tick), 0xFFFF)
        count = -(-total // samples_per_tick)
        self.samples = count * samples_per_tick
        self.ticks: list[list[bytes]] = []
        for i in range(count):
            if i < count - 1:
                self.ticks.append([encode_event(code, False, volume, (i + 1) * samples_per_tick)])
            else:
                self.ticks.append([encode_event(code, True, volume, total)] * 3)


class EventReceiver:
    """RFC 4733 events in, one L{DtmfDigit} per key press out.

    Feed it every telephone-event packet's timestamp and payload (the
    stream drops sequence duplicates before). A press is reported:
      - at its first end packet (the repeats, and any later packet with
        the same timestamp, are ignored: the timestamp is remembered);
      - when a packet with a newer timestamp arrives before its end
        (the end packets were all lost);
      - by L{expire}, when no packet of it came for C{timeout} seconds.
    A press whose start packets were lost is reported all the same; its
    duration is the largest the packets carried. Codes above 15 (flash,
    tones, ...) are not keys and are not reported. Unlike Net::SIP, a
    volume of 0 is a press like any other (it means 0 dBm0, the loudest
    level, in RFC 4733 2.3.4).
    """

    def __init__(self, clock_rate: int = 8000, timeout: float = 0.5) -> None:
        self.clock_rate = clock_rate
        self.timeout = timeout
        self._current: Optional[list] = None  # [timestamp, event, duration, last arrival]
        self._finished: deque[int] = deque(maxlen=16)
        self.errors = 0

    def _report(self, event: int, duration: int) -> list[DtmfDigit]:
        if event > 15:
            return []
        return [DtmfDigit(DIGITS[event], round(duration * 1000 / self.clock_rate), "rfc4733")]

    def feed(self, timestamp: int, payload: bytes, arrival: float) -> list[DtmfDigit]:
        """Take one packet; the presses it completes. A malformed payload
        is counted in C{errors} and ignored."""
        try:
            event = decode_event(payload)
        except TelephoneEventError:
            self.errors += 1
            return []
        if timestamp in self._finished:
            return []
        reports: list[DtmfDigit] = []
        current = self._current
        if current is not None and current[0] != timestamp:
            # serial-number comparison: an older timestamp is a straggler
            if (timestamp - current[0]) & 0xFFFFFFFF >= 1 << 31:
                return []
            reports += self._report(current[1], current[2])
            self._finished.append(current[0])
            current = self._current = None
        if current is None:
            if event.end:
                self._finished.append(timestamp)
                return reports + self._report(event.event, event.duration)
            self._current = [timestamp, event.event, event.duration, arrival]
            return reports
        current[2] = max(current[2], event.duration)
        current[3] = arrival
        if event.end:
            self._finished.append(timestamp)
            self._current = None
            reports += self._report(current[1], current[2])
        return reports

    def expire(self, now: float) -> list[DtmfDigit]:
        """Report a press whose end never came, C{timeout} after its last
        packet."""
        current = self._current
        if current is None or now - current[3] < self.timeout:
            return []
        self._current = None
        self._finished.append(current[0])
        return self._report(current[1], current[2])


# -- in-band tones --------------------------------------------------------------------

def tone_frames(digit: str, duration_ms: int = DEFAULT_DURATION_MS, *, amplitude: int = 7000,
                twist_db: float = 0.0, rate: int = 8000, frame: int = 160, start_sample: int = 0) -> list[bytes]:
    """The key's two sines as PCM16LE frames of C{frame} samples, the last
    one padded with silence. C{amplitude} is each tone's peak (7000, about
    -13 dBFS per tone, leaves headroom for the sum); C{twist_db} makes the
    row tone that many dB weaker (negative: the column tone)."""
    low, high = tone_pair(digit)
    count = duration_ms * rate // 1000
    a_low = amplitude * 10 ** (-max(twist_db, 0.0) / 20)
    a_high = amplitude * 10 ** (min(twist_db, 0.0) / 20)
    w_low = 2 * math.pi * low / rate
    w_high = 2 * math.pi * high / rate
    samples = array("h", (int(round(a_low * math.sin(w_low * n) + a_high * math.sin(w_high * n)))
                          for n in range(start_sample, start_sample + count)))
    samples.extend([0] * (-count % frame))
    data = samples.tobytes() if not _BIG_ENDIAN else _swapped(samples)
    return [data[i:i + 2 * frame] for i in range(0, len(data), 2 * frame)]


_BIG_ENDIAN = struct.pack("=H", 1) == b"\x00\x01"


def _swapped(samples: array) -> bytes:
    copy = array("h", samples)
    copy.byteswap()
    return copy.tobytes()


def _pcm16_samples(pcm16: bytes) -> array:
    samples = array("h", pcm16)
    if _BIG_ENDIAN:
        samples.byteswap()
    return samples


class ToneDetector:
    """In-band DTMF detection on PCM16 audio (8 kHz), fed frame by frame.

    Each 20 ms a window of the last 40 ms is Hann-windowed and the eight
    Goertzel powers computed. Hann over 320 samples puts the neighbouring
    row tone (73 Hz away, the closest pair) outside the main lobe (50 Hz
    half width), and 40 ms is short enough for a 70 ms press to fill two
    windows wherever the frames cut it.

    Why the window-halves test: silence adds no energy, so a window half
    filled with tone still passes the energy-share test; requiring the
    halves to be within 3 dB keeps windows that straddle a start, an end
    or a gap out, so two presses of the same key 40 ms apart stay two.
    A press ends after three windows without it: one lost 20 ms frame
    spoils exactly two windows and must not split a press.

    The thresholds are class attributes; the tests hold them to G.711
    coding, white noise at 15 dB SNR, 6 dB of twist either way, and
    synthetic vowels with formants on DTMF frequencies (talk-off).
    """

    window = 320
    hop = 160
    #: share of the window's energy the two tones must carry
    min_share = 0.85
    #: each tone's amplitude must exceed this (about -42 dBFS)
    min_amplitude = 250.0
    #: largest level difference between the two tones
    max_twist_db = 8.0
    #: the strongest tone of a group over the next one of the same group
    min_group_ratio_db = 10.0
    #: largest energy ratio between the window's halves
    max_half_ratio = 2.0
    #: consecutive windows that confirm a press, and that end it
    confirm = 2
    end_after = 3

    def __init__(self, rate: int = 8000) -> None:
        if rate != 8000:
            raise ValueError("the detector runs at 8000 Hz")
        n = self.window
        self._hann = [0.5 - 0.5 * math.cos(2 * math.pi * (i + 0.5) / n) for i in range(n)]
        s1 = sum(self._hann)
        s2 = sum(w * w for w in self._hann)
        # share of a Goertzel power in the windowed energy: 2 P S2 / (S1^2 E)
        self._share_scale = 2 * s2 / (s1 * s1)
        self._amplitude_scale = 4 / (s1 * s1)
        self._coefficients = [2 * math.cos(2 * math.pi * f / rate) for f in ROWS + COLUMNS]
        self._buffer: list[int] = []
        self._press: Optional[list] = None  # [digit, first window, last window]
        self._candidate: Optional[tuple[str, int, int]] = None  # (digit, windows in a row, last window)
        self._first = 0  # the candidate's first window
        self._misses = 0
        self._index = 0  # window number

    # one window ----------------------------------------------------------------------
    def classify(self, samples: Sequence[float]) -> Optional[str]:
        """The key a window of C{window} samples holds, or None."""
        half = len(samples) // 2
        e1 = sum(x * x for x in samples[:half])
        e2 = sum(x * x for x in samples[half:])
        if e1 + e2 < (self.min_amplitude ** 2) * half:
            return None
        if max(e1, e2) > self.max_half_ratio * max(min(e1, e2), 1e-9):
            return None
        windowed = [x * w for x, w in zip(samples, self._hann)]
        energy = sum(y * y for y in windowed)
        needed = self.min_share * energy / self._share_scale
        rows = [_goertzel(windowed, c) for c in self._coefficients[:4]]
        r = max(range(4), key=rows.__getitem__)
        p_row = rows[r]
        # within the twist limit the pair carries at most (1 + 10^(8/10))
        # times the row tone: speech and noise mostly end here, before
        # the column filters (half the work) run
        if p_row * (1 + 10 ** (self.max_twist_db / 10)) < needed:
            return None
        cols = [_goertzel(windowed, c) for c in self._coefficients[4:]]
        c = max(range(4), key=cols.__getitem__)
        p_col = cols[c]
        if p_row <= 0 or p_col <= 0:
            return None
        if p_row + p_col < needed:
            return None
        if min(p_row, p_col) * self._amplitude_scale < self.min_amplitude ** 2:
            return None
        if abs(10 * math.log10(p_row / p_col)) > self.max_twist_db:
            return None
        ratio = 10 ** (self.min_group_ratio_db / 10)
        if any(p * ratio > p_row for i, p in enumerate(rows) if i != r):
            return None
        if any(p * ratio > p_col for i, p in enumerate(cols) if i != c):
            return None
        return _KEYPAD[r][c]

    # the stream of windows -----------------------------------------------------------
    def feed(self, pcm16: bytes) -> list[DtmfDigit]:
        """Take PCM16LE audio (any length, usually one 20 ms frame); the
        presses that ended in it."""
        self._buffer.extend(_pcm16_samples(pcm16))
        reports: list[DtmfDigit] = []
        while len(self._buffer) >= self.window:
            digit = self.classify(self._buffer[:self.window])
            del self._buffer[:self.hop]
            reports += self._window_result(digit)
            self._index += 1
        return reports

    def flush(self) -> list[DtmfDigit]:
        """End of audio: report a press still going on."""
        return self._end_press()

    def _window_result(self, digit: Optional[str]) -> list[DtmfDigit]:
        press = self._press
        if press is not None:
            if digit == press[0]:
                press[2] = self._index
                self._misses = 0
                return []
            self._misses += 1
            if self._misses < self.end_after and digit is None:
                return []
            reports = self._end_press()
        else:
            reports = []
        if digit is None:
            self._candidate = None
            return reports
        candidate = self._candidate
        if candidate is not None and candidate[0] == digit and candidate[2] == self._index - 1:
            count = candidate[1] + 1
        else:
            count = 1
            self._first = self._index
        self._candidate = (digit, count, self._index)
        if count >= self.confirm:
            self._press = [digit, self._first, self._index]
            self._candidate = None
            self._misses = 0
        return reports

    def _end_press(self) -> list[DtmfDigit]:
        press = self._press
        self._press = None
        self._misses = 0
        if press is None:
            return []
        digit, first, last = press
        duration = ((last - first) * self.hop + self.window) * 1000 // 8000
        return [DtmfDigit(digit, duration, "audio")]


def _goertzel(samples: Sequence[float], coefficient: float) -> float:
    """The power at one frequency (C{coefficient} = 2 cos(2 pi f / rate))."""
    s1 = s2 = 0.0
    for y in samples:
        s1, s2 = y + coefficient * s1 - s2, s1
    return s1 * s1 + s2 * s2 - coefficient * s1 * s2


def detect_digits(frames: Iterable[bytes]) -> list[DtmfDigit]:
    """Every press in a sequence of PCM16LE frames (a convenience for
    files and tests)."""
    detector = ToneDetector()
    found: list[DtmfDigit] = []
    for frame in frames:
        found += detector.feed(frame)
    return found + detector.flush()
