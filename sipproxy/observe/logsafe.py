"""A Logger whose lines can always be written.

Text taken from SIP messages is decoded with C{surrogateescape}, so the
bytes a peer sent are forwarded exactly; but a log line carrying such text
cannot be encoded as UTF-8, and a log observer that fails is switched off
by Twisted ("Temporarily disabling observer"): one packet with invalid
UTF-8 would silence the proxy's log. L{SafeLogger} writes those characters
as C{\\udcXX} escapes instead. ASCII text, the usual case, passes as it is.
"""
from __future__ import annotations

from typing import Any, Optional

from twisted.logger import Logger, LogLevel

__all__ = ["SafeLogger", "loggable"]


def loggable(value: Any) -> Any:
    """C{value} with lone surrogates escaped, when it is text."""
    if type(value) is str and not value.isascii():
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


class SafeLogger(Logger):
    """A C{twisted.logger.Logger} that escapes undecodable text in the
    fields of every event it emits."""

    def emit(self, level: LogLevel, format: Optional[str] = None, **kwargs: Any) -> None:
        for key, value in kwargs.items():
            if type(value) is str and not value.isascii():
                kwargs[key] = loggable(value)
        super().emit(level, format, **kwargs)
