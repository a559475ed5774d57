"""client_address: the source address the allow-list checks, from the socket peer or the
X-Forwarded-For hops of trusted proxies (receiver.web.auth)."""

import ipaddress

import pytest
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from receiver.web.auth import client_address

# --- client_address ---


def request_with(headers=None, remote_addr="127.0.0.1"):
    builder = EnvironBuilder(headers=headers, environ_base={"REMOTE_ADDR": remote_addr})
    return Request(builder.get_environ())


def forwarded(*values):
    return [("X-Forwarded-For", v) for v in values]


def test_client_address_without_proxies_is_the_socket_peer():
    request = request_with(forwarded("1.2.3.4"), remote_addr="10.0.0.1")

    assert client_address(request, 0) == ipaddress.ip_address("10.0.0.1")


def test_client_address_parses_an_ipv6_peer():
    assert client_address(request_with(remote_addr="2001:db8::1"), 0) == ipaddress.ip_address(
        "2001:db8::1"
    )


@pytest.mark.parametrize(
    ("proxies", "expected"), [(1, "3.3.3.3"), (2, "2.2.2.2"), (3, "1.1.1.1"), (4, None)]
)
def test_client_address_counts_hops_from_the_right(proxies, expected):
    request = request_with(forwarded("1.1.1.1, 2.2.2.2 ,3.3.3.3"))

    address = client_address(request, proxies)

    assert address == (ipaddress.ip_address(expected) if expected else None)


def test_client_address_joins_repeated_forwarded_headers_in_order():
    request = request_with(forwarded("1.1.1.1, 2.2.2.2", "3.3.3.3"))

    assert client_address(request, 1) == ipaddress.ip_address("3.3.3.3")
    assert client_address(request, 2) == ipaddress.ip_address("2.2.2.2")


def test_client_address_skips_empty_forwarded_entries():
    request = request_with(forwarded("1.1.1.1,, 2.2.2.2, "))

    assert client_address(request, 1) == ipaddress.ip_address("2.2.2.2")
    assert client_address(request, 2) == ipaddress.ip_address("1.1.1.1")


@pytest.mark.parametrize("value", ["garbage", "1.2.3.4:80", "[2001:db8::1]"])
def test_client_address_of_an_unparsable_entry_is_none(value):
    assert client_address(request_with(forwarded(value)), 1) is None


def test_client_address_without_forwarded_header_behind_a_proxy_is_none():
    assert client_address(request_with(remote_addr="1.2.3.4"), 1) is None


def test_ipv4_mapped_peer_address_matches_an_ipv4_allow_list():
    environ = EnvironBuilder(environ_base={"REMOTE_ADDR": "::ffff:193.169.180.1"}).get_environ()
    assert client_address(Request(environ), 0) == ipaddress.ip_address("193.169.180.1")
