"""C{sipproxy-ctl}: ask a running C{twistd sipproxy} over its control socket.

::

    sipproxy-ctl stats
    sipproxy-ctl registrations [AOR]
    sipproxy-ctl unregister AOR
    sipproxy-ctl reload
    sipproxy-ctl relay sessions [CALL-ID]
    sipproxy-ctl tcp connections
    sipproxy-ctl call METHOD [JSON-PARAMS]

The socket is C{--socket PATH}, else C{$SIPPROXY_CONTROL}, else
C{sipproxy.ctl} in the working directory: the proxy's own default, so
running both from the same directory needs no option. C{--worker N} asks
worker N of a C{--workers} proxy (its socket is the path plus C{.N}).
Results are printed for people, or as the JSON-RPC result with
C{--json}. Exit status: 0 done, 1 the socket is missing or the call
failed (one line on stderr), 2 bad usage.

A blocking client on purpose: one request, one answer, no reactor.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from typing import Any, NoReturn, Optional, Sequence, TextIO

__all__ = ["main", "main_exit", "call", "CtlError", "render"]

DEFAULT_SOCKET = "sipproxy.ctl"
ENVIRONMENT = "SIPPROXY_CONTROL"
MAX_ANSWER = 64 * 1024 * 1024

#: command words to JSON-RPC method, and the arguments each takes (name, required)
COMMANDS: dict[tuple[str, ...], tuple[str, tuple[tuple[str, bool], ...]]] = {
    ("stats",): ("stats", ()),
    ("registrations",): ("registrations", (("aor", False),)),
    ("unregister",): ("unregister", (("aor", True),)),
    ("reload",): ("reload", ()),
    ("relay", "sessions"): ("relay.sessions", (("call_id", False),)),
    ("tcp", "connections"): ("tcp.connections", ()),
}


class CtlError(Exception):
    """The one line to print when a call cannot be made or failed."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"sipproxy-ctl: {message}\n")
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sipproxy-ctl", description="Ask a running twistd sipproxy over its control socket.",
                     epilog="commands: stats | registrations [AOR] | unregister AOR | reload | "
                            "relay sessions [CALL-ID] | tcp connections | call METHOD [JSON-PARAMS]")
    parser.add_argument("--socket", metavar="PATH", help=f"the control socket (default: ${ENVIRONMENT}, "
                                                         f"else {DEFAULT_SOCKET} in the working directory)")
    parser.add_argument("--worker", metavar="N", type=int, default=0, help="ask worker N of a --workers proxy")
    parser.add_argument("--json", action="store_true", help="print the JSON-RPC result as JSON")
    parser.add_argument("--timeout", metavar="SECONDS", type=float, default=15.0,
                        help="give up after this long (default 15)")
    parser.add_argument("command", nargs="+", help="the command and its arguments")
    return parser


def socket_path(option: Optional[str], worker: int = 0) -> str:
    """Where the proxy's control socket is (see the module docstring)."""
    path = option or os.environ.get(ENVIRONMENT) or DEFAULT_SOCKET
    return f"{path}.{worker}" if worker else path


def call(path: str, method: str, params: Any = None, timeout: float = 15.0) -> Any:
    """One JSON-RPC call over the socket at C{path}: its result; raises
    L{CtlError} with one line for a missing socket or an error answer."""
    request: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": 1}
    if params is not None:
        request["params"] = params
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(path)
        except OSError as e:
            raise CtlError(f"cannot connect to {path}: {e.strerror or e} (is twistd sipproxy running there? "
                           f"--socket PATH)") from None
        try:
            sock.sendall(json.dumps(request).encode("utf-8") + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
                if len(data) > MAX_ANSWER:
                    raise CtlError(f"answer from {path} is longer than {MAX_ANSWER} octets")
        except socket.timeout:
            raise CtlError(f"no answer from {path} within {timeout:g} s") from None
        except OSError as e:
            raise CtlError(f"{path}: {e.strerror or e}") from None
    finally:
        sock.close()
    try:
        answer = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise CtlError(f"{path} did not answer with JSON-RPC ({len(data)} octets)") from None
    if not isinstance(answer, dict):
        raise CtlError(f"{path} did not answer with a JSON-RPC object")
    error = answer.get("error")
    if error is not None:
        message = error.get("message") if isinstance(error, dict) else error
        code = error.get("code") if isinstance(error, dict) else None
        raise CtlError(f"{method}: {message} (error {code})")
    return answer.get("result")


# -- printing for people --------------------------------------------------------------------
def _flat(prefix: str, value: Any, out: list[str]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flat(f"{prefix}.{key}" if prefix else str(key), item, out)
    elif isinstance(value, list) and not all(isinstance(v, (str, int, float)) for v in value):
        for i, item in enumerate(value):
            _flat(f"{prefix}.{i}", item, out)
    else:
        out.append(f"{prefix}: {', '.join(map(str, value)) if isinstance(value, list) else value}")


def _plural(count: int, word: str, plural: Optional[str] = None) -> str:
    return f"{count} {word if count == 1 else (plural or word + 's')}"


def render(method: str, result: Any) -> str:
    """C{result} of C{method} as lines for a person."""
    lines: list[str] = []
    if method == "registrations":
        bindings = 0
        for entry in result["aors"]:
            lines.append(entry["aor"])
            for b in entry["bindings"]:
                bindings += 1
                lines.append(f"    <{b['contact']}>{b['params']}  expires {b['expires']} s  q {b['q']:g}  "
                             f"from {b['source'] or '-'}  call-id {b['call_id']}")
                for hop in b.get("path") or ():
                    lines.append(f"        path {hop}")
        summary = f"{_plural(len(result['aors']), 'address-of-record', 'addresses-of-record')}, " \
                  f"{_plural(bindings, 'binding')}"
        lines.append(summary + (" (list truncated)" if result.get("truncated") else ""))
    elif method == "unregister":
        lines.append(f"{result['aor']}: {_plural(result['removed'], 'binding')} removed")
    elif method == "reload":
        if isinstance(result, dict):
            lines.append(f"reload {'done' if result.get('ok') else 'FAILED'}: {result.get('message', '')}")
        else:
            lines.append(f"reload: {result}")
    elif method == "relay.sessions":
        for s in result["sessions"]:
            lines.append(f"{s['call_id']}  session {s['session']}  {s['from']} <-> {s['to']}  "
                         f"packets {s['packets_from']}/{s['packets_to']}  bytes {s['bytes_from']}/{s['bytes_to']}")
        lines.append(_plural(len(result["sessions"]), "session"))
    elif method == "tcp.connections":
        for c in result["connections"]:
            idle = "-" if c["idle"] is None else f"{c['idle']:.1f} s"
            lines.append(f"{c['leg']}  {c['direction']:<3}  {c['peer']}  {c['state']}  idle {idle}")
        lines.append(_plural(result["total"], "connection"))
    else:
        _flat("", result, lines)
    return "\n".join(lines)


def _command(words: Sequence[str]) -> tuple[str, Any]:
    """(method, params) for the command words; exits 2 for a bad command."""
    if words[0] == "call":
        if len(words) not in (2, 3):
            _usage("call METHOD [JSON-PARAMS]")
        params = None
        if len(words) == 3:
            try:
                params = json.loads(words[2])
            except ValueError:
                _usage("call: JSON-PARAMS is not JSON")
        return words[1], params
    for size in (2, 1):
        key = tuple(words[:size])
        if key in COMMANDS:
            method, arguments = COMMANDS[key]
            rest = list(words[size:])
            if len(rest) > len(arguments):
                _usage(f"{' '.join(key)}: too many arguments")
            for name, required in arguments[len(rest):]:
                if required:
                    _usage(f"{' '.join(key)} needs {name.upper().replace('_', '-')}")
            return method, rest or None
    _usage(f"unknown command {' '.join(words)!r} (stats, registrations, unregister, reload, relay sessions, "
           "tcp connections, call)")
    raise AssertionError("unreachable")


def _usage(message: str) -> NoReturn:
    sys.stderr.write(f"sipproxy-ctl: {message}\n")
    sys.exit(2)


def main(argv: Optional[Sequence[str]] = None, stdout: TextIO = sys.stdout) -> int:
    args = build_parser().parse_args(argv)
    if args.worker < 0:
        _usage("--worker must not be negative")
    if not args.timeout > 0:
        _usage("--timeout must be positive")
    method, params = _command(args.command)
    path = socket_path(args.socket, args.worker)
    try:
        result = call(path, method, params, args.timeout)
    except CtlError as e:
        sys.stderr.write(f"sipproxy-ctl: {e}\n")
        return 1
    if args.json:
        stdout.write(json.dumps(result, indent=2, sort_keys=True) + "\n")
    else:
        stdout.write(render(method, result) + "\n")
    if method == "reload" and isinstance(result, dict) and not result.get("ok", True):
        return 1
    return 0


def main_exit() -> NoReturn:
    """The console script: L{main}'s status as the exit status."""
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    main_exit()
