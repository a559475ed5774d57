"""mailing_counts and mailing_responders (migrations/006): kept at ingest by a trigger on
`events`; here what `receiver migrate` and maintenance do to them: the backfill of the events
stored before 006, rolling up, and retention.

Every statement here is its own short transaction on an autocommit connection, touching one
mailing's rows: ingest inserts new rows meanwhile and never waits for these.
"""

# The next mailing after the backfill's place: one probe of events_mailing per partition.
NEXT_MAILING = """
SELECT client_id, mailing_id FROM events
WHERE (client_id, mailing_id) > (%s, %s)
ORDER BY client_id, mailing_id LIMIT 1
"""

READ_MAILING = """
SELECT count(recipient_id), count(category) FROM events WHERE client_id = %s AND mailing_id = %s
"""
MOVE_PLACE = "UPDATE mailing_counts_backfill SET client_id = %s, mailing_id = %s"

# A mailing's rows are rolled up once there are more than this many (one per batch that
# stored events of it): a summary then sums a handful of rows however big the send was.
ROLL_UP_ABOVE = 50

MAILINGS_TO_ROLL_UP = """
SELECT client_id, mailing_id FROM mailing_counts
GROUP BY client_id, mailing_id HAVING count(*) > %s
ORDER BY client_id, mailing_id
"""

# One statement: the rows it deletes are the rows it sums, so a reader sees the mailing's
# totals before or after, never half of them; rows inserted meanwhile are not in its snapshot
# and stay as they are.
ROLL_UP = """
WITH gone AS (
    DELETE FROM mailing_counts WHERE client_id = %(client)s AND mailing_id = %(mailing)s
    RETURNING *
)
INSERT INTO mailing_counts
SELECT client_id, mailing_id, sum(sent), sum(opens), sum(unique_opens), sum(clicks),
       sum(unique_clicks), sum(hard_bounces), sum(soft_bounces), sum(unsubscribes),
       sum(spam_complaints), min(first_event_at), max(last_event_at)
FROM gone GROUP BY client_id, mailing_id
"""

# A mailing's counts go when its newest event is older than the horizon: by then retention has
# dropped (or is dropping) every event it counted.
MAILINGS_BEFORE = """
SELECT client_id, mailing_id FROM mailing_counts
GROUP BY client_id, mailing_id HAVING max(last_event_at) < %s
ORDER BY client_id, mailing_id
"""
DELETE_RESPONDERS = (
    "DELETE FROM mailing_responders WHERE client_id = %(client)s AND mailing_id = %(mailing)s"
)
DELETE_COUNTS = (
    "DELETE FROM mailing_counts WHERE client_id = %(client)s AND mailing_id = %(mailing)s"
)


def backfill(conn) -> int:
    """Recount every mailing stored before migration 006, one per transaction, resuming where
    an earlier run stopped; the mailings recounted. `conn` in autocommit."""
    recounted = 0
    while True:
        place = conn.execute("SELECT * FROM mailing_counts_backfill").fetchone()
        ahead = place and conn.execute(NEXT_MAILING, place).fetchone()
        if ahead:
            # Read its events before taking its lock, so that the batches of the mailing that
            # wait for the recount wait for the counting only, not for the disk.
            conn.execute(READ_MAILING, ahead)
        with conn.transaction():
            # FOR UPDATE: two `receiver migrate` at once take turns, mailing by mailing.
            place = conn.execute("SELECT * FROM mailing_counts_backfill FOR UPDATE").fetchone()
            if place is None:
                return recounted
            mailing = conn.execute(NEXT_MAILING, place).fetchone()
            if mailing is None:
                conn.execute("DELETE FROM mailing_counts_backfill")
                return recounted
            conn.execute("SELECT recount_mailing(%s, %s)", mailing)
            conn.execute(MOVE_PLACE, mailing)
        recounted += 1


def roll_up(conn, above=ROLL_UP_ABOVE) -> int:
    """Sum each mailing with more than `above` rows into one row; the mailings rolled up."""
    mailings = conn.execute(MAILINGS_TO_ROLL_UP, (above,)).fetchall()
    for client, mailing in mailings:
        conn.execute(ROLL_UP, {"client": client, "mailing": mailing})
    return len(mailings)


def count_before(conn, horizon) -> int:
    """The mailings delete_before(horizon) would remove."""
    return len(conn.execute(MAILINGS_BEFORE, (horizon,)).fetchall())


def delete_before(conn, horizon) -> int:
    """Remove the counts and responders of every mailing whose newest event is older than
    `horizon`; the mailings removed."""
    mailings = conn.execute(MAILINGS_BEFORE, (horizon,)).fetchall()
    for client, mailing in mailings:
        # One transaction: an interruption leaves a mailing whole (found again next time) or
        # gone, never its counts without the responders that make its unique counts.
        with conn.transaction():
            conn.execute(DELETE_RESPONDERS, {"client": client, "mailing": mailing})
            conn.execute(DELETE_COUNTS, {"client": client, "mailing": mailing})
    return len(mailings)
