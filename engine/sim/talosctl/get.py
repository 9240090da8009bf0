"""Simulates ``talosctl get members|disks``: Talos resources as tables, YAML or JSON."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

import yaml

from .base import Call, Command, Fail, NotSimulated, render_table


def get(call: Call) -> None:
    resource = call.args.positional[0].lower()
    output = call.args.get("output") or "table"
    if output not in ("table", "json", "yaml"):
        raise NotSimulated(f"simulation: talosctl get -o {output} is not simulated (table, json, yaml)")
    if resource in ("members", "member", "cm", "clustermembers"):
        if call.args.get("insecure"):
            raise Fail(
                "error getting resources: rpc error: code = Unimplemented desc = members are not "
                "available in maintenance mode"
            )
        cluster_id, targets = call.connect("getting resources")
        rows = []
        for ip, _vm, _record in targets:
            for member_ip, member in call.world.members(cluster_id).items():
                state, _v, _r = call.machine(member_ip)
                if state != "installed":
                    continue
                rows.append(
                    (
                        ip,
                        "cluster",
                        "Member",
                        member["hostname"],
                        {
                            "nodeId": member["hostname"],
                            "addresses": [member_ip],
                            "hostname": member["hostname"],
                            "machineType": member["role"],
                            "operatingSystem": f"Talos ({member['talos_version']})",
                        },
                    )
                )
        _resources(
            call,
            rows,
            output,
            ["HOSTNAME", "MACHINE TYPE", "OS", "ADDRESSES"],
            lambda s: [s["hostname"], s["machineType"], s["operatingSystem"], json.dumps(s["addresses"])],
            "Members.cluster.talos.dev",
        )
        return
    if resource in ("disks", "disk"):
        if call.args.get("insecure"):
            targets = [(ip, vm) for ip, vm in call.insecure_targets("getting resources")]
        else:
            _cluster, connected = call.connect("getting resources")
            targets = [(ip, vm) for ip, vm, _rec in connected]
        rows = []
        for ip, vm in targets:
            size = _disk_bytes(vm.config)
            rows.append(
                (
                    ip,
                    "runtime",
                    "Disk",
                    "sda",
                    {
                        "size": size,
                        "readonly": False,
                        "transport": "virtio",
                        "rotational": True,
                        "model": "QEMU HARDDISK",
                        "serial": "",
                        "dev_path": "/dev/sda",
                    },
                )
            )
        _resources(
            call,
            rows,
            output,
            ["SIZE", "READ ONLY", "TRANSPORT", "ROTATIONAL", "WWID", "MODEL", "SERIAL"],
            lambda s: [_human(s["size"]), "false", s["transport"], "true", "", s["model"], s["serial"]],
            "Disks.block.talos.dev",
        )
        return
    raise NotSimulated(f"simulation: talosctl get {resource} is not simulated (simulated: members, disks)")


def _resources(
    call,
    rows: list[tuple[str, str, str, str, dict[str, Any]]],
    output: str,
    columns: list[str],
    cells: Callable[[dict[str, Any]], list[str]],
    type_name: str,
) -> None:
    if output == "json":
        for row in rows:
            call.out(json.dumps(_document(row, type_name), indent=4) + "\n")
        return
    if output == "yaml":
        for row in rows:
            call.out(yaml.safe_dump(_document(row, type_name), sort_keys=False) + "---\n")
        return
    table = [["NODE", "NAMESPACE", "TYPE", "ID", "VERSION", *columns]]
    for node, namespace, kind, ident, spec in rows:
        table.append([node, namespace, kind, ident, "1", *cells(spec)])
    call.out(render_table(table))


def _disk_bytes(config: Mapping[str, Any]) -> int:
    for key in ("scsi0", "virtio0", "sata0", "ide0"):
        match = re.search(r"size=(\d+(?:\.\d+)?)([KMGT]?)", str(config.get(key, "")))
        if match:
            factor = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4, "": 1}[match.group(2)]
            return int(float(match.group(1)) * factor)
    return 10 * 1024**3


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"


COMMANDS = {
    ("get",): Command(
        get,
        {"output": ("str", "o"), "namespace": ("str", None), "insecure": ("bool", "i"), "watch": ("bool", "w")},
        1,
        2,
    ),
}


def _document(row: tuple[Any, ...], type_name: str) -> dict[str, Any]:
    """One resource as ``talosctl get -o json|yaml`` prints it."""
    node, namespace, _kind, ident, spec = row
    return {
        "node": node,
        "metadata": {"namespace": namespace, "type": type_name, "id": ident, "version": 1, "phase": "running"},
        "spec": spec,
    }
