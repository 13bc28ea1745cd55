"""The same service as a Ray Serve deployment (``opticam-rt serve --ray``): replicas, autoscaling.

Each replica builds the very Starlette app ``opticam-rt serve`` runs (``create_app``), with its own
Explainer, dynamic batcher, queue limits and metrics; Ray Serve's HTTP proxy routes requests to
the replicas and runs the app's lifespan (warm-up on start, draining on stop). So the protocol,
the limits and the results are those of the single-process server, tested once.

Ray Serve admits at most ``max_ongoing_requests`` requests into a replica and queues the rest at
the proxy; it is set to the app's own queue plus a batch per worker, so the batcher still sees
concurrent requests and the app's 503-when-full stays the back-pressure signal.
"""

from __future__ import annotations

import signal
import threading
from dataclasses import dataclass
from typing import Any

from opticam_rt.errors import InputError, OpticamError
from opticam_rt.serve.config import ServeConfig
from opticam_rt.serve.logs import event

#: The Ray Serve application's name and its deployment's.
APP_NAME = "opticam-rt"


@dataclass(frozen=True)
class RayScaling:
    """How many replicas serve, and what each takes from the cluster.

    replicas: a fixed count; or autoscale (min_replicas, max_replicas), scaled by Ray Serve on
        ``target_ongoing_requests`` per replica (requests in flight or queued in it).
    cpus: CPUs reserved per replica (a replica's inferences use ``threads`` cores each).
    """

    replicas: int = 1
    autoscale: tuple[int, int] | None = None
    target_ongoing_requests: float = 8.0
    cpus: float = 1.0

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise InputError(f"replicas must be >= 1, got {self.replicas}")
        if self.autoscale is not None:
            low, high = self.autoscale
            if not 0 <= low <= high or high < 1:
                raise InputError(f"autoscale must be MIN:MAX with 0 <= MIN <= MAX and MAX >= 1, got {low}:{high}")
        if not self.cpus > 0 or not self.target_ongoing_requests > 0:
            raise InputError("cpus and target_ongoing_requests must be > 0")

    def deployment_options(self, config: ServeConfig) -> dict[str, Any]:
        """Keyword arguments of ``serve.deployment`` for this scaling and server config."""
        options: dict[str, Any] = {
            "name": APP_NAME,
            "ray_actor_options": {"num_cpus": self.cpus},
            "max_ongoing_requests": config.max_queue + config.max_batch * config.workers,
            # the app drains its own requests on shutdown; give it the request timeout to do so
            "graceful_shutdown_timeout_s": config.request_timeout_s + 5,
        }
        if self.autoscale is None:
            options["num_replicas"] = self.replicas
        else:
            low, high = self.autoscale
            options["autoscaling_config"] = {
                "min_replicas": low,
                "max_replicas": high,
                "initial_replicas": max(low, 1),
                "target_ongoing_requests": self.target_ongoing_requests,
            }
        return options


def parse_autoscale(text: str | None) -> tuple[int, int] | None:
    """``"1:4"`` -> (1, 4); None stays None."""
    if text is None:
        return None
    low, sep, high = text.partition(":")
    if not sep or not low.strip().isdigit() or not high.strip().isdigit():
        raise InputError(f"--autoscale must be MIN:MAX replicas (e.g. 1:4), got {text!r}")
    return int(low), int(high)


def ray_application(config: ServeConfig, scaling: RayScaling = RayScaling()) -> Any:
    """The bound Ray Serve application: ``serve.run(ray_application(config), route_prefix="/")``."""
    try:
        from ray import serve
    except ImportError as exc:
        raise OpticamError(f"serve --ray needs Ray Serve: pip install 'opticam-rt[ray-serve]' ({exc})") from None

    @serve.ingress()
    class OpticamReplica:
        """One replica: the single-process server's app, built on the replica."""

        def __init__(self, config: ServeConfig) -> None:
            self.config = config

        def __serve_build_asgi_app__(self) -> Any:
            from opticam_rt.serve.app import create_app

            return create_app(self.config)

    return serve.deployment(**scaling.deployment_options(config))(OpticamReplica).bind(config)


def serve_on_ray(
    config: ServeConfig, scaling: RayScaling, host: str = "127.0.0.1", port: int = 8000, address: str | None = None
) -> int:
    """Start (or join, with ``address``) a Ray cluster, run the deployment behind Ray Serve's HTTP
    proxy on ``host:port`` and block until SIGTERM or SIGINT; then shut the application down
    (replicas drain their requests) and return 0."""
    import ray
    from ray import serve

    stop = threading.Event()
    previous: dict[int, Any] = {}
    try:
        # A local cluster on a loopback host stays on loopback (Ray otherwise picks the machine's
        # address and probes a public DNS server to find it).
        local = {"_node_ip_address": "127.0.0.1"} if address is None and host in ("127.0.0.1", "localhost") else {}
        ray.init(address=address, include_dashboard=False, log_to_driver=False, **local)
        # After ray.init, which installs its own fatal-signal handlers (SIGTERM would kill us with
        # 15); before the deployment starts, so a SIGTERM while it starts still drains and exits 0.
        previous = {s: signal.signal(s, lambda signum, frame: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
        serve.start(http_options={"host": host, "port": port})
        serve.run(ray_application(config, scaling), name=APP_NAME, route_prefix="/")
        event("listening", host=host, port=port, url=f"http://{host}:{port}", engine="ray-serve",
              **({"autoscale": list(scaling.autoscale)} if scaling.autoscale else {"replicas": scaling.replicas}))
        stop.wait()
        event("draining", engine="ray-serve")
        serve.delete(APP_NAME)
        serve.shutdown()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if ray.is_initialized():
            ray.shutdown()
    event("exiting", signal="SIGTERM")
    return 0
