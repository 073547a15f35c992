"""Errors a user can act on: the CLI prints them as one readable line instead of a traceback."""


class UserError(RuntimeError):
    """A failure whose message says what is wrong and what to do about it."""
