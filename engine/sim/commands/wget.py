"""Simulates ``wget`` downloads to a node."""

from __future__ import annotations

import posixpath
import re
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from .base import Exit, Out
from .download import download

if TYPE_CHECKING:
    from ..shell import Run


def wget_command(run: Run, args: list[str], stdin: str) -> Out:
    quiet = False
    output: str | None = None
    prefix: str | None = None
    urls = []
    rest = args[1:]
    while rest:
        arg = rest.pop(0)
        if arg in (
            "-q",
            "--quiet",
            "-nv",
            "--no-verbose",
            "-c",
            "--continue",
            "-N",
            "--timestamping",
            "--no-check-certificate",
            "--show-progress",
            "-nc",
            "--no-clobber",
        ):
            quiet = quiet or arg in ("-q", "--quiet")
        elif arg.startswith("--progress=") or arg.startswith("--tries=") or arg.startswith("--timeout="):
            pass
        elif arg in ("-O", "--output-document", "-P", "--directory-prefix"):
            if not rest:
                return Out(status=2, err=f"wget: option requires an argument -- '{arg.lstrip('-')[:1]}'\n")
            value = rest.pop(0)
            if arg in ("-O", "--output-document"):
                output = value
            else:
                prefix = value
        elif arg.startswith("--output-document="):
            output = arg.split("=", 1)[1]
        elif arg.startswith("--directory-prefix="):
            prefix = arg.split("=", 1)[1]
        elif arg.startswith("-O") and len(arg) > 2:
            output = arg[2:]
        elif re.fullmatch(r"-q[cN]*O", arg) or re.fullmatch(r"-[cN]*qO", arg):
            quiet = True
            if not rest:
                return Out(status=2, err="wget: option requires an argument -- 'O'\n")
            output = rest.pop(0)
        elif re.fullmatch(r"-[qcN]+", arg):
            quiet = quiet or "q" in arg
        elif arg.startswith("-"):
            run.unsupported = f"simulation: wget option {arg} is not simulated on PVE nodes (script line {run.line})"
            raise Exit(127)
        else:
            urls.append(arg)
    if not urls:
        return Out(status=1, err="wget: missing URL\nUsage: wget [OPTION]... [URL]...\n")
    result = Out()
    for url in urls:
        if output is not None:
            shown = output
        else:
            name = posixpath.basename(urlsplit(url).path) or "index.html"
            shown = posixpath.join(prefix, name) if prefix else name
            base = run.path(shown)
            number = 1
            while run.x.files.exists(run.node, run.path(shown)):  # wget keeps the old file: name.1, name.2
                shown = f"{base}.{number}" if prefix or shown.startswith("/") else f"{name}.{number}"
                number += 1
        one = download(run, "wget", url, run.path(shown) if shown != "-" else "-", shown, quiet, True)
        result.out += one.out
        result.err += one.err
        if one.status:
            result.status = one.status
            break
    return result
