"""The control socket: JSON-RPC 2.0 on a UNIX stream socket, as Kamailio's
C{jsonrpcs} module speaks it, for C{sipproxy-ctl} and operators' scripts.

Framing: newline-delimited. Each request is one JSON text on one line
(a request object, or a batch array of them); each answer is one line.
A connection may carry several requests, one after another. Stream
rather than datagrams, because a registration list can be larger than
a datagram; newline framing, because C{socat - UNIX-CONNECT:sipproxy.ctl}
and a shell loop can then speak it.

Methods (positional or named parameters):

- C{stats}: uptime, registrations, relay and TCP counters of this process;
- C{registrations} [aor]: the bindings of one address-of-record, or of
  every one (at most L{MAX_LISTED} addresses);
- C{unregister} aor: removes every binding of an address-of-record;
- C{reload}: asks the service tree's root for C{reload()};
- C{relay.sessions} [call_id]: the relay's live sessions;
- C{tcp.connections}: the open TCP/TLS connections;
- C{system.listMethods}: these names (as Kamailio's C{jsonrpcs} has it).

Safety: the socket is created with mode 0600 (C{--control-mode}) under a
umask, so it is never reachable by others even for an instant, and is
handed to C{twistd --uid/--gid}'s user. A request line is at most
L{MAX_REQUEST} octets, a batch at most L{MAX_BATCH} calls, at most
L{MAX_CONNECTIONS} clients at once, idle ones closed after
L{IDLE_TIMEOUT} s. A malformed request gets a JSON-RPC error and one log
line; nothing a client sends reaches the reactor as an exception.

With C{--workers}, every process has its own socket: the first process
the given path, worker N the path with C{.N} appended. Registrations live
in the shared store, so any socket lists all of them; but connections,
counters and the relay are per process, and one socket answering for all
would have to ask the others over some channel of its own. C{sipproxy-ctl
--worker N} picks a worker's socket.
"""
from __future__ import annotations

import errno
import json
import os
import socket
import stat
import time
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence, Union

from twisted.application.service import IService, Service
from twisted.internet import defer, protocol, tcp, unix
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IReactorTime
from twisted.python import usage
from twisted.python.failure import Failure

from sipproxy.interfaces import ILeg, ILocationListing, ILocationStore, INATHelper
from sipproxy.observe.logsafe import SafeLogger
from sipproxy.transport.stream_guard import ConnectionGuard

__all__ = ["CONTROL_PARAMETERS", "DEFAULT_CONTROL", "ControlCommands", "ControlService", "RPCError",
           "check_control_options", "control_path_problem", "add_control", "worker_path"]

if TYPE_CHECKING:
    from sipproxy.access.front_chain import FrontDoor

log = SafeLogger()

DEFAULT_CONTROL = "sipproxy.ctl"
#: Longest request line accepted (octets, newline excluded).
MAX_REQUEST = 64 * 1024
#: Most calls in one batch.
MAX_BATCH = 32
#: Most clients connected at once.
MAX_CONNECTIONS = 16
#: Seconds a client may stay connected without sending a request.
IDLE_TIMEOUT = 30.0
#: Seconds a method may take (a store that hangs) before the call fails.
CALL_TIMEOUT = 10.0
#: Most addresses-of-record C{registrations} lists without an argument.
MAX_LISTED = 10000
#: The longest path a UNIX socket can have (sun_path less its NUL).
MAX_PATH = 107

# JSON-RPC 2.0 error codes (section 5.1), and ours in the server range
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
UNAVAILABLE = -32000  # the method exists, but not in this process (no store, no relay, no reload)
STORE_ERROR = -32001
TIMED_OUT = -32002
BUSY = -32003

CONTROL_PARAMETERS = [
    ["control", None, None, f"UNIX socket for JSON-RPC 2.0 control (sipproxy-ctl), by default {DEFAULT_CONTROL} "
     "in the working directory; with --workers, worker N adds .N; 'off' for none."],
    ["control-mode", None, "0600", "Octal permissions of the control socket (0600: its owner only; 0660 lets "
     "the group in)."],
]


def check_control_options(options: Any) -> None:
    """Resolve C{--control} and C{--control-mode} into C{control_path}
    (absolute, or None for off), C{control_explicit} and C{control_mode};
    a bad value is a C{UsageError} naming it."""
    value = options["control"]
    options["control_explicit"] = value is not None
    if value is None:
        value = DEFAULT_CONTROL
    value = value.strip()
    if value in ("off", "none", ""):
        options["control_path"] = None
    else:
        if "\0" in value:
            raise usage.UsageError("--control: the path must not contain NUL")
        path = worker_path(os.path.abspath(value), options["worker-index"])
        if len(os.fsencode(path)) > MAX_PATH:
            raise usage.UsageError(f"--control {value}: too long for a UNIX socket ({len(os.fsencode(path))} "
                                   f"octets, at most {MAX_PATH}); use a shorter path")
        options["control_path"] = path
    mode = options["control-mode"].strip()
    try:
        number = int(mode, 8)
    except ValueError:
        number = -1
    if not 0 <= number <= 0o777:
        raise usage.UsageError(f"--control-mode {mode!r}: want octal permissions such as 0600 or 0660")
    if not number & 0o600 == 0o600:
        raise usage.UsageError(f"--control-mode {mode}: the owner needs read and write (0600 at least)")
    options["control_mode"] = number


def worker_path(path: str, index: int) -> str:
    """The socket of worker C{index}: C{path} for the first process,
    C{path.N} for worker N."""
    return f"{path}.{index}" if index else path


def control_path_problem(path: str) -> Optional[str]:
    """Why C{path} cannot become the control socket, or None. A socket
    left behind by a process that is gone (nobody accepts) is removed."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        parent = os.path.dirname(path) or "."
        if not os.path.isdir(parent):
            return f"--control {path}: no directory {parent}"
        return _bind_problem(path)
    except OSError as e:
        return f"--control {path}: {e.strerror}"
    if not stat.S_ISSOCK(info.st_mode):
        return f"--control {path}: exists and is not a socket"
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except OSError as e:
        if e.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            return f"--control {path}: {e.strerror}"
        try:
            os.unlink(path)
        except OSError as e2:
            return f"--control {path}: cannot remove the stale socket ({e2.strerror})"
        log.info("removed the stale control socket {path}", path=path)
        return None
    finally:
        probe.close()
    return f"--control {path}: another process is answering on it"


def _bind_problem(path: str) -> Optional[str]:
    """Why a socket cannot be made at C{path} (a read-only or foreign
    directory), found by making one and removing it again; or None."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.bind(path)
    except OSError as e:
        return f"--control {path}: {e.strerror}"
    finally:
        probe.close()
    try:
        os.unlink(path)
    except OSError:
        pass
    return None


class RPCError(Exception):
    """A JSON-RPC error answer (code and message, and optional data)."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def as_json(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


def _params(params: Any, names: Sequence[str], required: int = 0) -> list[Any]:
    """Positional or named parameters as a list in C{names}' order; too
    many, unknown or missing ones are an invalid-params error."""
    if params is None:
        values: list[Any] = []
    elif isinstance(params, list):
        values = list(params)
        if len(values) > len(names):
            raise RPCError(INVALID_PARAMS, f"at most {len(names)} parameters ({', '.join(names) or 'none'})")
    elif isinstance(params, dict):
        unknown = sorted(set(params) - set(names))
        if unknown:
            raise RPCError(INVALID_PARAMS, f"unknown parameter {unknown[0][:40]!r}")
        values = [params.get(name) for name in names]
        while values and values[-1] is None:
            values.pop()
    else:
        raise RPCError(INVALID_REQUEST, "params must be an array or an object")
    if len(values) < required or any(v is None for v in values[:required]):
        raise RPCError(INVALID_PARAMS, f"missing parameter {names[len(values) if len(values) < required else 0]}")
    for name, value in zip(names, values):
        if value is not None and not isinstance(value, str):
            raise RPCError(INVALID_PARAMS, f"{name} must be a string")
        if value is not None and len(value) > 1024:
            raise RPCError(INVALID_PARAMS, f"{name} is too long")
    return values + [None] * (len(names) - len(values))


class ControlCommands:
    """The methods, over the parts of one process. Any part may be None
    (a relay-only process has no store, a proxy without C{--nathelper} no
    relay); a method needing a missing part answers L{UNAVAILABLE}.

    @param clock: C{IReactorTime}, for uptime and timeouts.
    @param store: the registrar's L{ILocationStore} (listing needs
        L{ILocationListing} too).
    @param aor: turns a user's address-of-record text into the key the
        registrar files bindings under (the registrar's C{aor} of the
        parsed URI); raises C{ValueError} for a bad one.
    @param relay: the in-process relay (a L{sipproxy.nat.relay.LocalRelay}),
        or a relay elsewhere (an ng client) that cannot list sessions.
    @param legs: the process's legs, for TCP connections.
    @param guard: the process's L{ConnectionGuard} (TCP totals).
    @param root: a callable giving the root of the service tree, whose
        C{reload()} the C{reload} method calls.
    @param worker: this process's worker index.
    @param counters: a callable giving a mapping of counters to add to
        C{stats} (e.g. a metrics snapshot), or None.
    """

    def __init__(self, clock: IReactorTime, store: Optional[ILocationStore] = None,
                 aor: Optional[Callable[[str], str]] = None, relay: Optional[INATHelper] = None,
                 legs: Sequence[ILeg] = (), guard: Optional[ConnectionGuard] = None,
                 root: Optional[Callable[[], Any]] = None, worker: int = 0,
                 counters: Optional[Callable[[], Any]] = None) -> None:
        self.clock = clock
        self.store = store
        self.aor = aor or _plain_aor
        self.relay = relay
        self.legs = list(legs)
        self.guard = guard
        self.root = root
        self.worker = worker
        self.counters = counters
        self.started = clock.seconds()
        self.started_wall = time.time()
        self.methods: dict[str, Callable[[Any], Any]] = {
            "stats": self.stats,
            "registrations": self.registrations,
            "unregister": self.unregister,
            "reload": self.reload,
            "relay.sessions": self.relay_sessions,
            "tcp.connections": self.tcp_connections,
            "system.listMethods": self.list_methods,
        }

    def call(self, method: str, params: Any) -> defer.Deferred:
        """Deferred result of C{method}; errbacks with L{RPCError}."""
        handler = self.methods.get(method)
        if handler is None:
            return defer.fail(RPCError(METHOD_NOT_FOUND, f"no method {method[:60]!r}"))
        d = defer.maybeDeferred(handler, params)
        d.addTimeout(CALL_TIMEOUT, self.clock)
        return d

    # -- methods -----------------------------------------------------------------------
    def list_methods(self, params: Any) -> list[str]:
        _params(params, ())
        return sorted(self.methods)

    def stats(self, params: Any) -> Any:
        _params(params, ())
        out: dict[str, Any] = {
            "pid": os.getpid(), "worker": self.worker, "started": round(self.started_wall, 3),
            "uptime": round(self.clock.seconds() - self.started, 3),
            "legs": [leg.key for leg in self.legs],
        }
        if self.guard is not None:
            out["tcp"] = {"connections": self.guard.total, "max_connections": self.guard.max_connections,
                          "source_ips": len(self.guard.per_ip),
                          "refused": sum(getattr(leg, "refused", 0) for leg in self.legs)}
        table = getattr(self.relay, "table", None)
        if table is not None:
            sessions = table.sessions()
            out["relay"] = {
                "calls": len(table.calls), "sessions": len(sessions), "sockets": table.socket_count,
                "port_range": list(table.port_range),
                "packets": sum(s["packets_from"] + s["packets_to"] for s in sessions),
                "bytes": sum(s["bytes_from"] + s["bytes_to"] for s in sessions),
            }
        if self.counters is not None:
            try:
                out["counters"] = self.counters()
            except Exception as e:  # a snapshot that fails must not fail the rest
                log.warn("control: counter snapshot failed: {error}", error=e)
        listing = _listing_store(self.store)
        if listing is None:
            return out

        def counted(result: tuple[int, int]) -> dict[str, Any]:
            out["registrations"] = {"aors": result[0], "bindings": result[1]}
            return out

        def uncounted(failure: Failure) -> dict[str, Any]:
            out["registrations"] = {"error": failure.getErrorMessage()}
            return out

        return listing.count().addCallbacks(counted, uncounted)

    def _need_store(self) -> ILocationStore:
        if self.store is None:
            raise RPCError(UNAVAILABLE, "no registrar in this process (start it with --registrar)")
        return self.store

    def _key(self, text: str) -> str:
        try:
            return self.aor(text)
        except ValueError as e:
            raise RPCError(INVALID_PARAMS, f"aor {text[:80]!r}: {e}") from None

    def registrations(self, params: Any) -> Any:
        (aor,) = _params(params, ("aor",))
        store = self._need_store()
        if aor is not None:
            key = self._key(aor)
            d = store.lookup(key)
            d.addCallback(lambda bindings: {"aors": [_listing(key, bindings)] if bindings else [],
                                            "truncated": False})
            return d.addErrback(_store_failed)
        listing = _listing_store(store)
        if listing is None:
            raise RPCError(UNAVAILABLE, "this location store cannot list its bindings; give an aor")
        d = listing.dump(MAX_LISTED + 1)
        d.addCallback(lambda pairs: {"aors": [_listing(k, b) for k, b in pairs[:MAX_LISTED]],
                                     "truncated": len(pairs) > MAX_LISTED})
        return d.addErrback(_store_failed)

    def unregister(self, params: Any) -> Any:
        (aor,) = _params(params, ("aor",), required=1)
        store = self._need_store()
        key = self._key(aor)

        def removed(before: list) -> Any:
            if not before:
                return {"aor": key, "removed": 0}
            # a Call-ID of our own: no phone's CSeq can make this out of order
            call_id = f"sipproxy-ctl-{os.urandom(8).hex()}"
            d = store.update(key, call_id, 0, [], remove_all=True)
            d.addCallback(lambda after: {"aor": key, "removed": len(before) - len(after)})
            return d

        d = store.lookup(key)
        d.addCallback(removed)
        d.addCallback(_logged_unregister)
        return d.addErrback(_store_failed)

    def reload(self, params: Any) -> Any:
        _params(params, ())
        root = self.root() if self.root is not None else None
        reload = getattr(root, "reload", None)
        if not callable(reload):
            raise RPCError(UNAVAILABLE, "reload is unavailable in this version (no reload() on the service)")
        log.info("control: reload requested")
        return defer.maybeDeferred(reload)

    def relay_sessions(self, params: Any) -> Any:
        (call_id,) = _params(params, ("call_id",))
        if self.relay is None:
            raise RPCError(UNAVAILABLE, "no relay in this process (start it with --nathelper or --relay-only)")
        sessions = getattr(self.relay, "sessions", None)
        if not callable(sessions):
            raise RPCError(UNAVAILABLE, "the relay runs in another process (--nathelper-ng): ask the control "
                                        "socket of that process")
        return {"sessions": sessions(call_id)}

    def tcp_connections(self, params: Any) -> Any:
        _params(params, ())
        now = self.clock.seconds()
        out = []
        for leg in self.legs:
            connections = getattr(leg, "connections", None)
            if connections is None:
                continue
            for addr, conn in list(connections.items()):
                peer = conn.peer or addr
                if conn.peer is None:
                    state = "connecting"
                elif conn.closing_since is not None:
                    state = "closing"
                else:
                    state = "open"
                out.append({"leg": leg.key, "peer": _host_port(peer), "direction": "out" if conn.outbound else "in",
                            "state": state, "idle": round(now - conn.last_active, 3) if conn.peer else None})
        total = self.guard.total if self.guard is not None else len(out)
        return {"connections": out, "total": total}


def _listing_store(store: Optional[ILocationStore]) -> Optional[ILocationListing]:
    """The store, or the one a wrapper (the metrics' timing store) passes
    calls to, that can list its bindings; None when there is none."""
    for _ in range(4):
        if store is None or ILocationListing.providedBy(store):
            return store
        store = store.__dict__.get("inner")
    return None


def metric_counters(service: Any, door: Optional["FrontDoor"], store: Optional[ILocationStore]) -> Callable[[], Any]:
    """A snapshot of the process's counters as the metrics endpoint names
    them (L{sipproxy.app.metrics}), sample name with labels to value."""
    from sipproxy.app.metrics import find_sources, sipproxy_families

    timed = store if store is not None and "timings" in store.__dict__ else None

    def snapshot() -> dict[str, float]:
        out: dict[str, float] = {}
        for family in sipproxy_families(find_sources(service, door, timed)):
            for sample in family.samples:
                labels = ",".join(f'{key}="{value}"' for key, value in sorted(sample.labels.items()))
                out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return out

    return snapshot


def _plain_aor(text: str) -> str:
    """An address-of-record without a registrar's view of its own ports."""
    from sipproxy.sip.uri import URIError, parse_uri

    text = text.strip()
    if ":" not in text.split("@", 1)[0]:
        text = "sip:" + text
    try:
        return parse_uri(text).address_of_record
    except URIError as e:
        raise ValueError(str(e)) from None


def registrar_aor(registrar: Any) -> Callable[[str], str]:
    """The key C{registrar} files C{text}'s bindings under (C{sip:} is
    assumed when no scheme is given)."""
    from sipproxy.sip.uri import URIError, parse_uri

    def key(text: str) -> str:
        text = text.strip()
        if ":" not in text.split("@", 1)[0]:
            text = "sip:" + text
        try:
            return registrar.aor(parse_uri(text))
        except URIError as e:
            raise ValueError(str(e)) from None

    return key


def _listing(aor: str, bindings: Sequence[Any]) -> dict[str, Any]:
    return {"aor": aor, "bindings": [
        {"contact": b.contact, "params": b.params, "expires": b.expires, "q": b.q, "call_id": b.call_id,
         "cseq": b.cseq, "registered": b.registered, "source": b.source, "path": list(b.path)}
        for b in bindings]}


def _host_port(addr: Any) -> str:
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _store_failed(failure: Failure) -> None:
    from sipproxy.registrar.location import LocationError

    if failure.check(RPCError, defer.TimeoutError):
        failure.raiseException()
    if failure.check(LocationError):
        raise RPCError(STORE_ERROR, f"location store: {failure.getErrorMessage()}")
    failure.raiseException()


def _logged_unregister(result: dict[str, Any]) -> dict[str, Any]:
    log.info("control: unregistered {aor} ({removed} bindings removed)", aor=result["aor"], removed=result["removed"])
    return result


# -- the wire ------------------------------------------------------------------------------
def _error(code: int, message: str, ident: Any = None) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "error": {"code": code, "message": message}, "id": ident}


class ControlProtocol(protocol.Protocol):
    """One client: newline-delimited JSON-RPC requests in, one answer line
    per request out, in order."""

    def __init__(self, factory: "ControlFactory") -> None:
        self.factory = factory
        self._buffer = b""
        self._busy = False
        self._lines: list[bytes] = []
        self._idle: Any = None
        self._closed = False

    def connectionMade(self) -> None:
        self.factory.clients.add(self)
        if len(self.factory.clients) > MAX_CONNECTIONS:
            log.warn("control: refused a client ({count} connected, at most {limit})",
                     count=len(self.factory.clients) - 1, limit=MAX_CONNECTIONS)
            self._send(_error(BUSY, f"too many control clients (at most {MAX_CONNECTIONS})"))
            self.transport.loseConnection()
            return
        self._touch()

    def connectionLost(self, reason: Failure = None) -> None:
        self._closed = True
        self.factory.clients.discard(self)
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        self._idle = None

    def _touch(self) -> None:
        if self._idle is not None and self._idle.active():
            self._idle.reset(IDLE_TIMEOUT)
        elif not self._closed:
            self._idle = self.factory.clock.callLater(IDLE_TIMEOUT, self._timed_out)

    def _timed_out(self) -> None:
        self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            if len(line) > MAX_REQUEST:
                break
            if line.strip():
                self._lines.append(line)
        if len(self._buffer) > MAX_REQUEST or any(len(line) > MAX_REQUEST for line in self._lines):
            log.warn("control: request longer than {limit} octets; closing the connection", limit=MAX_REQUEST)
            self._buffer = b""
            self._lines = []
            self._send(_error(INVALID_REQUEST, f"request longer than {MAX_REQUEST} octets"))
            self.transport.loseConnection()
            return
        if len(self._lines) > MAX_BATCH:  # a client piling up requests faster than we answer
            log.warn("control: more than {limit} requests waiting; closing the connection", limit=MAX_BATCH)
            self._lines = []
            self._send(_error(INVALID_REQUEST, f"more than {MAX_BATCH} requests waiting"))
            self.transport.loseConnection()
            return
        self._next()

    def _next(self) -> None:
        if self._busy or not self._lines or self._closed:
            return
        self._busy = True
        line = self._lines.pop(0)
        self._touch()
        d = self.factory.handle_line(line)

        def answered(answer: Optional[Union[dict, list]]) -> None:
            self._busy = False
            if answer is not None:
                self._send(answer)
            self._next()

        d.addCallback(answered)
        d.addErrback(lambda f: log.failure("control: answering failed", f))

    def _send(self, answer: Union[dict, list]) -> None:
        if self._closed:
            return
        try:
            text = json.dumps(answer, default=str, allow_nan=False, separators=(",", ":"))
        except ValueError:
            text = json.dumps(_error(INTERNAL_ERROR, "result is not JSON", None))
        self.transport.write(text.encode("utf-8") + b"\n")


class ControlFactory(protocol.Factory):
    """Parses requests and runs them through L{ControlCommands}."""

    noisy = False

    def __init__(self, commands: ControlCommands, clock: IReactorTime) -> None:
        self.commands = commands
        self.clock = clock
        self.clients: set[ControlProtocol] = set()

    def buildProtocol(self, addr: Any) -> ControlProtocol:
        proto = ControlProtocol(self)
        proto.factory = self
        return proto

    def handle_line(self, line: bytes) -> defer.Deferred:
        """Deferred answer to one request line (None for notifications only)."""
        try:
            request = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            reason = "not UTF-8" if isinstance(e, UnicodeDecodeError) else (
                "nested too deeply" if isinstance(e, RecursionError) else f"not JSON ({str(e)[:80]})")
            log.warn("control: bad request: {reason}", reason=reason)
            return defer.succeed(_error(PARSE_ERROR, f"parse error: {reason}"))
        if isinstance(request, list):
            if not request:
                log.warn("control: bad request: empty batch")
                return defer.succeed(_error(INVALID_REQUEST, "empty batch"))
            if len(request) > MAX_BATCH:
                log.warn("control: bad request: batch of {count} calls", count=len(request))
                return defer.succeed(_error(INVALID_REQUEST, f"batch of more than {MAX_BATCH} calls"))
            d = defer.gatherResults([self.handle(item) for item in request], consumeErrors=True)
            d.addCallback(lambda answers: [a for a in answers if a is not None] or None)
            return d
        return self.handle(request)

    def handle(self, request: Any) -> defer.Deferred:
        """Deferred answer to one request object (None for a notification)."""
        if not isinstance(request, dict):
            log.warn("control: bad request: not an object")
            return defer.succeed(_error(INVALID_REQUEST, "a request must be a JSON object"))
        ident = request.get("id")
        if not (ident is None or isinstance(ident, (str, int)) and not isinstance(ident, bool)):
            log.warn("control: bad request: bad id")
            return defer.succeed(_error(INVALID_REQUEST, "id must be a string, a number or null"))
        if isinstance(ident, str) and len(ident) > 256:
            ident = None
        method = request.get("method")
        if request.get("jsonrpc") != "2.0" or not isinstance(method, str):
            log.warn("control: bad request: want jsonrpc 2.0 and a method name")
            return defer.succeed(_error(INVALID_REQUEST, 'want "jsonrpc": "2.0" and a "method" string', ident))
        notification = "id" not in request
        d = self.commands.call(method, request.get("params"))

        def ok(result: Any) -> Optional[dict[str, Any]]:
            return None if notification else {"jsonrpc": "2.0", "result": result, "id": ident}

        def failed(failure: Failure) -> Optional[dict[str, Any]]:
            if failure.check(RPCError):
                error = failure.value
                log.warn("control: {method} failed: {message}", method=method[:60], message=error.message)
            elif failure.check(defer.TimeoutError, defer.CancelledError):
                error = RPCError(TIMED_OUT, f"{method} took longer than {CALL_TIMEOUT:g} s")
                log.warn("control: {method} timed out", method=method[:60])
            else:
                error = RPCError(INTERNAL_ERROR, f"internal error: {failure.getErrorMessage()[:200]}")
                log.failure("control: {method} raised", failure, method=method[:60])
            return None if notification else {"jsonrpc": "2.0", "error": error.as_json(), "id": ident}

        return d.addCallbacks(ok, failed)


class _ControlPort(unix.Port):
    """A UNIX listening port whose socket file may outlive it quietly: after
    C{--uid} the directory may not let us remove it, and the next start
    removes a stale socket anyway."""

    def connectionLost(self, reason: Failure) -> None:
        path = getattr(self, "_bindPath", None) or self.port  # older Twisted keeps the path in .port
        try:
            os.unlink(path)
        except OSError as e:
            log.warn("control: cannot remove {path}: {error}", path=os.fsdecode(path), error=e.strerror)
        if getattr(self, "lockFile", None) is not None:
            self.lockFile.unlock()
        tcp.Port.connectionLost(self, reason)


class ControlService(Service):
    """Listens on the control socket from privileged start (before
    C{twistd --uid} drops root) and hands the socket to that user.

    @param owner: (uid, gid) the socket file is given to (either None).
    """

    name = "control"

    def __init__(self, reactor: Any, path: str, commands: ControlCommands, mode: int = 0o600,
                 owner: tuple[Optional[int], Optional[int]] = (None, None)) -> None:
        self.reactor = reactor
        self.path = path
        self.mode = mode
        self.owner = owner
        self.factory = ControlFactory(commands, reactor)
        self.port: Any = None

    def privilegedStartService(self) -> None:
        if self.port is None:
            self._listen()
        super().privilegedStartService()

    def startService(self) -> None:
        if self.port is None:
            self._listen()
        super().startService()

    def _listen(self) -> None:
        old = os.umask(0o777 & ~self.mode)  # never, even for an instant, wider than asked
        try:
            port = _ControlPort(self.path, self.factory, backlog=MAX_CONNECTIONS, mode=self.mode,
                                reactor=self.reactor)
            port.startListening()
        except CannotListenError as e:  # checked at start-up; something changed since
            self.port = False
            log.error("no control socket: cannot listen on {path}: {error}", path=self.path, error=e.socketError)
            return
        finally:
            os.umask(old)
        self.port = port
        uid, gid = self.owner
        if (uid is not None or gid is not None) and os.geteuid() == 0:
            os.chown(self.path, -1 if uid is None else uid, -1 if gid is None else gid)
        log.info("control socket {path} (mode {mode:04o})", path=self.path, mode=self.mode)

    def stopService(self) -> Any:
        super().stopService()
        port, self.port = self.port, None
        for client in list(self.factory.clients):
            client.transport.loseConnection()
        if port:
            return port.stopListening()
        return None


def _root(service: IService) -> Callable[[], Any]:
    """The nearest ancestor of C{service} with a C{reload()}: the service
    makeService returned (twistd puts it under an application service of
    its own), or a wrapper an embedding application gave one; else the
    top of the tree."""
    def find() -> Any:
        node = service.parent
        while node is not None:
            if callable(getattr(node, "reload", None)):
                return node
            if getattr(node, "parent", None) is None:
                return node
            node = node.parent
        return None

    return find


def add_control(service: Any, options: Any, reactor: Any, *, store: Optional[ILocationStore] = None,
                door: Optional["FrontDoor"] = None, relay: Optional[INATHelper] = None,
                counters: Optional[Callable[[], Any]] = None,
                fail: Optional[Callable[[str], None]] = None) -> Optional[ControlService]:
    """Make the C{--control} socket a child of C{service} (what
    C{makeService} returned, or will return). A path in use by a live
    process is one line and exit (C{fail}) when the user named it; for the
    default path it is a warning and no socket (several proxies may share
    a working directory)."""
    path = options["control_path"]
    if path is None:
        return None
    problem = control_path_problem(path)
    if problem is not None:
        if options["control_explicit"] and fail is not None:
            fail(problem)
        log.warn("no control socket: {problem}", problem=problem)
        return None
    registrar = door.parts.get("registrar") if door is not None else None
    commands = ControlCommands(
        reactor, store=store, aor=registrar_aor(registrar) if registrar is not None else None,
        relay=relay if relay is not None else getattr(getattr(service, "proxy", None), "nathelper", None),
        legs=getattr(service, "legs", ()), guard=getattr(service, "stream_guard", None),
        worker=options["worker-index"],
        counters=counters if counters is not None else metric_counters(service, door, store))
    parent = getattr(options, "parent", None)
    owner = (parent.get("uid"), parent.get("gid")) if isinstance(parent, usage.Options) else (None, None)
    control = ControlService(reactor, path, commands, mode=options["control_mode"], owner=owner)
    commands.root = _root(control)
    control.setServiceParent(service)
    return control
