"""Keeping a registration alive: when to refresh, how to back off.

Net::SIP::Simple registers once and leaves the refresh to the
application; users of Python UAs complain most about refreshes that
ignore the registrar's granted Expires or fail silently (see
ua-anchors.md). Here a L{Registration} refreshes on its own, from the
expiry the registrar granted, and reports every outcome through a
callback:

- refresh at C{min(expires * 0.8, expires - 5)} seconds, never before
  half the interval (so a short grant is not refreshed in a loop);
- after a failure, retry after 30 s, doubling up to 10 minutes, and
  report C{register_failed} each time; the first success resets it.

The REGISTER itself is sent by whoever owns the transactions (the
endpoint): L{Registration} takes a C{send(expires)} function returning a
Deferred of the granted expiry, and an C{IReactorTime} for its timer.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from sipproxy.observe.logsafe import SafeLogger
from twisted.python.failure import Failure

__all__ = ["RefreshPolicy", "Registration"]

log = SafeLogger()


class RefreshPolicy:
    """When to refresh a binding, and how long to wait after a failure.

    @param fraction: refresh after this share of the granted interval...
    @param margin: ...or this many seconds before it ends, whichever is
        sooner.
    @param backoff: the first wait after a failure; each further failure
        doubles it, up to C{backoff_cap}.
    """

    def __init__(self, fraction: float = 0.8, margin: float = 5.0, backoff: float = 30.0,
                 backoff_cap: float = 600.0) -> None:
        if not 0 < fraction <= 1 or margin < 0 or backoff <= 0 or backoff_cap < backoff:
            raise ValueError("want 0 < fraction <= 1, margin >= 0, 0 < backoff <= backoff_cap")
        self.fraction = fraction
        self.margin = margin
        self.backoff = backoff
        self.backoff_cap = backoff_cap

    def refresh_after(self, expires: float) -> float:
        """Seconds from a success (granting C{expires}) to the refresh."""
        delay = min(expires * self.fraction, expires - self.margin)
        return max(delay, expires / 2.0)

    def retry_after(self, failures: int) -> float:
        """Seconds from the C{failures}-th failure in a row to the retry."""
        return min(self.backoff * 2 ** max(failures - 1, 0), self.backoff_cap)


class Registration:
    """One binding kept alive.

    @param clock: C{IReactorTime} for the refresh timer.
    @param send: C{send(expires) -> Deferred} firing with the expiry the
        registrar granted (or failing with the reason, e.g. a
        L{sipproxy.ua.endpoint.SIPError} carrying the code).
    @param on_event: C{on_event(name, fields)} with C{"registered"}
        (C{expires}), C{"register_failed"} (C{code}, C{reason},
        C{retry_in}) and C{"unregistered"}.
    @ivar expires: the last granted expiry (None before the first).
    """

    def __init__(self, clock: IReactorTime, send: Callable[[int], Deferred], expires: int = 3600,
                 policy: Optional[RefreshPolicy] = None,
                 on_event: Optional[Callable[[str, dict], Any]] = None) -> None:
        self.clock = clock
        self.send = send
        self.requested = expires
        self.policy = policy or RefreshPolicy()
        self.on_event = on_event
        self.expires: Optional[int] = None
        self.failures = 0
        self._timer: Optional[IDelayedCall] = None
        self._stopped = False

    @property
    def active(self) -> bool:
        """True while a refresh or a retry is scheduled."""
        return self._timer is not None and self._timer.active()

    def start(self) -> Deferred:
        """Register now: the Deferred fires with the granted expiry, or
        fails with the first failure (then nothing is retried: the caller
        heard about it)."""
        self._stopped = False
        d = self.send(self.requested)
        d.addCallback(self._granted)
        return d

    def stop(self) -> None:
        """Stop refreshing (the binding expires at the registrar)."""
        self._stopped = True
        self._cancel_timer()

    def unregister(self) -> Deferred:
        """Stop refreshing and remove the binding (REGISTER with expires 0)."""
        self.stop()
        d = self.send(0)

        def done(result: Any) -> Any:
            self.expires = None
            self._report("unregistered", {})
            return result

        return d.addCallback(done)

    # -- internals ------------------------------------------------------------------
    def _granted(self, expires: int) -> int:
        self.expires = expires
        self.failures = 0
        self._report("registered", {"expires": expires})
        if expires > 0 and not self._stopped:
            self._schedule(self.policy.refresh_after(expires))
        return expires

    def _refresh(self) -> None:
        self._timer = None
        d = self.send(self.requested)
        d.addCallbacks(self._granted, self._refresh_failed)

    def _refresh_failed(self, failure: Failure) -> None:
        self.failures += 1
        delay = self.policy.retry_after(self.failures)
        error = failure.value
        fields = {"code": getattr(error, "code", None), "reason": getattr(error, "reason", None) or str(error),
                  "retry_in": delay}
        log.warn("registration refresh failed ({code} {reason}); retry in {retry_in} s", **fields)
        self._report("register_failed", fields)
        if not self._stopped:
            self._schedule(delay)

    def _schedule(self, delay: float) -> None:
        self._cancel_timer()
        self._timer = self.clock.callLater(delay, self._refresh)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _report(self, name: str, fields: dict) -> None:
        if self.on_event is not None:
            try:
                self.on_event(name, fields)
            except Exception:
                log.failure("registration event handler failed on {name}", name=name)
