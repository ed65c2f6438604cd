"""The NAT helper's twistd options: parsing, one-line refusals, and the
services they build (nothing is started)."""
from __future__ import annotations

import io
import os
import shutil
import socket
import sys
import tempfile

from twisted.application.service import IServiceCollection
from twisted.trial.unittest import SynchronousTestCase

from sipproxy.nat.ng import NgClient, NgServer
from sipproxy.nat.relay import LocalRelay
from sipproxy.app.tap import Options, makeService
from tests.util import reserve_port


class OptionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.stderr = io.StringIO()
        self.patch(sys, "stderr", self.stderr)
        self.dir = tempfile.mkdtemp(prefix="sipproxy-nat-opt-")
        self.addCleanup(shutil.rmtree, self.dir, True)

    def parse(self, *args: str) -> Options:
        options = Options()
        options.parseOptions(["--legs", "udp:127.0.0.1:0", "--secret-file", os.path.join(self.dir, "secret"),
                              *args])
        return options

    def refused(self, *args: str) -> str:
        error = self.assertRaises(SystemExit, self.parse, *args)
        self.assertEqual(error.code, 2)
        lines = self.stderr.getvalue().splitlines()
        self.assertEqual(len(lines), 1, lines)
        return lines[0]

    def test_defaults_leave_media_alone(self) -> None:
        options = self.parse()
        self.assertEqual(options["nat"], {"ng_client": None, "ng_server": None, "port_range": (16384, 32767),
                                          "address": None})
        service = makeService(options)
        self.assertIsNone(service.proxy.nathelper)

    def test_local_relay(self) -> None:
        options = self.parse("--nathelper", "--rtp-ports", "30000-30999", "--rtp-address", "127.0.0.1",
                             "--rtp-idle", "20", "--rtp-unused", "60", "--rtp-close-delay", "2",
                             "--rtp-max-sockets", "100", "--rtp-max-call-sockets", "8")
        service = makeService(options)
        relay = service.proxy.nathelper
        self.assertIsInstance(relay, LocalRelay)
        self.assertIs(relay.parent, service)
        self.assertEqual((relay.port_range, relay.address, relay.idle_timeout, relay.unused_timeout,
                          relay.close_delay, relay.max_sockets, relay.max_sockets_per_call),
                         ((30000, 30999), "127.0.0.1", 20.0, 60.0, 2.0, 100, 8))

    def test_relay_hardening_defaults_and_options(self) -> None:
        relay = makeService(self.parse("--nathelper")).proxy.nathelper
        self.assertEqual((relay.max_streams, relay.max_sockets_per_call, relay.unanswered_timeout,
                          relay.table.learn_window, relay.strict_source), (8, 64, 60.0, 3.0, False))
        options = self.parse("--nathelper", "--rtp-strict-source", "--rtp-max-streams", "2", "--rtp-unanswered",
                             "30", "--rtp-learn", "1.5", "--rtp-max-call-sockets", "0")
        relay = makeService(options).proxy.nathelper
        self.assertEqual((relay.max_streams, relay.max_sockets_per_call, relay.unanswered_timeout,
                          relay.table.learn_window, relay.strict_source), (2, None, 30.0, 1.5, True))
        for args, expected in ((("--nathelper", "--rtp-max-streams", "-1"), "--rtp-max-streams"),
                               (("--nathelper", "--rtp-unanswered", "-5"), "--rtp-unanswered"),
                               (("--nathelper", "--rtp-learn", "soon"), "--rtp-learn")):
            self.stderr.seek(0)
            self.stderr.truncate()
            self.assertIn(expected, self.refused(*args), args)
        text = str(Options())
        for name in ("rtp-strict-source", "rtp-max-streams", "rtp-unanswered", "rtp-learn"):
            self.assertIn(f"--{name}", text)

    def test_remote_relay(self) -> None:
        options = self.parse("--nathelper-ng", "udp:127.0.0.1:2223", "--ng-timeout", "1.5", "--ng-no-direction")
        service = makeService(options)
        client = service.proxy.nathelper
        self.assertIsInstance(client, NgClient)
        self.assertIs(client.parent, service)
        self.assertEqual((client.address, client.timeout, client.direction), (("127.0.0.1", 2223), 1.5, False))

    def test_relay_only(self) -> None:
        options = self.parse("--relay-only", "--ng", f"udp:127.0.0.1:{reserve_port()}")
        service = makeService(options)
        self.assertTrue(IServiceCollection.providedBy(service))
        kinds = sorted(type(child).__name__ for child in service)
        self.assertEqual(kinds, ["ControlService", "LocalRelay", "NgServer", "Reloader"])  # Reloader: SIGHUP

    def test_ng_beside_the_local_relay(self) -> None:
        service = makeService(self.parse("--nathelper", "--ng", f"udp:127.0.0.1:{reserve_port()}"))
        servers = [child for child in service if isinstance(child, NgServer)]
        self.assertEqual(len(servers), 1)
        self.assertIs(servers[0].relay, service.proxy.nathelper)

    def test_an_ng_port_in_use_is_one_line_and_status_1(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
            busy.bind(("127.0.0.1", 0))
            options = self.parse("--relay-only", "--ng", f"udp:127.0.0.1:{busy.getsockname()[1]}")
            error = self.assertRaises(SystemExit, makeService, options)
        self.assertEqual(error.code, 1)
        self.assertIn("address already in use", self.stderr.getvalue())

    def test_bad_values_are_one_line_and_status_2(self) -> None:
        cases = [
            (("--nathelper", "--nathelper-ng", "udp:127.0.0.1:2223"), "exclude each other"),
            (("--relay-only",), "--relay-only needs --ng"),
            (("--relay-only", "--ng", "udp:127.0.0.1:2223", "--nathelper"), "runs no proxy"),
            (("--ng", "udp:127.0.0.1:2223"), "give --nathelper or --relay-only"),
            (("--nathelper", "--rtp-ports", "9-8"), "--rtp-ports"),
            (("--nathelper", "--rtp-ports", "many"), "--rtp-ports"),
            (("--nathelper-ng", "udp:relay.example:2223"), "not an IP address"),
            (("--nathelper-ng", "tcp:127.0.0.1:2223"), "only udp"),
            (("--nathelper", "--rtp-address", "eth0"), "--rtp-address"),
            (("--nathelper", "--rtp-idle", "0"), "--rtp-idle"),
            (("--nathelper", "--rtp-close-delay", "soon"), "--rtp-close-delay"),
            (("--nathelper", "--rtp-max-sockets", "-1"), "--rtp-max-sockets"),
            (("--nathelper", "--rtp-max-call-sockets", "1"), "--rtp-max-call-sockets"),
            (("--nathelper-ng", "udp:127.0.0.1:2223", "--ng-timeout", "inf"), "--ng-timeout"),
        ]
        for args, expected in cases:
            self.stderr.seek(0)
            self.stderr.truncate()
            line = self.refused(*args)
            self.assertIn(expected, line, args)
            self.assertTrue(line.startswith("twistd sipproxy: "), line)

    def test_every_option_is_in_help(self) -> None:
        text = str(Options())
        for name in ("nathelper", "nathelper-ng", "relay-only", "ng", "ng-no-direction", "ng-timeout", "rtp-ports",
                     "rtp-address", "rtp-idle", "rtp-unused", "rtp-close-delay", "rtp-max-sockets",
                     "rtp-max-call-sockets"):
            self.assertIn(f"--{name}", text)
