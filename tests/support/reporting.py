"""Hand-made events for the reporting tests (tests/integration/reporting/)."""

from support import body, event, post

CLIENT, OTHER_CLIENT = 123456789001, 123456789002
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z, epoch ms
MINUTE = 60_000


def deliver(client, *events):
    """POST the events as one batch; the webhook must take it."""
    response = post(client, body(*events))
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def status_event(kind, recipient, created, event_id, mailing=1001, client_id=CLIENT, **fields):
    """A status-changing (or any) event of one recipient, with an id (its event_key)."""
    return event(
        kind,
        id=event_id,
        recipientId=recipient,
        created=created,
        mailingId=mailing,
        clientId=client_id,
        **fields,
    )
