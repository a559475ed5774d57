"""Fixtures shared by the web tests."""

import logging

import pytest


class Collect(logging.Handler):
    """Keeps the fields of each request log line."""

    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(getattr(record, "fields", {}))


@pytest.fixture
def request_lines():
    """The fields of every receiver.request log line written during the test."""
    handler = Collect()
    logger = logging.getLogger("receiver.request")
    logger.addHandler(handler)
    yield handler.lines
    logger.removeHandler(handler)
