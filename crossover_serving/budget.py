"""Memory budgets: how many bytes request bodies and image decoding may hold at once.

An image within the pixel cap can still cost hundreds of megabytes to decode (a 1.6 KB lossless
WebP of 8000 x 5000 pixels holds ~600 MB), and eight at once take a 4 GiB instance down. So decoding
is admitted against a budget derived from the memory this process may still use: in the HTTP
server, an image that does not fit waits for others to finish, until its deadline, then gets 503;
one larger than the whole budget gets 413 at once. Lambda and the pipeline worker decode one image
at a time, so there the budget is only checked (:meth:`Budget.check`). On Lambda Managed Instances each of an
environment's processes gets its share of the environment's memory.
"""

from __future__ import annotations

import asyncio
import collections
import os
import threading
from pathlib import Path

from crossover_serving.errors import InputError, Overloaded

MIB = 1024 * 1024


def _rss() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def processes() -> int:
    """How many processes share this execution environment: AWS_LAMBDA_MAX_CONCURRENCY on Lambda Managed Instances
    (its Python runtime runs one request per process, each with its own copy of the model), else this one."""
    value = os.environ.get("AWS_LAMBDA_MAX_CONCURRENCY", "")
    return int(value) if value.isdigit() and int(value) > 0 else 1


def _limit() -> int:
    """The memory this process may use: its share of Lambda's setting, the cgroup's limit, or what the machine has
    free."""
    lambda_mib = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
    if lambda_mib and lambda_mib.isdigit():
        return int(lambda_mib) * MIB // processes()
    for limit_file in (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes")):
        try:
            text = limit_file.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:
            return int(text)
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line)
    return int(meminfo["MemAvailable"].split()[0]) * 1024 + _rss()


def available_memory(fraction: float) -> int:
    """``fraction`` of what this process may still allocate, measured now (after the model loaded)."""
    return max(64 * MIB, int((_limit() - _rss()) * fraction))


class Budget:
    """A number of bytes shared by what runs at once; ``what`` names it in errors. Any thread may take
    without waiting (:meth:`try_take`) and give back; waiting (:meth:`take`) happens on an event loop,
    first come, first served."""

    def __init__(self, limit: int, what: str) -> None:
        self.limit, self.what, self.used = limit, what, 0
        self._lock = threading.Lock()
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    def check(self, size: int) -> None:
        """Refuse at once what could never fit."""
        if size > self.limit:
            raise InputError(f"{self.what} would need about {size / MIB:,.0f} MiB; this server's limit is "
                             f"{self.limit / MIB:,.0f} MiB", status=413, code="too_large_to_decode")

    def try_take(self, size: int) -> bool:
        """Take ``size`` bytes if they are free now and nobody waits for them."""
        self.check(size)
        with self._lock:
            if self._waiters or self.used + size > self.limit:
                return False
            self.used += size
            return True

    async def take(self, size: int, deadline_at: float) -> None:
        """Wait until ``size`` bytes are free, or raise Overloaded at ``deadline_at`` (loop time). However the
        wait ends (its deadline, or the caller's task cancelled), bytes granted to a waiter that gave up go back."""
        if self.try_take(size):
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._lock:
            self._waiters.append((size, granted))
            self._grant()
        kept = False
        try:
            async with asyncio.timeout_at(deadline_at):
                await granted
            kept = True
        except TimeoutError:
            raise Overloaded(f"{self.what}: not enough memory free before the deadline") from None
        finally:
            if not kept:
                if granted.done() and not granted.cancelled():
                    self.give(size)  # granted just as the wait ended: hand it back
                granted.cancel()  # bytes still on their way to it (_settle) go back too
            with self._lock:
                self._grant()  # a waiter that gave up may have been holding up smaller ones behind it

    def lease(self) -> Lease:
        return Lease(self)

    def give(self, size: int) -> None:
        with self._lock:
            self.used -= size
            self._grant()

    def _grant(self) -> None:
        """Hand free bytes to the waiters at the head of the line (the lock is held)."""
        while self._waiters:
            size, granted = self._waiters[0]
            if granted.done():  # gave up at its deadline
                self._waiters.popleft()
                continue
            if self.used + size > self.limit:
                return
            self._waiters.popleft()
            self.used += size
            granted.get_loop().call_soon_threadsafe(self._settle, granted, size)

    def _settle(self, granted: asyncio.Future[None], size: int) -> None:
        if granted.done():  # it gave up after the bytes were set aside for it: they go back
            self.give(size)
        else:
            granted.set_result(None)


class Lease:
    """Bytes one holder takes from a budget a piece at a time, as they arrive (a request body), all given back
    by one :meth:`release`: what a client only announces reserves nothing."""

    def __init__(self, budget: Budget) -> None:
        self.budget, self.held = budget, 0

    def try_take(self, size: int) -> bool:
        if not self.budget.try_take(size):
            return False
        self.held += size
        return True

    def release(self) -> None:
        held, self.held = self.held, 0
        if held:
            self.budget.give(held)
