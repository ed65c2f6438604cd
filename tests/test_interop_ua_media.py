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
import shutil
import subprocess
from typing import Any, Optional

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from sipproxy.ua.media import g711
from sipproxy.ua.media.audiofile import read_wav, write_wav
from sipproxy.ua.media.dtmf import DIGITS
from tests.media_util import align, chirp, samples
from tests.test_ua_cli import run_cli
from tests.util import (FailTest, interop_required, port_bound, process_exited, require_program, reserve_port,
                        start_process, temp_dir, wait_until)

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
