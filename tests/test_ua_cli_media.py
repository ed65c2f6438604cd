"""sipproxy-ua's media options as subprocesses on loopback: a played file
recorded by the answering side, DTMF events both methods, the media
counters once per call, and one-line errors (exit 2) for files that cannot
be used, before any socket is opened."""
from __future__ import annotations

import os
from typing import Any

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from sipproxy.ua.media import g711
from sipproxy.ua.media.audiofile import read_wav, write_wav
from tests.media_util import align, chirp, samples
from tests.test_ua_cli import run_cli
from tests.util import temp_dir


class MediaCommandLineTests(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_files_that_cannot_be_used_are_one_line_and_status_2(self) -> Any:
        folder = temp_dir(self)
        junk = os.path.join(folder, "junk.wav")
        with open(junk, "wb") as f:
            f.write(b"RIFF....WAVEjunk")
        cases = [("call", "--play", os.path.join(folder, "missing.wav"), "sip:x@127.0.0.1:9"),
                 ("answer", "--play", junk),
                 ("answer", "--record", os.path.join(folder, "no", "dir", "r.wav")),
                 ("call", "--codecs", "G729", "sip:x@127.0.0.1:9"),
                 ("answer", "--echo", "--play", junk)]
        for args in cases:
            collect = run_cli(*args)
            code = yield collect.ended
            self.assertEqual(code, 2, args)
            lines = collect.err.decode().splitlines()
            self.assertEqual(len(lines), 1, (args, lines))
            self.assertTrue(lines[0].startswith("sipproxy-ua: "), lines)
            self.assertEqual(collect.events, [], args)  # not even listening: no SIP
            if args is cases[0]:
                self.assertIn("missing.wav", lines[0])

    @defer.inlineCallbacks
    def test_play_record_and_dtmf_between_two_commands(self) -> Any:
        folder = temp_dir(self)
        sent = chirp(1.0)
        play = os.path.join(folder, "play.wav")
        write_wav(play, sent)
        record = os.path.join(folder, "rec.wav")
        answer = run_cli("answer", "--leg", "udp:127.0.0.1:0", "--from", "bob", "--record", record,
                         "--timeout", "30")
        listening = yield answer.wait_for("listening")
        target = f"sip:bob@{listening['legs'][0][4:]}"
        call = run_cli("call", "--from", "alice", "--play", play, "--dtmf", "4*", "--dtmf-method", "inband",
                       "--codecs", "PCMA", "--timeout", "30", target)
        self.assertEqual((yield call.ended), 0, call.err.decode())
        self.assertEqual((yield answer.ended), 0, answer.err.decode())
        sent_event = [e for e in call.events if e["event"] == "dtmf_sent"]
        self.assertEqual(sent_event, [{"event": "dtmf_sent", "digits": "4*", "method": "inband"}])
        dtmf = [(e["digit"], e["method"]) for e in answer.events if e["event"] == "dtmf"]
        self.assertEqual(dtmf, [("4", "inband"), ("*", "inband")])
        media = [e for e in answer.events if e["event"] == "media"]
        self.assertEqual(len(media), 1)
        # 50 frames of file, 2 presses of 5 packets, a 50 ms gap of 3
        self.assertEqual(media[0]["received"], 63)
        self.assertEqual(media[0]["lost"], 0)
        self.assertEqual([e["event"] for e in call.events].count("media"), 1)
        # the file pauses while the keys go out (13 packets), then plays whole
        reference = samples(g711.alaw_to_pcm16(g711.pcm16_to_alaw(sent)))[800:4000]
        value, lag = align(reference, samples(read_wav(record)), 4000)
        self.assertGreater(value, 0.99, (value, lag))
        self.assertEqual(lag, 13 * 160 + 800)

    @defer.inlineCallbacks
    def test_rfc4733_digits_and_echo(self) -> Any:
        answer = run_cli("answer", "--leg", "udp:127.0.0.1:0", "--from", "bob", "--echo", "--timeout", "30")
        listening = yield answer.wait_for("listening")
        target = f"sip:bob@{listening['legs'][0][4:]}"
        call = run_cli("call", "--from", "alice", "--dtmf", "0123456789*#ABCD", "--timeout", "30", target)
        self.assertEqual((yield call.ended), 0, call.err.decode())
        self.assertEqual((yield answer.ended), 0, answer.err.decode())
        digits = [e for e in answer.events if e["event"] == "dtmf"]
        self.assertEqual("".join(e["digit"] for e in digits), "0123456789*#ABCD")
        self.assertEqual({e["method"] for e in digits}, {"rfc4733"})
        self.assertEqual({e["duration_ms"] for e in digits}, {100})
        media = [e for e in call.events if e["event"] == "media"][0]
        self.assertGreater(media["received"], 50)  # the echo of our silence and events
        self.assertEqual(media["lost"], 0)
