"""One deadline per request or message, from its arrival to its answer.

Every step (reading the body, each hop of a fetch, decoding, waiting for the model) takes what is left
of the same deadline instead of a timeout of its own, so no sequence of slow steps adds up past it.
Times are ``time.monotonic()``, the clock asyncio's event loop uses too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Deadline:
    at: float  # time.monotonic() by which the answer is due
    seconds: float  # how long the whole request was given, for messages

    @classmethod
    def after(cls, seconds: float, *, start: float | None = None) -> Deadline:
        return cls((time.monotonic() if start is None else start) + seconds, seconds)

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def expired(self) -> bool:
        return self.remaining() <= 0
