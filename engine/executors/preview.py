"""What an action would change, told coarsely: shared by each kind's real and simulated executor.

Honest before precise: a read changes nothing, and anything else is one change of ``unknown``
effect on what its path or command names. A simulated executor previews exactly as the real one
of its kind would, so a review under ``--simulate`` says what it would say on the cluster. A
later step makes the API side precise (one table of PVE paths to resource changes, compared
with the facts), without changing this interface.
"""

from __future__ import annotations

import itertools
import re
from urllib.parse import urlsplit

from ..load.facts import Facts
from ..runbook.actions import ApiRequest, HttpRequest, ShellCommand, TalosctlCommand
from .base import Change

UNKNOWN = "unknown"
DETAIL_LIMIT = 80  # characters of a script line or command shown as a change's detail

_GUEST = re.compile(r"/nodes/(?P<node>[^/]+)/(?:qemu|lxc)/(?P<vmid>[^/]+)")
_STORAGE = re.compile(r"/nodes/(?P<node>[^/]+)/storage/(?P<storage>[^/]+)")
_NODE = re.compile(r"/nodes/(?P<node>[^/]+)")
_READS = frozenset({"GET", "HEAD", "OPTIONS"})


def api_changes(request: ApiRequest, facts: Facts) -> list[Change]:
    """A GET reads; any other method changes the VM, storage or node its path names, or the path."""
    method = request.method.upper()
    if method in _READS:
        return []
    detail = f"{method} {request.path}"
    guest = _GUEST.match(request.path)
    if guest:
        vm = facts.vm(guest["vmid"])
        if vm is not None:
            detail += f" ({vm.name} on {vm.node}, {vm.status or 'status unknown'})"
        return [Change(UNKNOWN, "vm", guest["vmid"], detail)]
    storage = _STORAGE.match(request.path)
    if storage:
        return [Change(UNKNOWN, "storage", f"{storage['node']}/{storage['storage']}", detail)]
    node = _NODE.match(request.path)
    if node:
        return [Change(UNKNOWN, "node", node["node"], detail)]
    return [Change(UNKNOWN, "api", request.path, detail)]


def shell_changes(command: ShellCommand, facts: Facts) -> list[Change]:
    """A script may do anything: one unknown change on the node it runs on (or this machine)."""
    first = next((line.strip() for line in command.script.splitlines() if line.strip()), "")
    if command.node:
        return [Change(UNKNOWN, "node", command.node, _cut(first))]
    return [Change(UNKNOWN, "local", "this machine", _cut(first))]


def talosctl_changes(command: TalosctlCommand, facts: Facts) -> list[Change]:
    """One unknown change on the Talos nodes the command names (``--nodes``/``-n``), else its endpoints."""
    words = list(itertools.takewhile(lambda word: not word.startswith("-"), command.argv))[:2]
    return [Change(UNKNOWN, "talos", _talos_target(command.argv), _cut(" ".join(["talosctl", *words])))]


def http_changes(request: HttpRequest, facts: Facts) -> list[Change]:
    """A GET reads; any other method changes what the URL names (shown without credentials or query)."""
    method = request.method.upper()
    if method in _READS:
        return []
    parts = urlsplit(request.url)
    return [Change(UNKNOWN, "http", f"{parts.scheme}://{parts.hostname or ''}{parts.path}", method)]


def _talos_target(argv: tuple[str, ...]) -> str:
    for flags in (("--nodes", "-n"), ("--endpoints", "-e")):
        for index, word in enumerate(argv):
            if word in flags and index + 1 < len(argv):
                return argv[index + 1]
            for flag in flags:
                if word.startswith(flag + "="):
                    return word.split("=", 1)[1]
    return "talos"


def _cut(text: str) -> str:
    return text if len(text) <= DETAIL_LIMIT else text[: DETAIL_LIMIT - 3] + "..."
