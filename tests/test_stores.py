"""One test suite for every location store: in memory, SQLite and Redis.

L{StoreTests} holds the tests; each subclass makes its store. The Redis
tests run a real redis-server (tests.redisserver) on a free loopback port;
they are skipped when it is not installed, unless
SIPPROXY_REQUIRE_INTEROP=1.
"""
from __future__ import annotations

import os
import time
from typing import Any

from twisted.internet import defer, reactor, task
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from sipproxy.interfaces import ILocationListing, ILocationStore
from sipproxy.registrar.location import Binding, OutOfOrder, StoreUnavailable, binding_key, contact_key
from sipproxy.stores import StoreSpecError, open_store, parse_store_spec
from sipproxy.registrar.memory_store import MemoryStore
from sipproxy.stores.sqlite import SQLiteStore
from sipproxy.sip.uri import parse_uri
from tests.redisserver import RedisServer
from tests.util import temp_dir, wait_until

AOR = "sip:alice@example.com"
START = 1_800_000_000.0


def binding(contact: str = "sip:alice@192.0.2.10:5060", call_id: str = "c1", cseq: int = 1, **kw: Any) -> Binding:
    return Binding(contact=contact, call_id=call_id, cseq=cseq, **kw)


def change(b: Binding, ttl: float) -> tuple[str, Binding, float]:
    return (b.key, b, ttl)


class StoreTests:
    """The contract of L{ILocationStore}. Subclasses set up C{self.store}
    and implement C{advance(seconds)} (a Deferred)."""

    store: Any

    def advance(self, seconds: float) -> Any:
        raise NotImplementedError

    def test_provides_interface(self) -> None:
        self.assertTrue(ILocationStore.providedBy(self.store))

    @inlineCallbacks
    def test_unknown_aor_has_no_bindings(self) -> Any:
        self.assertEqual((yield self.store.lookup(AOR)), [])

    @inlineCallbacks
    def test_update_adds_and_lookup_finds_with_remaining_time(self) -> Any:
        b = binding(params=";q=0.7;+sip.instance=\"<urn:uuid:1>\";reg-id=1", path=("<sip:edge.example.com;lr>",),
                    source="udp:192.0.2.10:5060", registered=START)
        result = yield self.store.update(AOR, "c1", 1, [change(b, 600)])
        self.assertEqual([r.contact for r in result], [b.contact])
        found = yield self.store.lookup(AOR)
        self.assertEqual(len(found), 1)
        got = found[0]
        self.assertEqual((got.contact, got.params, got.call_id, got.cseq, got.path, got.source, got.registered),
                         (b.contact, b.params, "c1", 1, b.path, b.source, START))
        self.assertTrue(595 <= got.expires <= 600, got.expires)
        self.assertEqual(got.q, 0.7)

    @inlineCallbacks
    def test_bindings_merge(self) -> Any:
        yield self.store.update(AOR, "c1", 1, [change(binding("sip:alice@192.0.2.10"), 600)])
        result = yield self.store.update(AOR, "c2", 1, [change(binding("sip:alice@192.0.2.11", "c2"), 600)])
        self.assertEqual(sorted(b.contact for b in result), ["sip:alice@192.0.2.10", "sip:alice@192.0.2.11"])
        self.assertEqual(len((yield self.store.lookup(AOR))), 2)

    # ILocationListing (the control socket's registrations and stats) ---------------------
    @inlineCallbacks
    def test_dump_and_count_list_unexpired_bindings(self) -> Any:
        self.assertTrue(ILocationListing.providedBy(self.store))
        self.assertEqual((yield self.store.dump(10)), [])
        self.assertEqual(tuple((yield self.store.count())), (0, 0))
        yield self.store.update("sip:carol@example.com", "c3", 1, [change(binding("sip:carol@192.0.2.30"), 2)])
        yield self.store.update(AOR, "c1", 1, [change(binding("sip:alice@192.0.2.10"), 600),
                                               change(binding("sip:alice@192.0.2.11"), 600)])
        yield self.store.update("sip:bob@example.com", "c2", 1, [change(binding("sip:bob@192.0.2.20"), 600)])
        dumped = yield self.store.dump(10)
        self.assertEqual([aor for aor, _ in dumped], [AOR, "sip:bob@example.com", "sip:carol@example.com"])
        self.assertEqual(sorted(b.contact for b in dumped[0][1]), ["sip:alice@192.0.2.10", "sip:alice@192.0.2.11"])
        self.assertEqual(tuple((yield self.store.count())), (3, 4))
        self.assertEqual([aor for aor, _ in (yield self.store.dump(2))], [AOR, "sip:bob@example.com"])
        yield self.advance(3)  # carol's binding expires
        self.assertEqual([aor for aor, _ in (yield self.store.dump(10))], [AOR, "sip:bob@example.com"])
        self.assertEqual(tuple((yield self.store.count())), (2, 3))

    @inlineCallbacks
    def test_refresh_replaces_the_same_binding(self) -> Any:
        yield self.store.update(AOR, "c1", 1, [change(binding(params=";q=0.1"), 600)])
        result = yield self.store.update(AOR, "c1", 2, [change(binding(cseq=2, params=";q=0.9"), 120)])
        self.assertEqual(len(result), 1)
        self.assertEqual((result[0].cseq, result[0].q), (2, 0.9))
        self.assertTrue(115 <= result[0].expires <= 120)

    @inlineCallbacks
    def test_ttl_zero_removes_one_binding(self) -> Any:
        one, two = binding("sip:alice@192.0.2.10"), binding("sip:alice@192.0.2.11")
        yield self.store.update(AOR, "c1", 1, [change(one, 600), change(two, 600)])
        result = yield self.store.update(AOR, "c1", 2, [(one.key, None, 0)])
        self.assertEqual([b.contact for b in result], ["sip:alice@192.0.2.11"])
        self.assertEqual([b.contact for b in (yield self.store.lookup(AOR))], ["sip:alice@192.0.2.11"])

    @inlineCallbacks
    def test_remove_all(self) -> Any:
        yield self.store.update(AOR, "c1", 1, [change(binding("sip:alice@192.0.2.10"), 600)])
        yield self.store.update(AOR, "c2", 1, [change(binding("sip:alice@192.0.2.11", "c2"), 600)])
        result = yield self.store.update(AOR, "c3", 1, [], remove_all=True)
        self.assertEqual(result, [])
        self.assertEqual((yield self.store.lookup(AOR)), [])

    @inlineCallbacks
    def test_older_cseq_of_same_call_id_is_refused_and_changes_nothing(self) -> Any:
        first = binding(cseq=5)
        yield self.store.update(AOR, "c1", 5, [change(first, 600)])
        other = binding("sip:alice@192.0.2.99", cseq=4)
        d = self.store.update(AOR, "c1", 4, [change(other, 600), change(binding(cseq=4, params=";q=0.2"), 600)])
        error = yield self.assertFailure(d, OutOfOrder)
        self.assertEqual(error.stored_cseq, 5)
        found = yield self.store.lookup(AOR)
        self.assertEqual([(b.contact, b.cseq) for b in found], [(first.contact, 5)])

    @inlineCallbacks
    def test_remove_all_with_older_cseq_is_refused(self) -> Any:
        yield self.store.update(AOR, "c1", 5, [change(binding(cseq=5), 600)])
        yield self.assertFailure(self.store.update(AOR, "c1", 3, [], remove_all=True), OutOfOrder)
        self.assertEqual(len((yield self.store.lookup(AOR))), 1)

    @inlineCallbacks
    def test_equal_cseq_is_a_retransmission(self) -> Any:
        yield self.store.update(AOR, "c1", 5, [change(binding(cseq=5), 600)])
        result = yield self.store.update(AOR, "c1", 5, [change(binding(cseq=5), 600)])
        self.assertEqual(len(result), 1)

    @inlineCallbacks
    def test_other_call_id_may_have_lower_cseq(self) -> Any:
        yield self.store.update(AOR, "c1", 5, [change(binding(cseq=5), 600)])
        result = yield self.store.update(AOR, "c2", 1, [change(binding(call_id="c2", cseq=1), 600)])
        self.assertEqual([(b.call_id, b.cseq) for b in result], [("c2", 1)])

    @inlineCallbacks
    def test_addresses_of_record_are_separate(self) -> Any:
        yield self.store.update(AOR, "c1", 1, [change(binding(), 600)])
        self.assertEqual((yield self.store.lookup("sip:bob@example.com")), [])
        yield self.store.update("sip:bob@example.com", "c1", 1, [], remove_all=True)
        self.assertEqual(len((yield self.store.lookup(AOR))), 1)

    @inlineCallbacks
    def test_bindings_expire_one_by_one(self) -> Any:
        short, long_ = binding("sip:alice@192.0.2.10"), binding("sip:alice@192.0.2.11")
        yield self.store.update(AOR, "c1", 1, [change(short, 1), change(long_, 600)])
        yield self.advance(1.2)
        found = yield self.store.lookup(AOR)
        self.assertEqual([b.contact for b in found], ["sip:alice@192.0.2.11"])

    @inlineCallbacks
    def test_has_contact(self) -> Any:
        b = binding("sip:alice@192.0.2.10:5062;transport=udp")
        self.assertFalse((yield self.store.has_contact(b.contact_key)))
        yield self.store.update(AOR, "c1", 1, [change(b, 600)])
        key = contact_key(parse_uri("sip:alice@192.0.2.10:5062;transport=UDP;other=1"))
        self.assertTrue((yield self.store.has_contact(key)))
        self.assertFalse((yield self.store.has_contact(contact_key(parse_uri("sip:alice@192.0.2.10:5063")))))
        yield self.store.update(AOR, "c1", 2, [(b.key, None, 0)])
        self.assertFalse((yield self.store.has_contact(b.contact_key)))

    @inlineCallbacks
    def test_has_contact_forgets_expired(self) -> Any:
        b = binding()
        yield self.store.update(AOR, "c1", 1, [change(b, 1)])
        yield self.advance(1.2)
        self.assertFalse((yield self.store.has_contact(b.contact_key)))

    @inlineCallbacks
    def test_instance_keyed_binding_replaces_its_old_contact(self) -> Any:
        params = ';+sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>";reg-id=1'
        old = binding("sip:alice@192.0.2.10:5060", params=params)
        new = binding("sip:alice@198.51.100.7:40000", cseq=2, params=params)
        self.assertEqual(old.key, new.key)
        yield self.store.update(AOR, "c1", 1, [change(old, 600)])
        result = yield self.store.update(AOR, "c1", 2, [change(new, 600)])
        self.assertEqual([b.contact for b in result], ["sip:alice@198.51.100.7:40000"])


class MemoryStoreTests(StoreTests, TestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()
        self.clock.advance(START)
        self.store = MemoryStore(self.clock)

    def advance(self, seconds: float) -> Any:
        self.clock.advance(seconds)
        return defer.succeed(None)

    @inlineCallbacks
    def test_sweep_drops_forgotten_aors(self) -> Any:
        yield self.store.update(AOR, "c1", 1, [change(binding(), 1)])
        self.clock.advance(120)
        yield self.store.update("sip:bob@example.com", "c1", 1, [change(binding("sip:bob@192.0.2.20"), 60)])
        self.assertEqual(len(self.store), 1)


class SQLiteStoreTests(StoreTests, TestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()
        self.clock.advance(START)
        self.path = os.path.join(temp_dir(self), "bindings.db")
        self.store = SQLiteStore(self.path, reactor=reactor, clock=self.clock)
        self.addCleanup(lambda: self.store.close())

    def advance(self, seconds: float) -> Any:
        self.clock.advance(seconds)
        return defer.succeed(None)

    @inlineCallbacks
    def test_survives_a_restart(self) -> Any:
        yield self.store.update(AOR, "c1", 1, [change(binding(path=("<sip:p;lr>",)), 600)])
        yield self.store.close()
        self.clock.advance(100)
        self.store = SQLiteStore(self.path, reactor=reactor, clock=self.clock)
        found = yield self.store.lookup(AOR)
        self.assertEqual([(b.contact, b.path) for b in found], [("sip:alice@192.0.2.10:5060", ("<sip:p;lr>",))])
        self.assertTrue(495 <= found[0].expires <= 500, found[0].expires)

    @inlineCallbacks
    def test_runs_outside_the_reactor_thread(self) -> Any:
        import threading

        seen = []
        self.store._pool.runInteraction(lambda txn: seen.append(threading.current_thread()))
        yield self.store.lookup(AOR)
        self.assertTrue(seen)
        self.assertIsNot(seen[0], threading.current_thread())

    @inlineCallbacks
    def test_unwritable_file_is_unavailable(self) -> Any:
        store = SQLiteStore(os.path.join(self.path, "not-a-dir", "x.db"), reactor=reactor, clock=self.clock)
        self.addCleanup(store.close)
        failure = yield self.assertFailure(store.lookup(AOR), StoreUnavailable)
        self.assertIn("sqlite", str(failure))


class RedisStoreTests(StoreTests, TestCase):
    timeout = 30

    @inlineCallbacks
    def setUp(self) -> Any:
        self.redis = RedisServer(self)
        yield self.redis.start()
        self.store = self.make_store()

    def make_store(self, **options: Any) -> Any:
        from sipproxy.stores.redis import RedisStore

        options.setdefault("timeout", 0.5)
        store = RedisStore(self.redis.url, reactor=reactor, **options)
        self.addCleanup(store.close)
        return store

    def advance(self, seconds: float) -> Any:
        """TTLs run in Redis itself, on its own clock: wait until every key
        that had at most C{seconds} to live is gone."""
        client = self.store.client
        doomed = [k for k in client.keys("sipproxy:*") if 0 <= client.pttl(k) <= seconds * 1000]
        return wait_until(lambda: not any(client.exists(k) for k in doomed), seconds + 5,
                          what=f"Redis to expire {doomed}")

    @inlineCallbacks
    def test_bindings_carry_a_ttl_in_redis(self) -> Any:
        b = binding()
        yield self.store.update(AOR, "c1", 1, [change(b, 600)])
        keys = sorted(self.store.client.keys("sipproxy:*"))
        self.assertEqual(len(keys), 3, keys)  # index, binding, contact
        for key in keys:
            ttl = self.store.client.pttl(key)
            self.assertTrue(0 < ttl <= 601_000, (key, ttl))

    @inlineCallbacks
    def test_two_nodes_share_bindings(self) -> Any:
        other = self.make_store()
        yield self.store.update(AOR, "c1", 1, [change(binding(), 600)])
        found = yield other.lookup(AOR)
        self.assertEqual([b.contact for b in found], ["sip:alice@192.0.2.10:5060"])
        yield self.assertFailure(other.update(AOR, "c1", 0, [change(binding(cseq=0), 600)]), OutOfOrder)

    @inlineCallbacks
    def test_outage_is_unavailable_then_recovers_without_losing_bindings(self) -> Any:
        self.redis.stop()
        self.redis = RedisServer(self, persistent=True)
        yield self.redis.start()
        store = self.make_store(retry_after=7)
        yield store.update(AOR, "c1", 1, [change(binding(), 600)])
        self.redis.stop()
        started = time.monotonic()
        failure = yield self.assertFailure(store.lookup(AOR), StoreUnavailable)
        self.assertEqual(failure.retry_after, 7)
        self.assertLess(time.monotonic() - started, 2.0)
        yield self.assertFailure(store.update(AOR, "c2", 1, [change(binding(call_id="c2"), 600)]),
                                 StoreUnavailable)
        yield self.redis.start()
        found = yield store.lookup(AOR)
        self.assertEqual([b.contact for b in found], ["sip:alice@192.0.2.10:5060"])
        result = yield store.update(AOR, "c2", 1, [change(binding("sip:alice@192.0.2.11", "c2"), 600)])
        self.assertEqual(len(result), 2)

    @inlineCallbacks
    def test_hung_redis_fails_once_slowly_then_fast_then_recovers(self) -> Any:
        import signal

        store = self.make_store(timeout=0.3, probe_interval=0.5)
        yield store.update(AOR, "c1", 1, [change(binding(), 600)])
        os.kill(self.redis.proc.pid, signal.SIGSTOP)
        self.addCleanup(lambda: self.redis.proc and os.kill(self.redis.proc.pid, signal.SIGCONT))
        started = time.monotonic()
        yield self.assertFailure(store.lookup(AOR), StoreUnavailable)
        self.assertGreaterEqual(time.monotonic() - started, 0.25)  # one socket timeout
        started = time.monotonic()
        yield self.assertFailure(store.lookup(AOR), StoreUnavailable)
        self.assertLess(time.monotonic() - started, 0.1)  # no second wait
        os.kill(self.redis.proc.pid, signal.SIGCONT)
        yield wait_until(lambda: store.clock.seconds() - store._hung_at >= store.probe_interval, 5,
                         what="the probe interval to pass")
        self.assertEqual([b.contact for b in (yield store.lookup(AOR))], ["sip:alice@192.0.2.10:5060"])

    @inlineCallbacks
    def test_unreachable_at_start_is_unavailable(self) -> Any:
        from sipproxy.stores.redis import RedisStore

        self.redis.stop()
        store = RedisStore(self.redis.url, reactor=reactor, timeout=0.5)
        self.addCleanup(store.close)
        yield self.assertFailure(store.lookup(AOR), StoreUnavailable)

    @inlineCallbacks
    def test_too_many_waiting_is_unavailable(self) -> Any:
        store = self.make_store(max_pending=1)
        first = store.lookup(AOR)
        yield self.assertFailure(store.lookup(AOR), StoreUnavailable)
        self.assertEqual((yield first), [])


class StoreSpecTests(TestCase):
    def test_specs(self) -> None:
        self.assertEqual(parse_store_spec("memory"), ("memory", ""))
        self.assertEqual(parse_store_spec("sqlite:/var/lib/x.db"), ("sqlite", "/var/lib/x.db"))
        self.assertEqual(parse_store_spec("redis://10.0.0.1:6380/2"), ("redis", "redis://10.0.0.1:6380/2"))

    def test_bad_specs(self) -> None:
        for spec in ("sqlite:", "redis://", "redis://h:port/0", "redis://h:1/x", "mongo://h", "file.db"):
            self.assertRaises(StoreSpecError, parse_store_spec, spec)

    def test_open_memory(self) -> None:
        clock = task.Clock()
        self.assertIsInstance(open_store("memory", reactor, clock), MemoryStore)


class BindingTests(TestCase):
    def test_keys_follow_uri_comparison(self) -> None:
        a = binding_key(parse_uri("sip:%61lice@EXAMPLE.com;transport=UDP;foo=1"))
        b = binding_key(parse_uri("sip:alice@example.com;transport=udp"))
        self.assertEqual(a, b)
        self.assertNotEqual(b, binding_key(parse_uri("sip:alice@example.com:5060;transport=udp")))
        self.assertNotEqual(b, binding_key(parse_uri("sip:alice@example.com;transport=tcp")))
        self.assertNotEqual(b, binding_key(parse_uri("sip:Alice@example.com;transport=udp")))

    def test_instance_key(self) -> None:
        b = binding(params=';+sip.instance="<urn:uuid:1>";reg-id=2')
        self.assertEqual(b.key, "instance:<urn:uuid:1>;reg-id=2")

    def test_header_value_and_q(self) -> None:
        b = binding(params=";q=0.5", expires=30)
        self.assertEqual(b.header_value(), "<sip:alice@192.0.2.10:5060>;q=0.5;expires=30")
        self.assertEqual(binding(params=";q=junk").q, 1.0)
        self.assertEqual(binding().q, 1.0)

    def test_json_round_trip(self) -> None:
        b = binding(params=";x", path=("<sip:a;lr>", "<sip:b;lr>"), source="tcp:[2001:db8::1]:5060", registered=5.5)
        back = Binding.from_json(b.to_json(), 99.2)
        self.assertEqual(back, Binding(**{**{k: getattr(b, k) for k in
                                            ("contact", "params", "call_id", "cseq", "registered", "path",
                                             "source")}, "expires": 100}))
