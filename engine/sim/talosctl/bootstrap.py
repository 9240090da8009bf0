"""Simulates ``talosctl bootstrap``: etcd starts on one control plane."""

from __future__ import annotations

from .base import Call, Command, Fail, NotSimulated


def bootstrap(call: Call) -> None:
    what = "executing bootstrap"
    if call.args.get("recover-from"):
        raise NotSimulated("simulation: talosctl bootstrap --recover-from is not simulated")
    cluster_id, ip, _vm, record = call.single(what)
    cluster = call.world.clusters[cluster_id]
    if record["role"] != "controlplane":
        raise Fail(
            f"error {what}: rpc error: code = FailedPrecondition desc = bootstrap is not available on "
            "worker nodes\nsimulation: bootstrap one control plane node"
        )
    if cluster.get("bootstrapped_on"):
        raise Fail(
            f"error {what}: rpc error: code = AlreadyExists desc = etcd data directory is not empty\n"
            f"simulation: etcd of cluster {cluster['name']} was already bootstrapped on "
            f"{cluster['bootstrapped_on']}; bootstrap runs once per cluster"
        )
    cluster["bootstrapped_on"] = ip


COMMANDS = {
    ("bootstrap",): Command(
        bootstrap, {"recover-from": ("str", None), "recover-skip-hash-check": ("bool", None)}, 0, 0
    ),
}
