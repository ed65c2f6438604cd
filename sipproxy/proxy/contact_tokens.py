"""Contact rewriting with tokens (Net::SIP's scheme, with real crypto).

When a packet crosses from one leg to another, the proxy replaces each
Contact URI C{sip:user@host...} with C{sip:b<token>@<outgoing leg>}, so the
far side sends its in-dialog requests to the proxy. The token carries the
original contact and the two legs, sealed with AES-SIV (deterministic
authenticated encryption: the same contact always gives the same token, and
a token that was tampered with, or comes from another secret or another leg
set, does not decode). Pure: no I/O, no reactor.
"""
from __future__ import annotations

import base64
import binascii
import re
from typing import Any, Callable, Optional, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from zope.interface import implementer

from sipproxy.sip.bounded import remember
from sipproxy.interfaces import IContactRewriter, ILeg
from sipproxy.sip.keys import derive

__all__ = ["ContactTokens", "CallableRewriter"]

_TOKEN_RE = re.compile(r"b[A-Za-z2-7]{20,}\Z")
_CACHE_LIMIT = 20000


@implementer(IContactRewriter)
class ContactTokens:
    """Encodes contacts into tokens bound to a leg pair and decodes them.

    @param secret: the proxy secret (see L{sipproxy.app.secret}).
    @param legs: the dispatcher's leg list (read when used, so legs bound to
        port 0 count with their real port).
    """

    def __init__(self, secret: bytes, legs: Sequence[Any]) -> None:
        self._cipher = AESSIV(derive(secret, "contact-token", 64))
        self._legs = legs
        self._encoded: dict[tuple[str, int, int, bytes], str] = {}
        self._decoded: dict[tuple[str, bytes], Optional[tuple[str, int, int]]] = {}

    def _leg_dictionary(self) -> bytes:
        """What the token is bound to: the whole set of legs, in order."""
        return "|".join(leg.key for leg in self._legs).encode()

    # token level -------------------------------------------------------------
    def encode(self, contact: str, incoming: int, outgoing: int) -> str:
        """C{b<base32>} sealing the contact and the two leg indices."""
        legs = self._leg_dictionary()
        key = (contact, incoming, outgoing, legs)
        token = self._encoded.get(key)
        if token is None:
            plain = bytes((incoming, outgoing)) + contact.encode("utf-8", "surrogateescape")
            sealed = self._cipher.encrypt(plain, [legs])
            token = "b" + base64.b32encode(sealed).decode("ascii").rstrip("=")
            remember(self._encoded, key, token, _CACHE_LIMIT)
        return token

    def decode(self, token: str) -> Optional[tuple[str, int, int]]:
        """(contact, incoming index, outgoing index), or None for anything
        that is not a valid token of ours (fail closed)."""
        if not _TOKEN_RE.match(token):
            return None
        legs = self._leg_dictionary()
        key = (token, legs)
        if key in self._decoded:
            return self._decoded[key]
        body = token[1:].upper()
        result = None
        try:
            sealed = base64.b32decode(body + "=" * (-len(body) % 8))
            plain = self._cipher.decrypt(sealed, [legs])
            if len(plain) >= 2 and max(plain[0], plain[1]) < len(self._legs):
                result = (plain[2:].decode("utf-8", "surrogateescape"), plain[0], plain[1])
        except (InvalidTag, binascii.Error, ValueError):
            result = None
        return remember(self._decoded, key, result, _CACHE_LIMIT)

    # IContactRewriter -------------------------------------------------------------
    def rewrite(self, contact: str, incoming_leg: ILeg, outgoing_leg: ILeg, force: bool = False) -> Optional[str]:
        """Restore a token that is travelling back the way it came; else
        seal C{contact}."""
        user, at, _ = contact.partition("@")
        if at and ";" not in user:
            decoded = self.decode(user)
            if decoded is not None:
                original, came_in, went_out = decoded
                if went_out == incoming_leg.index and came_in == outgoing_leg.index:
                    return original
        token = self.encode(contact, incoming_leg.index, outgoing_leg.index)
        return f"{token}@{outgoing_leg.sent_by}"

    def restore(self, user: str, incoming_leg: ILeg) -> Optional[tuple[str, Any]]:
        """The original contact behind a Request-URI user part, and the leg
        it was learned on (where the request must go), if the token is
        valid and arrives on the leg it was handed out on."""
        decoded = self.decode(user)
        if decoded is None:
            return None
        original, came_in, went_out = decoded
        handed_out_on = self._legs[went_out]
        if handed_out_on is not incoming_leg and handed_out_on.contact != incoming_leg.contact:
            return None
        return original, self._legs[came_in]


@implementer(IContactRewriter)
class CallableRewriter:
    """Adapts a plain function, as Net::SIP's C{rewrite_contact} callback:
    C{fn(contact, incoming_leg, outgoing_leg, force)} returns the new
    C{user@host...} or None; for a Request-URI it is called with
    C{outgoing_leg=None} and returns the original contact, or
    C{(contact, leg)} to also pick the leg to send through."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self._fn = fn

    def rewrite(self, contact: str, incoming_leg: ILeg, outgoing_leg: ILeg, force: bool = False) -> Optional[str]:
        return self._fn(contact, incoming_leg, outgoing_leg, force)

    def restore(self, user: str, incoming_leg: ILeg) -> Optional[tuple[str, Any]]:
        result = self._fn(user, incoming_leg, None, False)
        if result is None:
            return None
        if isinstance(result, tuple):
            return result[0], result[1]
        return result, None
