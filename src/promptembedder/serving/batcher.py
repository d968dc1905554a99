"""Dynamic batching: concurrent requests with the same prompt are encoded together, in one worker thread.

Each request's texts go into a bounded queue; the worker waits at most `max_wait_ms` after the oldest request
for more to arrive (or until `max_batch_size` texts are there), then hands all texts of that prompt to one
`encode` call, which sorts and batches them itself. A full queue refuses new work (the app answers 503) instead
of growing a backlog; a request whose client went away is dropped from the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np


class Overloaded(Exception):
    """The queue is full (or the server is shutting down): retry later."""


@dataclass
class _Job:
    texts: list[str]
    key: Hashable
    future: asyncio.Future
    arrived: float = field(default_factory=time.monotonic)


class DynamicBatcher:
    """`await submit(texts, key)` returns `encode(all_texts, key)` rows for those texts (for a tuple, of each part).

    `encode(texts, key) -> (n, d) array` runs in one background thread, so the event loop keeps accepting
    requests while the model works. `max_queue` bounds the texts waiting (not yet being encoded).
    """

    def __init__(self, encode: Callable[[list[str], Hashable], np.ndarray], max_batch_size: int = 64,
                 max_wait_ms: float = 5.0, max_queue: int = 4096):
        if max_batch_size < 1 or max_queue < 1 or max_wait_ms < 0:
            raise ValueError("max_batch_size and max_queue must be >= 1, max_wait_ms >= 0")
        self.encode, self.max_batch_size, self.max_wait = encode, max_batch_size, max_wait_ms / 1000
        self.max_queue = max_queue
        self._jobs: deque[_Job] = deque()
        self._queued = 0
        self._wake = asyncio.Event()
        self._closing = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="encode")
        self._worker: asyncio.Task | None = None
        self.batches = 0
        self.in_flight = 0  # requests submitted and not answered yet

    @property
    def queued(self) -> int:
        return self._queued

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        """Refuse new work, finish everything already queued, then stop the worker thread."""
        self._closing = True
        self._wake.set()
        if self._worker is not None:
            await self._worker
        self._executor.shutdown(wait=True)

    async def submit(self, texts: list[str], key: Hashable) -> np.ndarray:
        if self._closing:
            raise Overloaded("the server is shutting down")
        if self._queued + len(texts) > self.max_queue:
            raise Overloaded(f"{self._queued} texts are queued (limit {self.max_queue})")
        job = _Job(texts, key, asyncio.get_running_loop().create_future())
        self._jobs.append(job)
        self._queued += len(texts)
        self._wake.set()
        self.in_flight += 1
        try:
            return await job.future
        except asyncio.CancelledError:
            self._drop(job)  # the client went away: free its place unless the worker already took it
            raise
        finally:
            self.in_flight -= 1

    def _drop(self, job: _Job) -> None:
        try:
            self._jobs.remove(job)
        except ValueError:
            return
        self._queued -= len(job.texts)

    def _take(self) -> list[_Job]:
        """The oldest job plus later ones with the same key, up to max_batch_size texts (a big job goes alone)."""
        first = self._jobs[0]
        taken, total = [], 0
        for job in list(self._jobs):
            if job.key != first.key:
                continue
            if taken and total + len(job.texts) > self.max_batch_size:
                break
            taken.append(job)
            total += len(job.texts)
        for job in taken:
            self._jobs.remove(job)
            self._queued -= len(job.texts)
        return taken

    def _ready(self) -> bool:
        first = self._jobs[0]
        same = sum(len(job.texts) for job in self._jobs if job.key == first.key)
        return same >= self.max_batch_size or time.monotonic() - first.arrived >= self.max_wait or self._closing

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._jobs:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            if not self._ready():
                self._wake.clear()
                remaining = self.max_wait - (time.monotonic() - self._jobs[0].arrived)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=max(remaining, 0))
                continue
            jobs = self._take()
            texts = [text for job in jobs for text in job.texts]
            try:
                vectors = await loop.run_in_executor(self._executor, self.encode, texts, jobs[0].key)
            except Exception as err:  # noqa: BLE001 -- reported to every waiting request, the worker lives on
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(err)
                continue
            self.batches += 1
            start = 0
            for job in jobs:
                if not job.future.done():
                    job.future.set_result(_rows(vectors, start, start + len(job.texts)))
                start += len(job.texts)


def _rows(result, start: int, end: int):
    """A job's rows of what encode returned: an array, or a tuple of per-text sequences (e.g. with token counts)."""
    return tuple(part[start:end] for part in result) if isinstance(result, tuple) else result[start:end]
