"""The current schema in one file (schema.sql, next to this module), and its check.

schema.sql is written by hand, for reading: the end state of every migration, with the reasons.
It is never applied by `receiver migrate` (the numbered migrations are how a database gets
there). What keeps it true is a comparison by catalog: `describe` writes what PostgreSQL itself
says about a database (columns, constraints, indexes, functions, triggers, views, comments, the
publication, partition bounds, the ledger's and the place tables' rows), and a database made
from schema.sql must describe exactly as one made by the migrations.
tests/integration/storage/test_schema.py checks it; after a new migration, bring schema.sql up to
date and run

    python -m receiver.storage.schema [SERVER_URL]

which makes both databases on a scratch server (SERVER_URL, else an embedded one) and prints
every difference (exit status 1), or nothing (0).
"""

import difflib
import importlib.resources
import sys
import tempfile
import uuid
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from . import migrate, partitions

# User objects only: oids below this are the system's own (FirstNormalObjectId).
FIRST_USER_OID = 16384

# Each section: one line per object, sorted. Every object's name, never its oid, so that two
# databases compare.
SECTIONS = {
    # Anything not described in detail below still shows up here, by name.
    "objects": """
        SELECT DISTINCT o.type || ' ' || o.identity
        FROM pg_depend d, pg_identify_object(d.classid, d.objid, d.objsubid) o
        WHERE d.objid >= %(first)s AND o.schema IS DISTINCT FROM 'pg_toast'
    """,
    "relations": """
        SELECT format('%%s: kind %%s, persistence %%s, replica identity %%s, row security %%s',
                      c.relname, c.relkind, c.relpersistence, c.relreplident, c.relrowsecurity)
               || coalesce(', access method ' || am.amname, '')
               || coalesce(', options ' || c.reloptions::text, '')
               || coalesce(', partitioned by ' || pg_get_partkeydef(c.oid), '')
               || coalesce(', partition ' || pg_get_expr(c.relpartbound, c.oid), '')
               || coalesce(', privileges ' || c.relacl::text, '')
        FROM pg_class c LEFT JOIN pg_am am ON am.oid = c.relam
        WHERE c.relnamespace = 'public'::regnamespace
          AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
    """,
    "columns": """
        SELECT c.relname || ' ' || lpad(row_number() OVER w::text, 3, '0') || ' ' || a.attname
               || ' ' || format_type(a.atttypid, a.atttypmod)
               || CASE WHEN a.attcollation <> t.typcollation
                       THEN ' COLLATE ' || a.attcollation::regcollation::text ELSE '' END
               || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END
               || coalesce(' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid), '')
               || CASE WHEN a.attidentity <> ''
                       THEN format(' IDENTITY %%s', a.attidentity) ELSE '' END
               || CASE WHEN a.attgenerated <> ''
                       THEN format(' GENERATED %%s', a.attgenerated) ELSE '' END
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_type t ON t.oid = a.atttypid
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
          AND a.attnum > 0 AND NOT a.attisdropped
        WINDOW w AS (PARTITION BY c.oid ORDER BY a.attnum)
    """,
    # Partitions of tables, and the indexes of partitions attached to their table's index.
    "inheritance": """
        SELECT format('%%s of %%s', i.inhrelid::regclass, i.inhparent::regclass)
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE c.relnamespace = 'public'::regnamespace
    """,
    "constraints": """
        SELECT conrelid::regclass::text || ' ' || conname || ': ' || pg_get_constraintdef(oid)
        FROM pg_constraint WHERE connamespace = 'public'::regnamespace
    """,
    "indexes": """
        SELECT pg_get_indexdef(i.indexrelid)
               || CASE WHEN i.indisclustered THEN ' (clustered)' ELSE '' END
        FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
        WHERE c.relnamespace = 'public'::regnamespace
    """,
    "functions": """
        SELECT pg_get_functiondef(oid) FROM pg_proc
        WHERE pronamespace = 'public'::regnamespace AND prokind IN ('f', 'p')
    """,
    "triggers": """
        SELECT format('%%s (enabled: %%s)', pg_get_triggerdef(t.oid), t.tgenabled)
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
        WHERE NOT t.tgisinternal AND c.relnamespace = 'public'::regnamespace
    """,
    "views": """
        SELECT c.relname || ':' || chr(10) || pg_get_viewdef(c.oid, true) FROM pg_class c
        WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('v', 'm')
    """,
    "sequences": """
        SELECT s.seqrelid::regclass::text || ': ' || format_type(s.seqtypid, NULL)
               || ' from ' || s.seqstart || ' by ' || s.seqincrement || ' in ' || s.seqmin
               || '..' || s.seqmax || ', cache ' || s.seqcache || ', cycle ' || s.seqcycle
        FROM pg_sequence s
        JOIN pg_class c ON c.oid = s.seqrelid AND c.relnamespace = 'public'::regnamespace
    """,
    "comments": """
        SELECT pg_describe_object(classoid, objoid, objsubid) || ': ' || description
        FROM pg_description WHERE objoid >= %(first)s
    """,
    # What the sections above leave out and a future migration could change: enum labels, row
    # security policies, extended statistics, privileges on functions, schemas and columns.
    "enum labels": """
        SELECT e.enumtypid::regtype::text || ' ' || e.enumsortorder || ' ' || e.enumlabel
        FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid
        WHERE t.typnamespace = 'public'::regnamespace
    """,
    "policies": """
        SELECT format('%%s on %%s: %%s for %%s to %%s using %%s check %%s', p.polname,
                      p.polrelid::regclass, p.polpermissive, p.polcmd, p.polroles::regrole[],
                      pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid))
        FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
        WHERE c.relnamespace = 'public'::regnamespace
    """,
    "statistics": """
        SELECT pg_get_statisticsobjdef(oid) FROM pg_statistic_ext
        WHERE stxnamespace = 'public'::regnamespace
    """,
    "privileges": """
        SELECT 'function ' || oid::regprocedure::text || ': ' || proacl::text FROM pg_proc
        WHERE pronamespace = 'public'::regnamespace AND proacl IS NOT NULL
        UNION ALL
        SELECT 'schema public: ' || nspacl::text FROM pg_namespace
        WHERE nspname = 'public' AND nspacl IS NOT NULL
        UNION ALL
        SELECT 'column ' || attrelid::regclass::text || '.' || attname || ': ' || attacl::text
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
        WHERE c.relnamespace = 'public'::regnamespace AND a.attacl IS NOT NULL
    """,
    "publications": """
        SELECT p.pubname || ': all tables ' || p.puballtables || ', insert ' || p.pubinsert
               || ', update ' || p.pubupdate || ', delete ' || p.pubdelete || ', truncate '
               || p.pubtruncate || ', via root ' || p.pubviaroot || ', tables '
               || coalesce((
                   SELECT string_agg(r.prrelid::regclass::text
                                     || coalesce(' WHERE ' || pg_get_expr(r.prqual, r.prrelid), '')
                                     || coalesce(' columns ' || r.prattrs::text, ''),
                                     ', ' ORDER BY r.prrelid::regclass::text)
                   FROM pg_publication_rel r WHERE r.prpubid = p.oid), '')
               || ', schemas '
               || coalesce((SELECT string_agg(n.pnnspid::regnamespace::text, ', ')
                            FROM pg_publication_namespace n WHERE n.pnpubid = p.oid), '')
        FROM pg_publication p
    """,
}

# The tables whose rows are described (the ledger and the place tables of the backfills; on a
# fresh database every other table is empty): every table that is not a partition. A column
# whose value depends on when the database was made is left out.
TABLES = """
SELECT c.relname FROM pg_class c
WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p') AND NOT c.relispartition
ORDER BY c.relname
"""
VOLATILE_COLUMNS = {"schema_migrations": "applied_at"}
ROWS = "SELECT (to_jsonb(t) - %s)::text FROM {} t"


def schema_sql() -> str:
    """The text of schema.sql."""
    return importlib.resources.files("receiver.storage").joinpath("schema.sql").read_text("utf-8")


def load(conn) -> None:
    """Make the schema of schema.sql in `conn`'s (empty) database."""
    conn.execute(schema_sql())


def describe(conn) -> str:
    """The database's schema as PostgreSQL's catalog says it, section by section, sorted."""
    parts = []
    for section, query in SECTIONS.items():
        lines = sorted(row[0] for row in conn.execute(query, {"first": FIRST_USER_OID}))
        parts += [f"== {section}", *lines]
    for (table,) in conn.execute(TABLES).fetchall():
        query = sql.SQL(ROWS).format(sql.Identifier(table))
        rows = sorted(row[0] for row in conn.execute(query, (VOLATILE_COLUMNS.get(table, ""),)))
        parts += [f"== rows of {table}", *rows]
    return "\n".join(parts) + "\n"


def difference(migrated: str, from_file: str) -> str:
    """A unified diff between two descriptions; empty when they are the same."""
    return "".join(
        difflib.unified_diff(
            migrated.splitlines(keepends=True),
            from_file.splitlines(keepends=True),
            "migrations",
            "schema.sql",
        )
    )


def build_and_describe(server_url: str) -> tuple[str, str]:
    """Descriptions of a database made by the migrations and one made from schema.sql, both
    created on `server_url` (which needs CREATE DATABASE) and dropped again."""
    names = [f"receiver_schema_{kind}_{uuid.uuid4().hex[:8]}" for kind in ("migrated", "file")]
    with psycopg.connect(server_url, autocommit=True) as admin:
        for name in names:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            migrated, from_file = (make_conninfo(server_url, dbname=name) for name in names)
            migrate.migrate(migrated)
            with psycopg.connect(from_file, autocommit=True) as conn:
                load(conn)
            return describe_database(migrated), describe_database(from_file)
        finally:
            for name in names:
                admin.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )


def describe_database(url) -> str:
    """`describe` of the database at `url`, once it has this month's and the coming months'
    partitions: made at run time (migrate, maintain, the workers), never by schema.sql, they
    are made here the same way on either side."""
    with psycopg.connect(url, autocommit=True) as conn:
        partitions.ensure_months(conn)
        return describe(conn)


def main(argv=None) -> int:
    """`python -m receiver.storage.schema [SERVER_URL]`: print how schema.sql differs."""
    args = sys.argv[1:] if argv is None else argv
    if args:
        found = difference(*build_and_describe(args[0]))
    else:
        from .embedded import start_embedded

        folder = tempfile.TemporaryDirectory(prefix="receiver-schema-", ignore_cleanup_errors=True)
        with folder:
            server = start_embedded(Path(folder.name) / "data", cleanup_mode="delete")
            try:
                found = difference(*build_and_describe(server.get_uri()))
            finally:
                server.cleanup()
    sys.stdout.write(found or "schema.sql describes as the migrations do\n")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
