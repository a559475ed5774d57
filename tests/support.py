"""Helpers shared by the tests (fixtures live in conftest.py)."""

import base64
import json
import pathlib

SAMPLES = pathlib.Path(__file__).resolve().parent / "samples"
USER, PASSWORD = "campaign", "s3cret-pass"


def basic(user=USER, password=PASSWORD):
    """An Authorization header for Basic Auth."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def sample(name) -> bytes:
    """A documented vendor payload from tests/samples/, as bytes."""
    return (SAMPLES / name).read_bytes()


def event(kind="open", **fields):
    """A minimal valid event of `kind`; keyword arguments add or replace fields."""
    base = {"type": kind, "clientId": 123456789001, "created": 1564590054000}
    base.update(fields)
    return base


def body(*events) -> bytes:
    return json.dumps(list(events)).encode()
