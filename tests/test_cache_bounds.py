"""Every cache is bounded by size as well as entries (issue 12).

20,000 OPTIONS with 60 KB Contacts, Request-URIs or fake Contact tokens
once grew a proxy to 4.4 GB: each cache counted entries only, and kept
every 60 KB key. Here 2,000 such messages go through a two-leg proxy on
memory legs; the characters held by all its caches, and the growth of
the process, must stay small.
"""
from __future__ import annotations

import gc
import os
import platform
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from sipproxy.proxy import routing
from sipproxy.proxy.stateless import StatelessProxy
from sipproxy.sip import fastparse
from sipproxy.sip.bounded import BoundedCache, CacheSet
from sipproxy.testing import MemoryLeg, memory_dispatcher

BIG = 60_000
MESSAGES = 2_000
#: characters of keys all caches may hold together after the run
KEY_CHARS_BOUND = 4 << 20
#: how much the process may grow (resident memory) over the run: the
#: count-only caches of before grew it by several hundred MB. PyPy's
#: collector keeps the arenas of the 120 MB of messages it freed for a
#: while (98 MB seen), so it gets a looser bound; the caches' own size
#: (KEY_CHARS_BOUND) is the exact check on both runtimes.
RSS_GROWTH_BOUND = (192 if platform.python_implementation() == "PyPy" else 64) << 20


def resident_bytes() -> int:
    """Resident memory of this process (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def attack(i: int, kind: str) -> bytes:
    """OPTIONS number C{i} with a 60 KB field; each one different, so
    every cache keyed by it sees a new key."""
    filler = f"{i:06d}" + "x" * BIG
    uri, contact = "sip:bob@127.0.0.2:5090", f"<sip:alice@127.0.0.1:5091;x={i}>"
    if kind == "contact":
        contact = f"<sip:{filler}@127.0.0.1:5091>"
    elif kind == "uri":
        uri = f"sip:{filler}@127.0.0.2:5090"
    elif kind == "token":  # a Request-URI naming the proxy, with a fake Contact token
        uri = f"sip:b{'A' * BIG}{i:06d}@127.0.0.1:5060"
    return (f"OPTIONS {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5091;branch=z9hG4bK{i}\r\n"
            f"From: <sip:alice@127.0.0.1:5091>;tag={i}\r\nTo: <sip:bob@127.0.0.2:5090>\r\n"
            f"Call-ID: {i}@h\r\nCSeq: 1 OPTIONS\r\nContact: {contact}\r\nMax-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n").encode()


def all_caches(proxy: StatelessProxy, dispatcher: Any) -> CacheSet:
    caches = [*fastparse.CACHES.caches, *routing.CACHES.caches, *dispatcher.caches.caches]
    for owner in (proxy, proxy.rewriter):
        caches.extend(value for value in vars(owner).values() if isinstance(value, BoundedCache))
    return CacheSet(caches)


class CacheBoundsTests(SynchronousTestCase):
    def test_bounded_cache_policy(self) -> None:
        cache = BoundedCache("t", max_entries=3, max_key=10, max_bytes=25)
        self.assertEqual(cache.store("k" * 11, 1), 1)
        self.assertNotIn("k" * 11, cache)  # too long: computed, not kept
        for key in ("a" * 10, "b" * 10):
            cache.store(key, 2)
        self.assertEqual((len(cache), cache.size), (2, 20))
        cache.store("c" * 10, 3)  # 30 characters would pass max_bytes: emptied first
        self.assertEqual((len(cache), cache.size, cache.get("c" * 10)), (1, 10, 3))
        cache.store(("x", 1), 4, size=5)
        cache.store("d", 5)
        cache.store("e", 6)  # a fourth entry: emptied first
        self.assertEqual((len(cache), cache.size), (1, 1))
        cache.clear()
        self.assertEqual((len(cache), cache.size, cache.get("e")), (0, 0, None))

    def test_60kb_fields_leave_the_caches_small(self) -> None:
        a, b = MemoryLeg("127.0.0.1", 5060), MemoryLeg("127.0.0.2", 5060)
        dispatcher = memory_dispatcher([a, b], local_address=lambda ip: None)
        proxy = StatelessProxy(dispatcher, secret=b"c" * 32)
        dispatcher.set_receiver(proxy)
        caches = all_caches(proxy, dispatcher)
        gc.collect()
        before = resident_bytes()
        kinds = ("contact", "uri", "token")
        for i in range(MESSAGES):
            a.receive(attack(i, kinds[i % 3]), ("127.0.0.1", 5091))
            a.sent.clear()
            b.sent.clear()
        gc.collect()
        grown = resident_bytes() - before
        held = caches.key_chars()
        self.assertLess(held, KEY_CHARS_BOUND, caches.stats())
        self.assertLess(grown, RSS_GROWTH_BOUND, caches.stats())
        # and the caches still work for what is worth keeping
        self.assertGreater(len(fastparse._LAYOUTS), 0)


class BuildCacheTests(SynchronousTestCase):
    """The CSeq readings and the line prefixes of built messages are
    remembered by value: a peer (or an application) that sends a new value
    each time empties them, never grows them."""

    def test_cseq_values(self) -> None:
        from sipproxy.sip.message import Request

        cache = fastparse._CSEQS
        for number in range(cache.max_entries + 100):
            request = Request("BYE", "sip:bob@127.0.0.1", [("CSeq", f"{number} BYE")])
            self.assertEqual(request.cseq, (number, "BYE"))
        self.assertLessEqual(len(cache), cache.max_entries)
        long_value = f"{'9' * 80} BYE"
        self.assertEqual(Request("BYE", "sip:b@h", [("CSeq", long_value)]).cseq, (int("9" * 80), "BYE"))
        self.assertNotIn(long_value, cache)  # too long to keep: read again each time
        bad = Request("BYE", "sip:b@h", [("CSeq", "x BYE")])
        for _ in range(2):  # a value that does not read is not remembered
            self.assertRaises(ValueError, lambda: bad.cseq)
        self.assertNotIn("x BYE", cache)
        self.assertEqual(Request("BYE", "sip:b@h", [("CSeq", "7  BYE ")]).cseq, (7, "BYE"))

    def test_line_prefixes(self) -> None:
        from sipproxy.sip.message import Request

        cache = fastparse._PREFIXES
        for i in range(cache.max_entries + 100):
            request = Request("MESSAGE", "sip:bob@127.0.0.1", [(f"X-Header-{i}", "v"), ("i", "c@h")])
            self.assertEqual(request.names[:2], [f"x-header-{i}", "call-id"])
            self.assertEqual(request.lines[:2], [f"X-Header-{i}: v", "Call-ID: c@h"])
        self.assertLessEqual(len(cache), cache.max_entries)
        self.assertEqual(fastparse.line_prefix("cseq"), ("cseq", "CSeq: "))
        self.assertEqual(fastparse.line_prefix(" V "), ("via", "Via: "))
