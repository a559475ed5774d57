"""receiver/openapi.yaml, read without an app: its examples are the vendor's documented samples.

The spec against the running app (routes, limits, schemathesis): tests/integration/web/test_fuzz.py.
"""

import json
import pathlib

import yaml

import receiver

from support import sample

SPEC = pathlib.Path(receiver.__file__).resolve().parent / "openapi.yaml"


def test_the_spec_examples_are_the_vendor_samples():
    spec = yaml.safe_load(SPEC.read_text(encoding="utf-8"))
    request = spec["paths"]["/webhook"]["post"]["requestBody"]
    examples = request["content"]["application/json"]["examples"]
    assert examples["documentedOpens"]["value"] == json.loads(sample("open-batch.json"))
    assert examples["documentedBounce"]["value"] == json.loads(sample("bounce-event.json"))
