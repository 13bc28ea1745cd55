"""``opticam-rt serve``."""

from __future__ import annotations

import sys

import click

from opticam_rt.errors import OpticamError
from opticam_rt.runtime.explainer import METHOD_NAMES
from opticam_rt.runtime.runners import BACKENDS


def _methods(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    names = tuple(m.strip() for m in value.split(",") if m.strip())
    unknown = [m for m in names if m not in METHOD_NAMES]
    if unknown or not names:
        raise click.BadParameter(f"unknown method(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(METHOD_NAMES)}")
    return names


@click.command()
@click.option("--bundle", "bundle_dir", required=True, type=click.Path(file_okay=False), help="Bundle directory.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every interface).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port (0: a free one, logged).")
@click.option("--methods", default=",".join(METHOD_NAMES), show_default=True, callback=_methods,
              help="Comma-separated methods to serve, each a model named as on the CLI.")
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Intra-op threads per inference [default: all cores].")
@click.option("--max-batch", type=click.IntRange(min=1), default=8, show_default=True,
              help="Images per batch when concurrent requests are joined (1: no batching).")
@click.option("--max-wait-ms", type=click.FloatRange(min=0), default=5.0, show_default=True,
              help="How long a request waits for others to join its batch.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Threads computing batches, sharing one Explainer (each inference already uses every core).")
@click.option("--max-queue", type=click.IntRange(min=1), default=64, show_default=True,
              help="Requests waiting per model; more get 503 with Retry-After.")
@click.option("--request-timeout", "request_timeout_s", type=click.FloatRange(min=0, min_open=True), default=60.0,
              show_default=True, help="Seconds of queue wait and compute before a request gets 504.")
@click.option("--max-body-mb", type=click.FloatRange(min=0, min_open=True), default=64.0, show_default=True,
              help="Largest request body (413 above).")
@click.option("--max-images", type=click.IntRange(min=1), default=64, show_default=True, help="Images per request (413 above).")
@click.option("--max-image-pixels", type=click.IntRange(min=1), default=40_000_000, show_default=True,
              help="Largest encoded image, in decoded pixels (413 above).")
@click.option("--no-warmup", is_flag=True, help="Report ready at once instead of computing each model first.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info", show_default=True)
@click.option("--ray", "on_ray", is_flag=True,
              help="Serve as a Ray Serve deployment (replicas of this server behind Ray's HTTP proxy); needs opticam-rt[ray-serve].")
@click.option("--ray-address", default=None, help="With --ray: the Ray cluster to join [default: start a local one].")
@click.option("--replicas", type=click.IntRange(min=1), default=1, show_default=True, help="With --ray: a fixed replica count.")
@click.option("--autoscale", default=None, metavar="MIN:MAX",
              help="With --ray: let Ray Serve scale between MIN and MAX replicas (instead of --replicas).")
@click.option("--target-ongoing", type=click.FloatRange(min=0, min_open=True), default=8.0, show_default=True,
              help="With --autoscale: requests in flight per replica that Ray Serve scales to.")
@click.option("--replica-cpus", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="With --ray: CPUs reserved per replica.")
def serve(
    bundle_dir: str, host: str, port: int, methods: tuple[str, ...], backend: str, threads: int | None, max_batch: int,
    max_wait_ms: float, workers: int, max_queue: int, request_timeout_s: float, max_body_mb: float, max_images: int,
    max_image_pixels: int, no_warmup: bool, log_level: str, on_ray: bool, ray_address: str | None, replicas: int,
    autoscale: str | None, target_ongoing: float, replica_cpus: float,
) -> None:
    """Serve saliency maps over the Open Inference Protocol (KServe v2 / Triton REST).

    Each method is a model: POST /v2/models/grad-cam/infer with an FP32 `image` [N, 3, H, W] in
    [0, 1] or BYTES encoded image files; method options as request parameters. Health at
    /v2/health/live and /v2/health/ready, Prometheus metrics at /metrics, JSON logs on stderr.
    SIGTERM finishes the requests in flight and exits 0. With --ray, the same app runs as Ray
    Serve replicas (--replicas N or --autoscale MIN:MAX). See docs/serving.md.
    """
    try:
        import opticam_rt.serve.app  # noqa: F401 - Starlette, uvicorn, prometheus_client present
        from opticam_rt.serve.config import MIB, ServeConfig
        from opticam_rt.serve.logs import configure
        from opticam_rt.serve.server import serve as run
    except ImportError as exc:
        raise OpticamError(f"serve needs the serve extra: pip install 'opticam-rt[serve]' ({exc})") from None
    config = ServeConfig(
        bundle=bundle_dir, methods=methods, backend=backend, threads=threads, max_batch=max_batch,
        max_wait_ms=max_wait_ms, max_queue=max_queue, workers=workers, request_timeout_s=request_timeout_s,
        max_body_bytes=int(max_body_mb * MIB), max_images=max_images, max_image_pixels=max_image_pixels,
        warmup=not no_warmup,
    )
    configure(log_level)
    if not on_ray:
        if ray_address or autoscale or replicas != 1:
            raise OpticamError("--ray-address, --replicas and --autoscale need --ray")
        sys.exit(run(config, host=host, port=port, log_level=log_level))
    from opticam_rt.serve.ray_deployment import RayScaling, parse_autoscale, serve_on_ray

    scaling = RayScaling(replicas=replicas, autoscale=parse_autoscale(autoscale), target_ongoing_requests=target_ongoing,
                         cpus=replica_cpus)
    sys.exit(serve_on_ray(config, scaling, host=host, port=port, address=ray_address))
