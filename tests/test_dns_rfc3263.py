"""RFC 3263 target selection (pure): NAPTR and SRV ordering, RFC 2782's
weighted choice, and which queries each kind of target asks."""
from __future__ import annotations

import random
from collections import Counter

from twisted.trial.unittest import SynchronousTestCase

from sipproxy.transport.rfc3263 import (MAX_DESTINATIONS, Destination, Naptr, Query, Srv, order_naptr, order_srv,
                                        resolution, run, weighted_order)


class Scripted:
    """C{randint} returning given values, recording the ranges asked."""

    def __init__(self, values: list[int]) -> None:
        self.values = list(values)
        self.asked: list[tuple[int, int]] = []

    def __call__(self, low: int, high: int) -> int:
        self.asked.append((low, high))
        return self.values.pop(0)


class NaptrTests(SynchronousTestCase):
    def test_order_then_preference_and_only_what_we_have(self) -> None:
        records = [
            Naptr(20, 10, "s", "SIP+D2U", "_sip._udp.example.com."),
            Naptr(10, 50, "s", "SIP+D2T", "_sip._tcp.example.com."),
            Naptr(10, 20, "S", "SIPS+D2T", "_sips._tcp.example.com."),
            Naptr(5, 1, "s", "SIP+D2S", "_sip._sctp.example.com."),  # SCTP: no leg has it
            Naptr(1, 1, "u", "SIP+D2U", "!^.*$!sip:x@y!"),  # not terminal "s": not ours
        ]
        self.assertEqual(order_naptr(records, ["udp", "tcp", "tls"]), [
            ("tls", "_sips._tcp.example.com"), ("tcp", "_sip._tcp.example.com"),
            ("udp", "_sip._udp.example.com")])
        self.assertEqual(order_naptr(records, ["udp"]), [("udp", "_sip._udp.example.com")])

    def test_secure_target_keeps_only_secure_services(self) -> None:
        records = [Naptr(10, 10, "s", "SIP+D2U", "_sip._udp.x"), Naptr(20, 10, "s", "SIPS+D2T", "_sips._tcp.x"),
                   Naptr(30, 10, "s", "SIPS+D2W", "_sips._ws.x")]
        self.assertEqual(order_naptr(records, ["udp", "tls", "wss"], secure=True),
                         [("tls", "_sips._tcp.x"), ("wss", "_sips._ws.x")])

    def test_websocket_service(self) -> None:
        self.assertEqual(order_naptr([Naptr(1, 1, "s", "SIP+D2W", "_sip._ws.x")], ["ws"]), [("ws", "_sip._ws.x")])
        self.assertEqual(order_naptr([Naptr(1, 1, "s", "SIP+D2W", "_sip._ws.x")], ["udp"]), [])


class SrvTests(SynchronousTestCase):
    def test_priority_first_then_weight(self) -> None:
        records = [Srv(20, 0, 5060, "c.example."), Srv(10, 60, 5060, "a.example."), Srv(10, 40, 5060, "b.example.")]
        pick = Scripted([70])  # 70 > 60: b first (running sums 60, 100); then a, the last one
        ordered = order_srv(records, pick)
        self.assertEqual([r.target for r in ordered], ["b.example.", "a.example.", "c.example."])
        self.assertEqual(pick.asked, [(0, 100)])  # one choice: a last one, and c alone, need none

    def test_running_sum_reaching_the_pick_is_chosen(self) -> None:
        records = [Srv(1, 60, 1, "a"), Srv(1, 40, 1, "b")]
        self.assertEqual(weighted_order(records, Scripted([60, 0]))[0].target, "a")
        self.assertEqual(weighted_order(records, Scripted([61, 0]))[0].target, "b")

    def test_zero_weight_first_in_list_chosen_only_by_a_zero_pick(self) -> None:
        records = [Srv(1, 10, 1, "a"), Srv(1, 0, 1, "zero")]
        self.assertEqual(weighted_order(records, Scripted([0, 0]))[0].target, "zero")
        self.assertEqual(weighted_order(records, Scripted([1, 0]))[0].target, "a")

    def test_dot_target_means_no_service(self) -> None:
        self.assertEqual(order_srv([Srv(0, 0, 0, ".")]), [])
        self.assertEqual([r.target for r in order_srv([Srv(0, 0, 0, "."), Srv(1, 1, 5060, "a")])], ["a"])

    def test_weights_spread_as_rfc2782_says(self) -> None:
        """Over many orderings, the first pick follows weight / sum (with
        RFC 2782's inclusive integer pick: (w + [first]) / (sum + 1))."""
        rng = random.Random(3263)
        records = [Srv(10, 60, 1, "a"), Srv(10, 30, 1, "b"), Srv(10, 10, 1, "c"), Srv(20, 100, 1, "d")]
        n = 5000
        firsts = Counter(order_srv(records, rng.randint)[0].target for _ in range(n))
        self.assertNotIn("d", firsts)
        expected = {"a": 61 / 101, "b": 30 / 101, "c": 10 / 101}
        chi2 = sum((firsts[k] - n * p) ** 2 / (n * p) for k, p in expected.items())
        self.assertLess(chi2, 13.8, f"{dict(firsts)} against {expected}")  # p = 0.001, 2 degrees of freedom


class ResolutionTests(SynchronousTestCase):
    def resolve(self, host: str, proto=None, port=None, records=None, transports=("udp", "tcp", "tls"),
                families=(4,), randint=None):
        asked: list[Query] = []
        table = records or {}

        def lookup(query: Query) -> list:
            asked.append(query)
            return table.get(query, [])

        steps = resolution(host, proto, port, transports, families, randint or Scripted([0] * 50))
        return run(steps, lookup), asked

    def test_numeric_ip_asks_nothing(self) -> None:
        self.assertEqual(self.resolve("192.0.2.1"), ([Destination("udp", "192.0.2.1", 5060)], []))
        self.assertEqual(self.resolve("[2001:db8::1]", "tls"), ([Destination("tls", "2001:db8::1", 5061)], []))
        self.assertEqual(self.resolve("[::1", port=5060)[1], [Query("[::1", "A")])  # unbalanced: not an address

    def test_explicit_port_asks_addresses_only(self) -> None:
        records = {Query("example.com", "A"): ["192.0.2.1"], Query("example.com", "AAAA"): ["2001:db8::1"]}
        found, asked = self.resolve("Example.COM.", port=5080, records=records, families=(4, 6))
        self.assertEqual(asked, [Query("example.com", "A"), Query("example.com", "AAAA")])
        self.assertEqual(found, [Destination("udp", "192.0.2.1", 5080), Destination("udp", "2001:db8::1", 5080)])
        found, asked = self.resolve("example.com", "tcp", 5080, records)
        self.assertEqual(found, [Destination("tcp", "192.0.2.1", 5080)])

    def test_transport_asks_srv_of_that_transport(self) -> None:
        records = {Query("_sip._tcp.example.com", "SRV"): [Srv(1, 1, 5090, "pbx.example.com.")],
                   Query("pbx.example.com", "A"): ["192.0.2.7"]}
        found, asked = self.resolve("example.com", "tcp", records=records)
        self.assertEqual(asked, [Query("_sip._tcp.example.com", "SRV"), Query("pbx.example.com", "A")])
        self.assertEqual(found, [Destination("tcp", "192.0.2.7", 5090)])
        found, asked = self.resolve("example.com", "tls", records=records)
        self.assertEqual(asked[0], Query("_sips._tcp.example.com", "SRV"))

    def test_naptr_then_srv_then_addresses(self) -> None:
        records = {
            Query("example.com", "NAPTR"): [Naptr(10, 10, "s", "SIP+D2T", "_sip._tcp.example.com."),
                                            Naptr(20, 10, "s", "SIP+D2U", "_sip._udp.example.com.")],
            Query("_sip._tcp.example.com", "SRV"): [Srv(1, 1, 5060, "t.example.com.")],
            Query("_sip._udp.example.com", "SRV"): [Srv(1, 1, 5062, "u.example.com."),
                                                    Srv(2, 1, 5063, "192.0.2.9")],
            Query("t.example.com", "A"): ["192.0.2.1"],
            Query("u.example.com", "A"): ["192.0.2.2", "192.0.2.3"],
        }
        found, asked = self.resolve("example.com", records=records)
        self.assertEqual(asked, [Query("example.com", "NAPTR"), Query("_sip._tcp.example.com", "SRV"),
                                 Query("_sip._udp.example.com", "SRV"), Query("t.example.com", "A"),
                                 Query("u.example.com", "A")])
        self.assertEqual(found, [Destination("tcp", "192.0.2.1", 5060), Destination("udp", "192.0.2.2", 5062),
                                 Destination("udp", "192.0.2.3", 5062), Destination("udp", "192.0.2.9", 5063)])

    def test_naptr_for_transports_we_lack_falls_back_to_srv(self) -> None:
        records = {Query("example.com", "NAPTR"): [Naptr(10, 10, "s", "SIP+D2T", "_sip._tcp.example.com.")],
                   Query("_sip._udp.example.com", "SRV"): [Srv(1, 1, 5070, "u.example.com.")],
                   Query("u.example.com", "A"): ["192.0.2.2"]}
        found, asked = self.resolve("example.com", records=records, transports=("udp",))
        self.assertEqual(asked[1:], [Query("_sip._udp.example.com", "SRV"), Query("u.example.com", "A")])
        self.assertEqual(found, [Destination("udp", "192.0.2.2", 5070)])

    def test_no_naptr_no_srv_addresses_on_the_default_port(self) -> None:
        found, asked = self.resolve("example.com", records={Query("example.com", "A"): ["192.0.2.1"]})
        self.assertEqual(asked, [Query("example.com", "NAPTR"), Query("_sip._udp.example.com", "SRV"),
                                 Query("_sip._tcp.example.com", "SRV"), Query("example.com", "A")])
        self.assertEqual(found, [Destination("udp", "192.0.2.1", 5060)])
        found, _ = self.resolve("example.com", records={Query("example.com", "A"): ["192.0.2.1"]},
                                transports=("tcp",))
        self.assertEqual(found, [Destination("tcp", "192.0.2.1", 5060)])

    def test_nothing_anywhere(self) -> None:
        self.assertEqual(self.resolve("nowhere.example")[0], [])

    def test_hostile_answers_are_bounded(self) -> None:
        many = [Srv(1, 1, 5060 + i, f"h{i}.example.") for i in range(500)]
        records = {Query("_sip._udp.example.com", "SRV"): many}
        records.update({Query(f"h{i}.example", "A"): [f"192.0.2.{j}" for j in range(1, 200)] for i in range(500)})
        found, asked = self.resolve("example.com", "udp", records=records, randint=random.Random(1).randint)
        self.assertEqual(len(found), MAX_DESTINATIONS)
        self.assertLessEqual(len(asked), 1 + 8)  # the SRV query and at most 8 targets' addresses
