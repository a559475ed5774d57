"""Fill `events` fast, server-side, with Campaign-like traffic over the last N months.

Each month is generated into a plain table without indexes (INSERT ... SELECT over
generate_series, no Python in the loop), then attached as that month's partition, which builds
its indexes once over the whole month: the way to load tens of millions of rows in minutes
instead of the hours random index insertions would take.

The shape of the data: three clients (70/20/10 % of the mailings), mailings of PER_MAILING
events, each sent to a slice of a pool of 2,000,000 recipients per client over half an hour:
65 % sent, 22 % opens and 5 % clicks by recipients of the mailing (some twice), 3 % bounces
(a third of them hard), unsubscribes, spam complaints, opt-ins and blocklist events; half of the
events carry an `id`. Opens and clicks come up to three days after the send, arrive seconds to
minutes after their `created`, and carry the device, OS and browser fields.

    python bench/fill.py DATABASE_URL 1000000 [--months 13]
"""

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from receiver.storage import partitions  # noqa: E402

PER_MAILING = 50_000
CLIENTS = (10180860001, 10180860002, 10180860003)

# One month's rows; %(...)s are the month's parameters. Positions j in a mailing decide the type:
# the first 65 % are its sends (recipient r = j), the rest refer back to a sent recipient.
GENERATE = """
INSERT INTO {table} (event_key, event_id, client_id, type, created_at, received_at, mailing_id,
    user_list_id, subscription_id, recipient_id, mail_id, media_type, category, reason,
    threshold_exceeded, link, device, operating_system, browser, remote_address, payload)
SELECT key, CASE WHEN g %% 2 = 0 THEN key END, client, kind, created,
       created + make_interval(secs => 1 + (h %% 600)), mailing, 10180860004, 10227900201,
       recipient, mail, CASE WHEN kind = 'bounce' THEN 'EMAIL' END,
       CASE WHEN kind = 'bounce'
            THEN CASE WHEN h %% 3 = 0 THEN 'hardbounce' ELSE 'softbounce' END END,
       CASE WHEN kind = 'bounce'
            THEN CASE WHEN h %% 5 = 0 THEN 'spam-related' ELSE 'other' END END,
       CASE WHEN kind = 'bounce' THEN h %% 10 = 0 END,
       CASE WHEN kind = 'click' THEN 'https://example.com/offer/' || (h %% 12) END,
       CASE WHEN kind IN ('open', 'click')
            THEN (ARRAY['desktop', 'mobile', 'tablet'])[1 + h %% 3] END,
       CASE WHEN kind IN ('open', 'click')
            THEN (ARRAY['Windows 10', 'macOS', 'iOS 17', 'Android 14'])[1 + h %% 4] END,
       CASE WHEN kind IN ('open', 'click')
            THEN (ARRAY['Firefox 64.1', 'Chrome 120', 'Safari 17', 'Outlook'])
                 [1 + (h / 7) %% 4] END,
       CASE WHEN kind IN ('open', 'click') THEN '0.0.0.0' END,
       jsonb_strip_nulls(jsonb_build_object(
           'type', kind, 'id', CASE WHEN g %% 2 = 0 THEN key END, 'recipientId', recipient,
           'userListId', 10180860004, 'clientId', client,
           'created', (extract(epoch FROM created) * 1000)::bigint,
           'subscriptionId', 10227900201, 'mailId', mail, 'mailingId', mailing,
           'mediaTypesToAddresses', jsonb_build_object('EMAIL', recipient),
           'device', CASE WHEN kind IN ('open', 'click') THEN 'desktop' END,
           'link', CASE WHEN kind = 'click' THEN 'https://example.com/offer/' || (h %% 12) END))
FROM (
    SELECT g, h, mailing, client, created_base, kind, sent_count,
           'user' || ((mailing * 7919 + CASE WHEN kind = 'sent' THEN j ELSE h %% sent_count END)
                      %% 2000000) || '@example.com' AS recipient,
           'f' || %(tag)s || '-' || g AS mail,
           'sha256:' || md5(%(tag)s || ':' || g) || md5(g || ':' || %(tag)s) AS key,
           least(created_base + CASE WHEN kind = 'sent' THEN j * interval '36 milliseconds'
                                     ELSE (h %% 259200) * interval '1 second' END,
                 %(month_end)s::timestamptz - interval '1 millisecond') AS created
    FROM (
        SELECT g, j, mailing, client, created_base, sent_count,
               abs(hashint8(g)) AS h,
               CASE WHEN j < sent_count THEN 'sent'
                    WHEN j < sent_count + %(per)s * 22 / 100 THEN 'open'
                    WHEN j < sent_count + %(per)s * 27 / 100 THEN 'click'
                    WHEN j < sent_count + %(per)s * 30 / 100 THEN 'bounce'
                    WHEN j < sent_count + %(per)s * 305 / 1000 THEN 'unsubscribe'
                    WHEN j < sent_count + %(per)s * 306 / 1000 THEN 'spamcomplaint'
                    ELSE (ARRAY['singleoptin','doubleoptin','confirmedoptin','blocklist',
                                'filteredbyblocklist'])[1 + abs(hashint8(-g)) %% 5]
               END AS kind
        FROM (
            SELECT g, g %% %(per)s AS j, %(first_mailing)s + g / %(per)s AS mailing,
                   (ARRAY[%(c1)s, %(c1)s, %(c1)s, %(c1)s, %(c1)s, %(c1)s, %(c1)s, %(c2)s,
                          %(c2)s, %(c3)s]::bigint[])[1 + (g / %(per)s) %% 10] AS client,
                   %(month_start)s::timestamptz
                       + ((g / %(per)s) * %(spacing_s)s) * interval '1 second' AS created_base,
                   %(per)s::bigint * 65 / 100 AS sent_count
            FROM generate_series(%(first)s::bigint, %(last)s::bigint) g
        ) positions
    ) typed
) rows
"""


def fill(url, total, months=13, now=None, progress=print) -> dict:
    """Spread `total` events evenly over the last `months` months (the current one included);
    return {partition: rows}. The months' partitions must be empty (a fresh database)."""
    now = now or datetime.now(UTC)
    current = partitions.month_start(now)
    per_month = total // months
    filled = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for index in range(months):
            month = partitions.add_months(current, index - months + 1)
            rows = per_month + (total - per_month * months if index == months - 1 else 0)
            started = time.monotonic()
            filled[partitions.partition_name(month)] = fill_month(conn, month, rows, index, now)
            progress(
                f"fill: {partitions.partition_name(month)} {rows:,} rows in "
                f"{time.monotonic() - started:.0f} s"
            )
        conn.execute("ANALYZE events")
    return filled


def fill_month(conn, month, rows, index, now) -> int:
    """Generate one month into a plain table, then swap it in as the month's partition."""
    name = partitions.partition_name(month)
    staging = sql.Identifier(f"{name}_fill")
    month_end = partitions.add_months(month, 1)
    if partitions.month_start(now) == month:
        month_end = min(month_end, now)  # the current month only up to now
    per = max(100, min(PER_MAILING, rows // 10))  # small fills still get every type
    mailings = max(1, -(-rows // per))
    spacing = max(1, int((month_end - month).total_seconds() * 0.9 / mailings))
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(staging))
    conn.execute(
        sql.SQL("CREATE TABLE {} (LIKE events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)").format(
            staging
        )
    )
    if rows:
        params = {
            "tag": name,
            "per": per,
            "first_mailing": 10230000000 + index * 1000,
            "c1": CLIENTS[0],
            "c2": CLIENTS[1],
            "c3": CLIENTS[2],
            "month_start": month,
            "month_end": month_end,
            "spacing_s": spacing,
            "first": 0,
            "last": rows - 1,
        }
        conn.execute(sql.SQL(GENERATE).format(table=staging), params)
    # Swap the (empty) partition for the filled table: its indexes are built once, at ATTACH.
    if conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()[0]:
        partitions.drop_month(conn, name)
    conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(staging, sql.Identifier(name)))
    conn.execute(
        sql.SQL("ALTER TABLE events ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})").format(
            sql.Identifier(name),
            sql.Literal(month.isoformat()),
            sql.Literal(partitions.add_months(month, 1).isoformat()),
        )
    )
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("database_url")
    parser.add_argument("events", type=int)
    parser.add_argument("--months", type=int, default=13)
    args = parser.parse_args()
    fill(args.database_url, args.events, args.months)


if __name__ == "__main__":
    main()
