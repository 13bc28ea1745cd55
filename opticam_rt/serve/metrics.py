"""Prometheus metrics of one server (its own registry, so several apps in one process never clash)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

#: Request latency buckets (seconds): 1 ms (a tiny net's Grad-CAM) to 2 min (long Opti-CAM runs).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    """``opticam_requests_total{model,code}``, ``opticam_errors_total{model,code}`` (4xx and 5xx),
    ``opticam_request_seconds{model}`` (infer latency, parse to response), ``opticam_batch_size{model}``
    (images per computed batch, padding excluded), ``opticam_batch_seconds{model}`` (compute time
    per batch), ``opticam_queue_depth{model}`` (requests waiting) and ``opticam_in_flight`` (infer
    requests being handled)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("opticam_requests", "Infer requests answered, by model and HTTP status.", ["model", "code"], registry=r)
        self.errors = Counter("opticam_errors", "Infer requests answered with an error status.", ["model", "code"], registry=r)
        self.latency = Histogram("opticam_request_seconds", "Infer request latency.", ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("opticam_batch_size", "Images per computed batch.", ["model"], buckets=BATCH_BUCKETS, registry=r)
        self.batch_seconds = Histogram("opticam_batch_seconds", "Compute time per batch.", ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("opticam_queue_depth", "Requests waiting to be batched.", ["model"], registry=r)
        self.in_flight = Gauge("opticam_in_flight", "Infer requests being handled.", registry=r)

    def answered(self, model: str, code: int, seconds: float) -> None:
        self.requests.labels(model, str(code)).inc()
        if code >= 400:
            self.errors.labels(model, str(code)).inc()
        self.latency.labels(model).observe(seconds)

    def batched(self, model: str, images: int, depth: int) -> None:
        self.batch_size.labels(model).observe(images)
        self.queue_depth.labels(model).set(depth)

    def render(self) -> bytes:
        return generate_latest(self.registry)
