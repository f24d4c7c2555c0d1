"""Errors a caller caused (each carries the HTTP status and a message that names the problem), and
the two kinds of failure that are nobody's fault in particular: no capacity now, no model."""

from __future__ import annotations


class InputError(Exception):
    """A bad request: answered with ``status`` and ``{"error": code, "message": str(self)}``."""

    def __init__(self, message: str, *, status: int = 400, code: str = "bad_input") -> None:
        super().__init__(message)
        self.status, self.code = status, code

    def body(self) -> dict[str, str]:
        return {"error": self.code, "message": str(self)}


class ModelLoadError(Exception):
    """The model artifact could not be fetched, verified or loaded (an operator's problem, not a caller's)."""


class Overloaded(Exception):
    """No capacity now (a full queue, no memory free before the deadline): 503 with Retry-After."""
