"""A pool of Ray actors, each holding one loaded Explainer, that runs batches with bounded retries."""

from __future__ import annotations

import hashlib
import logging
import math
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from opticam_rt.bundle import MANIFEST, load_bundle
from opticam_rt.errors import OpticamError
from opticam_rt.scale.config import RayConfig, require_ray

#: Batches queued on one actor at a time: the next batch's arguments travel while the current
#: one runs, and an actor that dies loses at most this many batches (all retried).
DEPTH = 2
#: Seconds between checks of the batch timeout while waiting for results.
POLL_S = 1.0

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BundleSource:
    """Where an actor gets the bundle: ``path`` when that directory holds the same bundle on the
    actor's node (manifest.json byte-identical), else the files shipped through Ray's object store
    (``files``: a one-element list holding the ObjectRef of {file name: bytes}, in a list so Ray
    hands the reference over instead of fetching it for every actor)."""

    path: str
    manifest_sha256: str
    files: list[Any]

    def materialise(self) -> tuple[Path, str]:
        """-> (a local directory holding the bundle, "path" or "object store")."""
        manifest = Path(self.path) / MANIFEST
        if manifest.is_file() and hashlib.sha256(manifest.read_bytes()).hexdigest() == self.manifest_sha256:
            return Path(self.path), "path"
        import ray

        local = Path(tempfile.mkdtemp(prefix="opticam-bundle-"))
        for name, data in ray.get(self.files[0]).items():
            (local / name).write_bytes(data)
        return local, "object store"


def ship_bundle(bundle_dir: str | Path) -> BundleSource:
    """Check the bundle here and put its files into the object store once (for nodes that
    cannot read ``bundle_dir``); the actors read the path when they can."""
    import ray

    bundle = load_bundle(bundle_dir)
    names = [MANIFEST, *bundle.manifest.files]
    files = {name: (bundle.path / name).read_bytes() for name in names}
    digest = hashlib.sha256(files[MANIFEST]).hexdigest()
    return BundleSource(str(bundle.path.resolve()), digest, [ray.put(files)])


class ExplainerWorker:
    """What runs inside each actor: one Explainer, and the single-process unit of work per batch.

    A bundle that cannot be loaded is kept as an error and raised by every call, so the driver
    reports it once, as the one-line OpticamError it is.
    """

    def __init__(self, source: BundleSource, backend: str, threads: int, engine: str = "host") -> None:
        from opticam_rt.runtime.explainer import Explainer

        self.error: OpticamError | None = None
        self.bundle_from = ""
        try:
            path, self.bundle_from = source.materialise()
            self.explainer = Explainer(path, backend=backend, threads=threads, engine=engine)
        except OpticamError as exc:
            self.error = exc

    def ready(self) -> str:
        """Where the bundle came from ("path" or "object store"); raises the load error."""
        if self.error:
            raise self.error
        return self.bundle_from

    def evaluate(self, batch: Any, metrics: Any, settings: Any, contents: list[bytes | None]) -> Any:
        """``evaluation.runner.evaluate_batch`` -> its BatchOutcome."""
        from opticam_rt.evaluation.runner import evaluate_batch

        self.ready()
        return evaluate_batch(self.explainer, batch, metrics, settings, contents)

    def explain(
        self, paths: list[str], method: str, target: int | None, options: dict[str, Any], contents: list[bytes | None]
    ) -> Any:
        """``runtime.files.explain_batch`` -> its FileResults, overlays encoded here (not on the driver)."""
        from opticam_rt.runtime.files import explain_batch

        self.ready()
        return explain_batch(self.explainer, paths, method, target, options, contents, render_overlay=True)


def read_contents(paths: list[str]) -> list[bytes | None]:
    """Each file's bytes, read here on the driver so that workers need not see its files; None
    where it cannot be read (the worker then reports the path's error, as a single process would)."""
    out: list[bytes | None] = []
    for path in paths:
        try:
            out.append(Path(path).read_bytes())
        except OSError:
            out.append(None)
    return out


def next_slot(load: list[int], depth: int = DEPTH) -> int | None:
    """The actor the next batch goes to: the least loaded (the first of those on a tie), or None
    when every actor already has ``depth`` batches.

    Breadth-first, so every idle actor gets a batch before any actor gets a second one to queue:
    filling one actor up to ``depth`` first would leave the others idle whenever there are no
    more batches than ``depth`` per actor (2 batches on 2 actors ran one after the other on the
    first actor).
    """
    if not load:
        return None
    slot = min(range(len(load)), key=load.__getitem__)
    return slot if load[slot] < depth else None


@dataclass
class PoolStats:
    """What happened during a run: actors started (replacements included), batches retried."""

    actors_started: int = 0
    retries: int = 0
    bundle_from: list[str] = field(default_factory=list)


class RayBatchExecutor:
    """A context manager: connect to Ray, start the actors, run calls, tear the actors down.

    ``run(count, call, on_done)`` runs ``call(i) -> (worker method, args)`` for i < count and
    calls ``on_done(i, result)`` exactly once per i, in completion order, on this thread. A
    batch whose actor died (killed, node lost, out of memory) is run again on a replacement
    actor, at most ``config.max_retries`` times; an exception raised by the work itself is
    not retried (it would fail again) and ends the run.
    """

    def __init__(
        self, bundle_dir: str | Path, config: RayConfig | None = None, worker: type[ExplainerWorker] = ExplainerWorker
    ) -> None:
        """``worker``: the class each actor runs (a subclass can add instrumentation or faults)."""
        self.bundle_dir = bundle_dir
        self.config = config or RayConfig()
        self.worker = worker
        self.actors: list[Any] = []
        self.stats = PoolStats()
        self._owns_ray = False
        self._source: BundleSource | None = None
        self._actor_class: Any = None
        self._actor_args: tuple[Any, ...] = ()

    # --- lifecycle -----------------------------------------------------------------------

    def __enter__(self) -> "RayBatchExecutor":
        ray = require_ray()
        if not ray.is_initialized():
            self._owns_ray = True
            if self.config.address is None:
                # A local instance: node address 127.0.0.1, no dashboard (docs/scale.md: what Ray still binds).
                ray.init(_node_ip_address="127.0.0.1", include_dashboard=False, logging_level=logging.WARNING)
            else:
                ray.init(address=self.config.address, logging_level=logging.WARNING)
        try:
            self._start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        ray = require_ray()
        for actor in self.actors:
            try:
                ray.kill(actor)
            except Exception:  # noqa: BLE001 - already gone; teardown must go on
                pass
        self.actors = []
        if self._owns_ray:
            ray.shutdown()
            self._owns_ray = False

    def _start(self) -> None:
        ray = require_ray()
        cfg = self.config
        self._source = ship_bundle(self.bundle_dir)
        threads = max(1, math.ceil(cfg.cpus_per_actor))
        self._actor_class = ray.remote(self.worker).options(num_cpus=cfg.cpus_per_actor, max_restarts=0)
        self._actor_args = (self._source, cfg.backend, threads, cfg.engine)
        count = cfg.actors or max(1, int(ray.available_resources().get("CPU", 1.0) // cfg.cpus_per_actor))
        self.actors = [self._new_actor() for _ in range(count)]
        pending = [actor.ready.remote() for actor in self.actors]
        done, waiting = ray.wait(pending, num_returns=len(pending), timeout=cfg.start_timeout_s)
        if waiting:
            raise OpticamError(
                f"{len(waiting)} of {count} Ray actors did not start within {cfg.start_timeout_s:g} s: "
                f"the cluster has {ray.cluster_resources().get('CPU', 0):g} CPUs, {count} actors x "
                f"{cfg.cpus_per_actor:g} were asked for (lower --ray-actors or --ray-cpus-per-actor)"
            )
        self.stats.bundle_from = [self._get(ref) for ref in done]

    def _new_actor(self) -> Any:
        self.stats.actors_started += 1
        return self._actor_class.remote(*self._actor_args)

    @staticmethod
    def _get(ref: Any) -> Any:
        """``ray.get``, with an OpticamError raised in the worker re-raised as itself."""
        ray = require_ray()
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, OpticamError):
                raise exc.cause from None
            raise

    # --- running -------------------------------------------------------------------------

    def run(
        self,
        count: int,
        call: Callable[[int], tuple[str, tuple[Any, ...]]],
        on_done: Callable[[int, Any], None],
    ) -> None:
        """Run ``call(i)`` for every i < count on the pool (see the class docstring)."""
        ray = require_ray()
        lost = (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError, ray.exceptions.ObjectLostError)
        cfg = self.config
        queue = deque(range(count))
        attempts = [0] * count
        inflight: dict[Any, tuple[int, int, Any]] = {}  # ref -> (call index, actor slot, actor handle)
        load = [0] * len(self.actors)
        since = [time.monotonic()] * len(self.actors)  # last submission to an idle actor or last result
        while queue or inflight:
            while queue and (slot := next_slot(load)) is not None:
                i = queue.popleft()
                name, args = call(i)
                actor = self.actors[slot]
                inflight[getattr(actor, name).remote(*args)] = (i, slot, actor)
                if load[slot] == 0:
                    since[slot] = time.monotonic()
                load[slot] += 1
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=POLL_S)
            for ref in ready:
                i, slot, actor = inflight.pop(ref)
                load[slot] -= 1
                since[slot] = time.monotonic()
                try:
                    result = self._get(ref)
                except lost as exc:
                    attempts[i] += 1
                    self.stats.retries += 1
                    if attempts[i] > cfg.max_retries:
                        raise OpticamError(
                            f"batch {i} lost its Ray actor {attempts[i]} times (last: {type(exc).__name__}); "
                            "giving up (is the cluster losing nodes or out of memory?)"
                        ) from None
                    queue.appendleft(i)
                    if self.actors[slot] is actor:  # the first of its lost batches to come back
                        log.warning("Ray actor %d died (%s); batch %d goes to a new actor", slot, type(exc).__name__, i)
                        try:
                            ray.kill(actor)  # only unreachable, perhaps: free its CPUs for the new one
                        except Exception:  # noqa: BLE001 - already gone
                            pass
                        self.actors[slot] = self._new_actor()
                    continue
                on_done(i, result)
            if cfg.batch_timeout_s is not None:
                now = time.monotonic()
                for slot, actor in enumerate(self.actors):
                    if load[slot] and now - since[slot] > cfg.batch_timeout_s:
                        log.warning("Ray actor %d made no progress for %.0f s; killing it", slot, now - since[slot])
                        ray.kill(actor)
                        since[slot] = now
