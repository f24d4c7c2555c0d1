"""The one kind of error every command answers with a line instead of a traceback."""

from collections.abc import Iterator
from contextlib import contextmanager


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
