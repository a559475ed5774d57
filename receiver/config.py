"""Configuration from environment variables, each documented here and validated at boot.

A receiver that starts with a bad setting and fails on the first request has already lost the
sender's attention; so every value is parsed once, in `load_config`, and a mistake stops the boot
with a message naming the variable.
"""

import ipaddress
import os
from dataclasses import dataclass


class ConfigError(Exception):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class KeyAuth:
    """Campaign's keyAuth: a request header whose value must match verbatim."""

    header: str
    value: str


@dataclass(frozen=True)
class Config:
    database_url: str
    basic_auth: tuple[tuple[str, str], ...] = ()
    key_auth: tuple[KeyAuth, ...] = ()
    allowed_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    trusted_proxies: int = 0
    max_batch: int = 100
    max_body_bytes: int = 4 * 1024 * 1024
    pool_min_size: int = 1
    pool_max_size: int = 4
    pool_timeout: float = 1.5
    statement_timeout_ms: int = 5000
    retry_after_seconds: int = 10
    log_level: str = "INFO"

    @property
    def has_credentials(self) -> bool:
        return bool(self.basic_auth or self.key_auth)


# name: (help text, default). The README's configuration table is this dictionary.
SETTINGS = {
    "DATABASE_URL": ("PostgreSQL connection string (libpq URI or key=value).", None),
    "RECEIVER_BASIC_AUTH": (
        "Accepted Basic Auth pairs `user:password`, separated by whitespace; list the old and the "
        "new pair together while rotating.",
        "",
    ),
    "RECEIVER_KEY_AUTH": (
        "Accepted keyAuth headers `Header-Name: value`, one per line (the value may hold spaces, "
        "e.g. `Authorization: Bearer abc`).",
        "",
    ),
    "RECEIVER_ALLOWED_IPS": (
        "Optional source allow-list: CIDRs or addresses separated by commas or whitespace "
        "(Campaign sends from 193.169.180.1). Empty allows any source.",
        "",
    ),
    "RECEIVER_TRUSTED_PROXIES": (
        "How many reverse proxies in front of the receiver append to X-Forwarded-For; the client "
        "address is taken that many hops from the right. 0 uses the socket's peer address.",
        "0",
    ),
    "RECEIVER_MAX_BATCH": ("Most events accepted in one POST (Campaign sends at most 100).", "100"),
    "RECEIVER_MAX_BODY_BYTES": ("Largest request body accepted, in bytes.", str(4 * 1024 * 1024)),
    "RECEIVER_POOL_MIN_SIZE": ("Connections each worker keeps open.", "1"),
    "RECEIVER_POOL_MAX_SIZE": ("Most connections per worker (match the worker's threads).", "4"),
    "RECEIVER_POOL_TIMEOUT": (
        "Seconds a request waits for a free connection before answering 503.",
        "1.5",
    ),
    "RECEIVER_STATEMENT_TIMEOUT_MS": (
        "PostgreSQL statement_timeout for the receiver's sessions, in ms; keeps every answer "
        "well inside the sender's ~10 s timeout.",
        "5000",
    ),
    "RECEIVER_RETRY_AFTER": ("Seconds announced in Retry-After on a 503.", "10"),
    "LOG_LEVEL": ("Python logging level of the receiver's logs.", "INFO"),
}


def load_config(environ=None) -> Config:
    """Parse and validate every setting; raise ConfigError naming the first bad one."""
    env = os.environ if environ is None else environ

    def get(name):
        value = env.get(name)
        return SETTINGS[name][1] if value is None else value

    database_url = get("DATABASE_URL")
    if not database_url:
        raise ConfigError("DATABASE_URL is not set (or run `receiver serve` for an embedded one)")
    pool_min = _integer(get, "RECEIVER_POOL_MIN_SIZE", minimum=0)
    pool_max = _integer(get, "RECEIVER_POOL_MAX_SIZE", minimum=1)
    if pool_min > pool_max:
        raise ConfigError("RECEIVER_POOL_MIN_SIZE must not exceed RECEIVER_POOL_MAX_SIZE")
    return Config(
        database_url=database_url,
        basic_auth=parse_basic_auth(get("RECEIVER_BASIC_AUTH")),
        key_auth=parse_key_auth(get("RECEIVER_KEY_AUTH")),
        allowed_networks=parse_networks(get("RECEIVER_ALLOWED_IPS")),
        trusted_proxies=_integer(get, "RECEIVER_TRUSTED_PROXIES", minimum=0),
        max_batch=_integer(get, "RECEIVER_MAX_BATCH", minimum=1),
        max_body_bytes=_integer(get, "RECEIVER_MAX_BODY_BYTES", minimum=1024),
        pool_min_size=pool_min,
        pool_max_size=pool_max,
        # Capped well below the sender's ~10 s timeout: past it, waiting for a connection
        # only turns a quick 503 into a timeout that looks like a hang.
        pool_timeout=_number(get, "RECEIVER_POOL_TIMEOUT", minimum=0.1, maximum=8.0),
        statement_timeout_ms=_integer(get, "RECEIVER_STATEMENT_TIMEOUT_MS", minimum=100),
        retry_after_seconds=_integer(get, "RECEIVER_RETRY_AFTER", minimum=1),
        log_level=_log_level(get("LOG_LEVEL")),
    )


def parse_basic_auth(text: str) -> tuple[tuple[str, str], ...]:
    """`user:pass other:pass2` -> pairs; the password may itself contain colons."""
    pairs = []
    for item in text.split():
        user, sep, password = item.partition(":")
        if not sep or not user or not password:
            # Never echo the item: it is a secret.
            raise ConfigError("RECEIVER_BASIC_AUTH: every entry must be user:password")
        pairs.append((user, password))
    return tuple(pairs)


def parse_key_auth(text: str) -> tuple[KeyAuth, ...]:
    """`Header: value` per line -> KeyAuth entries."""
    entries = []
    for line in text.splitlines():
        if not line.strip():
            continue
        header, sep, value = line.partition(":")
        header, value = header.strip(), value.strip()
        if not sep or not header or not value or not _is_token(header):
            raise ConfigError("RECEIVER_KEY_AUTH: every line must be `Header-Name: value`")
        entries.append(KeyAuth(header, value))
    return tuple(entries)


def parse_networks(text: str):
    """Comma or whitespace separated CIDRs/addresses -> ip_network objects."""
    networks = []
    for item in text.replace(",", " ").split():
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ConfigError(f"RECEIVER_ALLOWED_IPS: {item!r} is not an address or CIDR") from None
    return tuple(networks)


def _is_token(name: str) -> bool:
    return all(c.isalnum() or c in "!#$%&'*+-.^_`|~" for c in name) and name.isascii()


def _integer(get, name, minimum):
    try:
        value = int(get(name))
    except ValueError:
        raise ConfigError(f"{name} must be a whole number") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}")
    return value


def _number(get, name, minimum, maximum):
    try:
        value = float(get(name))
    except ValueError:
        raise ConfigError(f"{name} must be a number") from None
    if not minimum <= value <= maximum:  # also refuses nan and inf
        raise ConfigError(f"{name} must be between {minimum} and {maximum}")
    return value


def _log_level(text):
    level = text.strip().upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise ConfigError("LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return level
