"""The Redis location store: several sipproxy nodes share registrations.

Client: redis-py (the C{redis} package), the client Redis Inc. maintains,
in a small thread pool of our own, the way C{twisted.enterprise.adbapi}
runs DB-API drivers. Why this one and not the others:

- txredisapi is Twisted-native, but one person keeps it; while the
  connection is down it queues commands until it reconnects, so an outage
  shows up as requests that hang (and writes that land after we already
  answered), not as an error we can turn into a 503 at once.
- C{redis.asyncio} needs the asyncio reactor, which sipproxy must not
  impose on the applications that embed it.
- redis-py's blocking client fails fast and clearly (connection refused,
  socket timeout, C{LOADING} while Redis reads its data back), reconnects
  by itself on the next command, and reloads our Lua scripts when a
  restarted Redis has forgotten them. Every blocking call runs in the
  pool's threads; the reactor only sees Deferreds.

A Redis that hangs (stopped with SIGSTOP, swapping, a dead network path)
costs each command a socket timeout; so after a timeout the store answers
503 at once for C{probe_interval} seconds, and the commands already queued
behind the hung ones fail at once instead of waiting their turn. A Redis
that is down (connection refused) fails fast anyway and is tried again on
every request, so the first request after it is back succeeds.

Layout (one primary; Redis Cluster is not supported):

- C{<prefix>b:{<aor>}:<binding key>}: one string per binding (JSON), with
  the binding's lifetime as its TTL, so bindings expire in Redis itself;
- C{<prefix>aor:{<aor>}}: the set of binding keys of an address-of-record
  (stale members are dropped when read), expiring with its last binding;
- C{<prefix>c:<contact key>}: the address-of-record a contact is bound
  to, for the relay policy's "is this a registered contact?".

Each REGISTER is one Lua script, so the Call-ID/CSeq check and the
changes are atomic even when two nodes update the same address-of-record.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Optional

from twisted.internet.defer import Deferred, fail
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from sipproxy.interfaces import ILocationListing, ILocationStore
from sipproxy.registrar.location import Binding, OutOfOrder, StoreUnavailable

__all__ = ["RedisStore"]

#: Most addresses-of-record C{count} looks at (it reads each one).
COUNT_LIMIT = 100000

_READ = """
local out = {}
for _, m in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local k = ARGV[1] .. m
  local v = redis.call('GET', k)
  if v then
    table.insert(out, m); table.insert(out, v); table.insert(out, redis.call('PTTL', k))
  else
    redis.call('SREM', KEYS[1], m)
  end
end
return out
"""

# ARGV: binding prefix, contact prefix, aor, call-id, cseq, remove-all,
# then (binding key, ttl ms, json, contact key) per change
_UPDATE = """
local idx = KEYS[1]
local bpre, cpre, aor, callid = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local cseq, all = tonumber(ARGV[5]), ARGV[6] == '1'
local cur = {}
for _, m in ipairs(redis.call('SMEMBERS', idx)) do
  local v = redis.call('GET', bpre .. m)
  if v then cur[m] = v else redis.call('SREM', idx, m) end
end
local function older(m)
  local v = cur[m]
  if v then
    local b = cjson.decode(v)
    if b['i'] == callid and tonumber(b['n']) > cseq then
      return redis.error_reply('OUTOFORDER ' .. tostring(b['n']) .. ' ' .. m)
    end
  end
  return nil
end
if all then
  for m, _ in pairs(cur) do local e = older(m); if e then return e end end
else
  for i = 7, #ARGV, 4 do local e = older(ARGV[i]); if e then return e end end
end
local function drop(m)
  local v = cur[m]
  if v then
    local ck = cpre .. cjson.decode(v)['k']
    if redis.call('GET', ck) == aor then redis.call('DEL', ck) end
    redis.call('DEL', bpre .. m)
    redis.call('SREM', idx, m)
    cur[m] = nil
  end
end
if all then
  local keys = {}
  for m, _ in pairs(cur) do table.insert(keys, m) end
  for _, m in ipairs(keys) do drop(m) end
end
for i = 7, #ARGV, 4 do
  local m, ttl, v, ck = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2], cpre .. ARGV[i + 3]
  if ttl <= 0 then
    drop(m)
  else
    redis.call('SET', bpre .. m, v, 'PX', ttl)
    redis.call('SADD', idx, m)
    cur[m] = v
    if redis.call('PTTL', ck) < ttl then redis.call('SET', ck, aor, 'PX', ttl) end
  end
end
local out, longest = {}, 0
for m, v in pairs(cur) do
  local ttl = redis.call('PTTL', bpre .. m)
  if ttl > 0 then
    table.insert(out, m); table.insert(out, v); table.insert(out, ttl)
    if ttl > longest then longest = ttl end
  end
end
if longest > 0 then redis.call('PEXPIRE', idx, longest + 1000) else redis.call('DEL', idx) end
return out
"""


@implementer(ILocationStore, ILocationListing)
class RedisStore:
    """Bindings in Redis.

    @param url: C{redis://HOST[:PORT][/DB]} (also C{rediss://},
        C{unix://PATH?db=N}).
    @param reactor: where results are delivered (the global one if None).
    @param timeout: seconds to wait for Redis to connect or answer before
        the request gets a 503.
    @param retry_after: the Retry-After (seconds) of those 503s.
    @param threads: worker threads (at most this many Redis commands at
        once).
    @param max_pending: refuse (503) rather than queue more operations
        than this while Redis is slow.
    @param probe_interval: after a timeout, answer 503 without asking
        Redis for this many seconds.
    @param clock: C{IReactorTime} timing those probes (the reactor when
        None), so tests drive it with C{task.Clock}.
    """

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", reactor: Any = None, prefix: str = "sipproxy:",
                 timeout: float = 1.0, retry_after: int = 5, threads: int = 4, max_pending: int = 256,
                 probe_interval: float = 0.5, client: Any = None, clock: Any = None) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.reactor = reactor
        self.clock = clock if clock is not None else reactor
        self.url = url
        self.prefix = prefix
        self.retry_after = retry_after
        self.max_pending = max_pending
        self.probe_interval = probe_interval
        self._hung_at: Optional[float] = None  # clock time of the last timeout
        self._errors = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                        redis.exceptions.ReadOnlyError, OSError, StoreUnavailable)
        self._timeout_error = redis.exceptions.TimeoutError
        self._response_error = redis.exceptions.ResponseError
        if client is None:
            # one immediate retry: the first command on a connection that
            # died with a restarted Redis reconnects and goes through
            # (not on a timeout: a hung Redis would cost a second timeout)
            client = redis.Redis.from_url(
                url, socket_timeout=timeout, socket_connect_timeout=timeout,
                retry=Retry(NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,)),
                decode_responses=True, health_check_interval=30,
            )
        self.client = client
        self._read = client.register_script(_READ)
        self._update = client.register_script(_UPDATE)
        self._pool = ThreadPool(1, threads, name="sipproxy-redis")
        self._pending = 0
        self._started = False
        self._closed = False
        self._shutdown_trigger = reactor.addSystemEventTrigger("during", "shutdown", self._stop_pool)
        # threads start with the reactor, after twistd has forked
        reactor.callWhenRunning(self._start_pool)

    # threads ------------------------------------------------------------------------
    def _start_pool(self) -> None:
        if not self._started and not self._closed:
            self._started = True
            self._pool.start()

    def _stop_pool(self) -> None:
        if self._started:
            self._started = False
            self._pool.stop()

    def close(self) -> Deferred:
        self._closed = True
        try:
            self.reactor.removeSystemEventTrigger(self._shutdown_trigger)
        except (ValueError, KeyError, TypeError):
            pass
        self._stop_pool()
        self.client.close()
        from twisted.internet.defer import succeed

        return succeed(None)

    def _call(self, function: Callable[..., Any], *args: Any) -> Deferred:
        if self._closed:
            return fail(StoreUnavailable("redis store is closed", self.retry_after))
        if self._pending >= self.max_pending:
            return fail(StoreUnavailable(f"redis: {self._pending} operations waiting", self.retry_after))
        submitted = self.clock.seconds()
        if self._hung_at is not None and submitted - self._hung_at < self.probe_interval:
            return fail(StoreUnavailable(f"redis {self.url}: timed out {submitted - self._hung_at:.1f} s ago",
                                         self.retry_after))
        self._start_pool()
        self._pending += 1

        def work() -> Any:
            # queued behind a command that then timed out: do not wait too
            hung_at = self._hung_at
            if hung_at is not None and hung_at > submitted:
                raise StoreUnavailable(f"redis {self.url}: timed out", self.retry_after)
            return function(*args)

        d = deferToThreadPool(self.reactor, self._pool, work)

        def done(result: Any) -> Any:
            self._pending -= 1
            return result

        d.addBoth(done)
        d.addErrback(self._failed)
        return d

    def _failed(self, failure: Failure) -> Failure:
        if failure.check(StoreUnavailable):
            return failure
        if failure.check(self._timeout_error):
            self._hung_at = self.clock.seconds()
        if failure.check(*self._errors):
            raise StoreUnavailable(f"redis {self.url}: {failure.getErrorMessage()}", self.retry_after)
        if failure.check(self._response_error):
            message = failure.getErrorMessage()
            if message.startswith("OUTOFORDER"):
                _, stored, key = message.split(" ", 2)
                raise OutOfOrder(key, int(stored), -1)
            if message.startswith(("LOADING", "BUSY", "MASTERDOWN", "READONLY", "TRYAGAIN", "CLUSTERDOWN")):
                raise StoreUnavailable(f"redis {self.url}: {message}", self.retry_after)
        return failure

    # keys ---------------------------------------------------------------------------
    def _index(self, aor: str) -> str:
        return f"{self.prefix}aor:{{{aor}}}"

    def _binding_prefix(self, aor: str) -> str:
        return f"{self.prefix}b:{{{aor}}}:"

    @staticmethod
    def _bindings(flat: list) -> list[Binding]:
        return [Binding.from_json(flat[i + 1], int(flat[i + 2]) / 1000.0) for i in range(0, len(flat), 3)]

    # ILocationStore -----------------------------------------------------------------
    def lookup(self, aor: str) -> Deferred:
        keys, args = [self._index(aor)], [self._binding_prefix(aor)]
        return self._call(lambda: self._bindings(self._read(keys=keys, args=args)))

    def update(self, aor: str, call_id: str, cseq: int, changes: Iterable[tuple[str, Optional[Binding], float]],
               remove_all: bool = False) -> Deferred:
        args: list[Any] = [self._binding_prefix(aor), f"{self.prefix}c:", aor, call_id, cseq,
                           "1" if remove_all else "0"]
        for key, binding, ttl in changes:
            if binding is None or ttl <= 0:
                args += [key, 0, "", ""]
            else:
                args += [key, int(ttl * 1000), binding.to_json(), binding.contact_key]
        keys = [self._index(aor)]
        d = self._call(lambda: self._bindings(self._update(keys=keys, args=args)))

        def fill_cseq(failure: Failure) -> Failure:
            if failure.check(OutOfOrder):
                failure.value.cseq = cseq
            return failure

        d.addErrback(fill_cseq)
        return d

    def has_contact(self, contact_key: str) -> Deferred:
        key = f"{self.prefix}c:{contact_key}"
        return self._call(lambda: bool(self.client.exists(key)))

    # ILocationListing (the control socket) ---------------------------------------------
    def _scan_aors(self, limit: int) -> list[str]:
        """The first C{limit} addresses-of-record with an index set, in
        order, of at most L{COUNT_LIMIT} (SCAN: no blocking KEYS on a
        shared Redis; SCAN's order is arbitrary, so all are sorted)."""
        start = len(self.prefix) + len("aor:{")
        aors = set()
        for key in self.client.scan_iter(match=f"{self.prefix}aor:{{*", count=500):
            aors.add(key[start:-1])
            if len(aors) >= COUNT_LIMIT:
                break
        return sorted(aors)[:limit]

    def dump(self, limit: int) -> Deferred:
        def work() -> list[tuple[str, list[Binding]]]:
            out = []
            for aor in self._scan_aors(limit):
                bindings = self._bindings(self._read(keys=[self._index(aor)], args=[self._binding_prefix(aor)]))
                if bindings:
                    out.append((aor, bindings))
            return out

        return self._call(work)

    def count(self) -> Deferred:
        def work() -> tuple[int, int]:
            aors = bindings = 0
            for aor in self._scan_aors(COUNT_LIMIT):
                n = len(self._read(keys=[self._index(aor)], args=[self._binding_prefix(aor)])) // 3
                aors += 1 if n else 0
                bindings += n
            return aors, bindings

        return self._call(work)
