"""Who may post to /webhook: Basic Auth, keyAuth and the source allow-list, over HTTP.

client_address itself, without an app: tests/unit/web/test_auth.py."""

import base64
import ipaddress

import pytest

from receiver.config import KeyAuth

from support import PASSWORD, USER, basic, body, event, post

CAMPAIGN = "193.169.180.1"


def attempt(client, headers=None, remote_addr=None):
    """POST a valid one-event batch to /webhook with exactly `headers` (none: no credentials),
    from `remote_addr` (default: the test client's loopback peer)."""
    environ = {"REMOTE_ADDR": remote_addr} if remote_addr else {}
    return post(
        client,
        body(event()),
        headers or {},
        content_type="application/json",
        environ_base=environ,
    )


def stored(query) -> int:
    return query("select count(*) from events")[0][0]


def assert_refused(response, query, status=401):
    assert response.status_code == status
    assert stored(query) == 0


def raw_basic(token: str) -> dict:
    return {"Authorization": f"Basic {token}"}


def nets(*texts):
    return tuple(ipaddress.ip_network(t) for t in texts)


# --- Basic Auth ---


def test_correct_basic_credentials_store_the_event(client, query):
    response = attempt(client, basic())

    assert response.status_code == 200
    assert response.get_json()["stored"] == 1
    assert stored(query) == 1


def test_basic_scheme_name_is_case_insensitive(client, query):
    token = basic()["Authorization"].split(" ", 1)[1]

    assert attempt(client, {"Authorization": f"bAsIc {token}"}).status_code == 200
    assert stored(query) == 1


def test_no_credentials_get_401_with_a_basic_challenge(client, query):
    response = attempt(client)

    assert_refused(response, query)
    assert response.headers["WWW-Authenticate"].startswith("Basic")


def test_wrong_user_is_refused(client, query):
    response = attempt(client, basic(user="intruder"))

    assert_refused(response, query)
    assert response.headers["WWW-Authenticate"].startswith("Basic")


def test_wrong_password_is_refused(client, query):
    assert_refused(attempt(client, basic(password="guess")), query)


def test_password_prefix_or_extension_is_refused(client, query):
    assert_refused(attempt(client, basic(password=PASSWORD[:-1])), query)
    assert_refused(attempt(client, basic(password=PASSWORD + "x")), query)


@pytest.mark.parametrize(
    "token", ["not base64!", "Y2FtcGFpZ24", "%%%", ""], ids=["junk", "bad-padding", "pct", "empty"]
)
def test_malformed_base64_is_refused(client, query, token):
    assert_refused(attempt(client, raw_basic(token)), query)


def test_basic_credentials_without_colon_are_refused(client, query):
    token = base64.b64encode(f"{USER}{PASSWORD}".encode()).decode()

    assert_refused(attempt(client, raw_basic(token)), query)


@pytest.mark.parametrize("scheme", ["Bearer", "Digest", "Token"])
def test_other_authorization_scheme_is_refused(client, query, scheme):
    token = basic()["Authorization"].split(" ", 1)[1]

    response = attempt(client, {"Authorization": f"{scheme} {token}"})

    assert_refused(response, query)
    assert response.headers["WWW-Authenticate"].startswith("Basic")


def test_during_rotation_both_old_and_new_pairs_are_accepted(make_client, query):
    client = make_client(basic_auth=(("campaign", "old-pass"), ("campaign", "new-pass")))

    assert attempt(client, basic("campaign", "old-pass")).status_code == 200
    assert attempt(client, basic("campaign", "new-pass")).status_code == 200
    assert stored(query) == 1  # the same event twice: stored once


def test_after_rotation_the_removed_pair_is_refused(make_client, query):
    client = make_client(basic_auth=(("campaign", "new-pass"),))

    assert_refused(attempt(client, basic("campaign", "old-pass")), query)
    assert attempt(client, basic("campaign", "new-pass")).status_code == 200


def test_a_user_cannot_borrow_another_users_password(make_client, query):
    client = make_client(basic_auth=(("alice", "pw-a"), ("bob", "pw-b")))

    assert_refused(attempt(client, basic("alice", "pw-b")), query)
    assert_refused(attempt(client, basic("bob", "pw-a")), query)


def test_password_with_colons_is_accepted(make_client, query):
    client = make_client(basic_auth=(("campaign", "a:b:c"),))

    assert attempt(client, basic("campaign", "a:b:c")).status_code == 200
    assert stored(query) == 1


# --- keyAuth ---


@pytest.fixture
def bearer_client(make_client):
    return make_client(basic_auth=(), key_auth=(KeyAuth("Authorization", "Bearer tok"),))


@pytest.fixture
def api_key_client(make_client):
    return make_client(basic_auth=(), key_auth=(KeyAuth("X-Api-Key", "k1"),))


def test_key_auth_accepts_the_exact_authorization_value(bearer_client, query):
    assert attempt(bearer_client, {"Authorization": "Bearer tok"}).status_code == 200
    assert stored(query) == 1


@pytest.mark.parametrize("value", ["Bearer other", "Bearer tok2", "Bearer  tok", "bearer tok", ""])
def test_key_auth_refuses_any_other_authorization_value(bearer_client, query, value):
    assert_refused(attempt(bearer_client, {"Authorization": value}), query)


def test_key_auth_without_the_header_is_refused(bearer_client, query):
    assert_refused(attempt(bearer_client), query)


def test_key_auth_accepts_a_custom_header(api_key_client, query):
    assert attempt(api_key_client, {"X-Api-Key": "k1"}).status_code == 200
    assert stored(query) == 1


@pytest.mark.parametrize("name", ["x-api-key", "X-API-KEY"])
def test_key_auth_header_name_is_case_insensitive(api_key_client, query, name):
    assert attempt(api_key_client, {name: "k1"}).status_code == 200
    assert stored(query) == 1


@pytest.mark.parametrize("value", ["k2", "K1", "k1k1", "k"])
def test_key_auth_refuses_a_wrong_custom_header_value(api_key_client, query, value):
    assert_refused(attempt(api_key_client, {"X-Api-Key": value}), query)


def test_key_rotation_accepts_old_and_new_value_then_refuses_the_removed_one(make_client, query):
    both = (KeyAuth("X-Api-Key", "old"), KeyAuth("X-Api-Key", "new"))
    during = make_client(basic_auth=(), key_auth=both)
    after = make_client(basic_auth=(), key_auth=both[1:])

    assert_refused(attempt(after, {"X-Api-Key": "old"}), query)
    assert attempt(during, {"X-Api-Key": "old"}).status_code == 200
    assert attempt(during, {"X-Api-Key": "new"}).status_code == 200
    assert attempt(after, {"X-Api-Key": "new"}).status_code == 200


def test_key_auth_value_in_another_header_is_refused(api_key_client, query):
    assert_refused(attempt(api_key_client, {"X-Other-Key": "k1"}), query)


def test_basic_credentials_are_refused_when_only_key_auth_is_configured(api_key_client, query):
    assert_refused(attempt(api_key_client, basic()), query)


@pytest.fixture
def both_client(make_client):
    return make_client(key_auth=(KeyAuth("X-Api-Key", "k1"),))


def test_with_basic_and_key_auth_configured_basic_alone_works(both_client, query):
    assert attempt(both_client, basic()).status_code == 200
    assert stored(query) == 1


def test_with_basic_and_key_auth_configured_key_alone_works(both_client, query):
    assert attempt(both_client, {"X-Api-Key": "k1"}).status_code == 200
    assert stored(query) == 1


def test_with_basic_and_key_auth_configured_a_good_key_survives_a_bad_basic(both_client, query):
    assert attempt(both_client, {"X-Api-Key": "k1", **raw_basic("!!")}).status_code == 200
    assert attempt(both_client, {"X-Api-Key": "k1", **basic(password="x")}).status_code == 200


def test_with_basic_and_key_auth_configured_both_wrong_is_refused(both_client, query):
    assert_refused(attempt(both_client, {"X-Api-Key": "k2", **basic(password="x")}), query)


def test_bearer_key_and_basic_share_the_authorization_header(make_client, query):
    client = make_client(key_auth=(KeyAuth("Authorization", "Bearer tok"),))

    assert attempt(client, {"Authorization": "Bearer other"}).status_code == 401
    assert stored(query) == 0
    assert attempt(client, {"Authorization": "Bearer tok"}).status_code == 200
    assert attempt(client, basic()).status_code == 200
    assert stored(query) == 1  # the same event twice: stored once


# --- source allow-list, direct connections (trusted_proxies=0) ---


@pytest.fixture
def listed_client(make_client):
    return make_client(allowed_networks=nets(f"{CAMPAIGN}/32", "10.0.0.0/8", "2001:db8::/32"))


def test_default_loopback_peer_off_the_list_gets_403(listed_client, query):
    assert_refused(attempt(listed_client, basic()), query, status=403)


@pytest.mark.parametrize("address", [CAMPAIGN, "10.1.2.3", "2001:db8::7"])
def test_listed_source_with_credentials_is_accepted(listed_client, query, address):
    assert attempt(listed_client, basic(), remote_addr=address).status_code == 200
    assert stored(query) == 1


@pytest.mark.parametrize("address", ["193.169.180.2", "11.0.0.1", "2001:db9::1", "::1"])
def test_unlisted_source_gets_403_even_with_valid_credentials(listed_client, query, address):
    response = attempt(listed_client, basic(), remote_addr=address)

    assert_refused(response, query, status=403)
    assert "WWW-Authenticate" not in response.headers


def test_unlisted_source_without_credentials_gets_403_not_401(listed_client, query):
    assert_refused(attempt(listed_client, remote_addr="203.0.113.9"), query, status=403)


def test_listed_source_still_needs_credentials(listed_client, query):
    response = attempt(listed_client, basic(password="nope"), remote_addr=CAMPAIGN)

    assert_refused(response, query, status=401)


def test_forwarded_header_is_ignored_without_trusted_proxies(listed_client, query):
    headers = {**basic(), "X-Forwarded-For": CAMPAIGN}

    assert_refused(attempt(listed_client, headers, remote_addr="203.0.113.9"), query, status=403)


# --- source allow-list behind proxies ---


def campaign_only(make_client, count, proxies=None):
    """Only Campaign allowed, behind `count` proxies whose own addresses are `proxies` (default:
    the test client's loopback peer, 127.0.0.1, as the configuration's default)."""
    changes = {} if proxies is None else {"trusted_proxy_networks": proxies}
    return make_client(allowed_networks=nets(f"{CAMPAIGN}/32"), trusted_proxies=count, **changes)


def via_proxy(forwarded_for):
    return {**basic(), "X-Forwarded-For": forwarded_for}


def test_one_proxy_uses_the_rightmost_forwarded_entry(make_client, query):
    client = campaign_only(make_client, 1)

    assert attempt(client, via_proxy(f"10.9.9.9, {CAMPAIGN}")).status_code == 200
    assert stored(query) == 1


def test_one_proxy_ignores_a_spoofed_left_entry(make_client, query):
    client = campaign_only(make_client, 1)

    assert_refused(attempt(client, via_proxy(f"{CAMPAIGN}, 10.9.9.9")), query, status=403)


def test_one_proxy_ignores_the_socket_peer_when_it_is_the_proxy(make_client, query):
    client = campaign_only(make_client, 1, proxies=nets(f"{CAMPAIGN}/32"))

    response = attempt(client, via_proxy("10.9.9.9"), remote_addr=CAMPAIGN)

    assert_refused(response, query, status=403)


def test_forwarded_header_from_a_peer_that_is_not_the_proxy_is_ignored(make_client, query):
    """A client reaching gunicorn around the proxy cannot claim Campaign's address."""
    client = campaign_only(make_client, 1)

    for peer in ("127.0.0.5", "203.0.113.9", "::2", "::ffff:10.0.0.1"):
        response = attempt(client, via_proxy(CAMPAIGN), remote_addr=peer)
        assert_refused(response, query, status=403)
        assert "WWW-Authenticate" not in response.headers
    # The same header from the proxy's address (the test client's default 127.0.0.1) is read.
    assert attempt(client, via_proxy(CAMPAIGN)).status_code == 200
    assert stored(query) == 1


def test_a_peer_that_is_not_the_proxy_is_judged_by_its_own_address(make_client, query):
    client = campaign_only(make_client, 1)

    response = attempt(client, via_proxy("10.9.9.9"), remote_addr=CAMPAIGN)

    assert response.status_code == 200
    assert stored(query) == 1


def test_an_ipv4_mapped_proxy_peer_is_the_proxy(make_client, query):
    client = campaign_only(make_client, 1)

    response = attempt(client, via_proxy(CAMPAIGN), remote_addr="::ffff:127.0.0.1")

    assert response.status_code == 200


def test_one_proxy_without_forwarded_header_is_refused(make_client, query):
    client = campaign_only(make_client, 1, proxies=nets(f"{CAMPAIGN}/32"))

    assert_refused(attempt(client, basic(), remote_addr=CAMPAIGN), query, status=403)
    assert_refused(attempt(campaign_only(make_client, 1), basic()), query, status=403)


@pytest.mark.parametrize("value", ["", " , ", "not-an-ip", f"{CAMPAIGN}:443"])
def test_one_proxy_with_unusable_forwarded_entry_is_refused(make_client, query, value):
    client = campaign_only(make_client, 1)

    assert_refused(attempt(client, via_proxy(value)), query, status=403)


# A load balancer at 10.0.0.5 in front of nginx on this host.
BALANCED = nets("127.0.0.1/32", "10.0.0.5/32")


def test_two_proxies_use_the_second_entry_from_the_right(make_client, query):
    client = campaign_only(make_client, 2, BALANCED)

    assert_refused(attempt(client, via_proxy(f"{CAMPAIGN}, 1.1.1.1, 10.0.0.5")), query, status=403)
    assert_refused(attempt(client, via_proxy(f"1.1.1.1, 10.0.0.5, {CAMPAIGN}")), query, status=403)
    assert attempt(client, via_proxy(f"1.1.1.1, {CAMPAIGN}, 10.0.0.5")).status_code == 200
    assert stored(query) == 1


def test_two_proxies_the_last_hop_must_be_the_further_proxy(make_client, query):
    """A client that reaches nginx around the balancer writes the hop nginx reads past."""
    client = campaign_only(make_client, 2, BALANCED)

    assert_refused(attempt(client, via_proxy(f"{CAMPAIGN}, 10.0.0.6")), query, status=403)
    assert_refused(attempt(client, via_proxy(f"{CAMPAIGN}, garbage")), query, status=403)
    # Without the balancer among the trusted addresses its hop proves nothing.
    unknown_balancer = campaign_only(make_client, 2)
    assert_refused(attempt(unknown_balancer, via_proxy(f"{CAMPAIGN}, 10.0.0.5")), query, 403)


def test_two_proxies_with_a_single_forwarded_entry_is_refused(make_client, query):
    client = campaign_only(make_client, 2, BALANCED)

    assert_refused(attempt(client, via_proxy(CAMPAIGN)), query, status=403)


# --- non-ASCII secrets: compared as the bytes that were sent ---

PASSPHRASE = "pässwörd€"


def as_sent(value: str, encoding="utf-8") -> str:
    """A header value as gunicorn hands it to the app: the client's bytes read as Latin-1."""
    return value.encode(encoding).decode("latin-1")


def test_non_ascii_key_auth_passphrase_sent_as_utf8_is_accepted(make_client, query):
    client = make_client(basic_auth=(), key_auth=(KeyAuth("X-Api-Key", PASSPHRASE),))

    assert attempt(client, {"X-Api-Key": as_sent(PASSPHRASE)}).status_code == 200
    assert stored(query) == 1
    assert attempt(client, {"X-Api-Key": as_sent("pässwörd€x")}).status_code == 401


def test_latin1_key_auth_passphrase_is_accepted_in_utf8_and_latin1(make_client, query):
    client = make_client(basic_auth=(), key_auth=(KeyAuth("X-Api-Key", "grüße"),))

    assert attempt(client, {"X-Api-Key": as_sent("grüße")}).status_code == 200
    assert attempt(client, {"X-Api-Key": as_sent("grüße", "latin-1")}).status_code == 200
    assert attempt(client, {"X-Api-Key": as_sent("grüsse")}).status_code == 401


@pytest.mark.parametrize("encoding", ["utf-8", "latin-1"])
def test_non_ascii_basic_credentials_are_accepted_in_utf8_and_latin1(make_client, query, encoding):
    client = make_client(basic_auth=(("jürgen", "grüße"),))
    token = base64.b64encode("jürgen:grüße".encode(encoding)).decode()

    assert attempt(client, raw_basic(token)).status_code == 200
    assert stored(query) == 1


# --- /metrics: only this host and private networks by default ---


def scrape(client, remote_addr=None, headers=None):
    environ = {"REMOTE_ADDR": remote_addr} if remote_addr else {}
    return client.get("/metrics", headers=headers or {}, environ_base=environ)


def assert_metrics_refused(response):
    assert response.status_code == 403
    assert response.get_json() == {"error": "forbidden"}
    assert b"receiver_" not in response.data


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.5", "::1"])
def test_metrics_are_served_to_this_host(client, address):
    response = scrape(client, address)

    assert response.status_code == 200
    assert b"# HELP receiver_" in response.data


@pytest.mark.parametrize(
    "address",
    # Private networks too, by default: behind a platform's router every client has one.
    ["203.0.113.9", CAMPAIGN, "2001:db8::1", "::ffff:8.8.8.8", "10.1.2.3", "fd00::7"],
)
def test_metrics_are_refused_to_other_addresses(client, address):
    assert_metrics_refused(scrape(client, address))
    assert client.head("/metrics", environ_base={"REMOTE_ADDR": address}).status_code == 403


def test_metrics_refusal_ignores_a_forged_forwarded_header(client):
    assert_metrics_refused(scrape(client, "203.0.113.9", {"X-Forwarded-For": "127.0.0.1"}))


def test_metrics_behind_a_proxy_check_the_forwarded_client(make_client):
    private = nets("127.0.0.0/8", "10.0.0.0/8")  # as the systemd example beside nginx sets it
    client = make_client(trusted_proxies=1, metrics_allowed_networks=private)

    assert scrape(client, headers={"X-Forwarded-For": "10.0.0.9"}).status_code == 200
    assert_metrics_refused(scrape(client, headers={"X-Forwarded-For": "203.0.113.9"}))
    assert_metrics_refused(scrape(client, headers={"X-Forwarded-For": "junk"}))
    # A Prometheus beside nginx scraping gunicorn directly: no hop, its own address.
    assert scrape(client).status_code == 200


def test_metrics_allow_list_is_configurable(make_client):
    narrow = make_client(metrics_allowed_networks=nets("127.0.0.1/32"))
    anyone = make_client(metrics_allowed_networks=())

    assert scrape(narrow, "127.0.0.1").status_code == 200
    assert_metrics_refused(scrape(narrow, "127.0.0.5"))
    assert scrape(anyone, "203.0.113.9").status_code == 200


def test_the_metrics_allow_list_does_not_touch_the_other_routes(make_client, query):
    client = make_client(metrics_allowed_networks=nets("10.0.0.0/8"))

    assert client.get("/healthz", environ_base={"REMOTE_ADDR": CAMPAIGN}).status_code == 200
    assert attempt(client, basic(), remote_addr=CAMPAIGN).status_code == 200
    assert stored(query) == 1


# --- secrets are never echoed ---


def test_refusal_does_not_echo_the_submitted_password(client, query):
    secret = "Sup3r-Secret-Guess"
    response = attempt(client, basic(password=secret))

    assert_refused(response, query)
    encoded = base64.b64encode(f"{USER}:{secret}".encode()).decode()
    answer = response.get_data(as_text=True) + str(response.headers)
    assert secret not in answer
    assert encoded not in answer
    assert PASSWORD not in answer


def test_refusal_does_not_echo_a_submitted_key(api_key_client, query):
    response = attempt(api_key_client, {"X-Api-Key": "wrong-key-value"})

    assert_refused(response, query)
    answer = response.get_data(as_text=True) + str(response.headers)
    assert "wrong-key-value" not in answer
    assert "k1" not in answer
