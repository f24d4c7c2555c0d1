"""A concurrency gate with micro-batching: one model call at a time, taking whatever is queued.

Callers put preprocessed tensors on a bounded queue and wait for their own result. A single worker
per accelerator takes the first waiting item, then everything else already queued (up to
``max_batch``) without waiting for more, runs one batch, and hands each caller its row. A full queue
refuses at once (the server answers 503 with Retry-After); an item whose deadline passed is skipped.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from crossover_serving.errors import Overloaded


@dataclass
class _Item:
    tensor: np.ndarray
    deadline: float
    future: Future[Any] = field(default_factory=Future)


class Batcher:
    def __init__(self, run: Callable[[Sequence[np.ndarray]], list[Any]], *, max_batch: int = 1,
                 max_queue: int = 32, on_batch: Callable[[int, float], None] | None = None) -> None:
        self._run, self.max_batch, self._on_batch = run, max_batch, on_batch
        self._queue: queue.Queue[_Item | None] = queue.Queue(maxsize=max_queue)
        self._worker = threading.Thread(target=self._loop, name="batcher", daemon=True)
        self._worker.start()

    def depth(self) -> int:
        return self._queue.qsize()

    def enqueue(self, tensor: np.ndarray, deadline_at: float) -> Future[Any]:
        """Queue ``tensor`` for the next batch; its future holds the result or the model's error. Raises
        Overloaded when the queue is full. Past ``deadline_at`` (time.monotonic()) it is skipped."""
        item = _Item(tensor, deadline_at)
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            raise Overloaded("the model's queue is full") from None
        return item.future

    def close(self) -> None:
        """Finish what is queued, then stop the worker."""
        self._queue.put(None)
        self._worker.join()

    def _loop(self) -> None:
        while (first := self._queue.get()) is not None:
            batch, stop = [first], False
            while len(batch) < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            now = time.monotonic()
            live = []
            for item in batch:
                if not item.future.set_running_or_notify_cancel():
                    continue  # its caller gave up
                if item.deadline <= now:
                    item.future.set_exception(TimeoutError())
                else:
                    live.append(item)
            if live:
                started = time.perf_counter()
                try:
                    results = self._run([i.tensor for i in live])
                except Exception as e:  # the model failed: every caller in the batch learns why
                    for i in live:
                        i.future.set_exception(e)
                else:
                    for i, result in zip(live, results, strict=True):
                        i.future.set_result(result)
                if self._on_batch:
                    self._on_batch(len(live), (time.perf_counter() - started) * 1000)
            if stop:
                return
