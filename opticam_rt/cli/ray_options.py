"""The ``--ray`` option bundle shared by ``explain`` and ``evaluate`` (Ray itself loads only when used)."""

from __future__ import annotations

from typing import Any, Callable

import click

#: What ``--ray`` with no address stands for: start (or join) a local Ray instance.
LOCAL = "local"


def ray_option_flags(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--ray [ADDRESS]``, ``--ray-actors`` and ``--ray-cpus-per-actor``; the command passes
    the three values to :func:`ray_config`."""
    command = click.option(
        "--ray-cpus-per-actor", "ray_cpus_per_actor", type=click.FloatRange(min=0, min_open=True), default=1.0,
        show_default=True, help="CPUs per Ray actor (its ONNX Runtime threads).",
    )(command)
    command = click.option(
        "--ray-actors", "ray_actors", type=click.IntRange(min=1), default=None,
        help="Ray actors, each holding the bundle once [default: fill the cluster's free CPUs].",
    )(command)
    return click.option(
        "--ray", "ray_address", is_flag=False, flag_value=LOCAL, default=None, metavar="[ADDRESS]",
        help="Spread the images over a Ray cluster (needs opticam-rt[ray]): no ADDRESS starts a local "
        "instance, 'auto' joins the running cluster, or HOST:PORT / ray://HOST:PORT. "
        "Without ADDRESS, put it after the image paths.",
    )(command)


def ray_config(
    ray_address: str | None, ray_actors: int | None, ray_cpus_per_actor: float, backend: str, engine: str = "host"
) -> Any:
    """-> an ``opticam_rt.scale.RayConfig``, or None when ``--ray`` was not given."""
    if ray_address is None:
        return None
    from opticam_rt.scale.config import RayConfig

    address = None if ray_address == LOCAL else ray_address
    return RayConfig(address=address, actors=ray_actors, cpus_per_actor=ray_cpus_per_actor, backend=backend, engine=engine)
