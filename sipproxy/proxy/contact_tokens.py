"""Contact rewriting with tokens (Net::SIP's scheme, with real crypto).

When a packet crosses from one leg to another, the proxy replaces each
Contact URI C{sip:user@host...} with C{sip:b<token>@<outgoing leg>}, so the
far side sends its in-dialog requests to the proxy. The token carries the
original contact and the two legs, sealed with AES-SIV (deterministic
authenticated encryption: the same contact always gives the same token, and
a token that was tampered with, or comes from another secret or another leg
set, does not decode). Pure: no I/O, no reactor.

A token is not a relay ticket (issue 12): it carries an expiry and a kind.

- A I{dialog} token (the Contact of an INVITE, a 200, a SUBSCRIBE...) is
  honoured only for requests inside a dialog (a To tag), never for a new
  call, and only until it expires: C{dialog_lifetime} seconds (default
  12 hours) after the Contact last passed through the proxy. Every target
  refresh (re-INVITE, UPDATE, and their answers) mints it again with a new
  expiry, so only a call that outlives the lifetime with no refresh loses
  the way back (its BYE gets 404; the phones end the call anyway).
- A I{registration} token (the Contact of a REGISTER the proxy forwards to
  another registrar, or of its 200) may start new requests, for as long as
  the registration asked for (its expires, default 3600 s) plus a
  rounding step.

Expiry times are rounded up to C{STEP} seconds, so a Contact gives the same
token for a few minutes and the proxy's cache of rewritten Contacts keeps
working; tokens stay bound to the leg pair they were made for.
"""
from __future__ import annotations

import base64
import binascii
import re
import struct
from typing import Any, Callable, NamedTuple, Optional, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from zope.interface import implementer

from twisted.internet.interfaces import IReactorTime

from sipproxy.interfaces import IContactRewriter, ILeg
from sipproxy.registrar.location import WallClock
from sipproxy.sip.bounded import BoundedCache
from sipproxy.sip.keys import derive

__all__ = ["ContactTokens", "CallableRewriter", "Token", "DEFAULT_DIALOG_LIFETIME", "DEFAULT_REGISTRATION_LIFETIME",
           "STEP"]

_TOKEN_RE = re.compile(r"b[A-Za-z2-7]{20,}\Z")
_CACHE_LIMIT = 20000
_UNKNOWN = object()
#: seconds a dialog token is good for after its Contact last passed
DEFAULT_DIALOG_LIFETIME = 12 * 3600
#: seconds a registration token is good for when the REGISTER names none
DEFAULT_REGISTRATION_LIFETIME = 3600
#: expiry times are rounded up to this many seconds
STEP = 300
_REGISTRATION = 1
_HEAD = struct.Struct(">BBBI")  # incoming leg, outgoing leg, kind, expires (seconds since the epoch)


class Token(NamedTuple):
    """What a token seals."""

    contact: str
    incoming: int
    outgoing: int
    registration: bool
    expires: int


@implementer(IContactRewriter)
class ContactTokens:
    """Encodes contacts into tokens bound to a leg pair and decodes them.

    @param secret: the proxy secret (see L{sipproxy.app.secret}).
    @param legs: the dispatcher's leg list (read when used, so legs bound to
        port 0 count with their real port).
    """

    def __init__(self, secret: bytes, legs: Sequence[ILeg], clock: Optional[IReactorTime] = None,
                 dialog_lifetime: float = DEFAULT_DIALOG_LIFETIME) -> None:
        self._cipher = AESSIV(derive(secret, "contact-token", 64))
        self._legs = legs
        #: the wall clock only for code that builds tokens without a reactor
        self.clock = clock if clock is not None else WallClock()
        self.dialog_lifetime = dialog_lifetime
        # sized by the contact or token text: a long one is not kept
        self._encoded = BoundedCache("Contact tokens made", _CACHE_LIMIT)
        self._decoded = BoundedCache("Contact tokens read", _CACHE_LIMIT)

    def _leg_dictionary(self) -> bytes:
        """What the token is bound to: the whole set of legs, in order."""
        return "|".join(leg.key for leg in self._legs).encode()

    def expiry(self, lifetime: float, now: Optional[float] = None) -> int:
        """C{now + lifetime}, rounded up to L{STEP} seconds."""
        now = self.clock.seconds() if now is None else now
        return -(-int(now + lifetime) // STEP) * STEP

    # token level -------------------------------------------------------------
    def encode(self, contact: str, incoming: int, outgoing: int, expires: Optional[int] = None,
               registration: bool = False) -> str:
        """C{b<base32>} sealing the contact, the two leg indices, the kind
        and the expiry (a dialog token's by default)."""
        if expires is None:
            expires = self.expiry(self.dialog_lifetime)
        legs = self._leg_dictionary()
        kind = _REGISTRATION if registration else 0
        key = (contact, incoming, outgoing, expires, kind)
        token = self._encoded.get(key)
        if token is None:
            plain = _HEAD.pack(incoming, outgoing, kind, expires) + contact.encode("utf-8", "surrogateescape")
            sealed = self._cipher.encrypt(plain, [legs])
            token = "b" + base64.b32encode(sealed).decode("ascii").rstrip("=")
            self._encoded.store(key, token, len(contact))
        return token

    def decode(self, token: str) -> Optional[Token]:
        """The L{Token} sealed in C{token}, or None for anything that is not
        a valid token of ours (fail closed). Expiry is not checked here."""
        if not _TOKEN_RE.match(token):
            return None
        legs = self._leg_dictionary()
        key = (token, legs)
        known = self._decoded.get(key, _UNKNOWN)  # None is a result: "not ours"
        if known is not _UNKNOWN:
            return known  # type: ignore[return-value]
        body = token[1:].upper()
        result = None
        try:
            sealed = base64.b32decode(body + "=" * (-len(body) % 8))
            plain = self._cipher.decrypt(sealed, [legs])
            if len(plain) >= _HEAD.size:
                incoming, outgoing, kind, expires = _HEAD.unpack_from(plain)
                if max(incoming, outgoing) < len(self._legs):
                    result = Token(plain[_HEAD.size:].decode("utf-8", "surrogateescape"), incoming, outgoing,
                                   bool(kind & _REGISTRATION), expires)
        except (InvalidTag, binascii.Error, ValueError):
            result = None
        return self._decoded.store(key, result, len(token))

    # IContactRewriter -------------------------------------------------------------
    def rewrite(self, contact: str, incoming_leg: ILeg, outgoing_leg: ILeg, force: bool = False,
                expires: Optional[int] = None, registration: bool = False) -> Optional[str]:
        """Restore a token that is travelling back the way it came; else
        seal C{contact} (until C{expires}, by default a dialog lifetime from
        now)."""
        user, at, _ = contact.partition("@")
        if at and ";" not in user:
            decoded = self.decode(user)
            if decoded is not None:
                original, came_in, went_out, _, _ = decoded
                if went_out == incoming_leg.index and came_in == outgoing_leg.index:
                    return original
        token = self.encode(contact, incoming_leg.index, outgoing_leg.index, expires, registration)
        return f"{token}@{outgoing_leg.sent_by}"

    def restore(self, user: str, incoming_leg: ILeg, initial: bool = False) -> Optional[tuple[str, ILeg]]:
        """The original contact behind a Request-URI user part, and the leg
        it was learned on (where the request must go), if the token is
        valid, unexpired, arrives on the leg it was handed out on, and (for
        a request outside a dialog, C{initial}) is a registration token."""
        decoded = self.decode(user)
        if decoded is None:
            return None
        contact, came_in, went_out, registration, expires = decoded
        if (initial and not registration) or expires <= self.clock.seconds():
            return None
        handed_out_on = self._legs[went_out]
        if handed_out_on is not incoming_leg and handed_out_on.contact != incoming_leg.contact:
            return None
        return contact, self._legs[came_in]


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

    def restore(self, user: str, incoming_leg: ILeg, initial: bool = False) -> Optional[tuple[str, Any]]:
        result = self._fn(user, incoming_leg, None, False)
        if result is None:
            return None
        if isinstance(result, tuple):
            return result[0], result[1]
        return result, None
