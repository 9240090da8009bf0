"""Simulates ``sha256sum`` and ``sha512sum``: the digest of a node file's simulated content, and ``--check``.

A file's content is what ``engine.sim.nodefiles.file_content`` says it is (a download stands for a
line naming its URL), so a runbook that verifies a download against a checksum can be run, and
made to fail, in simulation.
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING

from ..nodefiles import file_content
from .base import Exit, Out

if TYPE_CHECKING:
    from ..shell import Run

_CHECK_LINE = re.compile(r"(?P<digest>[0-9A-Fa-f]+) [ *](?P<path>.+)")


def digest_command(run: Run, args: list[str], stdin: str) -> Out:
    algorithm = args[0].removesuffix("sum")
    check = status_only = quiet = False
    operands = []
    for arg in args[1:]:
        if arg in ("-c", "--check"):
            check = True
        elif arg == "--status":
            status_only = True
        elif arg == "--quiet":
            quiet = True
        elif arg in ("-b", "--binary", "-t", "--text"):
            pass
        elif arg.startswith("-") and arg != "-":
            run.unsupported = (
                f"simulation: {args[0]} option {arg} is not simulated on PVE nodes (script line {run.line})"
            )
            raise Exit(127)
        else:
            operands.append(arg)
    if check:
        return _check(run, args[0], algorithm, operands, stdin, status_only, quiet)
    result = Out()
    for arg in operands or ["-"]:
        digest, error = _digest(run, algorithm, arg, stdin)
        if error:
            result.status = 1
            result.err += f"{args[0]}: {arg}: {error}\n"
        else:
            result.out += f"{digest}  {arg}\n"
    return result


def _digest(run: Run, algorithm: str, arg: str, stdin: str) -> tuple[str, str]:
    """(the hex digest, "") of a file or of standard input (``-``), or ("", why it cannot be read)."""
    if arg == "-":
        return hashlib.new(algorithm, stdin.encode()).hexdigest(), ""
    path = run.path(arg)
    if run.x.files.is_dir(run.node, path):
        return "", "Is a directory"
    record = run.x.files.get(run.node, path)
    if record is None:
        return "", "No such file or directory"
    data = file_content(record)
    if data is None:
        run.unsupported = (
            f"simulation: the content of {arg}, a secret file, is not kept, so {algorithm}sum cannot read it "
            f"(script line {run.line})"
        )
        raise Exit(127)
    return hashlib.new(algorithm, data).hexdigest(), ""


def _check(run: Run, tool: str, algorithm: str, operands: list[str], stdin: str, status_only: bool, quiet: bool) -> Out:
    """``--check``: each line ``DIGEST  FILE`` of the lists (standard input when none) against the file."""
    if len(operands) > 1 or (operands and operands[0] != "-"):
        run.unsupported = (
            f"simulation: {tool} --check reads its list from standard input only on PVE nodes (script line {run.line})"
        )
        raise Exit(127)
    result = Out()
    failed = unreadable = checked = 0
    for line in stdin.splitlines():
        found = _CHECK_LINE.fullmatch(line.strip())
        if not found:
            continue
        checked += 1
        digest, error = _digest(run, algorithm, found["path"], "")
        if error:
            unreadable += 1
            result.err += f"{tool}: {found['path']}: {error}\n"
            result.out += f"{found['path']}: FAILED open or read\n"
        elif digest != found["digest"].lower():
            failed += 1
            result.out += f"{found['path']}: FAILED\n"
        elif not quiet:
            result.out += f"{found['path']}: OK\n"
    if not checked:
        return Out(status=1, err=f"{tool}: -: no properly formatted checksum lines found\n")
    if unreadable:
        noun = "file" if unreadable == 1 else "files"
        result.err += f"{tool}: WARNING: {unreadable} listed {noun} could not be read\n"
    if failed:
        noun = "checksum" if failed == 1 else "checksums"
        result.err += f"{tool}: WARNING: {failed} computed {noun} did NOT match\n"
    result.status = 1 if failed or unreadable else 0
    if status_only:
        result.out = result.err = ""
    return result
