"""load_config: every setting parsed and validated at boot; secrets never in error messages.

That create_app refuses to start without credentials: tests/integration/test_config.py."""

import ipaddress

import pytest

from receiver.config import Config, ConfigError, KeyAuth, load_config

URL = "postgresql://user@db.example/receiver"


def load(**settings):
    """load_config on a fresh environment holding DATABASE_URL plus `settings`."""
    return load_config({"DATABASE_URL": URL, **settings})


def config_error(**settings) -> str:
    """The message of the ConfigError that load_config raises for `settings`."""
    with pytest.raises(ConfigError) as caught:
        load(**settings)
    return str(caught.value)


def nets(*texts):
    return tuple(ipaddress.ip_network(t) for t in texts)


# --- defaults and DATABASE_URL ---


def test_only_database_url_gives_the_documented_defaults():
    config = load()

    assert config == Config(database_url=URL)
    assert config.basic_auth == ()
    assert config.key_auth == ()
    assert config.allowed_networks == ()
    assert config.trusted_proxies == 0
    assert config.trusted_proxy_networks == nets("127.0.0.1/32", "::1/128")
    assert config.metrics_allowed_networks == nets("127.0.0.0/8", "::1/128")
    assert config.max_batch == 100
    assert config.max_body_bytes == 4 * 1024 * 1024
    assert (config.pool_min_size, config.pool_max_size) == (1, 4)
    assert config.pool_timeout == 1.5
    assert config.statement_timeout_ms == 5000
    assert config.retry_after_seconds == 10
    assert config.log_level == "INFO"
    assert not config.has_credentials


@pytest.mark.parametrize("environ", [{}, {"DATABASE_URL": ""}], ids=["unset", "empty"])
def test_missing_database_url_is_a_config_error(environ):
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        load_config(environ)


def test_without_argument_reads_the_process_environment(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", URL)
    monkeypatch.setenv("RECEIVER_MAX_BATCH", "7")

    config = load_config()

    assert (config.database_url, config.max_batch) == (URL, 7)


# --- RECEIVER_BASIC_AUTH ---


def test_basic_auth_takes_several_whitespace_separated_pairs():
    config = load(RECEIVER_BASIC_AUTH="  old:pw1 \n new:pw2\tthird:pw3 ")

    assert config.basic_auth == (("old", "pw1"), ("new", "pw2"), ("third", "pw3"))
    assert config.has_credentials


def test_basic_auth_password_may_contain_colons():
    config = load(RECEIVER_BASIC_AUTH="campaign:pa:ss:word:")

    assert config.basic_auth == (("campaign", "pa:ss:word:"),)


@pytest.mark.parametrize(
    ("entries", "secret"),
    [
        ("no-colon-topsecret", "no-colon-topsecret"),
        (":hunter2-secret", "hunter2-secret"),
        ("lonely-user-secret:", "lonely-user-secret"),
        ("good:pass1 bad-entry-secret", "bad-entry-secret"),
    ],
    ids=["no-colon", "no-user", "no-password", "one-bad-among-good"],
)
def test_malformed_basic_auth_entry_fails_without_echoing_the_secret(entries, secret):
    message = config_error(RECEIVER_BASIC_AUTH=entries)

    assert "RECEIVER_BASIC_AUTH" in message
    assert secret not in message
    assert "pass1" not in message


# --- RECEIVER_KEY_AUTH ---


def test_key_auth_takes_one_header_per_line_and_keeps_spaces_in_the_value():
    config = load(RECEIVER_KEY_AUTH="Authorization: Bearer abc def\nX-Api-Key: k1")

    assert config.key_auth == (
        KeyAuth("Authorization", "Bearer abc def"),
        KeyAuth("X-Api-Key", "k1"),
    )
    assert config.has_credentials


def test_key_auth_trims_blanks_skips_empty_lines_and_splits_at_the_first_colon():
    config = load(RECEIVER_KEY_AUTH="\r\n  X-Api-Key :  a:b c  \r\n\n   \nX-Other: v\r\n")

    assert config.key_auth == (KeyAuth("X-Api-Key", "a:b c"), KeyAuth("X-Other", "v"))


@pytest.mark.parametrize(
    "text",
    [
        "X-Api-Key secret-value",
        ": secret-value",
        "X-Api-Key:   ",
        "Api Key: secret-value",
        "X-Api(Key): secret-value",
        "X-Äpi-Key: secret-value",
        "X-Good: fine\nno colon secret-value",
    ],
    ids=["no-colon", "no-header", "no-value", "space-in-name", "bad-char", "non-ascii", "2nd"],
)
def test_malformed_key_auth_line_fails_without_echoing_the_value(text):
    message = config_error(RECEIVER_KEY_AUTH=text)

    assert "RECEIVER_KEY_AUTH" in message
    assert "secret-value" not in message


# --- RECEIVER_ALLOWED_IPS ---


def test_allowed_ips_take_cidrs_bare_addresses_and_ipv6_separated_by_commas_or_blanks():
    text = "193.169.180.1, 10.0.0.0/8,2001:db8::/32\n ::1\t192.0.2.0/24"

    config = load(RECEIVER_ALLOWED_IPS=text)

    assert config.allowed_networks == nets(
        "193.169.180.1/32", "10.0.0.0/8", "2001:db8::/32", "::1/128", "192.0.2.0/24"
    )


def test_allowed_ips_cidr_with_host_bits_set_becomes_its_network():
    assert load(RECEIVER_ALLOWED_IPS="10.1.2.3/8").allowed_networks == nets("10.0.0.0/8")


@pytest.mark.parametrize("text", ["", "  ", " , ,"])
def test_empty_allowed_ips_means_no_allow_list(text):
    assert load(RECEIVER_ALLOWED_IPS=text).allowed_networks == ()


@pytest.mark.parametrize("bad", ["10.0.0.300", "10.0.0.0/33", "example.com", "2001:db8::g"])
def test_invalid_allowed_ip_is_a_config_error_naming_the_entry(bad):
    message = config_error(RECEIVER_ALLOWED_IPS=f"193.169.180.1, {bad}")

    assert "RECEIVER_ALLOWED_IPS" in message
    assert bad in message


# --- RECEIVER_TRUSTED_PROXY_IPS and RECEIVER_METRICS_ALLOWED_IPS ---

NETWORK_SETTINGS = [
    ("RECEIVER_TRUSTED_PROXY_IPS", "trusted_proxy_networks"),
    ("RECEIVER_METRICS_ALLOWED_IPS", "metrics_allowed_networks"),
]


@pytest.mark.parametrize(("name", "field"), NETWORK_SETTINGS)
def test_network_settings_are_parsed_like_the_allow_list(name, field):
    config = load(**{name: "10.0.0.5, 192.168.0.0/16\n2001:db8::/32\t10.1.2.3/8"})

    assert getattr(config, field) == nets(
        "10.0.0.5/32", "192.168.0.0/16", "2001:db8::/32", "10.0.0.0/8"
    )


@pytest.mark.parametrize(("name", "field"), NETWORK_SETTINGS)
@pytest.mark.parametrize("bad", ["10.0.0.300", "localhost", "::1/129"])
def test_invalid_network_setting_is_a_config_error_naming_it_and_the_entry(name, field, bad):
    message = config_error(**{name: f"127.0.0.1 {bad}"})

    assert name in message
    assert bad in message


def test_empty_metrics_allow_list_allows_any_source():
    assert load(RECEIVER_METRICS_ALLOWED_IPS=" ").metrics_allowed_networks == ()


def test_trusted_proxies_without_any_proxy_address_is_a_config_error():
    message = config_error(RECEIVER_TRUSTED_PROXIES="1", RECEIVER_TRUSTED_PROXY_IPS="")

    assert "RECEIVER_TRUSTED_PROXIES" in message
    assert "RECEIVER_TRUSTED_PROXY_IPS" in message
    # Without proxies the list is not used, and may be empty.
    assert load(RECEIVER_TRUSTED_PROXY_IPS="").trusted_proxy_networks == ()


# --- numeric settings ---

INTEGERS = [
    ("RECEIVER_TRUSTED_PROXIES", "trusted_proxies", 0),
    ("RECEIVER_MAX_BATCH", "max_batch", 1),
    ("RECEIVER_MAX_BODY_BYTES", "max_body_bytes", 1024),
    ("RECEIVER_POOL_MIN_SIZE", "pool_min_size", 0),
    ("RECEIVER_POOL_MAX_SIZE", "pool_max_size", 1),
    ("RECEIVER_STATEMENT_TIMEOUT_MS", "statement_timeout_ms", 100),
    ("RECEIVER_RETRY_AFTER", "retry_after_seconds", 1),
]


def test_numeric_settings_are_parsed():
    config = load(
        RECEIVER_TRUSTED_PROXIES="2",
        RECEIVER_MAX_BATCH="50",
        RECEIVER_MAX_BODY_BYTES="2048",
        RECEIVER_POOL_MIN_SIZE="2",
        RECEIVER_POOL_MAX_SIZE="8",
        RECEIVER_POOL_TIMEOUT="2.5",
        RECEIVER_STATEMENT_TIMEOUT_MS="3000",
        RECEIVER_RETRY_AFTER="30",
    )

    assert config.trusted_proxies == 2
    assert config.max_batch == 50
    assert config.max_body_bytes == 2048
    assert (config.pool_min_size, config.pool_max_size) == (2, 8)
    assert config.pool_timeout == 2.5
    assert config.statement_timeout_ms == 3000
    assert config.retry_after_seconds == 30


@pytest.mark.parametrize(("name", "field", "minimum"), INTEGERS)
def test_integer_setting_accepts_its_minimum(name, field, minimum):
    assert getattr(load(**{name: str(minimum)}), field) == minimum


@pytest.mark.parametrize(("name", "field", "minimum"), INTEGERS)
def test_integer_setting_below_its_minimum_is_a_config_error(name, field, minimum):
    message = config_error(**{name: str(minimum - 1)})

    assert name in message
    assert f"at least {minimum}" in message


@pytest.mark.parametrize(("name", "field", "minimum"), INTEGERS)
@pytest.mark.parametrize("text", ["abc", "", "1.5", "0x10"])
def test_integer_setting_that_is_not_a_whole_number_is_a_config_error(name, field, minimum, text):
    message = config_error(**{name: text})

    assert name in message
    assert "whole number" in message


def test_pool_timeout_accepts_fractions_down_to_its_minimum():
    assert load(RECEIVER_POOL_TIMEOUT="0.1").pool_timeout == 0.1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("abc", "must be a number"),
        ("", "must be a number"),
        ("0.05", "between 0.1 and 8.0"),
        ("-1", "between 0.1 and 8.0"),
        ("nan", "between 0.1 and 8.0"),
    ],
)
def test_invalid_pool_timeout_is_a_config_error(text, expected):
    message = config_error(RECEIVER_POOL_TIMEOUT=text)

    assert "RECEIVER_POOL_TIMEOUT" in message
    assert expected in message


def test_pool_min_size_above_max_size_is_a_config_error():
    message = config_error(RECEIVER_POOL_MIN_SIZE="5", RECEIVER_POOL_MAX_SIZE="4")

    assert "RECEIVER_POOL_MIN_SIZE" in message
    assert "RECEIVER_POOL_MAX_SIZE" in message


def test_pool_min_size_equal_to_max_size_is_accepted():
    config = load(RECEIVER_POOL_MIN_SIZE="3", RECEIVER_POOL_MAX_SIZE="3")

    assert (config.pool_min_size, config.pool_max_size) == (3, 3)


# --- LOG_LEVEL ---


@pytest.mark.parametrize(
    ("text", "level"),
    [
        ("DEBUG", "DEBUG"),
        ("info", "INFO"),
        (" Warning ", "WARNING"),
        ("error", "ERROR"),
        ("CRITICAL", "CRITICAL"),
    ],
)
def test_log_level_is_normalised_to_upper_case(text, level):
    assert load(LOG_LEVEL=text).log_level == level


@pytest.mark.parametrize("text", ["VERBOSE", "", "WARN", "10"])
def test_unknown_log_level_is_a_config_error(text):
    assert "LOG_LEVEL" in config_error(LOG_LEVEL=text)


@pytest.mark.parametrize("value", ["inf", "Infinity", "1e999", "9"])
def test_pool_timeout_must_stay_below_the_senders_timeout(value):
    with pytest.raises(ConfigError, match="RECEIVER_POOL_TIMEOUT"):
        load(RECEIVER_POOL_TIMEOUT=value)


# --- the change feed: RECEIVER_FEED_BASIC_AUTH(_FILE), RECEIVER_FEED_MAX_REQUESTS, _WAITING ---


def test_the_feed_is_off_and_may_hold_two_requests_long_polls_included_by_default():
    config = load()

    assert config.feed_basic_auth == ()
    assert not config.feed_enabled
    assert config.feed_max_requests == 2
    assert config.feed_max_waiting == 2


def test_feed_pairs_turn_the_feed_on_but_are_no_campaign_credential():
    config = load(RECEIVER_FEED_BASIC_AUTH="crm:pw1 warehouse:p:w:2")

    assert config.feed_basic_auth == (("crm", "pw1"), ("warehouse", "p:w:2"))
    assert config.feed_enabled
    assert not config.has_credentials  # Campaign's are still missing: the receiver refuses


def test_feed_pairs_from_a_file_keep_blanks_and_colons(tmp_path):
    secrets = tmp_path / "feed-auth"
    secrets.write_text("crm:pass with spaces:and colons\n\nother:x\n", encoding="utf-8")

    config = load(RECEIVER_FEED_BASIC_AUTH_FILE=str(secrets))

    assert config.feed_basic_auth == (("crm", "pass with spaces:and colons"), ("other", "x"))


def test_feed_pairs_and_their_file_together_are_a_config_error(tmp_path):
    secrets = tmp_path / "feed-auth"
    secrets.write_text("crm:pw\n", encoding="utf-8")

    message = config_error(
        RECEIVER_FEED_BASIC_AUTH="crm:pw", RECEIVER_FEED_BASIC_AUTH_FILE=str(secrets)
    )

    assert message == "set RECEIVER_FEED_BASIC_AUTH or RECEIVER_FEED_BASIC_AUTH_FILE, not both"


@pytest.mark.parametrize("text", ["crm", "crm:", ":secretpw", "crm secretpw"])
def test_a_malformed_feed_pair_names_the_variable_never_the_secret(text):
    message = config_error(RECEIVER_FEED_BASIC_AUTH=text)

    assert message.startswith("RECEIVER_FEED_BASIC_AUTH: ")
    assert "secretpw" not in message


def test_a_pair_that_is_also_campaigns_cannot_read_the_feed():
    message = config_error(
        RECEIVER_BASIC_AUTH="campaign:shared-secret",
        RECEIVER_FEED_BASIC_AUTH="campaign:shared-secret",
    )

    assert message.startswith("RECEIVER_FEED_BASIC_AUTH: ")
    assert "shared-secret" not in message
    # The same user with another password is another pair.
    config = load(RECEIVER_BASIC_AUTH="campaign:one", RECEIVER_FEED_BASIC_AUTH="campaign:two")
    assert config.basic_auth != config.feed_basic_auth


@pytest.mark.parametrize(
    ("value", "threads", "expected"), [("0", None, 0), ("3", None, 3), ("7", "8", 7)]
)
def test_max_waiting_may_take_all_threads_but_one(value, threads, expected):
    environ = {"RECEIVER_FEED_MAX_WAITING": value}
    if threads:
        environ["RECEIVER_THREADS"] = threads

    assert load(**environ).feed_max_waiting == expected


@pytest.mark.parametrize(("value", "threads"), [("4", None), ("2", "2"), ("9", "8")])
def test_max_waiting_at_or_above_the_threads_is_a_config_error(value, threads):
    environ = {"RECEIVER_FEED_MAX_WAITING": value}
    if threads:
        environ["RECEIVER_THREADS"] = threads

    message = config_error(**environ)

    assert message.startswith("RECEIVER_FEED_MAX_WAITING must be less than the worker's threads")


@pytest.mark.parametrize("value", ["-1", "two", "1.5", ""])
def test_max_waiting_must_be_a_whole_number_of_at_least_0(value):
    assert "RECEIVER_FEED_MAX_WAITING" in config_error(RECEIVER_FEED_MAX_WAITING=value)


@pytest.mark.parametrize(
    ("value", "threads", "expected"), [("1", None, 1), ("3", None, 3), ("7", "8", 7)]
)
def test_max_requests_may_take_all_threads_but_one(value, threads, expected):
    environ = {"RECEIVER_FEED_MAX_REQUESTS": value}
    if threads:
        environ["RECEIVER_THREADS"] = threads

    assert load(**environ).feed_max_requests == expected


@pytest.mark.parametrize(("value", "threads"), [("4", None), ("3", "3"), ("9", "8")])
def test_max_requests_at_or_above_the_threads_is_a_config_error(value, threads):
    environ = {"RECEIVER_FEED_MAX_REQUESTS": value}
    if threads:
        environ["RECEIVER_THREADS"] = threads

    message = config_error(**environ)

    assert message.startswith("RECEIVER_FEED_MAX_REQUESTS must be less than the worker's threads")


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5", ""])
def test_max_requests_must_be_a_whole_number_of_at_least_1(value):
    assert "RECEIVER_FEED_MAX_REQUESTS" in config_error(RECEIVER_FEED_MAX_REQUESTS=value)
