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


NO_CREDENTIALS = (
    "no credentials configured: set RECEIVER_BASIC_AUTH(_FILE) or RECEIVER_KEY_AUTH(_FILE); "
    "the receiver refuses to accept events from anyone (only the local development mode, "
    "`receiver serve` with nothing configured, or `receiver serve --dev`, generates some)"
)


@dataclass(frozen=True)
class KeyAuth:
    """Campaign's keyAuth: a request header whose value must match verbatim."""

    header: str
    value: str


def _networks(text):
    """A default's networks, read as parse_networks reads a setting (defined further down,
    after the Config that needs this at class creation)."""
    items = text.replace(",", " ").split()
    return tuple(ipaddress.ip_network(item, strict=False) for item in items)


# Where the shipped nginx site runs: this host. Its connections to gunicorn come from loopback.
DEFAULT_TRUSTED_PROXY_IPS = "127.0.0.1 ::1"
# This host only: closed by default. Behind a platform's router (a Procfile deployment, a
# Kubernetes Service with SNAT) every internet client arrives from a private address, so the
# private networks are opened by the deployment that wants them (deploy/systemd/receiver.env.example
# opens what the nginx site allows).
DEFAULT_METRICS_ALLOWED_IPS = "127.0.0.0/8 ::1"
PRIVATE_NETWORKS = "10.0.0.0/8 172.16.0.0/12 192.168.0.0/16 fc00::/7"


# name: (help text, default): the one place of each default, as the environment would spell it.
# docs/configuration.md's table is this dictionary; Config's field defaults are these, parsed.
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
    "RECEIVER_BASIC_AUTH_FILE": (
        "A file with one `user:password` per line instead of RECEIVER_BASIC_AUTH (Docker and "
        "Kubernetes secrets, systemd `LoadCredential=`): the password is the rest of the line, "
        "spaces and colons included.",
        "",
    ),
    "RECEIVER_KEY_AUTH_FILE": (
        "A file with one `Header-Name: value` per line instead of RECEIVER_KEY_AUTH.",
        "",
    ),
    "RECEIVER_ALLOWED_IPS": (
        "Optional source allow-list: CIDRs or addresses separated by commas or whitespace "
        "(Campaign sends from 193.169.180.1). Empty allows any source.",
        "",
    ),
    "RECEIVER_TRUSTED_PROXIES": (
        "How many reverse proxies in front of the receiver append to X-Forwarded-For; the client "
        "address is taken that many hops from the right, but only from a request whose socket "
        "peer is one of RECEIVER_TRUSTED_PROXY_IPS. 0 uses the socket's peer address.",
        "0",
    ),
    "RECEIVER_TRUSTED_PROXY_IPS": (
        "The proxies' own addresses, CIDRs or addresses separated by commas or whitespace. "
        "X-Forwarded-For is believed only when the socket peer is one of them (and the hops "
        "between count as proxies only if they are too); a request from any other peer is "
        "judged by the peer's own address, whatever the header says. The default is this host, "
        "where deploy/nginx/receiver.conf runs.",
        DEFAULT_TRUSTED_PROXY_IPS,
    ),
    "RECEIVER_METRICS_ALLOWED_IPS": (
        "Who may read /metrics: CIDRs or addresses separated by commas or whitespace, checked "
        "on the client address as RECEIVER_ALLOWED_IPS is (a scrape straight from a proxy's "
        "host, without X-Forwarded-For, is judged by its own address); anyone else gets 403. "
        "The default is this host only; add your Prometheus' network (the systemd example, "
        "which goes with the nginx site, adds the private networks as nginx does). Empty "
        "allows any source.",
        DEFAULT_METRICS_ALLOWED_IPS,
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
    "RECEIVER_DATABASE_DEADLINE_MS": (
        "Client-side deadline, in ms, on a request's database work (statements and commit): a "
        "server that stops answering without closing the connection (stalled disk, frozen VM, "
        "dead network path) gets its connection cut and the request answers 503. At least "
        "RECEIVER_STATEMENT_TIMEOUT_MS + 500, so that a merely slow statement is cancelled by "
        "the server first.",
        "5500",
    ),
    "RECEIVER_CONNECT_TIMEOUT": (
        "libpq connect_timeout, in whole seconds per host, unless DATABASE_URL sets one.",
        "2",
    ),
    "RECEIVER_BODY_TIMEOUT": (
        "Seconds allowed for reading a request's headers (and a TLS handshake), and again for "
        "its body: headers slower than that get the connection closed, a slower body is "
        "answered 400 `incomplete`. Every answer comes within 9.5 s of the request's arrival "
        "whatever the database does: each step takes at most what is left of that; the boot "
        "refuses RECEIVER_BODY_TIMEOUT + RECEIVER_POOL_TIMEOUT + RECEIVER_DATABASE_DEADLINE_MS "
        "over 9.5 s: bounds that could never all be used in time.",
        "1.5",
    ),
    "RECEIVER_RETRY_AFTER": ("Seconds announced in Retry-After on a 503.", "10"),
    "RECEIVER_FEED_BASIC_AUTH": (
        "Basic Auth pairs `user:password`, separated by whitespace, that may read the change "
        "feed over HTTP (GET /feed/status-changes, /feed/events). Separate from Campaign's: a "
        "Campaign pair cannot read the feed, a feed pair cannot post events, and one pair "
        "cannot be both. Empty (and no _FILE): the feed is off and answers 404.",
        "",
    ),
    "RECEIVER_FEED_BASIC_AUTH_FILE": (
        "A file with one `user:password` per line instead of RECEIVER_FEED_BASIC_AUTH: the "
        "password is the rest of the line, spaces and colons included.",
        "",
    ),
    "RECEIVER_FEED_MAX_REQUESTS": (
        "Most feed requests a worker serves at once, long-polls included; one more gets 429 "
        "with Retry-After: 1. Each holds one of the worker's threads until its answer is sent, "
        "so it must stay below RECEIVER_THREADS: the webhook always keeps the rest.",
        "2",
    ),
    "RECEIVER_FEED_MAX_WAITING": (
        "Of those, most that long-poll at once (`wait` > 0 and nothing new yet); one more gets "
        "429 with Retry-After: 1. Above RECEIVER_FEED_MAX_REQUESTS it changes nothing. 0 turns "
        "long-polling off: `wait` is ignored, an empty page is answered at once.",
        "2",
    ),
    "RECEIVER_DATABASE_POOLER": (
        "`transaction` when DATABASE_URL names a pooler in transaction mode (PgBouncer "
        "`pool_mode = transaction`), empty for PostgreSQL itself or a pooler in session mode. "
        "In transaction mode a session setting does not follow the receiver from one "
        "transaction to the next, so the receiver prepares no statements and sets nothing: its "
        "session settings must be the role's own (`ALTER ROLE … IN DATABASE … SET`, see "
        "deploy/pgbouncer/pgbouncer.ini), and each connection it opens checks them, refusing "
        "to serve (503, /readyz failing, the statements to run in the log) until they are.",
        "",
    ),
    "DATABASE_URL_FILE": (
        "A file holding DATABASE_URL instead (one line: the URL holds the password): a "
        "container's or systemd's mounted secret. Not with DATABASE_URL.",
        "",
    ),
    "RECEIVER_MAINTENANCE_DATABASE_URL_FILE": (
        "A file holding RECEIVER_MAINTENANCE_DATABASE_URL instead (one line). Not with "
        "RECEIVER_MAINTENANCE_DATABASE_URL.",
        "",
    ),
    "RECEIVER_MAINTENANCE_DATABASE_URL": (
        "PostgreSQL itself, for every command (`receiver migrate`, also serve's, maintain, "
        "report, ...) and the workers' own upkeep (the coming months' partitions, expired "
        "delivery digests, the replication-slot gauge), which take session locks and settings "
        "that a pooler in transaction mode would hand on to the webhook's next transaction. "
        "Empty: DATABASE_URL, except with RECEIVER_DATABASE_POOLER=transaction, where the "
        "commands then refuse and that upkeep is off.",
        "",
    ),
    "RECEIVER_METRICS_CLIENT_IDS": (
        "Campaign client ids (whole numbers separated by commas or whitespace) that always get "
        "their per-client series (receiver_client_last_stored_timestamp_seconds, which the "
        "alert ReceiverClientSentStopped watches). Other ids get one while fewer than 50 "
        "unlisted ids have one in the worker, first come: list your real clients so that "
        "test or made-up ids can never take their places.",
        "",
    ),
    "RECEIVER_LEARN_SHAPES": (
        "`on`: the web workers learn what Campaign sends (event types, fields and their JSON "
        "kinds, enumeration values) from the stored events, one of them a minute, off the "
        "request path, for `receiver report schema` and receiver_campaign_changes. `off`: only "
        "`receiver maintain` does (the metric then reads what its last pass found).",
        "on",
    ),
    "RECEIVER_RETENTION": (
        "How long `receiver maintain` keeps events, e.g. `400d` (whole months older than this "
        "are dropped; at least 7d, the sender's 3-day retry window plus a margin). Empty keeps "
        "everything.",
        "",
    ),
    "LOG_LEVEL": ("Python logging level of the receiver's logs.", "INFO"),
}


def _default(name, parse=str):
    """The default of setting `name` (SETTINGS), parsed as load_config parses its value."""
    return parse(SETTINGS[name][1])


@dataclass(frozen=True)
class Config:
    database_url: str
    basic_auth: tuple[tuple[str, str], ...] = ()
    key_auth: tuple[KeyAuth, ...] = ()
    allowed_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    trusted_proxies: int = _default("RECEIVER_TRUSTED_PROXIES", int)
    trusted_proxy_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = _default(
        "RECEIVER_TRUSTED_PROXY_IPS", _networks
    )
    metrics_allowed_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = _default(
        "RECEIVER_METRICS_ALLOWED_IPS", _networks
    )
    max_batch: int = _default("RECEIVER_MAX_BATCH", int)
    max_body_bytes: int = _default("RECEIVER_MAX_BODY_BYTES", int)
    pool_min_size: int = _default("RECEIVER_POOL_MIN_SIZE", int)
    pool_max_size: int = _default("RECEIVER_POOL_MAX_SIZE", int)
    pool_timeout: float = _default("RECEIVER_POOL_TIMEOUT", float)
    statement_timeout_ms: int = _default("RECEIVER_STATEMENT_TIMEOUT_MS", int)
    database_deadline_ms: int = _default("RECEIVER_DATABASE_DEADLINE_MS", int)
    connect_timeout: int = _default("RECEIVER_CONNECT_TIMEOUT", int)
    body_timeout: float = _default("RECEIVER_BODY_TIMEOUT", float)
    retry_after_seconds: int = _default("RECEIVER_RETRY_AFTER", int)
    log_level: str = _default("LOG_LEVEL")
    # The change feed over HTTP (receiver.web.feed): its readers' own Basic Auth pairs, how many
    # of its requests each worker serves at once, and how many of those may long-poll.
    feed_basic_auth: tuple[tuple[str, str], ...] = ()
    feed_max_requests: int = _default("RECEIVER_FEED_MAX_REQUESTS", int)
    feed_max_waiting: int = _default("RECEIVER_FEED_MAX_WAITING", int)
    # "" (a direct connection, or a pooler in session mode) or "transaction" (PgBouncer and the
    # like in transaction mode): receiver.storage.db.make_pool.
    database_pooler: str = ""
    # RECEIVER_MAINTENANCE_DATABASE_URL ("": none given); see `upkeep_database_url`.
    maintenance_database_url: str = ""
    # Client ids that always get their per-client metric series (receiver.observability.metrics).
    metrics_client_ids: frozenset[int] = frozenset()
    # Whether the workers' minutely upkeep learns what Campaign sends (receiver.storage.shapes).
    learn_shapes: bool = True

    @property
    def upkeep_database_url(self) -> str | None:
        """Where the workers' own upkeep connects (receiver.maintenance.background): PostgreSQL
        itself; None when it is off (a transaction pooler, and no direct URL given)."""
        if self.maintenance_database_url:
            return self.maintenance_database_url
        return None if self.database_pooler == "transaction" else self.database_url

    @property
    def has_credentials(self) -> bool:
        return bool(self.basic_auth or self.key_auth)

    @property
    def feed_enabled(self) -> bool:
        """The feed answers only once it has readers: closed by default (404)."""
        return bool(self.feed_basic_auth)


def load_config(environ=None) -> Config:
    """Parse and validate every setting; raise ConfigError naming the first bad one."""
    env = os.environ if environ is None else environ

    def get(name):
        value = env.get(name)
        return SETTINGS[name][1] if value is None else value

    database_url = read_url("DATABASE_URL", env)
    if not database_url:
        raise ConfigError("DATABASE_URL is not set (or run `receiver serve` for an embedded one)")
    basic_auth, key_auth = load_credentials(env)
    pooler = _pooler(get("RECEIVER_DATABASE_POOLER"))
    pool_min = _integer(get, "RECEIVER_POOL_MIN_SIZE", minimum=0)
    pool_max = _integer(get, "RECEIVER_POOL_MAX_SIZE", minimum=1)
    if pool_min > pool_max:
        raise ConfigError("RECEIVER_POOL_MIN_SIZE must not exceed RECEIVER_POOL_MAX_SIZE")
    trusted_proxies = _integer(get, "RECEIVER_TRUSTED_PROXIES", minimum=0)
    proxy_networks = parse_networks(get("RECEIVER_TRUSTED_PROXY_IPS"), "RECEIVER_TRUSTED_PROXY_IPS")
    if trusted_proxies and not proxy_networks:
        # No peer would ever be a proxy: every request would be judged by the proxy's address.
        raise ConfigError("RECEIVER_TRUSTED_PROXIES needs the proxies' RECEIVER_TRUSTED_PROXY_IPS")
    return Config(
        database_url=database_url,
        basic_auth=basic_auth,
        key_auth=key_auth,
        allowed_networks=parse_networks(get("RECEIVER_ALLOWED_IPS")),
        trusted_proxies=trusted_proxies,
        trusted_proxy_networks=proxy_networks,
        metrics_allowed_networks=parse_networks(
            get("RECEIVER_METRICS_ALLOWED_IPS"), "RECEIVER_METRICS_ALLOWED_IPS"
        ),
        max_batch=_integer(get, "RECEIVER_MAX_BATCH", minimum=1),
        max_body_bytes=_integer(get, "RECEIVER_MAX_BODY_BYTES", minimum=1024),
        pool_min_size=pool_min,
        pool_max_size=pool_max,
        **_time_budget(get),
        retry_after_seconds=_integer(get, "RECEIVER_RETRY_AFTER", minimum=1),
        log_level=_log_level(get("LOG_LEVEL")),
        feed_basic_auth=_feed_credentials(get, basic_auth),
        **_feed_places(get, env),
        database_pooler=pooler,
        maintenance_database_url=read_url("RECEIVER_MAINTENANCE_DATABASE_URL", env),
        metrics_client_ids=_client_ids(get("RECEIVER_METRICS_CLIENT_IDS")),
        learn_shapes=_on_off(get, "RECEIVER_LEARN_SHAPES"),
    )


# What RECEIVER_DATABASE_POOLER may say; "session" is spelled out for those who run PgBouncer in
# session mode, and behaves as empty (every session setting follows the connection there).
POOLERS = {"": "", "session": "", "transaction": "transaction"}


def _pooler(text) -> str:
    """RECEIVER_DATABASE_POOLER: "" or "transaction"."""
    mode = text.strip().lower()
    if mode not in POOLERS:
        raise ConfigError("RECEIVER_DATABASE_POOLER must be empty, session or transaction")
    return POOLERS[mode]


# Client ids are bigint (receiver.ingest.schemas.CampaignId).
BIGINT_MAX = 2**63 - 1


def _on_off(get, name) -> bool:
    """A setting that says `on` or `off` (any case, spaces around ignored)."""
    text = get(name).strip().lower()
    if text not in ("on", "off"):
        raise ConfigError(f"{name} must be on or off, not {text[:40]!r}")
    return text == "on"


def _client_ids(text) -> frozenset[int]:
    """RECEIVER_METRICS_CLIENT_IDS: whole numbers from 0 to 2^63-1."""
    ids = set()
    for item in text.replace(",", " ").split():
        if not (item.isascii() and item.isdigit() and int(item) <= BIGINT_MAX):
            raise ConfigError(
                f"RECEIVER_METRICS_CLIENT_IDS: {item[:40]!r} is not a client id (a whole number)"
            )
        ids.add(int(item))
    return frozenset(ids)


# The sender gives up on an answer after about 10 s. Each request has one deadline, 9.5 s after
# its arrival (receiver.web.webhook), that every step is capped by: the headers, the body, and
# each database call (a fresh batch makes two: the re-delivery lookup and the store). The check
# below refuses bounds for the body, the pool wait and one database call that could not all be
# used within that; whatever the bounds, a later step takes only what is left. An answer later
# than that is a timeout the sender retries anyway, after having waited the longest.
SENDER_TIMEOUT_SECONDS = 10.0
BUDGET_MARGIN_SECONDS = 0.5
# The client-side deadline is the backstop for a silent server; a slow statement must meet the
# server's statement_timeout first, which cancels it cleanly and keeps the connection.
DEADLINE_ABOVE_STATEMENT_MS = 500


def _time_budget(get) -> dict:
    """The timeouts of the request path, each validated and checked against each other."""
    statement_ms = _integer(get, "RECEIVER_STATEMENT_TIMEOUT_MS", minimum=100)
    deadline_ms = _integer(get, "RECEIVER_DATABASE_DEADLINE_MS", minimum=200)
    if deadline_ms < statement_ms + DEADLINE_ABOVE_STATEMENT_MS:
        raise ConfigError(
            "RECEIVER_DATABASE_DEADLINE_MS must be at least RECEIVER_STATEMENT_TIMEOUT_MS + "
            f"{DEADLINE_ABOVE_STATEMENT_MS} ({statement_ms + DEADLINE_ABOVE_STATEMENT_MS})"
        )
    pool_timeout = _number(get, "RECEIVER_POOL_TIMEOUT", minimum=0.1, maximum=8.0)
    body_timeout = _number(get, "RECEIVER_BODY_TIMEOUT", minimum=0.1, maximum=8.0)
    total = body_timeout + pool_timeout + deadline_ms / 1000
    if total > SENDER_TIMEOUT_SECONDS - BUDGET_MARGIN_SECONDS:
        raise ConfigError(
            f"RECEIVER_BODY_TIMEOUT + RECEIVER_POOL_TIMEOUT + RECEIVER_DATABASE_DEADLINE_MS come "
            f"to {total:.1f} s: more than the sender's ~{SENDER_TIMEOUT_SECONDS:.0f} s timeout "
            f"allows ({SENDER_TIMEOUT_SECONDS - BUDGET_MARGIN_SECONDS} s at most)"
        )
    return {
        "statement_timeout_ms": statement_ms,
        "database_deadline_ms": deadline_ms,
        # libpq waits whole seconds (and treats 1 as 2).
        "connect_timeout": _integer(get, "RECEIVER_CONNECT_TIMEOUT", minimum=2),
        "pool_timeout": pool_timeout,
        "body_timeout": body_timeout,
    }


def _feed_credentials(get, campaign_pairs) -> tuple[tuple[str, str], ...]:
    """The feed readers' pairs, none of which may also be one of Campaign's: the feed serves
    the recipients' data to other systems, and Campaign's secret (kept in Campaign's
    settings, seen by whoever administers them) must not open it."""
    name = "RECEIVER_FEED_BASIC_AUTH"
    pairs = _credentials(get, name, lambda text: parse_basic_auth(text, name), _basic_auth_lines)
    if set(pairs) & set(campaign_pairs):
        # Which pair is never said: it is a secret.
        raise ConfigError(f"{name}: a pair is also in RECEIVER_BASIC_AUTH; give the feed its own")
    return pairs


# gunicorn's threads per worker (receiver/web/gunicorn_conf.py reads the same variable, with
# the same default); a feed request holds one of them until it is answered.
DEFAULT_THREADS = 4


def _feed_places(get, env) -> dict:
    """RECEIVER_FEED_MAX_REQUESTS and RECEIVER_FEED_MAX_WAITING, each below the worker's
    threads, so that the feed's requests, waiting or not, can never hold every thread and leave
    Campaign's batches waiting."""
    threads = (env.get("RECEIVER_THREADS") or "").strip()
    threads = int(threads) if threads.isascii() and threads.isdigit() else DEFAULT_THREADS
    places = {}
    for name, field, minimum, each in (
        ("RECEIVER_FEED_MAX_WAITING", "feed_max_waiting", 0, "each waiting request"),
        ("RECEIVER_FEED_MAX_REQUESTS", "feed_max_requests", 1, "each feed request"),
    ):
        places[field] = _integer(get, name, minimum=minimum)
        if places[field] >= threads:
            raise ConfigError(
                f"{name} must be less than the worker's threads "
                f"(RECEIVER_THREADS, {threads}): {each} holds one"
            )
    return places


def _credentials(get, name, parse_value, parse_file):
    """The credentials of `name` or of the file named by `name`_FILE (not both)."""
    value, path = get(name), get(f"{name}_FILE")
    if value and path:
        raise ConfigError(f"set {name} or {name}_FILE, not both")
    if not path:
        return parse_value(value)
    try:
        with open(path, encoding="utf-8") as secrets:
            text = secrets.read()
    except (OSError, UnicodeDecodeError) as error:
        # The path is not a secret; the content would be, and is never shown.
        reason = getattr(error, "strerror", None) or "not UTF-8 text"
        raise ConfigError(f"{name}_FILE: cannot read {path}: {reason}") from None
    return parse_file(text, f"{name}_FILE")


def read_url(name, environ=None) -> str:
    """The database URL of setting `name`, or of the file `name`_FILE names (not both): the URL
    holds the password, so it may come as a mounted secret like the credentials ("": unset)."""
    env = os.environ if environ is None else environ

    def get(setting):
        value = env.get(setting)
        return SETTINGS[setting][1] if value is None else value

    return _credentials(get, name, lambda value: value or "", _one_line_url)


def _one_line_url(text: str, name) -> str:
    """The URL a secret file holds: its one line, without the line break (LF or CRLF)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) != 1:
        raise ConfigError(f"{name}: expected the URL on one line, found {len(lines)} lines")
    return lines[0]


def parse_basic_auth(text: str, name="RECEIVER_BASIC_AUTH") -> tuple[tuple[str, str], ...]:
    """`user:pass other:pass2` -> pairs; the password may itself contain colons."""
    return tuple(_basic_pair(item, name) for item in text.split())


def _basic_auth_lines(text: str, name) -> tuple[tuple[str, str], ...]:
    """One `user:password` per line; the password is the rest of the line, blanks included."""
    return tuple(_basic_pair(line, name) for line in text.splitlines() if line.strip())


def _basic_pair(entry: str, name) -> tuple[str, str]:
    user, sep, password = entry.partition(":")
    if not sep or not user or not password or user != user.strip():
        # Never echo the entry: it is a secret.
        raise ConfigError(f"{name}: every entry must be user:password")
    return user, password


def parse_key_auth(text: str, name="RECEIVER_KEY_AUTH") -> tuple[KeyAuth, ...]:
    """`Header: value` per line -> KeyAuth entries."""
    entries = []
    for line in text.splitlines():
        if not line.strip():
            continue
        header, sep, value = line.partition(":")
        # HTTP drops blanks around a header's value, so they cannot be part of the secret.
        header, value = header.strip(), value.strip()
        if not sep or not header or not value or not _is_token(header):
            raise ConfigError(f"{name}: every line must be `Header-Name: value`")
        entries.append(KeyAuth(header, value))
    return tuple(entries)


def parse_networks(text: str, name="RECEIVER_ALLOWED_IPS"):
    """Comma or whitespace separated CIDRs/addresses -> ip_network objects."""
    networks = []
    for item in text.replace(",", " ").split():
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ConfigError(f"{name}: {item!r} is not an address or CIDR") from None
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


def load_credentials(environ=None):
    """The accepted Basic Auth pairs and keyAuth headers only (no DATABASE_URL needed), from the
    same variables and _FILE forms as `load_config`."""
    env = os.environ if environ is None else environ

    def get(name):
        value = env.get(name)
        return SETTINGS[name][1] if value is None else value

    basic = _credentials(get, "RECEIVER_BASIC_AUTH", parse_basic_auth, _basic_auth_lines)
    return basic, _credentials(get, "RECEIVER_KEY_AUTH", parse_key_auth, parse_key_auth)
