"""``opticam-rt serve``: saliency maps as an Open Inference Protocol (KServe v2 / Triton) REST service.

``config`` (settings and limits), ``codec`` and ``tensors`` (OIP requests, responses, binary tensors),
``images`` (encoded image inputs), ``batcher`` (dynamic batching), ``metrics`` (Prometheus),
``logs`` (JSON access logs), ``app`` (the Starlette app), ``server`` (uvicorn, SIGTERM drain).
Needs the ``serve`` extra: ``pip install 'opticam-rt[serve]'``.
"""

from opticam_rt.serve.config import ServeConfig

__all__ = ["ServeConfig", "create_app"]


def create_app(*args, **kwargs):  # type: ignore[no-untyped-def]
    """:func:`opticam_rt.serve.app.create_app` (imported on use: Starlette only when serving)."""
    from opticam_rt.serve.app import create_app as create

    return create(*args, **kwargs)
