"""Prometheus metrics on a per-app ``CollectorRegistry`` (``RelayState.metrics``).

Several apps can live in one process (tests), so nothing registers on the global registry.
Other layers add their own collectors to ``RelayState.metrics.registry``::

    from prometheus_client import Counter
    sends = Counter("vox_sends_accepted", "...", registry=relay_state(app).metrics.registry)

``GET /metrics`` exposes everything registered there.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

__all__ = ["BulkHistogram", "Metrics"]


class BulkHistogram(Histogram):
    """A :class:`~prometheus_client.Histogram` that also takes many observations at once."""

    def observe_many(self, amounts: Sequence[float]) -> None:
        """The same as :meth:`observe` for each amount, with one increment per bucket hit and
        one of the sum (``observe`` takes a lock for the sum and one for its bucket per
        amount, after a walk over the bucket bounds)."""
        if not amounts:
            return
        self._raise_if_not_observable()  # type: ignore[no-untyped-call]
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
