"""`receiver serve`'s words (receiver.cli.serve): the address in the banner's commands, and why
an address cannot be listened on."""

import errno

import pytest

from receiver.cli.serve import bind_problem, url_option, webhook_url


@pytest.mark.parametrize(
    "bind, url",
    [
        ("127.0.0.1:8000", "http://127.0.0.1:8000/webhook"),
        ("0.0.0.0:9000", "http://127.0.0.1:9000/webhook"),
        ("[::]:9000", "http://127.0.0.1:9000/webhook"),
        ("[::1]:9000", "http://[::1]:9000/webhook"),
        ("receiver.local:8080", "http://receiver.local:8080/webhook"),
    ],
)
def test_the_webhook_url_is_where_serve_listens(bind, url):
    assert webhook_url(bind) == url
    assert url_option(bind) == f" --url {url}"


def test_a_port_in_use_says_how_to_choose_another():
    problem = bind_problem(OSError(errno.EADDRINUSE, "Address already in use"), 8000, False)
    assert problem.startswith("port 8000 is already in use")
    assert problem.endswith("choose another with `receiver serve --bind HOST:PORT` (or set PORT)")


def test_in_development_mode_port_is_no_advice():
    # PORT without DATABASE_URL makes serve refuse to start (a deployment).
    problem = bind_problem(OSError(errno.EADDRINUSE, "Address already in use"), 8000, True)
    assert problem.endswith("`receiver serve --bind HOST:PORT`")


@pytest.mark.parametrize(
    "code, says",
    [
        (errno.EACCES, "no permission to listen on port 80"),
        (errno.EADDRNOTAVAIL, "not one of this machine's"),
        (errno.EINVAL, "Invalid argument: choose another"),
    ],
)
def test_other_bind_failures_say_why(code, says):
    assert says in bind_problem(OSError(code, "Invalid argument"), 80, True)
