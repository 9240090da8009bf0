"""Simulates ``rm`` on a node's files."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ..nodefiles import SPECIAL_FILES, STANDARD_DIRS
from .base import Out

if TYPE_CHECKING:
    from ..shell import Run


def rm_command(run: Run, args: list[str], stdin: str) -> Out:
    force = recursive = False
    paths = []
    options = True
    for arg in args[1:]:
        if options and arg == "--":
            options = False
        elif options and arg in ("--force",):
            force = True
        elif options and arg in ("--recursive",):
            recursive = True
        elif options and re.fullmatch(r"-[frRv]+", arg):
            force = force or "f" in arg
            recursive = recursive or "r" in arg or "R" in arg
        elif options and arg.startswith("-") and arg != "-":
            return Out(status=1, err=f"rm: invalid option -- '{arg.lstrip('-')[:1]}'\n")
        else:
            paths.append(arg)
    if not paths and not force:
        return Out(status=1, err="rm: missing operand\n")
    result = Out()
    for arg in paths:
        path = run.path(arg)
        if path == "/" or path in STANDARD_DIRS and recursive:
            result.status = 1
            result.err += f"rm: refusing to remove '{arg}' (simulation: a system folder)\n"
        elif run.x.files.is_file(run.node, path):
            if path not in SPECIAL_FILES:
                run.x.files.remove(run.node, path)
        elif run.x.files.is_dir(run.node, path):
            if not recursive:
                result.status = 1
                result.err += f"rm: cannot remove '{arg}': Is a directory\n"
            else:
                run.x.files.remove(run.node, path)
        elif not force:
            result.status = 1
            result.err += f"rm: cannot remove '{arg}': No such file or directory\n"
    return result
