"""Log lines about hostile peers, rate-limited per source address.

A peer can open tens of thousands of connections a second; if each bad
connection cost a log line, the log (and the disk behind it) would be the
attack's real target. So the legs log such events through a L{SourceLog}:
the first line from a source in an interval is written, the rest of that
interval is counted, and one summary line ("N more ... suppressed") follows
when the interval is over. The table of sources is bounded: once it is
full, new sources share one entry, so the table cannot grow without end
either.
"""
from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger, LogLevel

__all__ = ["SourceLog", "OTHER_SOURCES"]

#: The shared key of sources that arrive while the table is full.
OTHER_SOURCES = "other sources"


class SourceLog:
    """One log line per source per C{interval} seconds, then a summary.

    @param logger: where the lines go.
    @param clock: what tells the time (the reactor; a C{task.Clock} in tests).
    @param interval: seconds a source stays quiet in the log after a line.
    @param max_sources: how many sources are tracked one by one.
    """

    def __init__(self, logger: Logger, clock: IReactorTime, interval: float = 10.0,
                 max_sources: int = 1024) -> None:
        self.logger = logger
        self.clock = clock
        self.interval = interval
        self.max_sources = max_sources
        #: source -> [end of its quiet interval, lines suppressed in it]
        self._windows: dict[str, list[Any]] = {}

    def emit(self, level: LogLevel, source: str, format: str, /, **fields: Any) -> bool:
        """Log C{format} with C{fields} unless C{source} had a line in the
        current interval; True if the line was written. The line's
        C{source} field is C{source}, unless C{fields} names one (a
        message's C{ip:port}, L{sipproxy.observe.logfields})."""
        now = self.clock.seconds()
        windows = self._windows
        key = source if source in windows or len(windows) < self.max_sources else OTHER_SOURCES
        window = windows.get(key)
        if window is not None:
            if now < window[0]:
                window[1] += 1
                return False
            self._summarise(key, window)
        windows[key] = [now + self.interval, 0]
        fields.setdefault("source", source)  # a line about a message names its ip:port
        self.logger.emit(level, format, **fields)
        return True

    def warn(self, source: str, format: str, /, **fields: Any) -> bool:
        return self.emit(LogLevel.warn, source, format, **fields)

    def info(self, source: str, format: str, /, **fields: Any) -> bool:
        return self.emit(LogLevel.info, source, format, **fields)

    def flush(self) -> None:
        """Write the summaries of finished intervals and forget sources
        that have been quiet for a whole interval (call it periodically)."""
        now = self.clock.seconds()
        for key, window in list(self._windows.items()):
            if now >= window[0]:
                self._summarise(key, window)
                del self._windows[key]

    def __len__(self) -> int:
        return len(self._windows)

    def _summarise(self, key: str, window: list[Any]) -> None:
        if window[1]:
            self.logger.warn("{count} more line(s) about {source} suppressed in {interval} s",
                             count=window[1], source=key, interval=self.interval, suppressed=window[1])
            window[1] = 0
