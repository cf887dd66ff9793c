"""Tables for people to read: the one place where the command line, the demo and the benchmarks draw rows of cells,
as plain text for a terminal or as a GitHub Markdown table.

Cells arrive already formatted (thousands separators, percentages, seconds, scientific differences) and are drawn
as given. Drawing uses tabulate, from the ``cli`` extra; it is imported only when a table is drawn, so that the
library itself needs only torch and networkx.
"""

from __future__ import annotations

from collections.abc import Sequence

INSTALL_HINT = "pip install 'fx_upscale[cli]'"


def format_table(rows: Sequence[Sequence[object]], headers: Sequence[str], *, markdown: bool = False) -> str:
    """``rows`` under ``headers``, each cell as ``str(cell)``, left-aligned: plain text without trailing spaces,
    or (``markdown``) a GitHub Markdown pipe table."""
    try:
        from tabulate import tabulate
    except ImportError as error:
        raise ImportError(f"drawing tables needs tabulate: {INSTALL_HINT}") from error
    cells = [[str(cell) for cell in row] for row in rows]
    text = tabulate(cells, headers=list(headers), tablefmt="github" if markdown else "simple", disable_numparse=True)
    return text if markdown else "\n".join(line.rstrip() for line in text.splitlines())
