"""Simulates ``grep`` as a filter in a pipe."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from .base import Exit, Out

if TYPE_CHECKING:
    from ..shell import Run


def grep_command(run: Run, args: list[str], stdin: str) -> Out:
    extended = fixed = quiet = invert = ignore = count = whole_line = False
    pattern: str | None = None
    rest = args[1:]
    operands = []
    while rest:
        arg = rest.pop(0)
        if arg == "-e" and rest:
            pattern = rest.pop(0)
        elif re.fullmatch(r"-[EFqvicx]+", arg):
            extended |= "E" in arg
            fixed |= "F" in arg
            quiet |= "q" in arg
            invert |= "v" in arg
            ignore |= "i" in arg
            count |= "c" in arg
            whole_line |= "x" in arg
        elif arg.startswith("-") and arg != "-":
            run.unsupported = f"simulation: grep option {arg} is not simulated on PVE nodes (script line {run.line})"
            raise Exit(127)
        else:
            operands.append(arg)
    if pattern is None:
        if not operands:
            return Out(status=2, err="Usage: grep [OPTION]... PATTERNS [FILE]...\n")
        pattern = operands.pop(0)
    if operands:
        run.unsupported = (
            f"simulation: grep reads only piped input on PVE nodes (files have no content in the "
            f"simulation; use test -f to check a file) (script line {run.line})"
        )
        raise Exit(127)
    if fixed:
        regex = re.escape(pattern)
    elif extended:
        regex = pattern
    else:  # basic regular expressions: \( \) \| \{ \} are the operators, bare ones are literal
        regex = re.sub(r"\\([(){}|+?])|([(){}|+?])", lambda m: m.group(1) or "\\" + m.group(2), pattern)
    try:
        compiled = re.compile(f"(?:{regex})\\Z" if whole_line else regex, re.I if ignore else 0)
    except re.error as exc:
        return Out(status=2, err=f"grep: {exc}\n")
    lines = [
        line
        for line in stdin.splitlines()
        if bool(compiled.match(line) if whole_line else compiled.search(line)) != invert
    ]
    status = 0 if lines else 1
    if quiet:
        return Out(status=status)
    if count:
        return Out(status=status, out=f"{len(lines)}\n")
    return Out(status=status, out="".join(line + "\n" for line in lines))
