"""One table style for every listing the operator reads: the CLI's own (``runbook list``, ``runs``,
``sim status``) and the results a run shows (``show: true`` steps, see ``engine.report.shown``).

rich is imported only when a table is printed, so a piped command that prints none starts fast.
"""

from __future__ import annotations

import os
import sys
from typing import Any, TextIO


def no_color() -> bool:
    """Whether the operator set ``NO_COLOR`` (to anything but the empty string), as no-color.org says."""
    return bool(os.environ.get("NO_COLOR"))


def console(width: int | None = None, file: TextIO | None = None) -> Any:
    """A rich console on ``file`` (stdout when None) that honours NO_COLOR."""
    from rich.console import Console

    # NO_COLOR: not even bold or dim (rich alone would keep those), so no escape codes at all.
    return Console(file=file, highlight=False, width=width, color_system=None if no_color() else "auto")


def pipe_width() -> int:
    """The width a pipe's reader sees: $COLUMNS, else the terminal on stderr (``runbook list | less``), else 80."""
    if os.environ.get("COLUMNS", "").isdigit():
        return int(os.environ["COLUMNS"])
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns
    except (OSError, ValueError):
        return 80


class Table:
    """A plain table. Its first ``keep`` columns (names, ids, states) are never cut. The others fold
    onto more lines on a terminal; in a pipe each row stays one line, the long cells cut with an
    ellipsis to fit the reader's width (see ``pipe_width``), so ``grep`` finds whole rows. ``--json``
    has every value in full. ``pipe`` says which (default: whether stdout is not a terminal)."""

    def __init__(self, *columns: str, keep: int = 1, title: str | None = None, pipe: bool | None = None):
        from rich.table import Table as RichTable

        self.keep = keep
        self.pipe = (not sys.stdout.isatty()) if pipe is None else pipe
        self.widths = [len(column) for column in columns[:keep]]
        self.table = RichTable(title=title, title_justify="left", box=None, pad_edge=False, header_style="bold")
        for number, column in enumerate(columns):
            self.table.add_column(column, no_wrap=number < keep, overflow="fold")

    def add_row(self, *cells: str) -> None:
        from rich.text import Text

        self.widths = [max(width, len(cell)) for width, cell in zip(self.widths, cells)]
        self.table.add_row(
            *(
                Text(cell, no_wrap=True, overflow="ellipsis") if self.pipe and number >= self.keep else cell
                for number, cell in enumerate(cells)
            )
        )

    def needed(self, indent: int = 0) -> int:
        """The narrowest width that keeps the kept columns whole (one space between columns, 12 for each other)."""
        others = len(self.table.columns) - self.keep
        return indent + sum(self.widths) + len(self.table.columns) - 1 + 12 * others

    def width(self) -> int | None:
        """The width to print at: None (the terminal's) on a terminal; in a pipe the reader's, but at
        least what ``needed`` says."""
        return max(pipe_width(), self.needed()) if self.pipe else None

    def print(self, file: TextIO | None = None) -> None:
        """Print to ``file`` (stdout when None)."""
        console(self.width(), file).print(self.table)
