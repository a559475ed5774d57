"""A fake of Campaign's webhook REST API with in-memory state, for the end-to-end tests.

It behaves as the OpenAPI document and campaign-webhooks.md describe: Basic auth of an API user,
form-encoded bodies, `archive` created and listed back as `archived`, delete only when not
activated, 404 for an unknown webhook and 409 for another client's. Its verify POSTs test events
of the webhook's type to the real target URL the way the sender does (a JSON list, the
webhook's Basic Auth or keyAuth header) and reports the target's status and body.
"""

import base64
import itertools
import json
import threading
from datetime import UTC, datetime

import requests
from flask import Flask, jsonify, request
from werkzeug.serving import make_server

from . import free_port

TYPES = {
    "open", "click", "sent", "bounce", "unsubscribe", "spamcomplaint", "singleoptin",
    "confirmedoptin", "doubleoptin", "blocklist", "archive", "filteredbyblocklist",
}  # fmt: skip
LISTED_AS = {"archive": "archived"}


class FakeCampaign:
    """The API for `client_id`, served on a free loopback port in a thread."""

    def __init__(self, client_id, user, password):
        self.client_id = client_id
        self.credentials = (user, password)
        self.webhooks = {}  # id -> webhook dict (the API's RestWebhook, with authentication)
        self.calls = []  # (method, path) of every request, to count creates and updates
        self.deliveries = []  # (status, body) of every verify POST to a target
        self._ids = itertools.count(1000)
        self._lock = threading.Lock()
        port = free_port()
        self.url = f"http://127.0.0.1:{port}/rest"
        self._server = make_server("127.0.0.1", port, self._app(), threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self):
        self._server.shutdown()
        self._thread.join(timeout=10)

    def add(self, client_id, webhook_type, target_url, status="created"):
        """A webhook put there by someone else (another client, or by hand)."""
        webhook = self._new(client_id, webhook_type, target_url, {"type": "none"})
        webhook["status"] = status
        return webhook

    def count(self, method, suffix=""):
        """How many calls of `method` were made to paths ending in `suffix`."""
        return sum(1 for m, p in self.calls if m == method and p.endswith(suffix))

    def _new(self, client_id, webhook_type, target_url, authentication):
        now = datetime.now(UTC).isoformat()
        with self._lock:
            webhook = {
                "id": next(self._ids),
                "type": LISTED_AS.get(webhook_type, webhook_type),
                "status": "created",
                "format": "json",
                "targetUrl": target_url,
                "authentication": authentication,
                "created": now,
                "modified": now,
                "clientId": client_id,  # kept out of the answers
            }
            self.webhooks[webhook["id"]] = webhook
        return webhook

    def _app(self):
        app = Flask("fake_campaign")
        fake = self

        def shown(webhook):
            return {k: v for k, v in webhook.items() if k != "clientId"}

        def authorised():
            header = request.headers.get("Authorization", "")
            expected = base64.b64encode(":".join(fake.credentials).encode()).decode()
            return header == f"Basic {expected}"

        def find(client_id, webhook_id):
            """The webhook, or the documented error answer."""
            webhook = fake.webhooks.get(webhook_id)
            if webhook is None or webhook["status"] == "deleted":
                return None, ("", 404)
            if webhook["clientId"] != client_id:
                return None, ("", 409)
            return webhook, None

        def form_fields():
            """The create/update fields; None when the type, format or URL is wrong."""
            form = request.form
            webhook_type, target = form.get("type"), form.get("targetUrl", "")
            if webhook_type not in TYPES or form.get("format") != "json":
                return None
            if not target.startswith(("http://", "https://")):
                return None
            return webhook_type, target, json.loads(form.get("authentication", '{"type":"none"}'))

        @app.before_request
        def check():
            fake.calls.append((request.method, request.path))
            if not authorised():
                return "", 401
            return None

        @app.get("/rest/<int:client_id>/webhooks")
        def list_webhooks(client_id):
            offset = int(request.args.get("offset", 0))
            limit = int(request.args.get("limit", 100))
            mine = [shown(w) for w in fake.webhooks.values() if w["clientId"] == client_id]
            return jsonify(mine[offset : offset + limit])

        @app.post("/rest/<int:client_id>/webhooks")
        def create(client_id):
            fields = form_fields()
            if fields is None:
                return "", 400
            return jsonify(shown(fake._new(client_id, *fields))), 201

        @app.put("/rest/<int:client_id>/webhooks/<int:webhook_id>")
        def update(client_id, webhook_id):
            webhook, error = find(client_id, webhook_id)
            if error:
                return error
            fields = form_fields()
            if fields is None:
                return "", 400
            webhook_type, target, authentication = fields
            webhook.update(
                type=LISTED_AS.get(webhook_type, webhook_type),
                targetUrl=target,
                authentication=authentication,
                modified=datetime.now(UTC).isoformat(),
            )
            return jsonify(shown(webhook))

        @app.post("/rest/<int:client_id>/webhooks/<int:webhook_id>/activate")
        def activate(client_id, webhook_id):
            webhook, error = find(client_id, webhook_id)
            if error:
                return error
            if webhook["status"] == "activated":
                return "", 400
            webhook["status"] = "activated"
            return jsonify(shown(webhook))

        @app.post("/rest/<int:client_id>/webhooks/<int:webhook_id>/deactivate")
        def deactivate(client_id, webhook_id):
            webhook, error = find(client_id, webhook_id)
            if error:
                return error
            if webhook["status"] != "activated":
                return "", 400
            webhook["status"] = "deactivated"
            return jsonify(shown(webhook))

        @app.delete("/rest/<int:client_id>/webhooks/<int:webhook_id>")
        def delete(client_id, webhook_id):
            webhook, error = find(client_id, webhook_id)
            if error:
                return error
            if webhook["status"] == "activated":
                return "", 400
            webhook["status"] = "deleted"
            return "", 204

        @app.get("/rest/<int:client_id>/webhooks/<int:webhook_id>/verify")
        def verify(client_id, webhook_id):
            webhook, error = find(client_id, webhook_id)
            if error:
                return error
            count = int(request.args.get("numberOfEvents", 1))
            mailing_id = int(request.args["mailingId"])
            status, body = fake._deliver(webhook, mailing_id, count)
            return jsonify([{
                "id": webhook_id, "httpStatusCode": status, "responseBody": body,
                "numberOfEvents": count, "targetUrl": webhook["targetUrl"],
            }])  # fmt: skip

        return app

    def _deliver(self, webhook, mailing_id, count):
        """POST `count` test events to the target as the sender does; its status and body."""
        created = int(datetime.now(UTC).timestamp() * 1000)
        event_type = {v: k for k, v in LISTED_AS.items()}.get(webhook["type"], webhook["type"])
        events = [
            {
                "type": event_type,
                "id": f"verify-{webhook['id']}-{created}-{n}",
                "clientId": webhook["clientId"],
                "mailingId": mailing_id,
                "recipientId": "test@example.com",
                "created": created,
            }
            for n in range(count)
        ]
        headers, auth = {}, webhook["authentication"]
        if auth.get("type") == "basicAuth":
            token = base64.b64encode(f"{auth['userName']}:{auth['password']}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        elif auth.get("type") == "keyAuth":
            headers[auth["key"]] = auth["passphrase"]
        try:
            answer = requests.post(
                webhook["targetUrl"], data=json.dumps(events), headers=headers, timeout=10
            )
        except requests.RequestException as error:
            return 0, str(error)
        self.deliveries.append((answer.status_code, answer.text))
        return answer.status_code, answer.text
