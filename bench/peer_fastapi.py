"""The peer of the throughput ratio: the receiver's contract on FastAPI + pydantic + asyncpg.

Not part of the product, and not a receiver anyone should run: it has no quarantine, no
metrics, no deadlines. It is what issue #13 measures us against, the same work per batch done
on the fastest common Python stack, so that `bench/run.py --peer` prints the ratio from one run
on one machine state: Basic Auth compared in constant time, a batch of up to 100 events
validated (type, clientId, created, id, the numeric ids; every other field kept), one
`INSERT … SELECT FROM unnest(…) ON CONFLICT DO NOTHING` per batch into the receiver's own
`events` table (same key, the same SHA-256 content key for events without an id), and 200
only after the commit.

Run by bench/run.py under uvicorn (uvloop, httptools), as many workers as the receiver's:
    DATABASE_URL=... PEER_BASIC_AUTH=user:password uvicorn --app-dir bench peer_fastapi:app
Needs the `bench-peer` extra (fastapi, uvicorn[standard], asyncpg).
"""

import base64
import hashlib
import hmac
import os
from contextlib import asynccontextmanager

import asyncpg
import orjson
from fastapi import FastAPI, Request, Response
from psycopg.conninfo import conninfo_to_dict
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

MAX_BATCH = 100
USER, _, PASSWORD = os.environ["PEER_BASIC_AUTH"].partition(":")
EXPECTED = hashlib.sha256(b"Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode())).digest()

# The body goes to PostgreSQL as one jsonb parameter, the keys as one array: asyncpg encodes
# an array element by element in its Cython codec (~0.5 us each), so 15 column arrays of 100
# cost it ~1 ms of CPU per batch, more than everything else here together. This is how the
# receiver sends its rows too (one JSON document: receiver/storage/events.py).
INSERT = """
INSERT INTO events (event_key, event_id, client_id, type, created_at, mailing_id, user_list_id,
    subscription_id, recipient_id, mail_id, device, operating_system, browser, remote_address,
    payload)
SELECT k.key, e->>'id', (e->>'clientId')::bigint, e->>'type',
    to_timestamp((e->>'created')::bigint / 1000) + (e->>'created')::bigint % 1000 * interval '1 ms',
    (e->>'mailingId')::bigint, (e->>'userListId')::bigint, (e->>'subscriptionId')::bigint,
    e->>'recipientId', e->>'mailId', e->>'device', e->>'operatingSystem', e->>'browser',
    e->>'remoteAddress', e
FROM jsonb_array_elements($2::jsonb) WITH ORDINALITY AS a(e, n)
JOIN unnest($1::text[]) WITH ORDINALITY AS k(key, n) USING (n)
ON CONFLICT (client_id, type, created_at, event_key) DO NOTHING
"""


class Event(BaseModel):
    """What decides acceptance and identity; everything else is kept as it came."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    type: str = Field(min_length=1)
    client_id: int = Field(alias="clientId")
    created: int
    id: str | None = None
    mailing_id: int | None = Field(None, alias="mailingId")
    user_list_id: int | None = Field(None, alias="userListId")
    subscription_id: int | None = Field(None, alias="subscriptionId")


BATCH = TypeAdapter(list[Event])


async def keep(conn):
    """The pool's reset on release: nothing to reset."""


@asynccontextmanager
async def lifespan(app):
    # DATABASE_URL as the receiver takes it (a URL or libpq's key=value), told to asyncpg.
    parts = conninfo_to_dict(os.environ["DATABASE_URL"])
    parts["database"] = parts.pop("dbname", None)
    # No reset query on release (asyncpg's default is one more round trip per request): the
    # peer leaves no session state behind.
    app.state.pool = await asyncpg.create_pool(**parts, min_size=4, max_size=4, reset=keep)
    yield
    await app.state.pool.close()


app = FastAPI(lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)


def answer(status, body):
    return Response(orjson.dumps(body), status, media_type="application/json")


@app.post("/webhook")
async def webhook(request: Request):
    token = request.headers.get("authorization", "").encode()
    if not hmac.compare_digest(hashlib.sha256(token).digest(), EXPECTED):
        return answer(401, {"error": "authentication required"})
    body = await request.body()
    items = orjson.loads(body)
    if not isinstance(items, list):
        items = [items]
    if len(items) > MAX_BATCH:
        return answer(413, {"error": f"more than {MAX_BATCH} events"})
    events = BATCH.validate_python(items)  # a ValidationError is FastAPI's 500; not sent here
    keys = [
        event.id
        or "sha256:" + hashlib.sha256(orjson.dumps(item, option=orjson.OPT_SORT_KEYS)).hexdigest()
        for item, event in zip(items, events, strict=True)
    ]
    async with request.app.state.pool.acquire() as conn:
        status = await conn.execute(INSERT, keys, body.decode())  # autocommit: committed on return
    stored = int(status.rsplit(" ", 1)[1])
    return answer(
        200, {"received": len(items), "stored": stored, "duplicates": len(items) - stored}
    )


@app.get("/readyz")
async def ready(request: Request):
    async with request.app.state.pool.acquire() as conn:
        await conn.fetchval("SELECT 1")
    return answer(200, {"status": "ready"})
