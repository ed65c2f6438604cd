"""The relay on real loopback sockets: RTP both ways, latching from a
changed source port, nothing forwarded after BYE and the close delay,
sockets released (counted in /proc); a whole SIP call with media through
a ProxyService (IPv4, and IPv4 to IPv6); the ng client against our ng
server and against a relay that never answers."""
from __future__ import annotations

import errno
import os
import shutil
import socket
import tempfile
from typing import Any

from twisted.internet import defer, protocol, reactor
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from sipproxy.sip.message import Request
from sipproxy.nat.ng import NgClient, NgServer
from sipproxy.nat.relay import LocalRelay
from sipproxy.nat.sessions import SessionKey
from sipproxy.sip.sdp import parse_sdp
from sipproxy.app.service import ProxyService
from tests.nat_util import _worker_share, free_udp_block, open_udp_sockets, rtp, sdp
from tests.sip import request
from tests.test_proxy_loopback import UDPEndpoint
from tests.util import has_ipv6, wait_until

TIMEOUT = 5.0


class RTPEndpoint(protocol.DatagramProtocol):
    """A phone's media socket: records what arrives."""

    noisy = False

    def __init__(self) -> None:
        self.received: list[tuple[bytes, tuple]] = []

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.received.append((data, addr[:2]))

    def send(self, data: bytes, addr: tuple) -> None:
        self.transport.write(data, addr)

    @property
    def address(self) -> tuple:
        host = self.transport.getHost()
        return (host.host, host.port)


def key(cseq: Any = 1, idto: str = "tag=T") -> SessionKey:
    return SessionKey("call-1", cseq, "tag=F", idto, "sip:a@x", "sip:b@y", "F", "T")


class WorkerPortSliceTests(SynchronousTestCase):
    """Under C{trial -j}, each worker searches its own part of a port
    range for relay blocks: two workers taking the same first free block
    handed one test's ports, with packets still in flight, to another."""

    def setUp(self) -> None:
        # these tests play trial's workers; under pytest -n the worker's
        # name is in the environment, and is looked at first
        saved = os.environ.pop("PYTEST_XDIST_WORKER", None)
        if saved is not None:
            self.addCleanup(os.environ.__setitem__, "PYTEST_XDIST_WORKER", saved)

    def share_in(self, folder: str, low: int, high: int, count: int) -> tuple[int, int]:
        here = os.getcwd()
        os.makedirs(folder, exist_ok=True)
        os.chdir(folder)
        try:
            return _worker_share(low, high, count)
        finally:
            os.chdir(here)

    def test_workers_get_disjoint_slices_big_enough_for_their_blocks(self) -> None:
        root = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, root)
        for low, high, count in ((20000, 30000, 40), (30000, 31000, 200), (31000, 32000, 100)):
            slices = [self.share_in(os.path.join(root, "_trial_temp", str(n)), low, high, count) for n in range(2)]
            (a_low, a_high), (b_low, b_high) = slices
            self.assertTrue(low <= a_low < a_high <= b_low < b_high <= high, slices)
            self.assertTrue(all(h - lo >= 2 * count for lo, h in slices), slices)
        # outside a trial worker (pytest, a plain folder): the whole range
        self.assertEqual(self.share_in(os.path.join(root, "elsewhere", "1"), 20000, 30000, 40), (20000, 30000))

    def test_pytest_xdist_workers_get_their_own_slices(self) -> None:
        slices = []
        for name in ("gw0", "gw1"):
            os.environ["PYTEST_XDIST_WORKER"] = name
            try:
                slices.append(_worker_share(20000, 30000, 40))
            finally:
                del os.environ["PYTEST_XDIST_WORKER"]
        self.assertEqual(slices, [(20000, 22500), (22500, 25000)])

    def test_a_strange_xdist_worker_name_is_no_worker(self) -> None:
        plain = tempfile.mkdtemp()  # not a trial worker's folder either (trial runs this test in one)
        self.addCleanup(shutil.rmtree, plain)
        for name in ("", "gw", "gwx", "gw-1", "gw1.5", "main", "gw" + "9" * 400):
            os.environ["PYTEST_XDIST_WORKER"] = name
            try:
                share = self.share_in(plain, 20000, 30000, 40)
            finally:
                del os.environ["PYTEST_XDIST_WORKER"]
            if name == "gw" + "9" * 400:  # digits: a worker, whose slice is still inside the range
                self.assertTrue(20000 <= share[0] < share[1] <= 30000, share)
            else:
                self.assertEqual(share, (20000, 30000), name)


class RelayLoopbackTests(TestCase):
    caller_host = "127.0.0.1"
    callee_host = "127.0.0.2"

    def setUp(self) -> None:
        if ":" in self.caller_host and not has_ipv6():
            raise SkipTest("this host has no IPv6 loopback")
        low = free_udp_block(self.caller_host, 40)
        self.relay = LocalRelay(reactor, port_range=(low, low + 39), close_delay=0.2, expire_interval=0.05)
        self.relay.startService()
        self.addCleanup(self.relay.stopService)

    def endpoint(self, host: str) -> RTPEndpoint:
        ep = RTPEndpoint()
        port = reactor.listenUDP(0, ep, interface=host)
        self.addCleanup(port.stopListening)
        return ep

    def setup_call(self):
        caller, callee = self.endpoint(self.caller_host), self.endpoint(self.callee_host)
        k = key()
        (to_callee,) = self.relay.allocate_sockets(k, 0, self.callee_host, parse_sdp(sdp(*caller.address)))
        (to_caller,) = self.relay.allocate_sockets(k, 1, self.caller_host, parse_sdp(sdp(*callee.address)))
        self.assertEqual(self.relay.activate_session(k), 1)
        return caller, callee, (to_callee.address, to_callee.port), (to_caller.address, to_caller.port)

    @defer.inlineCallbacks
    def test_rtp_both_ways_then_bye_releases_the_sockets(self):
        before = open_udp_sockets()
        caller, callee, to_callee, to_caller = self.setup_call()
        self.assertEqual(open_udp_sockets(), before + 2 + 4)
        for seq in range(20):
            caller.send(rtp(seq), to_caller)
            callee.send(rtp(seq, ssrc=9), to_callee)
        yield wait_until(lambda: len(caller.received) == 20 and len(callee.received) == 20, TIMEOUT, what="20 each way")
        # symmetric: each side hears the relay from the port it sends to
        self.assertEqual({addr for _, addr in callee.received}, {to_callee})
        self.assertEqual({addr for _, addr in caller.received}, {to_caller})
        self.assertEqual([data for data, _ in callee.received], [rtp(seq) for seq in range(20)])
        (session,) = self.relay.sessions()
        self.assertEqual((session["packets_from"], session["packets_to"], session["bytes_from"]), (20, 20, 20 * 172))

        self.assertEqual(self.relay.close_session(key(cseq=None), reason="bye"), 1)
        yield wait_until(lambda: self.relay.socket_count == 0 and open_udp_sockets() == before + 2, TIMEOUT,
                         what="relay sockets closed")
        # nothing can be forwarded any more: the ports are free, and a
        # connected socket sending to one is refused by the kernel
        for host, port in (to_caller, to_callee):
            with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.bind((host, port))
        with socket.socket(socket.AF_INET6 if ":" in to_caller[0] else socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(to_caller)
            probe.send(rtp(99))
            probe.settimeout(2)
            error = self.assertRaises(OSError, probe.recv, 100)
            self.assertEqual(error.errno, errno.ECONNREFUSED)
        self.assertEqual(len(callee.received), 20)

    @defer.inlineCallbacks
    def test_latching_from_a_changed_source_port(self):
        caller, callee, to_callee, to_caller = self.setup_call()
        moved = self.endpoint(self.caller_host)  # the caller's NAT picked another port
        moved.send(rtp(1), to_caller)
        yield wait_until(lambda: callee.received, TIMEOUT, what="the first packet at the callee")
        callee.send(rtp(2), to_callee)
        yield wait_until(lambda: moved.received, TIMEOUT, what="the answer at the latched port")
        self.assertEqual(moved.received, [(rtp(2), to_caller)])
        self.assertEqual(caller.received, [])


    @defer.inlineCallbacks
    def test_a_restarted_relay_relays_again(self):
        self.setup_call()
        self.relay.stopService()
        self.assertEqual(self.relay.socket_count, 0)
        self.relay.startService()
        caller, callee, to_callee, to_caller = self.setup_call()
        caller.send(rtp(1), to_caller)
        yield wait_until(lambda: callee.received, TIMEOUT, what="a packet through the restarted relay")
        self.assertEqual(callee.received, [(rtp(1), to_callee)])

    @defer.inlineCallbacks
    def test_packets_injected_after_latching_are_not_forwarded(self):
        caller, callee, to_callee, to_caller = self.setup_call()
        attacker = self.endpoint(self.caller_host)
        caller.send(rtp(1), to_caller)
        yield wait_until(lambda: callee.received, TIMEOUT, what="the caller's first packet")
        for seq in range(20):
            attacker.send(rtp(100 + seq), to_caller)
        caller.send(rtp(2), to_caller)  # queued behind the injected packets on the same relay socket
        yield wait_until(lambda: rtp(2) in [data for data, _ in callee.received], TIMEOUT, what="the marker")
        self.assertEqual([data for data, _ in callee.received], [rtp(1), rtp(2)])

    @defer.inlineCallbacks
    def test_a_spray_before_the_first_packet_does_not_steal_the_stream(self):
        caller, callee, to_callee, to_caller = self.setup_call()
        attacker = self.endpoint(self.caller_host)
        low, high = self.relay.port_range
        for host in {self.caller_host, self.callee_host}:
            for port in range(low, high + 1):
                attacker.send(rtp(66), (host, port))
        call_ports = {to_caller[1], to_callee[1]}

        def sprayed() -> bool:  # both of the call's relay ports took the spray as their first source
            return all(port["source"] is not None for group in self.relay.describe("call-1")["groups"]
                       for media in group["media"] for port in media["ports"] if port["port"] in call_ports)

        yield wait_until(sprayed, TIMEOUT, what="the spray")
        caller.send(rtp(1), to_caller)  # goes where the callee's side learned: the attacker (forward.py)
        yield wait_until(lambda: attacker.received, TIMEOUT, what="the caller's first packet")
        callee.send(rtp(2), to_callee)
        yield wait_until(lambda: rtp(2) in [data for data, _ in caller.received], TIMEOUT,
                         what="callee to caller, not to the attacker")
        for host in {self.caller_host, self.callee_host}:
            for port in range(low, high + 1):
                attacker.send(rtp(67), (host, port))
        caller.send(rtp(3), to_caller)
        callee.send(rtp(4), to_callee)
        yield wait_until(lambda: rtp(3) in [data for data, _ in callee.received]
                         and rtp(4) in [data for data, _ in caller.received], TIMEOUT, what="the markers")
        # of the phones' media, the attacker got only the caller's first packet (before the
        # callee's first); its spray came back to it from the ports no phone used (RTCP here)
        self.assertEqual([data for data, _ in attacker.received if data not in (rtp(66), rtp(67))], [rtp(1)])
        got = [data for data, _ in callee.received + caller.received]
        self.assertNotIn(rtp(67), got)
        self.assertLessEqual(got.count(rtp(66)), 2)  # at most the spray's first packet on each port, before the phones


class IPv6RelayLoopbackTests(RelayLoopbackTests):
    caller_host = "::1"
    callee_host = "::1"


class ProxyCallTests(TestCase):
    """INVITE with SDP, 200 with SDP, ACK, RTP both ways, BYE: through a
    ProxyService with the local relay, our own endpoints at both ends."""

    host_a = "127.0.0.1"
    host_b = "127.0.0.2"

    def setUp(self) -> None:
        if ":" in self.host_a + self.host_b and not has_ipv6():
            raise SkipTest("this host has no IPv6 loopback")
        low = free_udp_block(self.host_a, 40)
        self.relay = LocalRelay(reactor, port_range=(low, low + 39), close_delay=0.2, expire_interval=0.05)
        legs = [f"udp:[{h}]:0" if ":" in h else f"udp:{h}:0" for h in (self.host_a, self.host_b)]
        self.service = ProxyService(reactor, legs, secret=b"N" * 32, nathelper=self.relay)
        self.service.startService()
        self.addCleanup(self.service.stopService)

    def listen(self, proto: Any, host: str) -> int:
        port = reactor.listenUDP(0, proto, interface=host)
        self.addCleanup(port.stopListening)
        return port.getHost().port

    @staticmethod
    def bracket(host: str) -> str:
        return f"[{host}]" if ":" in host else host

    @defer.inlineCallbacks
    def test_call_with_media_through_the_proxy(self):
        self.assertIs(self.relay.parent, self.service)
        leg_a, leg_b = self.service.legs
        uac, uas = UDPEndpoint(), UDPEndpoint()
        uac_port, uas_port = self.listen(uac, self.host_a), self.listen(uas, self.host_b)
        caller, callee = RTPEndpoint(), RTPEndpoint()
        caller_rtp, callee_rtp = self.listen(caller, self.host_a), self.listen(callee, self.host_b)
        a, b = self.bracket(self.host_a), self.bracket(self.host_b)

        invite = request(uri=f"sip:bob@{b}:{uas_port}", via=f"SIP/2.0/UDP {a}:{uac_port};branch=z9hG4bKnat1",
                         contact=f"<sip:alice@{a}:{uac_port}>", headers=[("Content-Type", "application/sdp")],
                         body=sdp(self.host_a, caller_rtp))
        uac.send(invite, (leg_a.host, leg_a.port))
        got, _ = yield uas.next()
        offer = parse_sdp(got.body).media[0]
        to_callee = (offer.address, offer.port)
        self.assertEqual(offer.address, leg_b.host)  # the callee sends to the proxy's leg on its side

        ok = got.create_response(200, to_tag="bob1", record_route=True,
                                 headers=[("Contact", f"<sip:bob@{b}:{uas_port}>"), ("Content-Type", "application/sdp")])
        ok.set_body(sdp(self.host_b, callee_rtp).encode())
        uas.send(bytes(ok), (leg_b.host, leg_b.port))
        answer, _ = yield uac.next()
        answered = parse_sdp(answer.body).media[0]
        to_caller = (answered.address, answered.port)
        self.assertEqual(answered.address, leg_a.host)

        route = ", ".join(reversed(answer.get_all("record-route")))
        remote = str(answer.name_addr("contact").uri)

        def in_dialog(method: str, cseq: int, branch: str) -> bytes:
            return bytes(Request(method, remote, [
                ("Via", f"SIP/2.0/UDP {a}:{uac_port};branch={branch}"), ("Route", route), ("Max-Forwards", "70"),
                ("From", answer.get("from")), ("To", answer.get("to")), ("Call-ID", answer.call_id),
                ("CSeq", f"{cseq} {method}"), ("Content-Length", "0")]))

        uac.send(in_dialog("ACK", 1, "z9hG4bKnat2"), (leg_a.host, leg_a.port))
        got_ack, _ = yield uas.next()
        self.assertEqual(got_ack.method, "ACK")

        for seq in range(10):
            caller.send(rtp(seq), to_caller)
            callee.send(rtp(seq, ssrc=7), to_callee)
        yield wait_until(lambda: len(caller.received) == 10 and len(callee.received) == 10, TIMEOUT,
                         what="RTP both ways")
        self.assertEqual({addr for _, addr in callee.received}, {to_callee})
        self.assertEqual({addr for _, addr in caller.received}, {to_caller})

        uac.send(in_dialog("BYE", 2, "z9hG4bKnat3"), (leg_a.host, leg_a.port))
        got_bye, _ = yield uas.next()
        self.assertEqual(got_bye.method, "BYE")
        self.assertEqual(self.relay.sessions(), [])
        yield wait_until(lambda: self.relay.socket_count == 0, TIMEOUT, what="relay sockets released")
        self.assertEqual(self.relay.calls, {})


class BridgingCallTests(ProxyCallTests):
    """The caller on IPv4, the callee on IPv6: the relay bridges them."""

    host_b = "::1"


class NgLoopbackTests(TestCase):
    def setUp(self) -> None:
        low = free_udp_block("127.0.0.1", 20)
        self.relay = LocalRelay(reactor, port_range=(low, low + 19))
        self.server = NgServer(self.relay, reactor, ("127.0.0.1", 0))
        self.server.startService()
        self.addCleanup(self.server.stopService)
        self.addCleanup(self.relay.close_all)
        self.client = NgClient(reactor, ("127.0.0.1", self.server.port.getHost().port))
        self.client.startService()
        self.addCleanup(self.client.stopService)

    @defer.inlineCallbacks
    def test_offer_and_answer_over_real_sockets(self):
        pong = yield self.client.ping()
        self.assertEqual(pong, {"result": b"pong"})
        offer = yield self.client.command({"command": "offer", "call-id": "c1", "from-tag": "F",
                                           "sdp": sdp("127.0.0.1", 40000), "direction": ["127.0.0.1", "127.0.0.2"]})
        self.assertEqual(parse_sdp(offer["sdp"]).media[0].address, "127.0.0.2")
        answer = yield self.client.command({"command": "answer", "call-id": "c1", "from-tag": "F", "to-tag": "T",
                                            "sdp": sdp("127.0.0.2", 40010)})
        self.assertEqual(parse_sdp(answer["sdp"]).media[0].address, "127.0.0.1")
        self.assertEqual(len(self.relay.sessions("c1")), 1)

    @defer.inlineCallbacks
    def test_a_relay_that_never_answers_gets_the_call_a_503(self):
        silent = protocol.DatagramProtocol()
        silent_port = reactor.listenUDP(0, silent, interface="127.0.0.1")
        self.addCleanup(silent_port.stopListening)
        client = NgClient(reactor, ("127.0.0.1", silent_port.getHost().port), timeout=0.6, retransmit=0.2)
        service = ProxyService(reactor, ["udp:127.0.0.1:0", "udp:127.0.0.2:0"], secret=b"N" * 32, nathelper=client)
        service.startService()
        self.addCleanup(service.stopService)
        leg_a = service.legs[0]
        uac = UDPEndpoint()
        uac_port = reactor.listenUDP(0, uac, interface="127.0.0.1")
        self.addCleanup(uac_port.stopListening)
        invite = request(uri="sip:bob@127.0.0.2:5999", via=f"SIP/2.0/UDP 127.0.0.1:{uac_port.getHost().port};"
                                                            "branch=z9hG4bKsilent",
                         headers=[("Content-Type", "application/sdp")], body=sdp("127.0.0.1", 40000))
        started = reactor.seconds()
        uac.send(invite, (leg_a.host, leg_a.port))
        response, _ = yield uac.next().addTimeout(TIMEOUT, reactor)
        self.assertEqual((response.code, response.get("retry-after")), (503, "5"))
        self.assertGreaterEqual(reactor.seconds() - started, 0.5)
