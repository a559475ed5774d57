"""RECEIVER_DATABASE_POOLER and RECEIVER_METRICS_CLIENT_IDS: parsed and validated at boot."""

import pytest

from receiver.config import ConfigError, load_config

URL = "postgresql://user@db.example/receiver"


def load(**settings):
    return load_config({"DATABASE_URL": URL, **settings})


def test_no_pooler_by_default_and_session_mode_is_the_same():
    assert load().database_pooler == ""
    assert load(RECEIVER_DATABASE_POOLER="session").database_pooler == ""


def test_transaction_pooler_is_recognised_whatever_its_case_and_blanks():
    assert load(RECEIVER_DATABASE_POOLER=" Transaction ").database_pooler == "transaction"


def test_an_unknown_pooler_mode_stops_the_boot():
    with pytest.raises(ConfigError, match="RECEIVER_DATABASE_POOLER"):
        load(RECEIVER_DATABASE_POOLER="statement")


def test_metrics_client_ids_are_whole_numbers_separated_by_commas_or_blanks():
    config = load(RECEIVER_METRICS_CLIENT_IDS="123456789001, 42\n7 42")
    assert config.metrics_client_ids == frozenset({123456789001, 42, 7})
    assert load().metrics_client_ids == frozenset()


@pytest.mark.parametrize("bad", ["12a", "-5", "1.5", "9223372036854775808", "١٢"])
def test_a_metrics_client_id_that_is_no_client_id_stops_the_boot(bad):
    with pytest.raises(ConfigError, match="RECEIVER_METRICS_CLIENT_IDS") as caught:
        load(RECEIVER_METRICS_CLIENT_IDS=f"42 {bad}")
    assert repr(bad) in str(caught.value)


def test_the_workers_upkeep_connects_to_database_url_unless_told_otherwise():
    direct = "postgresql://user@db.example:5432/receiver"
    assert load().upkeep_database_url == URL
    assert load(RECEIVER_MAINTENANCE_DATABASE_URL=direct).upkeep_database_url == direct
    pooled = load(RECEIVER_DATABASE_POOLER="transaction", RECEIVER_MAINTENANCE_DATABASE_URL=direct)
    assert pooled.upkeep_database_url == direct


def test_behind_a_transaction_pooler_the_upkeep_needs_its_own_url_or_is_off(caplog):
    from receiver.maintenance import background

    pooled = load(RECEIVER_DATABASE_POOLER="transaction")
    assert pooled.upkeep_database_url is None
    assert background.start(pooled) is None  # no thread, no session lock through the pool
    assert "RECEIVER_MAINTENANCE_DATABASE_URL" in caplog.text


def test_the_database_urls_may_come_from_secret_files(tmp_path):
    """A mounted secret: read by the receiver itself, one line, LF or CRLF; never both."""
    secret = tmp_path / "database-url"
    secret.write_bytes(b"postgresql://u:p%40ss@db/receiver\r\n")
    config = load_config({"DATABASE_URL_FILE": str(secret)})
    assert config.database_url == "postgresql://u:p%40ss@db/receiver"
    direct = tmp_path / "direct"
    direct.write_text("postgresql://owner@db:5432/receiver\n")
    with_direct = load(RECEIVER_MAINTENANCE_DATABASE_URL_FILE=str(direct))
    assert with_direct.upkeep_database_url == "postgresql://owner@db:5432/receiver"
    with pytest.raises(ConfigError, match="DATABASE_URL or DATABASE_URL_FILE, not both"):
        load(DATABASE_URL_FILE=str(secret))
    secret.write_text("\n")
    with pytest.raises(ConfigError, match="expected the URL on one line"):
        load_config({"DATABASE_URL_FILE": str(secret)})
    with pytest.raises(ConfigError, match="cannot read"):
        load_config({"DATABASE_URL_FILE": str(tmp_path / "missing")})
