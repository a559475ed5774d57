"""Fixtures of the system tests: receivers under real gunicorn."""

import pytest

from support import Gunicorn


@pytest.fixture
def gunicorn_factory():
    """Start receivers under gunicorn (`start(env, **kwargs)`); stop them at the end."""
    servers = []

    def start(env, **kwargs):
        server = Gunicorn(env, **kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        if server.process.poll() is None:
            server.stop()
