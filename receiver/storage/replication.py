"""The WAL the database's replication slots hold back (a CDC connector's, a standby's), which an
abandoned slot piles up until the disk is full: read by the workers' upkeep for /metrics
(receiver.maintenance.background)."""

# Readable by any role; on a standby, measured against the WAL received. A slot whose WAL was
# already removed (max_slot_wal_keep_size) has no restart_lsn and keeps nothing.
SLOTS_RETAINED = """
SELECT slot_name::text,
       coalesce(pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn()
                                     ELSE pg_current_wal_lsn() END, restart_lsn), 0)::bigint
FROM pg_replication_slots
WHERE restart_lsn IS NOT NULL
"""
# (coalesce: a standby that receives no WAL, e.g. restoring from an archive, has no receive
# position; its slots then read 0 rather than a null the gauge cannot take.)


def retained_by_slot(conn) -> dict[str, int]:
    """The bytes of WAL each replication slot holds back, by slot name."""
    return dict(conn.execute(SLOTS_RETAINED).fetchall())
