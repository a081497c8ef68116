"""Split a Python file into cells in the percent format (``# %%`` lines).

The percent format is the one Jupytext, VS Code and Spyder use: a line starting with ``# %%``
begins a new cell (``# %% [markdown]`` begins a Markdown cell, which is not code). See
https://jupytext.readthedocs.io/en/latest/formats-scripts.html#the-percent-format.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_CELL_MARKER = re.compile(r"^#\s?%%(.*)$")


@dataclass(frozen=True)
class Cell:
    """A code cell: its source, its title (text after ``# %%``) and its first line number (1-based)."""

    source: str
    title: str
    line: int


def split_cells(text: str) -> list[Cell]:
    """Split percent-format source into its non-empty code cells, in order.

    Text before the first marker is a cell of its own; a file without markers is one cell.
    Markdown cells (``# %% [markdown]``) and cells with only comments or blank lines are
    skipped.
    """
    cells: list[Cell] = []
    lines: list[str] = []
    title, start, is_code = "", 1, True

    def flush() -> None:
        source = "\n".join(lines).strip("\n")
        if is_code and any(line.strip() and not line.lstrip().startswith("#") for line in lines):
            cells.append(Cell(source=source, title=title, line=start))

    for number, line in enumerate(text.splitlines(), start=1):
        marker = _CELL_MARKER.match(line)
        if marker is None:
            lines.append(line)
            continue
        flush()
        rest = marker.group(1).strip()
        is_code = not re.match(r"\[(markdown|md|raw)\]", rest)
        title, start, lines = rest, number + 1, []
    flush()
    return cells
