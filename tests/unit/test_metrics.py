"""metrics.observe_many: the same histogram as one observe() per amount."""

import pytest
from prometheus_client import CollectorRegistry, Histogram

from receiver.observability import metrics

BUCKETS = (1, 5, 10, 30, 60)


def samples(histogram):
    return {(s.name, s.labels.get("le")): s.value for s in histogram.collect()[0].samples}


@pytest.mark.parametrize(
    "amounts",
    [[], [0.0], [1.0, 1.0000001, 5.0, 4.99, 60.0, 61.0, 1e9], [0.5] * 100, list(range(100))],
    ids=["none", "zero", "on-and-around-bounds", "one-bucket", "spread"],
)
def test_observe_many_gives_what_observe_gives(amounts):
    one, many = (
        Histogram("lag", "lag", buckets=BUCKETS, registry=CollectorRegistry()) for _ in range(2)
    )
    for amount in amounts:
        one.observe(amount)
    metrics.observe_many(many, amounts)
    assert samples(many) == pytest.approx(samples(one))
    assert samples(many)[("lag_count", None)] == len(amounts)


def test_observe_many_refuses_a_labelled_parent_like_observe():
    labelled = Histogram("by", "by", ["x"], buckets=BUCKETS, registry=CollectorRegistry())
    with pytest.raises(ValueError):
        labelled.observe(1)
    with pytest.raises(ValueError):
        metrics.observe_many(labelled, [1])
