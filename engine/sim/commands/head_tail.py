"""Simulates ``head`` and ``tail`` as filters in a pipe."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from .base import Exit, Out

if TYPE_CHECKING:
    from ..shell import Run


def head_tail_command(run: Run, args: list[str], stdin: str) -> Out:
    count = 10
    rest = args[1:]
    while rest:
        arg = rest.pop(0)
        if arg == "-n" and rest:
            value = rest.pop(0)
        elif arg.startswith("-n"):
            value = arg[2:]
        elif re.fullmatch(r"-\d+", arg):
            value = arg[1:]
        else:
            run.unsupported = (
                f"simulation: {args[0]} {arg} is not simulated on PVE nodes; {args[0]} filters piped "
                f"input only (script line {run.line})"
            )
            raise Exit(127)
        if not value.lstrip("+-").isdigit():
            return Out(status=1, err=f"{args[0]}: invalid number of lines: '{value}'\n")
        count = abs(int(value))
    lines = stdin.splitlines()
    chosen = lines[:count] if args[0] == "head" else (lines[-count:] if count else [])
    return Out(out="".join(line + "\n" for line in chosen))
