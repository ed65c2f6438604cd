"""Answering digest challenges (RFC 3261 22.2, 22.3; RFC 7616; RFC 8760).

API::

    with_credentials(request, response, credentials) -> Request | None

C{response} is the 401 (WWW-Authenticate) or 407 (Proxy-Authenticate) our
C{request} got. The result is the request to send instead: a copy with
the CSeq number raised by one, a fresh Via branch (a new transaction),
and one Authorization (or Proxy-Authorization) value per challenged realm
we have credentials for; credentials for other realms that the request
already carried are kept (22.3: a request through two proxies answers
both), with their nonce count raised. None means: give up and hand the
401/407 to the user, because

  - no challenge names a realm we have credentials for, or offers an
    algorithm or qop we speak (MD5, SHA-256 and their -sess forms; qop
    auth or none), or
  - the request already answered this realm and the server did not say
    C{stale=true}: the password was refused, and answering again would
    loop forever (servers, this project's included, put a fresh nonce in
    every challenge, so the nonce alone cannot tell a retry from a loop).

C{credentials} is what Net::SIP takes as C{auth}: a (user, password)
pair for every realm, a dict realm -> (user, password), or a callable
realm -> (user, password) or None.

When several challenges name the same realm (RFC 8760: one per
algorithm, the server's preferred first) the first one we speak is
answered. The caller of an in-dialog request must move the dialog's local
CSeq to the new number (C{dialog.local_cseq = new.cseq[0]}).
"""
from __future__ import annotations

from typing import Callable, Mapping, Optional, Tuple, Union

from sipproxy.sip.digest import ALGORITHMS, digest_response, ha1, parse_challenge, parse_credentials
from sipproxy.sip.ids import new_branch, new_cnonce
from sipproxy.sip.message import Request, Response

__all__ = ["with_credentials", "Credentials", "lookup_credentials", "authorization_value"]

UserPassword = Tuple[str, str]
Credentials = Union[UserPassword, Mapping[str, UserPassword], Callable[[str], Optional[UserPassword]]]

_HEADERS = {401: ("www-authenticate", "Authorization"), 407: ("proxy-authenticate", "Proxy-Authorization")}


def lookup_credentials(credentials: Credentials, realm: str) -> Optional[UserPassword]:
    """The (user, password) C{credentials} give for C{realm}, or None."""
    if callable(credentials):
        found = credentials(realm)
    elif isinstance(credentials, Mapping):
        found = credentials.get(realm)
    else:
        found = credentials
    if found is None:
        return None
    user, password = found
    return str(user), str(password)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _speakable(params: Mapping[str, str]) -> Optional[tuple[str, Optional[str]]]:
    """(algorithm, qop) we answer a challenge with, or None if we cannot."""
    algorithm = params.get("algorithm", "MD5").upper()
    base = algorithm[:-5] if algorithm.endswith("-SESS") else algorithm
    if base not in ALGORITHMS:
        return None
    offered = params.get("qop")
    if offered is None:
        return algorithm, None
    qops = [q.strip().lower() for q in offered.split(",")]
    if "auth" not in qops:
        return None  # auth-int only: we do not hash bodies
    return algorithm, "auth"


def authorization_value(
    params: Mapping[str, str],
    user: str,
    password: str,
    method: str,
    uri: str,
    nc: int = 1,
    cnonce: Optional[str] = None,
) -> Optional[str]:
    """The credentials answering one parsed challenge, or None when its
    algorithm or qop is not one we speak."""
    speakable = _speakable(params)
    if speakable is None:
        return None
    algorithm, qop = speakable
    realm, nonce = params.get("realm", ""), params.get("nonce", "")
    base = algorithm[:-5] if algorithm.endswith("-SESS") else algorithm
    secret = ha1(user, realm, password, base)
    if qop is not None or algorithm != base:
        cnonce = cnonce or new_cnonce()
    if algorithm != base:
        secret = ALGORITHMS[base](f"{secret}:{nonce}:{cnonce}".encode("utf-8", "surrogateescape")).hexdigest()
    nc_text = f"{nc:08x}"
    if qop:
        response = digest_response(base, secret, nonce, method, uri, nc_text, cnonce, qop)
    else:
        response = digest_response(base, secret, nonce, method, uri)
    parts = [
        f"username={_quote(user)}",
        f"realm={_quote(realm)}",
        f"nonce={_quote(nonce)}",
        f"uri={_quote(uri)}",
        f"response={_quote(response)}",
    ]
    if "algorithm" in params:
        parts.append(f"algorithm={params['algorithm']}")
    if qop:
        parts += [f"qop={qop}", f"nc={nc_text}", f"cnonce={_quote(cnonce or '')}"]
    elif cnonce:
        parts.append(f"cnonce={_quote(cnonce)}")
    if "opaque" in params:
        parts.append(f"opaque={_quote(params['opaque'])}")
    return "Digest " + ", ".join(parts)


def _refreshed(value: str, credentials: Credentials, request: Request) -> str:
    """Credentials kept for another realm, made fit for the new request:
    with qop the nonce count goes up by one (a server that remembers
    counts, as sipproxy's Authorize does, refuses a count used by another
    request as a replay)."""
    scheme, params = parse_credentials(value)
    if scheme != "digest" or not params.get("qop") or "nc" not in params:
        return value
    found = lookup_credentials(credentials, params.get("realm", ""))
    try:
        nc = int(params["nc"], 16) + 1
    except ValueError:
        return value
    if found is None:
        return value
    challenge = {k: params[k] for k in ("realm", "nonce", "algorithm", "qop", "opaque") if k in params}
    return authorization_value(challenge, found[0], found[1], request.method, request.uri, nc) or value


def with_credentials(request: Request, response: Response, credentials: Credentials) -> Optional[Request]:
    """The request answering the challenges of C{response}, or None (see
    the module docstring)."""
    if response.code not in _HEADERS or request.method in ("ACK", "CANCEL"):
        return None
    challenge_name, answer_name = _HEADERS[response.code]
    previous: dict[str, dict[str, str]] = {}
    for value in request.get_all(answer_name):
        scheme, params = parse_credentials(value)
        if scheme == "digest" and "realm" in params:
            previous[params["realm"]] = params
    answers: dict[str, str] = {}
    for value in response.get_all(challenge_name):
        scheme, params = parse_challenge(value)
        realm = params.get("realm")
        if scheme != "digest" or realm is None or realm in answers or not params.get("nonce"):
            continue
        before = previous.get(realm)
        stale = params.get("stale", "").lower() == "true"
        if before is not None and not stale:
            continue  # this realm refused what we sent
        found = lookup_credentials(credentials, realm)
        if found is None:
            continue
        nc = 1
        if before is not None and before.get("nonce") == params["nonce"] and before.get("nc"):
            try:
                nc = int(before["nc"], 16) + 1
            except ValueError:
                nc = 1
        answer = authorization_value(params, found[0], found[1], request.method, request.uri, nc)
        if answer is not None:
            answers[realm] = answer
    if not answers:
        return None
    retry = request.copy()
    for name in _HEADERS.values():
        values = request.get_all(name[1])
        kept = [_refreshed(v, credentials, request) for v in values]
        if name[1] == answer_name:
            kept = [v for v in kept if parse_credentials(v)[1].get("realm") not in answers]
            kept += list(answers.values())
        if kept != values:
            retry.set_all(name[1], kept)
    number, method = request.cseq
    retry.set("cseq", f"{number + 1} {method}")
    via = retry.top_via()
    if via is not None:
        via.set_param("branch", new_branch())
        retry.set_top_via(via)
    return retry
