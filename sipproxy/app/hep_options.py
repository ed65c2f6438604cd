"""The capture options of C{twistd sipproxy} and the service they build
(used by L{sipproxy.app.tap}).

  --hep HOST:PORT      copy every SIP message received and sent, as HEP v3,
                       to this collector (Homer / heplify-server, sngrep -L);
                       repeatable, or a comma list
  --hep-id N           the capture agent id in each copy
  --hep-password TEXT  the authentication key chunk, for collectors that
                       check one

See L{sipproxy.transport.hep}.
"""
from __future__ import annotations

from typing import Any, Optional

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorUDP
from twisted.python import usage

from sipproxy.app.option_types import number
from sipproxy.interfaces import IDispatcher
from sipproxy.transport.hep import HEPSender, parse_hep_target

__all__ = ["HEP_PARAMETERS", "opt_hep", "check_hep_options", "HEPService", "make_hep_service"]

#: the capture agent id when --hep-id is not given (Kamailio's siptrace default)
DEFAULT_AGENT_ID = 1

HEP_PARAMETERS = [
    ["hep-id", None, None, f"With --hep: the capture agent id written into each copy (0-4294967295; default "
                           f"{DEFAULT_AGENT_ID}), to tell nodes apart in Homer.",
     number(int, "hep-id", "an integer")],
    ["hep-password", None, None, "With --hep: the authentication key sent in each copy, for collectors "
                                 "that check one (it travels in clear)."],
]


def opt_hep(self: usage.Options, value: str) -> None:
    """HOST:PORT (UDP; port 9060 by default): copy every SIP message received and sent, as HEP v3, to this Homer / heplify-server / sngrep collector; TLS is copied decrypted; repeatable or a comma list."""
    targets = self.setdefault("hep", [])
    for item in filter(None, (part.strip() for part in value.split(","))):
        try:
            targets.append(parse_hep_target(item))
        except ValueError as e:
            raise usage.UsageError(f"--hep {e}") from None


def check_hep_options(options: usage.Options) -> None:
    """Validate the capture options (one line naming the problem)."""
    targets = options.get("hep") or []
    options["hep"] = targets
    if not targets:
        for name in ("hep-id", "hep-password"):
            if options.get(name) is not None:
                raise usage.UsageError(f"--{name} needs --hep")
        return
    if options.get("relay-only"):
        raise usage.UsageError("--hep: the relay (--relay-only) handles no SIP to capture")
    agent = options.get("hep-id")
    if agent is None:
        options["hep-id"] = DEFAULT_AGENT_ID
    elif not 0 <= agent <= 0xFFFFFFFF:
        raise usage.UsageError("--hep-id must be between 0 and 4294967295")
    password = options.get("hep-password")
    if password is not None and (not password or len(password.encode("utf-8", "surrogateescape")) > 1024):
        raise usage.UsageError("--hep-password must be 1 to 1024 octets")


class HEPService(Service):
    """Opens the capture socket at start and hooks the sender into the
    dispatcher; unhooks and closes at stop."""

    name = "hep"

    def __init__(self, sender: HEPSender, dispatcher: IDispatcher) -> None:
        self.sender = sender
        self.dispatcher = dispatcher

    def startService(self) -> None:
        super().startService()
        self.sender.start()
        self.dispatcher.capture = self.sender

    def stopService(self) -> Any:
        super().stopService()
        if self.dispatcher.capture is self.sender:
            self.dispatcher.capture = None
        from twisted.internet.defer import gatherResults

        return gatherResults([d for d in self.sender.stop() if d is not None])


def make_hep_service(reactor: IReactorUDP, options: usage.Options, dispatcher: IDispatcher) -> Optional[HEPService]:
    """The capture service the options ask for, or None."""
    if not options.get("hep"):
        return None
    password = options.get("hep-password")
    sender = HEPSender(reactor, options["hep"], agent_id=options["hep-id"], password=password)
    return HEPService(sender, dispatcher)

