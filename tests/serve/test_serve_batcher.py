"""The batcher alone, with a fake explainer that records each batch it is given."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np
import pytest

from opticam_rt.serve.batcher import Batcher, Job, cut_size, padded_size
from opticam_rt.serve.errors import ServeError


@pytest.mark.parametrize("n,max_batch,want", [(1, 8, 1), (2, 8, 2), (3, 8, 4), (5, 8, 8), (8, 8, 8), (11, 8, 11),
                                              (5, 6, 6), (3, 6, 4), (1, 1, 1)])
def test_padded_size(n, max_batch, want):
    assert padded_size(n, max_batch) == want


@pytest.mark.parametrize("n,max_batch,want", [(1, 8, 1), (3, 8, 2), (5, 8, 4), (7, 8, 4), (8, 8, 8), (11, 8, 11), (5, 6, 4)])
def test_cut_size(n, max_batch, want):
    assert cut_size(n, max_batch) == want


class FakeExplainer:
    """compute(pixels, targets, options, progress): maps are pixel channel 0 (so rows can be
    traced back), targets the given ones or the row's first pixel * 100; sleeps ``seconds``,
    reporting progress every 10 ms."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds
        self.batches: list[tuple[int, dict]] = []
        self.lock = threading.Lock()

    def __call__(self, pixels, targets, options, progress):
        with self.lock:
            self.batches.append((len(pixels), dict(options)))
        end = time.monotonic() + self.seconds
        while time.monotonic() < end:
            time.sleep(0.01)
            progress(1)
        t = targets if targets is not None else (pixels[:, 0, 0, 0] * 100).astype(np.int64)
        return SimpleNamespace(maps=pixels[:, 0], targets=t, scores=pixels[:, 1, 0, 0], masked_scores=pixels[:, 2, 0, 0],
                               backend="fake")


def _run(coro):
    return asyncio.run(coro)


def _job(loop, value: float, n: int = 1, options=None, targets=None) -> Job:
    pixels = np.full((n, 3, 2, 2), value, np.float32)
    return Job(pixels, targets, options or {}, loop.create_future())


def _batches_for(jobs_spec, pad: bool, max_batch: int = 8):
    """Run jobs given as (value, n, options) through one batcher; -> (batches seen, results)."""
    fake = FakeExplainer()

    async def main():
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(1) as pool:
            b = Batcher(fake, pool, asyncio.Semaphore(1), max_batch=max_batch, max_wait_s=0.2, max_queue=64, pad=pad)
            jobs = [_job(loop, v, n=n, options=o) for v, n, o in jobs_spec]
            for j in jobs:
                b.submit(j)
            task = asyncio.create_task(b.run())
            results = await asyncio.gather(*(j.future for j in jobs))
            task.cancel()
            return results

    results = _run(main())
    return fake.batches, results


def test_joins_requests_with_equal_options_up_to_max_batch():
    spec = [(i / 100, 1, {}) for i in range(3)] + [(0.5, 1, {"iterations": 3}), (0.6, 6, {})]
    batches, results = _batches_for(spec, pad=False)
    # the 3 singles join; the 6-image request would pass 8 and waits; the other options run apart
    assert batches == [(3, {}), (1, {"iterations": 3}), (6, {})]
    for i in range(3):
        assert results[i].batch_size == 3 and results[i].values["map"].shape == (1, 2, 2)
        assert results[i].values["target"][0] == int(np.float32(i / 100) * 100)  # its own row, not a neighbour's
    assert results[4].values["map"].shape == (6, 2, 2) and results[4].batch_size == 6


def test_static_shapes_cut_batches_to_powers_of_two_and_pad_only_what_cannot_be_cut():
    batches, results = _batches_for([(i / 100, 1, {}) for i in range(5)], pad=True)
    assert batches == [(4, {}), (1, {})]  # 5 singles: 4 + 1, nothing padded
    assert [r.values["target"][0] for r in results] == [int(np.float32(i / 100) * 100) for i in range(5)]
    batches, results = _batches_for([(0.1, 3, {}), (0.2, 2, {})], pad=True)
    assert batches == [(8, {})]  # 3 + 2 images cannot make 4 from whole requests: padded 5 -> 8
    assert results[0].batch_size == 5 and results[1].values["map"].shape == (2, 2, 2)


def test_targets_and_top1_never_share_a_batch():
    fake = FakeExplainer()

    async def main():
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(1) as pool:
            b = Batcher(fake, pool, asyncio.Semaphore(1), max_batch=8, max_wait_s=0.05, max_queue=64)
            jobs = [_job(loop, 0.1), _job(loop, 0.2, targets=np.array([3]))]
            for j in jobs:
                b.submit(j)
            task = asyncio.create_task(b.run())
            out = await asyncio.gather(*(j.future for j in jobs))
            task.cancel()
            return out

    out = _run(main())
    assert [n for n, _ in fake.batches] == [1, 1]
    assert out[1].values["target"][0] == 3


def test_full_queue_refuses_with_retry_after():
    async def main():
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(1) as pool:
            b = Batcher(FakeExplainer(), pool, asyncio.Semaphore(1), max_batch=8, max_wait_s=0, max_queue=2)
            b.submit(_job(loop, 0.1))
            b.submit(_job(loop, 0.1))
            with pytest.raises(ServeError) as err:
                b.submit(_job(loop, 0.1))
            return err.value

    err = _run(main())
    assert err.status == 503 and err.headers == {"Retry-After": "1"}


def test_an_abandoned_batch_stops_and_frees_its_worker():
    fake = FakeExplainer(seconds=5.0)

    async def main():
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(1) as pool:
            b = Batcher(fake, pool, asyncio.Semaphore(1), max_batch=1, max_wait_s=0, max_queue=8)
            slow = _job(loop, 0.1)
            b.submit(slow)
            task = asyncio.create_task(b.run())
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(slow.future, 0.1)  # the caller gives up: its future is cancelled
            fake.seconds = 0.0
            start = time.monotonic()
            nxt = _job(loop, 0.2)
            b.submit(nxt)
            await asyncio.wait_for(nxt.future, 2.0)
            task.cancel()
            return time.monotonic() - start

    assert _run(main()) < 1.0  # not after the abandoned 5 s
