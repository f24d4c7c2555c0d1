"""A concurrency gate with micro-batching: one model call at a time, taking whatever is queued.

Callers put preprocessed tensors on a bounded queue and wait for their own result. A single worker
per accelerator takes the first waiting item, then everything else already queued (up to
``max_batch``) without waiting for more, runs one batch, and hands each caller its row. A full queue
refuses at once (the server answers 503 with Retry-After); a caller whose deadline passed is skipped.
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


class Overloaded(Exception):
    """The queue is full: try again later."""


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

    def submit(self, tensor: np.ndarray, timeout_s: float) -> Any:
        """Run ``tensor`` in the next batch; raises Overloaded, TimeoutError or the model's error."""
        item = _Item(tensor, time.monotonic() + timeout_s)
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            raise Overloaded from None
        return item.future.result(timeout=timeout_s)

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
            live = [i for i in batch if i.deadline > now and i.future.set_running_or_notify_cancel()]
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
