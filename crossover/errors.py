"""The one kind of error every command answers with a line instead of a traceback."""


class UserError(Exception):
    """A problem the user can fix (a stack not deployed, a missing file, a refused conversion); str() says
    what is wrong and what to do."""
