"""Bounded memo tables: what the hot path remembers per text it has seen.

SIP repeats itself within a dialog (the same Vias, Request-URIs, Contacts
and peers), so the parser and the proxy remember results per key. Keys
come from the network, so every table is bounded: a full table is emptied
before the next store, and junk traffic cannot grow it without end. Pure:
part of the message layer, imports nothing.
"""
from __future__ import annotations

from typing import Any, TypeVar

__all__ = ["remember", "DEFAULT_LIMIT"]

DEFAULT_LIMIT = 8192

_T = TypeVar("_T")


def remember(table: dict, key: Any, value: _T, limit: int = DEFAULT_LIMIT) -> _T:
    """Store C{value} under C{key} and return it, emptying C{table} first
    when it holds C{limit} entries."""
    if len(table) >= limit:
        table.clear()
    table[key] = value
    return value
