"""SIP dialogs (RFC 3261 12), pure state.

A L{Dialog} holds what RFC 3261 12.1 lists (Call-ID, local and remote
tags, URIs and sequence numbers, remote target, route set, secure flag),
builds the requests of the dialog and checks the ones that come in. It
sends nothing and keeps no clock: the user agent core sends what it
builds through a client transaction (or, for an ACK to a 2xx, directly).

API::

    Dialog.from_uac(request, response, secure=None) -> Dialog
        we sent C{request}; C{response} is a 1xx with a To tag (early
        dialog) or a 2xx (confirmed). Route set = Record-Route reversed.
    Dialog.from_uas(request, local_tag, local_contact=None) -> Dialog
        we received C{request} and answer with To tag C{local_tag}.
        Route set = Record-Route in order.
    dialog.id -> DialogId(call_id, local_tag, remote_tag)
    dialog.new_request(method, body=b"", content_type=None, headers=(),
                       cseq=None, sent_by=None, transport="UDP") -> Request
        local CSeq + 1 (an ACK takes C{cseq}, its INVITE's number and does
        not move the counter), route set applied (loose or strict),
        Contact on target refresh requests.
    dialog.receive_request(request) -> None | 500
        500 for a request older than the remote CSeq (12.2.2); otherwise
        records the CSeq and, for a target refresh, the new remote target.
    dialog.receive_response(response) -> None
        a 2xx confirms an early dialog (route set and target from it); a
        2xx to a target refresh updates the remote target.
    dialog_id_of_request(request)   the id a received request names (UAS view)
    dialog_id_of_response(response) the id a received response names (UAC view)
    needs_481(request) -> bool
        whether a request that matched no dialog must be answered 481:
        it has a To tag (in-dialog) and is not an ACK (an ACK is never
        answered) or a CANCEL (it belongs to a transaction).
"""
from __future__ import annotations

from typing import Iterable, NamedTuple, Optional, Union

from sipproxy.sip.message import Request, Response
from sipproxy.sip.uac import MAX_FORWARDS, add_via, apply_route_set
from sipproxy.sip.name_addrs import untagged, uri_text
from sipproxy.sip.uri import URIError, parse_name_addr

__all__ = [
    "Dialog",
    "DialogId",
    "dialog_id_of_request",
    "dialog_id_of_response",
    "needs_481",
    "TARGET_REFRESH",
]

#: Requests whose Contact replaces the remote target (RFC 3261 12.2,
#: RFC 3311 UPDATE, RFC 6665 SUBSCRIBE/NOTIFY, RFC 3515 REFER).
TARGET_REFRESH = frozenset(("INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"))


class DialogId(NamedTuple):
    call_id: str
    local_tag: str
    remote_tag: Optional[str]


def _with_tag(value: str, tag: Optional[str]) -> str:
    addr = parse_name_addr(value)
    if tag:
        addr = addr.with_param("tag", tag)
    return str(addr.replace(bracketed=True))


def _contact_uri(message: Union[Request, Response]) -> Optional[str]:
    value = message.get("contact")
    if value is None:
        return None
    try:
        return uri_text(value)
    except URIError:
        return None


class Dialog:
    """The state of one dialog (RFC 3261 12.1).

    @ivar local_uri: our From (UAC) or To (UAS) value without the tag.
    @ivar remote_uri: the peer's, likewise.
    @ivar local_cseq: the CSeq number of our last request, None until one.
    @ivar remote_cseq: the CSeq number of the peer's last request, None
        until one.
    @ivar remote_target: the peer's Contact URI: where requests go.
    @ivar route_set: Route values (name-addrs), first hop first.
    @ivar local_contact: our Contact value, sent on target refreshes.
    @ivar early: True until a 2xx confirms the dialog.
    """

    def __init__(
        self,
        call_id: str,
        local_tag: str,
        remote_tag: Optional[str],
        local_uri: str,
        remote_uri: str,
        remote_target: str,
        route_set: Iterable[str] = (),
        local_cseq: Optional[int] = None,
        remote_cseq: Optional[int] = None,
        secure: bool = False,
        local_contact: Optional[str] = None,
        early: bool = False,
    ) -> None:
        self.call_id = call_id
        self.local_tag = local_tag
        self.remote_tag = remote_tag
        self.local_uri = local_uri
        self.remote_uri = remote_uri
        self.remote_target = remote_target
        self.route_set = list(route_set)
        self.local_cseq = local_cseq
        self.remote_cseq = remote_cseq
        self.secure = secure
        self.local_contact = local_contact
        self.early = early
        #: (URI value, tag) -> the From/To value of our requests: every
        #: request of the dialog carries the same two
        self._tagged: dict[tuple[str, Optional[str]], str] = {}

    def _tag(self, value: str, tag: Optional[str]) -> str:
        key = (value, tag)
        tagged = self._tagged.get(key)
        if tagged is None:
            tagged = _with_tag(value, tag)
            if len(self._tagged) >= 4:  # the URIs or tags were changed
                self._tagged.clear()
            self._tagged[key] = tagged
        return tagged

    def _seed(self, local: str, remote: str) -> "Dialog":
        """Remember our requests' From and To, read from the values the
        dialog was made from (one parse each)."""
        # without their tags (the dialog keeps those apart), and as our requests carry them
        self.local_uri, local_tagged = untagged(local, self.local_tag)
        self.remote_uri, remote_tagged = untagged(remote, self.remote_tag)
        self._tagged[(self.local_uri, self.local_tag)] = local_tagged
        self._tagged[(self.remote_uri, self.remote_tag)] = remote_tagged
        return self

    # -- creation -----------------------------------------------------------------
    @classmethod
    def from_uac(cls, request: Request, response: Response, secure: Optional[bool] = None) -> "Dialog":
        """The dialog a 1xx (with a To tag) or 2xx to our C{request} creates
        (RFC 3261 12.1.2)."""
        if not 100 < response.code < 300:
            raise ValueError(f"a {response.code} creates no dialog")
        remote_tag = response.to_tag
        if remote_tag is None and response.code < 200:
            raise ValueError("a provisional response without a To tag creates no dialog")
        local_tag = request.from_tag
        if local_tag is None:
            raise ValueError("our request has no From tag")
        if secure is None:
            secure = request.uri.lower().startswith("sips:")
        return cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=remote_tag,
            local_uri="",
            remote_uri="",
            remote_target=_contact_uri(response) or request.uri,
            route_set=list(reversed(response.get_all("record-route"))),
            local_cseq=request.cseq[0],
            remote_cseq=None,
            secure=secure,
            local_contact=request.get("contact"),
            early=response.code < 200,
        )._seed(request.get("from") or "", request.get("to") or "")

    @classmethod
    def from_uas(cls, request: Request, local_tag: str, local_contact: Optional[str] = None,
                 secure: Optional[bool] = None, early: bool = False) -> "Dialog":
        """The dialog we create by answering C{request} with To tag
        C{local_tag} (RFC 3261 12.1.1)."""
        if secure is None:
            secure = request.uri.lower().startswith("sips:")
        return cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=request.from_tag,
            local_uri="",
            remote_uri="",
            remote_target=_contact_uri(request) or "",
            route_set=request.get_all("record-route"),
            local_cseq=None,
            remote_cseq=request.cseq[0],
            secure=secure,
            local_contact=local_contact,
            early=early,
        )._seed(request.get("to") or "", request.get("from") or "")

    @property
    def id(self) -> DialogId:
        return DialogId(self.call_id, self.local_tag, self.remote_tag)

    # -- our requests -----------------------------------------------------------------
    def new_request(
        self,
        method: str,
        body: bytes = b"",
        content_type: Optional[str] = None,
        headers: Iterable[tuple[str, str]] = (),
        cseq: Optional[int] = None,
        sent_by: Optional[str] = None,
        transport: str = "UDP",
        branch: Optional[str] = None,
    ) -> Request:
        """A request within the dialog (RFC 3261 12.2.1.1).

        @param cseq: for an ACK, the number of the INVITE it acknowledges
            (required); for other methods, None takes the next local number.
        @param sent_by: adds our Via (with a fresh branch unless C{branch})
            when given; otherwise the caller adds it (L{add_via}).
        """
        method = method.upper()
        if method == "ACK":
            if cseq is None:
                raise ValueError("an ACK takes the CSeq number of its INVITE")
        elif method == "CANCEL":
            raise ValueError("a CANCEL is built from its INVITE (uac.create_cancel)")
        else:
            if cseq is None:
                cseq = (self.local_cseq if self.local_cseq is not None else 0) + 1
            self.local_cseq = cseq
        request_uri, routes = apply_route_set(self.remote_target, self.route_set)
        lines: list[tuple[str, str]] = [("Max-Forwards", str(MAX_FORWARDS))]
        lines += [("Route", value) for value in routes]
        lines += [
            ("From", self._tag(self.local_uri, self.local_tag)),
            ("To", self._tag(self.remote_uri, self.remote_tag)),
            ("Call-ID", self.call_id),
            ("CSeq", f"{cseq} {method}"),
        ]
        if method in TARGET_REFRESH and self.local_contact:
            lines.append(("Contact", self.local_contact))
        lines += list(headers)
        if body and content_type is None:
            raise ValueError("a body needs a content_type")
        request = Request(method, request_uri, lines, body)  # Content-Length last, then Content-Type
        if body:
            request.set("content-type", content_type)  # type: ignore[arg-type]
        if sent_by:
            add_via(request, sent_by, transport, branch)
        return request

    # -- their messages ---------------------------------------------------------------
    def receive_request(self, request: Request) -> Optional[int]:
        """Check and record a request of this dialog (RFC 3261 12.2.2).

        @return: None when the request may go on; 500 when its CSeq is
            lower than the remote sequence number (out of order). An ACK or
            CANCEL repeats its INVITE's number and is never refused here.
        """
        number = request.cseq[0]
        if request.method in ("ACK", "CANCEL"):
            return None
        if self.remote_cseq is not None and number < self.remote_cseq:
            return 500
        self.remote_cseq = number
        if request.method in TARGET_REFRESH:
            target = _contact_uri(request)
            if target:
                self.remote_target = target
        return None

    def receive_response(self, response: Response) -> None:
        """Follow a response to one of our requests of this dialog: a 2xx
        confirms an early dialog (its Record-Route is the route set,
        reversed, RFC 3261 12.1.2) and a 2xx (or a 1xx of the early
        dialog) to a target refresh moves the remote target (12.2.1.2)."""
        code = response.code
        if code < 101 or code >= 300:
            return
        method = response.method
        if code >= 200 and self.early and method == "INVITE":
            self.early = False
            self.route_set = list(reversed(response.get_all("record-route")))
        if method in TARGET_REFRESH and (code >= 200 or self.early):
            target = _contact_uri(response)
            if target:
                self.remote_target = target

    def __repr__(self) -> str:
        state = "early" if self.early else "confirmed"
        return f"<Dialog {self.call_id} {self.local_tag}/{self.remote_tag} {state}>"


def dialog_id_of_request(request: Request) -> DialogId:
    """The id of the dialog a received request belongs to, seen by us (the
    UAS): our tag is the To tag, theirs the From tag."""
    return DialogId(request.call_id, request.to_tag or "", request.from_tag)


def dialog_id_of_response(response: Response) -> DialogId:
    """The id of the dialog a received response belongs to, seen by us (the
    UAC): our tag is the From tag, theirs the To tag."""
    return DialogId(response.call_id, response.from_tag or "", response.to_tag)


def needs_481(request: Request) -> bool:
    """Whether a request that matched no dialog is answered 481 (RFC 3261
    12.2.2): it carries a To tag, so it claims a dialog we do not have. An
    ACK is never answered, and a CANCEL matches a transaction instead."""
    return request.to_tag is not None and request.method not in ("ACK", "CANCEL")
