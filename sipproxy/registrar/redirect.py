"""A redirect server (RFC 3261 8.3), after Net::SIP's Redirect: answers
with the registered contacts instead of routing to them."""
from __future__ import annotations

from typing import Any


from twisted.python.failure import Failure
from zope.interface import implementer

from sipproxy.observe.logsafe import SafeLogger
from sipproxy.interfaces import IDispatcher, ILeg, IReceiver
from sipproxy.registrar.registrar import Registrar, answer_store_failure
from sipproxy.sip.message import Message, Request
from sipproxy.sip.uri import URIError

__all__ = ["Redirect"]

log = SafeLogger()


@implementer(IReceiver)
class Redirect:
    """Answer requests for registered users with 302 and their contacts
    (best first, with q and remaining expires), 404 for unknown users;
    REGISTER and requests inside a dialog go on; an ACK is swallowed; a
    CANCEL gets 200. Requests for domains the registrar does not serve go
    on (to a proxy further down the chain, if any).

    @param registrar: a L{sipproxy.registrar.registrar.Registrar} (its C{lookup} and
        C{domains}).
    """

    def __init__(self, dispatcher: IDispatcher, registrar: Registrar) -> None:
        self.dispatcher = dispatcher
        self.registrar = registrar

    def receive(self, packet: Message, leg: ILeg, addr: tuple[str, int]) -> Any:
        if not isinstance(packet, Request) or packet.method == "REGISTER" or packet.to_tag:
            return False
        try:
            uri = packet.parsed_uri()
        except URIError:
            return False
        domains = self.registrar.domains
        if not uri.is_sip or not uri.user or not domains.served(uri.host, uri.port):
            return False
        if packet.method == "ACK":
            return True
        if packet.method == "CANCEL":
            self.dispatcher.respond(packet, 200, "OK", leg, addr)
            return True
        d = self.registrar.lookup(uri)
        d.addCallbacks(self._found, self._failed, callbackArgs=(packet, leg, addr), errbackArgs=(packet, leg, addr))
        return d

    def _found(self, bindings: list, packet: Request, leg: ILeg, addr: tuple[str, int]) -> bool:
        contacts = []
        for binding in bindings:
            try:
                if not binding.uri().is_sip:
                    continue
            except URIError:
                continue
            value = f"<{binding.contact}>"
            if binding.param("q") is not None:
                value += f";q={binding.param('q')}"
            contacts.append(("Contact", f"{value};expires={binding.expires}"))
        if contacts:
            self.dispatcher.respond(packet, 302, "Moved Temporarily", leg, addr, tuple(contacts))
        else:
            self.dispatcher.respond(packet, 404, "Not Found", leg, addr)
        return True

    def _failed(self, failure: Failure, packet: Request, leg: ILeg, addr: tuple[str, int]) -> bool:
        return answer_store_failure(self.dispatcher, failure, packet, leg, addr)
