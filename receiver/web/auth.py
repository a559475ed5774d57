"""Who may post events: Campaign's Basic Auth and keyAuth, and an optional source allow-list.

Secrets are compared as SHA-256 digests with `hmac.compare_digest`, against every configured
credential without stopping at the first match, so neither the timing of a refusal nor its length
tells an attacker how close a guess was. Secrets are never logged or echoed.
"""

import base64
import binascii
import hashlib
import hmac
import ipaddress

from flask import current_app

# The outcome names double as the `reason` label of the auth-failure metric.
MISSING = "missing"
MALFORMED = "malformed"
INVALID = "invalid"
SOURCE_DENIED = "source_denied"


class Authenticator:
    """Checks a request's source address and credentials against the configuration."""

    def __init__(self, config):
        self.basic_digests = [_digest(f"{u}:{p}".encode()) for u, p in config.basic_auth]
        self.key_digests = [(k.header, _digest(k.value.encode())) for k in config.key_auth]
        self.allowed_networks = config.allowed_networks
        self.trusted_proxies = config.trusted_proxies

    def source_allowed(self, request) -> bool:
        """True when no allow-list is set or the client address is on it."""
        if not self.allowed_networks:
            return True
        address = client_address(request, self.trusted_proxies)
        return address is not None and any(address in net for net in self.allowed_networks)

    def check_credentials(self, request) -> str | None:
        """None when a configured credential matches, else the reason for refusing."""
        presented = False
        matched = False
        for header, expected in self.key_digests:
            value = request.headers.get(header)
            if value is not None:
                presented = True
                matched |= hmac.compare_digest(_digest(value.encode()), expected)
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


def client_address(request, trusted_proxies: int):
    """The client's IP: the socket peer, or the entry `trusted_proxies` hops from the right
    of X-Forwarded-For. Entries further left were written by the client and can be forged,
    so they are never read; a header shorter than the proxy count means a proxy was bypassed
    and yields None (refused)."""
    if trusted_proxies == 0:
        text = request.remote_addr
    else:
        hops = [h.strip() for h in ",".join(request.headers.getlist("X-Forwarded-For")).split(",")]
        hops = [h for h in hops if h]
        if len(hops) < trusted_proxies:
            return None
        text = hops[-trusted_proxies]
    try:
        address = ipaddress.ip_address(text or "")
    except ValueError:
        return None
    # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d; compare them as IPv4.
    return getattr(address, "ipv4_mapped", None) or address


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


def init_app(app, config):
    """Build the authenticator once; refuse to serve without any credential configured."""
    if not config.has_credentials:
        from ..config import NO_CREDENTIALS, ConfigError

        raise ConfigError(NO_CREDENTIALS)
    app.extensions["receiver.auth"] = Authenticator(config)
