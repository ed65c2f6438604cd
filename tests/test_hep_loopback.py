"""HEP capture end to end: a real C{twistd sipproxy --hep} on loopback
forwards requests and responses over UDP, TCP and TLS; a UDP collector
gathers our HEP datagrams; sngrep (a real HEP reader) decodes them and
tshark reads what sngrep made of them.

Wireshark up to 4.0 (Debian 12's tshark) has no HEP dissector
(C{tshark -G protocols} lists none; the one users load is a Lua plugin),
so the third-party decode is sngrep's: C{sngrep -I hep.pcap -E} parses
the HEP packets in a capture and C{-O} writes each message it found as a
plain SIP/UDP frame with the addresses, ports and timestamp from our
chunks, which tshark's SIP dissector then reads. sngrep writes every frame
as IPv4/UDP, so the transport is checked on our own decode of the same
datagrams.
"""
from __future__ import annotations

import os
import socket
import ssl
import struct
from twisted.internet import threads
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from sipproxy.transport.hep import decode
from tests.certs import make_certificates
from tests.util import require_program, reserve_port, run_process, start_proxy, temp_dir

HOST = "127.0.0.1"
#: bounds every blocking socket operation of the exchange
IO_TIMEOUT = 5.0


def request(method: str, target: str, via: str, call_id: str) -> bytes:
    return (f"{method} {target} SIP/2.0\r\n"
            f"Via: SIP/2.0/{via};branch=z9hG4bK-{call_id};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:alice@{HOST}>;tag=a-{call_id}\r\n"
            f"To: <{target}>\r\n"
            f"Call-ID: {call_id}\r\n"
            f"CSeq: 1 {method}\r\n"
            "Content-Length: 0\r\n\r\n").encode()


def answer(message: bytes) -> bytes:
    """A 200 for C{message}: its Via, From, To, Call-ID and CSeq copied."""
    head = message.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]
    kept = [line for line in head if line.split(b":", 1)[0].strip().lower()
            in (b"via", b"v", b"from", b"f", b"to", b"t", b"call-id", b"i", b"cseq")]
    return b"SIP/2.0 200 OK\r\n" + b"\r\n".join(kept) + b"\r\nContent-Length: 0\r\n\r\n"


def read_message(sock: socket.socket) -> bytes:
    """One message with an empty body from a stream socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise AssertionError(f"connection closed after {data!r}")
        data += chunk
    return data


def exchange(ports: dict, certs: dict) -> dict:
    """Four transactions through the proxy (blocking, in a thread; every
    socket has a timeout). Returns the client's local addresses."""
    uas = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    uas.settimeout(IO_TIMEOUT)
    uas.bind((HOST, ports["uas_udp"]))
    tcp_uas = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp_uas.settimeout(IO_TIMEOUT)
    tcp_uas.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp_uas.bind((HOST, ports["uas_tcp"]))
    tcp_uas.listen(1)
    local = {}
    udp_target = f"sip:bob@{HOST}:{ports['uas_udp']}"

    def serve_udp() -> None:
        data, addr = uas.recvfrom(65535)
        uas.sendto(answer(data), addr)

    try:
        # 1. UDP in, UDP out
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.settimeout(IO_TIMEOUT)
        client.bind((HOST, 0))
        local["udp"] = client.getsockname()[1]
        client.sendto(request("OPTIONS", udp_target, f"UDP {HOST}:{local['udp']}", "hep-udp"), (HOST, ports["sip"]))
        serve_udp()
        assert client.recvfrom(65535)[0].startswith(b"SIP/2.0 200")
        # 2. TCP in, UDP out
        with socket.create_connection((HOST, ports["sip"]), timeout=IO_TIMEOUT) as tcp:
            local["tcp"] = tcp.getsockname()[1]
            tcp.sendall(request("MESSAGE", udp_target, f"TCP {HOST}:{local['tcp']}", "hep-tcp"))
            serve_udp()
            assert read_message(tcp).startswith(b"SIP/2.0 200")
        # 3. TLS in, UDP out
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.load_verify_locations(certs["ca"])
        with socket.create_connection((HOST, ports["tls"]), timeout=IO_TIMEOUT) as raw:
            with context.wrap_socket(raw) as tls:
                local["tls"] = tls.getsockname()[1]
                tls.sendall(request("INFO", udp_target, f"TLS {HOST}:{local['tls']}", "hep-tls"))
                serve_udp()
                assert read_message(tls).startswith(b"SIP/2.0 200")
        # 4. UDP in, TCP out (the proxy connects to the UAS)
        client.sendto(request("OPTIONS", f"sip:bob@{HOST}:{ports['uas_tcp']};transport=tcp",
                              f"UDP {HOST}:{local['udp']}", "hep-out-tcp"), (HOST, ports["sip"]))
        conn, _ = tcp_uas.accept()
        with conn:
            conn.settimeout(IO_TIMEOUT)
            conn.sendall(answer(read_message(conn)))
            assert client.recvfrom(65535)[0].startswith(b"SIP/2.0 200")
        client.close()
    finally:
        uas.close()
        tcp_uas.close()
    return local


def first_word(message: bytes) -> str:
    """The method of a request, the status code of a response."""
    words = message.split(b" ", 2)
    return (words[1] if message.startswith(b"SIP/2.0 ") else words[0]).decode()


def collect(sock: socket.socket, count: int) -> list[bytes]:
    """C{count} datagrams (or fewer, if none comes for IO_TIMEOUT)."""
    got = []
    while len(got) < count:
        try:
            got.append(sock.recv(65535))
        except socket.timeout:
            break
    return got


def write_pcap(path: str, datagrams: list[bytes], port: int) -> None:
    """A classic pcap of Ethernet/IPv4/UDP frames carrying C{datagrams}
    from 127.0.0.1 to 127.0.0.1:C{port}."""
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for number, datagram in enumerate(datagrams):
            udp = struct.pack("!HHHH", 40000, port, 8 + len(datagram), 0) + datagram
            ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), number, 0, 64, 17, 0,
                             socket.inet_aton(HOST), socket.inet_aton(HOST))
            words = sum(struct.unpack("!10H", ip))
            words = (words >> 16) + (words & 0xFFFF)
            ip = ip[:10] + struct.pack("!H", ~(words + (words >> 16)) & 0xFFFF) + ip[12:]
            frame = b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + udp
            f.write(struct.pack("<IIII", number, 0, len(frame), len(frame)) + frame)


class HEPLoopbackTests(TestCase):
    timeout = 120
    maxDiff = None

    @inlineCallbacks
    def test_udp_tcp_tls_copies_decoded_by_sngrep_and_tshark(self):
        sngrep = require_program("sngrep")
        tshark = require_program("tshark")
        cwd = temp_dir(self)
        certs = make_certificates(cwd)
        collector = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        collector.settimeout(IO_TIMEOUT)
        collector.bind((HOST, 0))
        self.addCleanup(collector.close)
        hep_port = collector.getsockname()[1]
        ports: dict = {}

        def legs() -> list[str]:
            ports.update(sip=reserve_port(), tls=reserve_port(kind=socket.SOCK_STREAM),
                         uas_udp=reserve_port(), uas_tcp=reserve_port(kind=socket.SOCK_STREAM))
            return [f"udp:{HOST}:{ports['sip']}", f"tcp:{HOST}:{ports['sip']}", f"tls:{HOST}:{ports['tls']}"]

        proxy = yield start_proxy(self, cwd, legs, args=["--hep", f"{HOST}:{hep_port}", "--hep-id", "2001",
                                                         "--tls-cert", certs["cert"]])
        local = yield threads.deferToThread(exchange, ports, certs)
        datagrams = yield threads.deferToThread(collect, collector, 16)
        self.assertEqual(len(datagrams), 16, proxy.describe())

        # our own decode: transport, family, agent, Call-ID correlation
        sip, tls, udp_uas, tcp_uas = ((HOST, ports["sip"]), (HOST, ports["tls"]), (HOST, ports["uas_udp"]),
                                      (HOST, ports["uas_tcp"]))
        client_udp, client_tcp, client_tls = (HOST, local["udp"]), (HOST, local["tcp"]), (HOST, local["tls"])
        packets = [decode(d) for d in datagrams]
        seen = sorted((p.src, p.dst, p.proto, first_word(p.payload), p.correlation) for p in packets)
        expected = sorted([
            (client_udp, sip, 17, "OPTIONS", b"hep-udp"), (sip, udp_uas, 17, "OPTIONS", b"hep-udp"),
            (udp_uas, sip, 17, "200", b"hep-udp"), (sip, client_udp, 17, "200", b"hep-udp"),
            (client_tcp, sip, 6, "MESSAGE", b"hep-tcp"), (sip, udp_uas, 17, "MESSAGE", b"hep-tcp"),
            (udp_uas, sip, 17, "200", b"hep-tcp"), (sip, client_tcp, 6, "200", b"hep-tcp"),
            (client_tls, tls, 6, "INFO", b"hep-tls"), (sip, udp_uas, 17, "INFO", b"hep-tls"),
            (udp_uas, sip, 17, "200", b"hep-tls"), (tls, client_tls, 6, "200", b"hep-tls"),
            (client_udp, sip, 17, "OPTIONS", b"hep-out-tcp"), (sip, tcp_uas, 6, "OPTIONS", b"hep-out-tcp"),
            (tcp_uas, sip, 6, "200", b"hep-out-tcp"), (sip, client_udp, 17, "200", b"hep-out-tcp"),
        ])
        self.assertEqual(seen, expected)
        for packet in packets:
            self.assertEqual((packet.family, packet.agent_id, packet.proto_type), (2, 2001, 1))
            self.assertIn(b"Call-ID: " + packet.correlation + b"\r\n", packet.payload)
        tls_in = [p for p in packets if p.dst == tls]
        self.assertEqual(len(tls_in), 1)
        self.assertTrue(tls_in[0].payload.startswith(b"INFO sip:bob@"), "TLS is copied as plaintext")

        # the third-party decode: sngrep reads the HEP, tshark the SIP it found
        hep_pcap, sip_pcap = os.path.join(cwd, "hep.pcap"), os.path.join(cwd, "sip.pcap")
        write_pcap(hep_pcap, datagrams, hep_port)
        result = yield threads.deferToThread(run_process, [sngrep, "-F", "-N", "-q", "-E", "-I", hep_pcap,
                                                           "-O", sip_pcap], 60)
        self.assertEqual(result.returncode, 0, result)
        fields = ["frame.time_epoch", "ip.src", "udp.srcport", "ip.dst", "udp.dstport", "sip.Method",
                  "sip.Status-Code", "sip.Call-ID"]
        argv = [tshark, "-n", "-r", sip_pcap, "-T", "fields", "-E", "separator=|"]
        for field in fields:
            argv += ["-e", field]
        result = yield threads.deferToThread(run_process, argv, 60)
        self.assertEqual(result.returncode, 0, result)
        rows = {tuple(line.split("|")) for line in result.stdout.splitlines() if line.strip()}
        decoded = {((r[1], int(r[2])), (r[3], int(r[4])), r[5] or r[6], r[7].encode()) for r in rows}
        self.assertEqual(decoded, {(src, dst, word, call_id) for src, dst, _, word, call_id in expected},
                         result.stdout)
        # the timestamps sngrep read from our chunks are the capture times
        stamps = sorted(float(r[0]) for r in rows)
        self.assertLess(abs(stamps[0] - min(p.timestamp for p in packets)), 1e-3)
        self.assertLess(stamps[-1] - stamps[0], 60)
