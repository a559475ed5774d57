"""Everything that talks to PostgreSQL: the pool, every SQL statement, migrations, embedded server.

Each module holds the SQL of one concern (`events`, `quarantine`, `migrate`); no SQL lives
outside this package.
"""
