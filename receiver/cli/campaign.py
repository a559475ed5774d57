"""`receiver campaign …`: register the receiver with Campaign's REST API and check the path.

The API user's credentials come from the environment or a file, never from the command line
(where `ps` and shell histories would show them), and neither they nor the webhook's
authentication are ever printed.
"""

import dataclasses
import functools
import json
import os
from datetime import UTC, datetime

import click
import psycopg

from ..campaign import registration
from ..campaign.client import DEFAULT_BASE_URL, CampaignClient, CampaignError, api_credentials
from ..config import ConfigError
from . import common

CREDENTIALS_HELP = (
    "The API user's credentials come from CAMPAIGN_API_USER and CAMPAIGN_API_PASSWORD, or from "
    "CAMPAIGN_API_CREDENTIALS_FILE (first line `user:password`); never from the command line."
)
AUTH_HELP = (
    "The webhooks' authentication is the receiver's own: the first pair of RECEIVER_BASIC_AUTH "
    "(or RECEIVER_BASIC_AUTH_FILE), else the first line of RECEIVER_KEY_AUTH (or "
    "RECEIVER_KEY_AUTH_FILE), else the development credentials of a local `receiver serve`."
)
OURS_HELP = (
    "A webhook is setup's when its target URL is exactly --url; teardown removes those and no "
    "other."
)


def api_options(command):
    """The options every command needs to reach the API: base URL and client id."""

    @click.option(
        "--base-url",
        envvar="CAMPAIGN_API_URL",
        default=DEFAULT_BASE_URL,
        show_default=True,
        help="Campaign REST API base URL (env CAMPAIGN_API_URL)",
    )
    @click.option(
        "--client-id",
        envvar="CAMPAIGN_CLIENT_ID",
        type=int,
        required=True,
        help="Campaign client id (env CAMPAIGN_CLIENT_ID)",
    )
    @functools.wraps(command)
    def wrapper(base_url, client_id, **options):
        client = CampaignClient(client_id, api_credentials(), base_url=base_url)
        try:
            return command(client, **options)
        except CampaignError as error:
            click.echo(f"receiver: campaign: {error}", err=True)
            return 1
        except psycopg.Error as error:
            click.echo(f"receiver: campaign: database error: {error}", err=True)
            return 1
        finally:
            client.close()

    return wrapper


def url_option(required, help_text):
    """--url, the receiver's public webhook URL (env CAMPAIGN_TARGET_URL)."""
    return click.option(
        "--url", envvar="CAMPAIGN_TARGET_URL", required=required, callback=_check_url,
        help=f"{help_text} (env CAMPAIGN_TARGET_URL)",
    )  # fmt: skip


def _check_url(ctx, param, value):
    if value is None:
        return None
    try:
        registration.url_warnings(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None
    return value


json_option = click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")


@click.group(name="campaign", epilog=CREDENTIALS_HELP)
def group():
    """Register the receiver with Campaign (webhooks, setup, status, teardown)."""


@group.group(name="webhooks", epilog=CREDENTIALS_HELP)
def webhooks():
    """The REST API's webhook operations, one by one."""


@webhooks.command(name="list", epilog=CREDENTIALS_HELP)
@api_options
@json_option
def list_command(client, as_json):
    """Every webhook of the client (authentication shown by type only)."""
    found = [registration.public(w) for w in client.list_webhooks()]
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return 0
    headers = ("id", "type", "status", "format", "target URL", "auth", "modified")
    rows = [
        (w.get("id"), w.get("type"), w.get("status"), w.get("format"), w.get("targetUrl"),
         (w.get("authentication") or {}).get("type"), w.get("modified"))
        for w in found
    ]  # fmt: skip
    click.echo(_table(headers, rows) if rows else "no webhooks")
    return 0


@webhooks.command(name="create", epilog=f"{AUTH_HELP} {CREDENTIALS_HELP}")
@api_options
@click.option("--type", "webhook_type", required=True, help="event type, e.g. open")
@url_option(True, "target URL")
def create_command(client, webhook_type, url):
    """Create one webhook with the receiver's credentials (status `created`)."""
    auth = _authentication()
    _warn(url)
    created = client.create_webhook(registration.request_type(webhook_type), url, auth.json)
    click.echo(f"created webhook {created.get('id')} ({created.get('type')}, {auth.source})")
    return 0


@webhooks.command(name="update", epilog=f"{AUTH_HELP} {CREDENTIALS_HELP}")
@api_options
@click.argument("webhook_id", metavar="ID", type=int)
@click.option("--type", "webhook_type", required=True, help="event type, e.g. open")
@url_option(True, "target URL")
def update_command(client, webhook_id, webhook_type, url):
    """Set a webhook's type, target URL and the receiver's credentials."""
    auth = _authentication()
    _warn(url)
    client.update_webhook(webhook_id, registration.request_type(webhook_type), url, auth.json)
    click.echo(f"updated webhook {webhook_id} ({auth.source})")
    return 0


@webhooks.command(name="verify", epilog=CREDENTIALS_HELP)
@api_options
@click.argument("webhook_id", metavar="ID", type=int)
@click.option("--mailing-id", type=int, required=True, help="a valid mailing of the client")
@click.option("--events", type=click.IntRange(1, 100), default=1, show_default=True)
@json_option
def verify_command(client, webhook_id, mailing_id, events, as_json):
    """Have Campaign POST test events to the webhook's URL; show what the target answered."""
    answers = client.verify(webhook_id, mailing_id, events)
    if as_json:
        click.echo(json.dumps(answers, indent=2))
    for answer in [] if as_json else answers:
        status = answer.get("httpStatusCode")
        body = registration._preview(answer.get("responseBody"))
        click.echo(f"webhook {answer.get('id')}: {answer.get('numberOfEvents')} event(s) sent to "
                   f"{answer.get('targetUrl')}, answered {status}: {body}")  # fmt: skip
        if status != 200:
            click.echo(f"  {registration.TARGET_ANSWERS.get(status, 'not 200')}", err=True)
    return 0 if all(a.get("httpStatusCode") == 200 for a in answers) else 1


def _state_command(name, verb, doc):
    """activate, deactivate, delete: one webhook id, one call."""

    @webhooks.command(name=name, help=doc, epilog=CREDENTIALS_HELP)
    @api_options
    @click.argument("webhook_id", metavar="ID", type=int)
    def command(client, webhook_id):
        getattr(client, name)(webhook_id)
        click.echo(f"{verb} webhook {webhook_id}")
        return 0

    return command


_state_command("activate", "activated", "Start a webhook's deliveries.")
_state_command("deactivate", "deactivated", "Stop a webhook's deliveries.")
_state_command("delete", "deleted", "Delete a webhook (deactivate it first).")


@group.command(name="setup", epilog=f"{AUTH_HELP} {OURS_HELP} {CREDENTIALS_HELP}")
@api_options
@url_option(True, "the receiver's public webhook URL, https://…/webhook")
@click.option("--types", help="comma-separated event types  [default: every documented type]")
@click.option(
    "--mailing-id", type=int, envvar="CAMPAIGN_MAILING_ID",
    help="a valid mailing of the client (e.g. a test mailing): verify needs one; without it "
    "nothing is verified (env CAMPAIGN_MAILING_ID)",
)  # fmt: skip
@click.option("--events", type=click.IntRange(1, 100), default=1, show_default=True,
              help="test events per type")  # fmt: skip
@click.option("--wait", type=click.FloatRange(0), default=15.0, show_default=True,
              help="seconds to wait for the test events in the database")  # fmt: skip
@json_option
def setup_command(client, url, types, mailing_id, events, wait, as_json):
    """One webhook per type at --url with the receiver's credentials, activated and verified.

    Idempotent: a webhook of the type at --url is kept (and updated when its authentication
    differs from the receiver's), a new one is created only where none exists. With
    --mailing-id, each webhook is verified and the test events are looked for in the
    receiver's database (DATABASE_URL, or the running development database)."""
    try:
        names = registration.parse_types(types)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--types") from None
    auth = _authentication()
    _warn(url)
    ledger, why = _ledger(client.client_id) if mailing_id is not None else (None, None)
    results = registration.setup(client, url, auth, names, mailing_id, events, ledger, wait)
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(r) | {"ok": r.ok} for r in results], indent=2))
    else:
        click.echo(f"authentication: {auth.source}")
        click.echo(_table(
            ("type", "webhook", "registration", "activation", "verify", "events", "result"),
            [_setup_row(r) for r in results],
        ))  # fmt: skip
        if mailing_id is None:
            click.echo("not verified: give --mailing-id to have Campaign send test events")
        elif why:
            click.echo(f"test events not looked for: {why}")
    return 0 if all(r.ok for r in results) else 1


def _setup_row(result) -> tuple:
    """One table row of setup's outcome for a type."""
    verify = "" if result.verify_status is None else str(result.verify_status)
    events = ""
    if result.events_sent is not None:
        seen = "?" if result.events_seen is None else result.events_seen
        events = f"{result.events_sent} sent, {seen} stored"
    message = result.error or result.verify_note or ""
    if not message and result.events_seen == 0:
        message = "no test event reached the database"
    if result.extra_ids:
        message = f"{message}; also at this URL: {result.extra_ids}".lstrip("; ")
    return (
        result.type, result.webhook_id or "", result.action, result.activation, verify, events,
        (f"ok ({message})" if message else "ok") if result.ok else message,
    )  # fmt: skip


@group.command(name="status", epilog=CREDENTIALS_HELP)
@api_options
@url_option(False, "only the webhooks at this URL")
@json_option
def status_command(client, url, as_json):
    """Per type: the webhook's status next to the receiver's last event, events and quarantined
    events of the last hour. Exit status 1 when a webhook is suspended."""
    ledger, why = _ledger(client.client_id)
    rows, bodies = registration.status(client, url, ledger)
    if as_json:
        click.echo(json.dumps({"types": [_status_json(r) for r in rows],
                               "quarantined_bodies_last_hour": bodies}, indent=2))  # fmt: skip
    else:
        click.echo(_table(
            ("type", "webhook", "status", "last event", "events 1h", "quarantined 1h", "notes"),
            [_status_row(row) for row in rows],
        ))  # fmt: skip
        if why:
            click.echo(f"receiver's side not shown: {why}")
        elif bodies:
            click.echo(f"{bodies} request bodies (of no type) quarantined in the last hour")
    return 1 if any(row.suspended for row in rows) else 0


def _status_row(row) -> tuple:
    """One table row of status for a type."""
    unknown = "?" if row.events_last_hour is None else ""
    return (
        row.type,
        ", ".join(str(w.get("id")) for w in row.webhooks) or "-",
        ", ".join(str(w.get("status")) for w in row.webhooks) or "-",
        _when(row.last_event) if row.last_event else unknown or "-",
        unknown or row.events_last_hour,
        unknown or row.quarantined_last_hour,
        "; ".join(row.notes),
    )


def _status_json(row) -> dict:
    data = dataclasses.asdict(row)
    data["last_event"] = row.last_event and row.last_event.astimezone(UTC).isoformat()
    return data


@group.command(name="teardown", epilog=f"{OURS_HELP} {CREDENTIALS_HELP}")
@api_options
@url_option(True, "the URL given to setup")
@json_option
def teardown_command(client, url, as_json):
    """Deactivate and delete every webhook whose target URL is exactly --url, nothing else."""
    outcomes = registration.teardown(client, url)
    if as_json:
        click.echo(json.dumps(outcomes, indent=2))
    elif not outcomes:
        click.echo(f"no webhook at {url}")
    else:
        rows = [(o["id"], o["type"], o["result"], o.get("error", "")) for o in outcomes]
        click.echo(_table(("webhook", "type", "result", "error"), rows))
    return 0 if all(o["result"] == "deleted" for o in outcomes) else 1


def _authentication() -> registration.Authentication:
    """The receiver's credentials as Campaign's authentication (see AUTH_HELP)."""
    fallback = None
    if not os.environ.get("DATABASE_URL"):
        fallback = common.development_credentials(common.state_dir(), create=False)
    return registration.receiver_authentication(fallback=fallback)


def _ledger(client_id):
    """The receiver's database to look into, or None and why not."""
    try:
        return registration.DatabaseLedger(common.database_url(), client_id), None
    except (ConfigError, common.DatabaseUnreachable) as error:
        return None, str(error)


def _warn(url):
    """Print why Campaign may not deliver to the URL (on stderr: it is advice, not output)."""
    for warning in registration.url_warnings(url):
        click.echo(f"warning: {warning}", err=True)


def _table(headers, rows) -> str:
    """Left-aligned columns, two blanks apart."""
    cells = [[str(c) for c in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return "\n".join(lines)


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def register(group_):
    group_.add_command(group)
