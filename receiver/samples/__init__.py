"""The vendor's documented payloads, shipped with the package (the development banner posts one)."""

import importlib.resources


def path(name: str):
    """A Traversable for the sample `name` (e.g. "open-batch.json")."""
    return importlib.resources.files(__name__) / name


def read(name: str) -> bytes:
    """The sample `name` as bytes."""
    return path(name).read_bytes()
