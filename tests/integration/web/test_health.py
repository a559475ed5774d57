"""The probes (receiver/web/health.py): /readyz on a connection of its own, one check a second."""

from receiver.storage import db


def test_readyz_answers_while_every_webhook_connection_is_busy(make_client):
    """Probes took one of the webhook's few connections per call; they have their own."""
    client = make_client(pool_min_size=0, pool_max_size=1, pool_timeout=0.3)
    pool = db.get_pool(client.application)
    held = pool.getconn()
    try:
        response = client.get("/readyz")
    finally:
        pool.putconn(held)
    assert response.status_code == 200
    assert response.json == {"status": "ready"}


def test_a_flood_of_probes_costs_one_check_a_second(make_client):
    client = make_client()
    answers = [client.get("/readyz") for _ in range(50)]
    assert {a.status_code for a in answers} == {200}
    probe_pool = db.get_probe_pool(client.application)
    assert probe_pool.get_stats().get("requests_num", 0) == 1
    assert db.get_pool(client.application).get_stats().get("requests_num", 0) == 0
