"""The receiver's gunicorn worker (receiver/web/worker.py) under real gunicorn: a deadline on
each request's headers, so that clients dribbling them cannot hold the threads."""

import socket
import threading
import time

import support

# The default receiver: 2 workers x 4 threads (receiver/web/gunicorn_conf.py).
THREADS = 8


def dribble(port, stop, outcomes):
    """Send a request's headers a byte every 0.5 s until the server hangs up or `stop` is set;
    record how long the server kept the connection."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        for byte in b"POST /webhook HTTP/1.1\r\nHost: receiver\r\nX-Slow: " + b"x" * 200:
            if stop.is_set():
                break
            try:
                sock.sendall(bytes([byte]))
            except OSError:  # reset: the server gave up on us
                break
            sock.settimeout(0.5)
            try:
                if sock.recv(1024) == b"":  # the server shut the connection
                    break
            except TimeoutError:
                pass
            except OSError:
                break
    outcomes.append(time.monotonic() - started)


def test_clients_dribbling_their_headers_do_not_hold_the_threads(gunicorn_factory, database_url):
    server = gunicorn_factory({"DATABASE_URL": database_url}, workers=2)
    stop, held = threading.Event(), []
    dribblers = [
        threading.Thread(target=dribble, args=(server.port, stop, held), daemon=True)
        for _ in range(THREADS)
    ]
    try:
        for thread in dribblers:
            thread.start()
        time.sleep(1.0)  # every thread of the receiver now reads someone's headers (before:
        # for hours, and the batch below got no answer)

        started = time.monotonic()
        answer = server.post(support.body(support.event(id="real-batch")), timeout=9.5)
        elapsed = time.monotonic() - started

        assert answer.status_code == 200, answer.text
        assert answer.json()["stored"] == 1
        # Within the headers' deadline (RECEIVER_BODY_TIMEOUT, 1.5 s), twice at most: the two
        # workers may not have taken four dribblers each, and one queues a dribbler ahead of it.
        assert elapsed < 4.5
    finally:
        stop.set()
        for thread in dribblers:
            thread.join(timeout=30)
    # Every dribbler was let go by the server, each after about the headers' deadline.
    assert len(held) == len(dribblers)
    assert max(held) < 6.0, held
