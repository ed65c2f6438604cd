"""Small helpers for the twistd options of every part of sipproxy."""
from __future__ import annotations

from typing import Any, Callable

__all__ = ["number"]


def number(kind: Callable[[str], Any], option: str, what: str) -> Callable[[str], Any]:
    """A coerce function for usage.Options whose error names the option
    (usage.Options' own message would only quote int()'s)."""

    def coerce(value: str) -> Any:
        try:
            return kind(value)
        except ValueError:
            raise ValueError(f"--{option} wants {what}, not {value!r}") from None

    return coerce
