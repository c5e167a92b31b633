"""Delivery collectors, registered on the app's own registry (``RelayState.metrics.registry``)."""

from __future__ import annotations

from collections.abc import Callable

from server.metrics import BulkHistogram, CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["DeliveryMetrics"]


class DeliveryMetrics:
    """Connections, sends, deliveries, acks, queue depth and send→accepted latency."""

    def __init__(self, registry: CollectorRegistry, connections: Callable[[], int]) -> None:
        r = registry
        self.connections = Gauge(
            "vox_ws_connections", "Authenticated WebSockets on this node", registry=r
        )
        self.connections.set_function(lambda: float(connections()))
        self.sends_accepted = Counter(
            "vox_sends_accepted", "Sends committed and answered 'accepted'", registry=r
        )
        self.sends_refused = Counter(
            "vox_sends_refused", "Sends refused (mismatch, limits, errors)", ["reason"], registry=r
        )
        self.ephemeral_sent = Counter(
            "vox_ephemeral_sent", "Ephemeral sends relayed (never stored)", registry=r
        )
        self.envelopes_queued = Counter(
            "vox_envelopes_queued", "Queue rows written (one per recipient device)", registry=r
        )
        self.deliveries = Counter("vox_deliveries", "deliver frames written to sockets", registry=r)
        self.queue_reads = Counter(
            "vox_queue_reads",
            "Queue reads from the database (reconnects, wakes, backlog)",
            registry=r,
        )
        self.acks = Counter("vox_acks", "Queue rows deleted by acks", registry=r)
        self.expired = Counter(
            "vox_envelopes_expired", "Queue rows deleted by the TTL sweeper", registry=r
        )
        self.queue_depth = Gauge(
            "vox_queue_depth",
            "Queued envelopes (all devices), sampled by the sweeper",
            registry=r,
        )
        self.batch_size = Histogram(
            "vox_commit_batch_size",
            "Operations per group commit",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=r,
        )
        self.commit_seconds = Histogram(
            "vox_commit_seconds",
            "Duration of one group-commit transaction (validation, writes, commit)",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )
        #: Observed once per batch (``observe_many``), not once per send.
        self.send_latency = BulkHistogram(
            "vox_send_accepted_seconds",
            "Time from a send frame's arrival to its 'accepted' (after commit)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r,
        )
        self.disconnects = Counter(
            "vox_ws_closed", "WebSockets closed by the relay", ["reason"], registry=r
        )
