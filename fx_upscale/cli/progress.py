"""The ``cli`` extra (tqdm, tabulate): :func:`require_cli_extra` fails in one line where a package of it is missing,
and :func:`progress_bar` is the tqdm wrapper every command draws its progress with."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, TypeVar

from ..tables import INSTALL_HINT
from .errors import CommandError

if TYPE_CHECKING:
    from tqdm import tqdm

T = TypeVar("T")
CLI_EXTRA = ("tqdm", "tabulate")  # the progress bars and the tables


def require_cli_extra() -> None:
    """Fail at once, in one line, where a package of the ``cli`` extra is missing."""
    for name in CLI_EXTRA:
        try:
            importlib.import_module(name)
        except ImportError:
            raise CommandError(f"the command line needs {name}: {INSTALL_HINT}") from None


def progress_bar(items: Iterable[T], *, quiet: bool, description: str) -> tqdm[T]:
    """``items`` with a progress bar on stderr, drawn on a terminal only and never with ``--quiet``; use it as a
    context manager, so that the bar's line ends before what the command prints next."""
    from tqdm import tqdm

    return tqdm(items, desc=description, file=sys.stderr, disable=True if quiet else None, unit="step")
