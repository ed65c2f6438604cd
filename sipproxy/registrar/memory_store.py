"""The in-memory location store: bindings of this process only, gone at
restart. No threads, no timers: expired bindings are dropped when their
address-of-record is read or written, and everything is swept once a
minute on the next write."""
from __future__ import annotations

from typing import Any, Iterable, Optional

from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from sipproxy.interfaces import ILocationListing, ILocationStore
from sipproxy.registrar.location import Binding, LocationError, WallClock, check_order

__all__ = ["MemoryStore"]

SWEEP_INTERVAL = 60.0


@implementer(ILocationStore, ILocationListing)
class MemoryStore:
    """Bindings in a dict.

    @param clock: an C{IReactorTime} (C{seconds()} only); the wall clock
        when None.
    """

    def __init__(self, clock: Optional[Any] = None) -> None:
        self.clock = clock if clock is not None else WallClock()
        # aor -> key -> (binding, expires at)
        self._aors: dict[str, dict[str, tuple[Binding, float]]] = {}
        # contact key -> aor -> expires at
        self._contacts: dict[str, dict[str, float]] = {}
        self._next_sweep = 0.0

    def _current(self, aor: str, now: float) -> dict[str, tuple[Binding, float]]:
        entries = self._aors.get(aor)
        if not entries:
            return {}
        for key in [k for k, (_, at) in entries.items() if at <= now]:
            self._drop(aor, entries, key)
        if not entries:
            del self._aors[aor]
        return entries

    def _drop(self, aor: str, entries: dict, key: str) -> None:
        binding, _ = entries.pop(key)
        owners = self._contacts.get(binding.contact_key)
        if owners is not None:
            owners.pop(aor, None)
            if not owners:
                del self._contacts[binding.contact_key]

    @staticmethod
    def _listed(entries: dict, now: float) -> list[Binding]:
        return [binding.with_expires(at - now) for binding, at in entries.values()]

    def lookup(self, aor: str) -> Deferred:
        now = self.clock.seconds()
        return succeed(self._listed(self._current(aor, now), now))

    def update(self, aor: str, call_id: str, cseq: int, changes: Iterable[tuple[str, Optional[Binding], float]],
               remove_all: bool = False) -> Deferred:
        now = self.clock.seconds()
        changes = list(changes)
        entries = self._current(aor, now)
        current = {key: binding for key, (binding, _) in entries.items()}
        try:
            check_order(current, list(current) if remove_all else [k for k, _, _ in changes], call_id, cseq)
        except LocationError as e:
            return fail(e)
        if remove_all:
            for key in list(entries):
                self._drop(aor, entries, key)
        for key, binding, ttl in changes:
            if ttl <= 0 or binding is None:
                if key in entries:
                    self._drop(aor, entries, key)
                continue
            if key in entries:
                self._drop(aor, entries, key)
            at = now + ttl
            entries[key] = (binding, at)
            owners = self._contacts.setdefault(binding.contact_key, {})
            owners[aor] = max(owners.get(aor, 0.0), at)
        if entries:
            self._aors[aor] = entries
        else:
            self._aors.pop(aor, None)
        if now >= self._next_sweep:
            self._sweep(now)
        return succeed(self._listed(entries, now))

    def has_contact(self, contact_key: str) -> Deferred:
        now = self.clock.seconds()
        owners = self._contacts.get(contact_key, {})
        return succeed(any(at > now for at in owners.values()))

    def _sweep(self, now: float) -> None:
        self._next_sweep = now + SWEEP_INTERVAL
        for aor in list(self._aors):
            self._current(aor, now)

    def dump(self, limit: int) -> Deferred:
        now = self.clock.seconds()
        out = []
        for aor in sorted(self._aors):
            if len(out) >= limit:
                break
            entries = self._current(aor, now)
            if entries:
                out.append((aor, self._listed(entries, now)))
        return succeed(out)

    def count(self) -> Deferred:
        now = self.clock.seconds()
        live = [sum(1 for _, at in entries.values() if at > now) for entries in self._aors.values()]
        return succeed((sum(1 for n in live if n), sum(live)))

    def close(self) -> Deferred:
        return succeed(None)

    def __len__(self) -> int:
        """How many addresses-of-record have bindings (expired ones may
        still count until the next sweep)."""
        return len(self._aors)
