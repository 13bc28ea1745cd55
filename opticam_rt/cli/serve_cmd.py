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
def serve(
    bundle_dir: str, host: str, port: int, methods: tuple[str, ...], backend: str, threads: int | None, max_batch: int,
    max_wait_ms: float, workers: int, max_queue: int, request_timeout_s: float, max_body_mb: float, max_images: int,
    max_image_pixels: int, no_warmup: bool, log_level: str,
) -> None:
    """Serve saliency maps over the Open Inference Protocol (KServe v2 / Triton REST).

    Each method is a model: POST /v2/models/grad-cam/infer with an FP32 `image` [N, 3, H, W] in
    [0, 1] or BYTES encoded image files; method options as request parameters. Health at
    /v2/health/live and /v2/health/ready, Prometheus metrics at /metrics, JSON logs on stderr.
    SIGTERM finishes the requests in flight and exits 0. See docs/serving.md.
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
    sys.exit(run(config, host=host, port=port, log_level=log_level))
