"""The reporting queries behind `receiver report`: all of them over the views and the
recipient_status table of migrations/004_reporting.sql.

Every query names client_id where it can: every index of `events` leads with it, so a filter on
it is an index probe per month, and without it PostgreSQL would read every client's rows. When
the caller gives no client, the clients are listed first (client_last_sent: one index probe
each) and each is asked in turn.
"""

from dataclasses import dataclass

from psycopg.rows import dict_row


@dataclass(frozen=True)
class Report:
    """Rows as dicts, with the column order they were selected in."""

    columns: list
    rows: list


CLIENTS = "SELECT client_id FROM client_last_sent ORDER BY client_id"
MAILINGS = "SELECT * FROM mailing_summaries(%(client)s, %(since)s, %(until)s) LIMIT %(limit)s"
MAILING = "SELECT * FROM mailing_summary WHERE client_id = %(client)s AND mailing_id = %(mailing)s"
LINKS = """
SELECT client_id, mailing_id, link, clicks, unique_clickers FROM mailing_links
WHERE client_id = %(client)s AND mailing_id = %(mailing)s
ORDER BY clicks DESC, link LIMIT %(limit)s
"""
DEVICES = """
SELECT client_id, mailing_id, device, operating_system, browser, opens, unique_openers
FROM mailing_devices WHERE client_id = %(client)s AND mailing_id = %(mailing)s
ORDER BY opens DESC, device, operating_system, browser LIMIT %(limit)s
"""
RECIPIENTS = """
SELECT client_id, recipient_id, status, suppress, status_at, status_event_type, mailing_id,
       changed_at FROM recipient_status
WHERE client_id = %(client)s
  AND (%(recipient)s::text IS NULL OR recipient_id = %(recipient)s)
  AND (%(status)s::text IS NULL OR status = %(status)s)
  AND (%(since)s::timestamptz IS NULL OR status_at >= %(since)s)
  AND (%(until)s::timestamptz IS NULL OR status_at < %(until)s)
ORDER BY recipient_id LIMIT %(limit)s
"""
# By arrival (changed_at), not by status_at: an event created yesterday that arrives now is
# in the next export. The bounds are literal comparisons so the changed_at index serves them.
SUPPRESSIONS = """
SELECT client_id, recipient_id, status, suppress, status_at, status_event_type, mailing_id,
       changed_at FROM recipient_status
WHERE changed_at >= %(since)s AND changed_at < %(until)s
  AND (%(client)s::bigint IS NULL OR client_id = %(client)s)
ORDER BY changed_at, client_id, recipient_id
"""
DISPATCH = """
SELECT client_id, mailing_id, minute, sent, round(delay_p50_s::numeric, 3) AS delay_p50_s,
       round(delay_p95_s::numeric, 3) AS delay_p95_s
FROM dispatch_between(%(since)s, %(until)s)
WHERE client_id = %(client)s AND (%(mailing)s::bigint IS NULL OR mailing_id = %(mailing)s)
ORDER BY minute DESC, mailing_id LIMIT %(limit)s
"""
LAST_SENT = """
SELECT client_id, last_sent_at,
       round(seconds_since_last_sent::numeric, 3) AS seconds_since_last_sent
FROM client_last_sent WHERE %(client)s::bigint IS NULL OR client_id = %(client)s
ORDER BY client_id
"""


def fetch(conn, query, params) -> Report:
    """Run one reporting query; its rows as dicts."""
    with conn.cursor(row_factory=dict_row) as cursor:
        cursor.execute(query, params)
        columns = [column.name for column in cursor.description]
        return Report(columns, cursor.fetchall())


def clients(conn, client=None) -> list:
    """[client] if given, else every client with events."""
    if client is not None:
        return [client]
    return [row[0] for row in conn.execute(CLIENTS).fetchall()]


def per_client(conn, query, client, params) -> Report:
    """`query` for the given client, or for each client in turn, as one report."""
    reports = [fetch(conn, query, {**params, "client": c}) for c in clients(conn, client)]
    columns = reports[0].columns if reports else []
    return Report(columns, [row for report in reports for row in report.rows])


def mailings(conn, since, until, client=None, limit=1000) -> Report:
    """The summaries of the mailings that sent in [since, until)."""
    return per_client(conn, MAILINGS, client, {"since": since, "until": until, "limit": limit})


def mailing(conn, mailing_id, client=None) -> Report:
    """One mailing's summary (one row per client that has it; normally one)."""
    return per_client(conn, MAILING, client, {"mailing": mailing_id})


def links(conn, mailing_id, client=None, limit=50) -> Report:
    """The mailing's clicked links, most clicked first."""
    return per_client(conn, LINKS, client, {"mailing": mailing_id, "limit": limit})


def devices(conn, mailing_id, client=None, limit=50) -> Report:
    """The mailing's opens by device, operating system and browser."""
    return per_client(conn, DEVICES, client, {"mailing": mailing_id, "limit": limit})


def recipients(conn, client=None, recipient=None, status=None, since=None, until=None,
               limit=1000) -> Report:  # fmt: skip
    """Current statuses, optionally of one recipient or one status, decided in [since, until)."""
    params = {"recipient": recipient, "status": status, "since": since, "until": until}
    return per_client(conn, RECIPIENTS, client, {**params, "limit": limit})


def suppressions(conn, since, until, client=None) -> Report:
    """Every recipient whose status changed (arrived) in [since, until), with the status."""
    return fetch(conn, SUPPRESSIONS, {"since": since, "until": until, "client": client})


def dispatch(conn, since, until, client=None, mailing_id=None, limit=1000) -> Report:
    """`sent` per minute in [since, until) with the arrival delay, newest first."""
    params = {"since": since, "until": until, "mailing": mailing_id, "limit": limit}
    return per_client(conn, DISPATCH, client, params)


def last_sent(conn, client=None) -> Report:
    """Per client (or the one given): its latest `sent` event's time and the seconds since."""
    return fetch(conn, LAST_SENT, {"client": client})
