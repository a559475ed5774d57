"""From a request body to validated events: JSON decoding, marshmallow schemas, replay."""
