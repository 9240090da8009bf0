"""The simulated cluster's state on disk: ``<home>/.runbook/sim/state.json``.

``runbook run cluster-create --simulate``, ``runbook sim status`` and a later teardown are separate
processes that must all see one cluster, as they would a real one; so the simulated cluster lives
in a file between them. JSON, not pickle: a started FakePve cannot be pickled, and a person
debugging a simulated run can read and diff JSON. The format carries a name and a version, so a
file from another runbook version is refused with a clear message instead of being misread.

Writes are atomic (temporary file, fsync, rename): a run killed mid-save leaves the previous state,
never half a file. A file that is damaged anyway (edited by hand, truncated by a full disk) is
refused naming the file and the way out, ``runbook sim reset``, rather than guessed at.

The ``talos`` and ``files`` sections belong to the modules that simulate Talos and the nodes'
files; this module checks only their outer shape and keeps their contents as they are.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..load.problems import InputError, Problem

FORMAT = "runbook-sim-state"
VERSION = 1
RESET_HINT = "run `runbook sim reset` to start a fresh simulated cluster (this discards the simulated one)"


class SimStateError(InputError):
    """The state file cannot be used; the message names the file, what is wrong and ``runbook sim reset``.

    An ``InputError`` so that every command reports it the way it reports a broken config file.
    """

    def __init__(self, path: Path, what: str, line: int | None = None):
        super().__init__(
            Problem(str(path), line, None, f"the simulated cluster's state is unusable: {what}; {RESET_HINT}")
        )
        self.path = path


@dataclass
class SimNode:
    """A cluster node; an offline one answers ``595 No route to host``."""

    name: str
    online: bool = True


@dataclass
class SimStorage:
    """A storage as storage.cfg has it, plus the volumes allocated on it.

    ``content`` is PVE's comma-separated list (``images,rootdir``); ``nodes`` empty means enabled on
    every node. ``options`` holds the rest: the type's own settings (``vgname``, ``pool``...) and the
    fake's bookkeeping (free space, uploaded files), kept so a restart changes nothing.
    """

    id: str
    type: str
    content: str
    shared: bool = False
    nodes: list[str] = field(default_factory=list)
    volumes: dict[str, dict[str, Any]] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class SimVm:
    """A QEMU VM: where it is, whether it runs, and its config (tags are the config's ``tags``).

    The simulation's one VM type outside fakepve: what the state file keeps, and what the simulated
    nodes and Talos read (``SimCluster.get_vm`` and its neighbours copy it out of the running fake;
    ``runbook sim status`` reads it from the file). ``config`` is the VM's config as the API shows
    it (``{"scsi0": "local-lvm:vm-101-disk-0,size=1246M", "name": ..., ...}``).
    """

    vmid: int
    name: str
    node: str
    status: str = "stopped"
    template: bool = False
    config: dict[str, Any] = field(default_factory=dict)
    pending: dict[str, Any] = field(default_factory=dict)
    lock: str | None = None
    snapshots: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def copy_of(cls, vm: Any) -> SimVm:
        """A deep copy of fakepve's VM ``vm`` (a ``FakeVm``): the fake keeps changing its own."""
        return cls(
            vmid=vm.vmid,
            name=vm.name,
            node=vm.node,
            status=vm.status,
            template=bool(vm.template),
            config=copy.deepcopy(vm.config),
            pending=copy.deepcopy(vm.pending),
            lock=vm.lock,
            snapshots=copy.deepcopy(vm.snapshots),
        )

    @property
    def uid(self) -> str | None:
        """What changes when a VM is destroyed and made again under the same vmid (its ``smbios1``
        or ``vmgenid``), so a Talos record of the old VM is not taken for the new one's; None when
        the config has neither."""
        return str(self.config.get("smbios1") or self.config.get("vmgenid") or "") or None


@dataclass
class SimState:
    """One snapshot of the simulated cluster, JSON-serialisable as a whole.

    ``talos`` (simulated Talos per VM) and ``files`` (node -> {path: {"size", "source"}}) are
    free-form sections owned by other modules.
    """

    nodes: list[SimNode] = field(default_factory=list)
    storages: list[SimStorage] = field(default_factory=list)
    vms: list[SimVm] = field(default_factory=list)
    talos: dict[str, Any] = field(default_factory=dict)
    files: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, **asdict(self)}

    @classmethod
    def from_json(cls, data: Any, path: Path) -> SimState:
        """The state in a loaded document; ``SimStateError`` naming the first thing wrong."""
        check = _Check(path)
        top = check.mapping(data, "the file")
        kind = top.get("format")
        if kind != FORMAT:
            raise check.error(f"it is not a runbook simulated-cluster state (format {kind!r}, expected {FORMAT!r})")
        version = top.get("version")
        if version != VERSION:
            raise check.error(f"it has format version {version!r}, but this runbook reads version {VERSION} only")
        nodes = [
            SimNode(name=check.field(item, "name", str, where), online=check.field(item, "online", bool, where))
            for where, item in check.items(top, "nodes")
        ]
        storages = [
            SimStorage(
                id=check.field(item, "id", str, where),
                type=check.field(item, "type", str, where),
                content=check.field(item, "content", str, where),
                shared=check.field(item, "shared", bool, where),
                nodes=check.strings(item, "nodes", where),
                volumes=check.mappings(item, "volumes", where),
                options=check.field(item, "options", dict, where),
            )
            for where, item in check.items(top, "storages")
        ]
        vms = [
            SimVm(
                vmid=check.field(item, "vmid", int, where),
                name=check.field(item, "name", str, where),
                node=check.field(item, "node", str, where),
                status=check.field(item, "status", str, where),
                template=check.field(item, "template", bool, where),
                config=check.field(item, "config", dict, where),
                pending=check.field(item, "pending", dict, where),
                lock=check.field(item, "lock", (str, type(None)), where),
                snapshots=check.mappings(item, "snapshots", where),
            )
            for where, item in check.items(top, "vms")
        ]
        files = check.mappings(top, "files", "")
        for node in files:
            check.mappings(files, node, "files.")
        return cls(nodes=nodes, storages=storages, vms=vms, talos=check.field(top, "talos", dict, ""), files=files)

    def save(self, path: Path) -> None:
        """Write the state to ``path`` atomically: readers see the old file or the new one, never a mix."""
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n"
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise
        # The rename itself is durable only once the folder's entry is on disk.
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


def load(path: Path) -> SimState | None:
    """The state saved at ``path``, or None when there is none yet; ``SimStateError`` when it is damaged."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        raise SimStateError(path, "it is not UTF-8 text") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SimStateError(path, f"it is not valid JSON ({exc.msg} at column {exc.colno})", exc.lineno) from None
    return SimState.from_json(data, path)


class _Check:
    """Reads a loaded document, naming where the first thing wrong is (``vms[2].config``)."""

    def __init__(self, path: Path):
        self.path = path

    def error(self, what: str) -> SimStateError:
        return SimStateError(self.path, what)

    def mapping(self, value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(f"{where} should be a JSON object, not {_json_type(value)}")
        return value

    def field(self, obj: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
        if key not in obj:
            raise self.error(f"{where}{key} is missing")
        value = obj[key]
        # bool is an int in Python, but a VMID of `true` is damage, not a VMID.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            wanted = " or ".join(_NAMES[k] for k in (kind if isinstance(kind, tuple) else (kind,)))
            raise self.error(f"{where}{key} is {_json_type(value)}, but should be {wanted}")
        return value

    def items(self, obj: dict[str, Any], key: str) -> list[tuple[str, dict[str, Any]]]:
        """The objects of list ``key``, each with the prefix that names its fields in messages."""
        return [
            (f"{key}[{index}].", self.mapping(item, f"{key}[{index}]"))
            for index, item in enumerate(self.field(obj, key, list, ""))
        ]

    def strings(self, obj: dict[str, Any], key: str, where: str) -> list[str]:
        values = self.field(obj, key, list, where)
        if not all(isinstance(value, str) for value in values):
            raise self.error(f"{where}{key} should hold strings only")
        return values

    def mappings(self, obj: dict[str, Any], key: str, where: str) -> dict[str, dict[str, Any]]:
        values = self.field(obj, key, dict, where)
        for name, value in values.items():
            self.mapping(value, f"{where}{key}.{name}")
        return values


_NAMES: dict[type, str] = {
    dict: "an object",
    list: "a list",
    str: "a string",
    bool: "true or false",
    int: "a whole number",
    float: "a number",
    type(None): "null",
}


def _json_type(value: Any) -> str:
    return _NAMES.get(type(value), type(value).__name__)
