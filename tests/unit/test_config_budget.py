"""The request path's time budget: each timeout validated, and all checked against each other
and against the sender's ~10 s timeout at boot (receiver.config._time_budget)."""

import pytest

from receiver.config import ConfigError, load_config

URL = "postgresql://user@db.example/receiver"


def load(**settings):
    return load_config({"DATABASE_URL": URL, **settings})


def test_defaults_fit_the_senders_timeout_with_a_margin():
    config = load()
    total = config.body_timeout + config.pool_timeout + config.database_deadline_ms / 1000
    assert (config.database_deadline_ms, config.connect_timeout, config.body_timeout) == (
        5500,
        2,
        1.5,
    )
    assert total == 8.5


def test_a_budget_exactly_at_the_limit_is_accepted():
    config = load(RECEIVER_POOL_TIMEOUT="2.5")  # 1.5 + 2.5 + 5.5 = 9.5 s
    assert config.pool_timeout == 2.5


@pytest.mark.parametrize(
    "settings",
    [
        {"RECEIVER_POOL_TIMEOUT": "3"},
        {"RECEIVER_DATABASE_DEADLINE_MS": "7000"},
        {"RECEIVER_BODY_TIMEOUT": "3"},
        {
            "RECEIVER_POOL_TIMEOUT": "4",
            "RECEIVER_BODY_TIMEOUT": "0.5",
            "RECEIVER_STATEMENT_TIMEOUT_MS": "100",
        },
    ],
)
def test_timeouts_that_add_up_past_the_senders_timeout_are_a_config_error(settings):
    with pytest.raises(ConfigError, match="RECEIVER_POOL_TIMEOUT \\+ RECEIVER_DATABASE_DEADLINE"):
        load(**settings)


def test_the_deadline_must_leave_the_server_time_to_cancel_first():
    with pytest.raises(ConfigError, match="RECEIVER_DATABASE_DEADLINE_MS must be at least"):
        load(RECEIVER_STATEMENT_TIMEOUT_MS="5001")
    config = load(RECEIVER_STATEMENT_TIMEOUT_MS="3000", RECEIVER_DATABASE_DEADLINE_MS="3500")
    assert config.database_deadline_ms == 3500


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("RECEIVER_DATABASE_DEADLINE_MS", "199", "at least 200"),
        ("RECEIVER_DATABASE_DEADLINE_MS", "5.5", "whole number"),
        ("RECEIVER_CONNECT_TIMEOUT", "1", "at least 2"),
        ("RECEIVER_CONNECT_TIMEOUT", "2.5", "whole number"),
        ("RECEIVER_BODY_TIMEOUT", "0", "between 0.1 and 8.0"),
        ("RECEIVER_BODY_TIMEOUT", "nan", "between 0.1 and 8.0"),
        ("RECEIVER_BODY_TIMEOUT", "soon", "must be a number"),
    ],
)
def test_malformed_timeouts_are_config_errors_naming_the_variable(name, text, message):
    with pytest.raises(ConfigError) as caught:
        load(**{name: text})
    assert name in str(caught.value) and message in str(caught.value)
