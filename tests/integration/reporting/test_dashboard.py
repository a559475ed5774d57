"""deploy/grafana/campaign-reporting.json: every panel's SQL runs on a migrated database with
data and returns rows of the shape its panel draws."""

import json
import re
from datetime import UTC, datetime, timedelta

from support import ROOT
from support.reporting import CLIENT, MINUTE, deliver, status_event

DASHBOARD = ROOT / "deploy" / "grafana" / "campaign-reporting.json"
# The columns each panel must return (timeseries: `time` first, then numbers).
EXPECTED = {
    "Seconds since the last sent": ["seconds_since_last_sent"],
    "Mailing funnel": [
        "mailing", "started", "sent", "unique_opens", "unique_clicks", "bounces", "unsubscribes",
        "spam_complaints", "open_rate", "click_rate", "click_to_open_rate",
    ],
    "Rates by mailing start": [
        "time", "open_rate", "click_rate", "bounce_rate", "unsubscribe_rate", "complaint_rate",
    ],
    "Sent per minute": ["time", "sent"],
    "Dispatch delay": ["time", "delay_p50_s", "delay_p95_s"],
    "Suppressions per day": ["time", "unsubscribed", "hardbounced", "complained", "blocklisted"],
}  # fmt: skip


def expand(sql, start, end, client_id):
    """Grafana's macros and the $client variable, as Grafana's PostgreSQL source expands them."""
    start_text, end_text = f"'{start.isoformat()}'", f"'{end.isoformat()}'"
    sql = re.sub(r"\$__timeFilter\((\w+)\)", rf"\1 BETWEEN {start_text} AND {end_text}", sql)
    sql = sql.replace("$__timeFrom()", start_text).replace("$__timeTo()", end_text)
    return sql.replace("$client", str(client_id))


def recent_traffic(client):
    """A mailing sent ten minutes ago with opens, clicks, bounces and suppressions."""
    now = int(datetime.now(UTC).timestamp() * 1000) - 10 * MINUTE
    events = [status_event("sent", f"r{i}", now + i * 1000, f"s{i}") for i in range(10)]
    events += [
        status_event("open", "r1", now + MINUTE, "o1", device="mobile"),
        status_event("click", "r1", now + MINUTE, "c1", link="https://example.com"),
        status_event("bounce", "r2", now + MINUTE, "b1", category="hardbounce"),
        status_event("unsubscribe", "r3", now + MINUTE, "u1"),
        status_event("spamcomplaint", "r4", now + MINUTE, "k1"),
        status_event("blocklist", "r5", now + MINUTE, "l1"),
    ]
    deliver(client, *events)


def test_every_panel_query_returns_rows_of_its_shape(client, database_url):
    import psycopg

    recent_traffic(client)
    dashboard = json.loads(DASHBOARD.read_text())
    end = datetime.now(UTC)
    start = end - timedelta(days=30)
    seen = set()
    with psycopg.connect(database_url) as conn:
        variable = next(v for v in dashboard["templating"]["list"] if v["name"] == "client")
        assert conn.execute(variable["query"]).fetchall() == [(CLIENT,)]
        for panel in dashboard["panels"]:
            assert panel["datasource"]["type"] == "grafana-postgresql-datasource"
            [target] = panel["targets"]
            cursor = conn.execute(expand(target["rawSql"], start, end, CLIENT))
            rows = cursor.fetchall()
            assert [c.name for c in cursor.description] == EXPECTED[panel["title"]], panel["title"]
            assert rows, panel["title"]
            if target["format"] == "time_series":
                assert all(isinstance(row[0], datetime) for row in rows), panel["title"]
                assert all(all(v is None or float(v) >= 0 for v in row[1:]) for row in rows)
            seen.add(panel["title"])
    assert seen == set(EXPECTED)
