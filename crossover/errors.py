"""The one kind of error every command answers with a line instead of a traceback, in the CLI and in a team's app."""

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any


class UserError(Exception):
    """A problem the user can fix (a stack not deployed, a missing file, a refused conversion); str() says
    what is wrong and what to do."""


@contextmanager
def extra(name: str, what: str) -> Iterator[None]:
    """Imports from an optional group of dependencies (pyproject.toml's extras): one missing is a UserError
    that names the install command, not a traceback."""
    try:
        yield
    except ModuleNotFoundError as e:
        raise UserError(f"{what} needs {e.name}, which comes with the {name!r} extra: "
                        f"pip install 'crossover-cdk[{name}]'") from None


def one_line(error: BaseException) -> str | None:
    """What a user mistake says, without a traceback: a UserError (a ConfigError too), or a config built in
    Python that pydantic refused (``ModelConfig(backend="gpux")``). None for anything else."""
    if isinstance(error, UserError):
        return str(error)
    errors: Any = getattr(error, "errors", None)
    if type(error).__name__ == "ValidationError" and callable(errors) and _ours(getattr(error, "title", "")):
        title = error.title  # type: ignore[attr-defined]
        return "; ".join(f"{title}: {'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in errors())
    return None


def _ours(title: str) -> bool:
    """Whether pydantic refused one of crossover's config models (not the app's own or a library's)."""
    from pydantic import BaseModel

    from crossover.config import schema

    model = getattr(schema, title, None)
    return isinstance(model, type) and issubclass(model, BaseModel)


def report_user_errors() -> None:
    """A team's app (``python app.py``, which `cdk synth` runs) that stops on a user mistake prints one line, not
    a traceback: installed when crossover is imported; every other exception reaches the previous hook."""
    previous = sys.excepthook

    def hook(kind: type[BaseException], error: BaseException, traceback: TracebackType | None) -> None:
        line = one_line(error)
        if line is None:
            previous(kind, error, traceback)
        else:
            print(f"error: {line}", file=sys.stderr)

    sys.excepthook = hook
