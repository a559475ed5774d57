"""Closed by default: create_app refuses to start without credentials (receiver.config)."""

import pytest

from receiver import create_app
from receiver.config import Config, ConfigError, KeyAuth

# --- closed by default ---


def test_create_app_without_any_credential_refuses_to_start(database_url):
    with pytest.raises(ConfigError, match="no credentials configured"):
        create_app(Config(database_url=database_url))


def test_create_app_with_only_key_auth_starts(make_client):
    client = make_client(basic_auth=(), key_auth=(KeyAuth("X-Api-Key", "k1"),))

    assert client.application.config["RECEIVER"].key_auth == (KeyAuth("X-Api-Key", "k1"),)
