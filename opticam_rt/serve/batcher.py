"""Dynamic batching for one model: concurrent requests joined into one ``explain`` call.

A request waits in a bounded queue (full: 503 with ``Retry-After``). The model's loop takes the
oldest request, waits up to ``max_wait_s`` after its arrival for others with the same options
and the same kind of target (explicit or top-1) until ``max_batch`` images are gathered, then
runs them as one batch on a worker thread when one is free (the workers are shared by all
models); requests are never split, and one larger than ``max_batch`` runs alone. While every
worker is busy, arrivals keep joining the next batch. Results are sliced back per request.

On a runner that compiles per batch size (``Capabilities.static_shapes``, OpenVINO) batches
keep to powers of two and ``max_batch`` (1, 2, 4, 8 for 8), so a model compiles a handful of
shapes per graph instead of max_batch, and none is evicted and compiled again: a batch is cut
back to the largest such size the queued requests fill (the requests left over run next, they
are first in the queue), and only when whole requests cannot make that size exactly is it
padded up by repeating its last image, whose outputs are dropped. Cutting 5 one-image requests
to 4 + 1 cost 108 ms of EfficientNet-Lite0 Grad-CAM on 2 cores against 157 ms padded to 8.

A batch whose every caller gave up (timed out) stops at the method's next progress report
(each Opti-CAM step, each Score-CAM / Ablation-CAM chunk), so abandoned work does not hold a
worker and time out the requests queued behind it.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from opticam_rt.serve.errors import ServeError


@dataclass
class Job:
    """One request's work: pixels (n, 3, H, W) float32, targets (n,) int64 or None, options."""

    pixels: np.ndarray
    targets: np.ndarray | None
    options: dict[str, Any]
    future: asyncio.Future
    arrived: float = field(default_factory=time.monotonic)

    @property
    def key(self) -> tuple:
        """Jobs with equal keys may share a batch."""
        return (tuple(sorted(self.options.items())), self.targets is None)


class BatchAbandoned(Exception):
    """Raised inside a batch's computation when no caller waits for it any more."""


@dataclass
class BatchResult:
    """One job's slice of a batch: map (n, H, W), target (n,), score (n,), masked_score (n,),
    the backend that computed it and the batch's size (images, padding excluded)."""

    values: dict[str, np.ndarray]
    backend: str
    batch_size: int


def padded_size(n: int, max_batch: int) -> int:
    """The smallest power of two >= n, capped at ``max_batch``; n itself above ``max_batch``."""
    if n >= max_batch:
        return n
    return min(1 << (n - 1).bit_length(), max_batch)


def cut_size(n: int, max_batch: int) -> int:
    """The largest allowed batch size <= n: ``max_batch`` itself, or a power of two."""
    if n >= max_batch:
        return n
    return 1 << (n.bit_length() - 1)


class Batcher:
    """The queue and batching loop of one model.

    Args:
        compute: ``compute(pixels (B, 3, H, W), targets (B,) or None, options, progress)`` -> an
            Explanation; runs on ``executor``; ``progress`` is the Explainer's progress callback.
        slots: a semaphore with one permit per worker thread, shared by every model's batcher.
        pad: whether to pad batches to powers of two (see the module docstring).
        observe: ``observe(batch_images, queue_depth)`` after each batch is taken (metrics).
    """

    def __init__(
        self,
        compute: Callable[[np.ndarray, np.ndarray | None, dict[str, Any], Callable[[int], None]], Any],
        executor: Executor,
        slots: asyncio.Semaphore,
        max_batch: int,
        max_wait_s: float,
        max_queue: int,
        pad: bool = False,
        observe: Callable[[int, int], None] | None = None,
    ) -> None:
        self.compute = compute
        self.executor = executor
        self.slots = slots
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.pad = pad
        self.observe = observe or (lambda batch, depth: None)
        self.queue: deque[Job] = deque()
        self._arrival = asyncio.Event()
        self._running: set[asyncio.Task] = set()

    def submit(self, job: Job) -> None:
        """Queue a job, or raise 503 (with Retry-After) when the queue is full."""
        if len(self.queue) >= self.max_queue:
            raise ServeError(503, f"queue full ({self.max_queue} requests waiting); retry later", {"Retry-After": "1"})
        self.queue.append(job)
        self._arrival.set()

    async def run(self) -> None:
        """The batching loop (until cancelled)."""
        while True:
            self._drop_abandoned()
            if not self.queue:
                self._arrival.clear()
                await self._arrival.wait()
                continue
            await self.slots.acquire()
            try:
                await self._gather(self.queue[0])
                batch = self._take()
            except BaseException:
                self.slots.release()
                raise
            if not batch:
                self.slots.release()
                continue
            task = asyncio.create_task(self._execute(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def drain(self) -> None:
        """Wait for the batches being computed."""
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    def _drop_abandoned(self) -> None:
        """Forget queued jobs whose caller gave up (timed out or disconnected)."""
        if any(job.future.done() for job in self.queue):
            self.queue = deque(job for job in self.queue if not job.future.done())

    def _matching_images(self, key: tuple) -> int:
        return sum(len(job.pixels) for job in self.queue if job.key == key and not job.future.done())

    async def _gather(self, first: Job) -> None:
        """Wait until ``max_batch`` images like ``first`` are queued or its wait is over."""
        deadline = first.arrived + self.max_wait_s
        while self._matching_images(first.key) < self.max_batch:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._arrival.clear()
            try:
                await asyncio.wait_for(self._arrival.wait(), remaining)
            except asyncio.TimeoutError:
                return

    def _take(self) -> list[Job]:
        """Remove and return the oldest live job and the following ones with its key, up to
        ``max_batch`` images (the first job alone when it is larger)."""
        self._drop_abandoned()
        if not self.queue:
            return []
        first = self.queue[0]
        batch, rest, total = [], deque(), 0
        for job in self.queue:
            if job.key == first.key and (not batch or total + len(job.pixels) <= self.max_batch):
                batch.append(job)
                total += len(job.pixels)
            else:
                rest.append(job)
        if self.pad and len(batch) > 1:
            target = cut_size(total, self.max_batch)
            while len(batch) > 1 and total - len(batch[-1].pixels) >= target:
                job = batch.pop()
                total -= len(job.pixels)
                rest.appendleft(job)
        self.queue = rest
        self.observe(total, len(self.queue))
        return batch

    async def _execute(self, batch: list[Job]) -> None:
        try:
            loop = asyncio.get_running_loop()
            results = await loop.run_in_executor(self.executor, self._compute_batch, batch)
        except BaseException as exc:  # noqa: BLE001 - handed to every waiting request
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            for job, result in zip(batch, results):
                if not job.future.done():
                    job.future.set_result(result)
        finally:
            self.slots.release()

    def _compute_batch(self, batch: list[Job]) -> list[BatchResult]:
        """Join the jobs' images, explain them at once, slice the outputs back (worker thread)."""
        pixels = np.concatenate([job.pixels for job in batch])
        targets = None if batch[0].targets is None else np.concatenate([job.targets for job in batch])
        n = len(pixels)
        size = padded_size(n, self.max_batch) if self.pad else n
        if size > n:
            pixels = np.concatenate([pixels, np.repeat(pixels[-1:], size - n, axis=0)])
            if targets is not None:
                targets = np.concatenate([targets, np.repeat(targets[-1:], size - n)])
        def progress(_: int) -> None:
            if all(job.future.done() for job in batch):  # a read of a flag; the loop owns the futures
                raise BatchAbandoned

        out = self.compute(pixels, targets, batch[0].options, progress)
        values = {"map": out.maps, "target": out.targets, "score": out.scores, "masked_score": out.masked_scores}
        results, at = [], 0
        for job in batch:
            k = len(job.pixels)
            results.append(BatchResult({name: v[at : at + k] for name, v in values.items()}, out.backend, n))
            at += k
        return results
