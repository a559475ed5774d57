"""The gunicorn worker the receiver runs: gthread, plus a deadline on a request's headers, the
moment each request arrived, and connections closed after a refusal.

gthread hands a connection to a thread once its first bytes are there, and the thread then reads
the request line and headers blocking: a client sending them a byte every couple of seconds held
its thread for hours, and 8 such clients held every thread of the default receiver (2 workers x
4 threads), so Campaign's next batch got no answer. Here a watchdog alarm shuts the connection's
reading side when its headers (and a TLS handshake) have not arrived within
RECEIVER_BODY_TIMEOUT: the read returns, gunicorn drops the connection, the thread is free.

A request's arrival, from which its one deadline counts (receiver.web.webhook: every answer
within 9.5 s of it, whatever the database does), is when the worker queued its connection for a
thread, readable: time spent waiting for a free thread counts too. (A new connection is queued
on accept, before its first bytes; when the thread then has to wait for them, the arrival is
when they came.)

A connection that is done is closed in the worker's thread too, lingering at most 0.5 s for the
client's unread bytes; gthread closes it in its main thread, lingering up to 2 s, and clients
that go on sending after a refusal stalled the accept loop (16 dribblers: a real batch waited
5 s for its connection to be accepted).

It leans on gthread's internals (ThreadWorker.enqueue_req/handle/handle_request/handle_http2/
finish_request, nr_conns, TConn.wait_for_data, the _DEFER marker, util.close_graceful):
gunicorn is pinned below its next major version in setup.cfg, and
tests/unit/test_dependencies.py fails loudly if one of them goes away.
"""

import socket
import threading
import time

from gunicorn import util
from gunicorn.workers import gthread

from ..watchdog import WATCHDOG

_current = threading.local()
# How long a closing connection's unread bytes are drained before it is closed (gunicorn's
# graceful close, RFC 9112 9.6, so that the last answer is not cut by a reset), here in the
# worker's thread: gthread does it in its main thread, for up to 2 s per connection, and a
# client that keeps sending after being refused or cut stalled the accept loop for everyone.
CLOSE_LINGER_SECONDS = 0.5


def arrival() -> float | None:
    """When this thread's request arrived (time.monotonic()), under this worker; else None."""
    return getattr(_current, "arrival", None)


class _ConnectionSocket:
    """The connection's socket as the watchdog should see it at the moment it fires: gthread
    replaces the plain socket by its TLS wrapper during the handshake."""

    __slots__ = ("conn",)

    def __init__(self, conn):
        self.conn = conn

    def fileno(self):
        return self.conn.sock.fileno()


class ReceiverWorker(gthread.ThreadWorker):
    """gthread with a deadline on each request's headers."""

    header_timeout = 1.5  # RECEIVER_BODY_TIMEOUT, set from the app's configuration

    def load_wsgi(self):
        super().load_wsgi()
        self.header_timeout = self.wsgi.config["RECEIVER"].body_timeout

    def enqueue_req(self, conn):
        """gthread's, noting when the connection was queued for a thread (its arrival)."""
        conn.receiver_queued_at = time.monotonic()
        super().enqueue_req(conn)

    def handle(self, conn):
        """gthread's handle, with the headers' deadline armed once the first bytes are there."""
        arrival = getattr(conn, "receiver_queued_at", None) or time.monotonic()
        # gthread's own first step (it skips it for a connection whose data is known to be
        # there): a new connection that sends nothing is parked without a thread, and costs
        # nothing until it does; it may hold this thread no longer than its headers could.
        if not conn.initialized and not conn.data_ready:
            waited = time.monotonic()
            wait = min(self.header_timeout, gthread.DEFAULT_WORKER_DATA_TIMEOUT)
            if not conn.wait_for_data(wait):
                return gthread._DEFER
            if time.monotonic() - waited > 0.001:  # its first bytes came just now
                arrival = time.monotonic()
        _current.arrival = arrival
        target = _ConnectionSocket(conn)
        _current.headers = WATCHDOG.arm(target, self.header_timeout, socket.SHUT_RD)
        try:
            keep = super().handle(conn)
        finally:
            WATCHDOG.disarm(_current.headers)
        if keep is False:
            self._close_here(conn)
        return keep

    def _close_here(self, conn):
        """Close a connection that is done, in this thread, lingering a bounded time."""
        conn.receiver_closed = True
        try:
            conn.sock.setblocking(True)
        except OSError:  # closed already
            return
        util.close_graceful(conn.sock, timeout=CLOSE_LINGER_SECONDS)

    def finish_request(self, conn, fs):
        """gthread's (in its main thread), but for a connection this worker's thread closed."""
        if getattr(conn, "receiver_closed", False):
            self.nr_conns -= 1
            return
        super().finish_request(conn, fs)

    def handle_request(self, req, conn):
        """The headers are in: their deadline is over (the body has its own)."""
        if WATCHDOG.disarm(_current.headers):
            # Cut in the instant between the last header and here: the body reads as cut short
            # (400 `incomplete`, the sender retries), and the answer must not promise a
            # keep-alive on a socket that reads nothing more.
            req.force_close()
        return super().handle_request(req, conn)

    def handle_http2(self, conn):
        """HTTP/2 (only with http_protocols h2, not the default): its streams are served by
        gthread without the headers' deadline, which would cut the whole connection."""
        WATCHDOG.disarm(_current.headers)
        return super().handle_http2(conn)
