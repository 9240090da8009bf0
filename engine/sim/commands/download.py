"""A simulated download to a node, shared by ``wget`` and ``curl``."""

from __future__ import annotations

import posixpath
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..http import image_sizes, is_factory_url, parse_image_url
from .base import Out, human

if TYPE_CHECKING:
    from ..shell import Run


DEFAULT_DOWNLOAD_SIZE = 50 * 1024 * 1024  # size given to a non-factory download


def download(run: Run, tool: str, url: str, path: str, shown_path: str, quiet: bool, fail: bool) -> Out:
    """Fetch ``url`` into node file ``path`` (simulated): checks the URL and the folder, records the file."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        if tool == "wget":
            return Out(
                status=1,
                err=f"{url}: Unsupported scheme '{parts.scheme}'.\n" if parts.scheme else f"{url}: Scheme missing.\n",
            )
        return Out(
            status=1 if parts.scheme else 3,
            err=f'curl: (1) Protocol "{parts.scheme}" not supported\n'
            if parts.scheme
            else "curl: (3) URL rejected: No host part in the URL\n",
        )
    size: int
    raw: int | None = None
    content_type = "application/octet-stream"
    if is_factory_url(url):
        reply = run.x.factory.respond("GET", url)
        if reply.status >= 400:
            if tool == "wget":
                return Out(
                    status=8,
                    err=f"--  {url}\nHTTP request sent, awaiting response... {reply.status} {reply.reason}\n"
                    f"ERROR {reply.status}: {reply.reason}.\n",
                )
            if fail:
                return Out(status=22, err=f"curl: (22) The requested URL returned error: {reply.status}\n")
            size = len(reply.body.encode())
        else:
            content_type = reply.headers.get("content-type", content_type)
            image = parse_image_url(url)
            if image is not None:
                size, raw = image_sizes(*image)
            else:
                size = len(reply.body.encode())
    else:
        size = DEFAULT_DOWNLOAD_SIZE
    if path == "-":
        return Out(status=0, out="")
    parent = posixpath.dirname(path)
    if not run.x.files.is_dir(run.node, parent):
        if tool == "wget":
            return Out(status=3, err=f"{shown_path}: No such file or directory\n")
        return Out(status=23, err="curl: (23) Failure writing output to destination\n")
    if run.x.files.is_dir(run.node, path):
        if tool == "wget":
            return Out(status=3, err=f"{shown_path}: Is a directory\n")
        return Out(status=23, err="curl: (23) Failure writing output to destination\n")
    meta: dict[str, Any] = {"source": url}
    if raw is not None:
        meta["uncompressed_size"] = raw
    run.x.files.put(run.node, path, size, **meta)
    if quiet:
        return Out()
    if tool == "wget":
        return Out(
            err=(
                f"--  {url}\nResolving {parts.hostname} ({parts.hostname})... simulated\n"
                f"HTTP request sent, awaiting response... 200 OK\n"
                f"Length: {size} ({human(size)}) [{content_type}]\nSaving to: '{shown_path}'\n\n"
                f"'{shown_path}' saved [{size}/{size}]\n"
            )
        )
    return Out(err=f"  % Total    % Received  Xferd\n100 {human(size)}  100 {human(size)}  (simulated)\n")
