"""Seeded mutations of valid requests and responses through a proxy built as
C{twistd sipproxy --registrar --nathelper} builds it (issue 12).

A few thousand mutations (bit flips, truncation, duplicated and dropped
lines, random bytes in headers, huge values, missing or bare line ends, NUL
octets...) of an OPTIONS, an INVITE with SDP, a REGISTER, a BYE and the
responses a trap UAS would send back. The proxy runs on real loopback UDP
legs; the bulk is handed to its dispatcher as each datagram would be (what
the legs send is recorded and only loopback destinations are really sent
to), a smaller batch goes over real sockets to a real trap socket.

What must hold: no traceback (no logged failure at all); nothing the parser
refuses ever reaches the trap; what reaches it parses; the caches and the
process stay small. C{bench/fuzz.py} runs the same longer and prints the
tallies.
"""
from __future__ import annotations

import ipaddress
import os
import random
from typing import Any, Callable, Optional

from twisted.internet import protocol, reactor
from twisted.internet.defer import inlineCallbacks
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from sipproxy.sip.fastparse import CACHES
from sipproxy.sip.message import ParseError, parse
from sipproxy.transport.resolver import StaticResolver

from tests.util import reserve_port, temp_dir, wait_until

SEED = 4475
MUTATIONS = 2500
OVER_SOCKETS = 300
SDP = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       "m=audio 40000 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\n")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# -- what is mutated -----------------------------------------------------------------
def requests(trap: tuple[str, int], proxy: tuple[str, int], client: tuple[str, int], n: int) -> list[bytes]:
    """Valid requests from the client through the proxy to the trap."""
    trap_uri = f"sip:trap@{trap[0]}:{trap[1]}"
    via = f"Via: SIP/2.0/UDP {client[0]}:{client[1]};branch=z9hG4bK-f{n};rport\r\n"
    common = (f"From: \"Fuzz\" <sip:fuzz@{client[0]}:{client[1]}>;tag=f{n}\r\n"
              f"Call-ID: fuzz-{n}@{client[0]}\r\nMax-Forwards: 70\r\n")
    contact = f"Contact: <sip:fuzz@{client[0]}:{client[1]}>\r\n"
    return [
        (f"OPTIONS {trap_uri} SIP/2.0\r\n{via}{common}To: <{trap_uri}>\r\nCSeq: 1 OPTIONS\r\n{contact}"
         "Accept: application/sdp\r\nContent-Length: 0\r\n\r\n").encode(),
        (f"INVITE {trap_uri} SIP/2.0\r\n{via}{common}To: <{trap_uri}>\r\nCSeq: 1 INVITE\r\n{contact}"
         f"Content-Type: application/sdp\r\nContent-Length: {len(SDP)}\r\n\r\n{SDP}").encode(),
        (f"REGISTER sip:{proxy[0]}:{proxy[1]} SIP/2.0\r\n{via}{common}To: <sip:fuzz@{proxy[0]}>\r\n"
         f"CSeq: 1 REGISTER\r\n{contact}Expires: 60\r\nContent-Length: 0\r\n\r\n").encode(),
        (f"BYE {trap_uri} SIP/2.0\r\n{via}{common}To: <{trap_uri}>;tag=t{n}\r\nCSeq: 2 BYE\r\n"
         "Content-Length: 0\r\n\r\n").encode(),
        (f"MESSAGE {trap_uri} SIP/2.0\r\n{via}{common}To: <{trap_uri}>\r\nCSeq: 1 MESSAGE\r\n"
         "Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello").encode(),
    ]


_MUTATORS: list[Callable[[random.Random, bytes], bytes]] = []


def mutator(fn: Callable[[random.Random, bytes], bytes]) -> Callable[[random.Random, bytes], bytes]:
    _MUTATORS.append(fn)
    return fn


@mutator
def flip_bits(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        i = rng.randrange(len(out))
        out[i] ^= 1 << rng.randrange(8)
    return bytes(out)


@mutator
def truncate(rng: random.Random, data: bytes) -> bytes:
    return data[: rng.randrange(len(data))]


def _lines(data: bytes) -> tuple[list[bytes], bytes]:
    head, sep, body = data.partition(b"\r\n\r\n")
    return head.split(b"\r\n"), body if sep else b""


def _join(lines: list[bytes], body: bytes) -> bytes:
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


@mutator
def duplicate_line(rng: random.Random, data: bytes) -> bytes:
    lines, body = _lines(data)
    if not lines:
        return data
    i = rng.randrange(len(lines))
    lines.insert(rng.randrange(len(lines) + 1), lines[i])
    return _join(lines, body)


@mutator
def drop_line(rng: random.Random, data: bytes) -> bytes:
    lines, body = _lines(data)
    del lines[rng.randrange(len(lines))]
    return _join(lines, body)


@mutator
def swap_lines(rng: random.Random, data: bytes) -> bytes:
    lines, body = _lines(data)
    i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
    lines[i], lines[j] = lines[j], lines[i]
    return _join(lines, body)


@mutator
def random_bytes_in_header(rng: random.Random, data: bytes) -> bytes:
    lines, body = _lines(data)
    i = rng.randrange(len(lines))
    junk = bytes(rng.randrange(256) for _ in range(rng.randint(1, 24)))
    at = rng.randrange(len(lines[i]) + 1)
    lines[i] = lines[i][:at] + junk + lines[i][at:]
    return _join(lines, body)


@mutator
def huge_value(rng: random.Random, data: bytes) -> bytes:
    lines, body = _lines(data)
    i = rng.randrange(1, len(lines)) if len(lines) > 1 else 0
    name = lines[i].partition(b":")[0]
    filler = rng.choice([b"x", b"9", b"a.", b",", b";p=", b"<sip:a@b>,"]) * rng.randint(1000, 20000)
    lines[i] = name + b": " + filler[:60000]
    return _join(lines, body)


@mutator
def bad_line_ends(rng: random.Random, data: bytes) -> bytes:
    ends = [i for i in range(len(data) - 1) if data[i:i + 2] == b"\r\n"]
    if not ends:
        return data + b"\r"
    i = rng.choice(ends)
    return data[:i] + rng.choice([b"", b"\r", b"\n", b"\r\r\n", b"\n\r", b"\x00"]) + data[i + 2:]


@mutator
def special_octets(rng: random.Random, data: bytes) -> bytes:
    i = rng.randrange(len(data))
    return data[:i] + rng.choice([b"\x00", b"\r", b"\xff\xfe", b"\"", b"<", b">", b"..", b"%00", b"\t", b" "]) + data[i:]


@mutator
def odd_numbers(rng: random.Random, data: bytes) -> bytes:
    digits = [i for i, c in enumerate(data) if 48 <= c <= 57]
    if not digits:
        return data
    i = rng.choice(digits)
    return data[:i] + rng.choice([b"99999", b"0", b"-1", b"4294967296", b"x", b"65536", b"00000000000001"]) + data[i + 1:]


def mutate(rng: random.Random, data: bytes) -> bytes:
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        if not data:
            break
        data = rng.choice(_MUTATORS)(rng, data)
    return data


def refused(data: bytes) -> bool:
    """True when the parser refuses C{data} (any other exception is a bug
    and propagates)."""
    return why_refused(data) is not None


def why_refused(data: bytes) -> Optional[str]:
    """Why the parser refuses C{data}, or None."""
    try:
        parse(data)
    except ParseError as e:
        return e.reason
    return None


# -- the proxy under test ------------------------------------------------------------------
class Trap(protocol.DatagramProtocol):
    def __init__(self) -> None:
        self.received: list[bytes] = []

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.append(data)


class Sink(protocol.DatagramProtocol):
    """The client's socket: keeps what it is answered."""

    def __init__(self) -> None:
        self.received: list[bytes] = []

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.append(data)


class Tally:
    """What happened to each mutation."""

    def __init__(self) -> None:
        self.sent = self.answered_4xx = self.answered_other = self.forwarded = self.dropped = 0
        self.refused_by_parser = 0
        self.refused_but_forwarded: list[bytes] = []
        self.forwarded_unparseable: list[bytes] = []
        self.not_loopback = 0

    def line(self) -> str:
        return (f"{self.sent} mutations sent ({self.refused_by_parser} refused by the parser): "
                f"{self.answered_4xx} answered 4xx, {self.answered_other} answered otherwise, "
                f"{self.forwarded} forwarded, {self.dropped} dropped; "
                f"{len(self.refused_but_forwarded)} refused but forwarded, "
                f"{len(self.forwarded_unparseable)} forwarded unparseable; "
                f"{self.not_loopback} sends to non-loopback addresses suppressed")


class FuzzRig:
    """A proxy with registrar and NAT helper on real loopback legs, a trap
    UAS and a client socket; records what the legs send per message."""

    def __init__(self, workdir: str) -> None:
        from sipproxy.app.nat_options import make_nathelper
        from sipproxy.app.service import ProxyService
        from sipproxy.app.tap import Options, _front_door

        self.ports = (reserve_port("127.0.0.1"), reserve_port("127.0.0.2"))
        self.proxy_addr = ("127.0.0.1", self.ports[0])
        options = Options()
        rtp_low = reserve_port("127.0.0.1") & ~1
        options.parseOptions([
            "--legs", f"udp:127.0.0.1:{self.ports[0]},udp:127.0.0.2:{self.ports[1]}",
            "--registrar", "--nathelper", "--rtp-ports", f"{rtp_low}-{rtp_low + 199}",
            "--secret-file", os.path.join(workdir, "secret"),
        ])
        door, self.store = _front_door(options, reactor, b"f" * 32)
        nathelper, _ = make_nathelper(reactor, options)
        self.service = ProxyService(reactor, options["leg_specs"], receivers=[door], secret=b"f" * 32,
                                    nathelper=nathelper, resolver=StaticResolver({}))
        self.dispatcher = self.service.dispatcher
        self.records: list[tuple[bytes, tuple[str, int]]] = []
        self.not_loopback = 0
        for leg in self.service.legs:
            self._record_sends(leg)
        self.handled = 0
        received = self.dispatcher.message_received

        def counted(*args: Any, **kwargs: Any) -> None:
            self.handled += 1
            received(*args, **kwargs)

        self.dispatcher.message_received = counted

    def _record_sends(self, leg: Any) -> None:
        send = leg.send

        def recorded(data: bytes, addr: tuple[str, int]) -> None:
            self.records.append((data, addr))
            if _is_loopback(addr[0]):
                send(data, addr)
            else:
                self.not_loopback += 1

        leg.send = recorded

    def start(self) -> None:
        self.service.startService()
        self.trap = Trap()
        self.trap_port = reactor.listenUDP(0, self.trap, interface="127.0.0.2", maxPacketSize=65536)
        self.trap_addr = ("127.0.0.2", self.trap_port.getHost().port)
        self.client = Sink()
        self.client_port = reactor.listenUDP(0, self.client, interface="127.0.0.1", maxPacketSize=65536)
        self.client_addr = ("127.0.0.1", self.client_port.getHost().port)

    def stop(self) -> Any:
        for receiver in _receivers(self.dispatcher.receiver):
            if hasattr(receiver, "ping_all") and hasattr(receiver, "stop"):
                receiver.stop()  # the registrar's NAT keep-alive loop
        self.trap_port.stopListening()
        self.client_port.stopListening()
        if self.store is not None and hasattr(self.store, "close"):
            self.store.close()
        return self.service.stopService()

    def inject(self, data: bytes, tally: Tally, leg_index: int = 0, source: Optional[tuple[str, int]] = None) -> None:
        """Hand one datagram to the dispatcher as the leg would, and tally
        what the proxy sent for it."""
        is_refused = refused(data)
        tally.sent += 1
        tally.refused_by_parser += is_refused
        source = source or self.client_addr
        del self.records[:]
        self.dispatcher.message_received(data, self.service.legs[leg_index], source)
        to_trap = [d for d, addr in self.records if addr == self.trap_addr]
        answers = [d for d, addr in self.records if addr != self.trap_addr]
        if to_trap:
            tally.forwarded += 1
            if is_refused:
                tally.refused_but_forwarded.append(data)
            tally.forwarded_unparseable.extend(d for d in to_trap if refused(d))
        if answers:
            if all(d[:9] == b"SIP/2.0 4" for d in answers):
                tally.answered_4xx += 1
            else:
                tally.answered_other += 1
        if not self.records:
            tally.dropped += 1


def _receivers(receiver: Any) -> list[Any]:
    """Every receiver in a tree of receive chains."""
    found = [receiver]
    for inner in getattr(receiver, "receivers", ()):
        found.extend(_receivers(inner))
    return found


def run_mutations(rig: FuzzRig, count: int, seed: int, tally: Tally) -> None:
    """C{count} seeded mutations of requests (from the client) and of the
    trap's responses to forwarded requests (from the trap)."""
    rng = random.Random(seed)
    responses: list[bytes] = []
    for n in range(count):
        if responses and rng.random() < 0.25:
            rig.inject(mutate(rng, rng.choice(responses)), tally, 1, rig.trap_addr)
            continue
        base = rng.choice(requests(rig.trap_addr, rig.proxy_addr, rig.client_addr, n))
        if rng.random() < 0.1:  # some valid ones, so the responses below exist
            data = base
        else:
            data = mutate(rng, base)
        before = len(rig.records)
        rig.inject(data, tally)
        if len(responses) < 50:
            for sent, addr in rig.records[before:]:
                if addr == rig.trap_addr:
                    message = parse(sent)
                    if message.method != "ACK":
                        responses.append(bytes(message.create_response(200, to_tag="trap")))


def resident_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class FuzzTests(TestCase):
    timeout = 120

    def setUp(self) -> Any:
        self.failures: list[dict[str, Any]] = []

        def observe(event: dict[str, Any]) -> None:
            if "log_failure" in event:
                self.failures.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        self.rig = FuzzRig(temp_dir(self))
        self.rig.start()
        self.addCleanup(self.rig.stop)

    def assert_clean(self, tally: Tally) -> None:
        self.assertEqual([str(e["log_failure"].value) for e in self.failures], [], tally.line())
        self.assertEqual(tally.refused_but_forwarded[:3], [], tally.line())
        self.assertEqual(tally.forwarded_unparseable[:3], [], tally.line())

    def test_mutations_are_answered_or_dropped_never_forwarded_broken(self) -> None:
        tally = Tally()
        before = resident_bytes()
        run_mutations(self.rig, MUTATIONS, SEED, tally)
        grown = resident_bytes() - before
        self.assert_clean(tally)
        self.assertEqual(tally.sent, MUTATIONS)
        self.assertGreater(tally.forwarded, 0, tally.line())  # the rig does reach the trap
        self.assertGreater(tally.answered_4xx, 0, tally.line())
        self.assertLess(CACHES.key_chars(), 4 << 20, CACHES.stats())
        self.assertLess(grown, 128 << 20, tally.line())
        self.flushLoggedErrors()

    @inlineCallbacks
    def test_over_real_sockets_the_trap_sees_only_what_parses(self) -> Any:
        rng = random.Random(SEED + 1)
        rig = self.rig
        client = rig.client_port

        def answered(marker: bytes) -> Callable[[], bool]:
            return lambda: any(marker in data for data in rig.client.received)

        def sentinel(k: int) -> bytes:
            # an OPTIONS to the proxy itself, answered by it: datagrams on
            # one loopback path arrive in order, so its answer means the
            # mutations sent before it were handled
            return (f"OPTIONS sip:{rig.proxy_addr[0]}:{rig.proxy_addr[1]} SIP/2.0\r\n"
                    f"Via: SIP/2.0/UDP {rig.client_addr[0]}:{rig.client_addr[1]};branch=z9hG4bK-s{k}\r\n"
                    f"From: <sip:s@{rig.client_addr[0]}>;tag=s{k}\r\nTo: <sip:{rig.proxy_addr[0]}>\r\n"
                    f"Call-ID: sentinel-{k}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
                    "Content-Length: 0\r\n\r\n").encode()

        for n in range(OVER_SOCKETS):
            base = rng.choice(requests(rig.trap_addr, rig.proxy_addr, rig.client_addr, n))
            data = mutate(rng, base)[:60000]
            if data:
                client.write(data, rig.proxy_addr)
            if n % 50 == 49:  # let the proxy keep up with the socket buffer
                client.write(sentinel(n), rig.proxy_addr)
                yield wait_until(answered(f"sentinel-{n}".encode()), timeout=30)
        expected_at_trap = sum(1 for _, addr in rig.records if addr == rig.trap_addr)
        yield wait_until(lambda: len(rig.trap.received) >= expected_at_trap, timeout=30)
        self.assertEqual(self.failures, [])
        self.assertGreater(expected_at_trap, 0)
        for data in rig.trap.received:
            self.assertIsNone(why_refused(data), data[:200])
        self.assertEqual(len(rig.trap.received), expected_at_trap)
