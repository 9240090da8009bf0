"""Simulates ``curl`` downloads to a node."""

from __future__ import annotations

import posixpath
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ...shell.curl import parse_curl, takes_value
from ..http import is_factory_url, parse_image_url
from .base import Exit, Out
from .download import download

if TYPE_CHECKING:
    from ..shell import Run


def curl_command(run: Run, args: list[str], stdin: str) -> Out:
    call = parse_curl(args[1:])
    for option, value in call.options:
        if option not in _CURL_SIMULATED:
            run.unsupported = f"simulation: curl option {option} is not simulated on PVE nodes (script line {run.line})"
            raise Exit(127)
        if value is None and takes_value(option):
            return Out(status=2, err=f"curl: option {option}: requires parameter\n")
    fail = call.has("-f", "--fail", "--fail-with-body")
    silent = call.has("-s", "--silent")
    show_error = call.has("-S", "--show-error")
    output = call.value("-o", "--output")
    urls = call.urls
    if not urls:
        return Out(status=2, err="curl: no URL specified!\n")
    url = urls[0]
    if output is None and call.has("-O", "--remote-name"):
        output = posixpath.basename(urlsplit(url).path)
    if output is None:
        # to stdout: text answers (the factory's JSON) are printed; a binary image is not
        if is_factory_url(url) and parse_image_url(url) is None:
            reply = run.x.factory.respond("GET", url)
            if reply.status >= 400 and fail:
                return Out(
                    status=22,
                    err=f"curl: (22) The requested URL returned error: {reply.status}\n"
                    if (not silent or show_error)
                    else "",
                )
            return Out(out=reply.body)
        one = download(run, "curl", url, "-", "-", True, fail)
        if one.status:
            return one
        return Out(
            status=23,
            err='Warning: Binary output can mess up your terminal. Use "--output -" to tell\n'
            'Warning: curl to output it to your terminal anyway, or consider "--output\n'
            'Warning: <FILE>" to save to a file.\n',
        )
    path = run.path(output)
    if call.has("--create-dirs"):
        folder = posixpath.dirname(path)
        while not run.x.files.is_dir(run.node, folder):
            run.x.files.mkdir(run.node, folder)
            folder = posixpath.dirname(folder)
    one = download(run, "curl", url, path, output, silent, fail)
    if one.status and silent and not show_error:
        one.err = ""
    return one


# Options the simulated curl knows: those it acts on, and those that change nothing in a simulation.
_CURL_SIMULATED = frozenset(
    {
        "-f",
        "--fail",
        "--fail-with-body",
        "-s",
        "--silent",
        "-S",
        "--show-error",
        "-o",
        "--output",
        "-O",
        "--remote-name",
        "--create-dirs",
        "-L",
        "--location",
        "-k",
        "--insecure",
        "--progress-bar",
        "-#",
        "--compressed",
        "--retry-all-errors",
        "--retry",
        "--retry-delay",
        "--retry-max-time",
        "--connect-timeout",
        "--max-time",
        "-m",
        "-C",
        "--continue-at",
    }
)
