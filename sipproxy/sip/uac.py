"""Requests a user agent client builds (RFC 3261 8.1.1, 9.1, 12.2.1.1,
13.2.2.4, 17.1.1.3).

API::

    new_request(method, uri, from_, to, sent_by=..., ...) -> Request
        an out-of-dialog request: Request-URI, Via (fresh branch, rport),
        Max-Forwards 70, Route (the route set, loose or strict), From with
        a fresh tag, To, a fresh Call-ID, CSeq, Contact (INVITE, SUBSCRIBE,
        REFER), the body with Content-Type and Content-Length.
    add_via(request, sent_by, transport="UDP", branch=None) -> branch
        push our Via (for requests built without one, e.g. by a Dialog).
    apply_route_set(target, route_set) -> (request_uri, route_values)
        loose routing when the first route has ;lr, strict routing
        otherwise (12.2.1.1); shared with sipproxy.sip.dialog.
    outbound_route(proxy_uri) -> "<proxy;lr>"
        an outbound proxy as a preloaded loose route (8.1.2).
    create_ack(invite, response, dialog=None) -> Request
        non-2xx: the ACK of 17.1.1.3 (same branch; the INVITE client
        transaction sends it itself).
        2xx: the ACK of 13.2.2.4, a request of the dialog with a new
        branch and the INVITE's CSeq number, sent by the UAC core for every
        2xx copy (pass the Dialog when you have one; built from the INVITE
        and the 2xx otherwise).
    create_cancel(invite) -> Request       (9.1)

Builders return fresh L{Request} objects and never change their inputs.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Iterable, Optional, Sequence, TYPE_CHECKING

from sipproxy.sip.ids import new_branch, new_call_id, new_tag
from sipproxy.sip.message import Request, Response, our_via
from sipproxy.sip.name_addrs import tag_of, with_new_tag
from sipproxy.sip.uri import URIError, parse_name_addr, parse_uri, split_host_port

if TYPE_CHECKING:  # pragma: no cover
    from sipproxy.sip.dialog import Dialog

__all__ = [
    "new_request",
    "add_via",
    "apply_route_set",
    "outbound_route",
    "create_ack",
    "create_cancel",
    "with_tag",
    "MAX_FORWARDS",
]

MAX_FORWARDS = 70

#: Methods whose request carries a Contact (RFC 3261 8.1.1.8, RFC 3515,
#: RFC 6665) when built out of a dialog.
_CONTACT_METHODS = frozenset(("INVITE", "SUBSCRIBE", "REFER", "NOTIFY", "UPDATE"))


def with_tag(name_addr: str, tag: str) -> str:
    """A From/To value with C{;tag=tag} (replacing one it had). The URI
    goes between angle brackets, so a URI parameter is never read as a
    header parameter."""
    addr = parse_name_addr(name_addr)
    return str(addr.with_param("tag", tag).replace(bracketed=True))


def add_via(request: Request, sent_by: str, transport: str = "UDP", branch: Optional[str] = None,
            rport: bool = True) -> str:
    """Push a Via for C{sent_by} (C{host[:port]}) with a branch (a fresh
    one unless given) and C{rport} (RFC 3581); returns the branch."""
    ours = branch is None  # a branch we made needs no check
    branch = branch or new_branch()
    head = f"SIP/2.0/{transport.upper()} {sent_by}"
    params = f";branch={branch};rport" if rport else f";branch={branch}"
    via = head + params
    # parsed at once: the client transaction's key is read from it
    request.insert_line("via", "Via: " + via, via, our_via(head, params) if ours else None)
    return branch


def outbound_route(proxy_uri: str) -> str:
    """An outbound proxy as the Route value of a preloaded loose route."""
    uri = parse_uri(proxy_uri.strip().strip("<>"))
    if not uri.has_param("lr"):
        uri = uri.with_param("lr")
    return f"<{uri}>"


def apply_route_set(target: str, route_set: Sequence[str]) -> tuple[str, list[str]]:
    """The Request-URI and Route values that send a request to C{target}
    through C{route_set} (RFC 3261 12.2.1.1).

    Loose routing (the first route has C{;lr}): the target stays the
    Request-URI and the route set is the Route header. Strict routing
    (a pre-RFC 3261 router first): the first route becomes the
    Request-URI (without the parameters a Request-URI may not carry, and
    without headers), the rest and then the target are the Route header.
    """
    routes = list(route_set)
    if not routes:
        return target, []
    first = parse_name_addr(routes[0]).uri
    if first.has_param("lr"):
        return target, routes
    request_uri = first.without_params("method").replace(headers=[])
    return str(request_uri), routes[1:] + [f"<{target}>"]


@lru_cache(maxsize=64)  # a user agent sends from the sent-by of one leg or a few
def _host_of(sent_by: Optional[str]) -> Optional[str]:
    if not sent_by:
        return None
    try:
        return split_host_port(sent_by)[0]
    except URIError:
        return None


def _default_contact(from_: str, sent_by: str, transport: str) -> str:
    user = parse_name_addr(from_).uri.user
    userinfo = f"{user}@" if user else ""
    params = "" if transport.upper() == "UDP" else f";transport={transport.lower()}"
    return f"<sip:{userinfo}{sent_by}{params}>"


def new_request(
    method: str,
    uri: str,
    from_: str,
    to: str,
    sent_by: Optional[str] = None,
    transport: str = "UDP",
    call_id: Optional[str] = None,
    from_tag: Optional[str] = None,
    cseq: int = 1,
    contact: Optional[str] = None,
    route_set: Sequence[str] = (),
    body: bytes = b"",
    content_type: Optional[str] = None,
    headers: Iterable[tuple[str, str]] = (),
    branch: Optional[str] = None,
    max_forwards: int = MAX_FORWARDS,
) -> Request:
    """A request outside any dialog (RFC 3261 8.1.1).

    @param uri: the Request-URI (and the target when routing strictly).
    @param from_: From as a name-addr or URI; a tag is added unless it has
        one (C{from_tag}, or a fresh one).
    @param to: To, without a tag.
    @param sent_by: C{host[:port]} for the Via; None leaves the Via to the
        caller (L{add_via}).
    @param contact: the Contact value; for INVITE, SUBSCRIBE and REFER one
        is made from C{sent_by} and the From user when not given.
    @param route_set: Route values (name-addrs), first hop first; see
        L{apply_route_set} and L{outbound_route}.
    @param headers: more (name, value) pairs, added before the body's.
    """
    method = method.upper()
    if method in ("ACK", "CANCEL"):
        raise ValueError(f"{method} is built from its INVITE: use create_ack or create_cancel")
    if tag_of(from_) is None:  # the same From every call: its reading is remembered
        from_ = with_new_tag(from_, from_tag or new_tag())
    request_uri, routes = apply_route_set(uri, route_set)
    lines: list[tuple[str, str]] = [("Max-Forwards", str(max_forwards))]
    lines += [("Route", value) for value in routes]
    lines += [
        ("From", from_),
        ("To", to),
        ("Call-ID", call_id or new_call_id(_host_of(sent_by))),
        ("CSeq", f"{cseq} {method}"),
    ]
    if contact is None and method in _CONTACT_METHODS and sent_by:
        contact = _default_contact(from_, sent_by, transport)
    if contact is not None:
        lines.append(("Contact", contact))
    lines += list(headers)
    if body and content_type is None:
        raise ValueError("a body needs a content_type")
    request = Request(method, request_uri, lines, body)  # Content-Length last, then Content-Type
    if body:
        request.set("content-type", content_type)  # type: ignore[arg-type]
    if sent_by:
        add_via(request, sent_by, transport, branch)
    return request


def _copy_lines(source: Request, names: Sequence[str], target: Request) -> None:
    for name in names:
        for value in source.get_all(name):
            target.add(name, value)


def create_ack(invite: Request, response: Response, dialog: Optional["Dialog"] = None) -> Request:
    """The ACK for a final response to C{invite}.

    For 300-699 (RFC 3261 17.1.1.3): the INVITE's Request-URI, top Via
    (so the same branch), From, Call-ID and Route, the response's To (with
    its tag) and CSeq C{n ACK}. For 2xx (13.2.2.4): a request of the
    dialog the 2xx establishes, a new branch when the INVITE had a Via,
    the INVITE's CSeq number.
    """
    if response.code < 200:
        raise ValueError(f"no ACK for a provisional response ({response.code})")
    number = invite.cseq[0]
    if 200 <= response.code < 300:
        if dialog is None:
            from sipproxy.sip.dialog import Dialog  # dialog builds on this module

            dialog = Dialog.from_uac(invite, response)
        ack = dialog.new_request("ACK", cseq=number)
        # 22.1: an ACK for a 2xx carries the INVITE's credentials
        _copy_lines(invite, ("authorization", "proxy-authorization"), ack)
        via = invite.top_via()
        if via is not None:
            add_via(ack, via.sent_by, via.transport, rport=via.param("rport") is not None)
        return ack
    ack = Request("ACK", invite.uri)
    via = invite.get("via")
    if via is not None:
        ack.add("Via", via)
    ack.add("Max-Forwards", str(MAX_FORWARDS))
    _copy_lines(invite, ("route",), ack)
    ack.add("From", invite.get("from") or "")
    ack.add("To", response.get("to") or invite.get("to") or "")
    ack.add("Call-ID", invite.call_id)
    ack.add("CSeq", f"{number} ACK")
    ack.set_body(b"")
    return ack


def create_cancel(invite: Request) -> Request:
    """The CANCEL of a pending INVITE (RFC 3261 9.1): the INVITE's
    Request-URI, top Via (same branch: the CANCEL is matched to the INVITE
    by it), Route, From, To, Call-ID and CSeq number, method CANCEL."""
    if invite.method != "INVITE":
        raise ValueError(f"only an INVITE is cancelled, not {invite.method}")
    cancel = Request("CANCEL", invite.uri)
    via = invite.get("via")
    if via is not None:
        cancel.add("Via", via)
    cancel.add("Max-Forwards", str(MAX_FORWARDS))
    _copy_lines(invite, ("route",), cancel)
    cancel.add("From", invite.get("from") or "")
    cancel.add("To", invite.get("to") or "")
    cancel.add("Call-ID", invite.call_id)
    cancel.add("CSeq", f"{invite.cseq[0]} CANCEL")
    cancel.set_body(b"")
    return cancel
