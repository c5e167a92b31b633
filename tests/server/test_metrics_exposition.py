"""The relay's own metrics (``server.metrics``) expose what ``prometheus_client`` exposed,
byte for byte (the serving process no longer loads ``prometheus_client``:
``tests/server/test_idle_footprint.py``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from server import metrics as own
from server.app import create_app
from server.settings import load_settings

prom = pytest.importorskip("prometheus_client")
prom_core = pytest.importorskip("prometheus_client.core")


def _exercise(lib: Any, core: Any) -> bytes:
    """The same metrics and operations on ``lib`` (either implementation)."""
    r = lib.CollectorRegistry(auto_describe=True)
    c = lib.Counter(
        "vox_a", 'help with \\ and\nnewline and "quotes"', ["route", "status"], registry=r
    )
    c.labels('/v1/x"y\\z\nw', 200).inc()
    c.labels("/v1/z", "404").inc(2.5)
    c.labels("/v1/z", "404").inc()
    lib.Counter("vox_plain", "plain", registry=r).inc()
    lib.Counter("vox_suffixed_total", "named with its suffix", registry=r)
    lib.Counter("vox_unused", "labels, never used", ["reason"], registry=r)
    g = lib.Gauge("vox_g", "a gauge", registry=r)
    g.set(7)
    g.inc(3)
    g.dec(0.5)
    lib.Gauge("vox_f", "from a function", registry=r).set_function(lambda: 3)
    lib.Gauge("vox_gl", "labelled, unused", ["k"], registry=r)
    h = lib.Histogram("vox_h", "latency", ["route"], registry=r)
    for amount in (0.0, 0.004, 0.005, 0.3, 11.0, 1e-9):
        h.labels("r").observe(amount)
    big = lib.Histogram("vox_big", "sizes", buckets=(1, 2, 1e7, 123456789.0), registry=r)
    for amount in (1, 1.5, 3, 2e7, 1e9):
        big.observe(amount)
    lib.Histogram("vox_empty", "no observation", registry=r)

    class Custom:
        def collect(self) -> Iterator[Any]:
            gauge = core.GaugeMetricFamily("vox_cg", "custom gauge", labels=["kind"])
            gauge.add_metric(["a"], 1)
            gauge.add_metric(["b"], 0)
            yield gauge
            counter = core.CounterMetricFamily("vox_cc", "custom counter", labels=["reason"])
            counter.add_metric(["x"], 2)
            yield counter
            yield core.CounterMetricFamily("vox_dd", "custom, one value", value=4)

    custom = Custom()
    r.register(custom)
    text: bytes = lib.generate_latest(r)
    r.unregister(custom)
    rest: bytes = lib.generate_latest(r)
    return text + rest


def test_the_exposition_is_prometheus_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "time", lambda: 1764532800.123456)  # the _created samples
    assert _exercise(own, own) == _exercise(prom, prom_core)


def test_bulk_observations_expose_what_single_ones_do() -> None:
    amounts = [0.0, 0.125, 0.25, 0.375, 2.0, 9.0, -1.0]  # eighths: every sum is exact
    registries = []
    for bulk in (False, True):
        registry = own.CollectorRegistry()
        histogram = own.BulkHistogram(
            "lat", "latency", buckets=(0.125, 0.25, 1.0), registry=registry
        )
        if bulk:
            histogram.observe_many(amounts[:3])
            histogram.observe_many(amounts[3:])
        else:
            for amount in amounts:
                histogram.observe(amount)
        registries.append(registry)
    assert registries[0].get_sample_value("lat_count") == 7
    lines = [
        [x for x in own.generate_latest(r).decode().splitlines() if "_created" not in x]
        for r in registries
    ]
    assert lines[0] == lines[1]


def test_a_metric_name_is_registered_once_per_registry() -> None:
    registry = own.CollectorRegistry()
    own.Counter("vox_x", "x", registry=registry)
    with pytest.raises(ValueError, match="Duplicated"):
        own.Gauge("vox_x_total", "clash", registry=registry)
    own.Counter("vox_x", "another app's registry", registry=own.CollectorRegistry())


def test_a_relay_reads_its_samples_by_name_and_labels(tmp_path: Any) -> None:
    app = create_app(load_settings(environ={}, data_dir=tmp_path))
    metrics = app.state.relay.metrics
    metrics.prekeys_claimed.labels("one_time").inc()
    registry = metrics.registry
    assert registry.get_sample_value("vox_prekeys_claimed_total", {"kind": "one_time"}) == 1
    assert registry.get_sample_value("vox_prekeys_claimed_total", {"kind": "kem"}) is None
    assert b"# TYPE vox_http_request_seconds histogram\n" in metrics.render()
