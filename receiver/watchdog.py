"""One thread per process that shuts sockets down when their deadline passes.

A read blocked on a silent peer (a database that stopped answering, a client dribbling its
headers or body) does not return by itself; a per-read socket timeout would not help either,
since every byte that arrives restarts it. So whatever must end by a deadline arms an alarm here,
and the watchdog shuts the socket down at that moment: the blocked read returns, and the caller
finds out with `disarm` that it was cut.

Used by the database layer (every call on the request path), the web layer (request bodies) and
the gunicorn worker (request headers). One thread and a heap rather than a timer thread per call:
arming costs microseconds.
"""

import contextlib
import heapq
import itertools
import logging
import os
import socket
import threading
import time

logger = logging.getLogger("receiver.watchdog")


class Alarm:
    """One armed deadline: the watchdog cuts `target` at `when` unless disarmed first."""

    __slots__ = ("cancelled", "fired", "how", "target", "when")

    def __init__(self, target, how, when):
        self.target, self.how, self.when = target, how, when
        self.fired = self.cancelled = False


class Watchdog:
    """Cuts the socket of every target that overran its deadline."""

    def __init__(self):
        self._pid = None
        self._thread = None
        self._order = itertools.count()
        self._start_lock = threading.Lock()
        self._cond = threading.Condition()
        self._heap = []

    def _ensure_running(self):
        """(Re)start the thread: after a fork the parent's thread does not exist in the child,
        and a thread that died (it should not: see _run) must not leave deadlines unkept."""
        with self._start_lock:
            if self._pid == os.getpid() and self._thread.is_alive():
                return
            if self._pid != os.getpid():  # a forked child: the parent's alarms are not ours
                self._cond = threading.Condition()
                self._heap = []
            self._thread = threading.Thread(target=self._run, name="receiver-watchdog", daemon=True)
            self._thread.start()
            self._pid = os.getpid()

    def arm(self, target, seconds, how=socket.SHUT_RDWR) -> Alarm:
        """Cut `target` (anything with a fileno()) in `seconds` unless `disarm` is called first."""
        if self._pid != os.getpid() or not self._thread.is_alive():
            self._ensure_running()
        alarm = Alarm(target, how, time.monotonic() + max(seconds, 0.0))
        with self._cond:
            heapq.heappush(self._heap, (alarm.when, next(self._order), alarm))
            # Wake the thread only when this alarm is now the earliest: otherwise it already
            # sleeps until an earlier deadline and finds this one then. (Waking it on every arm
            # cost a thread switch and a GIL hand-off, three times a batch: a share of a
            # worker's CPU worth saving; docs/benchmarks-history.md: #13, second session.)
            if self._heap[0][2] is alarm:
                self._cond.notify()
        return alarm

    def disarm(self, alarm) -> bool:
        """Stop the alarm; True when it had already fired (the target is cut)."""
        with self._cond:  # the same lock as the firing: after this, it never fires
            alarm.cancelled = True
            return alarm.fired

    def _run(self):
        """Sleep until the earliest deadline; cut the targets whose deadline passed.

        Nothing may end this loop: without it no deadline of this process is kept any more,
        silently. So every cut is guarded, and so is the loop itself."""
        with self._cond:
            while True:
                try:
                    self._fire_due()
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cond.wait(timeout)
                except Exception:  # a bug of ours; keep watching all the same
                    logger.exception("watchdog: unexpected error, going on")
                    self._cond.wait(0.01)  # lets go of the lock: arm() and disarm() never wait

    def _fire_due(self):
        now = time.monotonic()
        while self._heap and (self._heap[0][2].cancelled or self._heap[0][0] <= now):
            alarm = heapq.heappop(self._heap)[2]
            if alarm.cancelled:
                continue
            alarm.fired = True
            try:
                cut(alarm.target, alarm.how)
            except Exception:
                # The alarm counts as fired: its owner treats what it got as cut, and discards it.
                logger.exception("watchdog: could not cut %r", alarm.target)


def cut(target, how=socket.SHUT_RDWR):
    """Shut `target`'s socket down, so a read blocked on a silent peer returns at once.

    On a duplicate of the descriptor: closing the duplicate leaves the owner's descriptor open
    (libpq's, gunicorn's), while shutdown() acts on the socket that both share; and a TLS
    socket's own shutdown() would drop its encryption for the answer still to be written."""
    try:
        fd = os.dup(target.fileno())
    except Exception:  # already closed (OSError, ValueError, psycopg's own): nothing blocks on it
        return
    try:
        sock = socket.socket(fileno=fd)
    except OSError:  # not a socket after all: nothing to shut down, but the duplicate is ours
        os.close(fd)
        return
    # OSError: not connected any more, so the read has returned already.
    with sock, contextlib.suppress(OSError):
        sock.shutdown(how)


WATCHDOG = Watchdog()
