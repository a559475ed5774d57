"""`receiver campaign setup|status|teardown` end to end: a fake Campaign API whose verify POSTs
test events to a real gunicorn receiver, and the events looked for in the real database."""

import json
import logging

import pytest

from receiver.cli import main

from support import PASSWORD, USER, Gunicorn
from support.fake_campaign import FakeCampaign

CLIENT_ID = 987654321001
MAILING_ID = 4242
API_USER, API_PASSWORD = "api-user", "api-Secret-9f3c"
TYPE_COUNT = 12
# Settings of the developer's shell that would change what the commands do.
UNSET = (
    "RECEIVER_KEY_AUTH", "RECEIVER_BASIC_AUTH_FILE", "RECEIVER_KEY_AUTH_FILE",
    "CAMPAIGN_API_CREDENTIALS_FILE", "CAMPAIGN_TARGET_URL", "CAMPAIGN_MAILING_ID",
)  # fmt: skip


@pytest.fixture
def fake():
    campaign = FakeCampaign(CLIENT_ID, API_USER, API_PASSWORD)
    yield campaign
    campaign.stop()


@pytest.fixture
def start_receiver(database_url):
    """Start a gunicorn receiver with a password (on a port); every one stopped afterwards."""
    started = []

    def start(password=PASSWORD, port=None):
        env = {"DATABASE_URL": database_url, "RECEIVER_BASIC_AUTH": f"{USER}:{password}"}
        started.append(Gunicorn(env, workers=1, port=port))
        return started[-1]

    yield start
    for receiver in started:
        if receiver.process.poll() is None:
            receiver.stop()


@pytest.fixture
def cli(monkeypatch, fake, database_url, tmp_path, capsys, caplog):
    """Run `receiver campaign …` in-process against the fake API: (code, stdout, stderr)."""
    for name in UNSET:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RECEIVER_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("CAMPAIGN_API_URL", fake.url)
    monkeypatch.setenv("CAMPAIGN_CLIENT_ID", str(CLIENT_ID))
    monkeypatch.setenv("CAMPAIGN_API_USER", API_USER)
    monkeypatch.setenv("CAMPAIGN_API_PASSWORD", API_PASSWORD)
    caplog.set_level(logging.DEBUG)  # so that a secret logged anywhere would be seen

    def run(*argv, password=PASSWORD):
        monkeypatch.setenv("RECEIVER_BASIC_AUTH", f"{USER}:{password}")
        code = main(["campaign", *argv])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def setup_json(cli, url, password=PASSWORD):
    """`setup --json` with a mailing id: (code, results, stderr)."""
    argv = ("setup", "--url", url, "--mailing-id", str(MAILING_ID), "--wait", "5", "--json")
    code, out, err = cli(*argv, password=password)
    return code, json.loads(out), err


def live(fake):
    """The fake's webhooks that are not deleted."""
    return [w for w in fake.webhooks.values() if w["status"] != "deleted"]


def test_setup_registers_and_verifies_every_type(cli, fake, start_receiver, query):
    url = start_receiver().url + "/webhook"
    code, results, err = setup_json(cli, url)
    assert code == 0, (results, err)
    assert len(results) == TYPE_COUNT
    assert all(r["ok"] and r["action"] == "created" for r in results)
    assert all(r["verify_status"] == 200 and r["events_seen"] == 1 for r in results)
    assert {w["status"] for w in live(fake)} == {"activated"}
    assert {"archived", "open", "filteredbyblocklist"} <= {w["type"] for w in live(fake)}
    assert "is not HTTPS" in err  # the loopback test URL is one Campaign would not deliver to
    stored = query(
        "SELECT type, count(*) FROM events WHERE client_id = %s GROUP BY type", (CLIENT_ID,)
    )
    assert len(stored) == TYPE_COUNT
    assert all(count == 1 for _, count in stored)


def test_setup_twice_creates_and_changes_nothing(cli, fake, start_receiver):
    url = start_receiver().url + "/webhook"
    assert setup_json(cli, url)[0] == 0
    code, again, _ = setup_json(cli, url)
    assert code == 0
    assert {r["action"] for r in again} == {"unchanged"}
    assert {r["activation"] for r in again} == {"already activated"}
    assert fake.count("POST", "/webhooks") == TYPE_COUNT  # the first run's creates only
    assert fake.count("PUT") == 0
    assert len(live(fake)) == TYPE_COUNT


def test_a_changed_receiver_password_updates_the_webhooks(cli, fake, start_receiver):
    first = start_receiver()
    url = first.url + "/webhook"
    assert setup_json(cli, url)[0] == 0
    first.stop()
    start_receiver("n3w-pass", port=first.port)
    code, results, err = setup_json(cli, url, password="n3w-pass")
    assert code == 0, (results, err)
    assert {r["action"] for r in results} == {"updated"}
    assert all(r["verify_status"] == 200 and r["events_seen"] == 1 for r in results)
    assert {w["authentication"]["password"] for w in live(fake)} == {"n3w-pass"}
    assert fake.count("POST", "/webhooks") == TYPE_COUNT


def test_a_wrong_password_is_reported_by_setup(cli, start_receiver):
    url = start_receiver().url + "/webhook"
    argv = ("setup", "--url", url, "--types", "open,bounce", "--mailing-id", str(MAILING_ID))
    code, out, _ = cli(*argv, password="not-the-receivers")
    assert code == 1
    lines = [line for line in out.splitlines() if line.startswith(("open ", "bounce "))]
    assert len(lines) == 2
    assert all(" 401 " in line and "refused the credentials" in line for line in lines)


def test_teardown_removes_setups_webhooks_and_nothing_else(cli, fake, start_receiver):
    url = start_receiver().url + "/webhook"
    other = fake.add(CLIENT_ID, "open", "https://elsewhere.example.com/hook", "activated")
    assert setup_json(cli, url)[0] == 0
    code, out, _ = cli("teardown", "--url", url, "--json")
    assert code == 0
    outcomes = json.loads(out)
    assert len(outcomes) == TYPE_COUNT
    assert {o["result"] for o in outcomes} == {"deleted"}
    assert live(fake) == [other]
    assert cli("teardown", "--url", url)[1].startswith("no webhook at")


def test_status_shows_a_suspended_webhook_and_what_arrived(cli, fake, start_receiver):
    receiver = start_receiver()
    url = receiver.url + "/webhook"
    assert setup_json(cli, url)[0] == 0
    invalid = {"type": "click", "clientId": CLIENT_ID}  # no `created`: quarantined
    assert receiver.post(json.dumps([invalid])).status_code == 200
    opens = next(w for w in live(fake) if w["type"] == "open")
    opens["status"] = "suspended"
    code, out, _ = cli("status", "--url", url, "--json")
    assert code == 1  # a suspended webhook is a failure to look at
    rows = {row["type"]: row for row in json.loads(out)["types"]}
    assert rows["open"]["webhooks"][0]["status"] == "suspended"
    assert any("SUSPENDED" in note for note in rows["open"]["notes"])
    assert rows["click"]["events_last_hour"] == 1 and rows["click"]["last_event"]
    assert rows["archived"]["events_last_hour"] == 1
    assert (
        rows["click"]["quarantined_last_hour"] == 1 and rows["open"]["quarantined_last_hour"] == 0
    )
    table = cli("status", "--url", url)[1]
    assert "suspended" in table and "quarantined 1h" in table


def test_no_secret_is_ever_printed_or_logged(cli, start_receiver, caplog):
    url = start_receiver().url + "/webhook"
    runs = [
        cli("setup", "--url", url, "--mailing-id", str(MAILING_ID)),
        cli("setup", "--url", url, "--mailing-id", str(MAILING_ID), "--json"),
        cli("setup", "--url", url, "--mailing-id", "1", password="wrong-Pass-77"),
        cli("status", "--url", url),
        cli("status", "--json"),
        cli("webhooks", "list"),
        cli("webhooks", "list", "--json"),
        cli("teardown", "--url", url),
    ]
    text = "\n".join(out + err for _, out, err in runs) + caplog.text
    assert "webhook" in text  # the runs did print something
    for secret in (PASSWORD, API_PASSWORD, "wrong-Pass-77"):
        assert secret not in text
