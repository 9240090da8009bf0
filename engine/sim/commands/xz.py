"""Simulates ``xz -d`` and ``unxz`` on a node's files."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from .base import Exit, Out, human

if TYPE_CHECKING:
    from ..shell import Run


def xz_command(run: Run, args: list[str], stdin: str) -> Out:
    decompress = args[0] == "unxz"
    force = keep = verbose = False
    paths = []
    rest = args[1:]
    while rest:
        arg = rest.pop(0)
        if arg in ("--decompress", "--uncompress"):
            decompress = True
        elif arg == "--force":
            force = True
        elif arg == "--keep":
            keep = True
        elif arg == "--verbose":
            verbose = True
        elif arg == "-T" and rest:
            rest.pop(0)
        elif arg.startswith("--threads=") or re.fullmatch(r"-T\d+", arg):
            pass
        elif re.fullmatch(r"-[dfkvqT0-9]+", arg):
            decompress |= "d" in arg
            force |= "f" in arg
            keep |= "k" in arg
            verbose |= "v" in arg
        elif arg.startswith("-"):
            run.unsupported = f"simulation: xz option {arg} is not simulated on PVE nodes (script line {run.line})"
            raise Exit(127)
        else:
            paths.append(arg)
    if not decompress:
        run.unsupported = (
            f"simulation: xz compression is not simulated on PVE nodes, only xz -d (script line {run.line})"
        )
        raise Exit(127)
    if not paths:
        run.unsupported = (
            f"simulation: xz reading standard input is not simulated on PVE nodes (script line {run.line})"
        )
        raise Exit(127)
    result = Out()
    files = run.x.files
    for arg in paths:
        path = run.path(arg)
        record = files.get(run.node, path)
        if record is None:
            result.status = 1
            result.err += f"xz: {arg}: {'Is a directory, skipping' if files.is_dir(run.node, path) else 'No such file or directory'}\n"
            continue
        if not path.endswith((".xz", ".txz")):
            result.status = 1
            result.err += f"xz: {arg}: Filename has an unknown suffix, skipping\n"
            continue
        target = path[:-3] if path.endswith(".xz") else path[:-4] + ".tar"
        if files.exists(run.node, target) and not force:
            result.status = 1
            result.err += f"xz: {target if arg.startswith('/') else arg[:-3]}: File exists\n"
            continue
        size = int(record.get("uncompressed_size") or record.get("size", 0) * 12)
        files.put(run.node, target, size, source=record.get("source", ""), decompressed_from=path)
        if not keep:
            files.remove(run.node, path)
        if verbose:
            result.err += f"{arg} (1/1)\n  100 %   {human(int(record.get('size', 0)))} / {human(size)}\n"
    return result
