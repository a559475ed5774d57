"""`receiver psql`: the database password never on psql's command line (`ps` shows it to all)."""

from psycopg.conninfo import conninfo_to_dict

from receiver.cli.psql import invocation


def test_the_password_goes_to_the_environment_not_the_arguments():
    url = "postgresql://receiver:s3cret%20pw@db.example:5433/events?sslmode=require"
    argv, env = invocation("/usr/bin/psql", url, ("-c", "SELECT 1"), {"HOME": "/home/r"})
    assert not any("s3cret" in part for part in argv)
    assert argv[0] == "/usr/bin/psql" and argv[2:] == ["-c", "SELECT 1"]
    assert "host=db.example" in argv[1] and "sslmode=require" in argv[1]
    assert env == {"HOME": "/home/r", "PGPASSWORD": "s3cret pw"}


def test_without_a_password_the_environment_is_left_as_it_is():
    argv, env = invocation("psql", "host=/tmp port=5432 dbname=x", (), {"PGPASSWORD": "mine"})
    assert argv[0] == "psql" and len(argv) == 2
    assert conninfo_to_dict(argv[1]) == {"host": "/tmp", "port": "5432", "dbname": "x"}
    assert env == {"PGPASSWORD": "mine"}
