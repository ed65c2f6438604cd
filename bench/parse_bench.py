#!/usr/bin/env python3
"""Message-layer micro-benchmark: sipproxy against the Python SIP parsers a
user could pick instead (sipmessage, sippy, aiosipua, twisted.protocols.sip,
and pyVoIP if present), in one process, on the same messages.

    python bench/parse_bench.py [--iterations 20000] [--repeats 5]

For every library it times, per message, on a ~700-byte INVITE with SDP and
a ~450-byte 180 Ringing:

* ``parse``: bytes in, message object out;
* ``p+b+s``: parse, read the top Via's branch, serialise (what a proxy does
  with every message it forwards: the fair column);
* ``180 in call``: p+b+s of each 180 right after the INVITE of its own call
  was handled (untimed): the Vias, From, Call-ID and CSeq repeat, as they do
  for a proxy, which is what sipproxy's caches are for;
* ``same``: p+b+s on one message repeated (flatters parsers that remember
  what they saw; shown for reference only).

The ``parse`` and ``p+b+s`` loops run over freshly generated, all-distinct
messages (new Call-ID, tags, branches, CSeq and SDP ids per message), so no
message repeats within a run. sipproxy also runs "cold", with its line, Via
and URI caches emptied before every parse.

In the same run every library gets the RFC 4475 torture messages of
tests/rfc4475 (valid must be accepted, invalid refused). A library that
cannot be imported is skipped with one line. See bench/README.md, section
"Message layer".
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import gc
import hashlib
import io
import os
import platform
import signal
import sys
import time
import warnings
from importlib import metadata
from typing import Callable, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TORTURE_DIR = os.path.join(ROOT, "tests", "rfc4475")

# -- the messages ----------------------------------------------------------
def _hex(n: int, salt: int, size: int = 12) -> str:
    """size hex digits, a different-looking value per (n, salt)."""
    return hashlib.blake2b(b"%d:%d" % (salt, n), digest_size=size // 2).hexdigest()


def invite(n: int) -> bytes:
    """Call number n's INVITE as a proxy receives it from an upstream
    proxy: two Vias, Record-Route, an SDP offer."""
    sdp = (
        "v=0\r\n"
        f"o=alice {n % 10**9 + 10**9} {n % 10**9 + 10**9} IN IP4 192.0.2.101\r\n"
        "s=-\r\n"
        "c=IN IP4 192.0.2.101\r\n"
        "t=0 0\r\n"
        f"m=audio {20000 + 2 * (n % 10000)} RTP/AVP 0 8 101\r\n"
        "a=rtpmap:0 PCMU/8000\r\n"
        "a=rtpmap:8 PCMA/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\n"
    )
    head = (
        "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP p1.example.com:5060;branch=z9hG4bK{_hex(n, 1)}\r\n"
        f"Via: SIP/2.0/UDP 192.0.2.101:5060;rport;branch=z9hG4bK{_hex(n, 2)}\r\n"
        "Record-Route: <sip:p1.example.com;lr>\r\n"
        "Max-Forwards: 69\r\n"
        f"From: \"Alice\" <sip:alice@atlanta.example.com>;tag={_hex(n, 3, 10)}\r\n"
        "To: <sip:bob@biloxi.example.com>\r\n"
        f"Call-ID: {_hex(n, 4)}@192.0.2.101\r\n"
        f"CSeq: {n % 9000 + 1000} INVITE\r\n"
        "Contact: <sip:alice@192.0.2.101:5060>\r\n"
        "User-Agent: Phone/4.2\r\n"
        "Content-Type: application/sdp\r\n"
        f"Content-Length: {len(sdp)}\r\n"
        "\r\n"
    )
    return (head + sdp).encode("ascii")


def ringing(n: int) -> bytes:
    """The 180 answering call number n's INVITE, on its way back (the
    upstream Via stamped with received and rport)."""
    return (
        "SIP/2.0 180 Ringing\r\n"
        f"Via: SIP/2.0/UDP p1.example.com:5060;branch=z9hG4bK{_hex(n, 1)}\r\n"
        f"Via: SIP/2.0/UDP 192.0.2.101:5060;rport=5060;received=192.0.2.101;branch=z9hG4bK{_hex(n, 2)}\r\n"
        "Record-Route: <sip:p1.example.com;lr>\r\n"
        f"From: \"Alice\" <sip:alice@atlanta.example.com>;tag={_hex(n, 3, 10)}\r\n"
        f"To: <sip:bob@biloxi.example.com>;tag={_hex(n, 6, 10)}\r\n"
        f"Call-ID: {_hex(n, 4)}@192.0.2.101\r\n"
        f"CSeq: {n % 9000 + 1000} INVITE\r\n"
        "Contact: <sip:bob@192.0.2.202>\r\n"
        "User-Agent: Phone/4.2\r\n"
        "Content-Length: 0\r\n"
        "\r\n"
    ).encode("ascii")


KINDS = {"INVITE": invite, "180": ringing}


class Numbers:
    """Hands out call numbers never used before in this process, so every
    timed loop sees messages no parser has seen."""

    def __init__(self) -> None:
        self.next = 0

    def batch(self, make: Callable[[int], bytes], count: int) -> list[bytes]:
        start = self.next
        self.next += count
        return [make(n) for n in range(start, start + count)]


# -- the libraries -----------------------------------------------------------
class Lib:
    """How one library is driven: parse, and parse + top-Via branch +
    serialise (None when it has no serialiser)."""

    def __init__(self, name: str, version: str, parse: Callable, full: Optional[Callable],
                 note: str = "", competitor: bool = True,
                 fresh: Optional[Callable[[], tuple[Callable, Callable]]] = None) -> None:
        self.name = name
        self.version = version
        self.parse = parse
        self.full = full
        self.note = note
        self.competitor = competitor
        self.fresh = fresh  # new (parse, full) for a library with parser state


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


def load_sipproxy() -> list[Lib]:
    sys.path.insert(0, ROOT)  # a checkout run without installing
    from sipproxy.sip import message as sm

    parse = sm.parse

    def full(data: bytes) -> bytes:
        msg = parse(data)
        msg.top_via().branch
        return bytes(msg)

    caches = [getattr(sm, n) for n in ("_CHECKED_LINES", "_VIA_CACHE", "_URI_CACHE") if hasattr(sm, n)]
    c1, c2, c3 = (caches + [{}, {}, {}])[:3]

    def cold_parse(data: bytes):
        c1.clear()
        c2.clear()
        c3.clear()
        return parse(data)

    def cold_full(data: bytes) -> bytes:
        c1.clear()
        c2.clear()
        c3.clear()
        msg = parse(data)
        msg.top_via().branch
        return bytes(msg)

    version = _version("sipproxy")
    note = "" if len(caches) == 3 else f"only {len(caches)} of 3 caches found"
    return [
        Lib("sipproxy", version, parse, full, competitor=False),
        Lib("sipproxy cold", version, cold_parse, cold_full, competitor=False,
            note="caches emptied before each parse" + (f"; {note}" if note else "")),
    ]


def load_sipmessage() -> list[Lib]:
    import sipmessage
    from sipmessage import Via

    parse = sipmessage.Message.parse

    def full(data: bytes) -> bytes:
        msg = parse(data)
        # top Via only: the first value of the first Via line
        Via.parse_many(msg.headers["Via"])[0].parameters.get("branch")
        return bytes(msg)

    return [Lib("sipmessage", _version("sipmessage"), parse, full)]


def load_sippy() -> list[Lib]:
    from sippy.SipRequest import SipRequest
    from sippy.SipResponse import SipResponse

    def parse(data: bytes):
        # what SipTransactionManager.handleIncoming does
        text = data.decode()
        if text.startswith("SIP/2.0 "):
            return SipResponse(text)
        return SipRequest(text)

    def full(data: bytes) -> str:
        msg = parse(data)
        msg.getHFBody("via").getBranch()
        return str(msg)

    return [Lib("sippy", _version("sippy"), parse, full, note="serialises to str")]


def load_aiosipua() -> list[Lib]:
    from aiosipua import parse_via
    from aiosipua.message import SipMessage

    parse = SipMessage.parse

    def full(data: bytes) -> bytes:
        msg = parse(data)
        # Via values are split at parse time: the first is the top one
        parse_via(msg.get_header("via")).branch
        return bytes(msg)

    return [Lib("aiosipua", _version("aiosipua"), parse, full)]


def load_twisted() -> list[Lib]:
    from twisted.logger import globalLogBeginner
    from twisted.protocols import sip

    # its parser log.err()s what it cannot read: keep that off the report
    globalLogBeginner.beginLoggingTo([lambda event: None], redirectStandardIO=False)
    parse_via = sip.parseViaHeader

    def make() -> tuple[Callable, Callable]:
        got: list = []
        parser = sip.MessagesParser(got.append)  # one parser, as sip.Base keeps

        def parse(data: bytes):
            # what sip.Base.datagramReceived does; no message out = refused
            parser.dataReceived(data)
            parser.dataDone()
            msg = got.pop()
            got.clear()
            return msg

        def full(data: bytes) -> str:
            msg = parse(data)
            parse_via(msg.headers["via"][0]).branch
            return msg.toString()

        return parse, full

    parse, full = make()
    return [Lib("twisted.protocols.sip", _version("Twisted"), parse, full, fresh=make,
                note="serialises to str; a fresh parser per RFC 4475 vector (one that raised"
                     " out of dataDone stays broken)")]


def load_pyvoip() -> list[Lib]:
    import pyVoIP.VoIP  # noqa: F401  (pyVoIP.SIP alone fails on a circular import)
    from pyVoIP.SIP import SIPMessage

    def parse(data: bytes):
        return SIPMessage(data)

    return [Lib("pyVoIP", _version("pyVoIP"), parse, None, competitor=False,
                note="no serialiser; INVITE/ACK/BYE/CANCEL only; not counted as a competitor")]


LOADERS = [
    ("sipproxy", load_sipproxy),
    ("sipmessage", load_sipmessage),
    ("sippy", load_sippy),
    ("aiosipua", load_aiosipua),
    ("twisted", load_twisted),
    ("pyvoip", load_pyvoip),
]


def load(selected: set[str]) -> list[Lib]:
    libs: list[Lib] = []
    for key, loader in LOADERS:
        if key not in selected:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                libs.extend(loader())
        except Exception as e:  # ImportError and whatever an import can raise
            print(f"skip {key}: not importable ({type(e).__name__}: {e})")
    return libs


# -- RFC 4475 ----------------------------------------------------------------
class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout()


def torture(libs: list[Lib]) -> dict[str, dict]:
    """Each library on each valid/invalid/lenient vector: accepted or not,
    at the parse step and at the p+b+s step."""
    with open(os.path.join(TORTURE_DIR, "MANIFEST.tsv"), newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t") if r["class"] in ("valid", "invalid", "lenient")]
    vectors = []
    for r in rows:
        with open(os.path.join(TORTURE_DIR, r["file"]), "rb") as f:
            vectors.append((r["file"][:-4], r["class"], f.read()))

    def accepts(fn: Callable, data: bytes) -> bool:
        signal.setitimer(signal.ITIMER_REAL, 2.0)
        try:
            fn(data)
            return True
        except _Timeout:
            return False
        except Exception:
            return False
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)

    old = signal.signal(signal.SIGALRM, _alarm)
    out: dict[str, dict] = {}
    try:
        for lib in libs:
            if lib.name == "sipproxy cold":
                continue
            res = {"valid": [0, 0, []], "invalid": [0, 0, []], "lenient": [0, 0, []], "total": {}}
            for stem, klass, data in vectors:
                res["total"][klass] = res["total"].get(klass, 0) + 1
                # silence the libraries that print or log on bad input
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
                        warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    parse, full = lib.fresh() if lib.fresh else (lib.parse, lib.full)
                    shallow = accepts(parse, data)
                    if lib.fresh:
                        parse, full = lib.fresh()
                    deep = accepts(full or parse, data) if shallow else False
                entry = res[klass]
                if klass == "invalid":
                    entry[0] += not shallow
                    entry[1] += not deep
                    if shallow:
                        entry[2].append(stem)
                else:
                    entry[0] += shallow
                    entry[1] += deep
                    if klass == "valid" and not deep:
                        entry[2].append(stem)
            out[lib.name] = res
    finally:
        signal.signal(signal.SIGALRM, old)
    return out


# -- timing --------------------------------------------------------------------
def time_loop(fn: Callable, batch: list[bytes]) -> float:
    """Seconds per message for one pass over batch (GC off, as timeit)."""
    gc.collect()
    gc.disable()
    try:
        t0 = time.perf_counter()
        for data in batch:
            fn(data)
        elapsed = time.perf_counter() - t0
    finally:
        gc.enable()
    return elapsed / len(batch)


def time_in_call(fn: Callable, prepare: Callable, pairs: list[tuple[bytes, bytes]]) -> float:
    """Seconds per message for C{fn} on the second message of each pair,
    right after C{prepare} handled the first (untimed): a 180 parsed after
    the INVITE of its own call, as a proxy sees them."""
    gc.collect()
    gc.disable()
    clock = time.perf_counter
    total = 0.0
    try:
        for first, second in pairs:
            prepare(first)
            t0 = clock()
            fn(second)
            total += clock() - t0
    finally:
        gc.enable()
    return total / len(pairs)


COLUMNS = [  # (key, kind, op, messages: distinct / same / call)
    ("INVITE parse", "INVITE", "parse", "distinct"),
    ("INVITE p+b+s", "INVITE", "full", "distinct"),
    ("INVITE same", "INVITE", "full", "same"),
    ("180 parse", "180", "parse", "distinct"),
    ("180 p+b+s", "180", "full", "distinct"),
    ("180 in call", "180", "full", "call"),
    ("180 same", "180", "full", "same"),
]


def bench(libs: list[Lib], iterations: int, repeats: int, numbers: Numbers, log) -> dict:
    best: dict[tuple[str, str], float] = {}
    # warm-up on messages of their own (imports, header-name caches, code paths)
    for kind, make in KINDS.items():
        warm = numbers.batch(make, 200)
        for lib in libs:
            for fn in (lib.parse, lib.full):
                if fn is not None:
                    for data in warm:
                        fn(data)
    for rnd in range(repeats):
        t_round = time.perf_counter()
        for key, kind, op, messages in COLUMNS:
            make = KINDS[kind]
            pairs: list[tuple[bytes, bytes]] = []
            if messages == "distinct":
                batch = numbers.batch(make, iterations)  # never seen before
            elif messages == "same":
                batch = [make(numbers.batch(lambda n: n, 1)[0])] * iterations
            else:  # each 180 right after the INVITE of its own call
                calls = numbers.batch(lambda n: n, iterations)
                pairs = [(invite(n), make(n)) for n in calls]
                batch = []
            # rotate the order each round so no library always runs first
            order = libs[rnd % len(libs):] + libs[: rnd % len(libs)]
            for lib in order:
                fn = lib.parse if op == "parse" else lib.full
                if fn is None or (messages != "distinct" and lib.name == "sipproxy cold"):
                    continue
                if messages == "call":
                    per = time_in_call(fn, lib.full, pairs)
                else:
                    per = time_loop(fn, batch)
                k = (lib.name, key)
                if k not in best or per < best[k]:
                    best[k] = per
            del batch
        log(f"  round {rnd + 1}/{repeats} done in {time.perf_counter() - t_round:.1f} s")
    return best


def round_trip(libs: list[Lib], numbers: Numbers) -> dict[str, str]:
    """Does p+b+s give back the very input (both messages are written in
    canonical form, so every serialiser should)?"""
    out = {}
    for lib in libs:
        if lib.full is None:
            out[lib.name] = "-"
            continue
        ok = True
        for make in KINDS.values():
            data = numbers.batch(make, 1)[0]
            try:
                result = lib.full(data)
                if isinstance(result, str):
                    result = result.encode("utf-8")
                ok = ok and result == data
            except Exception:
                ok = False
        out[lib.name] = "exact" if ok else "DIFFERS"
    return out


# -- report --------------------------------------------------------------------
def machine() -> str:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"nproc {os.cpu_count()}, {cpu}, {platform.python_implementation()} "
            f"{platform.python_version()}, {platform.system()} {platform.release()}, load {load}")


def fmt_us(v: Optional[float]) -> str:
    return "-" if v is None else f"{v * 1e6:.1f}"


def report(libs, best, rfc, rt, args, sizes, started: str, host: str) -> str:
    lines = []
    p = lines.append
    p(f"sipproxy message layer vs Python SIP parsers, started {started}")
    p(f"machine: {host} (load at start)")
    p(f"messages: INVITE {sizes['INVITE']} bytes, 180 {sizes['180']} bytes; "
      f"{args.iterations} per timed loop, best of {args.repeats} interleaved rounds; GC off in loops")
    p("")
    p("µs per message (lower is better). parse = bytes to message object; p+b+s = parse + top-Via branch"
      " + serialise on messages that share nothing (the pessimistic column); 180 in call = p+b+s of each 180"
      " right after the INVITE of its own call (what a proxy sees); same = p+b+s on one message repeated"
      " (reference only)")
    p("RFC 4475: valid accepted /13, invalid refused /14, lenient accepted /5; parse step (p+b+s step)")
    p("")
    head = ["library", "version"] + [c[0] for c in COLUMNS] + ["valid", "invalid", "lenient", "round-trip"]
    rows = []
    for lib in libs:
        row = [lib.name, lib.version]
        for key, *_ in COLUMNS:
            row.append(fmt_us(best.get((lib.name, key))))
        r = rfc.get(lib.name) or rfc.get(lib.name.replace(" cold", ""))
        if r:
            t = r["total"]
            row.append(f"{r['valid'][0]}/{t.get('valid', 0)} ({r['valid'][1]})")
            row.append(f"{r['invalid'][0]}/{t.get('invalid', 0)} ({r['invalid'][1]})")
            row.append(f"{r['lenient'][0]}/{t.get('lenient', 0)} ({r['lenient'][1]})")
        else:
            row += ["-", "-", "-"]
        row.append(rt.get(lib.name, "-"))
        rows.append(row)
    competitors = [lib for lib in libs if lib.competitor]
    ratio_rows = []
    fastest_row = ["fastest competitor", ""]
    for base in ("sipproxy", "sipproxy cold"):
        if not any(lib.name == base for lib in libs):
            continue
        rr = [f"{base} / fastest", ""]
        for key, *_ in COLUMNS:
            times = [(best[(c.name, key)], c.name) for c in competitors if (c.name, key) in best]
            mine = best.get((base, key))
            if not times or mine is None:
                rr.append("-")
                continue
            rr.append(f"{mine / min(times)[0]:.2f}x")
        rr += ["", "", "", ""]
        ratio_rows.append(rr)
    for key, *_ in COLUMNS:
        times = [(best[(c.name, key)], c.name) for c in competitors if (c.name, key) in best]
        fastest_row.append(min(times)[1].replace("twisted.protocols.sip", "twisted") if times else "-")
    fastest_row += ["", "", "", ""]
    table = [head] + rows + ([fastest_row] if competitors else []) + (ratio_rows if competitors else [])
    widths = [max(len(str(r[i])) for r in table) for i in range(len(head))]

    def line(r):
        return "| " + " | ".join(str(c).ljust(w) if i < 2 else str(c).rjust(w)
                                 for i, (c, w) in enumerate(zip(r, widths))) + " |"

    p(line(head))
    p("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in table[1:]:
        p(line(r))
    p("")
    for lib in libs:
        r = rfc.get(lib.name)
        if r and (r["valid"][2] or r["invalid"][2]):
            bits = []
            if r["valid"][2]:
                bits.append("valid not accepted (p+b+s): " + " ".join(r["valid"][2]))
            if r["invalid"][2]:
                bits.append("invalid accepted (parse): " + " ".join(r["invalid"][2]))
            p(f"{lib.name}: " + "; ".join(bits))
        if lib.note:
            p(f"{lib.name}: {lib.note}")
    p("")
    if competitors and any(lib.name == "sipproxy" for lib in libs):
        fair = [k for k, _, op, messages in COLUMNS if op == "full" and messages in ("distinct", "call")]
        ratios = {}
        for key in fair:
            times = [best[(c.name, key)] for c in competitors if (c.name, key) in best]
            ratios[key] = best[("sipproxy", key)] / min(times)
        r = rfc.get("sipproxy")
        rfc_ok = bool(r) and r["valid"][1] == r["total"]["valid"] and r["invalid"][0] == r["total"]["invalid"]
        p("target (issue 5): sipproxy p+b+s <= 0.5x the fastest competitor, passing all of RFC 4475")
        p("  " + ", ".join(f"{k}: {v:.2f}x {'(met)' if v <= 0.5 else '(not met)'}" for k, v in ratios.items())
          + f"; RFC 4475 valid+invalid: {'all passed' if rfc_ok else 'NOT all passed'}")
        missing = {"sipmessage", "sippy", "aiosipua", "twisted.protocols.sip"} - {c.name for c in competitors}
        if missing:
            p(f"  (only against {', '.join(c.name for c in competitors)}; missing {', '.join(sorted(missing))})")
    elif not competitors:
        p("no competitor importable: timings only (install them in a separate venv, see bench/README.md)")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iterations", type=int, default=20000, help="messages per timed loop (default 20000)")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved rounds, best kept (default 5)")
    ap.add_argument("--libs", default=",".join(k for k, _ in LOADERS),
                    help="comma list of " + ",".join(k for k, _ in LOADERS))
    ap.add_argument("--no-cold", action="store_true", help="skip the sipproxy cold-cache row")
    ap.add_argument("--quick", action="store_true", help="2000 iterations, 2 rounds (a smoke test)")
    args = ap.parse_args(argv)
    if args.quick:
        args.iterations, args.repeats = 2000, 2

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    libs = load(set(args.libs.split(",")))
    if args.no_cold:
        libs = [lib for lib in libs if lib.name != "sipproxy cold"]
    if not libs:
        print("nothing to run")
        return 1
    started = time.strftime("%Y-%m-%d %H:%M %Z")
    host = machine()
    numbers = Numbers()
    sizes = {k: len(make(0)) for k, make in KINDS.items()}
    log(f"libraries: {', '.join(lib.name for lib in libs)}")
    log("RFC 4475 vectors ...")
    rfc = torture(libs)
    rt = round_trip(libs, numbers)
    log(f"timing: {args.iterations} messages per loop, {args.repeats} rounds ...")
    best = bench(libs, args.iterations, args.repeats, numbers, log)
    print(report(libs, best, rfc, rt, args, sizes, started, host))
    return 0


if __name__ == "__main__":
    sys.exit(main())
