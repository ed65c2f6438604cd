"""Media interop of sipproxy-ua with real peers (issue 14).

- sipp: C{uac_pcap} (PCMA from sipp's g711a.pcap, then an RFC 2833 '1')
  calls C{sipproxy-ua answer --record}: the recording is the pcap's
  payload (decoded with tshark) with a correlation >= 0.99; sipp replays
  its twelve shipped RFC 2833 captures (tests/sipp/uac_dtmf_pcaps.xml) and
  we report the twelve digits in order; C{sipproxy-ua call --play
  --record} to C{sipp -sn uas -rtp_echo} records its own audio back.
- Net::SIP (tests/perl/media_ua.pl): it sends all sixteen keys by RFC 2833
  and in-band and we detect them in order; we send all sixteen both ways
  and its cb_dtmf reports them; it records the file we play (Net::SIP's
  raw PCMU file) and the recording matches.
- baresip: we call it (auto answer, echo module), play a WAV, record what
  comes back; our RFC 4733 keys go out and what comes back is reported.

Each peer is skipped when missing, and a failure under
SIPPROXY_REQUIRE_INTEROP=1 (tests/util.py). A few seconds of audio each.
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.protocol import ClientCreator
from twisted.protocols.basic import NetstringReceiver
from twisted.trial.unittest import TestCase

from sipproxy.ua.media import g711
from sipproxy.ua.media.audiofile import read_wav, write_wav
from sipproxy.ua.media.dtmf import DIGITS
from tests.media_util import align, chirp, samples
from tests.test_ua_cli import run_cli
from tests.util import (FailTest, interop_required, port_bound, process_exited, require_program, reserve_port,
                        start_process, tcp_port_answers, temp_dir, wait_until)

HERE = os.path.dirname(os.path.abspath(__file__))
SIPP_DATA = "/usr/share/sip-tester"
PERL_UA = os.path.join(HERE, "perl", "media_ua.pl")


def require_file(path: str, what: str) -> str:
    """C{path}, or a skip (a failure under SIPPROXY_REQUIRE_INTEROP=1)."""
    if os.path.exists(path):
        return path
    from twisted.trial.unittest import SkipTest

    reason = f"{what} not found at {path}"
    if interop_required():
        raise FailTest(reason)
    raise SkipTest(reason)


def pcap_payload(path: str, port: int) -> bytes:
    """The RTP payload bytes of a capture, in order, decoded by tshark
    (UDP port C{port} read as RTP)."""
    out = subprocess.run([require_program("tshark"), "-r", path, "-d", f"udp.port=={port},rtp", "-Y", "rtp",
                          "-T", "fields", "-e", "rtp.payload"], capture_output=True, text=True, timeout=60,
                         check=True).stdout
    return b"".join(bytes.fromhex(line.replace(":", "").strip()) for line in out.splitlines() if line.strip())


def events_of(collect: Any, name: str) -> list[dict]:
    return [e for e in collect.events if e["event"] == name]


def json_lines(path: str) -> list[dict]:
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                out.append(json.loads(line))
    return out


class SippMediaTests(TestCase):
    timeout = 90

    def setUp(self) -> None:
        self.sipp = require_program("sipp")
        self.folder = temp_dir(self)
        require_file(os.path.join(SIPP_DATA, "g711a.pcap"), "sipp's g711a.pcap (package sip-tester)")
        os.symlink(SIPP_DATA, os.path.join(self.folder, "pcap"))

    @defer.inlineCallbacks
    def _sipp_calls_us(self, scenario: list[str], *options: str) -> Any:
        answer = run_cli("answer", "--leg", "udp:127.0.0.1:0", "--from", "service", "--timeout", "60", *options)
        listening = yield answer.wait_for("listening")
        port = listening["legs"][0].rsplit(":", 1)[1]
        sipp = start_process(self, [self.sipp, *scenario, "-m", "1", "-i", "127.0.0.1", "-p", str(reserve_port()),
                                    "-mp", str(reserve_port()), "-s", "service", "-nostdin",
                                    f"127.0.0.1:{port}"], self.folder, "sipp")
        yield wait_until(process_exited(sipp), timeout=60, what="sipp's call")
        code = yield answer.ended
        self.assertEqual(sipp.returncode, 0, self._sipp_log())
        self.assertEqual(code, 0, answer.err.decode())
        return answer

    def _sipp_log(self) -> str:
        with open(os.path.join(self.folder, "sipp.out"), errors="replace") as f:
            return f.read()[-2000:]

    @defer.inlineCallbacks
    def test_uac_pcap_is_recorded_as_sent(self) -> Any:
        record = os.path.join(self.folder, "rec.wav")
        answer = yield self._sipp_calls_us(["-sn", "uac_pcap"], "--record", record)
        sent = pcap_payload(os.path.join(SIPP_DATA, "g711a.pcap"), 2006)
        reference = samples(g711.alaw_to_pcm16(sent))
        recorded = samples(read_wav(record))
        value, lag = align(reference, recorded, 1600)
        media = events_of(answer, "media")[0]
        print(f"\nsipp uac_pcap -> answer --record: {len(sent) // 240} pcap packets ({len(reference)} samples), "
              f"recorded {len(recorded)} samples, correlation {value:.5f} at lag {lag}; media event {media}; "
              f"dtmf {events_of(answer, 'dtmf')}")
        self.assertGreaterEqual(value, 0.99)
        self.assertEqual([e["digit"] for e in events_of(answer, "dtmf")], ["1"])
        # 236 audio packets and the '1' (10 packets, the two repeats of its end share a sequence number)
        self.assertEqual(media["received"], 236 + 8)

    @defer.inlineCallbacks
    def test_rfc2833_pcaps_are_the_right_digits(self) -> Any:
        answer = yield self._sipp_calls_us(["-sf", os.path.join(HERE, "sipp", "uac_dtmf_pcaps.xml")])
        digits = events_of(answer, "dtmf")
        print(f"\nsipp RFC 2833 pcaps 0-9 * #: detected {''.join(d['digit'] for d in digits)} "
              f"({sorted({(d['method'], d['duration_ms']) for d in digits})})")
        self.assertEqual("".join(d["digit"] for d in digits), "0123456789*#")
        self.assertEqual({d["method"] for d in digits}, {"rfc4733"})

    @defer.inlineCallbacks
    def test_our_audio_comes_back_from_rtp_echo(self) -> Any:
        port = reserve_port()
        media_port = reserve_port()
        sipp = start_process(self, [self.sipp, "-sn", "uas", "-rtp_echo", "-mp", str(media_port), "-m", "1",
                                    "-i", "127.0.0.1", "-p", str(port), "-nostdin"], self.folder, "sipp")
        play = os.path.join(self.folder, "chirp.wav")
        sent = chirp(2.0)
        write_wav(play, sent)
        record = os.path.join(self.folder, "back.wav")
        yield wait_until(port_bound("127.0.0.1", port), timeout=10, what="sipp's SIP port")
        call = run_cli("call", "--play", play, "--record", record, "--timeout", "30", f"sip:service@127.0.0.1:{port}")
        code = yield call.ended
        self.assertEqual(code, 0, (call.events, call.err.decode()))
        yield wait_until(process_exited(sipp), timeout=20, what="sipp's end")
        reference = samples(g711.ulaw_to_pcm16(g711.pcm16_to_ulaw(sent)))[800:12800]
        value, lag = align(reference, samples(read_wav(record)), 4000)
        media = events_of(call, "media")[0]
        print(f"\ncall --play --record -> sipp uas -rtp_echo: correlation {value:.5f} at lag {lag - 800} samples; "
              f"media event {media}")
        self.assertGreaterEqual(value, 0.99)
        self.assertEqual(media["sent"], 100)
        self.assertGreaterEqual(media["received"], 95)


class NetSipMediaTests(TestCase):
    """Net::SIP::Simple (Perl) as the peer: DTMF both ways by both methods,
    and an answer machine recording what we play."""

    timeout = 90

    def setUp(self) -> None:
        self.perl = require_program("perl")
        result = subprocess.run([self.perl, "-MNet::SIP", "-MJSON::PP", "-e", "1"], capture_output=True,
                                timeout=30)
        if result.returncode != 0:
            require_file("/usr/share/perl5/Net/SIP.pm", "Perl's Net::SIP (package libnet-sip-perl)")
        self.folder = temp_dir(self)

    def start_perl(self, name: str, *args: str) -> tuple[subprocess.Popen, str]:
        port = reserve_port()
        proc = start_process(self, [self.perl, PERL_UA, "--leg", f"127.0.0.1:{port}", *args], self.folder, name)
        return proc, f"127.0.0.1:{port}"

    def perl_events(self, name: str) -> list[dict]:
        return json_lines(os.path.join(self.folder, name + ".out"))

    def perl_log(self, name: str) -> str:
        with open(os.path.join(self.folder, name + ".err"), errors="replace") as f:
            return f.read()[-2000:]

    @defer.inlineCallbacks
    def _perl_answers(self, name: str, calls: list[list[str]], *perl_args: str) -> Any:
        perl, address = self.start_perl(name, "--mode", "answer", "--calls", str(len(calls)), "--timeout", "60",
                                        *perl_args)
        yield wait_until(lambda: any(e["event"] == "ready" for e in self.perl_events(name)), timeout=20,
                         what="Net::SIP's ready line")
        outputs = []
        for args in calls:
            call = run_cli("call", "--timeout", "30", *args, f"sip:netsip@{address}")
            code = yield call.ended
            self.assertEqual(code, 0, (call.events, call.err.decode()))
            outputs.append(call)
        yield wait_until(process_exited(perl), timeout=20, what="Net::SIP's end")
        self.assertEqual(perl.returncode, 0, self.perl_log(name))
        return outputs

    @defer.inlineCallbacks
    def test_we_send_sixteen_digits_both_ways_and_netsip_reports_them(self) -> Any:
        yield self._perl_answers("netsip_rx", [["--dtmf", DIGITS, "--dtmf-method", "rfc4733"],
                                               ["--dtmf", DIGITS, "--dtmf-method", "inband"]])
        events = self.perl_events("netsip_rx")
        per_call: list[str] = []
        for e in events:
            if e["event"] == "incoming":
                per_call.append("")
            elif e["event"] == "dtmf":
                per_call[-1] += e["digit"]
        print(f"\nsipproxy-ua -> Net::SIP cb_dtmf: rfc4733 sent {DIGITS} got {per_call[0]}; "
              f"inband sent {DIGITS} got {per_call[1]}")
        self.assertEqual(per_call, [DIGITS, DIGITS])

    @defer.inlineCallbacks
    def test_netsip_sends_sixteen_digits_both_ways_and_we_detect_them(self) -> Any:
        answer = run_cli("answer", "--leg", "udp:127.0.0.1:0", "--calls", "2", "--timeout", "60")
        listening = yield answer.wait_for("listening")
        target = f"sip:x@{listening['legs'][0][4:]}"
        for name, method in (("netsip_2833", "rfc2833"), ("netsip_audio", "audio")):
            perl, _ = self.start_perl(name, "--mode", "call", "--to", target, "--dtmf", DIGITS, "--methods", method,
                                      "--timeout", "30")
            yield wait_until(process_exited(perl), timeout=40, what=f"Net::SIP sending by {method}")
            self.assertEqual(perl.returncode, 0, self.perl_log(name))
        self.assertEqual((yield answer.ended), 0, answer.err.decode())
        per_call: list[list[dict]] = []
        for e in answer.events:
            if e["event"] == "incoming":
                per_call.append([])
            elif e["event"] == "dtmf":
                per_call[-1].append(e)
        got = ["".join(d["digit"] for d in call) for call in per_call]
        methods = [sorted({d["method"] for d in call}) for call in per_call]
        print(f"\nNet::SIP -> sipproxy-ua: rfc2833 sent {DIGITS} detected {got[0]} {methods[0]}; "
              f"audio sent {DIGITS} detected {got[1]} {methods[1]}; media {events_of(answer, 'media')}")
        self.assertEqual(got, [DIGITS, DIGITS])
        self.assertEqual(methods, [["rfc4733"], ["inband"]])

    @defer.inlineCallbacks
    def test_netsip_answer_machine_records_what_we_play(self) -> Any:
        play = os.path.join(self.folder, "chirp.wav")
        sent = chirp(2.0)
        write_wav(play, sent)
        record = os.path.join(self.folder, "netsip.raw")
        (call,) = yield self._perl_answers("netsip_am", [["--play", play]], "--record", record)
        with open(record, "rb") as f:
            recorded = samples(g711.ulaw_to_pcm16(f.read()))
        reference = samples(g711.ulaw_to_pcm16(g711.pcm16_to_ulaw(sent)))
        value, lag = align(reference[800:12800], recorded, 4000)
        media = events_of(call, "media")[0]
        print(f"\nsipproxy-ua --play -> Net::SIP recv_echo(record): {len(recorded)} samples recorded, "
              f"correlation {value:.5f} at lag {lag - 800}; our media event {media}")
        self.assertGreaterEqual(value, 0.99)
        self.assertEqual(media["sent"], 100)


class _BaresipEvents(NetstringReceiver):
    """baresip's ctrl_tcp: each netstring is a JSON object; events have
    C{"event": true} and a C{"type"} (CALL_ESTABLISHED, CALL_DTMF_START...)."""

    def __init__(self) -> None:
        self.events: list[dict] = []

    def stringReceived(self, data: bytes) -> None:
        try:
            self.events.append(json.loads(data))
        except ValueError:
            pass


BARESIP_CONFIG = """poll_method poll
sip_listen 127.0.0.1:{sip}
module_path {modules}
module g711.so
module aubridge.so
module account.so
module_app echo.so
module_app ctrl_tcp.so
ctrl_tcp_listen 127.0.0.1:{ctrl}
audio_player aubridge,nil
audio_source aubridge,nil
audio_alert aubridge,nil
rtp_timeout 0
"""


def baresip_keys(log_path: str) -> list[str]:
    """The keys baresip logged as received (one per end event)."""
    with open(log_path, errors="replace") as f:
        return re.findall(r"received event: '(.)' \(end=1\)", f.read())


class BaresipMediaTests(TestCase):
    """baresip with its echo module (it answers, bridges the audio back
    and sends each key it receives back as a key) and ctrl_tcp (its own
    account of the keys it got)."""

    timeout = 90

    def setUp(self) -> None:
        self.baresip = require_program("baresip")
        modules = "/usr/lib/baresip/modules"
        for name in ("echo.so", "aubridge.so", "g711.so", "ctrl_tcp.so"):
            require_file(os.path.join(modules, name), f"baresip's {name} (package baresip-core)")
        self.folder = temp_dir(self)
        self.sip_port = reserve_port()
        self.ctrl_port = reserve_port(kind=socket.SOCK_STREAM)
        with open(os.path.join(self.folder, "config"), "w") as f:
            f.write(BARESIP_CONFIG.format(sip=self.sip_port, ctrl=self.ctrl_port, modules=modules))
        with open(os.path.join(self.folder, "accounts"), "w") as f:
            f.write("<sip:bob@127.0.0.1>;regint=0\n")
        self.proc = start_process(self, [self.baresip, "-f", self.folder, "-t", "60"], self.folder, "baresip")

    @defer.inlineCallbacks
    def _events(self) -> Any:
        yield wait_until(tcp_port_answers("127.0.0.1", self.ctrl_port), timeout=15, what="baresip's ctrl_tcp")
        yield wait_until(port_bound("127.0.0.1", self.sip_port), timeout=15, what="baresip's SIP port")
        client = _BaresipEvents()
        yield ClientCreator(reactor, lambda: client).connectTCP("127.0.0.1", self.ctrl_port)
        self.addCleanup(client.transport.loseConnection)
        return client

    @defer.inlineCallbacks
    def test_echo_of_a_wav_and_of_rfc4733_keys(self) -> Any:
        control = yield self._events()
        play = os.path.join(self.folder, "chirp.wav")
        sent = chirp(2.0)
        write_wav(play, sent)
        record = os.path.join(self.folder, "back.wav")
        target = f"sip:bob@127.0.0.1:{self.sip_port}"
        call = run_cli("call", "--play", play, "--record", record, "--timeout", "30", target)
        self.assertEqual((yield call.ended), 0, (call.events, call.err.decode()))
        reference = samples(g711.ulaw_to_pcm16(g711.pcm16_to_ulaw(sent)))
        recorded = samples(read_wav(record))
        whole, lag = align(reference[800:8800], recorded, len(recorded) - 8000)
        # every 100 ms of the file, found in the echo near that delay (baresip's jitter
        # buffer may move it by a few packets, more on a loaded machine); the first 0.2 s come back garbled while
        # baresip's bridge starts up, and the last 0.2 s after our BYE: held to the rest
        chunks = []
        for start in range(1600, 14400, 800):
            value, at = align(reference[start:start + 800], recorded, lag - 800 + start + 960, probe=200,
                              min_lag=lag - 800 + start - 960)
            chunks.append((round(value, 4), at - start))
        media = events_of(call, "media")[0]
        keys = run_cli("call", "--dtmf", DIGITS, "--dtmf-method", "rfc4733", "--hangup-after", "4", "--timeout", "30",
                       target)
        self.assertEqual((yield keys.ended), 0, (keys.events, keys.err.decode()))
        back = events_of(keys, "dtmf")
        # baresip's own account of the keys: its log ("received event: 'X' (end=1)"). Its
        # ctrl_tcp reports CALL_INCOMING and CALL_RTPESTAB here, but no CALL_DTMF_* nor
        # CALL_CLOSED: the echo module takes the call's event handler (call_set_handlers).
        log_path = os.path.join(self.folder, "baresip.out")
        yield wait_until(lambda: len(baresip_keys(log_path)) >= len(DIGITS), timeout=10, what="baresip's key log")
        got = baresip_keys(log_path)
        types = sorted({str(e.get("type")) for e in control.events})
        first, _ = align(reference[0:800], recorded, lag - 800 + 480, probe=200, min_lag=lag - 800 - 480)
        print(f"\nsipproxy-ua -> baresip echo: first 100 ms correlation {first:.4f}; WAV echo delay {sorted({c[1] for c in chunks})} samples, "
              f"100 ms chunks 0.2-1.8 s correlation min {min(c[0] for c in chunks):.4f}, one-lag 1 s correlation {whole:.4f}; "
              f"media {media}; RFC 4733 keys sent {DIGITS}, baresip logged {''.join(got)}, "
              f"echoed back {''.join(e['digit'] for e in back)} "
              f"({sorted({(e['method'], e['duration_ms']) for e in back})}); ctrl_tcp event types {types}")
        # baresip is a separate real-time process: on a loaded machine its
        # jitter buffer may move the echo (seen: 1280 samples before, 1440
        # after, the chunk between spliced, correlation 0.27) or conceal a
        # late packet (a chunk at 0.89). Two such chunks of 16 are allowed;
        # the rest, and the mean, must be at least 0.9.
        values = [c[0] for c in chunks]
        self.assertGreaterEqual(sum(v >= 0.9 for v in values), len(values) - 2, chunks)
        self.assertGreaterEqual(sum(values) / len(values), 0.9, chunks)
        self.assertEqual("".join(got), DIGITS)
        # ctrl_tcp's events may trail the calls on a busy machine (two test workers)
        yield wait_until(lambda: [e.get("type") for e in control.events].count("CALL_INCOMING") >= 2,
                         timeout=15, what="baresip's two CALL_INCOMING events on ctrl_tcp")
        self.assertEqual([e.get("type") for e in control.events].count("CALL_INCOMING"), 2)
        self.assertEqual("".join(e["digit"] for e in back), DIGITS)
        self.assertEqual({e["method"] for e in back}, {"rfc4733"})
