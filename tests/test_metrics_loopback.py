"""The metrics endpoint of a real C{twistd -n sipproxy --metrics}, after real
traffic on loopback.

- sipp calls through the proxy (its uac and uas, C{-trace_counts}), then a
  malformed datagram and a malformed request: the scrape's counts of
  requests and responses received and forwarded equal what sipp counted
  sending and receiving, retransmissions included, and the parse errors
  are the two sent;
- sipp REGISTERs with digest authentication (tests/sipp/register_auth.xml),
  with the right password and a wrong one: challenges, failures,
  registrations and bindings as sent;
- C{--workers 2}: one scrape shows both processes, labelled C{worker};
- a bad C{--metrics} value is one line and exit status 2.

Each scrape is fetched over HTTP and read with prometheus-client's own
text parser. Skipped without sipp, unless C{SIPPROXY_REQUIRE_INTEROP=1}.
"""
from __future__ import annotations

import csv
import glob
import os
import socket
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from tests.util import (
    ProxyProcess,
    child_environment,
    port_bound,
    process_exited,
    read_text,
    require_program,
    reserve_port,
    run_process,
    start_process,
    start_proxy,
    temp_dir,
    twistd_command,
    wait_until,
)

HERE = os.path.dirname(os.path.abspath(__file__))
SIPP_REGISTER = os.path.join(HERE, "sipp", "register_auth.xml")
CALLS = 30
RATE = 30
SIPP_TIMEOUT = 20


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse_scrape(text: str) -> Samples:
    """Every sample of a scrape, keyed by (name, sorted labels)."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when the series is absent (no such event yet)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every series of C{name} carrying C{labels} (e.g. over workers)."""
    return sum(v for (n, ls), v in samples.items() if n == name and all(dict(ls).get(k) == x
                                                                          for k, x in labels.items()))


def sipp_counts(cwd: str, prefix: str) -> dict[str, int]:
    """The last row of the sipp counts file C{prefix}_<pid>_counts.csv."""
    paths = glob.glob(os.path.join(cwd, f"{prefix}_*_counts.csv"))
    if len(paths) != 1:
        raise AssertionError(f"want one counts file for {prefix}, found {paths}")
    with open(paths[0], newline="") as f:
        rows = [row for row in csv.reader(f, delimiter=";") if row]
    header, last = rows[0], rows[-1]
    return {name: int(v) for name, v in zip(header, last) if name and v.isdigit()}


def both(counts: dict[str, int], step: str) -> int:
    """Sent (or received) plus retransmissions of one scenario step."""
    return counts.get(f"{step}_Sent", counts.get(f"{step}_Recv", 0)) + counts.get(f"{step}_Retrans", 0)


class MetricsLoopbackTests(unittest.TestCase):
    timeout = 90

    def setUp(self) -> None:
        self.cwd = temp_dir(self)

    @inlineCallbacks
    def start(self, args: list[str], make_legs: Any) -> Any:
        """A proxy with --metrics on a free port: (ProxyProcess, port)."""
        for attempt in range(3):
            port = reserve_port("127.0.0.1", socket.SOCK_STREAM)
            try:
                proxy: ProxyProcess = yield start_proxy(
                    self, self.cwd, make_legs, [*args, "--metrics", f"127.0.0.1:{port}"], attempts=1,
                    name=f"twistd-{attempt}")
            except AssertionError as e:
                if "no free ports" in str(e):
                    continue  # the metrics port or a leg was taken meanwhile
                raise
            yield wait_until(lambda: f"serving metrics on http://127.0.0.1:{port}/metrics" in proxy.log(), 10,
                             what="the metrics endpoint")
            return proxy, port
        raise AssertionError("no free ports for the proxy and its metrics")

    @inlineCallbacks
    def scrape(self, port: int) -> Any:
        """GET /metrics, parsed: (text, samples)."""
        def get() -> tuple[int, str, bytes]:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
                return response.status, response.headers.get("content-type", ""), response.read()

        status, kind, body = yield deferToThread(get)  # as Prometheus would: a plain HTTP client
        self.assertEqual(status, 200)
        self.assertTrue(kind.startswith("text/plain"), kind)
        text = body.decode()
        return text, parse_scrape(text)

    def sipp(self, name: str, argv: list[str], cwd: str = "") -> Any:
        """sipp in the background, writing its counts file in C{cwd}."""
        return start_process(self, [self.sipp_path, *argv, "-nostdin", "-trace_counts", "-timeout",
                                    f"{SIPP_TIMEOUT}s"], cwd or self.cwd, name)

    # -- calls ---------------------------------------------------------------------
    @inlineCallbacks
    def test_sipp_calls_counted(self) -> Any:
        self.sipp_path = require_program("sipp")
        proxy, port = yield self.start([], lambda: [f"udp:127.0.0.1:{reserve_port('127.0.0.1')}"])
        entry = proxy.legs[0].split(":", 1)[1]
        uas_port = reserve_port("127.0.0.2")
        uas = self.sipp("uas", ["-sn", "uas", "-i", "127.0.0.2", "-p", str(uas_port), "-bind_local",
                                      "-m", str(CALLS)])
        yield wait_until(lambda: uas.poll() is not None or port_bound("127.0.0.2", uas_port)(), 10,
                         what="sipp uas to bind")
        self.assertIsNone(uas.poll(), read_text(os.path.join(self.cwd, "uas.err")))
        uac = self.sipp("uac", ["-sn", "uac", f"127.0.0.2:{uas_port}", "-rsa", entry, "-i", "127.0.0.1",
                                      "-p", str(reserve_port("127.0.0.1")), "-m", str(CALLS), "-r", str(RATE),
                                      "-recv_timeout", "5000"])
        yield wait_until(lambda: uac.poll() is not None and uas.poll() is not None, SIPP_TIMEOUT + 10,
                         interval=0.1, what="sipp to finish the calls")
        self.assertEqual((uac.returncode, uas.returncode), (0, 0), read_text(os.path.join(self.cwd, "uac.out")))

        # then hostile input: a datagram that is no SIP (dropped), a request
        # with a broken CSeq (answered 400); the answer shows both were read
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.settimeout(5)
            target = ("127.0.0.1", int(entry.rsplit(":", 1)[1]))
            sock.sendto(b"\x16\x03\x01 not sip at all\r\n\r\n", target)
            local = sock.getsockname()
            sock.sendto((f"OPTIONS sip:{entry} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{local[1]};branch=z9hG4bKm1\r\n"
                         f"From: <sip:m@127.0.0.1>;tag=1\r\nTo: <sip:{entry}>\r\nCall-ID: malformed-1\r\n"
                         "CSeq: one OPTIONS\r\nContent-Length: 0\r\n\r\n").encode(), target)
            answer = sock.recv(4096)
        self.assertTrue(answer.startswith(b"SIP/2.0 400 "), answer)

        text, got = yield self.scrape(port)
        uac_counts, uas_counts = sipp_counts(self.cwd, "uac"), sipp_counts(self.cwd, "uas")
        # Each count against the sipp that saw those packets: what the proxy
        # forwarded against what the receiving sipp counted arriving (first
        # copies and retransmissions: what was on the wire); what it received
        # against what the sending sipp sent, between its first copies and
        # those plus the retransmissions it counts (a loaded sipp counts some
        # retransmission timers that sent nothing; with none, both are equal).
        rows = [  # (name, label, measured, sipp's low, sipp's high, what sipp counted)
            ("sipproxy_requests_received_total", "INVITE", uac_counts, ["0_INVITE"], "uac sent"),
            ("sipproxy_requests_received_total", "ACK", uac_counts, ["5_ACK"], "uac sent"),
            ("sipproxy_requests_received_total", "BYE", uac_counts, ["7_BYE"], "uac sent"),
            ("sipproxy_requests_forwarded_total", "INVITE", uas_counts, ["0_INVITE"], "uas received"),
            ("sipproxy_requests_forwarded_total", "ACK", uas_counts, ["3_ACK"], "uas received"),
            ("sipproxy_requests_forwarded_total", "BYE", uas_counts, ["4_BYE"], "uas received"),
            ("sipproxy_responses_received_total", "1xx", uas_counts, ["1_180"], "uas sent"),
            ("sipproxy_responses_received_total", "2xx", uas_counts, ["2_200", "5_200"], "uas sent"),
            ("sipproxy_responses_forwarded_total", "1xx", uac_counts, ["1_100", "2_180"], "uac received"),
            ("sipproxy_responses_forwarded_total", "2xx", uac_counts, ["4_200", "8_200"], "uac received"),
        ]
        lines, wrong = [], []
        for name, label, counts, steps, what in rows:
            measured = int(value(got, name, **{"method" if "requests" in name else "status_class": label}))
            first = sum(counts.get(f"{step}_Sent", counts.get(f"{step}_Recv", 0)) for step in steps)
            all_copies = sum(both(counts, step) for step in steps)
            low = all_copies if what.endswith("received") else first
            shown = f"{all_copies}" if low == all_copies else f"{first} (+{all_copies - first} retransmissions)"
            lines.append(f"{name}{{{label}}} {measured}   sipp {what}: {shown}")
            if not low <= measured <= all_copies:
                wrong.append(lines[-1])
        print("\nmetrics after sipp calls (scrape vs sipp -trace_counts):\n  " + "\n  ".join(lines))
        self.assertEqual(wrong, [], text)
        for label in ("INVITE", "ACK", "BYE"):  # a stateless proxy forwards every one of these
            self.assertEqual(value(got, "sipproxy_requests_received_total", method=label),
                             value(got, "sipproxy_requests_forwarded_total", method=label), label)
        self.assertGreaterEqual(value(got, "sipproxy_requests_received_total", method="INVITE"), CALLS)
        self.assertEqual(value(got, "sipproxy_parse_errors_total", action="dropped"), 1)
        self.assertEqual(value(got, "sipproxy_parse_errors_total", action="answered"), 1)
        self.assertEqual(value(got, "sipproxy_requests_answered_total", method="OPTIONS", code="400"), 1)
        self.assertEqual(value(got, "sipproxy_messages_dropped_total", kind="message", reason="malformed"), 1)
        self.assertGreater(value(got, "process_resident_memory_bytes"), 0)

    # -- registrations and authentication ---------------------------------------------------
    @inlineCallbacks
    def test_registrations_and_challenges_counted(self) -> Any:
        self.sipp_path = require_program("sipp")
        with open(os.path.join(self.cwd, "users"), "w") as f:
            f.write("alice:wonderland\n")
        proxy, port = yield self.start(["--registrar", "--domain", "office.test", "--users", "users"],
                                       lambda: [f"udp:127.0.0.1:{reserve_port('127.0.0.1')}"])
        address = proxy.legs[0].split(":", 1)[1]
        local_port = str(reserve_port("127.0.0.1"))  # one contact for every REGISTER: one binding
        counts = {}
        for name, password, calls in (("good", "wonderland", 3), ("bad", "guessed", 2)):
            cwd = os.path.join(self.cwd, name)
            os.mkdir(cwd)
            proc = self.sipp(name, [address, "-sf", SIPP_REGISTER, "-s", "alice", "-au", "alice", "-ap", password,
                                    "-key", "domain", "office.test", "-m", str(calls), "-i", "127.0.0.1",
                                    "-p", local_port], cwd)
            yield wait_until(process_exited(proc), SIPP_TIMEOUT + 5, interval=0.1, what=f"sipp {name} to finish")
            counts[name] = sipp_counts(cwd, "register_auth")
        text, got = yield self.scrape(port)
        good, bad = counts["good"], counts["bad"]
        sent = sum(both(c, "0_REGISTER") + both(c, "2_REGISTER") for c in (good, bad))
        first = sum(c["0_REGISTER_Sent"] + c["2_REGISTER_Sent"] for c in (good, bad))
        received = value(got, "sipproxy_requests_received_total", method="REGISTER")
        # between sipp's first copies and those plus its counted retransmissions (see above)
        self.assertTrue(first <= received <= sent, (received, first, sent))
        challenged = sum(both(c, "1_401") + both(c, "4_401") for c in (good, bad))
        expected = {
            "401 challenges (sipp: 401 received)": (value(got, "sipproxy_auth_challenges_total", code="401"),
                                                    challenged),
            "REGISTERs answered 200 (sipp: 200 received)": (
                value(got, "sipproxy_requests_answered_total", method="REGISTER", code="200"), both(good, "3_200")),
            "registrations 2xx (sipp: 200 received)": (
                value(got, "sipproxy_registrations_total", status_class="2xx"), both(good, "3_200")),
            "bindings set (sipp: 200 received)": (value(got, "sipproxy_binding_changes_total", action="set"),
                                                  both(good, "3_200")),
            "auth failures, bad password (sipp: 401 after credentials)": (
                value(got, "sipproxy_auth_failures_total", code="401", reason="bad-credentials"),
                both(bad, "4_401")),
        }
        print("\nmetrics after sipp REGISTERs (scrape, sipp):\n  "
              + f"REGISTERs received: {received:g}, sipp sent {sent}\n  "
              + "\n  ".join(f"{k}: {v[0]:g}, {v[1]}" for k, v in expected.items()))
        for what, (measured, wanted) in expected.items():
            self.assertEqual(measured, wanted, f"{what}\n{text}")
        self.assertEqual((both(good, "3_200"), both(bad, "4_401")), (3, 2))  # sipp did what it was told
        self.assertEqual((value(got, "sipproxy_location_aors"), value(got, "sipproxy_location_bindings")), (1, 1))
        self.assertEqual(value(got, "sipproxy_store_operation_duration_seconds_count", operation="update"), 3)
        self.assertEqual(value(got, "sipproxy_store_errors_total", operation="update", error="unavailable"), 0)

    # -- workers -----------------------------------------------------------------------------
    @inlineCallbacks
    def test_workers_in_one_scrape(self) -> Any:
        """Two processes share the leg; the first one's scrape shows both,
        and their counts add up to what was sent."""
        proxy, port = yield self.start(["--workers", "2", "--registrar", "--store",
                                        f"sqlite:{os.path.join(self.cwd, 'location.db')}"],
                                       lambda: [f"udp:127.0.0.1:{reserve_port('127.0.0.1')}"])
        leg = proxy.legs[0]
        yield wait_until(lambda: "worker 1: " in proxy.log() and f"listening on {leg}" in
                         proxy.log().split("worker 1: ", 1)[1], 20, what="worker 1 to listen")
        host, leg_port = leg.split(":")[1], int(leg.split(":")[2])
        sources = 32  # the kernel spreads sources over the workers by address and port
        socks = []
        for n in range(sources):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.addCleanup(sock.close)
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
            local = sock.getsockname()[1]
            sock.sendto((f"OPTIONS sip:{host}:{leg_port} SIP/2.0\r\n"
                         f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bKw{n}\r\n"
                         f"From: <sip:w@127.0.0.1>;tag={n}\r\nTo: <sip:{host}>\r\nCall-ID: w{n}\r\n"
                         "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode(),
                        (host, leg_port))
            socks.append(sock)

        answered: set[int] = set()

        def all_answered() -> bool:
            for n, sock in enumerate(socks):
                try:
                    if sock.recv(4096).startswith(b"SIP/2.0 200 "):
                        answered.add(n)
                except BlockingIOError:
                    pass
            return len(answered) == sources

        yield wait_until(all_answered, 10, what="answers to every OPTIONS")
        seen: dict[str, Any] = {}

        @inlineCallbacks
        def counted() -> Any:
            text, got = yield self.scrape(port)
            seen.update(text=text, got=got)
            return total(got, "sipproxy_requests_received_total", method="OPTIONS") == sources

        # a worker sends its counts every second: poll the scrape until they add up
        for _ in range(40):
            done = yield counted()
            if done:
                break
            yield wait_until(lambda: False, 0.25).addErrback(lambda f: None)
        got = seen["got"]
        per_worker = {w: value(got, "sipproxy_requests_received_total", method="OPTIONS", worker=w) for w in "01"}
        print(f"\n--workers 2: OPTIONS received per worker {per_worker}, {sources} sent")
        self.assertEqual(sum(per_worker.values()), sources, seen["text"])
        self.assertTrue(all(per_worker.values()), per_worker)
        workers = {dict(labels).get("worker") for name, labels in got if name == "process_cpu_seconds_total"}
        self.assertEqual(workers, {"0", "1"})
        self.assertEqual(seen["text"].count("# TYPE sipproxy_requests_received_total counter"), 1)
        # the store both share is counted once, by the first process
        location = {dict(labels).get("worker"): v for (name, labels), v in got.items()
                    if name == "sipproxy_location_bindings"}
        self.assertEqual(location, {"0": 0})

    # -- options ---------------------------------------------------------------------------
    def test_bad_option_is_one_line(self) -> None:
        for bad in ("9090", "localhost:9090", "127.0.0.1:99999"):
            result = run_process([*twistd_command(), "-n", "--pidfile=", "sipproxy", "--metrics", bad], 30,
                                 cwd=self.cwd, env=child_environment())
            self.assertEqual(result.returncode, 2, result)
            lines = result.stderr.strip().splitlines()
            self.assertEqual(len(lines), 1, result)
            self.assertIn("--metrics", lines[0])

    def test_port_in_use_is_one_line(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen(1)
            taken = busy.getsockname()[1]
            leg = reserve_port("127.0.0.1")
            result = run_process([*twistd_command(), "-n", "--pidfile=", "sipproxy", "--legs",
                                  f"udp:127.0.0.1:{leg}", "--metrics", f"127.0.0.1:{taken}"], 30, cwd=self.cwd,
                                 env=child_environment())
        self.assertEqual(result.returncode, 1, result)
        self.assertEqual(result.stderr.strip().splitlines(),
                         [f"twistd sipproxy: cannot serve metrics on tcp:127.0.0.1:{taken}: address already in use"])

    # -- ng: a proxy with --nathelper-ng and a --relay-only process -----------------------------
    @inlineCallbacks
    def test_ng_requests_counted_on_both_sides(self) -> Any:
        """sipp calls (with SDP) through a proxy whose media goes to a relay
        process over ng: the proxy's ng requests by command equal the ones
        the relay answered, and the relay started a session per call."""
        self.sipp_path = require_program("sipp")
        from sipproxy.nat.ng import encode_message
        from tests.util import UDPProbe

        ng_port, relay_metrics = reserve_port("127.0.0.1"), reserve_port("127.0.0.1", socket.SOCK_STREAM)
        relay = start_process(self, [*twistd_command(), "-n", "--pidfile=", "sipproxy", "--relay-only", "--ng",
                                     f"udp:127.0.0.1:{ng_port}", "--metrics", f"127.0.0.1:{relay_metrics}"],
                              self.cwd, "relay", env=child_environment())
        probe = UDPProbe("127.0.0.1", ng_port, lambda _: encode_message(b"p1", {"command": "ping"}), testcase=self)
        yield wait_until(lambda: relay.poll() is not None or probe(), 15, what="the relay to answer ng ping")
        self.assertIsNone(relay.poll(), read_text(os.path.join(self.cwd, "relay.err")))

        def legs() -> list[str]:
            port = reserve_port("127.0.0.1", also=["127.0.0.2"])
            return [f"udp:127.0.0.1:{port}", f"udp:127.0.0.2:{port}"]

        proxy, port = yield self.start(["--nathelper-ng", f"udp:127.0.0.1:{ng_port}"], legs)
        entry = proxy.legs[0].split(":", 1)[1]
        uas_port = reserve_port("127.0.0.2")
        calls = 10
        uas = self.sipp("uas", ["-sn", "uas", "-i", "127.0.0.2", "-p", str(uas_port), "-bind_local",
                                "-m", str(calls)])
        yield wait_until(lambda: uas.poll() is not None or port_bound("127.0.0.2", uas_port)(), 10,
                         what="sipp uas to bind")
        uac = self.sipp("uac", ["-sn", "uac", f"127.0.0.2:{uas_port}", "-rsa", entry, "-i", "127.0.0.1",
                                "-p", str(reserve_port("127.0.0.1")), "-m", str(calls), "-r", "10",
                                "-recv_timeout", "5000"])
        yield wait_until(lambda: uac.poll() is not None and uas.poll() is not None, SIPP_TIMEOUT + 10,
                         interval=0.1, what="sipp to finish the calls")
        self.assertEqual((uac.returncode, uas.returncode), (0, 0), read_text(os.path.join(self.cwd, "uac.out")))
        _, at_proxy = yield self.scrape(port)
        _, at_relay = yield self.scrape(relay_metrics)
        sent = {c: value(at_proxy, "sipproxy_ng_requests_total", command=c) for c in ("offer", "answer", "delete")}
        handled = {c: value(at_relay, "sipproxy_ng_requests_handled_total", command=c, result="ok")
                   for c in ("offer", "answer", "delete")}
        print(f"\nng requests sent by the proxy {sent}, answered ok by the relay {handled}")
        self.assertEqual(sent, handled)
        self.assertGreaterEqual(sent["offer"], calls)
        self.assertEqual(sent["delete"], calls)  # one per BYE
        self.assertEqual(value(at_proxy, "sipproxy_ng_timeouts_total", command="offer"), 0)
        self.assertEqual(value(at_relay, "sipproxy_relay_sessions_started_total"), calls)
        self.assertEqual(value(at_relay, "sipproxy_relay_sessions"), 0)


class MetricsEndpointHostileTests(unittest.TestCase):
    """The endpoint faces whoever can reach its port: idle connections are
    closed, no more than a few are kept, an endless request line is
    refused, and a scrape still works afterwards."""

    timeout = 30

    def setUp(self) -> None:
        from prometheus_client import CollectorRegistry, Counter
        from twisted.internet import reactor

        from sipproxy.app.metrics import MetricsService

        registry = CollectorRegistry()
        Counter("sipproxy_example", "a counter to scrape", registry=registry).inc(3)
        self.service = MetricsService(registry, ("127.0.0.1", 0), reactor, timeout=0.5, max_clients=3)
        self.service.privilegedStartService()
        self.service.startService()
        self.addCleanup(self.service.stopService)

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.service.port), timeout=5)
        self.addCleanup(sock.close)
        return sock

    @staticmethod
    def closed_within(sock: socket.socket, seconds: float) -> bool:
        """Whether the server closes C{sock} (reads hit end of file)."""
        sock.settimeout(seconds)
        try:
            while sock.recv(65536):
                pass
            return True
        except socket.timeout:
            return False
        except OSError:  # reset
            return True

    def scrape(self) -> str:
        url = f"http://127.0.0.1:{self.service.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.read().decode()

    @inlineCallbacks
    def test_idle_connections_are_capped_and_closed(self) -> Any:
        held = [self.connect() for _ in range(3)]
        # the server takes connections in the reactor thread: let it see them
        yield wait_until(lambda: len(self.service.factory.protocols) == 3, 5, what="three connections")
        extra = self.connect()
        self.assertTrue((yield deferToThread(self.closed_within, extra, 2.0)))  # over the cap: closed at once
        closed = yield deferToThread(lambda: [self.closed_within(s, 5.0) for s in held])
        self.assertEqual(closed, [True, True, True])  # silent past the 0.5 s idle timeout
        text = yield deferToThread(self.scrape)
        self.assertIn("sipproxy_example_total 3.0", text)

    @inlineCallbacks
    def test_an_endless_request_line_is_refused(self) -> Any:
        sock = self.connect()

        def flood() -> bytes:
            try:
                sock.sendall(b"GET /" + b"a" * 200_000)
            except OSError:  # the server closed first
                pass
            sock.settimeout(5)
            try:
                return sock.recv(200)
            except OSError:
                return b""

        answer = yield deferToThread(flood)
        self.assertFalse(answer.startswith(b"HTTP/1.1 200"), answer)
        self.assertTrue((yield deferToThread(self.closed_within, sock, 5.0)))
        text = yield deferToThread(self.scrape)
        self.assertIn("sipproxy_example_total 3.0", text)
