"""receiver.web.auth without an app: client_address (the source address the allow-lists check,
from the socket peer or the X-Forwarded-For hops of trusted proxies), the /metrics allow-list,
and the comparison of presented credentials with the configured ones."""

import base64
import ipaddress
import logging

import pytest
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from receiver.config import Config, KeyAuth
from receiver.web.auth import INVALID, MISSING, Authenticator, client_address

LOOPBACK = (ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("::1/128"))


def nets(*texts):
    return tuple(ipaddress.ip_network(t) for t in texts)


def ip(text):
    return ipaddress.ip_address(text)


def request_with(headers=None, remote_addr="127.0.0.1"):
    builder = EnvironBuilder(headers=headers, environ_base={"REMOTE_ADDR": remote_addr})
    return Request(builder.get_environ())


def forwarded(*values):
    return [("X-Forwarded-For", v) for v in values]


# --- client_address: the socket peer ---


def test_client_address_without_proxies_is_the_socket_peer():
    request = request_with(forwarded("1.2.3.4"), remote_addr="10.0.0.1")

    assert client_address(request, 0, LOOPBACK) == ip("10.0.0.1")


def test_client_address_parses_an_ipv6_peer():
    assert client_address(request_with(remote_addr="2001:db8::1"), 0, LOOPBACK) == ip("2001:db8::1")


def test_ipv4_mapped_peer_address_matches_an_ipv4_allow_list():
    request = request_with(remote_addr="::ffff:193.169.180.1")

    assert client_address(request, 0, LOOPBACK) == ip("193.169.180.1")


@pytest.mark.parametrize("peer", ["garbage", "unix:/run/receiver.sock"])
def test_client_address_of_an_unparsable_peer_is_none(peer):
    assert client_address(request_with(remote_addr=peer), 0, LOOPBACK) is None
    assert client_address(request_with(forwarded("1.2.3.4"), remote_addr=peer), 1, LOOPBACK) is None


# --- client_address: a peer that is not a trusted proxy is the client, whatever it forwards ---


@pytest.mark.parametrize("peer", ["127.0.0.5", "203.0.113.9", "10.0.0.1", "2001:db8::1"])
def test_forwarded_header_from_an_untrusted_peer_is_ignored(peer):
    """The walk-around: a client reaching gunicorn directly claims Campaign's address."""
    request = request_with(forwarded("193.169.180.1"), remote_addr=peer)

    assert client_address(request, 1, LOOPBACK) == ip(peer)
    assert client_address(request, 2, LOOPBACK) == ip(peer)


def test_untrusted_peer_without_forwarded_header_is_itself_the_client():
    assert client_address(request_with(remote_addr="193.169.180.1"), 1, LOOPBACK) == ip(
        "193.169.180.1"
    )


def test_no_trusted_proxy_address_means_every_peer_is_the_client():
    request = request_with(forwarded("193.169.180.1"), remote_addr="127.0.0.1")

    assert client_address(request, 1, ()) == ip("127.0.0.1")


@pytest.mark.parametrize(
    ("peer", "proxies"),
    [
        ("127.0.0.1", LOOPBACK),
        ("::1", LOOPBACK),
        ("::ffff:127.0.0.1", LOOPBACK),  # IPv4 peer on a dual-stack socket
        ("10.1.2.3", nets("10.0.0.0/8")),
        ("2001:db8::7", nets("2001:db8::/32")),
        ("::ffff:10.1.2.3", nets("10.0.0.0/8")),
    ],
)
def test_forwarded_header_from_a_trusted_peer_is_read(peer, proxies):
    request = request_with(forwarded("193.169.180.1"), remote_addr=peer)

    assert client_address(request, 1, proxies) == ip("193.169.180.1")


# --- client_address: the hops of trusted proxies ---


@pytest.mark.parametrize(("proxies", "expected"), [(1, "3.3.3.3"), (4, None)])
def test_client_address_counts_hops_from_the_right(proxies, expected):
    request = request_with(forwarded("1.1.1.1, 2.2.2.2 ,3.3.3.3"))

    address = client_address(request, proxies, LOOPBACK)

    assert address == (ip(expected) if expected else None)


def test_two_proxies_the_hop_of_the_further_proxy_must_be_trusted():
    proxies = nets("127.0.0.1/32", "10.0.0.0/8")
    through_balancer = request_with(forwarded("6.6.6.6, 193.169.180.1, 10.0.0.5"))
    balancer_skipped = request_with(forwarded("193.169.180.1, 203.0.113.9"))

    assert client_address(through_balancer, 2, proxies) == ip("193.169.180.1")
    # The last hop was written by a client that reached nginx around the balancer.
    assert client_address(balancer_skipped, 2, proxies) is None
    # Without the balancer's address among the trusted ones, its hop proves nothing.
    assert client_address(through_balancer, 2, LOOPBACK) is None


def test_three_proxies_every_intermediate_hop_must_be_trusted():
    proxies = nets("127.0.0.1/32", "10.0.0.0/8", "2001:db8::/32")
    chain = "193.169.180.1, 2001:db8::2, 10.0.0.5"

    assert client_address(request_with(forwarded(chain)), 3, proxies) == ip("193.169.180.1")
    assert client_address(request_with(forwarded(f"{chain}, 8.8.8.8")), 3, proxies) is None
    assert client_address(request_with(forwarded(f"9.9.9.9, {chain}")), 3, proxies) == ip(
        "193.169.180.1"
    )


def test_intermediate_hops_may_be_ipv4_mapped():
    proxies = nets("127.0.0.1/32", "10.0.0.0/8")
    request = request_with(forwarded("193.169.180.1, ::ffff:10.0.0.5"))

    assert client_address(request, 2, proxies) == ip("193.169.180.1")


def test_an_ipv4_mapped_client_hop_is_reported_as_ipv4():
    request = request_with(forwarded("::ffff:193.169.180.1"))

    assert client_address(request, 1, LOOPBACK) == ip("193.169.180.1")


def test_client_address_joins_repeated_forwarded_headers_in_order():
    proxies = nets("127.0.0.1/32", "3.3.3.3/32")
    request = request_with(forwarded("1.1.1.1, 2.2.2.2", "3.3.3.3"))

    assert client_address(request, 1, proxies) == ip("3.3.3.3")
    assert client_address(request, 2, proxies) == ip("2.2.2.2")


def test_client_address_skips_empty_forwarded_entries():
    proxies = nets("127.0.0.1/32", "2.2.2.2/32")
    request = request_with(forwarded("1.1.1.1,, 2.2.2.2, "))

    assert client_address(request, 1, proxies) == ip("2.2.2.2")
    assert client_address(request, 2, proxies) == ip("1.1.1.1")


@pytest.mark.parametrize(
    "value", ["garbage", "1.2.3.4:80", "[2001:db8::1]", "unknown", "1.2.3", "::ffff:1.2.3.4.5"]
)
def test_client_address_of_an_unparsable_entry_is_none(value):
    assert client_address(request_with(forwarded(value)), 1, LOOPBACK) is None


@pytest.mark.parametrize("intermediate", ["garbage", "10.0.0.5:443", "", "_hidden"])
def test_an_unparsable_intermediate_hop_is_refused(intermediate):
    proxies = nets("127.0.0.1/32", "10.0.0.0/8")
    request = request_with(forwarded(f"193.169.180.1, {intermediate}, 10.0.0.6"))

    # An empty entry is skipped, so the chain is one hop shorter: still no client found.
    assert client_address(request, 3, proxies) is None


def test_trusted_peer_without_forwarded_header_is_none():
    assert client_address(request_with(remote_addr="127.0.0.1"), 1, LOOPBACK) is None


# --- the /metrics allow-list ---


def authenticator(**changes):
    return Authenticator(Config(database_url="postgresql:///unused", **changes))


@pytest.mark.parametrize(
    ("peer", "allowed"),
    [
        ("127.0.0.1", True),
        ("127.0.0.5", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        # Closed by default even to private networks: behind a platform's router every
        # client comes from one (a deployment opens them: RECEIVER_METRICS_ALLOWED_IPS).
        ("10.2.3.4", False),
        ("172.31.0.1", False),
        ("192.168.1.1", False),
        ("fd00::1", False),
        ("::ffff:192.168.1.1", False),
        ("172.32.0.1", False),
        ("193.169.180.1", False),
        ("2001:db8::1", False),
    ],
)
def test_metrics_default_allows_this_host_only(peer, allowed):
    assert authenticator().metrics_allowed(request_with(remote_addr=peer)) is allowed


def test_metrics_behind_a_proxy_checks_the_forwarded_client():
    private = nets("127.0.0.0/8", "10.0.0.0/8")
    auth = authenticator(trusted_proxies=1, metrics_allowed_networks=private)

    assert auth.metrics_allowed(request_with(forwarded("10.0.0.9")))
    assert not auth.metrics_allowed(request_with(forwarded("203.0.113.9")))
    # A forged private address in the header, sent from outside: the peer is the client.
    assert not auth.metrics_allowed(request_with(forwarded("10.0.0.9"), remote_addr="8.8.8.8"))


def test_metrics_scraped_straight_from_the_proxy_host_is_judged_by_its_address():
    """Prometheus beside nginx scrapes 127.0.0.1:8000: no X-Forwarded-For at all."""
    auth = authenticator(trusted_proxies=1)

    assert auth.metrics_allowed(request_with(remote_addr="127.0.0.1"))
    assert auth.metrics_allowed(request_with(forwarded(" , "), remote_addr="127.0.0.1"))
    # ...but a header whose hops cannot be used is refused, not ignored.
    assert not auth.metrics_allowed(request_with(forwarded("garbage")))
    narrow = authenticator(trusted_proxies=1, metrics_allowed_networks=nets("10.0.0.0/8"))
    assert not narrow.metrics_allowed(request_with(remote_addr="127.0.0.1"))


def test_metrics_allow_list_can_be_narrowed_or_emptied():
    only_localhost = authenticator(metrics_allowed_networks=nets("127.0.0.1/32"))
    anyone = authenticator(metrics_allowed_networks=())

    assert only_localhost.metrics_allowed(request_with(remote_addr="127.0.0.1"))
    assert not only_localhost.metrics_allowed(request_with(remote_addr="127.0.0.5"))
    assert anyone.metrics_allowed(request_with(remote_addr="203.0.113.9"))
    assert anyone.metrics_allowed(request_with(remote_addr="garbage"))


# --- credentials: compared as the bytes that were sent ---

PASSPHRASE = "pässwörd€"  # € is not Latin-1; ä and ö are
LATIN1_PASSPHRASE = "pässwörd"


def wsgi_header(raw: bytes) -> str:
    """A header value as gunicorn and werkzeug hand it to the app: the bytes read as Latin-1."""
    return raw.decode("latin-1")


def key_request(value):
    return request_with([("X-Api-Key", value)])


def basic_request(raw: bytes):
    return request_with([("Authorization", "Basic " + base64.b64encode(raw).decode())])


@pytest.mark.parametrize("secret", [PASSPHRASE, LATIN1_PASSPHRASE, "ascii-key"])
def test_key_auth_matches_the_utf8_bytes_of_the_configured_value(secret):
    auth = authenticator(key_auth=(KeyAuth("X-Api-Key", secret),))

    assert auth.check_credentials(key_request(wsgi_header(secret.encode("utf-8")))) is None


def test_key_auth_matches_the_latin1_bytes_of_a_value_latin1_can_write():
    auth = authenticator(key_auth=(KeyAuth("X-Api-Key", LATIN1_PASSPHRASE),))

    raw = LATIN1_PASSPHRASE.encode("latin-1")
    assert auth.check_credentials(key_request(wsgi_header(raw))) is None


def test_key_auth_matches_a_value_a_server_decoded_as_utf8():
    """A server that hands over text decoded as UTF-8 (characters beyond Latin-1)."""
    auth = authenticator(key_auth=(KeyAuth("X-Api-Key", PASSPHRASE),))

    assert auth.check_credentials(key_request(PASSPHRASE)) is None


@pytest.mark.parametrize(
    "raw",
    [
        "pässwörd€".encode("utf-16-le"),
        "pässwörd".encode(),  # a prefix
        "pässwörd€x".encode(),
        "passwörd€".encode(),
        "pässwörd€".encode().upper(),
        b"",
    ],
)
def test_key_auth_refuses_other_bytes(raw):
    auth = authenticator(key_auth=(KeyAuth("X-Api-Key", PASSPHRASE),))

    assert auth.check_credentials(key_request(wsgi_header(raw))) == INVALID


def test_key_auth_with_several_values_accepts_each_and_no_other():
    auth = authenticator(key_auth=(KeyAuth("X-Api-Key", "old"), KeyAuth("X-Api-Key", PASSPHRASE)))

    assert auth.check_credentials(key_request("old")) is None
    assert auth.check_credentials(key_request(wsgi_header(PASSPHRASE.encode()))) is None
    assert auth.check_credentials(key_request("new")) == INVALID
    assert auth.check_credentials(request_with()) == MISSING


@pytest.mark.parametrize("encoding", ["utf-8", "latin-1"])
def test_basic_auth_matches_the_pair_in_utf8_or_latin1(encoding):
    auth = authenticator(basic_auth=(("jürgen", "grüße"),))

    assert auth.check_credentials(basic_request("jürgen:grüße".encode(encoding))) is None


def test_basic_auth_pair_beyond_latin1_matches_in_utf8_only():
    auth = authenticator(basic_auth=(("campaign", PASSPHRASE),))

    assert auth.check_credentials(basic_request(f"campaign:{PASSPHRASE}".encode())) is None
    refused = basic_request(f"campaign:{PASSPHRASE}".encode("utf-16-le"))
    assert auth.check_credentials(refused) == INVALID


@pytest.mark.parametrize(
    "raw",
    [
        "jürgen:grüsse".encode(),
        "jurgen:grüße".encode(),
        "jürgen:grüße ".encode(),
        "jürgen:grüße".encode("utf-16-le"),
        # One half in each encoding: each configured pair is matched as a whole.
        "jürgen:".encode("latin-1") + "grüße".encode(),
    ],
)
def test_basic_auth_refuses_other_bytes(raw):
    auth = authenticator(basic_auth=(("jürgen", "grüße"),))

    assert auth.check_credentials(basic_request(raw)) == INVALID


def test_every_configured_secret_costs_the_same_comparisons():
    """Two digests per secret, whichever encodings can write it: the number of comparisons says
    nothing about the secret."""
    auth = authenticator(
        basic_auth=(("a", "ascii"), ("b", "grüße"), ("c", PASSPHRASE)),
        key_auth=(KeyAuth("X-Api-Key", "ascii"), KeyAuth("X-Api-Key", PASSPHRASE)),
    )

    assert len(auth.basic_digests) == 6
    assert [len(digests) for _, digests in auth.key_digests] == [2, 2]


# --- a Unix socket, and the warning for an ignored X-Forwarded-For ---


def test_a_unix_socket_peer_is_the_proxy_when_there_are_proxies():
    """gunicorn bound to unix:/run/... behind nginx: REMOTE_ADDR is empty, and only this host
    can connect, so the peer is the proxy (before: every batch refused)."""
    trusted = nets("127.0.0.1/32")
    unix = request_with(forwarded("193.169.180.1"), remote_addr="")
    assert client_address(unix, 1, trusted) == ipaddress.ip_address("193.169.180.1")
    assert client_address(request_with(remote_addr=""), 1, trusted) is None  # no hop: refused
    assert client_address(unix, 0, trusted) is None  # no proxies: no address to judge


class Collect(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        self.records.append(record)


def test_an_ignored_forwarded_header_is_logged_once_per_peer():
    auth = authenticator(
        trusted_proxies=1, allowed_networks=nets("193.169.180.1/32"), trusted_proxy_networks=()
    )
    handler, logger = Collect(), logging.getLogger("receiver.auth")
    logger.addHandler(handler)
    try:
        for _ in range(3):
            request = request_with(forwarded("193.169.180.1"), remote_addr="10.0.0.7")
            assert not auth.source_allowed(request)
        assert not auth.source_allowed(request_with(remote_addr="10.0.0.8"))  # no header
    finally:
        logger.removeHandler(handler)
    warnings = [r.getMessage() for r in handler.records]
    assert len(warnings) == 1
    assert "10.0.0.7" in warnings[0] and "RECEIVER_TRUSTED_PROXY_IPS" in warnings[0]
