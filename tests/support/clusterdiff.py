"""What a run did to the simulated cluster, and whether the review said so.

``capture`` takes the simulated cluster's state (``.runbook/sim/state.json``: fakepve's VMs with
their configs, pending changes and snapshots, the storages' volumes (disks and backups), the nodes'
files, users/tokens/roles/ACL entries, the Talos nodes) and the files under some local folders.
``diff`` compares two captures; ``unexplained`` holds a review's change set (the ``changes`` of
``run --dry-run --json``) against a diff, both ways: every change the review names happened, with
the values it said, and nothing changed that the review did not name. Possible changes (``when``
set: they depend on run-time values) may or may not happen, but explain what they name.

What the simulation does not keep (Flux in the cluster, Kubernetes versions, a playbook's effect,
the Image Factory's schematics, a ``to_pass`` entry, which a simulated run never writes: see
tests/test_api_token_bootstrap.py for the real store) cannot be checked here: ``UNCHECKED`` lists
those resource kinds.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.sim.server import default_access
from engine.sim.talosctl.etcd import member_id

USER_CFG = "/etc/pve/user.cfg"
#: Resource kinds of a change the simulated cluster keeps no state for.
UNCHECKED = frozenset({"flux", "kubernetes", "ansible-playbook", "factory-schematic", "pass-entry"})
_UNKNOWN_MARK = re.compile(r"\(known after run: [^)]*\)(\])?")
_SIZE = re.compile(r"(?:^|,)size=([0-9.]+[KMGT]?)(?:,|$)")
_GUEST_VOLUME = re.compile(r"(?:vm|base)-(\d+)-")


@dataclass(frozen=True)
class Capture:
    state: dict[str, Any]
    local: dict[str, str]  # path -> "dir" or the content's sha256


def capture(home_state_dir: Path, local_roots: Iterable[Path] = (), ignore: Iterable[str] = ()) -> Capture:
    """The simulated cluster's state now, and the files and folders under ``local_roots`` but those
    whose name matches a pattern of ``ignore``."""
    skipped = tuple(ignore)
    path = home_state_dir / "sim" / "state.json"
    state = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    local: dict[str, str] = {}
    for root in local_roots:
        if root.exists():
            local[str(root)] = "dir"
            for item in root.rglob("*"):
                if any(fnmatch.fnmatchcase(item.name, pattern) for pattern in skipped):
                    continue
                local[str(item)] = "dir" if item.is_dir() else hashlib.sha256(item.read_bytes()).hexdigest()
    return Capture(state, local)


@dataclass
class Diff:
    created_vms: dict[int, dict[str, Any]] = field(default_factory=dict)
    destroyed_vms: dict[int, dict[str, Any]] = field(default_factory=dict)
    config: dict[int, dict[str, tuple[Any, Any]]] = field(default_factory=dict)  # effective config (pending over)
    pending_after: dict[int, set[str]] = field(default_factory=dict)
    status: dict[int, tuple[str, str]] = field(default_factory=dict)
    node: dict[int, tuple[str, str]] = field(default_factory=dict)
    template: dict[int, tuple[bool, bool]] = field(default_factory=dict)
    snapshots_created: set[tuple[int, str]] = field(default_factory=set)
    snapshots_destroyed: set[tuple[int, str]] = field(default_factory=set)
    volumes_created: set[tuple[str, str]] = field(default_factory=set)
    volumes_destroyed: set[tuple[str, str]] = field(default_factory=set)
    volumes_resized: set[tuple[str, str]] = field(default_factory=set)
    node_files: set[tuple[str, str]] = field(default_factory=set)  # (node, path) created, changed or removed
    access: set[tuple[str, str]] = field(default_factory=set)  # (kind, id) created, changed or removed
    talos_nodes: set[str] = field(default_factory=set)  # IPs whose Talos state changed
    talos_clusters: bool = False
    etcd_members_before: set[str] = field(default_factory=set)
    etcd_members_after: set[str] = field(default_factory=set)
    local: set[str] = field(default_factory=set)  # local paths created, changed or removed
    after_files: set[tuple[str, str]] = field(default_factory=set)  # (node, path) on the nodes afterwards
    after_vms: dict[int, dict[str, Any]] = field(default_factory=dict)
    before_vms: dict[int, dict[str, Any]] = field(default_factory=dict)

    def empty(self) -> bool:
        return not any(v for k, v in vars(self).items() if k not in ("after_vms", "before_vms", "after_files"))


def effective(vm: Mapping[str, Any]) -> dict[str, Any]:
    """A VM's config with its pending values over it (None: a pending delete)."""
    config = dict(vm.get("config") or {})
    for key, value in (vm.get("pending") or {}).items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    return config


def diff(before: Capture, after: Capture) -> Diff:
    out = Diff()
    old = {vm["vmid"]: vm for vm in before.state.get("vms", [])}
    new = {vm["vmid"]: vm for vm in after.state.get("vms", [])}
    out.before_vms, out.after_vms = old, new
    # A VM destroyed and made again under the same vmid (another smbios1 uuid) is another VM.
    remade = {k for k in old.keys() & new.keys() if _identity(old[k]) != _identity(new[k])}
    out.created_vms = {k: v for k, v in new.items() if k not in old or k in remade}
    out.destroyed_vms = {k: v for k, v in old.items() if k not in new or k in remade}
    for vmid in old.keys() & new.keys() - remade:
        a, b = old[vmid], new[vmid]
        ea, eb = effective(a), effective(b)
        changed = {k: (ea.get(k), eb.get(k)) for k in ea.keys() | eb.keys() if str(ea.get(k)) != str(eb.get(k))}
        if changed:
            out.config[vmid] = changed
        for attr, target in (("status", out.status), ("node", out.node), ("template", out.template)):
            if a.get(attr) != b.get(attr):
                target[vmid] = (a.get(attr), b.get(attr))
        out.snapshots_created |= {(vmid, s) for s in set(b.get("snapshots") or {}) - set(a.get("snapshots") or {})}
        out.snapshots_destroyed |= {(vmid, s) for s in set(a.get("snapshots") or {}) - set(b.get("snapshots") or {})}
    for vmid, vm in new.items():
        out.pending_after[vmid] = set(vm.get("pending") or {})
    out.snapshots_destroyed |= {(vmid, s) for vmid, vm in out.destroyed_vms.items() for s in vm.get("snapshots") or {}}
    vols_a = {(s["id"], v): meta for s in before.state.get("storages", []) for v, meta in s["volumes"].items()}
    vols_b = {(s["id"], v): meta for s in after.state.get("storages", []) for v, meta in s["volumes"].items()}
    out.volumes_created = set(vols_b) - set(vols_a)
    out.volumes_destroyed = set(vols_a) - set(vols_b)
    out.volumes_resized = {k for k in vols_a.keys() & vols_b.keys() if vols_a[k].get("size") != vols_b[k].get("size")}
    files_a, files_b = before.state.get("files", {}), after.state.get("files", {})
    for node in files_a.keys() | files_b.keys():
        fa, fb = files_a.get(node, {}), files_b.get(node, {})
        for path in fa.keys() | fb.keys():
            if path != USER_CFG and fa.get(path) != fb.get(path):
                out.node_files.add((node, path))
    out.after_files = {(node, path) for node, paths in files_b.items() for path in paths}
    out.access = _access_diff(_access(files_a), _access(files_b))
    talos_a, talos_b = before.state.get("talos", {}), after.state.get("talos", {})
    nodes_a, nodes_b = talos_a.get("nodes", {}), talos_b.get("nodes", {})
    out.talos_nodes = {ip for ip in nodes_a.keys() | nodes_b.keys() if nodes_a.get(ip) != nodes_b.get(ip)}
    out.talos_clusters = talos_a.get("clusters", {}) != talos_b.get("clusters", {})
    out.etcd_members_before, out.etcd_members_after = _etcd_members(before.state), _etcd_members(after.state)
    out.local = {p for p in before.local.keys() | after.local.keys() if before.local.get(p) != after.local.get(p)}
    return out


def _identity(vm: Mapping[str, Any]) -> str:
    """What tells a VM from one made again under its vmid: its smbios1 (or vmgenid), as ``SimVm.uid``."""
    config = vm.get("config") or {}
    return str(config.get("smbios1") or config.get("vmgenid") or "")


def _etcd_members(state: Mapping[str, Any]) -> set[str]:
    """The etcd member IDs of the simulated Talos clusters (engine.sim.talosctl.etcd)."""
    nodes = (state.get("talos") or {}).get("nodes", {})
    return {
        member_id(ip, rec)
        for ip, rec in nodes.items()
        if rec.get("role") == "controlplane" and not rec.get("etcd_removed")
    }


def _access(files: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    for paths in files.values():
        access = (paths.get(USER_CFG) or {}).get("access")
        if isinstance(access, dict):
            return access
    return default_access()  # a new cluster's access model is not written to the files section


def _access_diff(a: Mapping[str, Any], b: Mapping[str, Any]) -> set[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    ua, ub = a.get("users", {}), b.get("users", {})
    for userid in ua.keys() | ub.keys():
        x, y = dict(ua.get(userid) or {}), dict(ub.get(userid) or {})
        ta, tb = x.pop("tokens", {}) or {}, y.pop("tokens", {}) or {}
        if x != y:
            out.add(("user", userid))
        for tokenid in ta.keys() | tb.keys():
            if ta.get(tokenid) != tb.get(tokenid):
                out.add(("token", f"{userid}!{tokenid}"))
    ra, rb = a.get("roles", {}), b.get("roles", {})
    out |= {("role", r) for r in ra.keys() | rb.keys() if ra.get(r) != rb.get(r)}
    acl_a = {(e["path"], e["ugid"], e["roleid"]) for e in a.get("acl", [])}
    acl_b = {(e["path"], e["ugid"], e["roleid"]) for e in b.get("acl", [])}
    out |= {("acl", f"{path} {role} {ugid}") for path, ugid, role in acl_a ^ acl_b}
    return out


# ---------------------------------------------------------------- the review against the diff


def _text(value: Any) -> str | None:
    """A value as compared: None and unknown values are not compared."""
    if value is None or (isinstance(value, dict) and set(value) == {"unknown"}):
        return None
    return str(value)


def _id_matches(pattern: str, value: str) -> bool:
    """A change's id against a real one; a part known only after run matches anything."""
    return fnmatch.fnmatchcase(value, _UNKNOWN_MARK.sub("*", pattern))


def unexplained(changes: list[dict[str, Any]], d: Diff) -> list[str]:
    """Everything the review (``changes``) got wrong about the diff ``d``: "" items mean it was exact."""
    errors: list[str] = []
    by_vm: dict[int, list[dict[str, Any]]] = {}
    for change in changes:
        vmid = _vmid(change)
        if vmid is not None:
            by_vm.setdefault(vmid, []).append(change)
    for change in changes:
        errors += _said_happened(change, d, by_vm, changes)
    errors += _nothing_else(changes, d, by_vm)
    return errors


def _vmid(change: Mapping[str, Any]) -> int | None:
    if change["resource"] in ("vm", "container", "disk", "snapshot"):
        head = str(change["id"]).split("/", 1)[0]
        return int(head) if head.isdigit() else None
    return None


def _said_happened(
    c: dict[str, Any], d: Diff, by_vm: Mapping[int, list[dict[str, Any]]], changes: list[dict[str, Any]]
) -> list[str]:
    """The change named by the review happened, with the values it gave (only checked when certain)."""
    if c["when"]:
        return []
    what = f"review says {c['action']} {c['resource']} {c['id']} (step {c['step']}{'[' + c['item'] + ']' if c['item'] else ''})"
    action, resource, vmid = c["action"], c["resource"], _vmid(c)
    if action == "unknown":
        return [f"{what}: a change of unknown effect in a shipped runbook"]
    if resource in UNCHECKED:
        return []
    if resource == "vm" and vmid is not None:
        after = d.after_vms.get(vmid)
        if action in ("create", "replace"):
            if vmid not in d.created_vms and not (action == "replace" and vmid in d.config):
                return [f"{what}, but no VM {vmid} was made"]
            config = effective(after or {})
            errs = []
            for f in c["fields"]:
                want = _text(f["after"])
                name = f["name"]
                if want is None:
                    continue
                if name == "name":
                    have: Any = (after or {}).get("name")
                elif name.endswith(" size"):
                    found = _SIZE.search(str(config.get(name.split()[0], "")))
                    have = found[1] if found else None
                elif name in config:
                    have = config[name]
                else:
                    continue  # a parameter of the call, not a field of the VM (full, storage, target)
                if not _pve_value_matches(want, have):
                    errs.append(f"{what}: {name} is {have!r}, not {want!r}")
            return errs
        if action == "destroy":
            if vmid not in d.destroyed_vms:
                if _replaced(vmid, d) and _created_later(c, changes):
                    return []  # destroyed, then made again by the same run (cluster-rebuild): a new VM
                return [f"{what}, but VM {vmid} is still there"]
            gone = d.destroyed_vms[vmid]
            errs = []
            for lost in c["lost"]:
                if lost["kind"] == "disk" and lost["name"] not in (gone.get("config") or {}):
                    errs.append(f"{what}: it had no disk {lost['name']}")
                if lost["kind"] == "snapshot" and lost["name"] not in (gone.get("snapshots") or {}):
                    errs.append(f"{what}: it had no snapshot {lost['name']}")
            return errs
        if action == "change":
            if not c["fields"]:
                return [] if vmid in d.config or vmid in d.created_vms else [f"{what}, but its config did not change"]
            errs = []
            for f in c["fields"]:
                want = _text(f["after"])
                have = effective(after or {}).get(f["name"])
                if f["after"] is None and have is not None:
                    errs.append(f"{what}: {f['name']} is still {have!r}")
                elif want is not None and not _pve_value_matches(want, have):
                    errs.append(f"{what}: {f['name']} is {have!r}, not {want!r}")
                if f["pending"] and after is not None and f["name"] not in d.pending_after.get(vmid, set()):
                    if not _later_restart(c, by_vm.get(vmid, [])):
                        errs.append(f"{what}: {f['name']} was said to stay pending, but is not")
            return errs
        if after is None or vmid in d.destroyed_vms:
            return [] if vmid in d.destroyed_vms else [f"{what}, but there is no VM {vmid}"]
        if _destroyed_later(c, changes) and _replaced(vmid, d):
            return []  # done to a VM the run destroyed and made again: the one there now is another
        errs = []
        if action == "template" and not after.get("template"):
            errs.append(f"{what}, but VM {vmid} is no template")
        if action == "backup" and not any(f"vzdump-qemu-{vmid}-" in v for _, v in d.volumes_created):
            errs.append(f"{what}, but no backup archive of VM {vmid} appeared")
        mine = by_vm.get(vmid, [])
        for f in c["fields"]:
            if f["name"] == "status" and _last_with(mine, "status") is c and _text(f["after"]):
                if after.get("status") != f["after"]:
                    errs.append(f"{what}: VM {vmid} is {after.get('status')}, not {f['after']}")
            if f["name"] == "node" and _last_with(mine, "node") is c and _text(f["after"]):
                if after.get("node") != f["after"]:
                    errs.append(f"{what}: VM {vmid} is on {after.get('node')}, not {f['after']}")
        return errs
    if resource == "disk" and vmid is not None:
        disk = str(c["id"]).split("/", 1)[1]
        config = effective(d.after_vms.get(vmid) or {})
        found = _SIZE.search(str(config.get(disk, "")))
        want = next((_text(f["after"]) for f in c["fields"] if f["name"] == "size"), None)
        if want is not None and (found is None or found[1] != want):
            return [f"{what}: {disk} is {found[1] if found else 'missing'}, not {want}"]
        return []
    if resource == "snapshot" and vmid is not None:
        name = str(c["id"]).split("/", 1)[1]
        if action == "create" and (vmid, name) not in d.snapshots_created:
            return [f"{what}, but no snapshot {name} of VM {vmid} was taken"]
        if action == "destroy" and (vmid, name) not in d.snapshots_destroyed:
            return [f"{what}, but snapshot {name} of VM {vmid} is still there"]
        return []
    if resource in ("user", "token", "role", "acl"):
        if not any(kind == resource and _access_id_matches(resource, str(c["id"]), ident) for kind, ident in d.access):
            return [f"{what}, but access control shows no such change"]
        return []
    if resource == "talos-node":
        return [] if str(c["id"]) in d.talos_nodes else [f"{what}, but Talos node {c['id']} did not change"]
    if resource in ("file", "directory", "etcd-snapshot", "image-cache"):
        node, path = _local_path(str(c["id"]))
        if action == "destroy":
            gone = not (
                any(n == node and _id_matches(path, p) for n, p in d.after_files)
                if node is not None
                else Path(path).exists()
            )
            return [] if gone else [f"{what}, but it is still there"]
        if _destroyed_later(c, changes):
            return []  # made and removed by the same run: nothing to see afterwards
        if not _file_changed(str(c["id"]), d):
            if action in ("ensure", "write") and _file_exists(str(c["id"]), d):
                return []  # already there (ensure) or rewritten with the same content (write)
            return [f"{what}, but no such file changed"]
        return []
    if resource == "etcd-member" and action == "destroy":
        if str(c["id"]) not in d.etcd_members_before or str(c["id"]) in d.etcd_members_after:
            return [f"{what}, but etcd member {c['id']} was not removed"]
        return []
    if resource in ("storage-content", "backup") and action == "destroy":
        storage, _, volume = str(c["id"]).partition(":")
        return [] if (storage, volume) in d.volumes_destroyed else [f"{what}, but the volume is still there"]
    return [f"{what}: the proof does not know how to check a {resource}"]


def _created_later(c: Mapping[str, Any], changes: list[dict[str, Any]]) -> bool:
    later = changes[next(i for i, x in enumerate(changes) if x is c) + 1 :]
    return any(x["action"] == "create" and x["resource"] == c["resource"] and x["id"] == c["id"] for x in later)


def _replaced(vmid: int, d: Diff) -> bool:
    """VM ``vmid`` is there before and after, but as another VM: a clone gets a new SMBIOS UUID."""
    before, after = d.before_vms.get(vmid), d.after_vms.get(vmid)
    if before is None or after is None:
        return False
    uuid = lambda vm: (vm.get("config") or {}).get("smbios1")  # noqa: E731
    return uuid(before) is not None and uuid(before) != uuid(after)


def _destroyed_later(c: Mapping[str, Any], changes: list[dict[str, Any]]) -> bool:
    later = changes[next(i for i, x in enumerate(changes) if x is c) + 1 :]
    return any(x["action"] == "destroy" and x["resource"] == c["resource"] and x["id"] == c["id"] for x in later)


def _pve_value_matches(want: str, have: Any) -> bool:
    """A value as sent against the value PVE keeps: equal, or a drive or NIC PVE completed
    (``local-lvm:1,efitype=4m`` -> ``local-lvm:vm-110-disk-0,efitype=4m,size=528K``,
    ``virtio,bridge=vmbr0`` -> ``virtio=BC:24:...,bridge=vmbr0``): every option sent is kept."""
    have = str(have)
    if want == have:
        return True
    first, *options = want.split(",")
    kept_first, *kept = have.split(",")
    if ":" in first:
        same_head = kept_first.startswith(first.split(":", 1)[0] + ":")
    else:
        same_head = kept_first.split("=", 1)[0] == first.split("=", 1)[0]
    return same_head and all(option in kept for option in options)


def _later_restart(c: Mapping[str, Any], mine: list[dict[str, Any]]) -> bool:
    """Whether a step after ``c`` starts or reboots the VM (which applies what was pending)."""
    seen = False
    for other in mine:
        if other is c:
            seen = True
        elif seen and other["action"] in ("start", "reboot", "stop", "shutdown", "rollback"):
            return True
    return False


def _last_with(mine: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    return next((c for c in reversed(mine) if not c["when"] and any(f["name"] == name for f in c["fields"])), None)


def _access_id_matches(kind: str, said: str, real: str) -> bool:
    if kind == "acl":
        path, roles, *rest = said.split(" ")
        real_path, real_role, real_ugid = real.split(" ")
        return path == real_path and real_role in roles.split(",") and real_ugid in "".join(rest)
    return _id_matches(said, real)


def _local_path(ident: str) -> tuple[str | None, str]:
    """(node, path) of a file change's id: ``pve01:/var/...`` on a node, a bare path on this machine."""
    found = re.match(r"^([A-Za-z0-9][A-Za-z0-9.-]*):(/.*)$", ident)
    return (found[1], found[2]) if found else (None, ident)


def _file_changed(ident: str, d: Diff) -> bool:
    node, path = _local_path(ident)
    if node is not None:
        return any(n == node and _id_matches(path, p) for n, p in d.node_files)
    return any(_id_matches(path, p) for p in d.local)


def _file_exists(ident: str, d: Diff) -> bool:
    node, path = _local_path(ident)
    return node is None and Path(_UNKNOWN_MARK.sub("", path)).exists()


def _nothing_else(changes: list[dict[str, Any]], d: Diff, by_vm: Mapping[int, list[dict[str, Any]]]) -> list[str]:
    """Every difference is named by some change of the review (certain or possible)."""
    errs: list[str] = []

    def named(vmid: int, *actions: str, resource: str = "vm") -> bool:
        return any(
            c["resource"] == resource and c["action"] in actions for c in by_vm.get(vmid, []) if _vmid(c) == vmid
        )

    for vmid in d.created_vms:
        if not named(vmid, "create", "replace"):
            errs.append(f"VM {vmid} was made, but the review does not say so")
    for vmid in d.destroyed_vms:
        if not named(vmid, "destroy", "replace"):
            errs.append(f"VM {vmid} was destroyed, but the review does not say so")
    for vmid, keys in d.config.items():
        mine = by_vm.get(vmid, [])
        loose = any(
            c["resource"] == "vm"
            and (c["action"] in ("rollback", "replace") or (c["action"] == "change" and not c["fields"]))
            for c in mine
        ) or (_replaced(vmid, d) and named(vmid, "destroy") and named(vmid, "create"))  # a new VM, the same VMID
        for key in keys:
            if loose:
                continue
            if any(
                c["resource"] == "vm"
                and c["action"] in ("change", "create")
                and any(f["name"] == key for f in c["fields"])
                for c in mine
            ):
                continue
            if any(c["resource"] == "disk" and str(c["id"]).endswith("/" + key) for c in mine):
                continue
            if key == "template" and named(vmid, "template"):
                continue
            if key == "parent" and any(c["resource"] == "snapshot" for c in mine):
                continue
            errs.append(
                f"VM {vmid}: {key} changed ({keys[key][0]!r} -> {keys[key][1]!r}), but the review does not say so"
            )
    for vmid, (was, now) in d.status.items():
        if not any(
            any(f["name"] == "status" for f in c["fields"]) or c["action"] in ("rollback", "create", "replace")
            for c in by_vm.get(vmid, [])
        ):
            errs.append(f"VM {vmid} went from {was} to {now}, but the review does not say so")
    for vmid, (was, now) in d.node.items():
        if not named(vmid, "migrate"):
            errs.append(f"VM {vmid} moved from {was} to {now}, but the review does not say so")
    for vmid in d.template:
        if not named(vmid, "template"):
            errs.append(f"VM {vmid} became a template, but the review does not say so")
    for vmid, snap in d.snapshots_created | d.snapshots_destroyed:
        if vmid in d.destroyed_vms:
            continue  # lost with its VM, which the review lists with its snapshots
        if not any(c["resource"] == "snapshot" and str(c["id"]) == f"{vmid}/{snap}" for c in by_vm.get(vmid, [])):
            errs.append(f"snapshot {snap} of VM {vmid} changed, but the review does not say so")
    for storage, volume in d.volumes_created | d.volumes_destroyed | d.volumes_resized:
        guest = _GUEST_VOLUME.search(volume)
        backup = re.search(r"vzdump-qemu-(\d+)-", volume)
        if guest and by_vm.get(int(guest[1])):
            continue  # a disk of a VM the review changes (made, grown, imported, destroyed, templated)
        if backup and named(int(backup[1]), "backup"):
            continue
        if any(c["resource"] in ("storage-content", "backup") and volume in str(c["id"]) for c in changes):
            continue
        errs.append(f"volume {storage}:{volume} changed, but the review does not say so")
    for node, path in d.node_files:
        if not any(
            c["resource"] == "file"
            and _local_path(str(c["id"])) == (node, path)
            or (
                c["resource"] == "file"
                and _local_path(str(c["id"]))[0] == node
                and _id_matches(_local_path(str(c["id"]))[1], path)
            )
            for c in changes
        ):
            errs.append(f"file {path} on {node} changed, but the review does not say so")
    for kind, ident in d.access:
        if not any(c["resource"] == kind and _access_id_matches(kind, str(c["id"]), ident) for c in changes):
            errs.append(f"{kind} {ident} changed, but the review does not say so")
    for ip in d.talos_nodes:
        if not any(c["resource"] == "talos-node" and str(c["id"]) == ip for c in changes):
            errs.append(f"Talos node {ip} changed, but the review does not say so")
    if d.talos_clusters and not any(c["resource"] in ("talos-node", "kubernetes") for c in changes):
        errs.append("the Talos cluster changed, but the review does not say so")
    ensured = [str(c["id"]) for c in changes if c["resource"] == "directory" and c["action"] in ("ensure", "create")]
    for path in d.local:
        if any(directory.startswith(path.rstrip("/") + "/") for directory in ensured):
            continue  # a parent folder that mkdir -p made on the way
        if not any(
            c["resource"] in ("file", "directory", "etcd-snapshot", "image-cache")
            and _local_path(str(c["id"]))[0] is None
            and (
                _id_matches(str(c["id"]), path)
                or path.startswith(_UNKNOWN_MARK.sub("", str(c["id"])).rstrip("/") + "/")
                and c["resource"] in ("etcd-snapshot", "image-cache")
            )
            for c in changes
        ):
            errs.append(f"local file {path} changed, but the review does not say so")
    return errs
