"""Location stores (L{sipproxy.interfaces.ILocationStore}).

- L{sipproxy.registrar.memory_store.MemoryStore}: this process only (the default;
  it does no I/O, so it lives with the registrar, which falls back on it).
- L{sipproxy.stores.sqlite.SQLiteStore}: one node, survives a restart.
- L{sipproxy.stores.redis.RedisStore}: several nodes share one Redis.

L{open_store} turns the C{--store} option into a store; L{StoreService}
closes it when the service tree stops.
"""
from __future__ import annotations

from typing import Any, Optional
from urllib.parse import urlparse

from twisted.application.service import Service

__all__ = ["StoreSpecError", "parse_store_spec", "open_store", "StoreService"]


class StoreSpecError(ValueError):
    """A C{--store} value that names no store."""


def parse_store_spec(spec: str) -> tuple[str, str]:
    """C{memory}, C{sqlite:PATH} or C{redis://HOST[:PORT][/DB]} to
    (kind, argument); raises L{StoreSpecError} naming the problem."""
    spec = spec.strip()
    if spec in ("", "memory"):
        return "memory", ""
    if spec.startswith("sqlite:"):
        path = spec[len("sqlite:"):]
        if not path:
            raise StoreSpecError("sqlite store needs a path: sqlite:PATH")
        return "sqlite", path
    if spec.startswith(("redis://", "rediss://", "unix://")):
        url = urlparse(spec)
        if url.scheme != "unix":
            if not url.hostname:
                raise StoreSpecError(f"redis store {spec!r} names no host")
            try:
                url.port
            except ValueError:
                raise StoreSpecError(f"redis store {spec!r} has a bad port") from None
            db = url.path.strip("/")
            if db and not db.isdigit():
                raise StoreSpecError(f"redis store {spec!r}: database must be a number, not {db!r}")
        return "redis", spec
    raise StoreSpecError(f"unknown store {spec!r}: want memory, sqlite:PATH or redis://HOST:PORT/DB")


def open_store(spec: str, reactor: Any, clock: Optional[Any] = None, **options: Any) -> Any:
    """The store C{spec} names (see L{parse_store_spec})."""
    kind, argument = parse_store_spec(spec)
    clock = clock if clock is not None else reactor
    if kind == "memory":
        from sipproxy.registrar.memory_store import MemoryStore

        return MemoryStore(clock)
    if kind == "sqlite":
        from sipproxy.stores.sqlite import SQLiteStore

        return SQLiteStore(argument, reactor=reactor, clock=clock)
    from sipproxy.stores.redis import RedisStore

    return RedisStore(argument, reactor=reactor, **options)


class StoreService(Service):
    """Closes a store when the service tree stops."""

    name = "location-store"

    def __init__(self, store: Any) -> None:
        self.store = store

    def stopService(self) -> Any:
        super().stopService()
        return self.store.close()
