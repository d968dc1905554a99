"""Dynamic batching: concurrent requests with the same prompt are encoded together, in one worker thread.

Each request's texts go into a bounded queue; the worker waits at most `max_wait_ms` after the oldest request
for more to arrive (or until `max_batch_size` texts are there), then encodes up to `max_batch_size` texts of that
prompt in one `encode` call. A larger request is encoded a batch at a time (its texts longest first, as `encode`
orders them, so each batch pads little) and goes to the back of the queue after each batch, so a 500-text request
does not make a one-text request wait for all 500. A full queue refuses
new work (the app answers 503) instead of growing a backlog; a request whose client went away loses its
remaining batches. Shutting down (`drain`) refuses new work, finishes what is queued within a grace period and
fails what is left with `ShuttingDown`.
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
    """The queue is full: retry later."""


class ShuttingDown(Overloaded):
    """The server is stopping: new work is refused, and work not done within the grace period is dropped."""


@dataclass(eq=False)  # identity, not field equality: the queue removes a job by `is`
class _Job:
    texts: list[str]
    key: Hashable
    future: asyncio.Future
    arrived: float = field(default_factory=time.monotonic)
    taken: int = 0  # texts handed to the worker so far (they are taken in order)
    parts: list = field(default_factory=list)  # what encode returned for each finished batch, in order
    order: np.ndarray | None = None  # texts[i] is the request's text order[i] (None: the request's own order)

    @property
    def remaining(self) -> int:
        return len(self.texts) - self.taken


class DynamicBatcher:
    """`await submit(texts, key)` returns `encode(texts, key)` for those texts, however they were batched (for a
    tuple result, each part joined).

    `encode(texts, key) -> (n, d) array` (or a tuple of per-text sequences) runs in one background thread, so the
    event loop keeps accepting requests while the model works. `max_queue` bounds the texts waiting (not yet
    being encoded); a request larger than that can never be queued (`ValueError`).
    """

    def __init__(self, encode: Callable[[list[str], Hashable], np.ndarray], max_batch_size: int = 64,
                 max_wait_ms: float = 5.0, max_queue: int = 4096):
        if not (max_batch_size >= 1 and max_queue >= 1 and max_wait_ms >= 0):
            raise ValueError("max_batch_size and max_queue must be >= 1, max_wait_ms >= 0")
        self.encode, self.max_batch_size, self.max_wait = encode, max_batch_size, max_wait_ms / 1000
        self.max_queue = max_queue
        self._jobs: deque[_Job] = deque()
        self._running: list[_Job] = []  # jobs with a batch in the encoding thread now
        self._queued = 0
        self._wake = asyncio.Event()
        self._closing = False
        self._expiry: asyncio.TimerHandle | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="encode")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._worker: asyncio.Task | None = None
        self.batches = 0
        self.in_flight = 0  # requests submitted and not answered yet

    @property
    def queued(self) -> int:
        return self._queued

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._worker = self._loop.create_task(self._run())

    def drain(self, grace_s: float) -> None:
        """Refuse new work; what is queued or running has `grace_s` seconds, then fails with ShuttingDown.

        Call it on the event loop's thread (from a signal handler: `drain_threadsafe`); a second call keeps the
        first deadline."""
        if self._closing:
            return
        self._closing = True
        self._wake.set()
        if self._loop is not None:
            self._expiry = self._loop.call_later(max(grace_s, 0.0), self._expire)

    def drain_threadsafe(self, grace_s: float) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.drain, grace_s)

    async def close(self, grace_s: float = 30.0) -> None:
        """Drain (keeping an earlier deadline) and stop the worker. A batch already in the encoding thread
        cannot be interrupted: the thread finishes it (at most `max_batch_size` texts) before the process ends."""
        self.drain(grace_s)
        if self._worker is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        if self._expiry is not None:
            self._expiry.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _expire(self) -> None:
        """The grace period is over: every request not answered yet fails now, the running batch included."""
        for job in [*self._jobs, *self._running]:
            if not job.future.done():
                job.future.set_exception(ShuttingDown("the server is shutting down and its grace period ended "
                                                      "before this request was encoded"))
        self._jobs.clear()
        self._queued = 0
        if self._worker is not None:
            self._worker.cancel()

    async def submit(self, texts: list[str], key: Hashable):
        if len(texts) > self.max_queue:
            raise ValueError(f"{len(texts)} texts can never be queued: the queue holds at most {self.max_queue}")
        if self._closing:
            raise ShuttingDown("the server is shutting down")
        if self._queued + len(texts) > self.max_queue:
            raise Overloaded(f"{self._queued} texts are queued (limit {self.max_queue})")
        job = _Job(texts, key, asyncio.get_running_loop().create_future())
        if len(texts) > self.max_batch_size:  # batches of like lengths: little padding, as one encode call has
            job.order = np.argsort([-len(text) for text in texts], kind="stable")
            job.texts = [texts[i] for i in job.order]
        self._jobs.append(job)
        self._queued += len(texts)
        self._wake.set()
        self.in_flight += 1
        try:
            return await job.future
        except asyncio.CancelledError:
            self._drop(job)  # the client went away: its batches not taken yet are dropped
            raise
        finally:
            self.in_flight -= 1

    def _drop(self, job: _Job) -> int:
        """Remove a job's batches not taken yet; returns how many texts that spared."""
        try:
            self._jobs.remove(job)
        except ValueError:
            return 0
        self._queued -= job.remaining
        return job.remaining

    def _take(self) -> list[tuple[_Job, int, int]]:
        """Up to max_batch_size texts of the oldest job's key, oldest first: (job, start, end) per job. A job with
        texts left goes to the back of the queue, behind requests that arrived while it was being encoded."""
        key = self._jobs[0].key
        parts, room = [], self.max_batch_size
        for job in list(self._jobs):
            if room == 0:
                break
            if job.key != key:
                continue
            start, end = job.taken, min(len(job.texts), job.taken + room)
            parts.append((job, start, end))
            job.taken, room = end, room - (end - start)
            self._queued -= end - start
            self._jobs.remove(job)
            if job.remaining:
                self._jobs.append(job)
        return parts

    def _ready(self) -> bool:
        first = self._jobs[0]
        same = sum(job.remaining for job in self._jobs if job.key == first.key)
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
            parts = self._take()
            self._running = [job for job, _, _ in parts]
            texts = [text for job, start, end in parts for text in job.texts[start:end]]
            try:
                result = await loop.run_in_executor(self._executor, self.encode, texts, parts[0][0].key)
            except Exception as err:  # noqa: BLE001 -- reported to every request in the batch, the worker lives on
                for job, _, _ in parts:
                    self._drop(job)
                    if not job.future.done():
                        job.future.set_exception(err)
                continue
            finally:
                self._running = []
            self.batches += 1
            offset = 0
            for job, start, end in parts:
                if not job.future.done():  # not cancelled meanwhile
                    job.parts.append(_rows(result, offset, offset + end - start))
                    if end == len(job.texts):
                        job.future.set_result(_join(job.parts, job.order))
                offset += end - start


def _rows(result, start: int, end: int):
    """A job's rows of what encode returned: an array, or a tuple of per-text sequences (e.g. with token counts)."""
    return tuple(part[start:end] for part in result) if isinstance(result, tuple) else result[start:end]


def _join(parts: list, order: np.ndarray | None = None):
    """One job's batches back together, in the request's order (`order`: where each row goes)."""
    if isinstance(parts[0], tuple):
        return tuple(_join(list(column), order) for column in zip(*parts, strict=True))
    if isinstance(parts[0], np.ndarray):
        rows = np.concatenate(parts)
        if order is not None:
            rows[order] = rows.copy()
        return rows
    items = [item for part in parts for item in part]
    if order is not None:
        placed = [None] * len(items)
        for row, index in enumerate(order):
            placed[index] = items[row]
        items = placed
    return items
