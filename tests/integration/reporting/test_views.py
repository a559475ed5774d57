"""mailing_summary, mailing_summaries(), mailing_links, mailing_devices, dispatch_by_minute,
dispatch_between() and client_last_sent on hand-built events with known answers."""

from datetime import UTC, datetime
from decimal import Decimal

from support import event
from support.reporting import CLIENT, MINUTE, OTHER_CLIENT, T0, deliver, status_event

SUMMARY_COLUMNS = (
    "sent, opens, unique_opens, clicks, unique_clicks, hard_bounces, soft_bounces, unsubscribes, "
    "spam_complaints, open_rate, click_rate, bounce_rate, unsubscribe_rate, complaint_rate, "
    "click_to_open_rate"
)


def at(ms):
    return datetime.fromtimestamp(ms / 1000, UTC)


def one_mailing(mailing=1001, client_id=CLIENT, start=T0):
    """4 sent; r1 opens twice and clicks twice, r2 opens once; one hard and one soft bounce,
    one unsubscribe, one complaint; delivered twice (the duplicates must not count)."""

    def e(kind, recipient, offset, key, **fields):
        return status_event(kind, recipient, start + offset, f"{mailing}-{key}", mailing,
                            client_id, **fields)  # fmt: skip

    return [
        *(e("sent", f"r{i}", i * 1000, f"s{i}") for i in range(1, 5)),
        e("open", "r1", MINUTE, "o1", device="mobile", operatingSystem="iOS", browser="Safari"),
        e("open", "r1", 2 * MINUTE, "o2", device="mobile", operatingSystem="iOS", browser="Safari"),
        e("open", "r2", MINUTE, "o3", device="desktop", operatingSystem="Windows", browser="Edge"),
        e("click", "r1", 3 * MINUTE, "c1", link="https://example.com/a"),
        e("click", "r1", 4 * MINUTE, "c2", link="https://example.com/a"),
        e("click", "r1", 5 * MINUTE, "c3", link="https://example.com/b"),
        e("bounce", "r3", 10_000, "b1", category="hardbounce"),
        e("bounce", "r4", 10_000, "b2", category="softbounce"),
        e("unsubscribe", "r2", 6 * MINUTE, "u1"),
        e("spamcomplaint", "r1", 7 * MINUTE, "k1"),
    ]


def test_mailing_summary_counts_each_event_once_and_unique_by_recipient(client, query):
    batch = one_mailing()
    deliver(client, *batch)
    deliver(client, *reversed(batch))  # every event a second time, in another order
    [row] = query(
        f"SELECT {SUMMARY_COLUMNS}, first_event_at, last_event_at FROM mailing_summary "  # noqa: S608
        "WHERE client_id = %s AND mailing_id = 1001",
        (CLIENT,),
    )
    counts, rates, (first, last) = row[:9], row[9:15], row[15:]
    assert counts == (4, 3, 2, 3, 1, 1, 1, 1, 1)
    assert rates == tuple(Decimal(value) for value in ("0.5", "0.25", "0.5", "0.25", "0.25", "0.5"))
    assert (first, last) == (at(T0 + 1000), at(T0 + 7 * MINUTE))


def test_rates_without_sent_are_null(client, query):
    deliver(client, status_event("open", "r1", T0, "o1"), status_event("click", "r1", T0, "c1"))
    [row] = query(f"SELECT {SUMMARY_COLUMNS} FROM mailing_summary")  # noqa: S608
    assert row[:5] == (0, 1, 1, 1, 1)
    assert row[9:14] == (None,) * 5
    assert row[14] == Decimal("1")  # clicks over opens still has a denominator


def test_unique_counts_take_events_without_a_recipient_as_one_recipient(client, query):
    def anonymous(kind, key, offset):
        return event(kind, id=key, created=T0 + offset, mailingId=1001, clientId=CLIENT)

    deliver(
        client,
        status_event("sent", "r1", T0, "s1"),
        status_event("sent", "r2", T0, "s2"),
        anonymous("sent", "s3", 1000),
        status_event("open", "r1", T0 + MINUTE, "o1"),
        status_event("open", "r1", T0 + 2 * MINUTE, "o2"),
        anonymous("open", "o3", MINUTE),
        anonymous("open", "o4", 2 * MINUTE),
        anonymous("click", "c1", 3 * MINUTE),
        status_event("unsubscribe", "r2", T0 + 4 * MINUTE, "u1"),
    )
    [row] = query(
        "SELECT sent, opens, unique_opens, clicks, unique_clicks, unsubscribes, first_event_at,"
        " last_event_at FROM mailing_summary WHERE client_id = %s AND mailing_id = 1001",
        (CLIENT,),
    )
    # r1 and "no recipient" opened; only "no recipient" clicked.
    assert row == (3, 4, 2, 1, 1, 1, at(T0), at(T0 + 4 * MINUTE))


def test_mailings_are_kept_apart_by_client_and_mailing(client, query):
    deliver(client, *one_mailing(1001), *one_mailing(1002, start=T0 + 60 * MINUTE))
    deliver(client, *one_mailing(1001, client_id=OTHER_CLIENT))
    rows = query(
        "SELECT client_id, mailing_id, sent, unique_opens FROM mailing_summary ORDER BY 1, 2"
    )
    assert rows == [(CLIENT, 1001, 4, 2), (CLIENT, 1002, 4, 2), (OTHER_CLIENT, 1001, 4, 2)]


def test_mailing_summaries_lists_the_mailings_that_sent_in_the_range(client, query):
    deliver(client, *one_mailing(1001), *one_mailing(1002, start=T0 + 60 * MINUTE))
    deliver(client, *one_mailing(1003, client_id=OTHER_CLIENT))
    rows = query(
        "SELECT mailing_id, sent FROM mailing_summaries(%s, %s, %s)",
        (CLIENT, at(T0 + 30 * MINUTE), at(T0 + 120 * MINUTE)),
    )
    assert rows == [(1002, 4)]
    everything = query("SELECT mailing_id FROM mailing_summaries(%s, %s, %s)",
                       (CLIENT, at(T0 - MINUTE), at(T0 + 120 * MINUTE)))  # fmt: skip
    assert everything == [(1002,), (1001,)]  # the latest first


def test_mailing_links_counts_clicks_and_distinct_clickers(client, query):
    deliver(
        client, *one_mailing(), status_event("click", "r2", T0, "x", link="https://example.com/a")
    )
    rows = query("SELECT link, clicks, unique_clickers FROM mailing_links ORDER BY link")
    assert rows == [("https://example.com/a", 3, 2), ("https://example.com/b", 1, 1)]


def test_mailing_devices_counts_opens_by_device_os_and_browser(client, query):
    deliver(client, *one_mailing(), status_event("open", "r3", T0, "x"))
    rows = query(
        "SELECT device, operating_system, browser, opens, unique_openers FROM mailing_devices "
        "ORDER BY opens DESC, device NULLS LAST"
    )
    assert rows == [
        ("mobile", "iOS", "Safari", 2, 1),
        ("desktop", "Windows", "Edge", 1, 1),
        (None, None, None, 1, 1),
    ]


def test_dispatch_by_minute_counts_sent_and_the_arrival_delay(client, query):
    now_ms = int(datetime.now(UTC).timestamp() * 1000) // MINUTE * MINUTE
    # Minute 1: sent 10 s and 30 s before arrival (well, about); minute 2: one sent.
    deliver(
        client,
        status_event("sent", "r1", now_ms - 2 * MINUTE, "s1"),
        status_event("sent", "r2", now_ms - 2 * MINUTE + 20_000, "s2"),
        status_event("sent", "r3", now_ms - MINUTE, "s3"),
        status_event("open", "r1", now_ms - MINUTE, "o1"),
    )
    rows = query(
        "SELECT minute, sent, delay_p50_s, delay_p95_s FROM dispatch_by_minute ORDER BY minute"
    )
    assert [(minute, sent) for minute, sent, *_ in rows] == [
        (at(now_ms - 2 * MINUTE), 2),
        (at(now_ms - MINUTE), 1),
    ]
    p50, p95 = rows[0][2:]
    assert 2 * 60 - 20 < p95 < 2 * 60 + 60 and p50 < p95  # about 100 s and 120 s late
    between = query(
        "SELECT minute, sent FROM dispatch_between(%s, %s)",
        (at(now_ms - MINUTE), at(now_ms)),
    )
    assert between == [(at(now_ms - MINUTE), 1)]


def test_client_last_sent_probes_each_client(client, query):
    deliver(client, status_event("sent", "r1", T0, "s1"), status_event("sent", "r2", T0 + 5, "s2"))
    deliver(client, status_event("open", "r1", T0 + MINUTE, "o1"))  # not a sent
    deliver(client, status_event("open", "r1", T0, "o9", client_id=OTHER_CLIENT))
    rows = query(
        "SELECT client_id, last_sent_at, seconds_since_last_sent > 0 FROM client_last_sent"
    )
    assert rows == [(CLIENT, at(T0 + 5), True), (OTHER_CLIENT, None, None)]


def test_suppressions_by_day_counts_current_suppressions(client, query):
    day = 24 * 60 * MINUTE
    deliver(
        client,
        status_event("unsubscribe", "r1", T0, "u1"),
        status_event("unsubscribe", "r2", T0 + 1000, "u2"),
        status_event("blocklist", "r3", T0 + day, "k3"),
        status_event("doubleoptin", "r4", T0, "o4"),
    )
    rows = query("SELECT day, status, recipients FROM suppressions_by_day ORDER BY 1, 2")
    assert rows == [(at(T0), "unsubscribed", 2), (at(T0 + day), "blocklisted", 1)]
