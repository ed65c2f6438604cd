"""Bounded memo tables: what the hot path remembers per text it has seen.

SIP repeats itself within a dialog (the same Vias, Request-URIs, Contacts
and peers), so the parser and the proxy remember results per key. Keys
come from the network, so every table is bounded, by one policy:

 - a key longer than C{max_key} characters is not remembered at all (what
   is worth remembering is short: a Via, a URI, a header name; a 60 KB
   Contact is an attack, and computing its result again costs less than
   keeping it);
 - a table holds at most C{max_entries} keys and C{max_bytes} characters
   of keys; the store that would pass either is preceded by emptying the
   table (cheaper than an LRU on the hot path, and a full table under
   junk traffic is what it protects against).

The values are derived from the keys (a parsed Via, a token, a Hop), so
their size follows the keys' size: bounding the keys bounds the table
(issue 12: 20,000 OPTIONS with 60 KB Contacts once grew a proxy to
4.4 GB through count-only bounds).

A table is an object owned by its user (the parser, the proxy, the
dispatcher), not a module global. Its C{get} is the C{get} of the plain
dict inside, bound once: a lookup costs what it cost before there were
objects (no Python frame; subclassing C{dict} instead made every lookup
go the generic way, ~600 instructions a message). On the hottest paths
the owner keeps that bound C{get} in a name of its own (C{_via_of_text =
_VIAS.get}): reading it from the object is a slot read that CPython 3.11
does not specialise for a call, ~250 instructions each time. Pure: part
of the message layer, imports nothing.
"""
from __future__ import annotations

from typing import Any, Hashable, Iterable, Optional, TypeVar

__all__ = ["BoundedCache", "remember", "DEFAULT_LIMIT", "DEFAULT_MAX_KEY", "DEFAULT_MAX_BYTES"]

DEFAULT_LIMIT = 8192
#: Longest key (in characters) that is remembered.
DEFAULT_MAX_KEY = 1024
#: Characters of keys a table holds at most: 1 MiB-ish of text (the
#: entries limit usually binds first: 8192 keys of ~128 characters).
DEFAULT_MAX_BYTES = 1 << 20

_T = TypeVar("_T")


class BoundedCache:
    """A memo table bounded in entries and in key characters.

    Look up with C{get} (or C{in}); store with L{store}.

    @param name: what it holds, for L{stats} and reports.
    @param max_entries: at most this many keys.
    @param max_key: keys longer than this are not stored.
    @param max_bytes: at most this many characters of keys in all.
    """

    __slots__ = ("name", "max_entries", "max_key", "max_bytes", "size", "_table", "get")

    def __init__(self, name: str, max_entries: int = DEFAULT_LIMIT, max_key: int = DEFAULT_MAX_KEY,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self._table: dict = {}
        #: C{get(key, default=None)}: the dict's own, bound once
        self.get = self._table.get
        self.name = name
        self.max_entries = max_entries
        self.max_key = max_key
        self.max_bytes = max_bytes
        self.size = 0  # characters of keys held

    def store(self, key: Hashable, value: _T, size: Optional[int] = None) -> _T:
        """Remember C{value} under C{key} (unless the key is too long) and
        return it. C{size} is the key's length in characters when the key
        is not a string (a tuple holding one, say)."""
        if size is None:
            size = len(key)  # type: ignore[arg-type]
        if size > self.max_key:
            return value
        table = self._table
        if len(table) >= self.max_entries or self.size + size > self.max_bytes:
            table.clear()  # in place: C{get} stays bound to it
            self.size = 0
        if key not in table:
            self.size += size
        table[key] = value
        return value

    def clear(self) -> None:
        self._table.clear()
        self.size = 0

    def __len__(self) -> int:
        return len(self._table)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._table

    def stats(self) -> tuple[str, int, int]:
        """(name, entries, characters of keys)."""
        return self.name, len(self), self.size


class CacheSet:
    """The caches of one owner, reported and cleared together."""

    def __init__(self, caches: Iterable[BoundedCache] = ()) -> None:
        self.caches: list[BoundedCache] = list(caches)

    def add(self, cache: BoundedCache) -> BoundedCache:
        self.caches.append(cache)
        return cache

    def clear(self) -> None:
        for cache in self.caches:
            cache.clear()

    def key_chars(self) -> int:
        """Characters of keys held by all the caches."""
        return sum(cache.size for cache in self.caches)

    def stats(self) -> list[tuple[str, int, int]]:
        return [cache.stats() for cache in self.caches]


def remember(table: dict, key: Any, value: _T, limit: int = DEFAULT_LIMIT) -> _T:
    """Store C{value} under C{key} in a plain dict with the same policy
    (for code that has not moved to L{BoundedCache} yet): keys longer than
    L{DEFAULT_MAX_KEY} are not stored, a table of C{limit} entries is
    emptied first."""
    if isinstance(key, str) and len(key) > DEFAULT_MAX_KEY:
        return value
    if len(table) >= limit:
        table.clear()
    table[key] = value
    return value
