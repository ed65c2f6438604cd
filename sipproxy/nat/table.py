"""The relay table: which relay sockets exist, who they belong to, which
ones forward to each other, and when they go. Pure: no sockets, no
reactor, no clock (every method that needs the time takes C{now}); it
answers with plans -- which port numbers to try, which ports to close --
that L{sipproxy.nat.relay.LocalRelay} carries out on real sockets.

Sessions are kept as Net::SIP's NATHelper keys them:

    call (Call-ID) -> idfrom -> CSeq -> group_from, groups_to[idto], sessions[idto]

  - Side 0 (the request's SDP) gets one socket group per (idfrom, CSeq);
    side 1 (a response's SDP) one per answering dialog (idto), so a forked
    INVITE gets a group per fork. A retransmission gets the same group
    (and the same ports) back. A CSeq lower than one already seen for the
    same idfrom is refused (an old retransmission).
  - A session pairs the from-group with one to-group when it is
    activated. Activating a newer session between the same two parties
    ends the older ones as "replaced".
  - Port blocks are consecutive numbers starting at an even port: RTP on
    even, RTCP on odd (RFC 3550 11).

Wiring: what the To party sends to port i of the from-group is sent from
port i of the to-group to the From party's SDP address, and the other way
round (symmetric RTP); L{sipproxy.nat.forward} learns the real source.

Ending and expiry (times after Net::SIP, plus two bounds of our own):
  - An ended session (BYE, CANCEL, error, replaced, expired) stops
    forwarding at once; its sockets stay ours for C{close_delay} (1 s) so
    late packets are dropped here instead of reaching whoever gets the
    port next (Net::SIP's C{close_session} deletes the session and
    C{expire} releases its sockets later).
  - An active session idle for C{idle_timeout} (30 s) ends as "expired".
  - A group never used in a session is released after C{unused_timeout}
    (180 s); an offer nobody answered with SDP after
    C{unanswered_timeout} (60 s, RFC 3261 Timer C's territory), so a
    flood of unanswered INVITEs cannot hold the port range for long.
  - Limits: C{max_streams} media streams per SDP (8; C{m=audio P/N}
    counts N), C{max_sockets_per_call} and C{max_sockets} in total.

Departures from Net::SIP, each for a reason:
  - C{a=rtcp} (RFC 3605) is understood: RTCP goes to the port and address
    it names, not blindly to port + 1.
  - Rejected (port 0) and held (C{0.0.0.0}/C{::}) streams and TCP media get
    no sockets at all; sockets of the two sides are paired per media line,
    and a session needs the same number of media lines on both sides.
  - A media address that is a host name is not resolved (that would block
    the reactor): that direction waits for latching to learn the peer.
  - Nothing is forwarded after a session ended (Net::SIP's sockets keep
    forwarding until they are closed).
"""
from __future__ import annotations

import ipaddress
import random
from typing import Any, Iterator, Optional, Sequence

from sipproxy.sip.addresses import is_bare_ip_literal
from sipproxy.nat.forward import LEARN_WINDOW, RelayPort
from sipproxy.sip.sdp import Media, MediaTarget, SessionDescription

__all__ = ["RelayTable", "GroupPlan", "Refusal", "Expiry", "DEFAULT_MAX_STREAMS", "DEFAULT_MAX_CALL_SOCKETS"]

#: Media streams one SDP may ask relay sockets for (each RTP stream takes
#: an RTP and an RTCP socket): more than any phone offers, few enough that
#: one INVITE cannot take the port range.
DEFAULT_MAX_STREAMS = 8

#: Relay sockets per call: an offer and an answer of 8 RTP streams each,
#: twice (a re-INVITE while the old ports wait out the close delay).
DEFAULT_MAX_CALL_SOCKETS = 64


def _unspecified(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_unspecified
    except ValueError:
        return False


#: What L{RelayTable.traffic} adds up over the relay ports.
TRAFFIC_COUNTERS = ("packets", "bytes", "errors", "dropped", "foreign")


class Refusal:
    """Why an allocation is refused: a log level and a structured message."""

    __slots__ = ("level", "format", "fields")

    def __init__(self, level: str, format: str, **fields: Any) -> None:
        self.level = level
        self.format = format
        self.fields = fields


class GroupPlan:
    """The sockets one SDP needs: C{counts[i]} consecutive ports for media
    line i (0: none) on C{address}; or, for a retransmission, the
    C{targets} already given; or a C{refusal}."""

    __slots__ = ("key", "side", "address", "sdp", "counts", "targets", "refusal", "media_targets", "orig", "need")

    def __init__(self, key: Any, side: int, address: str, sdp: SessionDescription) -> None:
        self.key = key
        self.sdp = sdp
        self.side = side
        self.address = address
        self.counts: list[int] = []
        self.media_targets: list[list[Optional[tuple]]] = []
        self.orig: list[str] = []
        self.need = 0
        self.targets: Optional[list[Optional[MediaTarget]]] = None
        self.refusal: Optional[Refusal] = None


class _Media:
    """The ports of one media line on one side, with the SDP targets."""

    __slots__ = ("ports", "targets", "address", "base")

    def __init__(self, ports: list[RelayPort], targets: list, address: str) -> None:
        self.ports = ports
        self.targets = targets
        self.address = address
        self.base = ports[0].number if ports else 0


class _Group:
    """The ports allocated for one SDP (Net::SIP's SocketGroup)."""

    __slots__ = ("id", "side", "created", "lastmod", "seen", "media", "orig", "users", "used", "release_at",
                 "released")

    def __init__(self, ident: str, side: int, created: float, media: list[_Media], orig: list[str]) -> None:
        self.id = ident
        self.side = side
        self.created = created
        self.lastmod = 0.0
        self.seen = 0
        self.media = media
        self.orig = orig  # "addr:port/range" of the original SDP, per media
        self.users: set = set()  # live sessions using this group
        self.used = False  # ever part of a session
        self.release_at: Optional[float] = None
        self.released = False

    @property
    def ports(self) -> Iterator[RelayPort]:
        for media in self.media:
            yield from media.ports

    @property
    def socket_count(self) -> int:
        return sum(len(media.ports) for media in self.media)

    def sample(self, now: float, learn_window: float) -> None:
        """Update C{lastmod} when packets went through since the last
        sample, and close the learning windows that are due."""
        total = 0
        for media in self.media:
            for port in media.ports:
                total += port.packets
                if port.learning and port.owner is not None:
                    port.close_learning(now, learn_window)
        if total != self.seen:
            self.seen = total
            self.lastmod = now


class _Transaction:
    __slots__ = ("group_from", "groups_to", "sessions")

    def __init__(self) -> None:
        self.group_from: Optional[_Group] = None
        self.groups_to: dict[str, _Group] = {}
        self.sessions: dict[str, _Session] = {}

    def groups(self) -> list[_Group]:
        groups = list(self.groups_to.values())
        if self.group_from is not None:
            groups.append(self.group_from)
        return groups


class _Call:
    __slots__ = ("call_id", "by_from", "socket_count")

    def __init__(self, call_id: str) -> None:
        self.call_id = call_id
        self.by_from: dict[str, dict[int, _Transaction]] = {}
        self.socket_count = 0


class _Session:
    """A from-group and a to-group forwarding to each other."""

    __slots__ = ("id", "key", "cseq", "sfrom", "sto", "created", "ended", "reason", "param",
                 "packets_from", "bytes_from", "packets_to", "bytes_to")

    def __init__(self, ident: int, key: Any, sfrom: _Group, sto: _Group, created: float, param: Any) -> None:
        self.id = ident
        self.key = key
        self.cseq = key.cseq
        self.sfrom = sfrom
        self.sto = sto
        self.created = created
        self.ended: Optional[float] = None
        self.reason: Optional[str] = None
        self.param = param
        self.packets_from = self.bytes_from = self.packets_to = self.bytes_to = 0

    def credit(self, port: RelayPort) -> None:
        """Count what went through C{port} since it was wired (or last
        credited) as this session's."""
        packets = port.packets - port.base_packets
        octets = port.bytes - port.base_bytes
        port.base_packets, port.base_bytes = port.packets, port.bytes
        if port in set(self.sto.ports):
            self.packets_from += packets  # to-group ports receive from the From party
            self.bytes_from += octets
        else:
            self.packets_to += packets
            self.bytes_to += octets

    def counters(self) -> dict[str, int]:
        """Packets and bytes each way so far ("from": sent by the From party)."""
        counts = {"packets_from": self.packets_from, "bytes_from": self.bytes_from,
                  "packets_to": self.packets_to, "bytes_to": self.bytes_to}
        for port in self.sto.ports:
            if port.owner is self:
                counts["packets_from"] += port.packets - port.base_packets
                counts["bytes_from"] += port.bytes - port.base_bytes
        for port in self.sfrom.ports:
            if port.owner is self:
                counts["packets_to"] += port.packets - port.base_packets
                counts["bytes_to"] += port.bytes - port.base_bytes
        return counts

    def lastmod(self) -> float:
        return max(self.sfrom.lastmod, self.sto.lastmod, self.created)

    def info(self, call_id: str) -> dict[str, Any]:
        info = {
            "call_id": call_id, "cseq": self.cseq, "session": self.id,
            "idfrom": self.key.idfrom, "idto": self.key.idto,
            "uri_from": self.key.uri_from, "uri_to": self.key.uri_to,
            "from": ",".join(self.sfrom.orig), "to": ",".join(self.sto.orig),
            "start": self.created, "end": self.ended, "reason": self.reason,
        }
        info.update(self.counters())
        return info


class Expiry:
    """What one expiry run decided: the infos of the sessions it ended,
    and the ports whose sockets must be closed now."""

    __slots__ = ("ended", "release")

    def __init__(self) -> None:
        self.ended: list[dict[str, Any]] = []
        self.release: list[RelayPort] = []


class RelayTable:
    """The relay's bookkeeping (see the module docstring).

    @param port_range: (low, high), inclusive.
    @param idle_timeout: end an active session after this many idle seconds.
    @param unused_timeout: release a group never used in a session after
        this many seconds.
    @param unanswered_timeout: release an offer's group after this many
        seconds when no answer with SDP came (None: only C{unused_timeout}).
    @param close_delay: release the ports of an ended session this many
        seconds after it ended.
    @param max_sockets: at most this many relay sockets in total (None: no
        limit but the port range).
    @param max_sockets_per_call: at most this many per Call-ID (None: no limit).
    @param max_streams: at most this many media streams per SDP (None: no limit).
    @param learn_window: seconds a port keeps learning its peer's source.
    @param strict_source: accept media only from the SDP address and port.
    @param rng: a C{random.Random} for port choice (tests seed it).
    @param max_attempts: port blocks tried per allocation.
    @ivar socket_count: the number of open relay sockets.
    """

    def __init__(
        self,
        port_range: Sequence[int],
        idle_timeout: float = 30.0,
        unused_timeout: float = 180.0,
        unanswered_timeout: Optional[float] = 60.0,
        close_delay: float = 1.0,
        max_sockets: Optional[int] = None,
        max_sockets_per_call: Optional[int] = DEFAULT_MAX_CALL_SOCKETS,
        max_streams: Optional[int] = DEFAULT_MAX_STREAMS,
        learn_window: float = LEARN_WINDOW,
        strict_source: bool = False,
        rng: Optional[random.Random] = None,
        max_attempts: int = 1000,
    ) -> None:
        low, high = port_range
        if low > high:
            raise ValueError(f"empty port range {low}-{high}")
        self.port_range = (int(low), int(high))
        self.idle_timeout = idle_timeout
        self.unused_timeout = unused_timeout
        self.unanswered_timeout = unanswered_timeout or None
        self.close_delay = close_delay
        self.max_sockets = max_sockets or None
        self.max_sockets_per_call = max_sockets_per_call or None
        self.max_streams = max_streams or None
        self.learn_window = learn_window
        self.strict_source = strict_source
        self.rng = rng or random.Random()
        self.max_attempts = max_attempts
        self.calls: dict[str, _Call] = {}
        self.socket_count = 0
        self._bound: dict[str, set[int]] = {}
        self._session_ids = 0
        #: relay sockets opened since start (for metrics; socket_count is how many are open)
        self.sockets_opened = 0
        #: the packet counters of released ports, so totals never go down
        self.retired = dict.fromkeys(TRAFFIC_COUNTERS, 0)

    # -- allocation -----------------------------------------------------------
    def plan_group(self, session: Any, side: int, address: str, sdp: SessionDescription) -> GroupPlan:
        """What it takes to give one side of C{session} relay ports on
        C{address} for C{sdp}: nothing new for a retransmission
        (C{targets}), a refusal, or blocks of ports to open and hand to
        L{commit_group}."""
        plan = GroupPlan(session, side, address, sdp)
        call = self.calls.get(session.call_id)
        tx = None
        if call is not None:
            by_cseq = call.by_from.get(session.idfrom, {})
            tx = by_cseq.get(session.cseq)
            if tx is None and any(cseq > session.cseq for cseq in by_cseq):
                plan.refusal = Refusal("info", "relay: refused old CSeq {cseq} in {call_id}",
                                       cseq=session.cseq, call_id=session.call_id)
                return plan
        group = None
        if tx is not None:
            group = tx.group_from if side == 0 else tx.groups_to.get(session.idto)
        if group is not None:
            if len(group.media) != len(sdp.media):
                plan.refusal = Refusal("info", "relay: a retransmission with {n} media lines for a group of {m}",
                                       n=len(sdp.media), m=len(group.media))
            else:
                plan.targets = self._targets(group, sdp)
            return plan
        streams = 0
        for media in sdp.media:
            count, targets = self._plan_media(media)
            plan.counts.append(count)
            plan.media_targets.append(targets)
            if count:
                streams += media.port_count
        plan.need = sum(plan.counts)
        plan.orig = [f"{m.address}:{m.port}/{m.port_range}" for m in sdp.media]
        held = call.socket_count if call is not None else 0
        if self.max_streams is not None and streams > self.max_streams:
            plan.refusal = Refusal("warn", "relay: {streams} media streams for {call_id} pass the limit of "
                                           "{limit} per SDP", streams=streams, call_id=session.call_id,
                                   limit=self.max_streams)
        elif self.max_sockets is not None and self.socket_count + plan.need > self.max_sockets:
            plan.refusal = Refusal("warn", "relay: {need} sockets for {call_id} would pass the limit of {limit} "
                                           "in total", need=plan.need, call_id=session.call_id,
                                   limit=self.max_sockets)
        elif self.max_sockets_per_call is not None and held + plan.need > self.max_sockets_per_call:
            plan.refusal = Refusal("warn", "relay: {need} more sockets for {call_id} would pass the limit of "
                                           "{limit} per call", need=plan.need, call_id=session.call_id,
                                   limit=self.max_sockets_per_call)
        return plan

    @staticmethod
    def _plan_media(media: Media) -> tuple[int, list[Optional[tuple]]]:
        """(sockets needed, target per socket) for one media line."""
        address = media.address
        if media.port == 0 or address is None or _unspecified(address) or "TCP" in media.proto.upper():
            return 0, []
        count = media.port_range
        host = address if is_bare_ip_literal(address) else None
        targets: list[Optional[tuple]] = [
            (host, media.port + i) if host is not None and media.port + i <= 65535 else None
            for i in range(count)]
        rtcp = media.rtcp
        if rtcp is not None and media.is_rtp and media.port_count == 1:
            rtcp_port, rtcp_address = rtcp
            rtcp_host = rtcp_address if rtcp_address is not None else address
            targets[1] = (rtcp_host, rtcp_port) if is_bare_ip_literal(rtcp_host) else None
        return count, targets

    def block_starts(self, address: str, count: int) -> Iterator[int]:
        """First port numbers of free-looking blocks of C{count} on
        C{address}, in random order; the caller tries to bind each until
        one works (another process may hold a port we think free)."""
        low, high = self.port_range
        first = low + (low % 2)
        last = high - count + 1
        if last < first:
            return
        starts = (last - first) // 2 + 1
        bound = self._bound.get(address, ())
        offset = self.rng.randrange(starts)
        for attempt in range(min(starts, self.max_attempts)):
            start = first + 2 * ((offset + attempt) % starts)
            if not any(n in bound for n in range(start, start + count)):
                yield start

    def commit_group(self, plan: GroupPlan, blocks: list[list[RelayPort]], now: float) -> list[Optional[MediaTarget]]:
        """Record the ports opened for C{plan} (one list per media line);
        the targets to write into the SDP."""
        session = plan.key
        call = self.calls.get(session.call_id)
        if call is None:
            call = self.calls[session.call_id] = _Call(session.call_id)
        tx = call.by_from.setdefault(session.idfrom, {}).setdefault(session.cseq, _Transaction())
        media_list = [_Media(ports, targets, plan.address) for ports, targets in zip(blocks, plan.media_targets)]
        ident = session.idfrom if plan.side == 0 else session.idto
        group = _Group(ident, plan.side, now, media_list, plan.orig)
        bound = self._bound.setdefault(plan.address, set())
        for media in media_list:
            bound.update(port.number for port in media.ports)
        count = group.socket_count
        self.socket_count += count
        self.sockets_opened += count
        call.socket_count += count
        if plan.side == 0:
            tx.group_from = group
        else:
            tx.groups_to[session.idto] = group
        return self._targets(group, plan.sdp)

    @staticmethod
    def _targets(group: _Group, sdp: SessionDescription) -> list[Optional[MediaTarget]]:
        targets: list[Optional[MediaTarget]] = []
        for media, sdp_media in zip(group.media, sdp.media):
            if not media.ports:
                targets.append(None)
            elif sdp_media.is_rtp and len(media.ports) > 1:
                targets.append(MediaTarget(media.address, media.base, media.base + 1))
            else:
                targets.append(MediaTarget(media.address, media.base))
        return targets

    # -- sessions -------------------------------------------------------------
    def activate(self, session: Any, now: float, param: Any = None) -> tuple[Optional[int], list[dict[str, Any]]]:
        """Pair the groups of C{session}: (1 when new, -1 when already
        active, None when incomplete or unknown; infos of the sessions it
        replaced)."""
        call = self.calls.get(session.call_id)
        tx = call.by_from.get(session.idfrom, {}).get(session.cseq) if call else None
        if tx is None:
            return None, []
        if session.idto in tx.sessions:
            return -1, []
        gfrom, gto = tx.group_from, tx.groups_to.get(session.idto)
        if gfrom is None or gto is None or gfrom.released or gto.released:
            return None, []
        if len(gfrom.media) != len(gto.media):
            return None, []
        self._session_ids += 1
        sess = _Session(self._session_ids, session, gfrom, gto, now, param)
        tx.sessions[session.idto] = sess
        for group in (gfrom, gto):
            group.users.add(sess)
            group.used = True
            group.release_at = None
        self._wire(sess)
        return 1, self._replace_older(call, sess, now)

    def _wire(self, sess: _Session) -> None:
        strict = self.strict_source
        for fm, tm in zip(sess.sfrom.media, sess.sto.media):
            if not fm.ports or len(fm.ports) != len(tm.ports):
                continue
            for pf, pt, from_target, to_target in zip(fm.ports, tm.ports, fm.targets, tm.targets):
                # pf is advertised to the To party: what it sends goes to the From party's address
                pf.wire(pt, from_target, to_target, sess, strict)
                pt.wire(pf, to_target, from_target, sess, strict)

    def _replace_older(self, call: _Call, new: _Session, now: float) -> list[dict[str, Any]]:
        pair = {new.key.idfrom, new.key.idto}
        ended = []
        for idfrom, by_cseq in call.by_from.items():
            for tx in by_cseq.values():
                for idto, sess in list(tx.sessions.items()):
                    if sess is not new and sess.id < new.id and {idfrom, idto} == pair:
                        ended.append(self._end(call, tx, sess, "replaced", now))
        return ended

    def _end(self, call: _Call, tx: _Transaction, sess: _Session, reason: str, now: float) -> dict[str, Any]:
        """End one session: it forwards nothing from now on; its groups
        are released C{close_delay} later unless another session uses them."""
        if tx.sessions.get(sess.key.idto) is sess:
            del tx.sessions[sess.key.idto]
        for group in (sess.sfrom, sess.sto):
            for port in group.ports:
                if port.owner is sess:
                    port.unwire()
            group.users.discard(sess)
            if not group.users:
                group.release_at = now + self.close_delay
        sess.ended = now
        sess.reason = reason
        # a group shared with a live session (a forked INVITE) goes back to it
        for group in (sess.sfrom, sess.sto):
            for other in sorted(group.users, key=lambda s: s.id)[-1:]:
                self._wire(other)
        return sess.info(call.call_id)

    def _close_groups(self, tx: _Transaction, now: float) -> None:
        for group in tx.groups():
            if not group.users and group.release_at is None:
                group.release_at = now + self.close_delay

    # -- closing: one method per kind of end --------------------------------------
    def close_transaction(self, call_id: str, idfrom: str, cseq: int, idto: str, reason: str,
                          now: float) -> list[dict[str, Any]]:
        """CANCEL or an error final: the session to C{idto} in one INVITE
        transaction, and the transaction's groups once no session is left."""
        call = self.calls.get(call_id)
        tx = call.by_from.get(idfrom, {}).get(cseq) if call is not None else None
        if tx is None:
            return []
        ended = []
        sess = tx.sessions.get(idto)
        if sess is not None:
            ended.append(self._end(call, tx, sess, reason, now))  # type: ignore[arg-type]
        if not tx.sessions:
            self._close_groups(tx, now)
        return ended

    def close_dialog(self, call_id: str, idfrom: str, idto: str, reason: str, now: float) -> list[dict[str, Any]]:
        """BYE: every session between C{idfrom} and C{idto}, either way."""
        call = self.calls.get(call_id)
        if call is None:
            return []
        ended = []
        for one, other in ((idfrom, idto), (idto, idfrom)):
            for tx in list(call.by_from.get(one, {}).values()):
                sess = tx.sessions.get(other)
                if sess is not None:
                    ended.append(self._end(call, tx, sess, reason, now))
                if not tx.sessions:
                    self._close_groups(tx, now)
        return ended

    def close_party(self, call_id: str, idfrom: str, reason: str, now: float) -> list[dict[str, Any]]:
        """Every session of one party (ng C{delete} with only a from-tag):
        those it offered and those offered to it."""
        call = self.calls.get(call_id)
        if call is None:
            return []
        ended = []
        for tx in list(call.by_from.get(idfrom, {}).values()):
            for sess in list(tx.sessions.values()):
                ended.append(self._end(call, tx, sess, reason, now))
            self._close_groups(tx, now)
        for by_cseq in call.by_from.values():
            for tx in by_cseq.values():
                sess = tx.sessions.get(idfrom)
                if sess is not None:
                    ended.append(self._end(call, tx, sess, reason, now))
                if not tx.sessions and idfrom in tx.groups_to:
                    self._close_groups(tx, now)
        return ended

    def close_call(self, call_id: str, reason: str, now: float) -> list[dict[str, Any]]:
        """Every session of a call (ng C{delete} with only the Call-ID)."""
        call = self.calls.get(call_id)
        if call is None:
            return []
        ended = []
        for idfrom in list(call.by_from):
            ended += self.close_party(call_id, idfrom, reason, now)
        return ended

    def close_all(self, reason: str, now: float) -> Expiry:
        """End every session and give up every port now."""
        result = Expiry()
        for call in list(self.calls.values()):
            for by_cseq in list(call.by_from.values()):
                for tx in list(by_cseq.values()):
                    for sess in list(tx.sessions.values()):
                        result.ended.append(self._end(call, tx, sess, reason, now))
                    for group in tx.groups():
                        result.release += self._release(call, tx, group)
            self._drop_empty(call)
        return result

    # -- expiry ---------------------------------------------------------------
    def expire(self, now: float) -> Expiry:
        """End idle sessions, close due learning windows, and hand back
        the ports whose time is up."""
        result = Expiry()
        for call in list(self.calls.values()):
            for by_cseq in list(call.by_from.values()):
                for cseq in sorted(by_cseq, reverse=True):
                    tx = by_cseq[cseq]
                    groups = tx.groups()
                    for group in groups:
                        group.sample(now, self.learn_window)
                    for sess in list(tx.sessions.values()):
                        if sess.lastmod() < now - self.idle_timeout:
                            result.ended.append(self._end(call, tx, sess, "expired", now))
                    for group in groups:
                        if not group.users and not group.released and self._due(tx, group, now):
                            result.release += self._release(call, tx, group)
            self._drop_empty(call)
        return result

    def _due(self, tx: _Transaction, group: _Group, now: float) -> bool:
        if group.release_at is not None:
            return now >= group.release_at
        if group.used:
            return group.lastmod < now - self.close_delay
        timeout = self.unused_timeout
        if group.side == 0 and not tx.groups_to and self.unanswered_timeout is not None:
            timeout = min(timeout, self.unanswered_timeout)
        return group.created < now - timeout

    def _release(self, call: _Call, tx: _Transaction, group: _Group) -> list[RelayPort]:
        if group.released:
            return []
        group.released = True
        count = group.socket_count
        ports = list(group.ports)
        retired = self.retired
        for port in ports:
            retired["packets"] += port.packets
            retired["bytes"] += port.bytes
            retired["errors"] += port.errors
            retired["dropped"] += port.dropped
            retired["foreign"] += port.foreign
            port.unwire()
            self._bound.get(port.address, set()).discard(port.number)
        self.socket_count -= count
        call.socket_count -= count
        if tx.group_from is group:
            tx.group_from = None
        for idto, other in list(tx.groups_to.items()):
            if other is group:
                del tx.groups_to[idto]
        return ports

    def _drop_empty(self, call: _Call) -> None:
        for idfrom, by_cseq in list(call.by_from.items()):
            for cseq, tx in list(by_cseq.items()):
                if tx.group_from is None and not tx.groups_to and not tx.sessions:
                    del by_cseq[cseq]
            if not by_cseq:
                del call.by_from[idfrom]
        if not call.by_from and self.calls.get(call.call_id) is call:
            del self.calls[call.call_id]

    # -- looking ------------------------------------------------------------------
    @property
    def sessions_started(self) -> int:
        """Sessions activated since start."""
        return self._session_ids

    def traffic(self) -> dict[str, int]:
        """Packets and bytes relayed, send errors, packets dropped (no
        session, or from a foreign source) since start, for metrics: the
        released ports' counts plus the live ones'. Also C{sessions}, how
        many are live now."""
        totals = dict(self.retired)
        sessions = 0
        for call in self.calls.values():
            for by_cseq in call.by_from.values():
                for tx in by_cseq.values():
                    sessions += len(tx.sessions)
                    for group in tx.groups():
                        if group.released:
                            continue
                        for port in group.ports:
                            totals["packets"] += port.packets
                            totals["bytes"] += port.bytes
                            totals["errors"] += port.errors
                            totals["dropped"] += port.dropped
                            totals["foreign"] += port.foreign
        totals["sessions"] = sessions
        return totals

    def sessions(self, call_id: Optional[str] = None) -> list[dict[str, Any]]:
        """Infos of the live sessions (of one call, or all)."""
        if call_id is None:
            calls = list(self.calls.values())
        else:
            calls = [self.calls[call_id]] if call_id in self.calls else []
        out = []
        for call in calls:
            for by_cseq in call.by_from.values():
                for tx in by_cseq.values():
                    out.extend(sess.info(call.call_id) for sess in tx.sessions.values())
        return out

    def describe(self, call_id: str) -> Optional[dict[str, Any]]:
        """Groups, ports and counters of one call (for ng C{query}), or None."""
        call = self.calls.get(call_id)
        if call is None:
            return None
        groups = []
        for idfrom, by_cseq in call.by_from.items():
            for cseq, tx in sorted(by_cseq.items()):
                for group in tx.groups():
                    groups.append({
                        "id": group.id, "side": group.side, "cseq": cseq, "idfrom": idfrom,
                        "created": group.created, "lastmod": group.lastmod, "released": group.released,
                        "media": [
                            {"address": media.address, "ports": [
                                {"port": p.number, "target": p.dst, "source": p.source, "packets": p.packets,
                                 "bytes": p.bytes, "errors": p.errors, "dropped": p.dropped, "foreign": p.foreign,
                                 "learning": p.learning}
                                for p in media.ports]}
                            for media in group.media],
                    })
        return {"call_id": call_id, "groups": groups, "sessions": self.sessions(call_id),
                "sockets": call.socket_count}
