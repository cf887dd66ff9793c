"""fx_upscale.tables: cells drawn exactly as given, as a plain text table or a GitHub Markdown table."""

from __future__ import annotations

import sys

import pytest

from fx_upscale.tables import format_table

HEADERS = ("mode", "params kept", "gathers", "export s")
ROWS = [("upscale", "6,916,217 (59.2%)", 3, "0.50"), ("constrained", "3,595,863 (30.8%)", 10, "1.53e+00")]


def test_plain_table_keeps_the_cells_as_formatted_and_ends_lines_without_spaces():
    assert format_table(ROWS, HEADERS) == (
        "mode         params kept        gathers    export s\n"
        "-----------  -----------------  ---------  ----------\n"
        "upscale      6,916,217 (59.2%)  3          0.50\n"
        "constrained  3,595,863 (30.8%)  10         1.53e+00"
    )


def test_markdown_table_is_a_github_pipe_table():
    assert format_table(ROWS, HEADERS, markdown=True) == (
        "| mode        | params kept       | gathers   | export s   |\n"
        "|-------------|-------------------|-----------|------------|\n"
        "| upscale     | 6,916,217 (59.2%) | 3         | 0.50       |\n"
        "| constrained | 3,595,863 (30.8%) | 10        | 1.53e+00   |"
    )


def test_without_tabulate_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tabulate", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r"needs tabulate: pip install 'fx_upscale\[cli\]'"):
        format_table(ROWS, HEADERS)
