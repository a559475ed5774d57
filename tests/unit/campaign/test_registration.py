"""What setup registers: the authentication JSON from the receiver's settings, the URL warnings,
type names, and which webhooks count as setup's."""

import json

import pytest

from receiver.campaign import registration
from receiver.campaign.client import CampaignError
from receiver.campaign.registration import receiver_authentication, url_warnings
from receiver.config import ConfigError


def test_the_first_basic_auth_pair_becomes_basic_auth():
    auth = receiver_authentication({"RECEIVER_BASIC_AUTH": "campaign:pa:ss other:x"})
    assert json.loads(auth.json) == {
        "type": "basicAuth",
        "userName": "campaign",
        "password": "pa:ss",
    }
    assert auth.json == '{"type":"basicAuth","userName":"campaign","password":"pa:ss"}'
    assert "RECEIVER_BASIC_AUTH" in auth.source and "campaign" in auth.source


def test_basic_auth_is_preferred_to_key_auth():
    env = {"RECEIVER_BASIC_AUTH": "u:p", "RECEIVER_KEY_AUTH": "X-Api-Key: k"}
    assert receiver_authentication(env).value["type"] == "basicAuth"


def test_the_first_key_auth_line_becomes_key_auth():
    env = {"RECEIVER_KEY_AUTH": "Authorization: Bearer abc def\nX-Api-Key: other"}
    auth = receiver_authentication(env)
    assert auth.value == {"type": "keyAuth", "key": "Authorization", "passphrase": "Bearer abc def"}
    assert "RECEIVER_KEY_AUTH" in auth.source


def test_the_file_forms_are_read_through_the_receivers_config(tmp_path):
    secrets = tmp_path / "basic-auth"
    secrets.write_text("campaign:with space: and colon\n")
    auth = receiver_authentication({"RECEIVER_BASIC_AUTH_FILE": str(secrets)})
    assert auth.value["password"] == "with space: and colon"


def test_the_development_pair_is_the_fallback_and_nothing_is_an_error():
    assert receiver_authentication({}, fallback=("dev", "pw")).value["userName"] == "dev"
    with pytest.raises(ConfigError, match="no credentials configured"):
        receiver_authentication({})


def test_the_secret_is_not_in_the_authentications_repr_or_source():
    auth = receiver_authentication({"RECEIVER_BASIC_AUTH": "campaign:Hidden-77"})
    assert "Hidden-77" not in repr(auth) and "Hidden-77" not in auth.source


@pytest.mark.parametrize("url", ["https://receiver.example.com/webhook",
                                 "https://receiver.example.com:443/webhook"])  # fmt: skip
def test_https_on_443_is_fine(url):
    assert url_warnings(url) == []


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://receiver.example.com/webhook", "is not HTTPS"),
        ("https://receiver.example.com:8443/webhook", "uses port 8443"),
        ("https://127.0.0.1/webhook", "not a public address"),
        ("https://localhost/webhook", "not a public address"),
        ("https://10.1.2.3/webhook", "not a public address"),
    ],
)
def test_urls_campaign_will_not_deliver_to_are_warned_about(url, words):
    assert any(words in warning for warning in url_warnings(url))


@pytest.mark.parametrize("url", ["ftp://example.com/x", "receiver.example.com", "https:///x"])
def test_what_is_no_http_url_is_refused(url):
    with pytest.raises(ValueError, match="not an http"):
        url_warnings(url)


def test_archive_is_created_as_archive_and_listed_as_archived():
    assert registration.request_type("archived") == "archive"
    assert registration.listed_type("archive") == "archived"
    assert registration.event_types("archive") == ("archive", "archived")
    assert registration.parse_types("open, archived,open") == ("open", "archive")
    assert len(registration.parse_types(None)) == 12


def test_setups_webhooks_are_those_at_exactly_our_url():
    url = "https://r.example.com/webhook"
    hooks = [
        {"id": 3, "targetUrl": url, "status": "activated"},
        {"id": 1, "targetUrl": url, "status": "suspended"},
        {"id": 2, "targetUrl": url + "/", "status": "activated"},
        {"id": 4, "targetUrl": url, "status": "deleted"},
    ]
    assert [w["id"] for w in registration.ours(hooks, url)] == [1, 3]


def test_a_webhook_is_shown_without_its_credentials():
    hook = {"id": 1, "authentication": {"type": "basicAuth", "userName": "u", "password": "p"}}
    assert registration.public(hook) == {"id": 1, "authentication": {"type": "basicAuth"}}


class StubClient:
    """Just enough of CampaignClient for setup's decisions."""

    def __init__(self, webhooks):
        self.webhooks = webhooks
        self.calls = []

    def list_webhooks(self):
        return self.webhooks

    def create_webhook(self, webhook_type, url, authentication):
        self.calls.append(("create", webhook_type))
        return {"id": 99, "type": webhook_type, "status": "created"}

    def update_webhook(self, webhook_id, webhook_type, url, authentication):
        self.calls.append(("update", webhook_id, webhook_type))
        return {"id": webhook_id, "type": webhook_type}

    def activate(self, webhook_id):
        self.calls.append(("activate", webhook_id))


def test_setup_updates_a_changed_password_and_reactivates_a_suspended_webhook():
    url = "https://r.example.com/webhook"
    auth = receiver_authentication({"RECEIVER_BASIC_AUTH": "u:new"})
    stale = {"type": "basicAuth", "userName": "u", "password": "old"}
    client = StubClient([
        {"id": 5, "type": "archived", "targetUrl": url, "status": "suspended",
         "authentication": dict(auth.value)},
        {"id": 6, "type": "open", "targetUrl": url, "status": "activated", "authentication": stale},
    ])  # fmt: skip
    results = registration.setup(client, url, auth, ("archive", "open", "click"))
    assert [(r.type, r.action, r.activation) for r in results] == [
        ("archive", "unchanged", "activated"),
        ("open", "updated", "already activated"),
        ("click", "created", "activated"),
    ]
    assert ("update", 6, "open") in client.calls and ("create", "click") in client.calls


class VerifyingStub(StubClient):
    """A client whose verify answers per type: unsupported (400), or the target's status."""

    def __init__(self, target_status):
        super().__init__([])
        self.target_status = target_status

    def create_webhook(self, webhook_type, url, authentication):
        return {"id": len(self.calls) + 1, "type": webhook_type, "status": "created"}

    def verify(self, webhook_id, mailing_id, number_of_events):
        if webhook_id == 1:
            raise CampaignError("not supported", status=400, operation="verify")
        return [{"id": webhook_id, "httpStatusCode": self.target_status, "numberOfEvents": 1}]


def test_an_unverifiable_type_is_a_note_and_a_401_from_the_receiver_a_failure():
    auth = receiver_authentication({"RECEIVER_BASIC_AUTH": "u:p"})
    stub = VerifyingStub(401)
    unverifiable, refused = registration.setup(
        stub, "https://r.example.com/webhook", auth, ("blocklist", "open"), mailing_id=7
    )
    assert unverifiable.ok and unverifiable.verify_note == "not supported"
    assert not refused.ok and "refused the credentials" in refused.verify_note
