"""The client's messages per documented status, its retry decisions and its API credentials."""

import pytest
import requests

from receiver.campaign import client as campaign
from receiver.campaign.client import CampaignClient, CampaignError, api_credentials
from receiver.config import ConfigError


def answer(status, method="POST"):
    """A requests.Response with `status`, as the session would return it."""
    response = requests.Response()
    response.status_code = status
    response.reason = "Reason"
    response.request = requests.Request(method, "https://x/rest/1/webhooks").prepare()
    return response


@pytest.fixture
def api():
    client = CampaignClient(77, ("user", "Api-Secret-1"), base_url="https://api.invalid/rest")
    yield client
    client.close()


@pytest.mark.parametrize(
    ("operation", "status", "expected"),
    [
        ("activate", 400, "webhook 5 is already activated (400)"),
        ("deactivate", 400, "webhook 5 is not activated (400), so it cannot be deactivated"),
        ("delete", 400, "webhook 5 is activated (400): deactivate it before deleting it"),
        ("verify", 400, "Campaign does not support verifying webhook 5 for its type (400)"),
        ("delete", 404, "webhook 5 does not exist (404)"),
        ("update", 409, "webhook 5 belongs to another client than 77 (409)"),
        ("activate", 401, "Campaign refused the API credentials (401)"),
    ],
)
def test_each_documented_status_has_its_message(api, operation, status, expected):
    assert api._message(operation, answer(status), 5).startswith(expected)


def test_create_refused_names_what_can_be_wrong(api):
    message = api._message("create", answer(400), None)
    assert "the target URL, the type or the format was wrong" in message


def test_an_undocumented_status_is_named(api):
    assert api._message("list", answer(418, "GET"), None) == "Campaign answered 418 Reason to list"
    assert "(after 3 retries)" in api._message("list", answer(503, "GET"), None)
    assert "retries" not in api._message("create", answer(503), None)


def retry_policy(client, idempotent):
    session = client._idempotent if idempotent else client._once
    return session.get_adapter("https://api.invalid/").max_retries


def test_5xx_is_retried_only_for_idempotent_methods(api):
    safe = retry_policy(api, idempotent=True)
    assert all(safe.is_retry(method, 503) for method in ("GET", "PUT", "DELETE"))
    assert not safe.is_retry("POST", 503)
    assert not safe.is_retry("GET", 400)
    once = retry_policy(api, idempotent=False)
    assert not once.is_retry("POST", 503) and not once.is_retry("GET", 503)
    assert once.read == 0 and once.connect == campaign.RETRIES  # nothing sent: safe to repeat


def test_no_answer_is_one_clear_error(api, monkeypatch):
    def refuse(*args, **kwargs):
        raise requests.ConnectionError("refused")

    monkeypatch.setattr(api._idempotent, "request", refuse)
    with pytest.raises(CampaignError) as raised:
        api.list_webhooks()
    assert str(raised.value).startswith("no answer from https://api.invalid/rest")
    assert raised.value.status is None


def test_the_api_credentials_come_from_the_environment_or_a_file(tmp_path):
    env = {"CAMPAIGN_API_USER": "u", "CAMPAIGN_API_PASSWORD": "p w"}
    assert api_credentials(env) == ("u", "p w")
    secrets = tmp_path / "api"
    secrets.write_text("user:pass:word\n")
    assert api_credentials({"CAMPAIGN_API_CREDENTIALS_FILE": str(secrets)}) == ("user", "pass:word")


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({}, "no Campaign API credentials"),
        ({"CAMPAIGN_API_USER": "u"}, "no Campaign API credentials"),
        ({"CAMPAIGN_API_USER": "u", "CAMPAIGN_API_CREDENTIALS_FILE": "/x"}, "not both"),
        ({"CAMPAIGN_API_CREDENTIALS_FILE": "/nonexistent/api"}, "cannot read /nonexistent/api"),
    ],
)
def test_missing_or_conflicting_api_credentials_are_a_config_error(env, words):
    with pytest.raises(ConfigError, match=words):
        api_credentials(env)


def test_a_malformed_credentials_file_is_refused_without_echoing_it(tmp_path):
    secrets = tmp_path / "api"
    secrets.write_text("no-colon-Secret\n")
    with pytest.raises(ConfigError) as raised:
        api_credentials({"CAMPAIGN_API_CREDENTIALS_FILE": str(secrets)})
    assert "no-colon-Secret" not in str(raised.value)
