"""The client's connection: its body read within a deadline, and let go after a refusal.

Under gunicorn the watchdog (receiver.watchdog) bounds the reads: a per-read socket timeout would
not, since every byte that arrives restarts it. Outside gunicorn (Flask's test client) there is
no socket and nothing to bound.
"""

import socket

from flask import request
from gunicorn.http.errors import ParseException
from werkzeug.exceptions import ClientDisconnected

from ..watchdog import WATCHDOG, cut

# Where the WSGI middleware below leaves gunicorn's start_response for `let_go`.
START_RESPONSE = "receiver.start_response"


def read_body(timeout) -> bytes:
    """The whole body, within `timeout` seconds; ClientDisconnected if it is not all there.

    A watchdog stops the reading side of the client's socket at the deadline, so a client
    dribbling its body frees the thread on time."""
    client = request.environ.get("gunicorn.socket")
    if client is None:  # not under gunicorn (the test client): nothing to bound
        return request.get_data(cache=False)
    alarm = WATCHDOG.arm(client, timeout, socket.SHUT_RD)
    try:
        body = request.get_data(cache=False)
    except ParseException:
        # gunicorn's chunked framing broken (a bad chunk size, a chunk without its CRLF), by the
        # client or by the cut at the deadline: the body is not all there. Not a 500.
        raise ClientDisconnected() from None
    finally:
        late = WATCHDOG.disarm(alarm)
    if late:  # cut at the deadline: whatever was read may be a fragment
        raise ClientDisconnected()
    if request.content_length is not None and len(body) < request.content_length:
        # Behind gunicorn, werkzeug reads a client that hung up mid-body as end of body.
        raise ClientDisconnected()
    return body


def let_go():
    """Read nothing more from this client, and close the connection after the answer.

    Without the first, gunicorn reads the unread body before it can serve the next request on
    the connection (for up to 5 s in its gthread worker): 40 clients dribbling bodies without
    credentials held every thread. What the client already sent is still drained; what it sends
    after the answer gets a reset. Without the second, the answer says `keep-alive` on a socket
    that reads nothing more: a client (or nginx's upstream pool) that sends its next request on
    it gets no answer, and behind nginx a flood of wrong passwords turned Campaign's next batch
    into a 502. So the answer says `Connection: close`, and gunicorn closes it."""
    environ = request.environ
    client = environ.get("gunicorn.socket")
    if client is None:
        return
    cut(client, socket.SHUT_RD)
    # gunicorn's start_response is a method of its Response, whose force_close() makes the
    # answer say `Connection: close` and the worker drop the connection after it.
    response = getattr(environ.get(START_RESPONSE), "__self__", None)
    force_close = getattr(response, "force_close", None)
    if force_close is not None:
        force_close()


class KeepStartResponse:
    """WSGI middleware: leaves the server's start_response in the environ for `let_go`."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        environ[START_RESPONSE] = start_response
        return self.app(environ, start_response)


def init_app(app):
    app.wsgi_app = KeepStartResponse(app.wsgi_app)
