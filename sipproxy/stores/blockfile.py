"""Where a rate limiter keeps its counts across restarts: a JSON file
(an edge module: the only file I/O of the drop lists).

L{sipproxy.access.filters.ByIPPort} takes any object with C{load()} and
C{save(data)}; this is the one C{--rate-limit-db} uses.
"""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any

from sipproxy.observe.logsafe import SafeLogger

__all__ = ["JSONFile"]

log = SafeLogger()


class JSONFile:
    """Counts as JSON in C{path}, replaced atomically on every save."""

    def __init__(self, path: str) -> None:
        self.path = path

    def load(self) -> Any:
        """What was saved, or None when the file does not exist yet.

        @raise ValueError: the file exists but cannot be read as JSON.
        """
        try:
            with open(self.path) as f:
                return json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot read drop database {self.path}: {e}") from None

    def save(self, data: Any) -> None:
        """Write C{data}; a failure is logged, not raised (the limiter goes
        on counting in memory)."""
        directory = os.path.dirname(os.path.abspath(self.path))
        try:
            fd, tmp = tempfile.mkstemp(prefix=".dropper-", dir=directory)
            with os.fdopen(fd, "w") as f:
                json.dump(data, f)
            os.replace(tmp, self.path)
        except OSError as e:
            log.warn("cannot save the drop list to {path}: {error}", path=self.path, error=e)
