"""Fixtures of the command tests."""

import pytest

from receiver.cli import main


@pytest.fixture
def report(database_url, monkeypatch, capsys):
    """Run `receiver report ARGS` on the test database; (exit status, stdout)."""
    monkeypatch.setenv("DATABASE_URL", database_url)

    def run(*args):
        status = main(["report", *args])
        return status, capsys.readouterr().out

    return run
