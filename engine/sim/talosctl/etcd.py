"""Simulates ``talosctl etcd snapshot|members|status|remove-member``.

etcd's members are the cluster's installed control planes whose member was not removed
(``etcd_removed`` on the node's record): a control plane whose VM is destroyed stays a member,
unreachable, until ``etcd remove-member`` takes it out, as on a real cluster. A member's ID is
derived from its address and its VM's identity, so a VM made again at the same address joins
as a new member with a new ID.
"""

from __future__ import annotations

import hashlib
import json
import secrets as random_secrets
from typing import Any

from .base import Call, Command, Fail, render_table


def snapshot(call: Call) -> None:
    what = "reading etcd snapshot"
    cluster_id, ip, _vm, record = call.single(what)
    cluster = call.world.clusters[cluster_id]
    if record["role"] != "controlplane":
        raise Fail(f"error {what}: rpc error: code = Unavailable desc = etcd is not running on worker nodes")
    if not cluster.get("bootstrapped_on"):
        raise Fail(f"error {what}: rpc error: code = Unavailable desc = etcd is not running yet (not bootstrapped)")
    target = call.path(call.args.positional[0])
    members = len([r for r in call.world.members(cluster_id).values() if r.get("role") == "controlplane"])
    header = (
        f"runbook simulated etcd snapshot\ncluster: {cluster['name']}\nnode: {ip}\n"
        f"kubernetes: {cluster.get('kubernetes_version')}\nmembers: {members}\n"
    ).encode()
    payload = header + random_secrets.token_bytes(4096)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".part")
        partial.write_bytes(payload)
        partial.replace(target)
    except OSError as exc:
        raise Fail(f"error {what}: {exc}") from None
    digest = hashlib.sha256(payload).hexdigest()
    call.out(
        f"etcd snapshot saved to {json.dumps(call.args.positional[0])} ({len(payload)} bytes)\n"
        f"snapshot info: hash {digest[:8]}, revision {1000 + len(payload) % 997}, total keys 512, "
        f"total size {len(payload)}\n"
    )


def member_id(ip: str, record: dict[str, Any]) -> str:
    """The member's ID as talosctl prints it: 16 hex digits, new for a VM made again."""
    seed = f"{ip}/{record.get('vm_uid') or record.get('vmid')}/{record.get('installed_at')}"
    return hashlib.sha256(seed.encode()).hexdigest()[:16]


def etcd_members(call: Call, cluster_id: str) -> dict[str, dict[str, Any]]:
    """The cluster's etcd members by address: control planes whose member was not removed."""
    return {
        ip: record
        for ip, record in call.world.members(cluster_id).items()
        if record.get("role") == "controlplane" and not record.get("etcd_removed")
    }


def _started(call: Call, members: dict[str, dict[str, Any]]) -> list[str]:
    """The members whose node runs (its etcd can vote)."""
    return [ip for ip in members if call.machine(ip)[0] == "installed"]


def _etcd_node(call: Call, what: str) -> tuple[str, list[tuple[str, Any, dict[str, Any]]]]:
    """The targets of an etcd call: bootstrapped control planes that are still members."""
    cluster_id, targets = call.connect(what)
    if not call.world.clusters[cluster_id].get("bootstrapped_on"):
        raise Fail(f"error {what}: rpc error: code = Unavailable desc = etcd is not running yet")
    for ip, _vm, record in targets:
        if record.get("role") != "controlplane":
            raise Fail(
                f"error {what}: 1 error occurred:\n\t* {ip}: rpc error: code = Unavailable desc = etcd is not running on worker nodes"
            )
        if record.get("etcd_removed"):
            raise Fail(
                f"error {what}: 1 error occurred:\n\t* {ip}: rpc error: code = Unavailable desc = etcdserver: "
                "the member has been permanently removed from the cluster"
            )
    return cluster_id, targets


def members(call: Call) -> None:
    cluster_id, targets = _etcd_node(call, "getting etcd members")
    table = [["NODE", "ID", "HOSTNAME", "PEER URLS", "CLIENT URLS", "LEARNER"]]
    for ip, _vm, _rec in targets:
        for member_ip, member in etcd_members(call, cluster_id).items():
            table.append(
                [
                    ip,
                    member_id(member_ip, member),
                    member["hostname"],
                    f"https://{member_ip}:2380",
                    f"https://{member_ip}:2379",
                    "false",
                ]
            )
    call.out(render_table(table))


def status(call: Call) -> None:
    what = "getting etcd status"
    cluster_id, targets = _etcd_node(call, what)
    current = etcd_members(call, cluster_id)
    started = _started(call, current)
    if len(started) < len(current) // 2 + 1:
        raise Fail(
            f"error {what}: rpc error: code = Unavailable desc = etcdserver: no leader\nsimulation: "
            f"{len(started)} of {len(current)} etcd members run; quorum needs {len(current) // 2 + 1}"
        )
    leader = member_id(started[0], current[started[0]])
    table = [
        [
            "NODE",
            "MEMBER",
            "DB SIZE",
            "IN USE",
            "LEADER",
            "RAFT INDEX",
            "RAFT TERM",
            "RAFT APPLIED INDEX",
            "LEARNER",
            "ERRORS",
        ]
    ]
    for ip, _vm, record in targets:
        table.append(
            [ip, member_id(ip, record), "5.0 MB", "2.4 MB (48.89%)", leader, "40519", "2", "40519", "false", ""]
        )
    call.out(render_table(table))


def remove_member(call: Call) -> None:
    what = "removing etcd member"
    cluster_id, _targets = _etcd_node(call, what)
    wanted = call.args.positional[0].lower()
    current = etcd_members(call, cluster_id)
    found = next((ip for ip, record in current.items() if member_id(ip, record) == wanted), None)
    if found is None:
        raise Fail(f"error {what}: rpc error: code = NotFound desc = etcdserver: member not found")
    remaining = {ip: record for ip, record in current.items() if ip != found}
    if len(_started(call, remaining)) < len(remaining) // 2 + 1:
        raise Fail(
            f"error {what}: rpc error: code = FailedPrecondition desc = etcdserver: re-configuration failed due "
            f"to not enough started members\nsimulation: after removing {found}, {len(_started(call, remaining))} "
            f"of {len(remaining)} members would run"
        )
    current[found]["etcd_removed"] = True
    call.world.clusters[cluster_id]["healthy"] = False


COMMANDS = {
    ("etcd", "snapshot"): Command(snapshot, {}, 1, 1),
    ("etcd", "members"): Command(members, {}, 0, 0),
    ("etcd", "status"): Command(status, {}, 0, 0),
    ("etcd", "remove-member"): Command(remove_member, {}, 1, 1),
}
