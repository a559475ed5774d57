"""The command line's surface: every command and group described, a version, one error style."""

import pytest
from click.testing import CliRunner

from receiver import __version__
from receiver.cli import cli, main


def test_version():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"receiver, version {__version__}"


@pytest.mark.parametrize(
    "path",
    [
        [],
        ["serve"],
        ["migrate"],
        ["psql"],
        ["simulate"],
        ["quarantine"],
        ["quarantine", "list"],
        ["quarantine", "show"],
        ["quarantine", "replay"],
    ],
)
def test_every_command_has_a_description(path):
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0
    usage, _, rest = result.output.partition("\n\n")
    description = rest.split("\n\n")[0].strip()
    assert usage.startswith("Usage: ") and description and not description.startswith("Options")


def test_commands_that_need_a_database_say_how_to_get_one(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("RECEIVER_STATE_DIR", str(tmp_path))
    for argv in (["migrate"], ["quarantine", "list"], ["psql"]):
        assert main(argv) == 2
        error = capsys.readouterr().err
        assert error.startswith("receiver: configuration error: DATABASE_URL is not set")
        assert "receiver serve" in error


def test_an_unknown_command_is_a_usage_error(capsys):
    assert main(["frobnicate"]) == 2
    assert "No such command" in capsys.readouterr().err
