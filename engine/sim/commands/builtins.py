"""Simulates the bash builtins a runbook uses on a node: echo, true, false, exit, export, set, cd, hostname."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from .base import NAME, Exit, Out

if TYPE_CHECKING:
    from ..shell import Run


def echo_command(run: Run, args: list[str], stdin: str) -> Out:
    words = args[1:]
    newline = True
    while words and re.fullmatch(r"-[neE]+", words[0]):
        if "n" in words[0]:
            newline = False
        words = words[1:]
    return Out(out=" ".join(words) + ("\n" if newline else ""))


def true_command(run: Run, args: list[str], stdin: str) -> Out:
    return Out()


def false_command(run: Run, args: list[str], stdin: str) -> Out:
    return Out(status=1)


def exit_command(run: Run, args: list[str], stdin: str) -> Out:
    code = int(args[1]) if len(args) > 1 and args[1].lstrip("-").isdigit() else 0
    raise Exit(code & 255)


def export_command(run: Run, args: list[str], stdin: str) -> Out:
    for arg in args[1:]:
        if arg.startswith("-"):
            continue
        name, eq, value = arg.partition("=")
        if not NAME.fullmatch(name):
            return Out(status=1, err=f"bash: line {run.line}: export: `{arg}': not a valid identifier\n")
        if eq:
            run.vars[name] = value
    return Out()


def set_command(run: Run, args: list[str], stdin: str) -> Out:
    rest = args[1:]
    while rest:
        arg = rest.pop(0)
        if arg in ("-o", "+o"):
            option = rest.pop(0) if rest else ""
            on = arg == "-o"
            if option == "pipefail":
                run.pipefail = on
            elif option == "errexit":
                run.errexit = on
            elif option == "nounset":
                run.nounset = on
            elif option not in ("xtrace", "verbose", "noclobber"):
                return Out(status=2, err=f"bash: line {run.line}: set: {option}: invalid option name\n")
            continue
        if arg[:1] not in ("-", "+"):
            run.unsupported = (
                f"simulation: 'set' with positional arguments is not simulated on PVE nodes (script line {run.line})"
            )
            raise Exit(127)
        on = arg[0] == "-"
        for letter in arg[1:]:
            if letter == "e":
                run.errexit = on
            elif letter == "u":
                run.nounset = on
            elif letter == "o":
                option = rest.pop(0) if rest else ""
                if option == "pipefail":
                    run.pipefail = on
            elif letter not in "xv":
                return Out(status=2, err=f"bash: line {run.line}: set: -{letter}: invalid option\n")
    return Out()


def cd_command(run: Run, args: list[str], stdin: str) -> Out:
    target = run.path(args[1]) if len(args) > 1 else run.vars.get("HOME", "/root")
    if not run.x.files.is_dir(run.node, target):
        return Out(
            status=1,
            err=f"bash: line {run.line}: cd: {args[1] if len(args) > 1 else target}: No such file or directory\n",
        )
    run.cwd = target
    return Out()


def hostname_command(run: Run, args: list[str], stdin: str) -> Out:
    return Out(out=run.node + "\n")
