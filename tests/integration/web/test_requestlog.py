"""The request's log line (receiver/web/requestlog.py): why an answer was not a 200."""

from support import basic, body, event, post


def test_the_reason_of_a_503_is_logged(make_client, request_lines):
    """An operator saw only `outcome: unavailable`, never why."""
    client = make_client(database_url="postgresql://postgres@127.0.0.1:1/none", pool_timeout=0.3)
    assert post(client, body(event())).status_code == 503
    (line,) = request_lines
    assert line["outcome"] == "unavailable"
    assert "no database connection" in line["error"]


def test_the_reason_of_a_refusal_is_logged(client, request_lines):
    assert post(client, b"{not json").status_code == 400
    assert post(client, body(event()), basic(password="wrong")).status_code == 401
    assert [line["outcome"] for line in request_lines] == ["bad_body", "unauthorized"]
    assert request_lines[0]["error"].startswith("not valid JSON")
    assert request_lines[1]["error"] == "authentication required"


def test_a_stored_batch_logs_its_counts_and_no_error(client, request_lines):
    assert post(client, body(event(id="fine"))).status_code == 200
    (line,) = request_lines
    assert line["stored"] == 1
    assert "error" not in line
