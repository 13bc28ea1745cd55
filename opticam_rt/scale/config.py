"""How a Ray run is placed (address, actors, CPUs, retries), and the lazy Ray import."""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import ModuleType

from opticam_rt.errors import BackendUnavailableError, InputError

#: What ``--ray ADDRESS`` accepts besides "auto": HOST:PORT or ray://HOST:PORT.
_ADDRESS = re.compile(r"^(ray://)?[A-Za-z0-9_.\-\[\]:]+:\d+$")


@dataclass(frozen=True)
class RayConfig:
    """Where and how wide a Ray run goes.

    address: None starts (or joins) a local Ray instance (node address 127.0.0.1); ``"auto"`` joins the
        running cluster; ``HOST:PORT`` / ``ray://HOST:PORT`` a given one. When Ray is already
        initialised in this process, that instance is used and left running.
    actors: explainer actors, each holding one loaded bundle (None: as many as the cluster's
        free CPUs allow at ``cpus_per_actor`` each).
    cpus_per_actor: CPUs Ray reserves per actor; also its ONNX Runtime or OpenVINO thread count
        (rounded up; OpenVINO then leaves its threads unpinned, see ``OvRunner.config``).
    max_retries: times one batch is run again after its actor died; past that the run fails.
    batch_timeout_s: an actor that has not finished a batch for this long is killed and its
        batches retried (None: no limit).
    start_timeout_s: how long to wait for the actors to start (a cluster without enough free
        CPUs would otherwise wait for ever).
    backend: the Explainer backend every actor uses (see ``opticam_rt.runtime.BACKENDS``).
    engine: the Explainer engine every actor uses (``host`` or ``graph``).
    """

    address: str | None = None
    actors: int | None = None
    cpus_per_actor: float = 1.0
    max_retries: int = 3
    batch_timeout_s: float | None = None
    start_timeout_s: float = 300.0
    backend: str = "auto"
    engine: str = "host"

    def __post_init__(self) -> None:
        if self.address is not None and self.address != "auto" and not _ADDRESS.match(self.address):
            raise InputError(
                f"--ray {self.address!r} is not a Ray address (auto, HOST:PORT or ray://HOST:PORT); "
                "with no address, put --ray after the image paths or write --ray=local"
            )
        if self.actors is not None and self.actors < 1:
            raise InputError(f"--ray-actors must be at least 1, got {self.actors}")
        if not self.cpus_per_actor > 0:
            raise InputError(f"--ray-cpus-per-actor must be > 0, got {self.cpus_per_actor}")
        if self.max_retries < 0:
            raise InputError(f"max_retries must be >= 0, got {self.max_retries}")


def require_ray() -> ModuleType:
    """Import Ray, or raise BackendUnavailableError naming the extra that installs it."""
    try:
        import ray
    except ImportError as exc:
        raise BackendUnavailableError(
            f"--ray needs Ray, which is not installed ({exc}); install it with: pip install 'opticam-rt[ray]'"
        ) from None
    return ray
