"""Plain integer counters that the SIP modules keep for metrics.

The proxy's per-message cost is what it is measured by, so the modules do
not call a metrics library per packet: each keeps ints, lists of ints or
dicts of ints on its own objects, and L{sipproxy.app.metrics} reads them
when Prometheus scrapes. This module holds what those counters share: the
label values a peer cannot multiply (a request method outside the known
ones counts as C{other}, so a flood of invented methods grows no series)
and the status classes.

Pure: no Twisted, no reactor; any layer may import it.
"""
from __future__ import annotations

__all__ = ["METHODS", "OTHER", "method_counts", "method_label", "status_counts", "STATUS_CLASSES",
           "DropCounts"]

#: The methods counted under their own name (RFC 3261 and its extensions).
METHODS = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "SUBSCRIBE", "NOTIFY", "PUBLISH",
           "INFO", "REFER", "MESSAGE", "UPDATE")
#: The label of every other method.
OTHER = "other"
_KNOWN = frozenset(METHODS)

#: Index C{code // 100} of a status list to its label (the parser only
#: lets 100-699 through; index 0 stays unused).
STATUS_CLASSES = ("0xx", "1xx", "2xx", "3xx", "4xx", "5xx", "6xx")


def method_counts() -> dict[str, int]:
    """A counter per method, all the known ones present, so the hot path
    increments with one subscript (a missing key means C{other})::

        try:
            counts[method] += 1
        except KeyError:
            counts[OTHER] += 1
    """
    return dict.fromkeys((*METHODS, OTHER), 0)


def method_label(method: str) -> str:
    """The label a method is counted under (off the hot path)."""
    return method if method in _KNOWN else OTHER


def status_counts() -> list[int]:
    """A counter per status class, indexed by C{code // 100}."""
    return [0] * len(STATUS_CLASSES)


class DropCounts(dict):
    """Messages dropped without an answer, by (kind, reason): kind is
    C{request} or C{response}, reason a short fixed word chosen by the
    code that drops (never text from the packet)."""

    def add(self, kind: str, reason: str) -> None:
        key = (kind, reason)
        self[key] = self.get(key, 0) + 1
