"""How the command line reports a failure: :class:`CommandError` for a user mistake, and :func:`one_line`, the
message :func:`fx_upscale.cli.main` prints for any error (its traceback only with ``--debug``)."""

from __future__ import annotations


class CommandError(Exception):
    """A user mistake the command line reports in one line."""


def one_line(error: BaseException) -> str:
    """The error's message on one line, prefixed with its type unless it is a CommandError."""
    message = " ".join(str(error).split()) or repr(error)
    return message if isinstance(error, CommandError) else f"{type(error).__name__}: {message}"
