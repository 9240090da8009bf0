"""What an action would change, as resource changes: shared by each kind's real and simulated executor.

Pure functions of the action and the ``Facts``: nothing here reads the cluster. For ``api`` steps
the table of PVE calls (``engine.load.pvetable``) says which resource a call creates,
changes, destroys or acts on; the values before come from what the live dry-run read into the
facts (a guest's config, status and snapshots), and a resource an earlier step of the plan creates
has none. A call the table does not know is one change of ``unknown`` effect. ``ssh``, ``local``
and ``talosctl`` steps say what they change with their ``changes`` attribute; a step that changes
something without it is ``unknown`` too (a script may do anything). A simulated executor previews
exactly as the real one of its kind would, so a review under ``--simulate`` says what it would
say on the cluster.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from ..load.facts import NOT_READ, Facts
from ..load.pvetable import GUESTS, Match, fill, table
from ..runbook.actions import ApiRequest, FileWrite, HttpRequest, ShellCommand, TalosctlCommand
from ..runbook.unknown import contains_unknown
from .base import UNKNOWN, Change, FieldChange, Lost, is_unknown_value, unknown_value
from .file import file_changes

DETAIL_LIMIT = 80  # characters of a script line or command shown as a change's detail

_GUEST = re.compile(r"/nodes/(?P<node>[^/]+)/(?:qemu|lxc)/(?P<vmid>[^/]+)")
_STORAGE = re.compile(r"/nodes/(?P<node>[^/]+)/storage/(?P<storage>[^/]+)")
_NODE = re.compile(r"/nodes/(?P<node>[^/]+)")
_READS = frozenset({"GET", "HEAD", "OPTIONS"})
_DISK = re.compile(r"^(scsi|virtio|sata|ide|efidisk|tpmstate|unused)[0-9]+$")
_SIZE = re.compile(r"(?:^|,)size=([0-9.]+[KMGT]?)(?:,|$)")


def api_changes(request: ApiRequest, facts: Facts) -> list[Change]:
    """A GET reads; any other call changes what the table of PVE calls says, or is ``unknown``."""
    method = request.method.upper()
    if method in _READS:
        return []
    found = table().match(method, request.path)
    if found is None:
        return [_unknown_call(request, facts)]
    if found.rule.action == "none":
        return []
    change = _PveChange(request, found, facts).change()
    return [change] if change is not None else []


def shell_changes(command: ShellCommand, facts: Facts) -> list[Change]:
    """What the step's ``changes`` attribute declares; without one, an unknown change where it runs."""
    first = next((line.strip() for line in command.script.splitlines() if line.strip()), "")
    declared = declared_changes(command.changes, _cut(first))
    if declared is not None:
        return declared
    if command.node:
        return [Change(UNKNOWN, "node", command.node, f"node {command.node}", detail=_cut(first))]
    return [Change(UNKNOWN, "local", "this machine", "this machine", detail=_cut(first))]


def talosctl_changes(command: TalosctlCommand, facts: Facts) -> list[Change]:
    """What the step's ``changes`` declares; without one, an unknown change on the nodes it names."""
    words = list(itertools.takewhile(lambda word: not word.startswith("-"), command.argv))[:2]
    detail = _cut(" ".join(["talosctl", *words]))
    declared = declared_changes(command.changes, detail)
    if declared is not None:
        return declared
    target = _talos_target(command.argv)
    return [Change(UNKNOWN, "talos-node", target, f"talos-node {target}", detail=detail)]


def http_changes(request: HttpRequest, facts: Facts) -> list[Change]:
    """A GET reads; any other method changes what its ``changes`` declares, else what the URL names (an
    unknown change, shown without credentials or query)."""
    method = request.method.upper()
    if method in _READS:
        return []
    parts = urlsplit(request.url)
    target = f"{parts.scheme}://{parts.hostname or ''}{parts.path}"
    declared = declared_changes(request.changes, f"{method} {target}")
    if declared is not None:
        return declared
    return [Change(UNKNOWN, "http", target, target, detail=method)]


# ---------------------------------------------------------------- api calls the table knows


class _PveChange:
    """One matched call, worked out against the facts (a small class: many values are shared)."""

    def __init__(self, request: ApiRequest, found: Match, facts: Facts):
        self.request, self.rule, self.facts = request, found.rule, facts
        self.params = dict(request.params)
        self.values: dict[str, Any] = {**{k: _plain(v) for k, v in self.params.items()}, **found.path_params}
        self.reads = table().read_paths(found)
        vmid = found.path_params.get("vmid")
        self.guest = GUESTS.get(self.rule.guest or "", "")
        self.vmid = vmid
        self.planned = facts.plan_of(self.guest, vmid) if vmid and self.guest else None

    def _read(self, name: str) -> Any:
        return self.facts.read(self.reads[name]) if name in self.reads else NOT_READ

    def _unknown_before(self) -> Any:
        """What a value before is when it was not read: unknown, and why (offline, or a failed read)."""
        return unknown_value("offline" if self.facts.offline else "not read")

    def change(self) -> Change | None:
        """The change, or None when the call would change nothing: every field it sets has that value already."""
        rule = self.rule
        action, resource, detail = rule.action, rule.resource, ""
        for variant in rule.variants:
            if variant.matches(self.request.path, self.params):
                action = variant.action or action
                resource = variant.resource or resource
                detail = fill(variant.detail, self.values) if variant.detail else ""
                break
        ident = fill(rule.id, self.values)
        # a clone's new VMID known only at run time is named as such, not as the marker's JSON
        shown = {k: "(known after run)" if is_unknown_value(v) else v for k, v in self.values.items()}
        fields = self._fields()
        if action == "change" and rule.before and not fields and self._read("config") is not NOT_READ:
            return None
        lost = self._lost() if action == "destroy" and resource == self.guest else ()
        if action == "destroy" and resource == self.guest and not lost and self._read("config") is NOT_READ:
            detail = detail or f"what it loses (disks, snapshots) is unknown ({self._unknown_before()['unknown']})"
        return Change(
            action,
            resource,
            ident,
            self._name(action, resource, fill(rule.id, shown)),
            tuple(fields),
            tuple(lost),
            detail=detail,
        )

    # ------------------------------------------------------------ the reader's name of the resource

    def _guest_words(self) -> tuple[str, str, str]:
        """(name, node, status) of the guest the path names, from the facts, the reads and the plan."""
        vm = self.facts.vm(self.vmid) if self.vmid else None
        config = self._read("config")
        status = self._read("status")
        name = (vm.name if vm else "") or (config.get("name", "") if isinstance(config, dict) else "")
        node = vm.node if vm else self.values.get("node", "")
        state = ""
        if self.planned is not None:
            name = name or _bare_name(self.planned.name, self.guest, str(self.vmid))
            state = "new" if self.planned.action == "create" else "destroyed earlier in this plan"
        elif self.facts.planned_status(self.guest, str(self.vmid)):
            state = self.facts.planned_status(self.guest, str(self.vmid))
        elif isinstance(status, dict) and status.get("status"):
            state = str(status["status"])
        elif vm is not None and vm.status:
            state = vm.status
        elif self.facts.offline:
            state = "status unknown (offline)"
        return str(name), str(node), state

    def _name(self, action: str, resource: str, ident: str) -> str:
        if self.guest and resource == self.guest and action in ("create", "replace") and ident != self.vmid:
            # A clone: the new guest is named by the call, on the node it is made for.
            where = self.values.get("target") or self.values.get("node", "")
            return _words(resource, ident, self.values.get("name", ""), f"({where}, new)")
        if self.guest and resource == self.guest and action == "create":
            return _words(resource, ident, self.values.get("name", ""), f"({self.values.get('node', '')}, new)")
        if self.guest and self.vmid:
            name, node, state = self._guest_words()
            guest = _words(self.guest, self.vmid, name, f"({', '.join(p for p in (node, state) if p)})")
            if resource == self.guest:
                return guest
            return f"{resource} {ident} of {guest}"
        return f"{resource} {ident}"

    # ------------------------------------------------------------ fields before -> after

    def _fields(self) -> list[FieldChange]:
        rule = self.rule
        fields: list[FieldChange] = []
        if rule.status and self.guest:
            fields.append(FieldChange("status", self._status_before(), rule.status))
        if rule.moves_to and self.guest:
            fields.append(FieldChange("node", self._guest_words()[1] or None, fill(rule.moves_to, self.values)))
        ignore = table().ignore | rule.ignore
        if rule.fields is None:
            names = [k for k in self.params if k not in ignore]
        else:
            names = [k for k in rule.fields if k in self.params]
        if rule.before == "disk":
            return fields + self._disk_size()
        config = self._read("config") if rule.before == "config" else NOT_READ
        running = self._status_before() == "running"
        for name in names:
            after = _plain(self.params[name])
            before = self._before(config, name) if rule.before == "config" else None
            if rule.before == "config" and before is not None and str(before) == str(after):
                continue  # already so: nothing changes
            fields.append(FieldChange(name, before, after, running and self._stays_pending(name, config)))
        if "delete" in self.params and rule.before == "config":
            for name in str(self.params["delete"]).replace(";", ",").split(","):
                name = name.strip()
                if name:
                    fields.append(
                        FieldChange(
                            name, self._before(config, name), None, running and self._stays_pending(name, config)
                        )
                    )
        return fields

    def _stays_pending(self, name: str, config: Any) -> bool:
        """Whether a running guest keeps a new value of ``name`` pending until it restarts: a VM unless
        its ``hotplug`` option covers the field (or PVE applies it at once), a container unless PVE does."""
        if self.rule.pending != "hotplug":
            return False
        hotplug = table().hotplug
        if self.rule.guest != "qemu":
            return name not in hotplug.immediate
        option = config.get("hotplug") if isinstance(config, dict) else None
        return hotplug.pending(name, None if option is None else str(option))

    def _before(self, config: Any, name: str) -> Any:
        if self.planned is not None and self.planned.action == "create":
            return None  # made earlier in this plan: no value before
        if isinstance(config, dict):
            return config.get(name)
        return self._unknown_before()

    def _status_before(self) -> Any:
        planned = self.facts.planned_status(self.guest, str(self.vmid)) if self.guest else ""
        if planned:
            return planned  # what an earlier step of the plan leaves it in (a clone: stopped)
        status = self._read("status")
        if isinstance(status, dict) and status.get("status"):
            return str(status["status"])
        vm = self.facts.vm(self.vmid) if self.vmid else None
        if vm is not None and vm.status:
            return vm.status
        return self._unknown_before()

    def _disk_size(self) -> list[FieldChange]:
        size = self.params.get("size")
        if size is None:
            return []
        config = self._read("config")
        disk = str(self.params.get("disk", ""))
        if self.planned is not None and self.planned.action == "create":
            before: Any = unknown_value("the disk of the template, known after the clone")
        elif isinstance(config, dict):
            found = _SIZE.search(str(config.get(disk, "")))
            before = found[1] if found else None
        else:
            before = self._unknown_before()
        if before is not None and str(before) == str(size):
            return []  # already that size
        return [FieldChange("size", before, _plain(size))]

    # ------------------------------------------------------------ what a destroy loses

    def _lost(self) -> list[Lost]:
        if self.planned is not None:
            return []
        lost: list[Lost] = []
        config = self._read("config")
        if isinstance(config, dict):
            for key in sorted(config, key=_disk_order):
                value = str(config[key])
                if not _DISK.match(key) or "media=cdrom" in value:
                    continue
                size = _SIZE.search(value)
                volume = value.split(",", 1)[0]
                storage = volume.split(":", 1)[0] if ":" in volume else ""
                lost.append(
                    Lost("disk", key, " on ".join(p for p in (size[1] if size else "", storage) if p) or volume)
                )
        snapshots = self._read("snapshots")
        if isinstance(snapshots, list):
            for snap in snapshots:
                if isinstance(snap, dict) and snap.get("name") and snap["name"] != "current":
                    lost.append(Lost("snapshot", str(snap["name"]), str(snap.get("description") or "").strip()))
        return lost


def _words(resource: str, ident: str, name: str, tail: str) -> str:
    tail = "" if tail in ("()", "(, )") else tail
    return " ".join(p for p in (resource, ident, name, tail) if p)


def _bare_name(name: str, resource: str, ident: str) -> str:
    """The guest's own name out of a change's name (``vm 1031 stg-cp01 (pve01, new)`` -> ``stg-cp01``)."""
    words = name.removeprefix(f"{resource} {ident}").split(" (", 1)[0].strip()
    return words


def _disk_order(key: str) -> tuple[str, int]:
    found = re.match(r"^([a-z]+)([0-9]+)$", key)
    return (found[1], int(found[2])) if found else (key, 0)


def _plain(value: Any) -> Any:
    """A parameter as JSON shows it: booleans as PVE's 0/1, a value known only at run time as
    ``unknown_value("until run")``, everything else as given."""
    if isinstance(value, bool):
        return 1 if value else 0
    if contains_unknown(value):
        return unknown_value("until run")
    return value


def _unknown_call(request: ApiRequest, facts: Facts) -> Change:
    """A changing call the table does not know: one change of unknown effect on what its path names."""
    method = request.method.upper()
    detail = f"{method} {request.path}: a call the table of PVE changes does not know"
    guest = _GUEST.match(request.path)
    if guest:
        vm = facts.vm(guest["vmid"])
        name = f"vm {guest['vmid']}" + (f" {vm.name} ({vm.node}, {vm.status or 'status unknown'})" if vm else "")
        return Change(UNKNOWN, "vm", guest["vmid"], name, detail=detail)
    storage = _STORAGE.match(request.path)
    if storage:
        ident = f"{storage['node']}/{storage['storage']}"
        return Change(UNKNOWN, "storage", ident, f"storage {ident}", detail=detail)
    node = _NODE.match(request.path)
    if node:
        return Change(UNKNOWN, "node", node["node"], f"node {node['node']}", detail=detail)
    return Change(UNKNOWN, "api", request.path, request.path, detail=detail)


# ---------------------------------------------------------------- declared effects (changes: ...)


def declared_changes(declared: tuple[Mapping[str, str], ...] | None, detail: str) -> list[Change] | None:
    """The changes a step declares (``changes:``), or None when it declares none (``[]`` is "nothing")."""
    if declared is None:
        return None
    return [
        Change(
            str(d["action"]),
            str(d["resource"]),
            str(d["id"]),
            str(d.get("name") or f"{d['resource']} {d['id']}"),
            detail=detail,
        )
        for d in declared
    ]


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


def preview_action(action: Any, facts: Facts) -> list[Change]:
    """The preview of any action by its type, as its kind's executor gives it (each executor calls
    the same function): for a review made without executors, offline."""
    if isinstance(action, ApiRequest):
        return api_changes(action, facts)
    if isinstance(action, ShellCommand):
        return shell_changes(action, facts)
    if isinstance(action, TalosctlCommand):
        return talosctl_changes(action, facts)
    if isinstance(action, FileWrite):
        return file_changes(action, "offline")  # nothing is read: the file as it is now is not known
    return http_changes(action, facts)
