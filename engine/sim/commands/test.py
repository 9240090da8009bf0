"""Simulates ``test`` and ``[``: file tests, string and number comparisons."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Out

if TYPE_CHECKING:
    from ..shell import Run


def test_command(run: Run, args: list[str], stdin: str) -> Out:
    words = args[1:]
    if args[0] == "[":
        if not words or words[-1] != "]":
            return Out(status=2, err=f"bash: line {run.line}: [: missing `]'\n")
        words = words[:-1]
    negate = False
    while words and words[0] == "!" and len(words) > 1:
        negate = not negate
        words = words[1:]
    try:
        result = _test_expr(run, words)
    except ValueError as exc:
        return Out(status=2, err=f"bash: line {run.line}: {args[0]}: {exc}\n")
    if negate:
        result = not result
    return Out(status=0 if result else 1)


def _test_expr(run: Run, words: list[str]) -> bool:
    files = run.x.files
    if not words:
        return False
    if len(words) == 1:
        return words[0] != ""
    if len(words) == 2:
        op, operand = words
        if op in ("-n", "-z"):
            return (operand != "") == (op == "-n")
        path = run.path(operand)
        if op == "-f":
            return files.is_file(run.node, path)
        if op == "-d":
            return files.is_dir(run.node, path)
        if op in ("-e", "-r", "-w", "-a"):
            return files.exists(run.node, path)
        if op == "-s":
            record = files.get(run.node, path)
            return bool(record and record.get("size", 0) > 0) or files.is_dir(run.node, path)
        if op == "-x":
            return files.is_dir(run.node, path)
        raise ValueError(f"{op}: unary operator expected")
    if len(words) == 3:
        left, op, right = words
        if op in ("=", "=="):
            return left == right
        if op == "!=":
            return left != right
        if op in ("-eq", "-ne", "-lt", "-le", "-gt", "-ge"):
            try:
                a, b = int(left), int(right)
            except ValueError:
                raise ValueError(
                    f"{left if not left.lstrip('-').isdigit() else right}: integer expression expected"
                ) from None
            return {"-eq": a == b, "-ne": a != b, "-lt": a < b, "-le": a <= b, "-gt": a > b, "-ge": a >= b}[op]
        raise ValueError(f"{op}: binary operator expected")
    raise ValueError("too many arguments")
