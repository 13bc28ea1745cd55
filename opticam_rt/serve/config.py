"""The server's settings: what it serves and its limits (``opticam-rt serve`` flags)."""

from __future__ import annotations

from dataclasses import dataclass

from opticam_rt.errors import InputError
from opticam_rt.runtime.explainer import METHOD_NAMES

MIB = 1 << 20


@dataclass(frozen=True)
class ServeConfig:
    """Settings of one server.

    methods: the models served, named as on the CLI (``grad-cam``, ``opti-cam``, ...).
    backend: as ``explain --backend`` (``auto`` picks per method); threads: intra-op threads.
    max_batch: images per batch when concurrent requests are joined (1: no batching);
        max_wait_ms: how long the first request of a batch waits for others.
    max_queue: requests waiting per model before new ones get 503 (with ``Retry-After``).
    workers: threads computing batches, all sharing one Explainer (one per core is plenty: each
        inference already uses every core).
    request_timeout_s: queue wait plus compute, after which a request gets 504.
    max_body_bytes: request bodies above this get 413 (checked on Content-Length and as read);
        body_timeout_s: a body not received in full by then gets 408.
    max_images: images per request; max_image_pixels: decoded size of one encoded image (413).
    warmup: compute each model once per batch size before reporting ready (OpenVINO compiles
        per batch size).
    """

    bundle: str
    methods: tuple[str, ...] = METHOD_NAMES
    backend: str = "auto"
    threads: int | None = None
    max_batch: int = 8
    max_wait_ms: float = 5.0
    max_queue: int = 64
    workers: int = 1
    request_timeout_s: float = 60.0
    max_body_bytes: int = 64 * MIB
    body_timeout_s: float = 30.0
    max_images: int = 64
    max_image_pixels: int = 40_000_000
    warmup: bool = True

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHOD_NAMES]
        if unknown or not self.methods:
            raise InputError(f"unknown method(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(METHOD_NAMES)}")
        for name in ("max_batch", "max_queue", "workers", "max_body_bytes", "max_images", "max_image_pixels"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("request_timeout_s", "body_timeout_s"):
            if not getattr(self, name) > 0:
                raise InputError(f"{name} must be > 0, got {getattr(self, name)}")
        if not self.max_wait_ms >= 0:
            raise InputError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")
