"""The "committed here, not confirmed by the synchronous standby" warning is recognised in any
language: a server speaking German (lc_messages = de_DE.UTF-8) still gets a 503 for a commit
whose wait for its standby was cancelled.

pgserver's PostgreSQL has no translations, so this cluster is the machine's own PostgreSQL
(Debian's is built with them), run as its `postgres` user when the tests run as root. The
standby is named but never connects (as in test_unreplicated_commit.py): every commit waits for
it until the wait is cancelled, which is the server path under test."""

import glob
import os
import shutil
import subprocess
import tempfile
import threading
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from receiver import create_app
from receiver.storage import db
from receiver.storage.migrate import migrate

from support import body, event, free_port, post
from support.replication import cancel_waiting, post_then_cancel_its_wait, set_standby_names

pytestmark = pytest.mark.slow

LOCALE = "de_DE.UTF-8"


def system_bindir():
    """The machine's PostgreSQL programs with German messages, or None."""
    for bindir in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        major = Path(bindir).parent.name
        if glob.glob(f"/usr/share/locale/de/LC_MESSAGES/postgres-{major}.mo"):
            return Path(bindir)
    return None


def has_locale(name):
    found = subprocess.run(["locale", "-a"], capture_output=True, text=True).stdout.split()
    return name.lower().replace("-", "") in {entry.lower().replace("-", "") for entry in found}


@pytest.fixture
def german_postgres():
    """A cluster of the test's own whose messages are German; its URL."""
    bindir = system_bindir()
    if bindir is None:
        pytest.skip("no system PostgreSQL with German translations (Debian: postgresql)")
    if not has_locale(LOCALE):
        pytest.skip(f"locale {LOCALE} missing: localedef -i de_DE -f UTF-8 {LOCALE}")
    directory = Path(tempfile.mkdtemp(prefix="receiver-de-pg-"))
    run_as = {"user": "postgres"} if os.geteuid() == 0 else {}
    if run_as:
        shutil.chown(directory, "postgres", "postgres")
    data, port = directory / "data", free_port()
    subprocess.run(
        [bindir / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "--locale=C.UTF-8",
         f"--lc-messages={LOCALE}"],
        check=True, capture_output=True, **run_as,
    )  # fmt: skip
    options = f"-p {port} -k {directory} -c listen_addresses=''"
    pg_ctl = [bindir / "pg_ctl", "-D", data, "-w", "-l", directory / "log"]
    subprocess.run([*pg_ctl, "-o", options, "start"], check=True, capture_output=True, **run_as)
    try:
        yield make_conninfo("", host=str(directory), port=port, user="postgres", dbname="postgres")
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "stop"], capture_output=True, **run_as)
        shutil.rmtree(directory, ignore_errors=True)


def test_a_cancelled_wait_for_the_standby_is_a_503_in_german_too(german_postgres, config):
    migrate(german_postgres)
    with psycopg.connect(german_postgres) as conn:  # the server does speak German
        assert conn.execute("SHOW lc_messages").fetchone()[0] == LOCALE
    heard = []
    set_standby_names(german_postgres, "ghost")
    app = create_app(replace(config, database_url=german_postgres))
    client = app.test_client()
    batch = body(event("sent", id="unreplicated-de"))
    try:
        answer = post_then_cancel_its_wait(german_postgres, lambda: post(client, batch))
        assert answer.status_code == 503, answer.json
        # And the warning was indeed in German: what the old English match would have missed.
        with psycopg.connect(german_postgres, autocommit=True) as conn:
            # A notice's fields are readable in the handler only.
            conn.add_notice_handler(lambda d: heard.append(notice_fields(d)))
            conn.execute("SET synchronous_commit = on")
            canceller = threading.Thread(target=cancel_waiting, args=(german_postgres,))
            canceller.start()
            conn.execute("CREATE TABLE sync_probe (x int)")
            canceller.join()
        (warning,) = [fields for fields in heard if fields["severity_nonlocalized"] == "WARNING"]
        assert warning["severity"] == "WARNUNG"
        assert not warning["message_primary"].startswith(db.UNREPLICATED)
        assert warning["source_file"].endswith("syncrep.c") and warning["unreplicated"]
        set_standby_names(german_postgres, "")
        again = post(client, batch)  # the sender's retry: a duplicate, stored once
        assert (again.status_code, again.json["duplicates"]) == (200, 1)
    finally:
        set_standby_names(german_postgres, "")
        db.close_pool(app)


def notice_fields(diagnostic) -> dict:
    """What the test looks at of a notice, and whether the receiver takes it for the warning."""
    names = ("severity", "severity_nonlocalized", "message_primary", "source_file")
    fields = {name: getattr(diagnostic, name) for name in names}
    return {**fields, "unreplicated": db.is_unreplicated_warning(diagnostic)}
