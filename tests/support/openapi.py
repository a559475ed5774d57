"""What the schemathesis tests check of every answer against receiver/openapi.yaml."""

from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

# The first is left out where a documented 5xx is the point (CONFORMANCE[1:]).
CONFORMANCE = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
