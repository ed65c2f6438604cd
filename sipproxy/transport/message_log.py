"""One log line per SIP message received and sent (C{--log-messages}).

Off by default: at full load it is a line per packet, which is what a
trace is for and what a production log is not. The dispatcher checks
for it with one C{None} test per message, so a proxy without it pays
nothing else. Each line carries the fields of L{sipproxy.observe.logfields}
(C{call_id}, C{method}, C{status}, C{source}, C{leg}), and sent lines a
C{destination}: grep or C{jq} for a Call-ID gives the call's whole path
through the proxy.
"""
from __future__ import annotations

from typing import Optional

from twisted.logger import Logger

from sipproxy.interfaces import ILeg
from sipproxy.observe.logfields import host_port, message_fields
from sipproxy.observe.logsafe import SafeLogger
from sipproxy.sip.message import Message, Request, Response

__all__ = ["MessageLog"]


def summary(message: Message, method: Optional[str] = None) -> str:
    """The start line, shortened: C{INVITE sip:bob@example.com}, or
    C{200 OK (INVITE)} with the method a response answers."""
    if isinstance(message, Request):
        return f"{message.method} {message.uri}"[:200]
    if isinstance(message, Response):
        return f"{message.code} {message.reason}"[:160] + (f" ({method[:32]})" if method else "")
    return type(message).__name__


class MessageLog:
    """Writes the trace lines to C{logger} (namespace
    C{sipproxy.messages} by default, so a log filter can pick them)."""

    def __init__(self, logger: Optional[Logger] = None) -> None:
        self.log = logger if logger is not None else SafeLogger(namespace="sipproxy.messages")

    def received(self, message: Message, leg: ILeg, addr: tuple[str, int]) -> None:
        fields = message_fields(message, addr, leg)
        self.log.info("received {summary} from {source} on {leg}", summary=summary(message, fields.get("method")),
                      direction="in", **fields)

    def sent(self, message: Message, leg: ILeg, addr: tuple[str, int]) -> None:
        fields = message_fields(message, (leg.host, leg.port), leg)  # the packet's source is our leg
        self.log.info("sent {summary} to {destination} from {leg}", summary=summary(message, fields.get("method")),
                      direction="out", destination=host_port(addr), **fields)
