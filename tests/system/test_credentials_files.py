"""RECEIVER_*_FILE end to end: gunicorn reads the files at boot, Campaign's headers get in."""

import base64

import pytest
import requests

from support import Gunicorn

pytestmark = pytest.mark.slow

PASSWORD = "pass word: with colons and spaces "  # Campaign accepts any password
BATCH = b'[{"type":"sent","clientId":1,"created":1564590054000,"id":"file-creds-1"}]'


def basic(user, password):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
def receiver(database_url, tmp_path):
    basic_file = tmp_path / "basic-auth"
    basic_file.write_text(f"campaign:{PASSWORD}\nrotated:old pass\n")
    key_file = tmp_path / "key-auth"
    key_file.write_text("X-Api-Key: key with: colon\nAuthorization: Bearer two words\n")
    env = {
        "DATABASE_URL": database_url,
        "RECEIVER_BASIC_AUTH": "",
        "RECEIVER_BASIC_AUTH_FILE": str(basic_file),
        "RECEIVER_KEY_AUTH_FILE": str(key_file),
    }
    server = Gunicorn(env, workers=1)
    yield server
    server.stop()


@pytest.mark.parametrize(
    "headers",
    [
        basic("campaign", PASSWORD),
        basic("rotated", "old pass"),
        {"X-Api-Key": "key with: colon"},
        {"Authorization": "Bearer two words"},
    ],
    ids=["basic-with-spaces-and-colons", "second-basic-line", "key-header", "bearer"],
)
def test_each_credential_from_the_files_is_accepted(receiver, query, headers):
    answer = requests.post(receiver.url + "/webhook", data=BATCH, headers=headers, timeout=10)
    assert answer.status_code == 200, answer.text
    assert query("SELECT event_key FROM events") == [("file-creds-1",)]


@pytest.mark.parametrize(
    "headers",
    [
        basic("campaign", PASSWORD.strip()),  # the trailing blank is part of the password
        basic("campaign", "pass word"),
        {"X-Api-Key": "key with"},
        {},
    ],
)
def test_anything_else_is_refused(receiver, query, headers):
    answer = requests.post(receiver.url + "/webhook", data=BATCH, headers=headers, timeout=10)
    assert answer.status_code == 401
    assert query("SELECT count(*) FROM events") == [(0,)]
