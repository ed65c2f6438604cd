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
C{done} (ok); with media, C{dtmf} (digit, method: rfc4733|inband,
duration_ms) for each key press received, C{dtmf_sent} (digits, method)
and, once per call at its end, C{media} (sent, received, lost,
jitter_ms). The exit status is 0 when what was asked happened (every
call established and ended, the registration granted), 1 when not, 2
for bad options (one line on stderr naming the problem).

Options are built by small functions, one per group (L{add_common_options},
L{add_call_options}, L{add_media_options}). Every call has media (RTP on
a socket of its own; silence when nothing is played): C{--play FILE}
(WAV or Net::SIP raw payload; the call hangs up when it is over, unless
C{--loop}), C{--record FILE}, C{--echo}, C{--dtmf DIGITS} (sent once the
call is up; with nothing played or echoed and no C{--hangup-after}, the
call hangs up half a second after the last key), C{--dtmf-method},
C{--codecs}. A file that cannot be played or recorded is one line on
stderr and exit status 2, before any socket is opened.

The sockets: this module is logic and does not import the transport; it
asks the package for its public C{Simple} (C{sipproxy.Simple}, wired in
L{sipproxy.app.ua}) when it runs, as a user's script would.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any, NoReturn, Optional, Sequence

from twisted.internet.defer import Deferred, ensureDeferred

from sipproxy.sip.transaction import TimerConfig

__all__ = ["main", "build_parser", "add_common_options", "add_call_options", "add_media_options", "media_options",
           "follow_call", "Output"]

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
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text}")
    return value


def _interval(text: str) -> float:
    """A retransmission interval: above zero (a zero T1 would resend
    without pause) and at most a minute."""
    value = _positive(text)
    if not 0 < value <= 60:
        raise argparse.ArgumentTypeError(f"must be above 0 and at most 60: {text}")
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
    group.add_argument("--t1", type=_interval, default=0.5, metavar="SECONDS",
                       help="RFC 3261 T1, the first retransmission interval over UDP (default 0.5)")
    group.add_argument("--t2", type=_interval, default=4.0, metavar="SECONDS",
                       help="RFC 3261 T2, the longest retransmission interval of non-INVITE requests "
                            "and of 2xx to INVITE (default 4)")
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


def _codecs(text: str) -> list[str]:
    names = [name.strip().upper() for name in text.split(",") if name.strip()]
    if not names or any(name not in ("PCMU", "PCMA") for name in names):
        raise argparse.ArgumentTypeError(f"codecs are PCMU and/or PCMA, comma-separated: {text!r}")
    return names


def add_media_options(parser: argparse.ArgumentParser) -> None:
    """Audio and DTMF of each call."""
    group = parser.add_argument_group("media")
    group.add_argument("--play", metavar="FILE", help="send this file (WAV, or Net::SIP raw PCMU payload)")
    group.add_argument("--loop", action="store_true", help="play the file again and again")
    group.add_argument("--record", metavar="FILE",
                       help="record what comes in (WAV for *.wav, raw payload otherwise; "
                            "FILE-2, FILE-3... for the next calls)")
    group.add_argument("--echo", nargs="?", type=_positive, const=0.0, default=None, metavar="SECONDS",
                       help="send back what comes in (after SECONDS; default at once)")
    group.add_argument("--dtmf", metavar="DIGITS", help="send these keys once the call is up (0-9 * # A-D)")
    group.add_argument("--dtmf-method", choices=("auto", "rfc4733", "inband"), default="auto",
                       help="RFC 4733 events or tones in the audio; auto: RFC 4733 when the peer offers it")
    group.add_argument("--codecs", type=_codecs, default=["PCMU", "PCMA"], metavar="PCMU,PCMA",
                       help="codecs offered and accepted, preferred first (default PCMU,PCMA)")
    group.add_argument("--no-rtp-timeout", type=_positive, default=10.0, metavar="SECONDS",
                       help="hang up after this long without RTP (0: never; default 10, as Net::SIP)")


def media_options(args: argparse.Namespace) -> Any:
    """The media of every call (files read now); ValueError or
    AudioFileError for what cannot be used."""
    from sipproxy.ua.media_session import MediaOptions

    if args.echo is not None and args.play:
        raise ValueError("--echo and --play both want to send: choose one")
    options = MediaOptions(play=args.play, repeat=0 if args.loop else 1, record=args.record, echo=args.echo,
                           codecs=args.codecs, no_rtp_timeout=args.no_rtp_timeout or None, detect_inband=True)
    return options.load()


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sipproxy-ua", description="A SIP user agent: register, call, answer.")
    commands = parser.add_subparsers(dest="command", metavar="register|call|answer", parser_class=_Parser)
    commands.required = True
    register = commands.add_parser("register", help="register and exit")
    add_common_options(register)
    call = commands.add_parser("call", help="call a URI")
    add_common_options(call)
    add_call_options(call, answering=False)
    add_media_options(call)
    call.add_argument("target", metavar="URI", help="whom to call (sip:bob@host, or bob with a --from domain)")
    answer = commands.add_parser("answer", help="take calls")
    add_common_options(answer)
    add_call_options(answer, answering=True)
    add_media_options(answer)
    return parser


def _make_agent(reactor: Any, args: argparse.Namespace) -> Any:
    """The user agent on sockets; ValueError for options that do not make
    one."""
    import sipproxy

    auth = None
    if args.password is not None:
        auth = (args.auth_user or _user_of(args.from_) or "sipproxy-ua", args.password)
    return sipproxy.Simple(reactor, legs=args.leg or [DEFAULT_LEG], outgoing_proxy=args.proxy,
                           registrar=args.registrar, auth=auth, from_=args.from_ or "sipproxy-ua",
                           timers=TimerConfig(t1=args.t1, t2=max(args.t1, args.t2)))


def _user_of(address: Optional[str]) -> Optional[str]:
    if not address:
        return None
    text = address.strip().strip("<>")
    if ":" in text.split("@")[0]:
        text = text.split(":", 1)[1]
    return text.split("@")[0] or None


def watch_media(call: Any, out: Output) -> None:
    """Report the key presses a call receives (from before it is up)."""
    call.on("dtmf", lambda digit: out("dtmf", digit=digit.digit, method=digit.method,
                                      duration_ms=digit.duration_ms))


def report_media(call: Any, out: Output) -> None:
    """The call's RTP counters, once, at its end."""
    media = getattr(call, "media", None)
    if media is None or not hasattr(media, "stats") or getattr(media, "params", None) is None:
        return  # no offer/answer happened: no media to tell of
    stats = media.stats()
    out("media", call_id=call.call_id, sent=stats["sent"], received=stats["received"], lost=stats["lost"],
        jitter_ms=round(stats["jitter_ms"], 2))


def follow_call(reactor: Any, call: Any, args: argparse.Namespace, out: Output) -> None:
    """Send the DTMF asked for, hang up when told to, and clean up at the
    call's end."""
    timers = []
    if args.hangup_after is not None:
        timers.append(reactor.callLater(args.hangup_after, call.bye))
    if getattr(args, "dtmf", None):
        method = call.media.dtmf_method(args.dtmf_method) if call.media is not None else args.dtmf_method
        hang_up = args.hangup_after is None and not args.play and args.echo is None

        def sent(_: Any) -> None:
            out("dtmf_sent", digits=args.dtmf, method=method)
            if hang_up and call.state == "established":
                timers.append(reactor.callLater(0.5, call.bye))

        def failed(failure: Any) -> None:
            if call.state == "established":
                out("failed", code=getattr(failure.value, "code", None), reason=f"DTMF: {failure.getErrorMessage()}")
                call.bye()

        call.send_dtmf(args.dtmf, method=args.dtmf_method).addCallbacks(sent, failed)

    def ended(end: Any) -> Any:
        for timer in timers:
            if timer.active():
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
            watch_media(call, out)

        try:
            call = await ua.invite(args.target, ring_time=args.ring_time, on_call=watch, media=args.media)
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
        report_media(call, out)
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
        watch_media(call, out)
        return True

    def established(call: Any) -> None:
        up.add(call.call_id)
        out("established", call_id=call.call_id)
        follow_call(reactor, call, args, out)

    def cleaned(call: Any) -> None:
        end = call.end
        # up, or answered and hung up by the caller before its ACK reached
        # us (a lost ACK; RFC 3261 15 lets the BYE come first): how it ended
        if call.call_id in up or (end.by == "remote" and end.reason == "BYE"):
            if call.call_id in up:
                report_media(call, out)
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
              answer_after=args.answer_after, media=args.media)
    await finished
    return bool(state["ok"])


async def _run(reactor: Any, args: argparse.Namespace, out: Output) -> int:
    if args.command != "register":
        from sipproxy.ua.media.audiofile import AudioFileError

        try:
            args.media = media_options(args)
        except (AudioFileError, ValueError) as e:
            sys.stderr.write(f"sipproxy-ua: {e}\n")
            return 2
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


def _check_target(parser: argparse.ArgumentParser, target: str) -> None:
    """A URI (C{sip:bob@host}, C{<sip:...>}) must parse; C{bob} and
    C{bob@host} are completed later."""
    from sipproxy.sip.uri import URIError, parse_name_addr

    text = target.strip()
    if not text:
        parser.error("the call target is empty")
    if "<" in text or ":" in text.split("@")[0]:
        try:
            parse_name_addr(text)
        except URIError as e:
            parser.error(f"bad call target {target!r}: {e}")


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
    if args.command == "call":
        _check_target(parser, args.target)
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
