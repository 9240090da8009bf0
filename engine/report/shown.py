"""A step's output as the operator reads it: what a ``show: true`` step prints under its line.

The output is the step's result after ``extract``, so the runbook decides what is worth showing and
this module only decides how: a list of objects is one table, an object is ``key: value`` lines
(a list of objects inside it a table below its key), a command's result is what it printed.
``--json`` keeps every value as it is; here a value is one cell or one line, for reading and grep.
"""

from __future__ import annotations

import io
import json
from typing import Any

#: Spaces before a shown output's lines, under its ``[ok]`` line.
INDENT = 6


def shown_lines(value: Any, width: int | None = None) -> list[str]:
    """``value`` as indented lines; ``width`` is what a table may fill (the reader's, by default)."""
    return [" " * INDENT + line if line else "" for line in _lines(_result(value), width, INDENT)]


def _result(value: Any) -> Any:
    """A command's result (``stdout``, ``exit_code``...) is what it printed, or its parsed ``json``."""
    if isinstance(value, dict) and "stdout" in value and "exit_code" in value:
        if value.get("json") is not None:
            return value["json"]
        text = str(value["stdout"]).rstrip("\n")
        code = value.get("exit_code")
        return text if code in (0, None) else f"{text}\n(exit code {code})".lstrip("\n")
    return value


def _lines(value: Any, width: int | None, indent: int) -> list[str]:
    if _is_rows(value):
        return _table(value, width, indent)
    if isinstance(value, dict):
        return _mapping(value, width, indent)
    if isinstance(value, list):
        if all(not isinstance(item, (dict, list)) for item in value):
            return [cell(item) for item in value] or ["(none)"]
        return [json.dumps(item, default=str, ensure_ascii=False) for item in value]
    if isinstance(value, str):
        return value.splitlines()
    return [cell(value)]


def _is_rows(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(item, dict) for item in value)


def _mapping(value: dict[str, Any], width: int | None, indent: int) -> list[str]:
    if not value:
        return ["(empty)"]
    pad = max(len(str(key)) for key in value) + 1
    lines: list[str] = []
    for key, item in value.items():
        if _is_rows(item) or (isinstance(item, dict) and item):
            lines.append(f"{key}:")
            lines += ["  " + line for line in _lines(item, width, indent + 2)]
        elif isinstance(item, str) and "\n" in item.rstrip("\n"):
            lines.append(f"{key}:")
            lines += ["  " + line for line in item.rstrip("\n").splitlines()]
        else:
            lines.append(f"{f'{key}:':<{pad}} {cell(item)}".rstrip())
    return lines


def _table(rows: list[dict[str, Any]], width: int | None, indent: int) -> list[str]:
    """One row per object, a column per key (in the order keys first appear), printed as the CLI
    prints its own tables in a pipe: each row one line, the first column never cut."""
    from rich.console import Console

    from .table import Table, pipe_width

    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    table = Table(*(column.upper().replace("_", " ") for column in columns), keep=1, pipe=True)
    for row in rows:
        table.add_row(*(cell(row.get(column)) for column in columns))
    out = io.StringIO()
    fit = max(table.needed(indent), width or pipe_width()) - indent
    # Plain text whatever the stream: these lines go out with the progress lines around them.
    Console(file=out, width=fit, color_system=None, highlight=False, markup=False, emoji=False).print(table.table)
    return [line.rstrip() for line in out.getvalue().splitlines()]


def cell(value: Any) -> str:
    """One value in one line: ``-`` for nothing, yes/no, a list joined by commas."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list) and all(not isinstance(item, (dict, list)) for item in value):
        return ", ".join(cell(item) for item in value) or "-"
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str, ensure_ascii=False)
    return " ".join(str(value).split()) if "\n" in str(value) else str(value)
