"""C{sipproxy-ua}: register, call or answer from the command line.

::

    sipproxy-ua register --leg udp:127.0.0.1:5070 --registrar sip:127.0.0.1:5060 \\
        --from sip:alice@127.0.0.1 --auth-user alice --password secret
    sipproxy-ua call --leg udp:127.0.0.1:0 --ring-time 20 --hangup-after 5 sip:bob@127.0.0.1:5080
    sipproxy-ua answer --leg udp:127.0.0.1:5080 --from bob --calls 2 --answer-after 1

Every event is one JSON object on one line of stdout, made for scripts
and test harnesses: C{listening} (legs), C{registered} (expires),
C{register_failed} (code, reason), C{incoming} (from, call_id),
C{ringing} (code), C{established} (call_id), C{failed} (code, reason),
C{cancelled}, C{bye} (by: local|remote, code), C{timeout} (seconds),
C{done} (ok). The exit status is 0 when what was asked happened (every
call established and ended, the registration granted), 1 when not, 2
for bad options (one line on stderr naming the problem).

Options are built by small functions, one per group (L{add_common_options},
L{add_call_options}), so the media options (play, record, DTMF) join as
one more group and one more step in L{follow_call}.

The sockets: this module is logic and does not import the transport; it
asks the package for its public C{Simple} (C{sipproxy.Simple}, wired in
L{sipproxy.app.ua}) when it runs, as a user's script would.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, NoReturn, Optional, Sequence

from twisted.internet.defer import Deferred, ensureDeferred

__all__ = ["main", "build_parser", "add_common_options", "add_call_options", "follow_call", "Output"]

DEFAULT_LEG = "udp:127.0.0.1:0"


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (no usage dump)."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"sipproxy-ua: {message}\n")
        sys.exit(2)


class Output:
    """Writes events as JSON lines (to stdout unless told otherwise)."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream if stream is not None else sys.stdout

    def __call__(self, event: str, **fields: Any) -> None:
        self.stream.write(json.dumps({"event": event, **fields}, sort_keys=False) + "\n")
        self.stream.flush()


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text}")
    return value


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """Legs, identity, proxy, registrar, credentials, time limit."""
    group = parser.add_argument_group("user agent")
    group.add_argument("--leg", action="append", metavar="[PROTO:]HOST[:PORT]",
                       help=f"where to listen (repeatable; default {DEFAULT_LEG})")
    group.add_argument("--proxy", metavar="URI", help="outgoing proxy: every request goes there")
    group.add_argument("--registrar", metavar="URI", help="register there (answer: before taking calls)")
    group.add_argument("--from", dest="from_", metavar="ADDRESS",
                       help="our address: sip:user@host, or a user name (default sipproxy-ua)")
    group.add_argument("--auth-user", metavar="USER", help="user name for 401/407 (default: the From user)")
    group.add_argument("--password", metavar="PASSWORD", help="password for 401/407")
    group.add_argument("--expires", type=int, default=3600, metavar="SECONDS",
                       help="registration interval asked for (default 3600)")
    group.add_argument("--timeout", type=_positive, default=60.0, metavar="SECONDS",
                       help="give up after this long (0: never; default 60)")
    group.add_argument("--log", metavar="FILE", help="append the user agent's log (twisted.logger text) to FILE")


def add_call_options(parser: argparse.ArgumentParser, answering: bool) -> None:
    """What happens to each call."""
    group = parser.add_argument_group("calls")
    if answering:
        group.add_argument("--answer-after", type=_positive, default=0.0, metavar="SECONDS",
                           help="ring this long before answering (default 0)")
    else:
        group.add_argument("--ring-time", type=_positive, default=None, metavar="SECONDS",
                           help="cancel when not answered within this time")
    group.add_argument("--hangup-after", type=_positive, default=None, metavar="SECONDS",
                       help="hang up this long after the call is established (default: wait for the peer)")
    group.add_argument("--calls", type=_count, default=1, metavar="N",
                       help="calls to make (one after the other) or to take (default 1)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sipproxy-ua", description="A SIP user agent: register, call, answer.")
    commands = parser.add_subparsers(dest="command", metavar="register|call|answer", parser_class=_Parser)
    commands.required = True
    register = commands.add_parser("register", help="register and exit")
    add_common_options(register)
    call = commands.add_parser("call", help="call a URI")
    add_common_options(call)
    add_call_options(call, answering=False)
    call.add_argument("target", metavar="URI", help="whom to call (sip:bob@host, or bob with a --from domain)")
    answer = commands.add_parser("answer", help="take calls")
    add_common_options(answer)
    add_call_options(answer, answering=True)
    return parser


def _make_agent(reactor: Any, args: argparse.Namespace) -> Any:
    """The user agent on sockets; ValueError for options that do not make
    one."""
    import sipproxy

    auth = None
    if args.password is not None:
        auth = (args.auth_user or _user_of(args.from_) or "sipproxy-ua", args.password)
    return sipproxy.Simple(reactor, legs=args.leg or [DEFAULT_LEG], outgoing_proxy=args.proxy,
                           registrar=args.registrar, auth=auth, from_=args.from_ or "sipproxy-ua")


def _user_of(address: Optional[str]) -> Optional[str]:
    if not address:
        return None
    text = address.strip().strip("<>")
    if ":" in text.split("@")[0]:
        text = text.split(":", 1)[1]
    return text.split("@")[0] or None


def follow_call(reactor: Any, call: Any, args: argparse.Namespace, out: Output) -> None:
    """Report an established call's end and hang up when told to."""
    timer = None
    if args.hangup_after is not None:
        timer = reactor.callLater(args.hangup_after, call.bye)

    def ended(end: Any) -> Any:
        if timer is not None and timer.active():
            timer.cancel()
        return end

    call.ended.addCallback(ended)


async def _register(ua: Any, args: argparse.Namespace, out: Output) -> bool:
    from sipproxy.ua.endpoint import SIPError

    try:
        await ua.register(expires=args.expires)
    except SIPError as e:
        out("register_failed", code=e.code, reason=e.reason)
        return False
    return True


async def _call(reactor: Any, ua: Any, args: argparse.Namespace, out: Output) -> bool:
    from sipproxy.ua.call import RingTimeout
    from sipproxy.ua.endpoint import SIPError

    ok = True
    for _ in range(args.calls):
        def watch(call: Any) -> None:
            call.on("ringing", lambda response: out("ringing", code=response.code))

        try:
            call = await ua.invite(args.target, ring_time=args.ring_time, on_call=watch)
        except RingTimeout:
            out("cancelled")
            ok = False
            continue
        except SIPError as e:
            out("failed", code=e.code, reason=e.reason)
            ok = False
            continue
        out("established", call_id=call.call_id)
        follow_call(reactor, call, args, out)
        end = await call.ended
        out("bye", by=end.by, code=end.code)
        ok = ok and end.code is not None and 200 <= end.code < 300
    return ok


async def _answer(reactor: Any, ua: Any, args: argparse.Namespace, out: Output) -> bool:
    if args.registrar and not await _register(ua, args, out):
        return False
    finished: Deferred = Deferred()
    state = {"taken": 0, "ok": True}
    up: set[str] = set()

    def created(call: Any, request: Any) -> bool:
        out("incoming", **{"from": request.get("from"), "call_id": call.call_id})
        return True

    def established(call: Any) -> None:
        up.add(call.call_id)
        out("established", call_id=call.call_id)
        follow_call(reactor, call, args, out)

    def cleaned(call: Any) -> None:
        end = call.end
        if call.call_id in up:  # it was up: how it ended
            out("bye", by=end.by, code=end.code)
            state["ok"] = state["ok"] and end.code is not None and 200 <= end.code < 300
        elif end.code == 487 and end.by == "remote":
            out("cancelled")
            state["ok"] = False
        else:  # refused (488 for an offer without a common codec, ...) or never acknowledged
            out("failed", code=end.code, reason=end.reason)
            state["ok"] = False
        state["taken"] += 1
        if state["taken"] >= args.calls and not finished.called:
            finished.callback(None)

    ua.listen(on_create=created, on_established=established, on_cleanup=cleaned,
              answer_after=args.answer_after)
    await finished
    return bool(state["ok"])


async def _run(reactor: Any, args: argparse.Namespace, out: Output) -> int:
    try:
        ua = _make_agent(reactor, args)
    except (ValueError, TypeError) as e:
        sys.stderr.write(f"sipproxy-ua: {e}\n")
        return 2
    except Exception as e:  # a port in use, an address not ours
        sys.stderr.write(f"sipproxy-ua: cannot start: {e}\n")
        return 1
    ua.on("registered", lambda name, fields: out("registered", expires=fields["expires"]))
    ua.on("register_failed", lambda name, fields: out("register_failed", code=fields["code"],
                                                      reason=fields["reason"]))
    out("listening", legs=[leg.key for leg in ua.dispatcher.legs])
    if args.command == "register":
        work = _register(ua, args, out)
    elif args.command == "call":
        work = _call(reactor, ua, args, out)
    else:
        work = _answer(reactor, ua, args, out)
    job = ensureDeferred(work)
    timer = None
    if args.timeout:
        def expire() -> None:
            out("timeout", seconds=args.timeout)
            job.cancel()

        timer = reactor.callLater(args.timeout, expire)
    try:
        ok = await job
    except Exception as e:
        from twisted.internet.defer import CancelledError

        if not isinstance(e, CancelledError):
            out("failed", code=getattr(e, "code", None), reason=str(e))
        ok = False
    if timer is not None and timer.active():
        timer.cancel()
    await ua.cleanup(unregister=args.command != "register")
    out("done", ok=bool(ok))
    return 0 if ok else 1


def _start_log(parser: argparse.ArgumentParser, path: str) -> None:
    """Log (warnings, refused packets, retries) to C{path}; stdout stays
    for the events."""
    from twisted.logger import globalLogBeginner, textFileLogObserver

    try:
        stream = open(path, "a", encoding="utf-8")
    except OSError as e:
        parser.error(f"cannot open the log file {path!r}: {e.strerror}")
    globalLogBeginner.beginLoggingTo([textFileLogObserver(stream)], redirectStandardIO=False)


def main(argv: Optional[Sequence[str]] = None, out: Optional[Output] = None) -> NoReturn:
    """The C{sipproxy-ua} console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "register" and not args.registrar and "@" not in (args.from_ or ""):
        parser.error("register needs --registrar, or a --from address naming the registrar's domain")
    output = out or Output()
    if args.log:
        _start_log(parser, args.log)
    from twisted.internet import task

    def start(reactor: Any) -> Deferred:
        def finish(code: int) -> None:
            if code:
                raise SystemExit(code)

        return ensureDeferred(_run(reactor, args, output)).addCallback(finish)

    task.react(start)
    raise SystemExit(0)  # react exits by itself; this line is for type checkers


if __name__ == "__main__":
    main()
