"""Everything that talks to PostgreSQL: the pool, every SQL statement, migrations, embedded server.

Each module holds the SQL of one concern (`events`, `quarantine`, `migrate`); schema.sql is the
whole current schema to read (`schema`). No SQL lives outside this package but the warehouse
export's reads of `events` (receiver/export/source.py and incremental.py).
"""
