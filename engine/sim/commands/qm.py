"""Simulates ``qm set/template/config/list/status`` against the simulated VMs."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .base import Out, human

if TYPE_CHECKING:
    from ..shell import Run
    from ..state import SimVm


_DISK_KEY = re.compile(r"(scsi|virtio|sata|ide)\d+\Z|efidisk0\Z|tpmstate0\Z")
_KEY = re.compile(r"[a-z][a-z0-9_-]*\Z")


def qm_command(run: Run, args: list[str], stdin: str) -> Out:
    if len(args) < 2:
        return Out(status=255, err="ERROR: no command specified\n")
    sub = args[1]
    if sub == "list":
        return _qm_list(run, args[2:])
    if len(args) < 3:
        return Out(status=255, err=f"400 not enough arguments\nqm {sub} <vmid>\n")
    vmid_text = args[2]
    if not vmid_text.isdigit():
        return Out(
            status=255,
            err=f"400 Parameter verification failed.\nvmid: type check ('integer') failed - got '{vmid_text}'\n",
        )
    vmid = int(vmid_text)
    vm = run.x.vms.get_vm(vmid)
    if vm is None or vm.node != run.node:
        return Out(status=2, err=f"Configuration file 'nodes/{run.node}/qemu-server/{vmid}.conf' does not exist\n")
    if sub == "config":
        return Out(out="".join(f"{key}: {vm.config[key]}\n" for key in sorted(vm.config)))
    if sub == "status":
        return Out(out=f"status: {vm.status}\n")
    if sub == "template":
        return _qm_template(run, vm, args[3:])
    return _qm_set(run, vm, args[3:])


def _qm_list(run: Run, args: list[str]) -> Out:
    rows = [vm for vm in run.x.vms.list_vms() if vm.node == run.node]
    lines = [f"{'VMID':>10} {'NAME':<20} {'STATUS':<10} {'MEM(MB)':>10} {'BOOTDISK(GB)':>12} {'PID':>10}"]
    for vm in sorted(rows, key=lambda v: v.vmid):
        memory = str(vm.config.get("memory", 2048))
        disk = _disk_gb(vm.config)
        pid = str(10000 + vm.vmid) if vm.status == "running" else "0"
        lines.append(f"{vm.vmid:>10} {vm.name[:20]:<20} {vm.status:<10} {memory:>10} {disk:>12} {pid:>10}")
    return Out(out="\n".join(lines) + "\n")


def _disk_gb(config: Mapping[str, Any]) -> str:
    for key in ("scsi0", "virtio0", "sata0", "ide0"):
        value = str(config.get(key, ""))
        match = re.search(r"size=(\d+(?:\.\d+)?)([KMGT]?)", value)
        if match:
            number = float(match.group(1))
            factor = {"K": 1 / 1024 / 1024, "M": 1 / 1024, "G": 1, "T": 1024, "": 1 / 1024**3}[match.group(2)]
            return f"{number * factor:.2f}"
    return "0.00"


def _qm_template(run: Run, vm: SimVm, extra: list[str]) -> Out:
    if extra and not (len(extra) == 2 and extra[0] == "--disk"):
        return Out(status=255, err="400 too many arguments\nqm template <vmid> [OPTIONS]\n")
    if vm.template:
        return Out(status=255, err="you can't convert a template to a template\n")
    if vm.status == "running":
        return Out(status=255, err="you can't convert a VM to template if VM is running\n")
    changes: dict[str, str | None] = {}
    err = ""
    for key, value in vm.config.items():
        if not (_DISK_KEY.match(key) and isinstance(value, str)):
            continue
        renamed = re.sub(rf"\bvm-{vm.vmid}-disk-(\d+)", rf"base-{vm.vmid}-disk-\1", value)
        if renamed != value:
            changes[key] = renamed
            old = re.search(rf"vm-{vm.vmid}-disk-\d+", value)
            assert old is not None
            new = old.group(0).replace("vm-", "base-", 1)
            err += f'  Renamed "{old.group(0)}" to "{new}" in volume group "pve"\n  Logical volume pve/{new} changed.\n'
    if changes:
        run.x.vms.set_config(vm.vmid, changes)
    run.x.vms.make_template(vm.vmid)
    return Out(err=err)


def _qm_set(run: Run, vm: SimVm, options: list[str]) -> Out:
    pairs: list[tuple[str, str]] = []
    rest = list(options)
    while rest:
        arg = rest.pop(0)
        if not arg.startswith("-"):
            return Out(status=255, err="400 too many arguments\nqm set <vmid> [OPTIONS]\n")
        key, eq, value = arg.lstrip("-").partition("=")
        if key == "skiplock":
            continue
        if not eq:
            if not rest:
                return Out(status=255, err=f"400 Parameter verification failed.\n{key}: property is missing a value\n")
            value = rest.pop(0)
        if not _KEY.match(key):
            return Out(status=255, err=f"Unknown option: {key}\n400 unable to parse option\n")
        pairs.append((key, value))
    if not pairs:
        return Out(status=255, err="400 no options specified\n")
    shown = " ".join(f"-{key} {value}" for key, value in pairs)
    out = f"update VM {vm.vmid}: {shown}\n"
    changes: dict[str, str | None] = {}
    config = dict(vm.config)
    for key, value in pairs:
        if key == "delete":
            for name in filter(None, re.split(r"[,;\s]+", value)):
                changes[name] = None
                config.pop(name, None)
            continue
        if key == "digest":
            continue
        if _DISK_KEY.match(key):
            result = _allocate_disk(run, vm, key, value, config)
            if isinstance(result, Out):
                result.out = out + result.out
                return result
            value, message = result
            out += message
        changes[key] = value
        config[key] = value
    run.x.vms.set_config(vm.vmid, changes)
    return Out(out=out)


def _allocate_disk(run: Run, vm: SimVm, key: str, value: str, config: dict[str, Any]) -> tuple[str, str] | Out:
    """The config value for a disk option, allocating or importing a volume (STORAGE:SIZE, import-from=)."""
    first, _, opts_text = value.partition(",")
    options = [opt for opt in opts_text.split(",") if opt] if opts_text else []
    match = re.fullmatch(r"([A-Za-z][A-Za-z0-9._-]*):(\d+(?:\.\d+)?|cloudinit)", first)
    if not match:
        return value, ""  # an existing volume, none, cdrom, an iso: set as given
    storage, size_text = match.groups()
    if not run.x.vms.storage_exists(run.node, storage):
        return Out(status=255, err=f"storage '{storage}' does not exist\n")
    if size_text == "cloudinit":
        return (
            f"{storage}:vm-{vm.vmid}-cloudinit,media=cdrom",
            f"{key}: successfully created disk '{storage}:vm-{vm.vmid}-cloudinit,media=cdrom'\n",
        )
    kept = [opt for opt in options if not opt.startswith("import-from=")]
    imports = [opt.split("=", 1)[1] for opt in options if opt.startswith("import-from=")]
    volume = f"vm-{vm.vmid}-disk-{_next_disk(vm.vmid, config)}"
    message = ""
    if imports:
        source = imports[0]
        if not source.startswith("/"):
            return Out(
                status=255,
                err=f"400 Parameter verification failed.\n{key}: import-from: '{source}' is not an absolute path (simulation: only node paths are simulated)\n",
            )
        record = run.x.files.get(run.node, source)
        if record is None:
            return Out(
                status=255,
                err=f"qemu-img: Could not open '{source}': Could not open '{source}': No such file or directory\n"
                f"import-from: could not get file size of {source}\n",
            )
        if source.endswith((".xz", ".gz", ".zst", ".bz2")):
            return Out(
                status=255,
                err=f"import-from: '{source}' is compressed, which qemu-img cannot read: decompress it first (xz -d)\n",
            )
        size_bytes = int(record.get("size", 0))
        size = _pve_size(size_bytes)
        message = (
            f"importing disk '{source}' to VM {vm.vmid} ...\n"
            f'  Logical volume "{volume}" created.\n'
            f"transferred 0.0 B of {human(size_bytes)} (0.00%)\n"
            f"transferred {human(size_bytes)} of {human(size_bytes)} (100.00%)\n"
        )
    elif key == "efidisk0" or key == "tpmstate0":
        size = "4M"
    else:
        size = _pve_size(int(float(size_text) * 1024**3))
    result = ",".join([f"{storage}:{volume}", *kept, f"size={size}"])
    message += f"{key}: successfully created disk '{result}'\n"
    return result, message


def _next_disk(vmid: int, config: Mapping[str, Any]) -> int:
    used = set()
    for value in config.values():
        for match in re.finditer(rf"(?:vm|base)-{vmid}-disk-(\d+)", str(value)):
            used.add(int(match.group(1)))
    number = 0
    while number in used:
        number += 1
    return number


def _pve_size(size: int) -> str:
    """A byte count as PVE writes disk sizes: whole G when exact, else M rounded up."""
    if size > 0 and size % 1024**3 == 0:
        return f"{size // 1024**3}G"
    return f"{max(1, math.ceil(size / 1024**2))}M"
