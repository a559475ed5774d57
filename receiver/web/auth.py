"""Who may post events: Campaign's Basic Auth and keyAuth, and an optional source allow-list;
who may read the change feed (Basic Auth pairs of its own, never Campaign's); and who may read
/metrics (a source allow-list of its own).

Secrets are compared as SHA-256 digests with `hmac.compare_digest`, against every configured
credential without stopping at the first match, so neither the timing of a refusal nor its length
tells an attacker how close a guess was. Secrets are never logged or echoed.

A secret is compared as bytes. HTTP header values arrive as bytes that gunicorn and werkzeug
decode as Latin-1, so the raw bytes are recovered from the text; a configured secret matches
them in UTF-8 (what Campaign and most clients send) and, when it can be written so, in Latin-1.
"""

import base64
import binascii
import hashlib
import hmac
import ipaddress
import logging

from flask import current_app, jsonify, request

logger = logging.getLogger("receiver.auth")
# Peers warned about (a bounded set: a scan from many addresses must not grow it for ever).
MAX_WARNED_PEERS = 100
# The outcome names double as the `reason` label of the auth-failure metric.
MISSING = "missing"
MALFORMED = "malformed"
INVALID = "invalid"
SOURCE_DENIED = "source_denied"


class Authenticator:
    """Checks a request's source address and credentials against the configuration."""

    def __init__(self, config):
        self.basic_digests = [
            digest
            for user, password in config.basic_auth
            for digest in _secret_digests(f"{user}:{password}")
        ]
        self.key_digests = [(k.header, _secret_digests(k.value)) for k in config.key_auth]
        # The feed's readers: a list apart, so that neither side's secret opens the other.
        self.feed_digests = [
            digest
            for user, password in config.feed_basic_auth
            for digest in _secret_digests(f"{user}:{password}")
        ]
        self.allowed_networks = config.allowed_networks
        self.trusted_proxies = config.trusted_proxies
        self.trusted_proxy_networks = config.trusted_proxy_networks
        self.metrics_networks = config.metrics_allowed_networks
        self._warned_peers = set()

    def source_allowed(self, request) -> bool:
        """True when no allow-list is set or the client address is on it."""
        if not self.allowed_networks:
            return True
        address = client_address(request, self.trusted_proxies, self.trusted_proxy_networks)
        allowed = _within(address, self.allowed_networks)
        if not allowed and self.trusted_proxies and _forwarded_hops(request):
            self._warn_untrusted_proxy(request)
        return allowed

    def _warn_untrusted_proxy(self, request):
        """Say once per peer when X-Forwarded-For was ignored because the peer is no trusted
        proxy: after an upgrade, a load balancer missing from RECEIVER_TRUSTED_PROXY_IPS turns
        every batch of Campaign's into a 403, and this line says why."""
        peer = request.remote_addr
        if peer in self._warned_peers or len(self._warned_peers) >= MAX_WARNED_PEERS:
            return
        self._warned_peers.add(peer)
        logger.warning(
            "X-Forwarded-For from %s ignored: not in RECEIVER_TRUSTED_PROXY_IPS; if it is your "
            "proxy or load balancer, add its address there",
            peer,
        )

    def metrics_allowed(self, request) -> bool:
        """True when /metrics may be read from the request's client address.

        As for the webhook, except that a request from a trusted proxy's address carrying no
        X-Forwarded-For at all is judged by that address: it did not pass through the proxy
        (which always appends a hop), it comes from the proxy's host itself, as a Prometheus
        beside nginx scraping 127.0.0.1:8000 does."""
        if not self.metrics_networks:
            return True
        address = client_address(request, self.trusted_proxies, self.trusted_proxy_networks)
        if address is None and not _forwarded_hops(request):
            address = _parse_address(request.remote_addr)
        return _within(address, self.metrics_networks)

    def check_credentials(self, request) -> str | None:
        """None when a configured credential matches, else the reason for refusing."""
        presented = False
        matched = False
        for header, expected in self.key_digests:
            value = request.headers.get(header)
            if value is not None:
                presented = True
                given = _digest(_header_bytes(value))
                for candidate in expected:
                    matched |= hmac.compare_digest(given, candidate)
        if self.basic_digests:
            userpass = _basic_credentials(request.headers.get("Authorization"))
            if userpass is MALFORMED:
                return MALFORMED if not matched else None
            if userpass is not None:
                presented = True
                given = _digest(userpass)
                for expected in self.basic_digests:
                    matched |= hmac.compare_digest(given, expected)
        if matched:
            return None
        return INVALID if presented else MISSING

    def check_feed_credentials(self, request) -> str | None:
        """None when the request's Basic credentials are a feed reader's, else the reason for
        refusing; compared as `check_credentials` compares Campaign's, in constant time."""
        userpass = _basic_credentials(request.headers.get("Authorization"))
        if userpass is None or userpass is MALFORMED:
            return userpass or MISSING
        given = _digest(userpass)
        matched = False
        for expected in self.feed_digests:
            matched |= hmac.compare_digest(given, expected)
        return None if matched else INVALID


def client_address(request, trusted_proxies: int, trusted_proxy_networks):
    """The client's IP, or None (refused).

    The socket peer is the client unless `trusted_proxies` > 0 and the peer is one of
    `trusted_proxy_networks` (the proxies' own addresses): a peer anywhere else connected
    directly, and whatever it wrote into X-Forwarded-For is ignored. From a trusted proxy, the
    header is read from the right: the last `trusted_proxies` - 1 hops were written by the
    further proxies and must each be a trusted proxy address too, and the hop before them is
    the client. Hops further left were written by the client and can be forged, so they are
    never read; fewer hops than proxies, a hop that is not an address or an intermediate hop
    that is not a trusted proxy mean a proxy was bypassed or lied to: None.

    A peer without an address is a Unix socket (gunicorn bound to `unix:…`), which only this
    host can reach: with `trusted_proxies` > 0 it is the proxy."""
    peer = _parse_address(request.remote_addr)
    unix_socket = not request.remote_addr
    if trusted_proxies == 0 or not (unix_socket or _within(peer, trusted_proxy_networks)):
        return peer
    hops = _forwarded_hops(request)
    if len(hops) < trusted_proxies:
        return None
    for hop in hops[len(hops) - trusted_proxies + 1 :]:
        if not _within(_parse_address(hop), trusted_proxy_networks):
            return None
    return _parse_address(hops[-trusted_proxies])


def _forwarded_hops(request) -> list[str]:
    """The X-Forwarded-For entries, left to right, over repeated headers, blanks dropped."""
    hops = [h.strip() for h in ",".join(request.headers.getlist("X-Forwarded-For")).split(",")]
    return [h for h in hops if h]


def _parse_address(text):
    """An ip_address, IPv4-mapped IPv6 as IPv4, or None when `text` is not an address."""
    try:
        address = ipaddress.ip_address(text or "")
    except ValueError:
        return None
    # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d; compare them as IPv4.
    return getattr(address, "ipv4_mapped", None) or address


def _within(address, networks) -> bool:
    return address is not None and any(address in network for network in networks)


def _header_bytes(value: str) -> bytes:
    """The bytes a header value was sent as. gunicorn and werkzeug decode them as Latin-1, which
    maps every byte to one character, so encoding back restores them; a server that decoded
    otherwise (UTF-8) gave characters Latin-1 cannot hold, and UTF-8 restores those."""
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8")


def _secret_digests(secret: str) -> tuple[bytes, bytes]:
    """The digests a configured secret matches: its UTF-8 bytes and its Latin-1 bytes (the
    UTF-8 digest twice when Latin-1 cannot write it, so that every secret costs the same
    comparisons)."""
    utf8 = _digest(secret.encode("utf-8"))
    try:
        return utf8, _digest(secret.encode("latin-1"))
    except UnicodeEncodeError:
        return utf8, utf8


def _basic_credentials(header):
    """The raw `user:password` bytes of a Basic Authorization header, None, or MALFORMED."""
    if not header:
        return None
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return MALFORMED
    return decoded if b":" in decoded else MALFORMED


def _digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def get_authenticator() -> Authenticator:
    return current_app.extensions["receiver.auth"]


def guard_metrics():
    """before_request: 403 for /metrics outside RECEIVER_METRICS_ALLOWED_IPS, saying nothing
    else (the same answer whatever the reason, and the endpoint's content is never produced)."""
    if request.endpoint != "metrics" or get_authenticator().metrics_allowed(request):
        return None
    return jsonify(error="forbidden"), 403


def init_app(app, config):
    """Build the authenticator once; refuse to serve without any credential configured."""
    if not config.has_credentials:
        from ..config import NO_CREDENTIALS, ConfigError

        raise ConfigError(NO_CREDENTIALS)
    app.extensions["receiver.auth"] = Authenticator(config)
    app.before_request(guard_metrics)
