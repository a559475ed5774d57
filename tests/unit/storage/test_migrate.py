"""The migration files (receiver.storage.migrate), read without a database."""

from receiver.storage.migrate import load_migrations


def test_migrations_are_numbered_without_gaps():
    versions = [m.version for m in load_migrations()]
    assert versions == list(range(1, len(versions) + 1))
