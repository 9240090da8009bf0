"""Simulates ``mv`` on a node's files: a rename, as a download moved into place once verified."""

from __future__ import annotations

import posixpath
import re
from typing import TYPE_CHECKING

from ..nodefiles import SPECIAL_FILES, STANDARD_DIRS
from .base import Out

if TYPE_CHECKING:
    from ..shell import Run


def mv_command(run: Run, args: list[str], stdin: str) -> Out:
    clobber = True  # of -f and -n, the last one given counts, as in GNU mv
    verbose = False
    operands = []
    options = True
    for arg in args[1:]:
        if options and arg == "--":
            options = False
        elif options and arg == "--verbose":
            verbose = True
        elif options and arg in ("--force", "--no-clobber"):
            clobber = arg == "--force"
        elif options and re.fullmatch(r"-[fnv]+", arg):
            for letter in arg[1:]:
                verbose = verbose or letter == "v"
                clobber = {"f": True, "n": False}.get(letter, clobber)
        elif options and arg.startswith("-") and arg != "-":
            return Out(status=1, err=f"mv: invalid option -- '{arg.lstrip('-')[:1]}'\n")
        else:
            operands.append(arg)
    if len(operands) < 2:
        missing = "file operand" if not operands else f"destination file operand after '{operands[0]}'"
        return Out(status=1, err=f"mv: missing {missing}\n")
    *sources, target = operands
    files = run.x.files
    into = files.is_dir(run.node, run.path(target))
    if len(sources) > 1 and not into:
        return Out(status=1, err=f"mv: target '{target}' is not a directory\n")
    result = Out()
    for arg in sources:
        source = run.path(arg)
        destination = posixpath.join(run.path(target), posixpath.basename(source)) if into else run.path(target)
        error = _refused(run, arg, source, target, destination)
        if error:
            result.status = 1
            result.err += error
        elif clobber or not files.exists(run.node, destination):
            files.remove(run.node, destination)
            files.move(run.node, source, destination)
            if verbose:
                result.out += (
                    f"renamed '{arg}' -> '{posixpath.join(target, posixpath.basename(source)) if into else target}'\n"
                )
    return result


def _refused(run: Run, arg: str, source: str, target: str, destination: str) -> str:
    """Why ``mv`` would not move ``source`` to ``destination`` (an error line), or ""."""
    files = run.x.files
    if not files.exists(run.node, source):
        return f"mv: cannot stat '{arg}': No such file or directory\n"
    if source in SPECIAL_FILES or source in STANDARD_DIRS:
        return f"mv: cannot move '{arg}' (simulation: a system file or folder)\n"
    if source == destination:
        return f"mv: '{arg}' and '{target}' are the same file\n"
    if not files.is_dir(run.node, posixpath.dirname(destination)):
        return f"mv: cannot move '{arg}' to '{target}': No such file or directory\n"
    if files.is_dir(run.node, source) and destination.startswith(source.rstrip("/") + "/"):
        return f"mv: cannot move '{arg}' to a subdirectory of itself, '{target}'\n"
    if files.is_dir(run.node, destination) and not files.is_dir(run.node, source):
        return f"mv: cannot overwrite directory '{target}' with non-directory\n"
    if files.is_file(run.node, destination) and files.is_dir(run.node, source):
        return f"mv: cannot overwrite non-directory '{target}' with directory '{arg}'\n"
    return ""
