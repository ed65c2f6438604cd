"""The NAT helper's C{twistd sipproxy} options, their checks, and the
services they build (used by L{sipproxy.app.tap}).

  --nathelper                   relay RTP in this process (LocalRelay)
  --nathelper-ng udp:HOST:PORT  drive a remote relay over ng (rtpengine, or
                                twistd sipproxy --relay-only)
  --relay-only --ng udp:H:P     run only the relay, controlled over ng
"""
from __future__ import annotations

import errno
import ipaddress
import socket
from typing import Any, Optional

from twisted.python import usage

from sipproxy.app.option_types import number
from sipproxy.nat.ng import DEFAULT_NG_PORT, parse_ng_address
from sipproxy.nat.forward import LEARN_WINDOW
from sipproxy.nat.relay import (DEFAULT_MAX_CALL_SOCKETS, DEFAULT_MAX_STREAMS, DEFAULT_PORT_RANGE,
                                DEFAULT_RELAY_BUFFER, DEFAULT_UNANSWERED, parse_port_range)

__all__ = ["NAT_FLAGS", "NAT_PARAMETERS", "check_nat_options", "make_nathelper", "make_relay_service",
           "ng_bind_problem"]

_RANGE = f"{DEFAULT_PORT_RANGE[0]}-{DEFAULT_PORT_RANGE[1]}"


NAT_FLAGS = [
    ["nathelper", None, "Relay RTP between legs in this process (Net::SIP's NATHelper): SDP in INVITE, "
                        "ACK, 183 and 200 is rewritten to point at relay ports on the outgoing leg's address."],
    ["relay-only", None, "Run only the RTP relay, controlled over the ng protocol (needs --ng); no SIP legs."],
    ["rtp-strict-source", None, "Forward media only from the address and port each side's SDP names: no "
                                "learning, no latching (rtpengine: endpoint-learning=off with strict-source). "
                                "By default the relay learns each peer's source in its first ~3 s (the SDP "
                                "address and port first, then the address, then any; rtpengine's heuristic "
                                "learning) and then drops other sources, as rtpengine's strict-source; phones "
                                "behind NAT need the default."],
    ["ng-no-direction", None, "With --nathelper-ng: send no 'direction' (for an rtpengine with one interface). "
                              "By default direction is [incoming leg IP, outgoing leg IP], so rtpengine needs "
                              "one --interface=IP/IP per leg."],
]

NAT_PARAMETERS = [
    ["nathelper-ng", None, None, f"Relay RTP through a remote relay speaking rtpengine's ng protocol, "
                                 f"udp:HOST:PORT (rtpengine, or twistd sipproxy --relay-only; "
                                 f"ours listens on {DEFAULT_NG_PORT} by default)."],
    ["ng", None, None, "Answer ng requests (ping, offer, answer, delete, query) on udp:HOST:PORT for the "
                       "local relay (with --relay-only or --nathelper)."],
    ["rtp-ports", None, _RANGE, "Relay ports LOW-HIGH (RTP on even, RTCP on odd ports)."],
    ["rtp-address", None, None, "Bind and advertise relay ports on this IP address instead of the outgoing "
                                "leg's (with --relay-only: the address used when ng 'direction' names none; "
                                "default the --ng host)."],
    ["rtp-idle", None, 30.0, "End a relayed session after this many seconds without media.",
     number(float, "rtp-idle", "a number of seconds")],
    ["rtp-unused", None, 180.0, "Release relay ports never used in a session after this many seconds.",
     number(float, "rtp-unused", "a number of seconds")],
    ["rtp-unanswered", None, DEFAULT_UNANSWERED, "Release an offer's relay ports after this many seconds "
                                                 "without an answer carrying SDP (0: only --rtp-unused), so a "
                                                 "flood of unanswered INVITEs cannot hold the port range.",
     number(float, "rtp-unanswered", "a number of seconds")],
    ["rtp-learn", None, LEARN_WINDOW, "Seconds each relay port learns its peer's source after the first packet "
                                      "(rtpengine learns for 3 s).",
     number(float, "rtp-learn", "a number of seconds")],
    ["rtp-close-delay", None, 1.0, "Release a session's relay ports this many seconds after BYE, CANCEL or "
                                   "an error (nothing is forwarded meanwhile).",
     number(float, "rtp-close-delay", "a number of seconds")],
    ["rtp-max-sockets", None, 0, "At most this many relay sockets in total (0: no limit but the port range); "
                                 "beyond it calls are refused with 503.",
     number(int, "rtp-max-sockets", "an integer")],
    ["rtp-max-call-sockets", None, DEFAULT_MAX_CALL_SOCKETS, "At most this many relay sockets per call "
                                                             "(0: no limit).",
     number(int, "rtp-max-call-sockets", "an integer")],
    ["rtp-max-streams", None, DEFAULT_MAX_STREAMS, "At most this many media streams per SDP get relay ports "
                                                   "(m=audio P/N counts N; 0: no limit); beyond it the call "
                                                   "gets 503.",
     number(int, "rtp-max-streams", "an integer")],
    ["rtp-buffer", None, DEFAULT_RELAY_BUFFER, "Receive and send buffer of each relay socket, in bytes "
                                               "(0: the kernel's default).", number(int, "rtp-buffer", "an integer")],
    ["ng-timeout", None, 3.0, "With --nathelper-ng: give up on an unanswered ng request after this many "
                              "seconds (the call gets 503).",
     number(float, "ng-timeout", "a number of seconds")],
]


def _address(options: Any, name: str) -> Optional[tuple[str, int]]:
    value = options[name]
    if not value:
        return None
    try:
        return parse_ng_address(value)
    except ValueError as e:
        raise usage.UsageError(f"--{name}: {e}") from None


def check_nat_options(options: Any) -> None:
    """Validate the NAT options in place (called from C{postOptions}):
    parsed values go to C{options["nat"]}.

    @raise usage.UsageError: one line naming the problem.
    """
    ng_client = _address(options, "nathelper-ng")
    ng_server = _address(options, "ng")
    if options["nathelper"] and ng_client:
        raise usage.UsageError("--nathelper and --nathelper-ng exclude each other")
    if options["relay-only"]:
        if not ng_server:
            raise usage.UsageError("--relay-only needs --ng udp:HOST:PORT to be controlled")
        if options["nathelper"] or ng_client:
            raise usage.UsageError("--relay-only runs no proxy: drop --nathelper/--nathelper-ng")
    elif ng_server and not options["nathelper"]:
        raise usage.UsageError("--ng serves the local relay: give --nathelper or --relay-only")
    try:
        port_range = parse_port_range(options["rtp-ports"])
    except ValueError as e:
        raise usage.UsageError(f"--rtp-ports: {e}") from None
    address = options["rtp-address"]
    if address:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise usage.UsageError(f"--rtp-address: {address!r} is not an IP address") from None
    for name in ("rtp-idle", "rtp-unused", "rtp-close-delay", "ng-timeout"):
        if not 0 < options[name] < float("inf"):
            raise usage.UsageError(f"--{name} must be a positive number of seconds")
    for name in ("rtp-unanswered", "rtp-learn"):
        if not 0 <= options[name] < float("inf"):
            raise usage.UsageError(f"--{name} must be a number of seconds, 0 or more")
    if options["rtp-max-streams"] < 0:
        raise usage.UsageError("--rtp-max-streams must not be negative")
    if options["rtp-buffer"] < 0:
        raise usage.UsageError("--rtp-buffer must not be negative")
    for name in ("rtp-max-sockets", "rtp-max-call-sockets"):
        if options[name] < 0:
            raise usage.UsageError(f"--{name} must not be negative")
        if 0 < options[name] < 2:
            raise usage.UsageError(f"--{name} must allow at least one RTP/RTCP pair (2)")
    options["nat"] = {"ng_client": ng_client, "ng_server": ng_server, "port_range": port_range,
                      "address": address or None}


def _relay(reactor: Any, options: Any) -> Any:
    from sipproxy.nat.relay import LocalRelay

    nat = options["nat"]
    return LocalRelay(
        reactor, port_range=nat["port_range"], address=nat["address"],
        idle_timeout=options["rtp-idle"], unused_timeout=options["rtp-unused"],
        close_delay=options["rtp-close-delay"], max_sockets=options["rtp-max-sockets"] or None,
        max_sockets_per_call=options["rtp-max-call-sockets"] or None, buffer_size=options["rtp-buffer"],
        unanswered_timeout=options["rtp-unanswered"] or None, max_streams=options["rtp-max-streams"] or None,
        learn_window=options["rtp-learn"], strict_source=bool(options["rtp-strict-source"]),
    )


def make_nathelper(reactor: Any, options: Any) -> tuple[Any, list]:
    """(nathelper for the proxy or None, extra services to run beside it)."""
    nat = options["nat"]
    if nat["ng_client"]:
        from sipproxy.nat.ng import NgClient

        return NgClient(reactor, nat["ng_client"], timeout=options["ng-timeout"],
                        direction=not options["ng-no-direction"]), []
    if not options["nathelper"]:
        return None, []
    relay = _relay(reactor, options)
    extra = []
    if nat["ng_server"]:
        from sipproxy.nat.ng import NgServer

        extra.append(NgServer(relay, reactor, nat["ng_server"]))
    return relay, extra


def make_relay_service(reactor: Any, options: Any) -> Any:
    """The C{--relay-only} service: a LocalRelay behind an ng server."""
    from twisted.application.service import MultiService

    from sipproxy.nat.ng import NgServer

    service = MultiService()
    relay = _relay(reactor, options)
    relay.setServiceParent(service)
    NgServer(relay, reactor, options["nat"]["ng_server"]).setServiceParent(service)
    return service


def ng_bind_problem(address: tuple[str, int]) -> Optional[str]:
    """Why the ng server cannot listen on C{address}, or None."""
    host, port = address
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as e:
            reason = {errno.EADDRINUSE: "address already in use", errno.EADDRNOTAVAIL: "not an address of this host",
                      errno.EACCES: "permission denied"}.get(e.errno or 0, e.strerror)
            return f"cannot listen for ng on udp:{host}:{port}: {reason}"
    return None
