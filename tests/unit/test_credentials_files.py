"""RECEIVER_BASIC_AUTH_FILE and RECEIVER_KEY_AUTH_FILE: credentials as secrets stores give them."""

import pytest

from receiver.config import ConfigError, KeyAuth, load_config

URL = {"DATABASE_URL": "postgresql:///receiver"}


def write(tmp_path, text, name="secret"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_basic_auth_file_takes_one_pair_per_line_with_any_character_in_the_password(tmp_path):
    path = write(tmp_path, "campaign:pass word: with colons \nold:x y\n\n")
    config = load_config({**URL, "RECEIVER_BASIC_AUTH_FILE": path})
    assert config.basic_auth == (("campaign", "pass word: with colons "), ("old", "x y"))


def test_basic_auth_file_accepts_windows_line_ends_and_no_final_newline(tmp_path):
    path = write(tmp_path, "a:one\r\nb:two")
    assert load_config({**URL, "RECEIVER_BASIC_AUTH_FILE": path}).basic_auth == (
        ("a", "one"),
        ("b", "two"),
    )


def test_key_auth_file_takes_one_header_per_line(tmp_path):
    path = write(tmp_path, "Authorization: Bearer a b\nX-Api-Key: k:1\n")
    config = load_config({**URL, "RECEIVER_KEY_AUTH_FILE": path})
    assert config.key_auth == (KeyAuth("Authorization", "Bearer a b"), KeyAuth("X-Api-Key", "k:1"))


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("RECEIVER_BASIC_AUTH_FILE", "no-colon-s3cret\n"),
        ("RECEIVER_BASIC_AUTH_FILE", "user:\n"),
        ("RECEIVER_BASIC_AUTH_FILE", ":s3cret\n"),
        ("RECEIVER_BASIC_AUTH_FILE", " user:s3cret\n"),
        ("RECEIVER_KEY_AUTH_FILE", "Bad Header: s3cret\n"),
        ("RECEIVER_KEY_AUTH_FILE", "X-Key:\n"),
    ],
)
def test_a_malformed_line_is_an_error_naming_the_variable_never_the_secret(tmp_path, name, text):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as raised:
        load_config({**URL, name: path})
    assert name in str(raised.value)
    assert "s3cret" not in str(raised.value)


def test_an_unreadable_file_is_an_error_naming_the_variable_and_the_path(tmp_path):
    missing = str(tmp_path / "nope")
    with pytest.raises(ConfigError, match=r"RECEIVER_BASIC_AUTH_FILE: cannot read .*nope"):
        load_config({**URL, "RECEIVER_BASIC_AUTH_FILE": missing})


def test_a_file_that_is_not_utf8_is_an_error(tmp_path):
    path = tmp_path / "binary"
    path.write_bytes(b"user:\xff\xfe\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config({**URL, "RECEIVER_KEY_AUTH_FILE": str(path)})


@pytest.mark.parametrize("name", ["RECEIVER_BASIC_AUTH", "RECEIVER_KEY_AUTH"])
def test_the_variable_and_its_file_together_are_an_error(tmp_path, name):
    value = "u:p" if name == "RECEIVER_BASIC_AUTH" else "X-Key: v"
    path = write(tmp_path, value + "\n")
    with pytest.raises(ConfigError, match=f"set {name} or {name}_FILE, not both"):
        load_config({**URL, name: value, f"{name}_FILE": path})


def test_an_empty_file_configures_no_credentials(tmp_path):
    path = write(tmp_path, "\n\n")
    assert not load_config({**URL, "RECEIVER_BASIC_AUTH_FILE": path}).has_credentials
