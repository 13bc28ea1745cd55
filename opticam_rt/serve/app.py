"""The Starlette app: Open Inference Protocol REST endpoints over one shared Explainer.

``GET /v2``, ``/v2/health/live``, ``/v2/health/ready``, ``/v2/models/{m}``, ``/v2/models/{m}/ready``,
``POST /v2/models/{m}/infer`` (each model also under ``/versions/1``) and ``GET /metrics``.
Every method served is a model named as on the CLI. Every error is a status with the OIP body
``{"error": "one line"}``, never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from opticam_rt import __version__
from opticam_rt.errors import InputError, OpticamError
from opticam_rt.runtime.explainer import Explainer
from opticam_rt.methods import REGISTRY
from opticam_rt.serve.batcher import Batcher, BatchResult, Job, padded_size
from opticam_rt.serve.codec import encode_response, error_body, model_metadata, parse_infer_request
from opticam_rt.serve.config import ServeConfig
from opticam_rt.serve.errors import ServeError, bad_request
from opticam_rt.serve.images import decode_images
from opticam_rt.serve.logs import AccessLog, event
from opticam_rt.serve.metrics import Metrics


class Service:
    """What the endpoints share: the config, one Explainer, a Batcher per model, the worker
    threads, the metrics, and whether warm-up is done (``ready``) or shutdown begun."""

    def __init__(self, config: ServeConfig, explainer: Explainer | None = None) -> None:
        self.config = config
        self.explainer = explainer or Explainer(config.bundle, backend=config.backend, threads=config.threads)
        self.input_size = self.explainer.input_size
        self.num_classes = self.explainer.bundle.manifest.num_classes
        self.metrics = Metrics()
        self.backends = {m: self.explainer.runner_for(m).name for m in config.methods}
        self.ready = threading.Event()
        self.draining = False
        self.warmup_error: str | None = None
        self.batchers: dict[str, Batcher] = {}
        self.executor: ThreadPoolExecutor | None = None
        self._tasks: list[asyncio.Task] = []

    # --- lifecycle (the app's lifespan) -------------------------------------------------------

    async def start(self) -> None:
        self.executor = ThreadPoolExecutor(self.config.workers, thread_name_prefix="opticam-serve")
        slots = asyncio.Semaphore(self.config.workers)
        for method in self.config.methods:
            self.batchers[method] = Batcher(
                self._computer(method), self.executor, slots, self.config.max_batch, self.config.max_wait_ms / 1000,
                self.config.max_queue, pad=self._static(method),
                observe=lambda images, depth, m=method: self.metrics.batched(m, images, depth),
            )
            self._tasks.append(asyncio.create_task(self.batchers[method].run()))
        if self.config.warmup:
            threading.Thread(target=self._warm_up, name="opticam-serve-warmup", daemon=True).start()
        else:
            self.ready.set()
        event("started", models=list(self.config.methods), backends=self.backends, max_batch=self.config.max_batch,
              max_wait_ms=self.config.max_wait_ms, workers=self.config.workers)

    async def stop(self) -> None:
        """After the server stopped taking requests: finish the batches being computed, then free everything."""
        self.draining = True
        for batcher in self.batchers.values():
            await batcher.drain()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.executor is not None:
            self.executor.shutdown(wait=True)
        self.explainer.close()
        event("stopped")

    def _static(self, method: str) -> bool:
        return self.explainer.runner_for(method).capabilities.static_shapes

    def _computer(self, method: str):  # type: ignore[no-untyped-def]
        def compute(pixels: np.ndarray, targets: np.ndarray | None, options: dict[str, Any], progress: Any) -> Any:
            start = time.perf_counter()
            out = self.explainer.explain(pixels, method=method, targets=targets, progress=progress, **options)
            self.metrics.batch_seconds.labels(method).observe(time.perf_counter() - start)
            return out

        return compute

    def _warm_up(self) -> None:
        """On a runner that compiles per batch size, each model once per batch size it will run
        (1, 2, 4, ..., max_batch) with its cheapest options (Opti-CAM: 1 step); elsewhere one
        plain prediction, which creates the forward session (a whole Score-CAM or Ablation-CAM
        run, seconds of forward passes, would warm nothing more)."""
        h, w = self.input_size
        pixels = np.random.default_rng(0).random((self.config.max_batch, 3, h, w), dtype=np.float32)
        try:
            for method in self.config.methods:
                if not self._static(method):
                    self.explainer.predict(pixels[:1], self.explainer.runner_for(method))
                    continue
                cheap = {"iterations": 1} if "iterations" in REGISTRY[method].Options.names() else {}
                for n in sorted({padded_size(n, self.config.max_batch) for n in range(1, self.config.max_batch + 1)}):
                    self.explainer.explain(pixels[:n], method=method, **cheap)
            event("ready")
        except Exception as exc:  # noqa: BLE001 - reported by /v2/health/ready, the server keeps its liveness
            self.warmup_error = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
            event("warm-up failed", logging.ERROR, error=self.warmup_error)
            return
        self.ready.set()

    # --- one infer request ----------------------------------------------------------------

    def prepare(self, method: str, body: bytes, header_length: int | None) -> tuple[Any, np.ndarray]:
        """Parse and decode a request (worker-free thread): -> (InferRequest, pixels (N, 3, H, W))."""
        c = self.config
        request = parse_infer_request(body, header_length, method, self.input_size, self.num_classes, c.max_images)
        pixels = request.pixels if request.pixels is not None else decode_images(request.encoded, self.input_size, c.max_image_pixels)
        return request, pixels

    async def infer(self, method: str, body: bytes, header_length: int | None, started: float) -> Response:
        request, pixels = await asyncio.to_thread(self.prepare, method, body, header_length)
        loop = asyncio.get_running_loop()
        job = Job(pixels, request.targets, request.options, loop.create_future())
        batcher = self.batchers[method]
        batcher.submit(job)
        self.metrics.queue_depth.labels(method).set(len(batcher.queue))
        limit = min(self.config.request_timeout_s, request.timeout_s or math.inf)
        try:
            result: BatchResult = await asyncio.wait_for(job.future, max(0.0, limit - (time.monotonic() - started)))
        except asyncio.TimeoutError:
            raise ServeError(504, f"request timed out after {limit:g} s (queue wait and compute)") from None
        except InputError as exc:  # an option the backend cannot honour, found when the batch ran
            raise bad_request(str(exc)) from None
        parameters = {"backend": result.backend, "batch_size": result.batch_size}
        body, headers = await asyncio.to_thread(encode_response, method, request, result.values, parameters)
        return Response(body, headers=headers)


def error_response(error: ServeError) -> Response:
    return Response(error_body(error), status_code=error.status, media_type="application/json", headers=error.headers)


def json_response(payload: Any, status: int = 200) -> Response:
    return Response(json.dumps(payload).encode(), status_code=status, media_type="application/json")


async def read_body(request: Request, max_bytes: int, timeout_s: float) -> bytes:
    """The request body, refused with 413 past ``max_bytes`` (by Content-Length, or as it
    arrives) and with 408 when not received within ``timeout_s``."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise bad_request(f"Content-Length {declared!r} is not a number")
        if int(declared) > max_bytes:
            raise ServeError(413, f"request body of {int(declared)} bytes is over this server's limit of {max_bytes} bytes")
    chunks: list[bytes] = []
    total = 0

    async def collect() -> None:
        nonlocal total
        async for chunk in request.stream():
            total += len(chunk)
            if total > max_bytes:
                raise ServeError(413, f"request body is over this server's limit of {max_bytes} bytes")
            chunks.append(chunk)

    try:
        await asyncio.wait_for(collect(), timeout_s)
    except asyncio.TimeoutError:
        raise ServeError(408, f"request body not received in full within {timeout_s:g} s") from None
    except ClientDisconnect:
        raise bad_request("the client disconnected before sending the whole body") from None
    return b"".join(chunks)


def create_app(config: ServeConfig, explainer: Explainer | None = None) -> Starlette:
    """The ASGI app serving ``config.methods`` from ``config.bundle`` (or the given Explainer)."""
    service = Service(config, explainer)

    def model_of(request: Request) -> str:
        method = request.path_params["model"]
        version = request.path_params.get("version", "1")
        if method not in service.batchers or version != "1":
            raise ServeError(404, f"unknown model {method!r} (version {version}); models: {', '.join(config.methods)}")
        return method

    async def server_metadata(request: Request) -> Response:
        return json_response({"name": "opticam-rt", "version": __version__, "extensions": ["binary_tensor_data"]})

    async def live(request: Request) -> Response:
        return json_response({"live": True})

    async def ready(request: Request) -> Response:
        if service.ready.is_set() and not service.draining:
            return json_response({"ready": True})
        reason = service.warmup_error or ("shutting down" if service.draining else "warming up")
        return json_response({"ready": False, "error": reason}, status=503)

    async def metadata(request: Request) -> Response:
        method = model_of(request)
        return json_response(model_metadata(method, service.input_size, service.backends[method], config.max_batch))

    async def model_ready(request: Request) -> Response:
        model_of(request)
        return await ready(request)

    async def infer(request: Request) -> Response:
        started = time.monotonic()
        method = request.path_params["model"]
        label = method if method in service.batchers else "unknown"  # no label per arbitrary name
        code = 500
        service.metrics.in_flight.inc()
        try:
            method = model_of(request)
            request.state.log_fields = {"model": method}
            header = request.headers.get("inference-header-content-length")
            if header is not None and not header.isdigit():
                raise bad_request(f"Inference-Header-Content-Length {header!r} is not a number")
            body = await read_body(request, config.max_body_bytes, config.body_timeout_s)
            response = await service.infer(method, body, None if header is None else int(header), started)
            code = response.status_code
            return response
        except ServeError as exc:
            code = exc.status
            return error_response(exc)
        except OpticamError as exc:  # e.g. a non-finite map: the server's model, not the request
            code = 500
            return error_response(ServeError(500, str(exc)))
        except Exception as exc:  # noqa: BLE001 - a bug: one line to the caller, logged here
            event("internal error", logging.ERROR, model=method, error=f"{type(exc).__name__}: {exc}")
            return error_response(ServeError(500, f"internal error: {type(exc).__name__}: {exc}"))
        finally:
            service.metrics.in_flight.dec()
            service.metrics.answered(label, code, time.monotonic() - started)

    async def metrics(request: Request) -> Response:
        return Response(service.metrics.render(), media_type=service.metrics.content_type)

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        detail = exc.detail if isinstance(exc, HTTPException) else f"internal error: {type(exc).__name__}"
        if status == 404:
            detail = f"no such endpoint: {request.method} {request.url.path}"
        elif status == 405:
            detail = f"{request.method} is not allowed on {request.url.path}"
        return error_response(ServeError(status, str(detail)))

    async def serve_error(request: Request, exc: Exception) -> Response:
        return error_response(exc)  # type: ignore[arg-type]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):  # type: ignore[no-untyped-def]
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    routes = [Route("/v2", server_metadata), Route("/v2/health/live", live), Route("/v2/health/ready", ready),
              Route("/metrics", metrics)]
    for prefix in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
        routes += [Route(prefix, metadata), Route(prefix + "/ready", model_ready),
                   Route(prefix + "/infer", infer, methods=["POST"])]
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={HTTPException: http_error, ServeError: serve_error, Exception: http_error})
    app.state.service = service
    app.add_middleware(AccessLog)
    return app
