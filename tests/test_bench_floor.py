"""bench/ua_floor.py, the no-stack floor of bench/ua_bench.py, run as a
real process on loopback: it answers and places calls as sipp expects,
shrugs off datagrams that are not what it expects (with --parse: drops
what sipproxy's parser refuses), and refuses a bad --to in one line."""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.util import PROJECT_ROOT, child_environment, reserve_port, run_process, stop_process

FLOOR = os.path.join(PROJECT_ROOT, "bench", "ua_floor.py")
HOST = "127.0.0.1"


def invite(port: int, call_id: str) -> bytes:
    return (f"INVITE sip:floor@{HOST} SIP/2.0\r\nVia: SIP/2.0/UDP {HOST}:{port};branch=z9hG4bK{call_id}\r\n"
            f"From: <sip:t@{HOST}>;tag=1\r\nTo: <sip:floor@{HOST}>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\n"
            f"Content-Length: 0\r\n\r\n").encode()


class FloorTests(SynchronousTestCase):
    def start(self, *args: str) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, FLOOR, *args, "--max-time", "30"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=child_environment(), cwd=PROJECT_ROOT)
        self.addCleanup(stop_process, proc)
        assert proc.stdout is not None
        self.assertEqual(json.loads(proc.stdout.readline()), {"event": "ready"})
        return proc

    def socket(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        sock.bind((HOST, 0))
        sock.settimeout(5)
        return sock

    def start_caller(self, *extra: str) -> tuple[socket.socket, str, subprocess.Popen]:
        """A floor caller placing one call to a socket of ours: (that
        socket, the target URI, the process)."""
        uas = self.socket()
        target = f"sip:service@{HOST}:{uas.getsockname()[1]}"
        port = reserve_port(HOST)
        proc = self.start("--mode", "call", "--leg", f"{HOST}:{port}", "--to", target, "--rate", "10",
                          "--calls", "1", *extra)
        return uas, target, proc

    @staticmethod
    def answers_until_200(sock: socket.socket, call_id: bytes) -> list[bytes]:
        """What arrives until the 200 for C{call_id} (at most 10 s)."""
        answers: list[bytes] = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(b"Call-ID: " + call_id in a and a.startswith(b"SIP/2.0 200")
                                                      for a in answers):
            answers.append(sock.recv(65535))
        return answers

    def test_the_callee_ignores_junk_and_goes_on_answering(self) -> None:
        port = reserve_port(HOST)
        proc = self.start("--mode", "answer", "--leg", f"{HOST}:{port}")
        sock = self.socket()
        hostile = [b"", b"\x00" * 40, b"INVITE", b"INVITE \r\n\r\n", b"BYE sip:x SIP/2.0\r\n" + b"X: y\r\n" * 2000,
                   b"SIP/2.0 200 OK\r\n\r\n", os.urandom(1400), b"INVITE sip:a SIP/2.0\r\n" + b"a" * 60000]
        for data in hostile:
            sock.sendto(data, (HOST, port))
        # junk that starts like an INVITE gets an answer with nothing copied
        # (sipp never sends such), the rest none; then a real INVITE is
        # answered as ever
        sock.sendto(invite(sock.getsockname()[1], "real-1"), (HOST, port))
        answers = self.answers_until_200(sock, b"real-1")
        real = [a for a in answers if b"Call-ID: real-1" in a]
        self.assertEqual([a.split(b"\r\n", 1)[0] for a in real], [b"SIP/2.0 100 Trying", b"SIP/2.0 200 OK"])
        self.assertRegex(real[1].decode(), r"To: <sip:floor@127\.0\.0\.1>;tag=[0-9a-f]{16}\r\n")
        self.assertIsNone(proc.poll())

    def test_the_caller_builds_the_ack_only_from_a_whole_answer(self) -> None:
        uas, target, proc = self.start_caller()
        request, source = uas.recvfrom(65535)
        self.assertTrue(request.startswith(b"INVITE " + target.encode() + b" SIP/2.0\r\n"), request)
        head = request.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
        call_id = next(line for line in head if line.startswith(b"Call-ID:"))
        cseq = next(line for line in head if line.startswith(b"CSeq:"))
        # answers it cannot use: no Call-ID, another call's, no To, junk
        for junk in (b"SIP/2.0 200 OK\r\n" + cseq + b"\r\n\r\n",
                     b"SIP/2.0 200 OK\r\nCall-ID: someone-else\r\n" + cseq + b"\r\n\r\n",
                     b"SIP/2.0 200 OK\r\n" + call_id + b"\r\n" + cseq + b"\r\n\r\n",
                     b"SIP/2.0 200", b"", os.urandom(500)):
            uas.sendto(junk, source)
        uas.sendto(b"SIP/2.0 200 OK\r\n" + call_id + b"\r\n" + cseq + b"\r\nTo: <" + target.encode()
                   + b">;tag=uas\r\n\r\n", source)
        ack, _ = uas.recvfrom(65535)
        self.assertTrue(ack.startswith(b"ACK "), ack)
        self.assertIn(b";tag=uas", ack)
        bye, _ = uas.recvfrom(65535)
        self.assertTrue(bye.startswith(b"BYE "), bye)
        bye_head = bye.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
        bye_cseq = next(line for line in bye_head if line.startswith(b"CSeq:"))
        uas.sendto(b"SIP/2.0 200 OK\r\n" + call_id + b"\r\n" + bye_cseq + b"\r\n\r\n", source)
        out, err = proc.communicate(timeout=20)
        self.assertEqual(err, "")  # nothing it was sent raised
        events = [json.loads(line) for line in out.splitlines()]
        done = [e for e in events if e.get("event") == "phase_done"]
        self.assertEqual((done[0]["ok"], done[0]["failed"]), (1, 0), out)
        self.assertEqual(proc.returncode, 0)

    def test_with_parse_the_callee_drops_what_does_not_parse(self) -> None:
        port = reserve_port(HOST)
        proc = self.start("--mode", "answer", "--leg", f"{HOST}:{port}", "--parse")
        sock = self.socket()
        here = sock.getsockname()[1]
        # without --parse the six INVITEs and the BYE among these are answered
        hostile = [b"INVITE \r\n\r\n", b"INVITE sip:a SIP/2.0\r\n" + b"a" * 60000,
                   invite(here, "no-end").split(b"\r\n\r\n")[0] + b"\r\nX: " + b"y" * 2000,  # headers never end
                   invite(here, "no-length").replace(b"Content-Length: 0\r\n", b"Content-Length: 99\r\n"),
                   invite(here, "bad-via").replace(b"Via: SIP/2.0/UDP", b"Via: SIP/2.0/UDP ["),
                   invite(here, "nul").replace(b"CSeq: 1", b"CSeq: \x001"),
                   b"", os.urandom(1400), b"BYE sip:x SIP/2.0\r\n" + b"X: y\r\n" * 2000]
        for data in hostile:
            sock.sendto(data, (HOST, port))
        sock.sendto(invite(here, "real-2"), (HOST, port))
        answers = self.answers_until_200(sock, b"real-2")
        # the real INVITE's 100 and 200, and nothing for the rest
        self.assertEqual([a.split(b"\r\n", 1)[0] for a in answers], [b"SIP/2.0 100 Trying", b"SIP/2.0 200 OK"])
        self.assertTrue(all(b"Call-ID: real-2" in a for a in answers), answers)
        self.assertIsNone(proc.poll())

    def test_with_parse_the_caller_completes_a_call(self) -> None:
        uas, _, proc = self.start_caller("--parse")

        def answer(request: bytes, code: bytes, tag: bytes = b";tag=uas") -> bytes:
            head = request.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]
            copied = [line + tag if line.startswith(b"To:") else line for line in head
                      if line.split(b":")[0] in (b"Via", b"From", b"To", b"Call-ID", b"CSeq")]
            return b"SIP/2.0 " + code + b"\r\n" + b"\r\n".join(copied) + b"\r\nContent-Length: 0\r\n\r\n"

        request, source = uas.recvfrom(65535)
        self.assertTrue(request.startswith(b"INVITE "), request)
        # a 200 the parser refuses (no Via) is dropped: the ACK is for the
        # whole one that follows (without --parse the first is taken)
        no_via = b"\r\n".join(line for line in answer(request, b"200 OK", b";tag=refused").split(b"\r\n")
                               if not line.startswith(b"Via:"))
        uas.sendto(no_via, source)
        uas.sendto(answer(request, b"200 OK"), source)
        ack, _ = uas.recvfrom(65535)
        self.assertTrue(ack.startswith(b"ACK "), ack)
        self.assertIn(b";tag=uas\r\n", ack)
        bye, _ = uas.recvfrom(65535)
        self.assertTrue(bye.startswith(b"BYE "), bye)
        uas.sendto(answer(bye, b"200 OK", tag=b""), source)
        out, err = proc.communicate(timeout=20)
        self.assertEqual(err, "")
        done = [e for e in map(json.loads, out.splitlines()) if e.get("event") == "phase_done"]
        self.assertEqual((done[0]["ok"], done[0]["failed"]), (1, 0), out)

    def test_a_bad_to_is_one_line(self) -> None:
        for to in ("sip:service@localhost:5060", "sip:service@127.0.0.1", "sip:service@127.0.0.1:99999",
                   "sip:" + "x" * 5000 + "@127.0.0.1:5060 ", "tel:+1555"):
            result = run_process([sys.executable, FLOOR, "--mode", "call", "--leg", f"{HOST}:0", "--to", to], 20,
                                 cwd=PROJECT_ROOT, env=child_environment())
            self.assertEqual(result.returncode, 1, result)
            self.assertEqual(result.stderr.count("\n"), 1, result)
            self.assertTrue(re.match(r"bad --to ", result.stderr), result)
