"""The receivers in front of the proxy, put together from one
configuration: what C{twistd sipproxy --registrar --domain ... --users ...}
runs, and what an application embedding sipproxy can reuse::

    door = FrontDoor(clock=reactor, store=MemoryStore(reactor), registrar=True,
                     domains=["office.example"], users=Users.from_file("users"),
                     realm="office.example", secret=secret)
    service = ProxyService(reactor, legs, secret=secret, receivers=[door])

The chain, in order (each part only when configured):

1. L{Dropper} (rate limit per source, header patterns): silent drops;
   then L{OwnAcks}: ACKs to answers given by this chain end here;
2. L{Blocker}: fixed answers per method;
3. L{RelayGuard} (with domains): 403 for requests neither to nor from a
   served domain nor to a registered contact;
4. L{Authorize} with 401 for the REGISTERs the registrar answers: a user
   may only bind its own address-of-record (the To user is the auth user,
   exactly), unless C{register_any_aor};
5. L{Authorize} with 407 for new requests from a served domain (every new
   request without domains): the From user must be the auth user;
6. L{Registrar}: answers REGISTER, routes requests to bindings, 404 for
   unknown users of a served domain;
7. L{Redirect} (instead of routing): 302 with the contacts.

The proxy comes last (L{sipproxy.app.service.ProxyService} appends it).
"""
from __future__ import annotations

import os
from typing import Any, Iterable, Mapping, Optional, Union

from twisted.internet.interfaces import IReactorTime

from sipproxy.access.digest_auth import Authorize, Nonces
from sipproxy.access.chain import ReceiveChain
from sipproxy.interfaces import ICredentialStore, IDispatcher, ILocationStore
from sipproxy.access.domains import Domains, OwnAcks, RelayGuard, proxy_auth_needed, registrar_request
from sipproxy.access.filters import Blocker, ByField, ByIPPort, Dropper
from sipproxy.access.login_limit import DEFAULT_LIMIT, FailedLogins
from sipproxy.proxy.flows import FlowTokens
from sipproxy.registrar.flow_keeper import FlowKeeper
from sipproxy.registrar.redirect import Redirect
from sipproxy.registrar.registrar import DEFAULT_MAX_CONTACTS, Registrar

__all__ = ["FrontDoor", "DEFAULT_REALM"]

DEFAULT_REALM = "sipproxy"


class FrontDoor:
    """Configuration of the receivers before the proxy; calling it with a
    dispatcher builds them (so it can be given to C{ProxyService} as a
    receiver factory).

    @param clock: C{IReactorTime} for nonces, refresh times and rate
        limits.
    @param store: the L{ILocationStore} of the registrar.
    @param registrar: answer REGISTER for the served domains.
    @param redirect: answer requests for registered users with 302
        instead of routing them (implies C{registrar}).
    @param domains: served domains; None serves every domain (and then no
        request is refused as relaying).
    @param users: an L{ICredentialStore}; None turns authentication off.
    @param realm: digest realm (default: the first domain, else
        C{"sipproxy"}).
    @param secret: seals digest nonces (the proxy secret).
    @param block: method to C{"DDD [reason]"}.
    @param rate_limit: (attempts, interval seconds) per source IP and port.
    @param drop_fields: header name to regular expression.
    @param register_any_aor: an authenticated user may register any
        address-of-record of the served domains (a PBX, a provisioning
        system); by default only its own.
    @param max_contacts: contacts one address-of-record may hold (403
        beyond); None for no limit.
    @param auth_failure_limit: (failures, window seconds, block seconds)
        per source IP before its authentication attempts are dropped for a
        while (L{sipproxy.access.login_limit}); None for no limit.
    @param nat_flows: file REGISTERs that came over NAT with a route back
        over their flow (L{sipproxy.proxy.flows}); needs C{secret}, the one
        the proxy seals its flow tokens with.
    @param nat_ping_interval: seconds between keep-alive pings of such
        bindings (0: no pings, see L{FlowKeeper}).
    @param nat_ping_failures: unanswered pings in a row that drop a binding.
    """

    def __init__(
        self,
        clock: IReactorTime,
        store: Optional[ILocationStore] = None,
        registrar: bool = False,
        redirect: bool = False,
        domains: Optional[Iterable[str]] = None,
        min_expires: int = 60,
        max_expires: int = 3600,
        users: Optional[ICredentialStore] = None,
        realm: Optional[str] = None,
        secret: Optional[bytes] = None,
        block: Optional[Mapping[str, Union[int, str]]] = None,
        rate_limit: Optional[tuple[int, float]] = None,
        rate_limit_store: Optional[Any] = None,
        drop_fields: Optional[Mapping[str, str]] = None,
        nonce_lifetime: float = 300.0,
        register_any_aor: bool = False,
        max_contacts: Optional[int] = DEFAULT_MAX_CONTACTS,
        auth_failure_limit: Optional[tuple[int, float, float]] = DEFAULT_LIMIT,
        nat_flows: bool = True,
        nat_ping_interval: float = 30.0,
        nat_ping_failures: int = 3,
    ) -> None:
        self.clock = clock
        self.store = store
        self.redirect = redirect
        self.registrar = registrar or redirect
        self.domains = list(domains) if domains else None
        self.min_expires = min_expires
        self.max_expires = max_expires
        self.users = users
        self.realm = realm or (self.domains[0] if self.domains else DEFAULT_REALM)
        self.secret = secret
        self.block = dict(block or {})
        self.rate_limit = rate_limit
        #: where the rate limiter keeps its blocks across restarts: an object
        #: with C{load()} and C{save(data)}, e.g. L{sipproxy.stores.blockfile.JSONFile}
        self.rate_limit_store = rate_limit_store
        self.drop_fields = dict(drop_fields or {})
        self.nonce_lifetime = nonce_lifetime
        self.register_any_aor = register_any_aor
        self.max_contacts = max_contacts
        self.auth_failure_limit = auth_failure_limit
        self.nat_flows = nat_flows
        self.nat_ping_interval = nat_ping_interval
        self.nat_ping_failures = nat_ping_failures
        #: set by L{__call__}: the parts, for inspection and tests
        self.parts: dict[str, Any] = {}

    def __call__(self, dispatcher: IDispatcher) -> list[Any]:
        return self.build(dispatcher)

    def build(self, dispatcher: IDispatcher, keep: Optional[Mapping[str, Any]] = None) -> list[Any]:
        """The receivers, in chain order.

        @param keep: the C{parts} of a chain built before (a reload): the
            parts that hold state (the registrar and its flow keeper,
            nonces, failed logins, rate-limit counts) are taken over with
            the new settings, so nothing in progress is lost; the tables
            (users, domains, blocks, drop rules) are the new ones.
        """
        keep = keep or {}
        parts = self.parts = {}
        chain: list[Any] = []
        domains = parts["domains"] = Domains(self.domains, dispatcher)
        checks: list[Any] = []
        if self.rate_limit is not None:
            attempts, interval = self.rate_limit
            limiter = keep.get("rate_limiter")
            if limiter is None:
                limiter = ByIPPort(interval, attempts, database=self.rate_limit_store, clock=self.clock)
            else:  # the counts so far stay; the limit is the new one
                limiter.interval, limiter.attempts = interval, attempts
            checks.append(limiter)
            parts["rate_limiter"] = limiter
        if self.drop_fields:
            checks.append(ByField(self.drop_fields))
        if checks:
            chain.append(Dropper(checks))
            parts["dropper"] = chain[-1]
        chain.append(OwnAcks(dispatcher))
        if self.block:
            chain.append(Blocker(dispatcher, self.block))
            parts["blocker"] = chain[-1]
        if not domains.everything:
            chain.append(RelayGuard(dispatcher, domains, self.store if self.registrar else None))
            parts["relay_guard"] = chain[-1]
        if self.users is not None:
            # one nonce memory for both: a nonce is good for either challenge
            nonces = keep.get("nonces")
            if nonces is None:
                nonces = Nonces(self.secret or os.urandom(32), self.clock, self.nonce_lifetime)
            parts["nonces"] = nonces  # a challenge sent before a reload is still answerable
            failures = None
            if self.auth_failure_limit is not None:
                failures = keep.get("failed_logins")
                if failures is None:
                    failures = FailedLogins(self.clock, self.auth_failure_limit)
                else:
                    failures.failures, failures.window, failures.block = self.auth_failure_limit
                parts["failed_logins"] = failures
            common = dict(users=self.users, realm=self.realm, clock=self.clock, nonces=nonces, failures=failures)
            if self.registrar:
                registrar_auth = Authorize(
                    dispatcher, filter=None if self.register_any_aor else {"REGISTER": "ToIsAuthUser"}, **common)
                chain.append(ReceiveChain([registrar_auth], filter=registrar_request(domains)))
                parts["registrar_auth"] = registrar_auth
            proxy_auth = Authorize(dispatcher, i_am_proxy=True, filter={"*": "FromIsAuthUser"}, **common)
            chain.append(ReceiveChain([proxy_auth], filter=proxy_auth_needed(domains, dispatcher, self.registrar)))
            parts["proxy_auth"] = proxy_auth
        if self.registrar and keep.get("registrar") is not None:
            # a reload: the registrar (its settings are not reloadable) goes on
            # with the new domains; its flow keeper's pings go on too
            registrar = parts["registrar"] = keep["registrar"]
            registrar.domains = domains
            for name in ("flow_keeper", "registrar", "redirect"):
                if keep.get(name) is not None:
                    parts[name] = keep[name]
                    chain.append(keep[name])
        elif self.registrar:
            # flows need the secret the proxy seals its tokens with
            flows = FlowTokens(self.secret, dispatcher.legs) if self.nat_flows and self.secret else None
            keeper = None
            if flows is not None and self.nat_ping_interval > 0 and self.store is not None:
                keeper = parts["flow_keeper"] = FlowKeeper(self.clock, self.store, self.nat_ping_interval,
                                                           self.nat_ping_failures)
                chain.append(keeper)  # takes the answers to its pings before the proxy sees them
            registrar = Registrar(dispatcher, self.store, self.clock, domains, self.min_expires, self.max_expires,
                                  route=not self.redirect, max_contacts=self.max_contacts,
                                  flows=flows, keeper=keeper)
            chain.append(registrar)
            parts["registrar"] = registrar
            if self.redirect:
                chain.append(Redirect(dispatcher, registrar))
                parts["redirect"] = chain[-1]
        return chain

