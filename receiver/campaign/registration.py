"""Registering the receiver with Campaign: setup, status and teardown, returning data.

Which webhooks are ours: those whose target URL is exactly the URL given to `setup` (the string
as registered, compared verbatim). `setup` keeps one webhook per type at that URL, `teardown`
removes every webhook at that URL and never touches any other.

The `authentication` Campaign returns for a webhook is the secret the receiver checks: it is
compared here and never copied into anything these functions return.
"""

import ipaddress
import json
import time
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlsplit

from .. import config as receiver_config
from ..config import ConfigError
from ..storage import campaign as storage
from ..storage import db
from . import EVENT_TYPES, LISTED_AS
from .client import CampaignError

# The documented types, as a create or update names them (any other name is passed through).
TYPES = EVENT_TYPES
REQUESTED_AS = {listed: requested for requested, listed in LISTED_AS.items()}
BODY_PREVIEW = 200  # characters of the target's answer kept from a verify
# What the receiver's answer to a verify means, for the statuses it gives (docs/answers.md's table).
TARGET_ANSWERS = {
    401: "the receiver refused the credentials registered with the webhook (401): the "
    "receiver at that URL runs with other RECEIVER_BASIC_AUTH/RECEIVER_KEY_AUTH than this "
    "command read",
    403: "the receiver refused Campaign's address (403): check RECEIVER_ALLOWED_IPS and "
    "RECEIVER_TRUSTED_PROXIES",
    404: "nothing answers at that path (404): the receiver's path is /webhook",
    413: "the receiver found the test batch too large (413): check RECEIVER_MAX_BATCH",
    503: "the receiver could not store the events (503): its database is unavailable",
}


def request_type(name: str) -> str:
    """The type as create and update spell it (`archived` -> `archive`)."""
    return REQUESTED_AS.get(name, name)


def listed_type(name: str) -> str:
    """The type as list spells it (`archive` -> `archived`)."""
    return LISTED_AS.get(name, name)


def event_types(name: str) -> tuple[str, ...]:
    """The `type` values the events of a webhook of this type may carry."""
    return tuple(sorted({request_type(name), listed_type(name)}))


def parse_types(text: str | None) -> tuple[str, ...]:
    """`open,click` -> ("open", "click"); None or empty -> every documented type."""
    if not text:
        return TYPES
    names = [request_type(item.strip().lower()) for item in text.split(",") if item.strip()]
    if not names:
        raise ValueError("no type given")
    return tuple(dict.fromkeys(names))


@dataclass(frozen=True)
class Authentication:
    """The webhook `authentication` to register, and where it came from (never the secret)."""

    value: dict = field(repr=False)
    source: str

    @property
    def json(self) -> str:
        """The form field's JSON text."""
        return json.dumps(self.value, separators=(",", ":"))


def receiver_authentication(environ=None, fallback=None) -> Authentication:
    """The first RECEIVER_BASIC_AUTH pair, else the first RECEIVER_KEY_AUTH header (with their
    _FILE forms), else the `fallback` (user, password) pair, as Campaign's authentication."""
    basic, keys = receiver_config.load_credentials(environ)
    if basic:
        user, password = basic[0]
        value = {"type": "basicAuth", "userName": user, "password": password}
        return Authentication(
            value, f"basicAuth, user {user!r}: the first RECEIVER_BASIC_AUTH pair"
        )
    if keys:
        key = keys[0]
        value = {"type": "keyAuth", "key": key.header, "passphrase": key.value}
        return Authentication(
            value, f"keyAuth, header {key.header!r}: the first RECEIVER_KEY_AUTH line"
        )
    if fallback:
        user, password = fallback
        value = {"type": "basicAuth", "userName": user, "password": password}
        return Authentication(value, f"basicAuth, user {user!r}: the development credentials")
    raise ConfigError(receiver_config.NO_CREDENTIALS)


def url_warnings(url: str) -> list[str]:
    """Why Campaign may not deliver to `url`; ValueError when it is no http(s) URL at all."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    warnings = []
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"not a valid port in {url!r}") from None
    if parts.scheme != "https":
        warnings.append(f"{url} is not HTTPS: Campaign delivers only over HTTPS on port 443")
    elif port not in (None, 443):
        warnings.append(f"{url} uses port {port}: Campaign delivers only to HTTPS on port 443")
    if _is_private(parts.hostname):
        warnings.append(
            f"{parts.hostname} is not a public address: Campaign (193.169.180.1) cannot reach it"
        )
    return warnings


def _is_private(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False  # a name: whether it resolves publicly is not ours to test here
    return not address.is_global


def public(webhook: dict) -> dict:
    """The webhook as shown to a user: the authentication reduced to its type."""
    shown = {key: value for key, value in webhook.items() if key != "authentication"}
    if isinstance(webhook.get("authentication"), dict):
        shown["authentication"] = {"type": webhook["authentication"].get("type")}
    return shown


def ours(webhooks, url) -> list[dict]:
    """The webhooks that point at `url` and are not deleted, oldest first."""
    mine = [w for w in webhooks if w.get("targetUrl") == url and w.get("status") != "deleted"]
    return sorted(mine, key=lambda w: w.get("id") or 0)


@dataclass
class TypeSetup:
    """What `setup` did for one type."""

    type: str
    webhook_id: int | None = None
    action: str = ""  # created, updated or unchanged
    activation: str = ""  # activated, or already activated
    extra_ids: list[int] = field(default_factory=list)  # more webhooks of this type at our URL
    verify_status: int | None = None  # the receiver's HTTP status during verify
    verify_body: str | None = None
    verify_note: str | None = None
    events_sent: int | None = None
    events_seen: int | None = None  # None: not checked
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Registered and active, and (when verified) answered 200 and (when checked) stored."""
        if self.error:
            return False
        # A type Campaign cannot verify (documented 400) is registered all the same: not a
        # failure, only unproven (the note says so).
        if self.verify_status is not None and self.verify_status != 200:
            return False
        return self.events_seen is None or self.events_seen > 0


def setup(client, url, auth: Authentication, types=TYPES, mailing_id=None, number_of_events=1,
          ledger=None, wait_seconds=15.0) -> list[TypeSetup]:  # fmt: skip
    """Create or update one webhook per type at `url`, activate each, and verify them when a
    mailing id is given, looking for the test events in the database when a ledger is given."""
    registered = client.list_webhooks()
    results = []
    for name in types:
        result = TypeSetup(name)
        try:
            _register(client, registered, url, auth, result)
        except CampaignError as error:
            result.error = str(error)
        results.append(result)
    if mailing_id is not None:
        _verify(client, results, mailing_id, number_of_events, ledger, wait_seconds)
    return results


def _register(client, registered, url, auth, result):
    """Create or update the type's webhook at `url`, then make sure it is activated."""
    mine = [
        w
        for w in ours(registered, url)
        if listed_type(w.get("type", "")) == listed_type(result.type)
    ]
    if not mine:
        webhook = client.create_webhook(result.type, url, auth.json)
        result.action = "created"
    else:
        webhook, extra = mine[0], mine[1:]
        result.extra_ids = [w["id"] for w in extra]
        if _needs_update(webhook, auth):
            webhook = _update(client, webhook, url, auth)
            result.action = "updated"
        else:
            result.action = "unchanged"
    result.webhook_id = webhook["id"]
    result.activation = _activate(client, webhook)


def _needs_update(webhook, auth) -> bool:
    """True when the registered authentication or format is not what the receiver accepts."""
    # Compared as parsed JSON: key order and spacing are not a difference.
    return webhook.get("authentication") != auth.value or webhook.get("format", "json") != "json"


def _update(client, webhook, url, auth) -> dict:
    """Update the webhook; an activated one Campaign refuses to change is deactivated first."""
    name = request_type(webhook["type"])
    try:
        updated = client.update_webhook(webhook["id"], name, url, auth.json)
    except CampaignError as error:
        # Whether an activated webhook may be updated is not documented; if Campaign refuses,
        # the change is made the way that always works: deactivate, update (activate follows).
        if error.status != 400 or webhook.get("status") != "activated":
            raise
        client.deactivate(webhook["id"])
        updated = client.update_webhook(webhook["id"], name, url, auth.json)
        updated = {**updated, "status": "deactivated"}
    # Some answers may omit the status; the webhook keeps the one it had.
    return {**webhook, **{k: v for k, v in updated.items() if v is not None}}


def _activate(client, webhook) -> str:
    """Activate unless already activated (a suspended webhook is activated again)."""
    if webhook.get("status") == "activated":
        return "already activated"
    try:
        client.activate(webhook["id"])
    except CampaignError as error:
        if error.status == 400:  # already activated: someone did it since we listed
            return "already activated"
        raise
    return "activated"


def _verify(client, results, mailing_id, number_of_events, ledger, wait_seconds):
    """Verify every registered webhook, then wait for their test events in the database."""
    since = ledger.now() if ledger else None
    verified = []
    for result in results:
        if result.error or result.webhook_id is None:
            continue
        try:
            answers = client.verify(result.webhook_id, mailing_id, number_of_events)
        except CampaignError as error:
            if error.status == 400:
                result.verify_note = str(error)
            else:
                result.error = str(error)
            continue
        first = answers[0] if answers else {}
        result.verify_status = first.get("httpStatusCode")
        result.verify_body = _preview(first.get("responseBody"))
        result.events_sent = sum(a.get("numberOfEvents") or 0 for a in answers)
        if result.verify_status != 200:
            result.verify_note = TARGET_ANSWERS.get(
                result.verify_status, f"the target answered {result.verify_status}, not 200"
            )
        else:
            verified.append(result)
    if ledger and verified:
        _await_events(ledger, verified, since, wait_seconds)


def _await_events(ledger, results, since, wait_seconds):
    """Poll the events table until every verified type has events, or the wait is over."""
    types = sorted({name for r in results for name in event_types(r.type)})
    deadline = time.monotonic() + wait_seconds
    while True:
        counts = ledger.events_since(types, since)
        for result in results:
            result.events_seen = sum(counts.get(name, 0) for name in event_types(result.type))
        # The receiver answers 200 only after its commit, so a 200 verify normally means the
        # events are there already; the wait covers a verify Campaign answers before delivering.
        if all(r.events_seen for r in results) or time.monotonic() >= deadline:
            return
        time.sleep(0.5)


def _preview(body) -> str | None:
    """The start of the target's answer, on one line."""
    if body is None:
        return None
    text = str(body).replace("\n", "\\n").replace("\r", "\\r")
    return text if len(text) <= BODY_PREVIEW else text[: BODY_PREVIEW - 1] + "…"


@dataclass
class TypeStatus:
    """One type's webhooks next to what the receiver saw of that type."""

    type: str
    webhooks: list[dict] = field(default_factory=list)  # id, status, targetUrl (public)
    last_event: datetime | None = None
    events_last_hour: int | None = None  # None: the database was not looked at
    quarantined_last_hour: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def suspended(self) -> bool:
        return any(w.get("status") == "suspended" for w in self.webhooks)


def status(client, url=None, ledger=None) -> tuple[list[TypeStatus], int | None]:
    """Per type: the webhooks (at `url`, or all), and the receiver's recent events and
    quarantined events of that type; also the quarantined bodies of the last hour (no type)."""
    webhooks = client.list_webhooks()
    webhooks = ours(webhooks, url) if url else [w for w in webhooks if w.get("status") != "deleted"]
    rows = {listed_type(name): TypeStatus(listed_type(name)) for name in TYPES}
    for webhook in webhooks:
        name = listed_type(webhook.get("type") or "?")
        rows.setdefault(name, TypeStatus(name)).webhooks.append(public(webhook))
    bodies = None
    if ledger:
        for seen in ledger.activity():
            row = rows.setdefault(listed_type(seen["type"]), TypeStatus(listed_type(seen["type"])))
            last = seen["last_received_at"]
            row.last_event = max(filter(None, (row.last_event, last)), default=None)
            row.events_last_hour = (row.events_last_hour or 0) + seen["last_hour"]
        quarantined, bodies = ledger.quarantined()
        for row in rows.values():
            row.events_last_hour = row.events_last_hour or 0
            row.quarantined_last_hour = sum(quarantined.get(t, 0) for t in event_types(row.type))
    for row in rows.values():
        row.notes = _notes(row, url)
    return sorted(rows.values(), key=_order), bodies


def _order(row: TypeStatus):
    """Documented types in their documented order, newer ones after them."""
    documented = [listed_type(name) for name in TYPES]
    return (documented.index(row.type) if row.type in documented else len(documented), row.type)


def _notes(row: TypeStatus, url) -> list[str]:
    """What stands out: suspended, not activated, nothing received, quarantined."""
    notes = []
    states = {w.get("status") for w in row.webhooks}
    if not row.webhooks and url:
        notes.append("no webhook at this URL")
    if "suspended" in states:
        notes.append(
            "SUSPENDED by Campaign: fix what made deliveries fail, then `receiver campaign "
            "setup` activates it again"
        )
    if states & {"created", "deactivated"}:
        notes.append("not activated: Campaign sends nothing")
    if "activated" in states and row.events_last_hour == 0:
        notes.append("activated, but nothing received in the last hour")
    if row.quarantined_last_hour:
        notes.append("events quarantined: see `receiver quarantine list`")
    if len(row.webhooks) > 1 and url:
        notes.append("more than one webhook of this type at this URL")
    return notes


def teardown(client, url) -> list[dict]:
    """Deactivate and delete every webhook at `url`; one outcome per webhook."""
    outcomes = []
    for webhook in ours(client.list_webhooks(), url):
        outcome = {"id": webhook["id"], "type": webhook.get("type"), "result": "deleted"}
        try:
            if webhook.get("status") in ("activated", "suspended"):
                _deactivate(client, webhook["id"])
            client.delete(webhook["id"])
        except CampaignError as error:
            outcome.update(result="failed", error=str(error))
        outcomes.append(outcome)
    return outcomes


def _deactivate(client, webhook_id):
    """Deactivate; a webhook that is not activated (any more) is fine to delete as it is."""
    try:
        client.deactivate(webhook_id)
    except CampaignError as error:
        if error.status != 400:
            raise


class DatabaseLedger:
    """The receiver's database as `setup` and `status` read it, for one Campaign client."""

    def __init__(self, url, client_id):
        self.url = url
        self.client_id = client_id

    def _connect(self):
        return db.connect(self.url, "receiver campaign")

    def now(self):
        """The database server's time."""
        with self._connect() as conn:
            return storage.database_now(conn)

    def events_since(self, types, since) -> dict[str, int]:
        """Events of the client per type since `since`."""
        with self._connect() as conn:
            return storage.events_since(conn, self.client_id, types, since)

    def activity(self) -> list[dict]:
        """Last event and events of the last hour, per type."""
        with self._connect() as conn:
            return storage.activity(conn, self.client_id)

    def quarantined(self) -> tuple[dict[str, int], int]:
        """Quarantined events of the client per type in the last hour, and bodies (no type)."""
        with self._connect() as conn:
            rows = storage.quarantined_last_hour(conn)
        per_type, bodies = {}, 0
        for row in rows:
            if row["kind"] == "body":
                bodies += 1
                continue
            event = _parse(bytes(row["content"]))
            if event.get("clientId") in (self.client_id, str(self.client_id)):
                name = str(event.get("type"))
                per_type[name] = per_type.get(name, 0) + 1
        return per_type, bodies


def _parse(content: bytes) -> dict:
    """A quarantined event's JSON object, or {} when it is none (that is why it is there)."""
    try:
        value = json.loads(content)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
