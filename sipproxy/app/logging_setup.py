"""C{--log-format json|text} and C{--log-messages}: what twistd's log looks like.

twistd picks its log observer in C{AppLogger.start}: a C{--logger}
factory if one was given, else the L{ILogObserver} component of the
application, else its own text observer on C{--logfile} (or stdout with
C{-n}). A plugin's C{makeService} runs before the application exists,
but the application is then made the service's parent, so
L{with_log_observer} returns a thin service whose C{setServiceParent}
sets that component: from then on every event goes through our observer,
twistd's own "starting up" and "Server Shut Down." lines and the lines
logged while the service was made (twistd replays them) included.

Two formats:

- C{json}: one JSON object per line: C{time} (ISO 8601, UTC), C{level},
  C{namespace}, C{text} (the formatted line) and the event's own fields,
  among them C{call_id}, C{method}, C{status}, C{source} and C{leg} on
  lines about a SIP message (L{sipproxy.observe.logfields}). The model is
  twisted.logger's C{eventAsJSON}, flattened for C{jq} and log shippers.
- C{text}: twistd's classic line, with the Call-ID in brackets after the
  namespace on lines about a message::

    2026-12-02T16:43:36+0000 [sipproxy.registrar.registrar#info] [a84b4c76e667] REGISTER ...

An observer that raises is switched off by Twisted for good, so neither
formatter raises: undecodable text (surrogate escapes from a peer's bytes)
is written escaped, values JSON cannot hold are written as their C{repr},
and an event that still cannot be written becomes a line saying so.
"""
from __future__ import annotations

import json
import math
import signal
import sys
from datetime import datetime, timezone
from typing import IO, Any, Callable, Optional

from twisted.application.service import IService, MultiService
from twisted.logger import (FileLogObserver, ILogObserver, InvalidLogLevelError, LogEvent, LogLevel, formatEvent,
                            formatTime)
from twisted.python import usage
from twisted.python.components import Componentized

__all__ = ["LOG_FLAGS", "LOG_PARAMETERS", "LogSetupError", "check_log_options", "json_line", "text_line",
           "observer_for", "with_log_observer", "log_observer", "logged_service", "relayed_event"]

FORMATS = ("text", "json")

LOG_FLAGS = [
    ["log-messages", None, "Log one line per SIP message received and sent, with its Call-ID, method, status, "
                           "source and leg (a trace for debugging: a line per packet at full load)."],
]

LOG_PARAMETERS = [
    ["log-format", None, "text", "text (twistd's lines, with [Call-ID] on lines about a message) or json (one "
                                 "JSON object per line, for every event, twistd's own included)."],
]

# keys twisted.python.log events carry beside the log_* ones; their content is in "text"
_LEGACY_KEYS = frozenset(("message", "isError", "system", "time", "format", "why", "failure", "logLevel"))
_CORE_KEYS = ("time", "level", "namespace", "text")
_MESSAGE_KEYS = ("call_id", "method", "status", "source", "leg")


def check_log_options(options: Any) -> None:
    """Validate the logging options (usage errors exit 2 with one line)."""
    fmt = (options["log-format"] or "").strip().lower()
    if fmt not in FORMATS:
        raise usage.UsageError(f"--log-format {options['log-format']!r}: want text or json")
    options["log-format"] = fmt
    twistd = getattr(options, "parent", None)
    if fmt == "json" and twistd is not None and _get(twistd, "syslog"):
        raise usage.UsageError("--log-format json writes to --logfile or standard output, not to --syslog")


# -- formatting ------------------------------------------------------------------------------
def _safe_text(text: str) -> str:
    """C{text} writable in UTF-8: lone surrogates (a peer's undecodable
    bytes) become C{\\udcXX}."""
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _text_call_id(call_id: Any) -> str:
    """A Call-ID as text logs print it: brackets, white space, control and
    non-ASCII characters and C{%} percent-encoded, so a hostile Call-ID
    can neither end the bracket nor fake more of the line (the fail2ban
    filter reads these lines)."""
    text = str(call_id)[:256]
    if text.isascii() and text.isprintable() and not any(c in text for c in " []%"):
        return text
    out = []
    for ch in text:
        if ch.isascii() and ch.isprintable() and ch not in " []%":
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8", "surrogateescape"))
    return "".join(out)


def _level_name(event: LogEvent) -> str:
    level = event.get("log_level")
    return getattr(level, "name", None) or "-"


def text_line(event: LogEvent) -> Optional[str]:
    """twistd's classic text line, with C{[Call-ID]} after the system on
    lines about a message; never raises."""
    try:
        text = formatEvent(event)
        failure = event.get("log_failure")
        if failure is not None:
            text = "\n".join((text, _traceback(failure)))
        if not text:
            return None
        system = event.get("log_system")
        if system is None:
            system = f"{event.get('log_namespace', '-')}#{_level_name(event)}"
        call_id = event.get("call_id")
        tag = f" [{_text_call_id(call_id)}]" if call_id else ""
        line = f"{formatTime(event.get('log_time'))} [{system}]{tag} {text.replace(chr(10), chr(10) + chr(9))}\n"
        return _safe_text(line)
    except Exception as e:  # pragma: no cover - formatEvent catches what it can
        return f"- [sipproxy.app.logging_setup#error] unwritable log event ({type(e).__name__})\n"


def _traceback(failure: Any) -> str:
    try:
        return str(failure.getTraceback())
    except Exception as e:
        return f"(no traceback: {type(e).__name__})"


def _iso_time(when: Any) -> Optional[str]:
    if not isinstance(when, (int, float)) or not math.isfinite(when):
        return None
    return datetime.fromtimestamp(when, timezone.utc).isoformat(timespec="microseconds")


def _jsonable(value: Any, depth: int = 0) -> Any:
    """C{value} as JSON can hold it: scalars as they are, sequences and
    mappings of them (a few levels deep), anything else as its C{repr}."""
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if depth < 3 and isinstance(value, (list, tuple)):
        return [_jsonable(item, depth + 1) for item in value[:64]]
    if depth < 3 and isinstance(value, dict):
        return {str(k): _jsonable(v, depth + 1) for k, v in list(value.items())[:64]}
    name = getattr(value, "name", None)
    if type(value).__name__ == "NamedConstant" and isinstance(name, str):  # LogLevel and friends
        return name
    try:
        return repr(value)[:1000]
    except Exception as e:
        return f"<unrepresentable {type(value).__name__}: {type(e).__name__}>"


def json_record(event: LogEvent) -> dict[str, Any]:
    """The JSON object of one event (see the module docstring)."""
    record: dict[str, Any] = {
        "time": _iso_time(event.get("log_time")),
        "level": _level_name(event),
        "namespace": str(event.get("log_namespace", "-")),
        "text": formatEvent(event),
    }
    if event.get("log_system") is not None:
        record["system"] = str(event["log_system"])
    failure = event.get("log_failure")
    if failure is not None:
        record["traceback"] = _traceback(failure)
    legacy = type(event.get("message")) is tuple
    for key in _MESSAGE_KEYS:  # first, where a reader looks for them
        if key in event:
            record[key] = _jsonable(event[key])
    for key, value in event.items():
        if key in record and key in _MESSAGE_KEYS:
            continue
        if not isinstance(key, str) or key.startswith("log_") or (legacy and key in _LEGACY_KEYS):
            continue
        record[f"field_{key}" if key in _CORE_KEYS or key in ("system", "traceback") else key] = _jsonable(value)
    return record


def json_line(event: LogEvent) -> str:
    """One event as one line of JSON (ASCII: lone surrogates and other
    non-ASCII text are written as C{\\u} escapes); never raises."""
    try:
        return json.dumps(json_record(event), ensure_ascii=True, allow_nan=False) + "\n"
    except Exception as e:
        fallback = {"time": _iso_time(event.get("log_time")), "level": _level_name(event),
                    "namespace": str(event.get("log_namespace", "-")),
                    "text": f"unwritable log event ({type(e).__name__}: {e})"[:500]}
        return json.dumps(fallback, ensure_ascii=True, default=repr) + "\n"


# -- the observer ----------------------------------------------------------------------------
class _SafeFile:
    """Writes lines to a file, escaping what its encoding cannot hold
    (a C{LANG=C} standard output is ASCII) instead of raising."""

    def __init__(self, out: IO[Any]) -> None:
        self.out = out

    def write(self, text: str) -> None:
        try:
            self.out.write(text)
        except UnicodeEncodeError:
            self.out.write(text.encode("ascii", "backslashreplace").decode("ascii"))

    def flush(self) -> None:
        self.out.flush()


def log_observer(out: IO[Any], fmt: str = "json") -> ILogObserver:
    """An observer writing C{fmt} (json or text) lines to C{out}; usable
    outside twistd (e.g. C{globalLogBeginner.beginLoggingTo}) too."""
    formatter: Callable[[LogEvent], Optional[str]] = json_line if fmt == "json" else text_line
    return FileLogObserver(_SafeFile(out), formatter)  # type: ignore[arg-type]


def _get(options: Any, key: str) -> Any:
    try:
        return options[key]
    except KeyError:
        return None


def observer_for(options: Any) -> Optional[ILogObserver]:
    """The observer the options ask for, writing where twistd would have
    (C{--logfile}, stdout with C{-n}, C{twistd.log} for a daemon); None
    when twistd should keep its own (not run by twistd, C{--syslog},
    C{--logger}, or a daemon asked to log to stdout, which twistd refuses).

    @raise OSError: when the log file cannot be opened.
    """
    twistd = getattr(options, "parent", None)
    if twistd is None or _get(twistd, "syslog") or _get(twistd, "logger"):
        return None
    logfile, nodaemon = _get(twistd, "logfile"), _get(twistd, "nodaemon")
    if logfile == "-" and not nodaemon:
        return None
    if logfile == "-" or (nodaemon and not logfile):
        out: IO[Any] = sys.stdout
    else:
        from twisted.python.logfile import LogFile

        out = LogFile.fromFullPath(logfile or "twistd.log")  # type: ignore[assignment]
        _rotate_on_usr1(out)
    return log_observer(out, options["log-format"])


def _rotate_on_usr1(out: Any) -> None:
    """SIGUSR1 rotates the log file, as twistd does for its own."""
    if not hasattr(signal, "SIGUSR1") or signal.getsignal(signal.SIGUSR1):
        return

    def rotate(signum: int, frame: Any) -> None:
        from twisted.internet import reactor

        reactor.callFromThread(out.rotate)  # type: ignore[attr-defined]

    signal.signal(signal.SIGUSR1, rotate)


class _ObserverInstaller(MultiService):
    """Holds the real service; when twistd makes it a child of the
    application, sets the application's L{ILogObserver} component first."""

    def __init__(self, service: IService, observer: ILogObserver) -> None:
        super().__init__()
        self.observer = observer
        self.service = service
        service.setServiceParent(self)

    def setServiceParent(self, parent: Any) -> None:
        if isinstance(parent, Componentized):
            parent.setComponent(ILogObserver, self.observer)
        super().setServiceParent(parent)


def with_log_observer(service: IService, observer: Optional[ILogObserver]) -> IService:
    """C{service}, wrapped so that twistd logs through C{observer} (when
    there is one)."""
    if observer is None:
        return service
    return _ObserverInstaller(service, observer)


class LogSetupError(Exception):
    """The log cannot be set up as asked (one line for the user)."""


def logged_service(service: IService, options: Any) -> IService:
    """C{service} with the logging the options ask for: the message trace
    on its dispatcher (C{--log-messages}) and, under twistd, our observer.

    @raise LogSetupError: when the log file cannot be opened.
    """
    dispatcher = getattr(service, "dispatcher", None)
    if _get(options, "log-messages") and dispatcher is not None:
        from sipproxy.transport.message_log import MessageLog

        dispatcher.message_log = MessageLog()
    try:
        observer = observer_for(options)
    except OSError as e:
        raise LogSetupError(f"--logfile: cannot open the log file ({e.strerror or e})") from None
    return with_log_observer(service, observer)


# -- worker processes --------------------------------------------------------------------------
def relayed_event(line: str) -> Optional[tuple[LogLevel, str, dict[str, Any]]]:
    """(level, text, fields) of a JSON log line a worker process wrote, to
    log again in the parent (so C{--workers} with JSON logs still writes
    one flat object per line, the worker's fields intact); None for any
    other line."""
    if not line.startswith("{"):
        return None
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    try:
        level = LogLevel.levelWithName(str(record.get("level")))
    except InvalidLogLevelError:
        level = LogLevel.info
    fields = {f"worker_{key}" if key in ("time", "namespace", "format", "level") or key.startswith("log_") else key:
              value for key, value in record.items() if key != "text"}
    return level, str(record.get("text", "")), fields
