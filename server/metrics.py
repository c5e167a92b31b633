"""Prometheus metrics on a per-app :class:`CollectorRegistry` (``RelayState.metrics``).

Several apps can live in one process (tests), so there is no global registry. Other layers
add their own collectors to ``RelayState.metrics.registry``::

    from server.metrics import Counter
    sends = Counter("vox_sends_accepted", "...", registry=relay_state(app).metrics.registry)

``GET /metrics`` exposes everything registered there, in Prometheus' text format 0.0.4.

The collectors (:class:`Counter`, :class:`Gauge`, :class:`Histogram`, and the
:class:`CounterMetricFamily` / :class:`GaugeMetricFamily` that custom collectors yield) and
:func:`generate_latest` are the relay's own: the subset of ``prometheus_client``'s API that the
relay uses, with the same exposition byte for byte (``tests/server/test_metrics_exposition.py``
compares them), so that the serving process does not load ``prometheus_client`` (about
1.3 MB resident with the HTTP servers, WSGI and gzip modules its exposition imports).
"""

from __future__ import annotations

import math
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple, Protocol, Self

from server.clock import Clock

__all__ = [
    "BulkHistogram",
    "Collector",
    "CollectorRegistry",
    "Counter",
    "CounterMetricFamily",
    "Gauge",
    "GaugeMetricFamily",
    "Histogram",
    "MetricFamily",
    "Metrics",
    "generate_latest",
]

INF = float("inf")
#: Reads the ``<name>_created`` samples: when a metric (or a labelled child) was created, in
#: the system's time as ``prometheus_client`` wrote it (not a test's shifted relay clock).
_CREATED = Clock()
#: ``prometheus_client.Histogram``'s default buckets.
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


class Sample(NamedTuple):
    """One exposed value (the shape of ``prometheus_client``'s samples)."""

    name: str
    labels: dict[str, str]
    value: float
    timestamp: float | None = None


class MetricFamily:
    """A metric's name (without ``_total``), help, type and samples, as collected."""

    def __init__(self, name: str, documentation: str, typ: str) -> None:
        self.name = name
        self.documentation = documentation
        self.type = typ
        self.samples: list[Sample] = []


class _ScrapedFamily(MetricFamily):
    """A family that a custom collector fills at scrape time (``value`` or ``add_metric``)."""

    _type = ""
    _suffix = ""

    def __init__(
        self,
        name: str,
        documentation: str,
        value: float | None = None,
        labels: Sequence[str] = (),
    ) -> None:
        super().__init__(name.removesuffix(self._suffix), documentation, self._type)
        self._labelnames = tuple(labels)
        if value is not None:
            self.add_metric([], value)

    def add_metric(self, labels: Sequence[str], value: float) -> None:
        """One sample with these label values."""
        labelled = dict(zip(self._labelnames, labels, strict=True))
        self.samples.append(Sample(self.name + self._suffix, labelled, value))


class CounterMetricFamily(_ScrapedFamily):
    """A counter read by a custom collector at scrape time (exposed as ``<name>_total``)."""

    _type = "counter"
    _suffix = "_total"


class GaugeMetricFamily(_ScrapedFamily):
    """A gauge read by a custom collector at scrape time."""

    _type = "gauge"


class Collector(Protocol):
    """Anything a registry collects from: yields :class:`MetricFamily` objects."""

    def collect(self) -> Iterable[MetricFamily]: ...


class CollectorRegistry:
    """The collectors of one app, exposed in registration order."""

    def __init__(self, auto_describe: bool = True) -> None:
        self._collectors: dict[Collector, frozenset[str]] = {}
        self._lock = threading.Lock()

    def register(self, collector: Collector) -> None:
        """Add a collector; a metric name already exposed here is refused (``ValueError``)."""
        names = frozenset(_names(collector))
        with self._lock:
            for other in self._collectors.values():
                taken = names & other
                if taken:
                    raise ValueError(f"Duplicated timeseries in CollectorRegistry: {taken}")
            self._collectors[collector] = names

    def unregister(self, collector: Collector) -> None:
        """Remove a collector."""
        with self._lock:
            del self._collectors[collector]

    def get_sample_value(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        """The value of one sample (``None`` when there is none): tests read metrics so."""
        for family in self.collect():
            for sample in family.samples:
                if sample.name == name and sample.labels == (labels or {}):
                    return sample.value
        return None

    def collect(self) -> Iterable[MetricFamily]:
        """Every collector's metrics, collected now."""
        with self._lock:
            collectors = list(self._collectors)
        for collector in collectors:
            yield from collector.collect()


def _names(collector: Collector) -> Iterable[str]:
    if isinstance(collector, _Metric):
        return collector._exposed_names()
    names: list[str] = []
    for family in collector.collect():
        names.append(family.name)
        names.extend(sample.name for sample in family.samples)
    return names


class _Value:
    """A float that threads update under a lock (the group-commit writer has its own)."""

    __slots__ = ("_lock", "_value")

    def __init__(self) -> None:
        self._value = 0.0
        self._lock = threading.Lock()

    def inc(self, amount: float) -> None:
        with self._lock:
            self._value += amount

    def set(self, value: float) -> None:
        with self._lock:
            self._value = value

    def get(self) -> float:
        with self._lock:
            return self._value


class _Metric:
    """A metric with optional labels: unlabelled, it is its own (only) child."""

    _type = ""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        registry: CollectorRegistry | None = None,
    ) -> None:
        self._name = name.removesuffix("_total") if self._type == "counter" else name
        self._documentation = documentation
        self._labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], Self] = {}
        self._children_lock = threading.Lock()
        self._created = _CREATED.time()
        if not self._labelnames:
            self._init_values()
        if registry is not None:
            registry.register(self)

    def _init_values(self) -> None:
        raise NotImplementedError

    def _samples(self) -> list[tuple[str, dict[str, str], float]]:
        """(suffix, extra labels, value) of one child."""
        raise NotImplementedError

    def _exposed_names(self) -> list[str]:
        raise NotImplementedError

    def labels(self, *values: object) -> Self:
        """The child for these label values (created at first use)."""
        key = tuple(str(v) for v in values)
        if len(key) != len(self._labelnames):
            raise ValueError("Incorrect label count")
        child = self._children.get(key)
        if child is None:
            with self._children_lock:
                child = self._children.get(key)
                if child is None:
                    child = self.__class__.__new__(self.__class__)
                    child.__dict__.update(self._child_state())
                    child._created = _CREATED.time()
                    child._init_values()
                    self._children[key] = child
        return child

    def _child_state(self) -> dict[str, object]:
        return {"_name": self._name, "_labelnames": (), "_children": {}}

    def _families(self) -> list[MetricFamily]:
        family = MetricFamily(self._name, self._documentation, self._type)
        children: list[tuple[tuple[str, ...], _Metric]] = [((), self)]
        if self._labelnames:
            with self._children_lock:
                children = list(self._children.items())
        for values, child in children:
            labels = dict(zip(self._labelnames, values, strict=True))
            for suffix, extra, value in child._samples():
                family.samples.append(Sample(self._name + suffix, {**labels, **extra}, value))
        return [family]

    def collect(self) -> Iterable[MetricFamily]:
        """This metric's samples, read now."""
        return self._families()


class Counter(_Metric):
    """A monotonically increasing count (exposed as ``<name>_total`` and ``<name>_created``)."""

    _type = "counter"

    def _init_values(self) -> None:
        self._value = _Value()

    def inc(self, amount: float = 1) -> None:
        """Add ``amount`` (not negative)."""
        if amount < 0:
            raise ValueError("Counters can only be incremented by non-negative amounts.")
        self._value.inc(amount)

    def _samples(self) -> list[tuple[str, dict[str, str], float]]:
        return [("_total", {}, self._value.get()), ("_created", {}, self._created)]

    def _exposed_names(self) -> list[str]:
        return [self._name, self._name + "_total", self._name + "_created"]


class Gauge(_Metric):
    """A value that goes up and down, or is read from a function at scrape time."""

    _type = "gauge"

    def _init_values(self) -> None:
        self._value = _Value()
        self._function: Callable[[], float] | None = None

    def inc(self, amount: float = 1) -> None:
        """Add ``amount``."""
        self._value.inc(amount)

    def dec(self, amount: float = 1) -> None:
        """Subtract ``amount``."""
        self._value.inc(-amount)

    def set(self, value: float) -> None:
        """Set the value."""
        self._value.set(float(value))

    def set_function(self, function: Callable[[], float]) -> None:
        """Read the value from ``function`` at every scrape."""
        self._function = function

    def _samples(self) -> list[tuple[str, dict[str, str], float]]:
        value = self._function() if self._function is not None else self._value.get()
        return [("", {}, value)]

    def _exposed_names(self) -> list[str]:
        return [self._name]


class Histogram(_Metric):
    """Observations counted in cumulative buckets, with their count and sum."""

    _type = "histogram"

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        registry: CollectorRegistry | None = None,
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> None:
        bounds = [float(b) for b in buckets]
        if bounds != sorted(bounds):
            raise ValueError("Buckets not in sorted order")
        if bounds and bounds[-1] != INF:
            bounds.append(INF)
        self._upper_bounds = bounds
        super().__init__(name, documentation, labelnames, registry)

    def _child_state(self) -> dict[str, object]:
        return {**super()._child_state(), "_upper_bounds": self._upper_bounds}

    def _init_values(self) -> None:
        self._buckets = [_Value() for _ in self._upper_bounds]
        self._sum = _Value()

    def observe(self, amount: float) -> None:
        """Count one observation."""
        self._sum.inc(amount)
        for index, bound in enumerate(self._upper_bounds):
            if amount <= bound:
                self._buckets[index].inc(1)
                break

    def _samples(self) -> list[tuple[str, dict[str, str], float]]:
        samples: list[tuple[str, dict[str, str], float]] = []
        total = 0.0
        for bound, bucket in zip(self._upper_bounds, self._buckets, strict=True):
            total += bucket.get()
            samples.append(("_bucket", {"le": _float(bound)}, total))
        samples.append(("_count", {}, total))
        samples.append(("_sum", {}, self._sum.get()))
        samples.append(("_created", {}, self._created))
        return samples

    def _exposed_names(self) -> list[str]:
        suffixes = ("", "_bucket", "_count", "_sum", "_created")
        return [self._name + suffix for suffix in suffixes]


class BulkHistogram(Histogram):
    """A :class:`Histogram` that also takes many observations at once."""

    def observe_many(self, amounts: Sequence[float]) -> None:
        """The same as :meth:`observe` for each amount, with one increment per bucket hit and
        one of the sum (instead of a lock for the sum and one for its bucket per amount,
        after a walk over the bucket bounds)."""
        if not amounts:
            return
        bounds = self._upper_bounds  # ascending, the last one +Inf
        hits = [0] * len(bounds)
        last = len(bounds) - 1
        for amount in amounts:
            # The first bound >= amount (``observe``'s ``amount <= bound``).
            hits[min(bisect_left(bounds, amount), last)] += 1
        for index, count in enumerate(hits):
            if count:
                self._buckets[index].inc(count)
        self._sum.inc(sum(amounts))


def _float(value: float) -> str:
    """A float as Go (and so Prometheus, and ``prometheus_client``) writes it."""
    value = float(value)
    if value == INF:
        return "+Inf"
    if value == -INF:
        return "-Inf"
    if math.isnan(value):
        return "NaN"
    text = repr(value)
    dot = text.find(".")
    if value > 0 and dot > 6:  # Go switches to exponents sooner than Python
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return text


def _escape_label(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _line(sample: Sample) -> str:
    name, labels, value, _ = sample
    if labels:
        pairs = ",".join(f'{k}="{_escape_label(v)}"' for k, v in sorted(labels.items()))
        return f"{name}{{{pairs}}} {_float(value)}\n"
    return f"{name} {_float(value)}\n"


def generate_latest(registry: CollectorRegistry) -> bytes:
    """The text exposition (format 0.0.4) of every metric in ``registry``."""
    out: list[str] = []
    for family in registry.collect():
        name, typ = family.name, family.type
        if typ == "counter":
            name += "_total"
        doc = family.documentation.replace("\\", r"\\").replace("\n", r"\n")
        out.append(f"# HELP {name} {doc}\n# TYPE {name} {typ}\n")
        created: list[str] = []
        for sample in family.samples:
            if sample.name == family.name + "_created":
                created.append(_line(sample))
            else:
                out.append(_line(sample))
        if created:
            out.append(f"# HELP {family.name}_created {doc}\n")
            out.append(f"# TYPE {family.name}_created gauge\n")
            out.extend(created)
    return "".join(out).encode()


class Metrics:
    """The core relay's collectors (HTTP, accounts, auth, prekeys)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.http_requests = Counter(
            "vox_http_requests",
            "HTTP requests by route and status",
            ["route", "status"],
            registry=r,
        )
        self.http_latency = Histogram(
            "vox_http_request_seconds", "HTTP request latency", ["route"], registry=r
        )
        self.accounts_registered = Counter(
            "vox_accounts_registered", "Accounts created", registry=r
        )
        self.tokens_issued = Counter("vox_tokens_issued", "Bearer tokens issued", registry=r)
        self.auth_failures = Counter(
            "vox_auth_failures", "Failed token or challenge checks", registry=r
        )
        self.prekeys_claimed = Counter(
            "vox_prekeys_claimed", "One-time prekeys handed out", ["kind"], registry=r
        )
        self.prekeys_exhausted = Counter(
            "vox_prekeys_exhausted",
            "Bundle entries served without a one-time key",
            ["kind"],
            registry=r,
        )
        self.prekeys_withheld = Counter(
            "vox_prekeys_withheld",
            "Bundle entries served without one-time keys because of the claim budget",
            registry=r,
        )
        self.prekeys_drained = Counter(
            "vox_prekeys_drained",
            "Devices told that their one-time prekeys reached the hourly claim budget",
            registry=r,
        )

    def render(self) -> bytes:
        """The text exposition of every collector on this registry."""
        return generate_latest(self.registry)
