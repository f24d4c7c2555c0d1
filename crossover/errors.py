"""The one kind of error every command answers with a line instead of a traceback, in the CLI and in a team's app."""

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType


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
    pydantic = sys.modules.get("pydantic")  # not loaded: the error cannot be pydantic's
    if pydantic is None or not isinstance(error, pydantic.ValidationError):
        return None
    from crossover.config import describe, schema

    model = getattr(schema, error.title, None)  # one of crossover's config models, not the app's own
    if not (isinstance(model, type) and issubclass(model, pydantic.BaseModel)):
        return None
    return "; ".join(f"{error.title}: {'.'.join(str(p) for p in e['loc']) or '(top)'}: {describe(e, model)}"
                     for e in error.errors())


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
