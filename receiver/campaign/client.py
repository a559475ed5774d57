"""A small client of Campaign's REST API for webhooks.

The contract is tests/contract/campaign-rest-webhooks.openapi.json, the vendor's document.

Basic auth with an API user's credentials, form-encoded request bodies, JSON answers. Every
failure is a CampaignError carrying the HTTP status and a message written for the documented
status of that operation; the API user's password is never part of a message or a log line.
"""

import os

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from ..config import ConfigError

DEFAULT_BASE_URL = "https://api.campaign.episerver.net/rest"
# (connect, read) seconds. Verify waits for Campaign to POST to the target URL and for the
# target's answer (the sender allows it about 10 s), so the read timeout leaves room for that.
TIMEOUT = (5.0, 30.0)
RETRIES = 3
BACKOFF = 0.5  # seconds, doubled per retry
PAGE_SIZE = 100  # the API's documented default and our page size for `list`

# Retries, decided per kind of failure:
# - A connection that could not be established sent nothing, so trying again is safe for any
#   method, a create included.
# - 5xx answers and broken reads are retried only for GET, PUT and DELETE, which are idempotent:
#   repeating them leaves the same state. A POST (create, activate, deactivate) is never
#   repeated: a create whose answer was lost would make a second webhook, and a repeated
#   activate would turn a success into "already activated".
# - Verify is a GET but not idempotent in effect (each call sends test events), so it takes the
#   POST policy.
IDEMPOTENT = frozenset({"GET", "PUT", "DELETE"})

GENERIC = {
    401: "Campaign refused the API credentials (401): check CAMPAIGN_API_USER and "
    "CAMPAIGN_API_PASSWORD (or CAMPAIGN_API_CREDENTIALS_FILE)",
    403: "the API user may not manage webhooks of client {client} (403)",
    404: "webhook {id} does not exist (404)",
    409: "webhook {id} belongs to another client than {client} (409): check CAMPAIGN_CLIENT_ID",
    429: "Campaign is rate-limiting these requests (429); try again in a minute",
}
# The message for each status the OpenAPI document lists for an operation.
DOCUMENTED = {
    ("create", 400): "Campaign refused to create the webhook (400): the target URL, the type "
    "or the format was wrong",
    ("update", 400): "Campaign refused to update webhook {id} (400)",
    ("activate", 400): "webhook {id} is already activated (400)",
    ("deactivate", 400): "webhook {id} is not activated (400), so it cannot be deactivated",
    ("delete", 400): "webhook {id} is activated (400): deactivate it before deleting it",
    ("verify", 400): "Campaign does not support verifying webhook {id} for its type (400)",
}


class CampaignError(Exception):
    """A failed API call: `status` is the HTTP status (None when no answer came)."""

    def __init__(self, message, status=None, operation=None):
        super().__init__(message)
        self.status = status
        self.operation = operation


def api_credentials(environ=None) -> tuple[str, str]:
    """The API user and password: CAMPAIGN_API_USER/_PASSWORD or CAMPAIGN_API_CREDENTIALS_FILE."""
    env = os.environ if environ is None else environ
    path = env.get("CAMPAIGN_API_CREDENTIALS_FILE")
    user, password = env.get("CAMPAIGN_API_USER"), env.get("CAMPAIGN_API_PASSWORD")
    if path and (user or password):
        raise ConfigError(
            "set CAMPAIGN_API_USER/CAMPAIGN_API_PASSWORD or CAMPAIGN_API_CREDENTIALS_FILE, not both"
        )
    if path:
        try:
            with open(path, encoding="utf-8") as secrets:
                line = secrets.readline().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as error:
            reason = getattr(error, "strerror", None) or "not UTF-8 text"
            raise ConfigError(
                f"CAMPAIGN_API_CREDENTIALS_FILE: cannot read {path}: {reason}"
            ) from None
        user, _, password = line.partition(":")
        if not user or not password:
            # Never echo the line: it holds the password.
            raise ConfigError("CAMPAIGN_API_CREDENTIALS_FILE: the first line must be user:password")
        return user, password
    if not user or not password:
        raise ConfigError(
            "no Campaign API credentials: set CAMPAIGN_API_USER and CAMPAIGN_API_PASSWORD, or "
            "CAMPAIGN_API_CREDENTIALS_FILE (a file whose first line is user:password)"
        )
    return user, password


def _session(auth, headers, retry: Retry) -> requests.Session:
    """A session with the API user's Basic auth and the given retry policy."""
    session = requests.Session()
    session.auth = auth
    session.headers.update({"Accept": "application/json", **headers})
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def _retry(idempotent: bool) -> Retry:
    """Connection errors always; broken reads and 5xx only for the idempotent session."""
    again = RETRIES if idempotent else 0
    return Retry(
        total=RETRIES,
        connect=RETRIES,
        read=again,
        status=again,
        other=0,
        allowed_methods=IDEMPOTENT,
        status_forcelist=(500, 502, 503, 504) if idempotent else (),
        backoff_factor=BACKOFF,
        respect_retry_after_header=True,
        raise_on_status=False,  # the last answer is returned and turned into a CampaignError
    )


class CampaignClient:
    """The webhook operations of one Campaign client (`client_id`)."""

    def __init__(self, client_id, auth, base_url=DEFAULT_BASE_URL, timeout=TIMEOUT, headers=None):
        self.client_id = int(client_id)
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        headers = dict(headers or {})
        self._idempotent = _session(auth, headers, _retry(idempotent=True))
        self._once = _session(auth, headers, _retry(idempotent=False))

    def close(self):
        """Close both sessions' connections."""
        self._idempotent.close()
        self._once.close()

    def list_webhooks(self) -> list[dict]:
        """Every webhook of the client, page by page (oldest first)."""
        webhooks, offset = [], 0
        while True:
            params = {"sort": "ID", "direction": "ASC", "offset": offset, "limit": PAGE_SIZE}
            page = self._call("list", "GET", "", params=params).json()
            webhooks.extend(page)
            if len(page) < PAGE_SIZE:
                return webhooks
            offset += len(page)

    def create_webhook(self, webhook_type, target_url, authentication: str) -> dict:
        """Create a webhook (status `created`); `authentication` is the JSON text."""
        form = _form(webhook_type, target_url, authentication)
        return self._call("create", "POST", "", data=form).json()

    def update_webhook(self, webhook_id, webhook_type, target_url, authentication: str) -> dict:
        """Replace a webhook's type, target URL and authentication."""
        form = _form(webhook_type, target_url, authentication)
        return self._call("update", "PUT", f"/{int(webhook_id)}", data=form, id=webhook_id).json()

    def activate(self, webhook_id) -> dict:
        """Start the webhook's deliveries."""
        return self._call("activate", "POST", f"/{int(webhook_id)}/activate", id=webhook_id).json()

    def deactivate(self, webhook_id) -> dict:
        """Stop the webhook's deliveries."""
        path = f"/{int(webhook_id)}/deactivate"
        return self._call("deactivate", "POST", path, id=webhook_id).json()

    def delete(self, webhook_id):
        """Delete a deactivated webhook."""
        self._call("delete", "DELETE", f"/{int(webhook_id)}", id=webhook_id)

    def verify(self, webhook_id, mailing_id, number_of_events=1) -> list[dict]:
        """Have Campaign POST test events to the target URL; its answers, one per webhook."""
        params = {"mailingId": int(mailing_id), "numberOfEvents": int(number_of_events)}
        path = f"/{int(webhook_id)}/verify"
        answer = self._call("verify", "GET", path, params=params, id=webhook_id, once=True)
        body = answer.json()
        return body if isinstance(body, list) else [body]

    def _call(self, operation, method, path, id=None, once=False, **kwargs) -> requests.Response:
        """One request; a CampaignError for anything but a 2xx answer."""
        session = self._once if once or method not in IDEMPOTENT else self._idempotent
        url = f"{self.base_url}/{self.client_id}/webhooks{path}"
        try:
            answer = session.request(method, url, timeout=self.timeout, **kwargs)
        except requests.RequestException as error:
            raise CampaignError(
                f"no answer from {self.base_url} ({type(error).__name__}); check "
                "CAMPAIGN_API_URL and the network",
                operation=operation,
            ) from None
        if answer.ok:
            return answer
        raise CampaignError(self._message(operation, answer, id), answer.status_code, operation)

    def _message(self, operation, answer, webhook_id) -> str:
        """The human message for an error answer (never its body: it may echo credentials)."""
        status = answer.status_code
        template = DOCUMENTED.get((operation, status)) or GENERIC.get(status)
        if status == 404 and webhook_id is None:
            template = (
                "Campaign answered 404 to {operation}: check CAMPAIGN_API_URL and "
                "CAMPAIGN_CLIENT_ID"
            )
        if template is None:
            retried = (
                status >= 500 and answer.request.method in IDEMPOTENT and operation != "verify"
            )
            template = (
                f"Campaign answered {status} {answer.reason or ''}".rstrip() + " to {operation}"
            )
            template += f" (after {RETRIES} retries)" if retried else ""
        return template.format(id=webhook_id, client=self.client_id, operation=operation)


def _form(webhook_type, target_url, authentication) -> dict:
    """The form fields of create and update (WebhookRequestData)."""
    return {
        "type": webhook_type,
        "format": "json",
        "targetUrl": target_url,
        "authentication": authentication,
    }
