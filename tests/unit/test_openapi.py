"""receiver/openapi.yaml, read without an app: its examples are the vendor's documented samples.

The spec against the running app (routes, limits, schemathesis): tests/integration/web/test_fuzz.py,
and for the change feed tests/integration/web/test_feed_openapi.py.
"""

import json
import pathlib

import yaml

import receiver
from receiver.storage import feed as storage_feed
from receiver.web import feed

from support import sample

SPEC = pathlib.Path(receiver.__file__).resolve().parent / "openapi.yaml"


def test_the_spec_examples_are_the_vendor_samples():
    spec = yaml.safe_load(SPEC.read_text(encoding="utf-8"))
    request = spec["paths"]["/webhook"]["post"]["requestBody"]
    examples = request["content"]["application/json"]["examples"]
    assert examples["documentedOpens"]["value"] == json.loads(sample("open-batch.json"))
    assert examples["documentedBounce"]["value"] == json.loads(sample("bounce-event.json"))


def test_the_feeds_documented_limits_and_credentials_are_the_codes():
    spec = yaml.safe_load(SPEC.read_text(encoding="utf-8"))
    parameters = spec["components"]["parameters"]
    limit, wait = parameters["FeedLimit"]["schema"], parameters["FeedWait"]["schema"]
    assert (limit["minimum"], limit["maximum"], limit["default"]) == (
        1,
        feed.MAX_LIMIT,
        feed.DEFAULT_LIMIT,
    )
    assert (wait["minimum"], wait["maximum"], wait["default"]) == (0, feed.MAX_WAIT_SECONDS, 0)
    assert parameters["FeedClient"]["schema"]["maximum"] == storage_feed.BIGINT_MAX
    assert spec["components"]["securitySchemes"]["feedBasicAuth"]["scheme"] == "basic"
    realm = feed.CHALLENGE["WWW-Authenticate"]
    header = spec["components"]["responses"]["FeedUnauthorized"]["headers"]["WWW-Authenticate"]
    assert realm.startswith(header["schema"]["pattern"].lstrip("^"))
    for path, key in (("/feed/status-changes", "changes"), ("/feed/events", "events")):
        operation = spec["paths"][path]["get"]
        assert operation["security"] == [{"feedBasicAuth": []}]
        page = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        assert spec["components"]["schemas"][page.rsplit("/", 1)[1]]["required"][0] == key
        assert {"400", "401", "404", "429", "503"} <= set(operation["responses"])
