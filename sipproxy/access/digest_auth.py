"""Digest authentication for requests (RFC 3261 22, RFC 7616, RFC 8760),
after Net::SIP's Authorize.

Where Net::SIP never checks its nonce (any nonce, replayable, and C{nc}
taken as 1), this one issues stateless nonces (a timestamp and random
bytes sealed with an HMAC of the proxy secret, so every node sharing the
secret can verify them), refuses forged ones, answers expired ones with
C{stale=true}, and remembers which C{nc} values of each nonce it has seen,
so a replayed request is refused. A retransmission (same Via branch,
CSeq and method) is not a replay: a stateless element sees every UDP
retransmission and must treat it like the original. The replay memory is
per process; nodes sharing the secret each keep their own.

Challenges offer SHA-256 and MD5 (RFC 8760: most preferred first), each
with C{qop="auth"}; an answer without qop (RFC 2069) is not accepted.

L{Users} reads the users file: C{user:realm:HA1} lines as C{htdigest}
writes them (32 hex digits for MD5, 64 for SHA-256) or C{user:password}.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import struct
from urllib.parse import unquote
from collections import OrderedDict
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

from twisted.internet.interfaces import IReactorTime
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred

from zope.interface import implementer

from sipproxy.observe.logsafe import SafeLogger
from sipproxy.observe.logfields import message_fields
from sipproxy.access.login_limit import FailedLogins
from sipproxy.interfaces import ICredentialStore, IDispatcher, ILeg, IReceiver
from sipproxy.registrar.location import WallClock
from sipproxy.sip.digest import ALGORITHMS, digest_response, ha1, parse_credentials
from sipproxy.sip.message import Message, Request
from sipproxy.sip.stateless import is_ack_to_own_answer
from sipproxy.sip.keys import derive
from sipproxy.sip.uri import URIError, parse_uri, uri_equal

__all__ = [
    "ALGORITHMS",
    "Authorize",
    "Nonces",
    "Users",
    "UsersFileError",
    "ha1",
    "digest_response",
    "parse_credentials",
    "FromIsRealm",
    "FromIsAuthUser",
    "ToIsFrom",
    "ToIsAuthUser",
]

log = SafeLogger()

_HEX_LENGTH = {32: "MD5", 64: "SHA-256"}


# -- users ----------------------------------------------------------------------------------
class UsersFileError(ValueError):
    """A users file line that cannot be used; names the file and line."""

    def __init__(self, source: str, line: int, reason: str) -> None:
        super().__init__(f"{source}, line {line}: {reason}")
        self.source = source
        self.line = line
        self.reason = reason


_HA1_LINE = re.compile(r"([^:]+):([^:]*):([0-9A-Fa-f]+)\Z")


@implementer(ICredentialStore)
class Users:
    """Users and their secrets, in memory.

    @param passwords: user to password (HA1s derived for any realm and
        algorithm).
    @param ha1s: (user, realm, algorithm) to hex HA1.
    """

    def __init__(self, passwords: Optional[Mapping[str, str]] = None,
                 ha1s: Optional[Mapping[tuple[str, str, str], str]] = None) -> None:
        self.passwords = dict(passwords or {})
        self.ha1s = {(u, r, a.upper()): h.lower() for (u, r, a), h in (ha1s or {}).items()}

    def get_ha1(self, user: str, realm: str, algorithm: str) -> Optional[str]:
        algorithm = algorithm.upper()
        password = self.passwords.get(user)
        if password is not None and algorithm in ALGORITHMS:
            return ha1(user, realm, password, algorithm)
        return self.ha1s.get((user, realm, algorithm))

    def __contains__(self, user: str) -> bool:
        return user in self.passwords or any(u == user for u, _, _ in self.ha1s)

    def __len__(self) -> int:
        return len(set(self.passwords) | {u for u, _, _ in self.ha1s})

    @classmethod
    def parse(cls, lines: Iterable[str], realm: Optional[str] = None, source: str = "users file") -> "Users":
        """Read C{user:realm:HA1} and C{user:password} lines (blank lines
        and C{#} comments skipped).

        @param realm: if given, an HA1 line for another realm is an error
            (it could never match).
        @raise UsersFileError: for the first bad line.
        """
        users = cls()
        seen: dict[tuple[str, str], int] = {}
        for number, raw in enumerate(lines, 1):
            line = raw.rstrip("\r\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if line != line.strip():
                raise UsersFileError(source, number, "leading or trailing white space")
            m = _HA1_LINE.match(line)
            fields = line.split(":")
            if m is not None and len(m.group(3)) in _HEX_LENGTH:
                user, line_realm, digest = m.groups()
                algorithm = _HEX_LENGTH[len(digest)]
                if realm is not None and line_realm != realm:
                    raise UsersFileError(source, number, f"realm {line_realm!r} is not the proxy's realm {realm!r}")
                kind = (user, algorithm)
                users.ha1s[(user, line_realm, algorithm)] = digest.lower()
            elif len(fields) == 3 and re.fullmatch(r"[0-9A-Fa-f]{8,}", fields[2]):
                raise UsersFileError(source, number, f"HA1 has {len(fields[2])} hex digits, want 32 (MD5) or 64 "
                                                     "(SHA-256)")
            elif len(fields) >= 2:
                user, password = line.split(":", 1)
                if not password:
                    raise UsersFileError(source, number, f"empty password for user {user!r}")
                kind = (user, "password")
                users.passwords[user] = password
            else:
                raise UsersFileError(source, number, "want user:password or user:realm:HA1")
            if not user or any(c in user for c in ' \t"'):
                raise UsersFileError(source, number, f"bad user name {user!r}")
            if kind in seen:
                raise UsersFileError(source, number, f"user {user!r} again (first on line {seen[kind]})")
            seen[kind] = number
        return users

    @classmethod
    def from_file(cls, path: str, realm: Optional[str] = None) -> "Users":
        """L{parse} a file; an unreadable file raises L{UsersFileError}
        (line 0)."""
        try:
            with open(path, encoding="utf-8") as f:
                return cls.parse(f.read().splitlines(), realm, path)
        except OSError as e:
            raise UsersFileError(path, 0, f"cannot read: {e.strerror}") from None
        except UnicodeDecodeError:
            raise UsersFileError(path, 0, "not UTF-8 text") from None


# -- nonces ---------------------------------------------------------------------------------
class Nonces:
    """Stateless nonces and the memory of used C{nc} values.

    A nonce is base64url(issue time, 8 random bytes, HMAC-SHA256 over both
    and the realm, cut to 12 bytes). It is valid for C{lifetime} seconds;
    C{max_tracked} bounds the replay memory (when it overflows, the oldest
    nonces are forgotten and from then on answered as stale).
    """

    def __init__(self, secret: bytes, clock: IReactorTime, lifetime: float = 300.0, max_tracked: int = 50000) -> None:
        self.key = derive(secret, "digest-nonce")
        self.clock = clock
        self.lifetime = lifetime
        self.max_tracked = max_tracked
        self._used: "OrderedDict[str, tuple[float, dict[int, str]]]" = OrderedDict()
        self._floor = 0.0  # nonces issued at or before this and not tracked are unknown

    def _mac(self, body: bytes, realm: str) -> bytes:
        return hmac.new(self.key, body + realm.encode("utf-8", "surrogateescape"), hashlib.sha256).digest()[:12]

    def make(self, realm: str) -> str:
        body = struct.pack(">d", self.clock.seconds()) + os.urandom(8)
        return base64.urlsafe_b64encode(body + self._mac(body, realm)).decode("ascii").rstrip("=")

    def issued(self, nonce: str, realm: str) -> Optional[float]:
        """When a nonce of ours was made, or None if it is not ours."""
        try:
            raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except (ValueError, TypeError):
            return None
        if len(raw) != 28:
            return None
        body, mac = raw[:16], raw[16:]
        if not hmac.compare_digest(mac, self._mac(body, realm)):
            return None
        return struct.unpack(">d", body[:8])[0]

    def fresh(self, issued: float) -> bool:
        now = self.clock.seconds()
        return issued <= now + 5 and now - issued < self.lifetime

    def use(self, nonce: str, issued: float, nc: int, request_id: str) -> Optional[str]:
        """Record that C{nc} of C{nonce} authenticated C{request_id}.

        @return: None when fine (first use, or a retransmission of the same
            request); C{"replay"} when that nc served another request;
            C{"stale"} when the nonce is too old to be remembered.
        """
        self._expire()
        entry = self._used.get(nonce)
        if entry is None:
            if issued <= self._floor:
                return "stale"
            entry = (issued, {})
            self._used[nonce] = entry
            while len(self._used) > self.max_tracked:
                _, (old_issued, _) = self._used.popitem(last=False)
                self._floor = max(self._floor, old_issued)
        seen = entry[1]
        previous = seen.get(nc)
        if previous is not None:
            return None if previous == request_id else "replay"
        if len(seen) >= 256:
            return "stale"  # a client that used one nonce this often gets a new one
        seen[nc] = request_id
        return None

    def _expire(self) -> None:
        horizon = self.clock.seconds() - self.lifetime
        used = self._used
        while used:
            nonce, (issued, _) = next(iter(used.items()))
            if issued >= horizon:
                break
            del used[nonce]

    def __len__(self) -> int:
        return len(self._used)


# -- filters (Net::SIP's Authorize::*) ----------------------------------------------
def _from_uri(packet: Request) -> Any:
    addr = packet.name_addr("from")
    return addr.uri if addr is not None else None


def FromIsRealm(packet: Request, leg: ILeg, addr: tuple[str, int], user: str, realm: str) -> bool:
    """The From domain is the realm or a true subdomain of it."""
    try:
        uri = _from_uri(packet)
    except URIError:
        return False
    if uri is None or not uri.is_sip:
        return False
    host, realm = uri.host.lower(), realm.lower()
    return host == realm or host.endswith("." + realm)


def FromIsAuthUser(packet: Request, leg: ILeg, addr: tuple[str, int], user: str, realm: str) -> bool:
    """The From user is the authenticated user (case-insensitive)."""
    try:
        uri = _from_uri(packet)
    except URIError:
        return False
    return uri is not None and (uri.user or "").lower() == user.lower()


def ToIsFrom(packet: Request, leg: ILeg, addr: tuple[str, int], user: str, realm: str) -> bool:
    """To and From name the same URI (a user registering itself)."""
    try:
        to, frm = packet.name_addr("to"), packet.name_addr("from")
    except URIError:
        return False
    if to is None or frm is None:
        return False
    a, b = to.uri, frm.uri
    if a.is_sip and b.is_sip:
        return (a.scheme == b.scheme and (a.user or "").lower() == (b.user or "").lower()
                and a.host.lower() == b.host.lower() and a.port == b.port)
    return str(a).lower() == str(b).lower()


def ToIsAuthUser(packet: Request, leg: ILeg, addr: tuple[str, int], user: str, realm: str) -> bool:
    """The To user part is the authenticated user, exactly: user parts are
    case-sensitive (RFC 3261 19.1.4), so C{bob} may not bind C{Bob}. What a
    registrar asks of a REGISTER: a user binds its own address-of-record."""
    try:
        to = packet.name_addr("to")
    except URIError:
        return False
    return to is not None and to.uri.is_sip and unquote(to.uri.user or "") == user


_FILTERS = {"FromIsRealm": FromIsRealm, "FromIsAuthUser": FromIsAuthUser, "ToIsFrom": ToIsFrom,
            "ToIsAuthUser": ToIsAuthUser}

FilterChain = Sequence[Sequence[Callable[..., Any]]]


def _compile_filter(spec: Mapping[str, Any]) -> dict[str, FilterChain]:
    """Net::SIP's filter form: C{{METHOD: chain}}, a chain being one
    element or a list whose items are alternatives (OR), each item one
    element or a list of elements that must all pass (AND); elements are
    filter names or callables C{(packet, leg, addr, user, realm)}. C{*}
    stands for the methods not listed."""
    compiled: dict[str, FilterChain] = {}
    for method, chain in spec.items():
        alternatives = chain if isinstance(chain, (list, tuple)) else [chain]
        out = []
        for alternative in alternatives:
            elements = alternative if isinstance(alternative, (list, tuple)) else [alternative]
            resolved = []
            for element in elements:
                if isinstance(element, str):
                    if element not in _FILTERS:
                        raise ValueError(f"unknown filter {element!r} (known: {', '.join(_FILTERS)})")
                    element = _FILTERS[element]
                elif not callable(element):
                    raise TypeError(f"filter element {element!r} is neither a name nor callable")
                resolved.append(element)
            out.append(resolved)
        compiled[method.upper()] = out
    return compiled


# -- the receiver --------------------------------------------------------------------------
_OK, _STALE, _BAD, _REPLAY, _URI_MISMATCH = "ok", "stale", "bad", "replay", "uri-mismatch"
_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~+-@")


def _log_safe(text: str) -> str:
    """C{text} with everything but letters, digits and C{._~+-@}
    percent-encoded: a user name from the network cannot forge a field,
    a quote or a line of the failure log."""
    if all(c in _SAFE for c in text):
        return text
    return "".join(c if c in _SAFE else "".join(f"%{b:02X}" for b in c.encode("utf-8", "surrogateescape"))
                   for c in text)


@implementer(IReceiver)
class Authorize:
    """Let a request through only with valid digest credentials.

    @param dispatcher: challenges go out through its C{respond}.
    @param users: an L{ICredentialStore} (or a dict user to password).
    @param realm: the realm challenged for; credentials for other realms
        are left in the request.
    @param secret: seals the nonces (use the proxy secret, shared by the
        nodes); or pass C{nonces}.
    @param clock: C{IReactorTime}, for nonce times.
    @param i_am_proxy: 407 with Proxy-Authenticate instead of 401 with
        WWW-Authenticate.
    @param opaque: if set, sent in challenges and required in answers.
    @param filter: checks after a successful authentication (see
        L{_compile_filter}); a failure gets 403.
    @param algorithms: offered, most preferred first.
    @param failures: a L{FailedLogins} counting failures per source IP
        (share one between authorizers); a blocked IP's requests are
        dropped. None: no limit.
    """

    def __init__(
        self,
        dispatcher: IDispatcher,
        users: Union[ICredentialStore, Mapping[str, str]],
        realm: str = "sipproxy",
        secret: Optional[bytes] = None,
        clock: Optional[IReactorTime] = None,
        i_am_proxy: bool = False,
        opaque: Optional[str] = None,
        filter: Optional[Mapping[str, Any]] = None,
        algorithms: Sequence[str] = ("MD5", "SHA-256"),
        nonces: Optional[Nonces] = None,
        nonce_lifetime: float = 300.0,
        failures: Optional[FailedLogins] = None,
    ) -> None:
        if not ICredentialStore.providedBy(users):
            users = Users(passwords=users)  # type: ignore[arg-type]
        for algorithm in algorithms:
            if algorithm.upper() not in ALGORITHMS:
                raise ValueError(f"unsupported digest algorithm {algorithm!r}")
        if nonces is None:
            if clock is None:
                clock = WallClock()
            nonces = Nonces(secret if secret is not None else os.urandom(32), clock, nonce_lifetime)
        self.dispatcher = dispatcher
        self.users = users
        self.realm = realm
        self.opaque = opaque
        self.i_am_proxy = i_am_proxy
        self.algorithms = tuple(a.upper() for a in algorithms)
        self.nonces = nonces
        self.failures = failures
        self.filter = _compile_filter(filter) if filter else {}
        # counters read by sipproxy.app.metrics
        self.challenges = 0
        #: failed authentications by reason (forbidden, uri-mismatch, replay, bad-credentials)
        self.failed: dict[str, int] = {}
        #: requests dropped because their source is blocked after failures
        self.shut_out = 0
        if i_am_proxy:
            self.request_header, self.challenge_header, self.code = "proxy-authorization", "Proxy-Authenticate", 407
        else:
            self.request_header, self.challenge_header, self.code = "authorization", "WWW-Authenticate", 401

    # -- IReceiver --------------------------------------------------------------------
    def receive(self, packet: Message, leg: ILeg, addr: tuple[str, int]) -> Any:
        if not isinstance(packet, Request):
            return False
        if self.failures is not None and self.failures.blocked(addr[0]):
            self.shut_out += 1
            return True  # shut out after too many failures: dropped, no answer
        if packet.method == "ACK":
            # never challenged (RFC 3261 22.1); one answering our own
            # challenge ends here
            return is_ack_to_own_answer(packet)
        if packet.method == "CANCEL":
            return False  # cannot be challenged; it follows its INVITE
        keep: list[str] = []
        mine: list[dict[str, str]] = []
        for value in packet.get_all(self.request_header):
            scheme, params = parse_credentials(value)
            if scheme == "digest" and params.get("realm") == self.realm:
                mine.append(params)
            else:
                keep.append(value)
        if not mine:
            return self._challenge(packet, leg, addr, stale=False)
        checks = [self._check(params, packet) for params in mine]
        if any(isinstance(c, Deferred) for c in checks):
            d = gatherResults([maybeDeferred(lambda c=c: c) for c in checks], consumeErrors=True)
            d.addCallback(self._decide, packet, leg, addr, keep)
            return d
        return self._decide(checks, packet, leg, addr, keep)

    def _decide(self, checks: list, packet: Request, leg: ILeg, addr: tuple[str, int], keep: list[str]) -> Any:
        for outcome, user in checks:
            if outcome == _OK:
                if not self._allowed(packet, leg, addr, user):
                    self._failed(packet, addr, user, "forbidden", leg)
                    self.dispatcher.respond(packet, 403, "Forbidden", leg, addr)
                    return True
                packet.set_all(self.request_header, keep)
                return False
        outcomes = {outcome for outcome, _ in checks}
        user = next((u for _, u in checks if u), None)
        if _URI_MISMATCH in outcomes:
            self._failed(packet, addr, user, "uri-mismatch", leg)
            self.dispatcher.respond(packet, 400, "Bad Request (digest uri is not the Request-URI)", leg, addr)
            return True
        if _STALE not in outcomes:  # right password with an old nonce is no failure
            self._failed(packet, addr, user, "replay" if _REPLAY in outcomes else "bad-credentials", leg)
        return self._challenge(packet, leg, addr, stale=_STALE in outcomes)

    def _failed(self, packet: Request, addr: tuple[str, int], user: Optional[str], reason: str,
                leg: Optional[ILeg] = None) -> None:
        """One log line per failed authentication, in the stable format
        contrib/fail2ban/filter.d/sipproxy.conf reads (change both
        together); then count it against the source IP."""
        log.warn('auth failed: user="{user_text}" realm="{realm_text}" ip={ip} port={port} method={method_text} '
                 "reason={reason}", user_text=_log_safe(user or ""), realm_text=_log_safe(self.realm), ip=addr[0],
                 port=addr[1], method_text=_log_safe(packet.method), reason=reason, user=user, realm=self.realm,
                 **message_fields(packet, addr, leg))
        self.failed[reason] = self.failed.get(reason, 0) + 1
        if self.failures is not None:
            self.failures.failed(addr[0])

    def _allowed(self, packet: Request, leg: ILeg, addr: tuple[str, int], user: str) -> bool:
        chain = self.filter.get(packet.method) or self.filter.get("*")
        if not chain:
            return True
        return any(all(check(packet, leg, addr, user, self.realm) for check in alternative) for alternative in chain)

    def _challenge(self, packet: Request, leg: ILeg, addr: tuple[str, int], stale: bool) -> bool:
        nonce = self.nonces.make(self.realm)
        headers = []
        algorithms = self.algorithms
        if leg is not None and leg.proto in ("ws", "wss") and "MD5" in algorithms:
            # browsers' SIP libraries know only MD5, and JsSIP reads only the
            # last challenge: over a WebSocket, offer MD5 alone
            algorithms = ("MD5",)
        for algorithm in algorithms:
            value = f'Digest realm="{self.realm}", nonce="{nonce}", algorithm={algorithm}, qop="auth"'
            if self.opaque is not None:
                value += f', opaque="{self.opaque}"'
            if stale:
                value += ", stale=true"
            headers.append((self.challenge_header, value))
        reason = "Unauthorized" if self.code == 401 else "Proxy Authentication Required"
        self.challenges += 1
        self.dispatcher.respond(packet, self.code, reason, leg, addr, tuple(headers))
        return True

    # -- checking one set of credentials -------------------------------------------------
    def _check(self, params: dict[str, str], packet: Request) -> Any:
        user, nonce, uri, response = (params.get(k) for k in ("username", "nonce", "uri", "response"))
        algorithm = (params.get("algorithm") or "MD5").upper()
        qop = params.get("qop")
        nc_text, cnonce = params.get("nc"), params.get("cnonce")
        if not user or not nonce or uri is None or not response or algorithm not in self.algorithms:
            return _BAD, user
        if qop is None or qop.lower() != "auth" or not cnonce or not nc_text or not re.fullmatch(r"[0-9A-Fa-f]{8}",
                                                                                                 nc_text):
            return _BAD, user
        if self.opaque is not None and params.get("opaque") != self.opaque:
            return _BAD, user
        issued = self.nonces.issued(nonce, self.realm)
        if issued is None:
            return _BAD, user
        if not self._same_uri(uri, packet.uri) and not self._names_us(uri):
            return _URI_MISMATCH, user
        secret = self.users.get_ha1(user, self.realm, algorithm)
        if isinstance(secret, Deferred):
            return secret.addCallback(self._compare, params, packet, issued, algorithm)
        return self._compare(secret, params, packet, issued, algorithm)

    def _compare(self, secret: Optional[str], params: dict[str, str], packet: Request, issued: float,
                 algorithm: str) -> tuple[str, Optional[str]]:
        user = params["username"]
        if not secret:
            return _BAD, user
        expected = digest_response(algorithm, secret.lower(), params["nonce"], packet.method, params["uri"],
                                   params["nc"], params["cnonce"], "auth")
        if not hmac.compare_digest(expected, params["response"].lower()):
            return _BAD, user
        if not self.nonces.fresh(issued):
            return _STALE, user  # right password, old nonce (RFC 7616 3.3)
        # a retransmission is the same request byte for byte: the same
        # branch, CSeq and method with another Contact or Expires is not
        via = packet.top_via()
        request_id = (f"{via.branch if via else ''} {packet.cseq[0]} {packet.method} "
                      f"{hashlib.sha256(bytes(packet)).hexdigest()[:32]}")
        problem = self.nonces.use(params["nonce"], issued, int(params["nc"], 16), request_id)
        if problem == "replay":
            return _REPLAY, user
        if problem == "stale":
            return _STALE, user
        return _OK, user

    def _names_us(self, digest_uri: str) -> bool:
        """Some clients (sipp) put the address they sent to in the digest
        uri instead of the Request-URI: accept one of our own addresses."""
        try:
            uri = parse_uri(digest_uri)
        except URIError:
            return False
        return uri.is_sip and uri.user is None and self.dispatcher.is_local(uri.host, uri.port)

    @staticmethod
    def _same_uri(digest_uri: str, request_uri: str) -> bool:
        if digest_uri == request_uri:
            return True
        try:
            return uri_equal(parse_uri(digest_uri), parse_uri(request_uri))
        except URIError:
            return False
