"""Simulates ``mkdir`` on a node's folders."""

from __future__ import annotations

import posixpath
import re
from typing import TYPE_CHECKING

from .base import Out

if TYPE_CHECKING:
    from ..shell import Run


def mkdir_command(run: Run, args: list[str], stdin: str) -> Out:
    parents = False
    paths = []
    rest = args[1:]
    while rest:
        arg = rest.pop(0)
        if arg in ("-p", "--parents"):
            parents = True
        elif arg in ("-v", "--verbose"):
            pass
        elif arg == "-m" and rest:
            rest.pop(0)
        elif arg.startswith("--mode="):
            pass
        elif re.fullmatch(r"-[pv]+", arg):
            parents = parents or "p" in arg
        elif arg.startswith("-") and arg != "-":
            return Out(status=1, err=f"mkdir: invalid option -- '{arg.lstrip('-')[:1]}'\n")
        else:
            paths.append(arg)
    if not paths:
        return Out(status=1, err="mkdir: missing operand\n")
    result = Out()
    files = run.x.files
    for arg in paths:
        path = run.path(arg)
        if files.is_file(run.node, path):
            result.status = 1
            result.err += f"mkdir: cannot create directory '{arg}': File exists\n"
            continue
        if files.is_dir(run.node, path):
            if not parents:
                result.status = 1
                result.err += f"mkdir: cannot create directory '{arg}': File exists\n"
            continue
        if not parents and not files.is_dir(run.node, posixpath.dirname(path)):
            result.status = 1
            result.err += f"mkdir: cannot create directory '{arg}': No such file or directory\n"
            continue
        if parents:
            missing = []
            current = path
            while not files.is_dir(run.node, current):
                if files.is_file(run.node, current):
                    result.status = 1
                    result.err += f"mkdir: cannot create directory '{arg}': Not a directory\n"
                    missing = []
                    break
                missing.append(current)
                current = posixpath.dirname(current)
            for folder in reversed(missing):
                files.mkdir(run.node, folder)
        else:
            files.mkdir(run.node, path)
    return result
