-- 009: the publication `receiver`, for change data capture (Debezium, Fivetran, Airbyte,
-- Datastream, or a PostgreSQL subscriber): `events`, `recipient_status` and `status_changes` as
-- they change, inserts and updates only. docs/cdc.md says how to connect.
--
-- A migration rather than a command an operator runs:
-- * it costs nothing until someone subscribes: a publication is a catalog entry, read only by
--   a walsender decoding WAL for a replication slot. Without a slot no WAL is kept for it and
--   no row is decoded; ingest does not change (nothing is written per row for it).
-- * it works at any wal_level: at `replica` (the default) PostgreSQL creates it with one
--   WARNING ("wal_level is insufficient to publish logical changes") in its server log, once,
--   when this migration runs; a subscriber can connect once the server runs with
--   wal_level = logical (a restart), with nothing more to do here.
-- * every install has it under the same name, so the connectors' settings are the same
--   everywhere, and later migrations keep it in step with the schema: a migration that adds a
--   table to publish or changes what is published alters it in the same transaction (ALTER
--   PUBLICATION receiver ...), guarded like the block below (only when the publication exists
--   and the migrating role owns it; otherwise a WARNING with the statement for a DBA to run).
-- Creating it needs the CREATE privilege on the database (which its owner has) and ownership
-- of the three tables (the migrating role created them); no superuser, no REPLICATION role.
--
-- What is published, and why:
-- * publish = 'insert, update', never deletes (nor truncates). `events` is insert-only and has
--   no primary key (its unique key includes the partition key, and no column a subscriber
--   could update by). `receiver maintain` moves rows out of events_default by DELETE ...
--   RETURNING into a table that is not attached yet, then attaches it (partitions.create_month):
--   were deletes published, a subscriber would delete those rows while their re-insert is
--   never published (that table was no partition of `events` yet), i.e. lose them; worse, a
--   DELETE on a published table without a replica identity fails outright ("cannot delete
--   from table events_default because it does not have a replica identity and publishes
--   deletes"), so the move, and prune's delete of stray old rows, would fail. Without deletes
--   the move is invisible to subscribers, who got those rows when they arrived; prune's
--   DETACH and DROP are DDL, never replicated. So each event reaches a subscriber once, and
--   retention here never deletes history downstream.
--   An UPDATE of `events` (none in the receiver; a hand-written one) now fails the same way:
--   events are never changed after they are stored, and that keeps it so.
-- * recipient_status is inserted and updated (a recipient's status changes); its primary key
--   is the replica identity an update is published with. Rows are never deleted.
-- * status_changes is insert-only (its id is the primary key).
-- * publish_via_partition_root = true: a subscriber sees one table, `events`, whatever
--   partitions exist here; months attached later (migrate, maintain, a web worker's hourly
--   check) are published with no action, since a partitioned table in a publication includes
--   its partitions, present and future. The subscriber's own `events` may be partitioned or
--   not (PostgreSQL routes the rows into its partitions).
--
-- An existing publication of that name (made by hand before this migration, or by a DBA after
-- a WARNING below) is left as it is: a subscriber may already depend on what it publishes, and
-- changing that under it would silently change the subscriber's data. If it differs from the
-- above, a WARNING says how. The migration never fails for the publication: the systemd unit
-- runs `receiver migrate` before every start, and an optional feature must not stop ingest.
-- (`receiver migrate` prints these WARNINGs; PostgreSQL's own, such as wal_level's, stay in
-- its server log.)

DO $$
DECLARE
    publication pg_publication;
    tables text[];
    wanted text[] := ARRAY['events', 'recipient_status', 'status_changes'];
    statement text := 'CREATE PUBLICATION receiver FOR TABLE events, recipient_status, '
        'status_changes WITH (publish_via_partition_root = true, publish = ''insert, update'')';
BEGIN
    SELECT * INTO publication FROM pg_publication WHERE pubname = 'receiver';
    IF NOT FOUND THEN
        BEGIN
            EXECUTE statement;
            COMMENT ON PUBLICATION receiver IS
                'Change data capture of the receiver''s tables (migration 009): inserts and updates, never deletes';
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE WARNING 'publication "receiver" not created: %', SQLERRM
                USING HINT = format('A role with CREATE on database %I that owns the tables '
                                    '(or a superuser) can run: %s', current_database(), statement);
        END;
        RETURN;
    END IF;
    -- The tables listed in it (a partitioned table stands for its partitions), by name, with
    -- no row filter or column list (prqual, prattrs, pg_publication_namespace: PostgreSQL 15,
    -- which 006 already requires).
    SELECT array_agg(c.relname::text ORDER BY c.relname) INTO tables
    FROM pg_publication_rel r JOIN pg_class c ON c.oid = r.prrelid
    WHERE r.prpubid = publication.oid AND r.prqual IS NULL AND r.prattrs IS NULL;
    IF publication.puballtables OR NOT publication.pubinsert OR NOT publication.pubupdate
       OR publication.pubdelete OR publication.pubtruncate OR NOT publication.pubviaroot
       OR tables IS DISTINCT FROM wanted
       OR (SELECT count(*) FROM pg_publication_rel WHERE prpubid = publication.oid) <> 3
       OR EXISTS (SELECT FROM pg_publication_namespace WHERE pnpubid = publication.oid) THEN
        RAISE WARNING 'publication "receiver" exists and differs from the receiver''s; left as it is'
            USING DETAIL = format('It has all tables: %s, tables: %s, publish: %s, via root: %s.',
                publication.puballtables, coalesce(tables::text, '{}'),
                concat_ws(', ', CASE WHEN publication.pubinsert THEN 'insert' END,
                          CASE WHEN publication.pubupdate THEN 'update' END,
                          CASE WHEN publication.pubdelete THEN 'delete' END,
                          CASE WHEN publication.pubtruncate THEN 'truncate' END),
                publication.pubviaroot),
            HINT = 'The receiver''s: ' || statement || '. A publication of `events` that '
                'publishes deletes makes `receiver maintain` fail (no replica identity).';
    END IF;
END
$$;
