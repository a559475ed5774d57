"""The simulator's plan (receiver.simulate): exactly the events asked for, one client id for
every run, mail ids of the run's own, and mailings whose reports are believable."""

import math
from collections import Counter, defaultdict

import pytest

from receiver.simulate import (
    DOCUMENTED_TYPES,
    SIMULATED_CLIENT_ID,
    Tally,
    answer_name,
    make_plan,
    waiting_text,
)


def unique_events(plan) -> list[dict]:
    """Each planned event once (a batch delivered twice holds the same events)."""
    return list({e["mailId"]: e for batch in plan.batches for e in batch}.values())


def funnel(plan) -> dict:
    """Per mailing: the recipients of each type."""
    mailings = defaultdict(lambda: defaultdict(set))
    for event in unique_events(plan):
        mailings[event["mailingId"]][event["type"]].add(event["recipientId"])
    return mailings


@pytest.mark.parametrize("events", [*range(1, 40), 101, 999, 4321, 12_345])
def test_a_plan_has_exactly_the_events_asked_for(events):
    plan = make_plan(events, seed=events)
    assert len(plan.mail_ids) == len(set(plan.mail_ids)) == events
    assert sorted(e["mailId"] for e in unique_events(plan)) == sorted(plan.mail_ids)
    assert len(plan.batches) == math.ceil(events / 100) + plan.redeliveries


def test_every_run_uses_the_one_simulated_client_id():
    plans = [make_plan(200, seed=1), make_plan(200, seed=2), make_plan(200)]
    assert {p.client_id for p in plans} == {SIMULATED_CLIENT_ID}
    assert {e["clientId"] for p in plans for e in unique_events(p)} == {SIMULATED_CLIENT_ID}


def test_runs_have_their_own_tag_mail_ids_and_mailings_even_with_the_same_seed():
    first, second = make_plan(3000, seed=7), make_plan(3000, seed=7)
    assert first.run != second.run
    assert all(m.startswith(f"{first.run}-") for m in first.mail_ids)
    assert not set(first.mail_ids) & set(second.mail_ids)
    assert not set(first.mailing_ids) & set(second.mailing_ids)
    # The seed reproduces everything else: types and recipients, in order.
    shape = [[(e["type"], e["recipientId"]) for e in unique_events(p)] for p in (first, second)]
    assert shape[0] == shape[1]


@pytest.mark.parametrize("events", [1, 2, 5, 17, 60, 333, 5000, 30_000])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_responses_come_from_recipients_the_mailing_was_sent_to(events, seed):
    plan = make_plan(events, seed=seed)
    assert set(funnel(plan)) <= set(plan.mailing_ids)
    for mailing in funnel(plan).values():
        sent = mailing["sent"]
        for kind in ("open", "click", "bounce", "unsubscribe", "spamcomplaint"):
            assert mailing[kind] <= sent, kind
        assert mailing["click"] <= mailing["open"]
        assert mailing["unsubscribe"] <= mailing["open"]
        assert not mailing["bounce"] & mailing["open"]
        assert len(mailing["open"]) <= len(sent)  # open_rate <= 1, whatever the size


def test_a_recipients_responses_come_after_its_send():
    plan = make_plan(5000, seed=4)
    sent_at = {}
    for event in sorted(unique_events(plan), key=lambda e: e["created"]):
        key = (event["mailingId"], event["recipientId"])
        if event["type"] == "sent":
            sent_at[key] = event["created"]
        elif event["type"] in ("open", "click", "bounce", "unsubscribe"):
            assert sent_at[key] < event["created"]


def test_mailings_have_believable_rates_and_every_type_is_sent():
    plan = make_plan(40_000, seed=5)
    assert {e["type"] for e in unique_events(plan)} == set(DOCUMENTED_TYPES)
    assert len(plan.mailing_ids) >= 5
    for mailing in funnel(plan).values():
        sent = len(mailing["sent"])
        assert 1500 <= sent <= 3000
        assert 0.2 <= len(mailing["open"]) / sent <= 0.4
        assert 0.04 <= len(mailing["click"]) / sent <= 0.12
        assert 0.005 <= len(mailing["bounce"]) / sent <= 0.04
        assert len(mailing["unsubscribe"]) / sent <= 0.02


def test_bounces_are_soft_or_hard_and_opens_say_their_device():
    events = unique_events(make_plan(5000, seed=6))
    bounces = Counter(e["category"] for e in events if e["type"] == "bounce")
    assert set(bounces) == {"softbounce", "hardbounce"}
    assert all(e["device"] and e["browser"] for e in events if e["type"] in ("open", "click"))
    assert all(e["link"] for e in events if e["type"] == "click")


def test_nothing_waited_for_says_nothing():
    assert waiting_text(Tally(), 10.0) is None


def test_waiting_batches_are_said_with_their_answers():
    tally = Tally()
    tally.waiting.update({503: 3, "ConnectionError": 2, "ReadTimeout": 1})
    assert waiting_text(tally, 10.0) == (
        "6 batch(es) to send again every 10 s: 3 after 503 Service Unavailable, "
        "2 after no connection (refused or reset), 1 after no answer in time"
    )


@pytest.mark.parametrize(
    "status, name",
    [
        (503, "503 Service Unavailable"),
        (429, "429 Too Many Requests"),
        (599, "599"),
        ("ConnectTimeout", "no answer in time"),
        ("SSLError", "SSLError"),
    ],
)
def test_answers_are_named(status, name):
    assert answer_name(status) == name
