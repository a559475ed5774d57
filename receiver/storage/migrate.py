"""Plain numbered SQL migrations, applied in order, each exactly once.

The files live in the checkout's top-level `migrations/` and are packaged as the
`receiver.migrations` package (setup.cfg); they are always found through the package, never
by a path next to this file, so an installed receiver and a checkout read the same files.

Safe to run from several processes at once (a release step and a test, two deploys): a
transaction-scoped advisory lock makes the second wait, then find nothing left to do.
"""

import importlib.resources
import re
from dataclasses import dataclass

import psycopg

from . import feed, mailing_counts, partitions, recipient_status

# Any fixed bigint works; this one is the ASCII of "receiver", recognisable in pg_locks.
ADVISORY_LOCK_ID = 0x7265636569766572
_FILENAME = re.compile(r"(\d+)_([a-z0-9_]+)\.sql")

CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


# NULLS NOT DISTINCT (006's mailing_responders key) and the publication checks of 009 need
# PostgreSQL 15; on an older server a migration would fail half-way with a syntax error.
MINIMUM_SERVER_VERSION = 150000


class ServerTooOld(Exception):
    """The database server is older than the migrations need; the message says which."""


def check_server_version(version: int) -> None:
    """ServerTooOld unless `version` (libpq's number, e.g. 150004) is recent enough."""
    if version < MINIMUM_SERVER_VERSION:
        # 15 and later number as MMmmmm, 9.6 and earlier as MMmmpp.
        major = (
            version // 10000 if version >= 100000 else f"{version // 10000}.{version // 100 % 100}"
        )
        raise ServerTooOld(
            f"PostgreSQL {major} is too old: the receiver needs PostgreSQL 15 or later"
        )


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations_dir():
    """The packaged migrations (the checkout's migrations/ folder in an editable install)."""
    return importlib.resources.files("receiver.migrations")


def load_migrations(folder=None) -> list[Migration]:
    """Every migration file, ordered by version; duplicate versions are an error."""
    found = {}
    for entry in (folder or migrations_dir()).iterdir():
        match = _FILENAME.fullmatch(entry.name)
        if not match:
            continue
        version = int(match.group(1))
        if version in found:
            raise ValueError(f"two migrations numbered {version}")
        found[version] = Migration(version, match.group(2), entry.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


def migrate(conninfo: str, progress=None, recounted=None, warned=None) -> list[Migration]:
    """Apply pending migrations in one transaction, then settle the partitions of `events` and
    count the mailings stored before 006, log the statuses decided before 008 (the feed's
    seed); return the migrations applied. `progress(rows)`
    hears of rows moved from the old table, `recounted(mailings)` of the mailings counted,
    `warned(text)` of what a migration warns about (e.g. a publication it could not create)."""
    applied = apply_pending(conninfo, warned)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        # Outside the migrations' transaction: each step commits on its own and takes only
        # short locks, so ingest goes on meanwhile and an interruption is resumed next time.
        partitions.ensure_months(conn)
        partitions.move_old_table(conn, progress=progress)
        recipient_status.backfill(conn)
        mailings = mailing_counts.backfill(conn)
        feed.seed_status_changes(conn)
    if recounted and mailings:
        recounted(mailings)
    return applied


def apply_pending(conninfo: str, warned=None) -> list[Migration]:
    """Apply pending migrations in one transaction; return what was applied. `warned(text)`
    hears each WARNING a migration raises itself (PostgreSQL's own notices stay in its log)."""
    with psycopg.connect(conninfo, autocommit=False) as conn:
        check_server_version(conn.info.server_version)
        if warned:
            conn.add_notice_handler(lambda diag: _pass_on_warning(diag, warned))
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK_ID,))
        # A role with the webhook's statement_timeout (5 s, its `ALTER ROLE ... SET` behind a
        # pooler) would cancel a migration that builds an index on a big table: none here.
        conn.execute("SELECT set_config('statement_timeout', '0', true)")
        conn.execute(CREATE_LEDGER)
        todo = pending(conn)
        for migration in todo:
            conn.execute(migration.sql)
            conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                (migration.version, migration.name),
            )
        conn.commit()
    return todo


def _pass_on_warning(diag, warned):
    # RAISE WARNING in a migration's own code comes from PL/pgSQL's exec_stmt_raise; the
    # server's notices (e.g. CREATE PUBLICATION at wal_level replica) are for its log only.
    if diag.severity_nonlocalized == "WARNING" and diag.source_function == "exec_stmt_raise":
        hint = f" ({diag.message_hint})" if diag.message_hint else ""
        warned(f"{diag.message_primary}{hint}")


def pending(conn) -> list[Migration]:
    """Migrations not yet recorded in schema_migrations (all of them on a fresh database)."""
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()[0]
    applied = set()
    if exists:
        applied = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
    return [m for m in load_migrations() if m.version not in applied]
