"""The watchdog that cuts sockets at their deadline (receiver.watchdog)."""

import os
import socket
import threading
import time

import pytest

from receiver.watchdog import WATCHDOG, Watchdog, cut


def test_the_watchdog_unblocks_a_read_at_the_deadline_and_not_before():
    ours, peer = socket.socketpair()
    with ours, peer:
        alarm = WATCHDOG.arm(ours, 0.2)
        started = time.monotonic()
        assert ours.recv(10) == b""  # the silent peer never writes; the cut ends the read
        elapsed = time.monotonic() - started
        assert WATCHDOG.disarm(alarm) is True
    assert 0.15 < elapsed < 1.0


def test_a_disarmed_alarm_never_fires():
    ours, peer = socket.socketpair()
    with ours, peer:
        alarm = WATCHDOG.arm(ours, 0.05)
        assert WATCHDOG.disarm(alarm) is False
        time.sleep(0.15)
        peer.sendall(b"x")
        assert ours.recv(10) == b"x"  # still connected


def test_shutting_only_the_reading_side_leaves_the_answer_writable():
    ours, peer = socket.socketpair()
    with ours, peer:
        alarm = WATCHDOG.arm(ours, 0.05, socket.SHUT_RD)
        assert ours.recv(10) == b""
        assert WATCHDOG.disarm(alarm) is True
        ours.sendall(b"answer")
        assert peer.recv(10) == b"answer"


class Exploding:
    """A target whose fileno() fails in a way nobody planned for."""

    def fileno(self):
        raise RuntimeError("boom")


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_an_unexpected_error_in_one_cut_stops_no_other_deadline():
    watchdog = Watchdog()
    bad = watchdog.arm(Exploding(), 0.01)
    ours, peer = socket.socketpair()
    with ours, peer:
        ours.settimeout(2)  # a dead watchdog fails the test instead of hanging it
        good = watchdog.arm(ours, 0.1)
        assert ours.recv(10) == b""  # still kept, after the exploding one
        assert watchdog.disarm(good) is True
    assert watchdog.disarm(bad) is True  # counted as fired: its owner must treat it as cut


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_cutting_something_that_is_not_a_socket_leaks_no_descriptor():
    read_end, write_end = os.pipe()
    try:

        class Pipe:
            def fileno(self):
                return read_end

        before = open_descriptors()
        for _ in range(20):
            cut(Pipe())
        assert open_descriptors() == before
    finally:
        os.close(read_end)
        os.close(write_end)


def test_the_loop_survives_an_error_of_its_own(monkeypatch):
    watchdog = Watchdog()
    failures = []
    real = watchdog._fire_due

    def fail_once():
        if not failures:
            failures.append(1)
            raise RuntimeError("a bug")
        real()

    monkeypatch.setattr(watchdog, "_fire_due", fail_once)
    ours, peer = socket.socketpair()
    with ours, peer:
        ours.settimeout(2)
        alarm = watchdog.arm(ours, 0.1)
        assert ours.recv(10) == b""
        assert watchdog.disarm(alarm) is True
    assert failures == [1]


def test_a_dead_thread_is_replaced_at_the_next_arm():
    watchdog = Watchdog()
    watchdog.disarm(watchdog.arm(Exploding(), 10))
    finished = threading.Thread(target=lambda: None)
    finished.start()
    finished.join()
    watchdog._thread = finished  # as if the thread had died
    ours, peer = socket.socketpair()
    with ours, peer:
        ours.settimeout(2)
        alarm = watchdog.arm(ours, 0.05)
        assert ours.recv(10) == b""
        assert watchdog.disarm(alarm) is True
