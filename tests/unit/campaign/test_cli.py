"""`receiver campaign …` on the command line: described, and configuration errors as exit 2."""

import pytest
from click.testing import CliRunner

from receiver.cli import cli, main

COMMANDS = [
    ["campaign"], ["campaign", "setup"], ["campaign", "status"], ["campaign", "teardown"],
    ["campaign", "webhooks"], *(["campaign", "webhooks", name] for name in (
        "list", "create", "update", "verify", "activate", "deactivate", "delete")),
]  # fmt: skip


@pytest.mark.parametrize("path", COMMANDS)
def test_every_campaign_command_has_a_description(path):
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0
    description = result.output.partition("\n\n")[2].split("\n\n")[0].strip()
    assert description and not description.startswith("Options")


def test_setups_help_says_which_credentials_and_which_webhooks():
    text = " ".join(CliRunner().invoke(cli, ["campaign", "setup", "--help"]).output.split())
    assert "the first pair of RECEIVER_BASIC_AUTH" in text
    assert "target URL is exactly --url" in text
    assert "--mailing-id" in text and "CAMPAIGN_API_USER" in text


def test_missing_api_credentials_are_a_configuration_error(monkeypatch, capsys):
    for name in ("CAMPAIGN_API_USER", "CAMPAIGN_API_PASSWORD", "CAMPAIGN_API_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    assert main(["campaign", "webhooks", "list", "--client-id", "1"]) == 2
    assert "no Campaign API credentials" in capsys.readouterr().err


def test_a_url_that_is_no_url_is_a_usage_error(monkeypatch, capsys):
    monkeypatch.setenv("CAMPAIGN_API_USER", "u")
    monkeypatch.setenv("CAMPAIGN_API_PASSWORD", "p")
    assert main(["campaign", "teardown", "--client-id", "1", "--url", "example.com/x"]) == 2
    assert "not an http(s) URL" in capsys.readouterr().err
