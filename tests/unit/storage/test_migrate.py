"""The migration files (receiver.storage.migrate), read without a database, and the server
version they need."""

import pytest

from receiver.storage.migrate import ServerTooOld, check_server_version, load_migrations


def test_migrations_are_numbered_without_gaps():
    versions = [m.version for m in load_migrations()]
    assert versions == list(range(1, len(versions) + 1))


@pytest.mark.parametrize("version", [150000, 150020, 160004, 170000])
def test_fifteen_and_later_are_accepted(version):
    check_server_version(version)


@pytest.mark.parametrize(("version", "named"), [(140011, "14"), (130000, "13"), (90624, "9.6")])
def test_older_servers_are_refused_naming_their_version(version, named):
    with pytest.raises(ServerTooOld, match=f"PostgreSQL {named} is too old"):
        check_server_version(version)
