"""Worker processes: several sipproxy processes on the same legs.

With C{--workers N} the first process starts N-1 more, each a complete
proxy with the same options, all binding their legs with C{SO_REUSEPORT}.
The kernel spreads datagrams and connections over them by source address
and port, so one peer's messages keep their order. A stateless proxy needs
nothing from its siblings: each one decodes the others' Contact tokens and
recognises their Via branches, because all of them read the same secret
file. What must be shared across processes lives outside them: bindings in
SQLite or Redis, media in a relay reached over ng (an edge module).
"""
from __future__ import annotations

import os
import signal
import sys
from typing import Any, Optional, Sequence

from twisted.application.service import Service
from twisted.internet import defer, protocol
from sipproxy.observe.logsafe import SafeLogger
from sipproxy.app.logging_setup import relayed_event

__all__ = ["WorkerPool", "worker_argv", "die_with_parent"]

log = SafeLogger()

#: How long a stopping parent waits for its workers before killing them.
STOP_TIMEOUT = 5.0
#: A worker that dies is started again after this many seconds.
RESTART_DELAY = 1.0


def worker_argv(argv: Sequence[str], index: int) -> list[str]:
    """The command line of worker C{index}: the parent's twistd command
    with logging to stdout (the parent relays it), no pid file, no
    C{--workers}, and C{--worker-index}."""
    args = list(argv)
    try:
        plugin = args.index("sipproxy")
    except ValueError:
        raise ValueError("--workers needs twistd's command line with 'sipproxy' in it") from None
    twistd_args: list[str] = []
    skip = False
    for arg in args[1:plugin]:  # drop the parent's pid file and log file
        if skip:
            skip = False
        elif arg in ("-l", "--logfile", "--pidfile"):
            skip = True
        elif not arg.startswith(("--logfile=", "--pidfile=", "-l")):
            twistd_args.append(arg)
    plugin_args: list[str] = []
    skip = False
    for arg in args[plugin + 1 :]:
        if skip:
            skip = False
            continue
        if arg == "--workers":
            skip = True
            continue
        if arg.startswith("--workers="):
            continue
        plugin_args.append(arg)
    return [sys.executable, args[0], *twistd_args, "--nodaemon", "--pidfile=", "--logfile=-", "sipproxy",
            *plugin_args, f"--worker-index={index}"]


def die_with_parent() -> None:
    """Ask Linux to send this process SIGTERM when its parent dies, so no
    worker outlives a killed parent."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        log.warn("worker: cannot ask to die with the parent process")


class _WorkerProtocol(protocol.ProcessProtocol):
    """Relays a worker's log lines into the parent's log."""

    def __init__(self, pool: "WorkerPool", index: int) -> None:
        self.pool = pool
        self.index = index
        self.ended: defer.Deferred = defer.Deferred()
        self._partial = b""

    def outReceived(self, data: bytes) -> None:
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            text = line.decode("utf-8", "replace").rstrip()
            if text[:1].isdigit():  # the worker's own time stamp: ours is enough
                text = text.partition(" ")[2]
            relayed = relayed_event(text)  # --log-format json: the worker's fields, not a string of them
            if relayed is not None:
                level, line, fields = relayed
                log.emit(level, "worker {index}: {line}",
                         **{**fields, "index": self.index, "worker": self.index, "line": line})
            elif text:
                log.info("worker {index}: {line}", index=self.index, line=text)

    errReceived = outReceived

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD == 3:  # the worker's metrics snapshots (sipproxy.app.metrics)
            if self.pool.snapshot_sink is not None:
                self.pool.snapshot_sink.received(self.index, data)
            return
        super().childDataReceived(childFD, data)

    def processEnded(self, reason: Any) -> None:
        if self.pool.snapshot_sink is not None:
            self.pool.snapshot_sink.ended(self.index)
        self.ended.callback(None)
        self.pool.worker_ended(self, reason)


class WorkerPool(Service):
    """Starts, watches and stops the extra worker processes.

    @param argv: the parent's command line (C{sys.argv}).
    @param count: how many extra processes (workers minus one).
    """

    name = "workers"

    def __init__(self, reactor: Any, argv: Sequence[str], count: int) -> None:
        self.reactor = reactor
        self.argv = list(argv)
        self.count = count
        self.workers: dict[int, _WorkerProtocol] = {}
        self._transports: dict[int, Any] = {}
        self._stopping = False
        #: with --metrics: takes each worker's snapshots (received(index, data), ended(index))
        self.snapshot_sink: Any = None
        self._spawned = False
        self._spawn_euid: Optional[int] = None
        #: set when a worker could not be restarted and the process stops with status 1
        self.failed = False

    def privilegedStartService(self) -> None:
        """Start the workers before twistd drops root (C{--uid}): they must
        bind the legs as the same user as this process (the kernel lets
        only sockets of one owner share a port with C{SO_REUSEPORT}) and
        read the secret file (0600); each drops root itself after binding,
        with the C{--uid}/C{--gid} it inherits."""
        super().privilegedStartService()
        self._start_workers()

    def startService(self) -> None:
        super().startService()
        self._start_workers()

    def _start_workers(self) -> None:
        if self._spawned:
            return
        self._spawned = True
        self._stopping = False
        self._spawn_euid = os.geteuid()
        for index in range(1, self.count + 1):
            self._spawn(index)

    def _spawn(self, index: int) -> None:
        argv = worker_argv(self.argv, index)
        proto = _WorkerProtocol(self, index)
        env, fds = os.environ.copy(), None
        if self.snapshot_sink is not None:  # a pipe for its metrics snapshots (sipproxy.app.metrics)
            env["SIPPROXY_METRICS_FD"], fds = "3", {0: "w", 1: "r", 2: "r", 3: "r"}
        # The worker inherits a blocked SIGHUP (a signal mask survives exec;
        # Twisted resets only ignored signals): a reload passed on while it
        # starts waits until its Reloader has a handler (and unblocks it)
        # instead of killing it with SIGHUP's default action.
        held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP}) if hasattr(signal, "pthread_sigmask") \
            else None
        try:
            self._transports[index] = self.reactor.spawnProcess(proto, argv[0], argv, env=env, childFDs=fds)
        finally:
            if held is not None:
                signal.pthread_sigmask(signal.SIG_SETMASK, held)
        self.workers[index] = proto
        log.info("started worker {index} (pid {pid})", index=index, pid=self._transports[index].pid)

    def worker_ended(self, proto: _WorkerProtocol, reason: Any) -> None:
        if self.workers.get(proto.index) is proto:
            del self.workers[proto.index]
            self._transports.pop(proto.index, None)
        if self._stopping:
            return
        if self._spawn_euid == 0 and os.geteuid() != 0:
            # a worker started now would run as the --uid user: it could not
            # read the secret file nor share the legs' ports with root's sockets
            log.error("worker {index} ended ({reason}) and cannot be started again after twistd dropped root "
                      "(--uid); stopping with status 1 so the supervisor restarts the service",
                      index=proto.index, reason=reason.getErrorMessage())
            self.failed = True
            self.reactor.addSystemEventTrigger("after", "shutdown", _exit_failed)
            self.reactor.callLater(0, self.reactor.stop)
            return
        log.error("worker {index} ended ({reason}); starting it again in {delay} s",
                  index=proto.index, reason=reason.getErrorMessage(), delay=RESTART_DELAY)
        self.reactor.callLater(RESTART_DELAY, self._restart, proto.index)

    def _restart(self, index: int) -> None:
        if not self._stopping and index not in self.workers:
            self._spawn(index)

    def signal_workers(self, name: str) -> int:
        """Send signal C{name} (C{"HUP"}: reload) to every running worker;
        how many got it."""
        sent = 0
        for transport in list(self._transports.values()):
            try:
                transport.signalProcess(name)
                sent += 1
            except Exception:  # ended meanwhile; restarted with the new files
                pass
        return sent

    def stopService(self) -> Optional[defer.Deferred]:
        super().stopService()
        self._stopping = True
        self._spawned = False
        ended = [proto.ended for proto in self.workers.values()]
        for transport in list(self._transports.values()):
            try:
                transport.signalProcess("TERM")
            except Exception:  # already gone
                pass
        if not ended:
            return None
        done = defer.DeferredList(ended)
        killer = self.reactor.callLater(STOP_TIMEOUT, self._kill_stragglers)
        done.addBoth(lambda result: killer.active() and killer.cancel())
        return done

    def _kill_stragglers(self) -> None:
        for transport in list(self._transports.values()):
            try:
                transport.signalProcess("KILL")
            except Exception:
                pass


def _exit_failed() -> None:
    """End the process with status 1 once the services have stopped
    (twistd itself has no way to exit with a failure status)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)
