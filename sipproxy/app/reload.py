"""Reload on SIGHUP (and the control socket's C{reload}): new tables,
nothing dropped.

A reload parses the command line and the C{--config} file again, exactly
as at start, so it checks what the start checks; then it swaps in what
can change while running:

- the users file (and the realm), the served domains, C{--block},
  C{--drop-header}, C{--rate-limit}, C{--auth-fail-limit},
  C{--register-any-aor}: a new receiver chain before the proxy, built
  around the parts that hold state (the registrar with its store and flow
  keeper, the digest nonces, failed-login and rate-limit counts), put in
  place by one assignment between two packets;
- the TLS certificates: new connections use them, open ones keep theirs.

Calls (the stateless proxy, its Contact tokens, the relay), TCP and TLS
connections (the legs) and registrations (the store) are not touched.
A reload that fails (a bad users file, a bad value in the config file, a
certificate that does not load) changes nothing and says why in one log
line. Other options changed in the file are reported as needing a
restart. With C{--workers} the first process passes SIGHUP on to the
others once its own reload succeeded; each worker logs its own result.
"""
from __future__ import annotations

import signal
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional

from twisted.application.service import IServiceCollection, Service
from twisted.internet.interfaces import IReactorFromThreads
from twisted.python import usage

from sipproxy.app import config_file
from sipproxy.observe.logsafe import SafeLogger

if TYPE_CHECKING:
    from sipproxy.access.front_chain import FrontDoor
    from sipproxy.app.service import ProxyService

__all__ = ["RELOADABLE", "Reloader"]

log = SafeLogger()

#: Options a reload applies; a change to any other needs a restart.
RELOADABLE = frozenset({"users", "realm", "domain", "block", "drop-header", "rate-limit", "auth-fail-limit",
                        "register-any-aor", "tls-cert", "tls-key", "tls-ca", "tls-verify", "config"})

#: The parsed values (keys of the Options dict) the reloadable options set.
APPLIED = ("users", "credentials", "realm", "domains", "block", "drop_headers", "rate-limit", "rate_limit",
           "auth-fail-limit", "auth_failure_limit", "register-any-aor", "tls-cert", "tls-key", "tls-ca",
           "tls-verify")


class ReloadFailed(Exception):
    """Why a reload changed nothing (one line)."""


class Reloader(Service):
    """Reloads the running configuration; installs the SIGHUP handler
    while running.

    @param options: the parsed options the process started with.
    @param service: the L{sipproxy.app.service.ProxyService}, or None
        (C{--relay-only}: nothing to reload).
    @param door: the running L{sipproxy.access.front_chain.FrontDoor}, or
        None.
    @param make_door: C{(options) -> FrontDoor or None} for new options
        (a mapping like the parsed C{Options}), with the running store and
        secret.
    """

    name = "reload"

    def __init__(self, reactor: IReactorFromThreads, options: usage.Options, service: Optional[ProxyService] = None,
                 door: Optional[FrontDoor] = None,
                 make_door: Optional[Callable[[Mapping[str, Any]], Optional[FrontDoor]]] = None) -> None:
        self.reactor = reactor
        self.options = options
        self.proxy_service = service
        self.door = door
        self.make_door = make_door
        self._previous_handler: Any = None
        #: reloads done and failed (for metrics and the control socket)
        self.reloads = 0
        self.failures = 0

    # -- the signal ---------------------------------------------------------------------
    def startService(self) -> None:
        super().startService()
        if hasattr(signal, "SIGHUP"):
            self._previous_handler = signal.signal(signal.SIGHUP, self._on_signal)
            if hasattr(signal, "pthread_sigmask"):
                # a worker starts with SIGHUP blocked (sipproxy.app.workers):
                # one sent before this handler existed was held, not fatal,
                # and is delivered to the handler now
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})

    def stopService(self) -> Any:
        if hasattr(signal, "SIGHUP") and self._previous_handler is not None:
            signal.signal(signal.SIGHUP, self._previous_handler)
            self._previous_handler = None
        return super().stopService()

    def _on_signal(self, signum: int, frame: Any) -> None:
        # run from the reactor, between two events, never inside one
        self.reactor.callFromThread(self.reload)

    # -- the reload ---------------------------------------------------------------------
    def reload(self) -> dict[str, Any]:
        """Reload now: C{{"ok": bool, "message": str}} (also logged, one
        line)."""
        try:
            message = self._reload()
        except ReloadFailed as e:
            reason = str(e)
        except Exception as e:  # never a traceback into the reactor; still one line
            reason = f"{type(e).__name__}: {e}"
        else:
            self.reloads += 1
            log.info("reload: {message}", message=message, reload_ok=True)
            return {"ok": True, "message": message}
        reason = " ".join(reason.split())
        self.failures += 1
        log.error("reload failed, the running configuration is kept: {reason}", reason=reason, reload_ok=False)
        return {"ok": False, "message": f"reload failed, the running configuration is kept: {reason}"}

    def _reload(self) -> str:
        old = self.options
        new = self._parse_again()
        if self.proxy_service is None:
            return "nothing to reload in a --relay-only process"
        restart = sorted(name for name in _changed(old, new) if name not in RELOADABLE)
        tls = self._load_tls(new)
        running = dict(old)  # what cannot change keeps its start value (--registrar, --store, ...)
        running.update((key, new[key]) for key in APPLIED)
        door = self.make_door(running) if self.make_door is not None else None
        service = self.proxy_service
        parts = door.build(service.dispatcher, keep=self.door.parts if self.door is not None else None) \
            if door is not None else []
        # building (above) and swapping (below) run in one reactor turn: no
        # packet sees half of it
        if service.chain is not None:
            service.chain.replace([*parts, service.proxy])
        elif parts:
            from sipproxy.access.chain import ReceiveChain

            service.chain = ReceiveChain([*parts, service.proxy])
            service.dispatcher.set_receiver(service.chain)
        if door is not None:
            self.door = door
        for leg in service.legs:
            if tls is not None and hasattr(leg, "set_tls"):  # tls: and wss: legs
                leg.set_tls(tls)
        return self._summary(new, tls is not None, restart, self._pass_on())

    def _parse_again(self) -> usage.Options:
        argv = list(getattr(self.options, "argv", []))
        config = getattr(self.options, "config_file", None)
        if config is not None:
            argv.append(f"--config={config.path}")  # the same file after a chdir (the last --config wins)
        new = type(self.options)()
        try:
            config_file.parse(new, argv)
        except usage.UsageError as e:
            raise ReloadFailed(str(e)) from None
        except SystemExit:
            raise ReloadFailed("the options ask to exit") from None
        return new

    def _load_tls(self, new: usage.Options) -> Any:
        if self.proxy_service is None or not any(hasattr(leg, "set_tls") for leg in self.proxy_service.legs):
            return None
        from sipproxy.transport.legs import TLSOptions

        try:
            return TLSOptions(new["tls-cert"], new["tls-key"], new["tls-ca"], bool(new["tls-verify"]))
        except Exception as e:  # pyOpenSSL raises its own errors for bad PEM
            raise ReloadFailed(f"--tls-cert/--tls-key/--tls-ca: cannot load the certificates ({e})") from None

    def _pass_on(self) -> int:
        """SIGHUP to the worker processes (the first process only)."""
        parent = self.parent
        if not IServiceCollection.providedBy(parent):
            return 0
        try:
            pool = parent.getServiceNamed("workers")
        except KeyError:
            return 0
        return pool.signal_workers("HUP")

    def _summary(self, new: usage.Options, tls: bool, restart: list[str], workers: int) -> str:
        users = new["credentials"]
        parts = [f"users {len(users) if users is not None else 'off'}",
                 f"domains {','.join(new['domains']) or '*'}",
                 f"blocks {len(new['block'])}", f"drop rules {len(new['drop_headers'])}",
                 "rate limit " + ("{}/{:g}".format(*new["rate_limit"]) if new["rate_limit"] else "off")]
        if tls:
            parts.append(f"TLS certificate {new['tls-cert']}")
        message = "reloaded " + ", ".join(parts)
        if restart:
            message += "; changed but needing a restart (kept as they were): " + ", ".join(restart)
        if workers:
            message += f"; passed on to {workers} worker(s)"
        return message


def _changed(old: usage.Options, new: usage.Options) -> set[str]:
    """The options whose values (as given by file and command line)
    differ between two parses."""
    before, after = config_file.given_values(old), config_file.given_values(new)
    return {name for name in set(before) | set(after) if before.get(name) != after.get(name)}
