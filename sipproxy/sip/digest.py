"""Digest arithmetic and header parsing (RFC 7616, RFC 8760, RFC 3261 22).

Shared by the server side (C{sipproxy.access.digest_auth}, which issues
challenges and checks answers) and the client side
(L{sipproxy.sip.client_auth}, which answers challenges): both compute the
same hashes, so the formula lives once, here.

API::

    ALGORITHMS                        algorithm name -> hash constructor
    ha1(user, realm, password, algorithm="MD5") -> hex
    digest_response(algorithm, ha1_hex, nonce, method, uri, nc, cnonce, qop) -> hex
    parse_credentials(value) -> (scheme, {param: value})   Authorization values
    parse_challenge(value) -> (scheme, {param: value})     WWW-/Proxy-Authenticate values
"""
from __future__ import annotations

import hashlib
import re
from typing import Any, Callable, Optional

__all__ = ["ALGORITHMS", "ha1", "digest_response", "parse_credentials", "parse_challenge"]

#: Digest algorithms (RFC 8760 names) to their hash functions.
ALGORITHMS: dict[str, Callable[[bytes], Any]] = {"SHA-256": hashlib.sha256, "MD5": hashlib.md5}


def _h(algorithm: str, text: str) -> str:
    return ALGORITHMS[algorithm](text.encode("utf-8", "surrogateescape")).hexdigest()


def ha1(user: str, realm: str, password: str, algorithm: str = "MD5") -> str:
    """H(user:realm:password), hex."""
    return _h(algorithm, f"{user}:{realm}:{password}")


def digest_response(algorithm: str, ha1_hex: str, nonce: str, method: str, uri: str, nc: Optional[str] = None,
                    cnonce: Optional[str] = None, qop: Optional[str] = None) -> str:
    """The C{response} value a client computes (RFC 7616 3.4.1)."""
    ha2 = _h(algorithm, f"{method}:{uri}")
    if qop:
        return _h(algorithm, f"{ha1_hex}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return _h(algorithm, f"{ha1_hex}:{nonce}:{ha2}")


# -- header values ---------------------------------------------------------------------
_PARAM_RE = re.compile(r'\s*([A-Za-z0-9_.!%*+`\'~-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,]*)\s*(?:,|\Z)', re.S)


def parse_credentials(value: str) -> tuple[str, dict[str, str]]:
    """C{Digest username="a", realm="b", ...} to ("digest", {name: value});
    parameter names in lower case, quotes and escapes removed. A value
    that is not C{scheme k=v, ...} gives its scheme and what could be read."""
    value = value.strip()
    scheme, _, rest = value.partition(" ")
    params: dict[str, str] = {}
    pos = 0
    rest = rest.strip()
    while pos < len(rest):
        m = _PARAM_RE.match(rest, pos)
        if m is None or m.end() == pos:
            break
        name, raw = m.group(1).lower(), m.group(2)
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        params.setdefault(name, raw)
        pos = m.end()
    return scheme.lower(), params


def parse_challenge(value: str) -> tuple[str, dict[str, str]]:
    """C{Digest realm="r", nonce="n", qop="auth,auth-int", ...} to
    ("digest", {name: value}). A challenge has the grammar of credentials
    (RFC 3261 25.1: C{challenge} and C{credentials} are both a scheme and
    comma-separated parameters), so it reads the same way."""
    return parse_credentials(value)
