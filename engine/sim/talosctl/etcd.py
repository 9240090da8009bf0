"""Simulates ``talosctl etcd snapshot|members``."""

from __future__ import annotations

import hashlib
import json
import secrets as random_secrets

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


def members(call: Call) -> None:
    cluster_id, targets = call.connect("getting etcd members")
    cluster = call.world.clusters[cluster_id]
    if not cluster.get("bootstrapped_on"):
        raise Fail("error getting etcd members: rpc error: code = Unavailable desc = etcd is not running yet")
    table = [["NODE", "ID", "HOSTNAME", "PEER URLS", "CLIENT URLS", "LEARNER"]]
    for ip, _vm, _rec in targets:
        for member_ip, member in call.world.members(cluster_id).items():
            if member.get("role") == "controlplane":
                table.append(
                    [
                        ip,
                        hashlib.sha256(member_ip.encode()).hexdigest()[:16],
                        member["hostname"],
                        f"https://{member_ip}:2380",
                        f"https://{member_ip}:2379",
                        "false",
                    ]
                )
    call.out(render_table(table))


COMMANDS = {
    ("etcd", "snapshot"): Command(snapshot, {}, 1, 1),
    ("etcd", "members"): Command(members, {}, 0, 0),
}
