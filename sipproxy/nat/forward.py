"""The relay's per-packet path: one L{RelayPort} per relay socket decides
whether a datagram is forwarded, and learns where the peer really sends
from. Pure: no sockets, no reactor, no clock (the socket layer calls
L{RelayPort.datagramReceived}; the relay table wires ports together and
closes learning windows from its expiry timer).

Learning the peer (after rtpengine's heuristic C{endpoint-learning}):
each port knows the address and port the peer announced in SDP
(C{expect}). A source is ranked: the SDP address and port (3), the SDP
address with another port (2), any other source (1). The first packet
is accepted from any source; a better-ranked source replaces it while
the port is learning. Learning ends at once with an exact SDP match,
otherwise when the relay table closes the window (about C{LEARN_WINDOW}
seconds after the port's first packet; the expiry timer closes it, so
a little later by up to one expiry interval). After that only the
learned source is forwarded: other sources are dropped and counted in
C{foreign} -- rtpengine does this only with its C{strict-source} flag --
except the SDP's own address and port, which still takes over a port
that learned something less: a spray that reached a port before its
phone's first packet, and outlasted the window, must not lock the phone
out (spoofing that exact source needs the SDP, i.e. a man in the middle).
The learned source also fixes where the other direction goes (latching,
so a phone behind NAT gets its media back at its public address).

With C{strict} (C{--rtp-strict-source}; rtpengine's
C{endpoint-learning=off} plus C{strict-source}) only the SDP address and
port are ever accepted and nothing is latched; a phone behind NAT then
needs a SIP-level NAT fix (its SDP must carry its public address).

What learning leaves open, on purpose: before a phone's first packet,
any source may take its place (a blind spray to the relay ports); the
phone takes it back with its first packet when it sends from its SDP
address, and until then the other direction's media goes to that
source. A phone behind NAT (its SDP names a private address) ranks like
any stranger, so the first sender wins. A port its phone never sends
to (often the RTCP port) stays learning, so a stranger's packets there
are bounced between stranger and relay, never into the phones' media.
C{--rtp-strict-source} closes all three, at the price of latching.

The hot path is one tuple comparison, one C{sendto} on the partner's
socket and two counter updates; ranking runs only for a source that is
not the learned one.
"""
from __future__ import annotations

import ipaddress
from typing import Any, Callable, Optional

__all__ = ["RelayPort", "LEARN_WINDOW", "normalise_target"]

#: Seconds a port keeps learning after its first packet (rtpengine: 3 s).
LEARN_WINDOW = 3.0

#: Source ranks while learning.
_EXACT, _ADDRESS, _ANY = 3, 2, 1


def normalise_target(target: Optional[tuple]) -> Optional[tuple]:
    """(host, port) with the host as the kernel writes it in C{recvfrom}
    (lower-case, compressed IPv6), so a source compares equal to it."""
    if target is None:
        return None
    host, port = target[0], target[1]
    try:
        host = str(ipaddress.ip_address(host))
    except ValueError:
        pass
    return (host, port)


class RelayPort:
    """The forwarding state of one relay socket. What arrives is sent out
    through the paired socket (C{sendto}, the partner's) to C{dst}.

    @ivar number: the local port number; C{address}: the local address.
    @ivar send: this socket's own C{sendto} (set by the socket layer).
    @ivar dst: where packets arriving here are sent, or None.
    @ivar expect: where the peer said (in SDP) it sends from.
    @ivar source: the accepted (learned) source, or None.
    @ivar learning: a better-ranked source may still replace C{source}.
    @ivar learn_since: when the relay table first saw a source here.
    @ivar packets: packets forwarded; C{bytes}: their payload bytes.
    @ivar errors: packets that could not be sent; C{dropped}: packets that
        arrived while the socket belonged to no session; C{foreign}:
        packets dropped because they came from a source other than the
        accepted one.
    """

    __slots__ = ("address", "number", "send", "handle", "sendto", "dst", "expect", "source", "rank", "learning",
                 "learn_since", "strict", "partner", "owner", "base_packets", "base_bytes", "packets", "bytes",
                 "errors", "dropped", "foreign")

    def __init__(self, address: str, number: int) -> None:
        self.address = address
        self.number = number
        self.send: Optional[Callable[[bytes, Any], Any]] = None
        self.handle: Any = None  # the socket layer's handle (close() releases the socket)
        self.sendto: Optional[Callable[[bytes, Any], Any]] = None
        self.dst: Optional[tuple] = None
        self.expect: Optional[tuple] = None
        self.source: Optional[tuple] = None
        self.rank = 0
        self.learning = True
        self.learn_since: Optional[float] = None
        self.strict = False
        self.partner: Optional[RelayPort] = None
        self.owner: Any = None
        self.base_packets = self.base_bytes = 0
        self.packets = self.bytes = self.errors = self.dropped = self.foreign = 0

    # the hot path ---------------------------------------------------------
    def datagramReceived(self, data: bytes, addr: Any) -> None:
        if addr == self.source:
            try:
                self.sendto(data, self.dst)  # type: ignore[misc]
            except (OSError, TypeError):
                self.errors += 1
            else:
                self.packets += 1
                self.bytes += len(data)
        else:
            self._other_source(data, addr)

    def _other_source(self, data: bytes, addr: Any) -> None:
        if self.sendto is None:
            self.dropped += 1
            return
        rank = self._rank(addr)
        if not self.learning and rank < _EXACT:
            rank = 0  # after learning only the SDP's own address and port may still take over
        if rank <= self.rank:
            self.foreign += 1
            return
        self.source = addr
        self.rank = rank
        if rank == _EXACT:
            self.learning = False  # the SDP's own address and port: nothing can be better
        if self.partner is not None and not self.strict:
            self.partner.dst = addr  # latch: the peer's media goes back where it comes from
        try:
            self.sendto(data, self.dst)
        except (OSError, TypeError):
            self.errors += 1
        else:
            self.packets += 1
            self.bytes += len(data)

    def _rank(self, addr: Any) -> int:
        expect = self.expect
        if expect is not None and addr[0] == expect[0]:
            return _EXACT if addr[1] == expect[1] else (0 if self.strict else _ADDRESS)
        return 0 if self.strict else _ANY

    # learning -------------------------------------------------------------
    def close_learning(self, now: float, window: float) -> None:
        """Called by the expiry timer: start the window at the first packet
        seen, end it C{window} seconds later."""
        if not self.learning or self.source is None:
            return
        if self.learn_since is None:
            self.learn_since = now
        elif now - self.learn_since >= window:
            self.learning = False

    # wiring ---------------------------------------------------------------
    def wire(self, partner: "RelayPort", dst: Optional[tuple], expect: Optional[tuple], owner: Any,
             strict: bool = False) -> None:
        """Forward what arrives here to C{dst} through C{partner}'s socket,
        learning the peer afresh."""
        self.unwire()
        self.partner = partner
        self.sendto = partner.send
        self.dst = dst
        self.expect = normalise_target(expect)
        self.strict = strict
        self.owner = owner
        self.base_packets, self.base_bytes = self.packets, self.bytes

    def unwire(self) -> None:
        """Detach from the current session, crediting it what went through;
        from now on every packet is dropped (and counted)."""
        owner = self.owner
        if owner is not None:
            owner.credit(self)
        self.owner = None
        self.sendto = self.partner = self.dst = self.expect = self.source = None
        self.rank = 0
        self.learning = True
        self.learn_since = None
