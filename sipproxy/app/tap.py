"""C{twistd sipproxy}: command line options and the service they build.

A bad option prints one line naming the problem and exits with status 2;
a leg that cannot be bound or a secret file that cannot be used prints one
line and exits with status 1. No traceback either way.
"""
from __future__ import annotations

import errno
import gc
import os
import socket
import sys
from typing import Any, Optional

from twisted.python import usage

from sipproxy.app.option_types import number
from sipproxy.transport.legs import DEFAULT_BUFFER
from sipproxy.transport.stream_guard import StreamLimits
from sipproxy.transport.legspec import LegSpec, LegSpecError, parse_leg_list
from sipproxy.app.nat_options import NAT_FLAGS, NAT_PARAMETERS, check_nat_options
from sipproxy.app.metrics import METRICS_PARAMETERS
from sipproxy.app.control import CONTROL_PARAMETERS, check_control_options
from sipproxy.app.dns_options import DNS_PARAMETERS, DNSServerOption, check_dns_options, make_resolver
from sipproxy.app.hep_options import HEP_PARAMETERS, check_hep_options, opt_hep
from sipproxy.app.logging_setup import LOG_FLAGS, LOG_PARAMETERS, check_log_options
from sipproxy.proxy.routing import parse_proxy
from sipproxy.app.secret import SecretError, load_or_create
from sipproxy.app import config_file

__all__ = ["Options", "makeService"]

DEFAULT_LEG = "udp:127.0.0.1:5060"

# -- TCP and TLS limits (named after Kamailio's core parameters; see README "Security") --------
_LIMITS = StreamLimits()
TCP_LIMIT_PARAMETERS = [
    ["tcp-idle", None, _LIMITS.idle_timeout, "Close TCP/TLS connections without traffic for this many seconds "
     "(Kamailio: tcp_connection_lifetime; longer than RFC 5626 keep-alive intervals).",
     number(float, "tcp-idle", "a number")],
    ["tcp-max-connections", None, _LIMITS.max_connections, "Accept no more TCP/TLS connections than this in "
     "total (Kamailio: tcp_max_connections; lowered to what ulimit -n leaves room for).",
     number(int, "tcp-max-connections", "an integer")],
    ["tcp-accept-iplimit", None, _LIMITS.max_per_ip, "Accept no more TCP/TLS connections than this from one "
     "source IP address (Kamailio: tcp_accept_iplimit).", number(int, "tcp-accept-iplimit", "an integer")],
    ["tcp-conn-wq-max", None, _LIMITS.write_queue_max, "Abort a TCP/TLS connection whose peer does not read once "
     "this many octets wait for it (Kamailio: tcp_conn_wq_max).", number(int, "tcp-conn-wq-max", "an integer")],
    ["tcp-send-timeout", None, _LIMITS.send_timeout, "Abort a TCP/TLS connection whose peer has taken none of "
     "our data for this many seconds (Kamailio: tcp_send_timeout).", number(float, "tcp-send-timeout", "a number")],
    ["tcp-msg-read-timeout", None, _LIMITS.read_timeout, "Abort a TCP/TLS connection that has not delivered a "
     "whole message within this many seconds of its first octet (or, for the first one, of the connect) "
     "(Kamailio: tcp_msg_read_timeout).", number(float, "tcp-msg-read-timeout", "a number")],
    ["tcp-log-interval", None, _LIMITS.log_interval, "Log at most one line per source IP in this many seconds "
     "about refused, aborted or garbage TCP/TLS connections, then one summary line.",
     number(float, "tcp-log-interval", "a number")],
]


def tcp_limits(options: Any) -> StreamLimits:
    """The L{StreamLimits} the TCP limit options ask for."""
    limits = StreamLimits(
        max_connections=options["tcp-max-connections"], max_per_ip=options["tcp-accept-iplimit"],
        write_queue_max=options["tcp-conn-wq-max"], send_timeout=options["tcp-send-timeout"],
        read_timeout=options["tcp-msg-read-timeout"], idle_timeout=options["tcp-idle"],
        log_interval=options["tcp-log-interval"])
    problems = limits.problems()
    if problems:
        names = {"max_connections": "--tcp-max-connections", "max_per_ip": "--tcp-accept-iplimit",
                 "write_queue_max": "--tcp-conn-wq-max", "send_timeout": "--tcp-send-timeout",
                 "read_timeout": "--tcp-msg-read-timeout", "idle_timeout": "--tcp-idle",
                 "log_interval": "--tcp-log-interval"}
        field, _, rest = problems[0].partition(" ")
        raise usage.UsageError(f"{names[field]} {rest}")
    return limits


class Options(DNSServerOption, usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Run a stateless SIP proxy (after Net::SIP's StatelessProxy). Each leg is a "
        "socket the proxy listens and sends on: [proto:]host[:port], proto udp "
        "(default), tcp or tls, port 5060 by default (5061 for tls), IPv6 as [::1]. A request leaves "
        "through the leg that reaches its target; when a packet changes legs its "
        "Contact is rewritten into a token so in-dialog requests return through "
        "the proxy. Example: twistd -n sipproxy --legs udp:127.0.0.1:5060,udp:127.0.0.2:5060\n\n"
        "Registrar and access control: --registrar answers REGISTER for the served domains and routes "
        "calls to registered phones (unknown users of a served domain get 404). Served domains are the "
        "--domain values (a domain also covers its subdomains) and the proxy's own addresses. NOT AN OPEN "
        "RELAY: with --domain, a request that is neither to nor from a served domain (nor to a registered "
        "phone) gets 403, and with --users a request from a served domain must authenticate (407) before it "
        "is forwarded. Without --domain every domain counts as served: the proxy forwards anything, as "
        "Net::SIP does, and with --users REGISTER gets 401 and every other new request 407 until it "
        "authenticates. Example for a small office: twistd -n sipproxy --legs udp:192.168.1.10:5060 "
        "--registrar --domain office.example --users /etc/sipproxy/users --store sqlite:/var/lib/sipproxy/reg.db"
    )
    optFlags = [
        ["force-rewrite", None, "Rewrite Contact headers even when a packet leaves through the leg it came in on."],
        ["tls-verify", None, "Refuse TLS peers, servers and clients, whose certificate --tls-ca did not sign "
                             "(default: no verification, the usual SIP practice; host names are never checked)."],
        *NAT_FLAGS,
        *LOG_FLAGS,
        ["registrar", None, "Answer REGISTER for the served domains and route requests to registered phones."],
        ["redirect", None, "Answer requests for registered users with 302 and their contacts instead of "
                           "proxying them (implies --registrar)."],
        ["register-any-aor", None, "With --users: an authenticated user may register any address of the served "
                                   "domains (a PBX registering for others); by default only its own user part, "
                                   "compared case-sensitively."],
        ["no-nat-flows", None, "Send requests to the Contact a phone wrote even when its packets came from "
                               "elsewhere (default: phones behind NAT are reached over the flow their REGISTER "
                               "or call came on)."],
    ]
    optParameters = [
        ["outgoing-proxy", None, None, "Send every request to this proxy: host[:port] or a sip: URI "
                                       "(;transport=tcp picks TCP)."],
        ["secret-file", None, "sipproxy.secret",
         "File with the secret that seals Contact tokens and Via branches; created (mode 0600) if "
         "missing. Give every worker and node that must understand each other the same file."],
        ["udp-buffer", None, DEFAULT_BUFFER, "Receive and send buffer size of UDP legs, in bytes.",
         number(int, "udp-buffer", "an integer")],
        *TCP_LIMIT_PARAMETERS,
        *METRICS_PARAMETERS,
        ["workers", None, 1, "Run this many proxy processes sharing the legs (SO_REUSEPORT); the kernel "
                             "spreads traffic over them by source address. Needs legs with explicit ports, "
                             "a shared --store (sqlite or redis) with --registrar, and --nathelper-ng instead "
                             "of --nathelper.", number(int, "workers", "an integer")],
        ["tls-cert", None, None, "PEM certificate of TLS legs (with the key, unless --tls-key); presented to "
                                 "clients and, as a client certificate, to the servers the proxy connects to."],
        ["tls-key", None, None, "PEM private key of --tls-cert, if not in the same file."],
        ["tls-ca", None, None, "PEM CA certificate that TLS peers must be signed by (with --tls-verify)."],
        ["worker-index", None, 0, "(internal) which worker this process is; set by --workers.",
         number(int, "worker-index", "an integer")],
        ["min-expires", None, 60, "Registrar: refuse shorter registrations with 423 (seconds).",
         number(int, "min-expires", "an integer")],
        ["max-expires", None, 3600, "Registrar: cut longer registrations to this (seconds); also the interval "
                                    "granted when a phone asks for none.", number(int, "max-expires", "an integer")],
        ["nat-ping-interval", None, 30.0, "Registrar: seconds between keep-alive pings (OPTIONS over UDP, CRLF "
                                          "over TCP/TLS) of phones registered over NAT; 0 turns them off.",
         number(float, "nat-ping-interval", "a number")],
        ["nat-ping-failures", None, 3, "Registrar: unanswered keep-alive pings in a row that drop such a binding.",
         number(int, "nat-ping-failures", "an integer")],
        ["store", None, "memory", "Registrar bindings: memory (lost at restart), sqlite:PATH (one node, survives "
                                  "a restart) or redis://HOST:PORT/DB (shared by several nodes; while Redis is "
                                  "down requests needing it get 503 with Retry-After)."],
        ["users", None, None, "Require digest authentication (MD5, SHA-256) with the users in FILE: lines "
                              "user:password, or user:realm:HA1 as htdigest writes them; # starts a comment."],
        ["realm", None, None, "Digest realm (default: the first --domain, else 'sipproxy')."],
        ["rate-limit", None, None, "ATTEMPTS/SECONDS: silently drop packets from a source IP:port that sent "
                                   "ATTEMPTS or more within SECONDS (off by default; 50/10 suits an office)."],
        ["rate-limit-db", None, None, "Keep the --rate-limit counts and blocks in this JSON file across restarts."],
        ["max-contacts", None, 10, "Registrar: contacts one address-of-record may hold; a REGISTER adding "
                                   "more gets 403 (Kamailio's max_contacts). 0: no limit.",
         number(int, "max-contacts", "an integer")],
        ["auth-fail-limit", None, "10/60/600", "FAILURES/SECONDS[/BLOCK]: drop the authentication attempts of "
                                               "a source IP (any port) that failed FAILURES times within SECONDS, "
                                               "for BLOCK seconds (default 10 SECONDS); per worker process, in "
                                               "memory; 'off' to disable. For bans across workers and restarts "
                                               "see contrib/fail2ban."],
        ["token-lifetime", None, 43200, "Seconds a dialog's Contact token stays good after its Contact last "
                                        "passed the proxy (every re-INVITE renews it); a token never starts a "
                                        "new call unless it came from a REGISTER.",
         number(int, "token-lifetime", "an integer")],
        *NAT_PARAMETERS,
        *config_file.CONFIG_PARAMETERS,
        *CONTROL_PARAMETERS,
        *DNS_PARAMETERS,
        *HEP_PARAMETERS,
        *LOG_PARAMETERS,
    ]
    opt_hep = opt_hep

    def __init__(self) -> None:
        super().__init__()
        self["legs"] = []
        self["domain2proxy"] = {}
        self["domains"] = []
        self["block"] = {}
        self["drop_headers"] = {}

    def opt_legs(self, value: str) -> None:
        """Comma-separated legs, [proto:]host[:port] (repeatable; default udp:127.0.0.1:5060)."""
        self["legs"].append(value)

    def opt_domain2proxy(self, value: str) -> None:
        """DOMAIN=PROXY: requests for DOMAIN (exact, *.parent or *) go to PROXY (host[:port] or sip: URI); comma list, repeatable."""
        for item in filter(None, (part.strip() for part in value.split(","))):
            domain, sep, proxy = item.partition("=")
            if not sep or not domain.strip() or not proxy.strip():
                raise usage.UsageError(f"--domain2proxy {item!r}: want DOMAIN=PROXY")
            try:
                self["domain2proxy"][domain.strip().lower()] = parse_proxy(proxy)
            except ValueError as e:
                raise usage.UsageError(f"--domain2proxy {item!r}: {e}") from None

    def opt_domain(self, value: str) -> None:
        """A domain this proxy serves (and its subdomains); comma list, repeatable."""
        for domain in filter(None, (part.strip() for part in value.split(","))):
            if any(c in domain for c in " @;:/<>") and not domain.startswith("["):
                raise usage.UsageError(f"--domain {domain!r}: want a domain name or an IP address")
            self["domains"].append(domain)

    def opt_block(self, value: str) -> None:
        """METHOD=CODE[ reason]: answer requests of METHOD with CODE (300-699), e.g. MESSAGE=405; repeatable."""
        from sipproxy.access.filters import parse_block

        method, sep, code = value.partition("=")
        method = method.strip().upper()
        if not sep or not method or not method.isalpha():
            raise usage.UsageError(f"--block {value!r}: want METHOD=CODE")
        try:
            parse_block(code)
        except ValueError as e:
            raise usage.UsageError(f"--block {value!r}: {e}") from None
        self["block"][method] = code.strip()

    def opt_drop_header(self, value: str) -> None:
        """NAME=REGEX: silently drop packets whose header NAME matches REGEX (e.g. User-Agent=friendly-scanner); repeatable."""
        import re

        name, sep, pattern = value.partition("=")
        if not sep or not name.strip() or not pattern:
            raise usage.UsageError(f"--drop-header {value!r}: want NAME=REGEX")
        try:
            re.compile(pattern)
        except re.error as e:
            raise usage.UsageError(f"--drop-header {value!r}: bad regular expression ({e})") from None
        self["drop_headers"][name.strip()] = pattern

    def _check_front_door(self) -> None:
        """Validate the registrar, authentication and filter options."""
        from sipproxy.access.digest_auth import Users, UsersFileError
        from sipproxy.stores import StoreSpecError, parse_store_spec

        if self["redirect"]:
            self["registrar"] = True
        if self["min-expires"] < 0:
            raise usage.UsageError("--min-expires must not be negative")
        if self["nat-ping-interval"] < 0:
            raise usage.UsageError("--nat-ping-interval must not be negative")
        if self["nat-ping-failures"] < 1:
            raise usage.UsageError("--nat-ping-failures must be at least 1")
        if self["max-expires"] < 1:
            raise usage.UsageError("--max-expires must be at least 1")
        if self["min-expires"] > self["max-expires"]:
            raise usage.UsageError(f"--min-expires {self['min-expires']} is above --max-expires "
                                   f"{self['max-expires']}")
        try:
            kind, _ = parse_store_spec(self["store"])
        except StoreSpecError as e:
            raise usage.UsageError(f"--store: {e}") from None
        if kind != "memory" and not self["registrar"]:
            raise usage.UsageError("--store needs --registrar (or --redirect)")
        self["realm"] = self["realm"] or (self["domains"][0] if self["domains"] else "sipproxy")
        if '"' in self["realm"] or "\\" in self["realm"]:
            raise usage.UsageError("--realm must not contain quotes or backslashes")
        self["credentials"] = None
        if self["users"]:
            try:
                self["credentials"] = Users.from_file(self["users"], self["realm"])
            except UsersFileError as e:
                raise usage.UsageError(f"--users {e}") from None
            if not len(self["credentials"]):
                raise usage.UsageError(f"--users {self['users']}: no users in the file")
        self["rate_limit"] = None
        if self["rate-limit"]:
            attempts, sep, seconds = self["rate-limit"].partition("/")
            try:
                limit = (int(attempts), float(seconds))
            except ValueError:
                limit = None
            if not sep or limit is None or limit[0] < 1 or not 0 < limit[1] < float("inf"):
                raise usage.UsageError(f"--rate-limit {self['rate-limit']!r}: want ATTEMPTS/SECONDS, e.g. 50/10")
            self["rate_limit"] = limit
        elif self["rate-limit-db"]:
            raise usage.UsageError("--rate-limit-db needs --rate-limit")

    def postOptions(self) -> None:
        self._check_front_door()
        try:
            self["leg_specs"] = parse_leg_list(self["legs"] or [DEFAULT_LEG])
        except LegSpecError as e:
            raise usage.UsageError(str(e)) from None
        self._check_tls()
        if self["outgoing-proxy"]:
            try:
                self["outgoing_proxy"] = parse_proxy(self["outgoing-proxy"])
            except ValueError as e:
                raise usage.UsageError(f"--outgoing-proxy: {e}") from None
        else:
            self["outgoing_proxy"] = None
        if self["udp-buffer"] < 0:
            raise usage.UsageError("--udp-buffer must not be negative")
        self["tcp_limits"] = tcp_limits(self)
        from sipproxy.access.login_limit import parse_limit

        try:
            self["auth_failure_limit"] = parse_limit(self["auth-fail-limit"])
        except ValueError as e:
            raise usage.UsageError(f"--auth-fail-limit {e}") from None
        if self["max-contacts"] < 0:
            raise usage.UsageError("--max-contacts must not be negative (0: no limit)")
        if self["token-lifetime"] < 60:
            raise usage.UsageError("--token-lifetime must be at least 60 seconds")
        check_nat_options(self)
        check_control_options(self)
        check_dns_options(self)
        check_hep_options(self)
        check_log_options(self)
        self._check_workers()

    def _check_tls(self) -> None:
        """TLS (and wss) legs need a certificate; the files must be readable."""
        tls_legs = [spec for spec in self["leg_specs"] if spec.proto in ("tls", "wss")]
        if tls_legs and not self["tls-cert"]:
            raise usage.UsageError(f"leg {tls_legs[0]}: a {tls_legs[0].proto.upper()} leg needs --tls-cert "
                                   "(and --tls-key)")
        if self["tls-verify"] and not self["tls-ca"]:
            raise usage.UsageError("--tls-verify needs --tls-ca")
        for option in ("tls-cert", "tls-key", "tls-ca"):
            path = self[option]
            if path and not os.access(path, os.R_OK):
                raise usage.UsageError(f"--{option} {path}: cannot read it")

    def _check_workers(self) -> None:
        """Several processes share sockets, nothing else: refuse what would
        need in-process state shared between them."""
        workers = self["workers"]
        if not 1 <= workers <= 64:
            raise usage.UsageError("--workers must be between 1 and 64")
        if workers == 1 and not self["worker-index"]:
            return
        if self["relay-only"]:
            raise usage.UsageError("--workers: run the relay (--relay-only) as one process")
        if self["nathelper"]:
            raise usage.UsageError("--workers: each worker would have its own relay; run one relay process "
                                   "(--relay-only --ng) and give the workers --nathelper-ng")
        if self["registrar"] and self["store"] == "memory":
            raise usage.UsageError("--workers with --registrar needs a shared --store (sqlite:PATH or redis://)")
        for spec in self["leg_specs"]:
            if spec.port == 0:
                raise usage.UsageError(f"--workers: leg {spec} needs an explicit port")

    def parseOptions(self, options: Optional[list[str]] = None) -> None:
        """Parse, and on a mistake print one line and exit 2 (twistd would
        dump the whole usage text before the message)."""
        try:
            config_file.parse(self, options)  # --config FILE, then the command line
        except usage.UsageError as e:
            sys.stderr.write(f"twistd sipproxy: {e}\n")
            sys.exit(2)


def _fail(message: str) -> None:
    sys.stderr.write(f"twistd sipproxy: {message}\n")
    sys.exit(1)


def check_bindable(spec: LegSpec, reuse_port: bool = False) -> Optional[str]:
    """Why a leg cannot be bound (address in use, not local, ...), or None.

    Checked before twistd starts, so the user gets one line, not a
    traceback from inside the reactor.
    """
    family = socket.AF_INET6 if spec.family == 6 else socket.AF_INET
    kind = socket.SOCK_DGRAM if spec.proto == "udp" else socket.SOCK_STREAM
    with socket.socket(family, kind) as sock:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:  # sibling workers hold the address with SO_REUSEPORT
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind((spec.host, spec.port))
        except OSError as e:
            reason = {errno.EADDRINUSE: "address already in use", errno.EADDRNOTAVAIL: "not an address of this host",
                      errno.EACCES: "permission denied"}.get(e.errno or 0, e.strerror)
            return f"cannot listen on {spec}: {reason}"
    return None


def makeService(options: Any) -> Any:
    from sipproxy.app.logging_setup import LogSetupError, logged_service

    service = _make_service(options)
    try:
        return logged_service(service, options)
    except LogSetupError as e:
        _fail(str(e))


def _make_service(options: Any) -> Any:
    from twisted.internet import reactor

    from sipproxy.app.control import add_control
    from sipproxy.app.nat_options import make_nathelper, make_relay_service, ng_bind_problem
    from sipproxy.app.service import ProxyService

    if options["nat"]["ng_server"]:
        problem = ng_bind_problem(options["nat"]["ng_server"])
        if problem:
            _fail(problem)
    if options["metrics"] and not options["worker-index"]:
        from sipproxy.app.metrics import metrics_bind_problem

        problem = metrics_bind_problem(options["metrics"])
        if problem:
            _fail(problem)
    if options["relay-only"]:
        from sipproxy.app.metrics import add_metrics

        relay_service = make_relay_service(reactor, options)
        add_metrics(relay_service, options, reactor)
        add_control(relay_service, options, reactor, relay=relay_service.namedServices.get("nat-relay"),
                    fail=_fail)
        return _reloadable(relay_service, reactor, options)
    sharing = options["workers"] > 1 or options["worker-index"] > 0
    if options["worker-index"]:
        from sipproxy.app.workers import die_with_parent

        die_with_parent()
    for spec in options["leg_specs"]:
        problem = check_bindable(spec, reuse_port=sharing)
        if problem:
            _fail(problem)
    try:
        secret = load_or_create(options["secret-file"])
    except SecretError as e:
        _fail(str(e))
    tls = _tls_options(options)
    door, store = _front_door(options, reactor, secret)
    nathelper, nat_services = make_nathelper(reactor, options)
    service = ProxyService(
        reactor,
        options["leg_specs"],
        receivers=[door] if door is not None else (),
        secret=secret,
        outgoing_proxy=options["outgoing_proxy"],
        domain2proxy=options["domain2proxy"],
        force_rewrite=bool(options["force-rewrite"]),
        nat_flows=not options["no-nat-flows"],
        udp_buffer=options["udp-buffer"],
        tcp_limits=options["tcp_limits"],
        nathelper=nathelper,
        reuse_port=sharing,
        tls=tls,
        token_lifetime=options["token-lifetime"],
        resolver=make_resolver(reactor, options),
    )
    pool = None
    service.dispatcher.blocklist.expire = options["dns-blocklist-expire"]
    if options["workers"] > 1 and not options["worker-index"]:
        from sipproxy.app.workers import WorkerPool

        pool = WorkerPool(reactor, sys.argv, options["workers"] - 1)
        pool.setServiceParent(service)
    for extra in nat_services:
        extra.setServiceParent(service)
    _add_capture(reactor, options, service)
    if store is not None:
        from sipproxy.stores import StoreService

        StoreService(store).setServiceParent(service)
    _reloadable(service, reactor, options, door, lambda new: make_front_door(
        new, reactor, secret, store, door.rate_limit_store if door is not None else None)
        if front_door_wanted(new) else None)
    from sipproxy.app.metrics import add_metrics

    add_metrics(service, options, reactor, door=door, store=store, pool=pool)
    add_control(service, options, reactor, store=store, door=door, fail=_fail)
    _settle_heap()
    return service


def _reloadable(service: Any, reactor: Any, options: Any, door: Any = None, make_door: Any = None) -> Any:
    """Give C{service} its C{reload()} (SIGHUP, the control socket)."""
    from sipproxy.app.reload import Reloader

    reloader = Reloader(reactor, options, service if make_door is not None else None, door, make_door)
    reloader.setServiceParent(service)
    service.reload = reloader.reload
    return service


def _add_capture(reactor: Any, options: Any, service: Any) -> None:
    """The HEP capture (--hep), started after the legs it copies."""
    from sipproxy.app.hep_options import make_hep_service

    capture = make_hep_service(reactor, options, service.dispatcher)
    if capture is not None:
        capture.setServiceParent(service)


def _settle_heap() -> None:
    """Collect once, then hide what startup made (Twisted, the crypto
    libraries, the configuration: some 40,000 objects that live as long as
    the process) from the cyclic garbage collector. Its full passes then
    scan only what traffic made, instead of pausing the proxy for about
    15 ms every few thousand calls. PyPy's collector has no C{freeze} (nor
    the need for it)."""
    freeze = getattr(gc, "freeze", None)
    if freeze is None:
        return
    gc.collect()
    freeze()


def _tls_options(options: Any) -> Any:
    """The certificates of TLS legs, or None; a bad file is one line."""
    if not options["tls-cert"]:
        return None
    from sipproxy.transport.legs import TLSOptions

    try:
        return TLSOptions(options["tls-cert"], options["tls-key"], options["tls-ca"], bool(options["tls-verify"]))
    except Exception as e:  # pyOpenSSL raises its own errors for bad PEM
        _fail(f"--tls-cert/--tls-key/--tls-ca: cannot load the certificates ({e})")


def _front_door(options: Any, reactor: Any, secret: bytes) -> tuple[Any, Any]:
    """The registrar/auth/filter receivers the options ask for (None when
    none) and the location store to close at stop."""
    from sipproxy.stores.blockfile import JSONFile
    from sipproxy.stores import open_store

    if not front_door_wanted(options):
        return None, None
    store = None
    if options["registrar"]:
        if options["store"].startswith("sqlite:"):
            from sipproxy.app.privileges import prepare_sqlite, target_ids

            path = options["store"][len("sqlite:"):]
            existed = os.path.exists(path)
            problem = _sqlite_problem(path) or prepare_sqlite(path, *target_ids(options), created=not existed)
            if problem:
                _fail(problem)
        store = open_store(options["store"], reactor)
        if options["metrics"]:  # its latency and errors (sipproxy.app.metrics)
            from sipproxy.stores.timing import TimedStore

            store = TimedStore(store)
    block_file = JSONFile(options["rate-limit-db"]) if options["rate-limit-db"] else None
    return make_front_door(options, reactor, secret, store, block_file), store


def front_door_wanted(options: Any) -> bool:
    """Whether the options ask for any receiver before the proxy."""
    return bool(options["registrar"] or options["credentials"] is not None or options["domains"]
                or options["block"] or options["rate_limit"] or options["drop_headers"])


def make_front_door(options: Any, reactor: Any, secret: bytes, store: Any, block_file: Any) -> Any:
    """The L{FrontDoor} of the options, with an open store (at start, and
    again at each reload with the running store)."""
    from sipproxy.access.front_chain import FrontDoor

    return FrontDoor(
        clock=reactor, store=store, registrar=options["registrar"], redirect=options["redirect"],
        domains=options["domains"] or None, min_expires=options["min-expires"], max_expires=options["max-expires"],
        users=options["credentials"], realm=options["realm"], secret=secret, block=options["block"],
        rate_limit=options["rate_limit"], rate_limit_store=block_file, drop_fields=options["drop_headers"],
        register_any_aor=bool(options["register-any-aor"]), max_contacts=options["max-contacts"] or None,
        auth_failure_limit=options["auth_failure_limit"],
        nat_flows=not options["no-nat-flows"], nat_ping_interval=options["nat-ping-interval"],
        nat_ping_failures=options["nat-ping-failures"],
    )


def _sqlite_problem(path: str) -> Optional[str]:
    """Why the SQLite store file cannot be used, or None (checked before
    the reactor runs, so the user gets one line)."""
    import sqlite3

    try:
        sqlite3.connect(path).close()
    except sqlite3.Error as e:
        return f"--store sqlite:{path}: {e}"
    return None
